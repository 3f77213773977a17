"""The results table: every headline method on both data settings, from the committed study results.

    python -m palu_perta.headline     # figures/results.md and .csv, and their block in docs/results.md

One row per data setting x forget split x method: the reference models (target, retain) with intervals over
items, and each method of the headline studies (:data:`HEADLINE_STUDIES`) with

- its best forget-quality point, as the papers report a method (:func:`palu_perta.report.best_fq`): forget
  quality, model utility and forget ROUGE-L there, mean over seeds with a 95 % Student-t interval;
- its place at matched forgetting (:func:`palu_perta.report.at_matched_forgetting`: forget ROUGE-L down to the
  retain model's): how many seeds get there, and model utility, neighbour and retain ROUGE-L there, mean over
  those seeds with a 95 % Student-t interval.

Nothing is trained and no bootstrap is drawn beyond :func:`palu_perta.report.points`'s: it runs in seconds.
Under the table, each paper claim's verdict on each setting, read from the studies' committed verdict tables
(``figures/study_<name>_verdicts.csv``, which ``tests/test_verdicts.py`` keeps current). A method with fewer
than :data:`palu_perta.verdicts.MIN_SEEDS` seeds is marked provisional.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from . import report, store, verdicts
from .pages import splice_block
from .paths import figures_dir
from .stats import format_interval

# The studies of the headline comparison, one per data setting: the synthetic mini-TOFU (`cpu`) and real TOFU
# (`tofu`). PALU's 2 x 2 (`scope`) is an ablation of one method and has its own page (docs/studies.md).
HEADLINE_STUDIES = ("cpu", "tofu")
# The columns of figures/results.csv: a seed mean and its interval for each metric (reference rows: the item
# interval of the one model).
METRICS = {"best_forget_quality": "forget_quality", "best_model_utility": "model_utility",
           "best_forget_rouge": "forget_rouge", "matched_model_utility": "model_utility",
           "matched_neighbour_rouge": "neighbour_rouge", "matched_retain_rouge": "retain_rouge"}
COLUMNS = ("study", "setting", "forget_split", "method", "kind", "n_forget", "seeds", "seeds_matched",
           *(f"{name}{end}" for name in METRICS for end in ("", "_low", "_high")))


def study_rows(name: str, frame: pd.DataFrame) -> list[dict]:
    """The rows of one study (``frame``: :func:`palu_perta.report.points` of its results), reference models
    first, then the methods in name order."""
    rows = []
    refs = frame[frame["kind"] == "reference"]
    for _, ref in refs.sort_values("label", ascending=False).iterrows():  # target, then retain
        row = {"study": name, "setting": ref["setting"], "forget_split": ref["forget_split"], "method": ref["label"],
               "kind": "reference", "n_forget": int(ref["n_forget"]), "seeds": 0, "seeds_matched": 0}
        for column, metric in METRICS.items():
            row[column], row[f"{column}_low"], row[f"{column}_high"] = (ref[metric], ref[f"{metric}_low"],
                                                                        ref[f"{metric}_high"])
        rows.append(row)
    methods = frame[frame["kind"] != "reference"]
    if methods.empty:
        return rows
    best = report.best_fq(methods).set_index(["setting", "forget_split", "label"])
    matched = report.matched_summary(report.at_matched_forgetting(frame)).set_index(["setting", "forget_split",
                                                                                    "label"])
    n_forget = frame.groupby(["setting", "forget_split"])["n_forget"].first()
    for key, b in best.sort_index().iterrows():
        m = matched.loc[key] if key in matched.index else None
        row = {"study": name, "setting": key[0], "forget_split": key[1], "method": key[2], "kind": b["kind"],
               "n_forget": int(n_forget.loc[(key[0], key[1])]), "seeds": int(b["seeds"]),
               "seeds_matched": int(m["reached"]) if m is not None else 0}
        for column, metric in METRICS.items():
            source = b if column.startswith("best_") else m
            if source is None or metric not in source.index:
                row[column] = row[f"{column}_low"] = row[f"{column}_high"] = float("nan")
            else:
                row[column], row[f"{column}_low"], row[f"{column}_high"] = (source[metric], source[f"{metric}_seed_low"],
                                                                            source[f"{metric}_seed_high"])
        rows.append(row)
    return rows


def load_studies(root: Path | None = None, names: Sequence[str] = HEADLINE_STUDIES
                 ) -> dict[str, tuple[dict, pd.DataFrame]]:
    """The committed results of each study of ``names`` under ``root`` (default
    :func:`palu_perta.store.results_root`) that has any: ``{name: (tables, frame)}``, ``tables`` as
    :func:`palu_perta.store.load` returns them and ``frame`` their :func:`palu_perta.report.points`."""
    root = Path(root or store.results_root())
    loaded = {}
    for name in names:
        directory = root / name
        if directory.is_dir() and store.cell_files(directory):
            tables = store.load(directory)
            loaded[name] = (tables, report.points(tables))
    return loaded


def results_table(root: Path | None = None, names: Sequence[str] = HEADLINE_STUDIES,
                  loaded: dict[str, tuple[dict, pd.DataFrame]] | None = None) -> pd.DataFrame:
    """The results table (see the module's docstring) of the studies ``names`` under ``root`` (default
    :func:`palu_perta.store.results_root`), or of ``loaded`` (:func:`load_studies`) when given; a study without
    results is left out. ``table.attrs["progress"]``: per study, the cells of its grid with results and the
    grid's cell count."""
    from .study import get_grid

    loaded = load_studies(root, names) if loaded is None else loaded
    rows, progress = [], {}
    for name in names:
        cell_ids = [cell.id for cell in get_grid(name).cells()]
        if name not in loaded:
            progress[name] = (0, len(cell_ids))
            continue
        tables, frame = loaded[name]
        progress[name] = (int(tables["cells"]["id"].isin(cell_ids).sum()), len(cell_ids))
        rows += study_rows(name, frame)
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table.attrs["progress"] = progress
    return table


def _cell(row: pd.Series, column: str, digits: int = 3) -> str:
    value = row[column]
    if column == "best_forget_quality" and value == value and value < 1e-3:
        return f"{value:.1e}"
    return format_interval(value, row[f"{column}_low"], row[f"{column}_high"], digits)


def verdict_rows(figures: Path | None = None, names: Sequence[str] = HEADLINE_STUDIES) -> pd.DataFrame:
    """The headline studies' committed verdict tables (``study_<name>_verdicts.csv`` in ``figures``), stacked;
    empty when none is there."""
    figures = Path(figures or figures_dir())
    tables = [verdicts.read_table(path).assign(study=name) for name in names
              if (path := figures / f"study_{name}_verdicts.csv").is_file()]
    tables = [table for table in tables if len(table)]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=[*verdicts.COLUMNS, "study"])


def to_markdown(table: pd.DataFrame, claims: pd.DataFrame) -> str:
    """figures/results.md: the table, what each interval is, and the verdicts by setting."""
    lines = ["# Results: every headline method on both data settings", "",
             "From the committed study results (`results/<study>/`), rebuilt by `python -m palu_perta.headline`. "
             "Methods: mean over seeds, 95 % Student-t interval over seeds (none with one seed; clipped to the "
             "range a metric can take). Reference models: one model each, 95 % bootstrap interval over items. "
             "*Best FQ*: each seed's point of highest forget quality, as the papers report a method. *Matched "
             "forgetting*: where the method's forget ROUGE-L first comes down to the retain model's (a model "
             "that never saw the forget authors), interpolated along its curve; the seeds that never get there "
             f"are left out of its mean. A method with fewer than {verdicts.MIN_SEEDS} seeds is marked "
             "*(provisional)*.", ""]
    progress = table.attrs.get("progress") or {}
    if progress:
        lines += ["Cells with results: " + "; ".join(
            f"`{name}` {done} of {total}" + ("" if done == total else
                                            f" (the rest: `python -m palu_perta study --grid {name}`)")
            for name, (done, total) in progress.items()) + ".", ""]
    lines = [textwrap.fill(line, 110, break_on_hyphens=False, break_long_words=False) if line else line
             for line in lines]
    if table.empty:
        return "\n".join(lines + ["No headline study has results yet: run `python -m palu_perta study`.", ""])
    lines += ["| setting | split | forget answers | method | seeds | best FQ | MU at best FQ | forget ROUGE-L at "
              "best FQ | seeds at matched forgetting | MU there | neighbour ROUGE-L there | retain ROUGE-L there |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        reference = r["kind"] == "reference"
        method = f"{r['method']} model" if reference else r["method"]
        if not reference and r["seeds"] < verdicts.MIN_SEEDS:
            method += " (provisional)"
        seeds = "-" if reference else str(r["seeds"])
        matched = "-" if reference else f"{r['seeds_matched']} of {r['seeds']}"
        lines.append(f"| {r['setting']} | {r['forget_split']} | {r['n_forget']} | {method} | {seeds} | "
                     f"{_cell(r, 'best_forget_quality')} | {_cell(r, 'best_model_utility')} | "
                     f"{_cell(r, 'best_forget_rouge')} | {matched} | {_cell(r, 'matched_model_utility')} | "
                     f"{_cell(r, 'matched_neighbour_rouge')} | {_cell(r, 'matched_retain_rouge')} |")
    lines += ["", "## The papers' claims on each setting", ""]
    if claims.empty:
        return "\n".join(lines + ["No claim can be tested yet on a headline study.", ""])
    lines += ["Method minus baseline at matched forgetting; 95 % interval, bootstrap over seeds and items "
              "(`python -m palu_perta.verdicts` explains the reading; \"-\": a setting without neighbour answers).",
              "", "| claim | setting | metric | method - baseline | seeds | items | verdict |",
              "|---|---|---|---|---|---|---|"]
    for _, r in claims.iterrows():
        lines.append(f"| {r['text']} | {r['setting']}, {r['forget_split']} | {verdicts.METRICS[r['metric']]} | "
                     f"{format_interval(r['difference'], r['low'], r['high'])} | "
                     f"{r['seeds_method']} / {r['seeds_baseline']} | {r['items']} | {r['verdict']} |")
    return "\n".join(lines) + "\n"


def build(root: Path | None = None, out: Path | None = None, names: Sequence[str] = HEADLINE_STUDIES,
          figures: Path | None = None) -> list[Path]:
    """Write ``results.md`` and ``results.csv`` to ``out`` (default ``figures/``), the verdicts read from
    ``figures`` (default: ``out``). Returns the two paths."""
    from .artifacts import atomic_write_text

    out = Path(out or figures_dir())
    table = results_table(root, names)
    text = to_markdown(table, verdict_rows(figures or out, names))
    return [atomic_write_text(out / "results.md", text),
            atomic_write_text(out / "results.csv", table.round(6).to_csv(index=False))]


DOCS_PAGE = "docs/results.md"  # shows the table too, between these two lines
DOCS_START = "<!-- results table: written by `python -m palu_perta.headline` from results/, as figures/results.md -->"
DOCS_END = "<!-- /results table -->"


def docs_block(markdown: str) -> str:
    """The block of :data:`DOCS_PAGE`: ``markdown`` (figures/results.md) without its title, its sections one
    level down, between the two marker lines."""
    body = markdown.split("\n", 1)[1].strip("\n")
    body = "\n".join("#" + line if line.startswith("## ") else line for line in body.splitlines())
    return f"{DOCS_START}\n{body}\n{DOCS_END}"


def replace_docs_block(text: str, markdown: str) -> str:
    """``text`` (the page) with its results block replaced by :func:`docs_block` of ``markdown``."""
    return splice_block(text, DOCS_START, DOCS_END, docs_block(markdown), where=f"results block in {DOCS_PAGE}")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(argv if argv is not None else sys.argv[1:])
    if args:
        print("usage: python -m palu_perta.headline   (writes figures/results.md and figures/results.csv from "
              f"the committed results of {', '.join(HEADLINE_STUDIES)})", file=sys.stderr)
        return 0 if set(args) & {"-h", "--help"} else 2
    from .config import repo_root

    paths = build()
    for path in paths:
        print(f"wrote {path}")
    root = repo_root()
    page = root / DOCS_PAGE if root is not None else None
    if page is not None and page.is_file() and DOCS_START in page.read_text():
        page.write_text(replace_docs_block(page.read_text(), paths[0].read_text()))
        print(f"wrote the results block of {page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
