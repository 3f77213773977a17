"""The two papers' claims, tested on a study's results at matched forgetting.

Every claim compares a method with a baseline where both have forgotten as much (forget ROUGE-L down to
the retain model's, :func:`palu_perta.report.at_matched_forgetting`): the difference of what they keep
there, method minus baseline, on two metrics:

- **model utility** (open-unlearning's MU, the papers' metric), recomputed from the per-item values of its
  nine components interpolated to matched forgetting;
- **neighbour ROUGE-L**: the retain-author answers that share a fact with a forget answer, the knowledge a
  localised method should spare (:data:`palu_perta.report.NEIGHBOUR`).

Each item's value at matched forgetting is interpolated between the two evaluated points around the
crossing with the share that places the curve there, in its "higher: more kept" form (a truth ratio as
``max(0, 1 - tr)``). The interval resamples the seeds of each method and the items, paired between the two
methods (:func:`palu_perta.stats.two_level_difference`), so it carries the seed-to-seed spread as well as
the choice of questions; ``items_only_low`` / ``items_only_high`` give the interval with each method's
seeds averaged first, to show how much of the width the seeds add.

Reading (declared here before any result was computed):

- "better" claims (PALU over the baselines, PerTA over TV): **holds** when the interval lies above 0,
  **fails** when it lies below 0, **cannot tell at this size** otherwise;
- "competitive" claims (PerTA against training-based methods): non-inferiority with a margin
  (:data:`COMPETITIVE_MARGIN`): **holds** when the interval lies above -margin, **fails** when it lies
  below -margin, **cannot tell at this size** otherwise;
- when none of one method's seeds comes down to the retain model's forget ROUGE-L, the pair is compared at a
  **partial level** instead (:func:`common_level`): the deepest forget ROUGE-L that every seed of both
  methods reaches, with the same reading; its verdict says so and names the level (column ``level``, which
  on every other row is the retain model's). **not reached** only when no such level exists (a seed that
  never comes below the target model). This fallback was added on 2026-12-03, after the first method cell
  of the real-TOFU study (GradDiff, seed 0) ended its five epochs at forget ROUGE-L 0.367 against the
  retain model's 0.333, and before any other method cell of that study had run; it changes no verdict of
  the synthetic studies (none of their pairs lacks a seed there). Claims about a method the study has no
  results for are left out;
- a verdict resting on fewer than :data:`MIN_SEEDS` seeds of either method is marked *provisional* with
  its seed count (with one seed the interval is over items alone: the seed-to-seed spread is unknown).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from . import report, stats
from .pages import splice_block
from .study import PALU_AUTHORS, Cell

# Non-inferiority margins of the "competitive" claims: our choice, fixed before the results. Two points of
# model utility (0.02) is about the item-bootstrap half-width of one model's MU on the cpu setting
# (target 0.460 [0.418, 0.490]); five points of neighbour ROUGE-L, a third of the damage GradDiff does
# there at matched forgetting (0.154).
COMPETITIVE_MARGIN = {"model_utility": 0.02, "neighbour_rouge": 0.05}
RESAMPLES = 2000  # the interval ends move by about 0.002 between bootstrap seeds at this count
# Fewer seeds than this on either side and a verdict is marked provisional: with one seed the interval cannot
# carry the seed-to-seed spread at all, with two barely (the study's own minimum for a headline comparison).
MIN_SEEDS = 3


@dataclass(frozen=True)
class Claim:
    """One claim: ``method`` against ``baseline`` (method names, or full labels for PALU's variants), read
    as ``test`` ("better" or "competitive")."""

    key: str
    paper: str
    text: str
    method: str
    baseline: str
    test: str = "better"


def _palu_label(**changes: str) -> str:
    return Cell("", "", "palu", hyper=tuple(sorted({**PALU_AUTHORS, **changes}.items()))).label


# The authors' PALU (onset tokens, top-K) against each variant that drops one localisation or both (the
# `scope` grid): "both restrictions are needed".
PALU_FULL = _palu_label(temporal="onset", vocab="topk")
CLAIMS: tuple[Claim, ...] = (
    Claim("palu-over-graddiff", "PALU", "PALU keeps more than GradDiff when both forget as much", "palu", "graddiff"),
    Claim("palu-over-npo", "PALU", "PALU keeps more than NPO when both forget as much", "palu", "npo"),
    Claim("perta-grad-over-tv", "PerTA", "PerTA (gradient weights) keeps more than TV when both forget as much",
          "perta-grad", "tv"),
    Claim("perta-fisher-over-tv", "PerTA", "PerTA (Fisher weights) keeps more than TV when both forget as much",
          "perta-fisher", "tv"),
    Claim("perta-vs-graddiff", "PerTA", "PerTA (gradient weights) is competitive with GradDiff",
          "perta-grad", "graddiff", "competitive"),
    Claim("perta-vs-npo", "PerTA", "PerTA (gradient weights) is competitive with NPO", "perta-grad", "npo",
          "competitive"),
    Claim("palu-onset-needed", "PALU", "restricting PALU to onset tokens is needed (onset vs every answer token)",
          PALU_FULL, _palu_label(temporal="answer", vocab="topk")),
    Claim("palu-topk-needed", "PALU", "restricting PALU to the top-K logits is needed (top-1 vs the full vocabulary)",
          PALU_FULL, _palu_label(temporal="onset", vocab="full")),
    Claim("palu-both-needed", "PALU", "PALU's two restrictions together beat neither (onset, top-1 vs answer, full)",
          PALU_FULL, _palu_label(temporal="answer", vocab="full")),
)
METRICS = {"model_utility": "model utility", "neighbour_rouge": "neighbour ROUGE-L"}
COLUMNS = ("claim", "paper", "text", "setting", "forget_split", "metric", "method", "baseline", "test", "level",
           "difference", "low", "high", "items_only_low", "items_only_high", "items", "seeds_method",
           "seeds_method_total", "seeds_baseline", "seeds_baseline_total", "verdict")


def kept_utility(columns: dict[str, np.ndarray]) -> float | np.ndarray:
    """Model utility from per-item columns already in their "higher: more kept" form (``split:column``,
    the nine of :data:`palu_perta.report.UTILITY_COLUMNS`): the harmonic mean of their means, 0 when one
    of them is 0. Columns of shape (items,) give a float; (resamples, items), one value per resample."""
    parts = np.stack([np.mean(columns[f"{split}:{name}"], axis=-1) for split, names in report.UTILITY_COLUMNS.items()
                      for name in names])
    positive = np.all(parts > 0, axis=0)
    value = np.where(positive, scipy_stats.hmean(np.where(positive, parts, 1.0), axis=0), 0.0)
    return float(value) if value.ndim == 0 else value


def _neighbour_rouge(columns: dict[str, np.ndarray]) -> float | np.ndarray:
    value = np.mean(columns[f"{report.NEIGHBOUR}:rougeL_recall"], axis=-1)
    return float(value) if np.ndim(value) == 0 else value


# metric -> ({group (a split): (split:column, ...)}, statistic on {split:column: per-item values})
_METRIC_COLUMNS = {
    "model_utility": ({split: tuple(f"{split}:{name}" for name in names)
                       for split, names in report.UTILITY_COLUMNS.items()}, kept_utility),
    "neighbour_rouge": ({report.NEIGHBOUR: (f"{report.NEIGHBOUR}:rougeL_recall",)}, _neighbour_rouge),
}


def _item_values(tables: dict[str, pd.DataFrame], names: Sequence[str]) -> dict[tuple[str, str, str], pd.Series]:
    """``(cell, point, split:column) -> per-item values`` (kept form, indexed by item) for the ``names``."""
    items = tables["items"]
    out = {}
    for name in names:
        split, column = name.split(":")
        part = items[items["split"] == split]
        if part.empty or column not in part.columns:
            continue
        for (cell, point), group in part.groupby(["cell", "point"]):
            out[(cell, point, name)] = pd.Series(report.item_scores(group[column], column),
                                                 index=group["index"].to_numpy()).sort_index()
    return out


def matched_item_values(tables: dict[str, pd.DataFrame], matched: pd.DataFrame, label: str, names: Sequence[str],
                        values: dict | None = None) -> dict[str, pd.DataFrame]:
    """Per item, one method's values at matched forgetting: ``{split:column: DataFrame(items x seeds)}``
    over the seeds of ``label`` in ``matched`` (:func:`report.at_matched_forgetting`, from a frame with
    ``cell`` / ``point``) that reached it; each value ``before + share * (after - before)`` in its kept form.
    Empty frames when no seed reached matched forgetting or the points lack the items."""
    values = _item_values(tables, names) if values is None else values
    rows = matched[(matched["label"] == label) & matched["reached"].astype(bool)]
    out = {}
    for name in names:
        per_seed = {}
        for _, r in rows.iterrows():
            before = values.get((r["cell_before"], r["point_before"], name))
            after = values.get((r["cell_after"], r["point_after"], name))
            if before is not None and after is not None:
                per_seed[int(r["seed"])] = before + r["share"] * (after - before)
        out[name] = pd.concat(per_seed, axis=1).dropna() if per_seed else pd.DataFrame()
    return out


def labels_of(frame: pd.DataFrame, name: str) -> list[str]:
    """The labels a claim's method or baseline names: the label itself, or every label of that method."""
    methods = frame[frame["kind"] != "reference"]
    if (methods["label"] == name).any():
        return [name]
    return sorted(methods.loc[methods["method"] == name, "label"].unique())


def common_level(frame: pd.DataFrame, labels: Sequence[str]) -> float | None:
    """The partial matched-forgetting level of a comparison: the deepest forget ROUGE-L that every seed of
    every label in ``labels`` reaches along its curve (the highest of the seeds' lowest values), or None when
    that is not below the target model's (a seed that forgets nothing). ``frame``: :func:`report.points` of
    one setting and split."""
    curves = frame[frame["label"].isin(labels) & frame["kind"].ne("reference")]
    target = frame.loc[frame["label"] == "target", "forget_rouge"]
    if curves.empty or target.empty:
        return None
    level = float(curves.groupby(["label", "seed"])["forget_rouge"].min().max())
    return level if level < float(target.iloc[0]) else None


def noninferiority_verdict(interval: stats.Interval, margin: float) -> str:
    """"holds" when the interval of (method - baseline) lies above ``-margin`` (not worse by more than the
    margin), "fails" when it lies below ``-margin``, else "cannot tell at this size"."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if interval.low > -margin:
        return "holds"
    if interval.high < -margin:
        return "fails"
    return "cannot tell at this size"


def _compare(tables, matched, values, method: str, baseline: str, metric: str, seed: int = 0) -> dict:
    groups, statistic = _METRIC_COLUMNS[metric]
    names = [name for cols in groups.values() for name in cols]
    sides = [matched_item_values(tables, matched, label, names, values) for label in (method, baseline)]
    seeds = [len(next(iter(side.values())).columns) if side and not next(iter(side.values())).empty else 0
             for side in sides]
    row = {"seeds_method": seeds[0], "seeds_baseline": seeds[1], "items": 0,
           **dict.fromkeys(("difference", "low", "high", "items_only_low", "items_only_high"), float("nan"))}
    if not all(seeds) or any(side[name].empty for side in sides for name in names):
        return row
    aligned = {}
    for name in names:
        a, b = sides[0][name], sides[1][name]
        common = a.index.intersection(b.index)
        aligned[name] = (a.loc[common].to_numpy().T, b.loc[common].to_numpy().T)  # (seeds, items)
    a = {name: pair[0] for name, pair in aligned.items()}
    b = {name: pair[1] for name, pair in aligned.items()}
    interval = stats.two_level_difference(a, b, statistic, groups=groups, level=report.LEVEL,
                                          n_resamples=RESAMPLES, seed=seed)
    items_only = stats.two_level_difference({k: v.mean(axis=0, keepdims=True) for k, v in a.items()},
                                            {k: v.mean(axis=0, keepdims=True) for k, v in b.items()}, statistic,
                                            groups=groups, level=report.LEVEL, n_resamples=RESAMPLES, seed=seed)
    row.update(difference=interval.estimate, low=interval.low, high=interval.high, items_only_low=items_only.low,
               items_only_high=items_only.high, items=interval.n)
    return row


def claim_table(tables: dict[str, pd.DataFrame], frame: pd.DataFrame | None = None,
                claims: Sequence[Claim] = CLAIMS) -> pd.DataFrame:
    """Every claim whose two methods a study declares, per setting and forget split and metric (model
    utility, neighbour ROUGE-L), with the difference at matched forgetting, its intervals and the verdict
    (see the module's docstring). Claims about methods the study never ran are left out; a pair where one
    method has no seed at the retain model's forget ROUGE-L is compared at its partial level
    (:func:`common_level`), or gives "not reached" when it has none."""
    frame = report.points(tables) if frame is None else frame
    matched = report.at_matched_forgetting(frame)
    values = _item_values(tables, [n for groups, _ in _METRIC_COLUMNS.values() for cols in groups.values()
                                   for n in cols])
    rows = []
    for (setting, split), part in frame.groupby(["setting", "forget_split"]):
        m = matched[(matched["setting"] == setting) & (matched["forget_split"] == split)]
        for claim in claims:
            methods, baselines = labels_of(part, claim.method), labels_of(part, claim.baseline)
            if not methods or not baselines:
                continue
            for method in methods:
                for baseline in baselines:
                    totals = [int((m["label"] == label).sum()) for label in (method, baseline)]
                    reached = [int(m.loc[m["label"] == label, "reached"].sum()) for label in (method, baseline)]
                    missing = [label for label, n in zip((method, baseline), reached) if not n]
                    pair, level, partial = m, float(m["threshold"].iloc[0]) if len(m) else float("nan"), ""
                    if missing and (common := common_level(part, [method, baseline])) is not None:
                        pair = report.at_matched_forgetting(part, threshold=common)
                        partial = (f" (partial: at forget ROUGE-L {common:.3f}, which every seed of both reaches; "
                                   f"the retain model's {level:.3f} not reached by {', '.join(missing)})")
                        level, missing = common, []
                    for metric in METRICS:
                        row = {"claim": claim.key, "paper": claim.paper, "text": claim.text, "setting": setting,
                               "forget_split": split, "metric": metric, "method": method, "baseline": baseline,
                               "test": claim.test, "level": level, "seeds_method_total": totals[0],
                               "seeds_baseline_total": totals[1]}
                        row.update(_compare(tables, pair, values, method, baseline, metric))
                        if missing:
                            row["verdict"] = "not reached: " + ", ".join(missing)
                        elif row["items"] == 0:
                            row["verdict"] = "no items"
                        else:
                            interval = stats.Interval(row["difference"], row["low"], row["high"], report.LEVEL,
                                                      row["items"])
                            row["verdict"] = (report.claim_verdict(interval, "higher") if claim.test == "better"
                                              else noninferiority_verdict(interval, COMPETITIVE_MARGIN[metric]))
                            fewest = min(row["seeds_method"], row["seeds_baseline"])
                            if fewest < MIN_SEEDS:
                                row["verdict"] += f" (provisional: {fewest} seed{'s' if fewest > 1 else ''})"
                            row["verdict"] += partial
                        rows.append(row)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def claims_markdown(table: pd.DataFrame) -> str:
    """The verdict table as markdown, with what its intervals are."""
    lines = ["## Verdicts on the papers' claims (at matched forgetting)", ""]
    if table.empty:
        return "\n".join(lines + ["No claim can be tested yet: the study has not run both methods of any claim.",
                                  ""])
    margins = ", ".join(f"{METRICS[k]} {v:g}" for k, v in COMPETITIVE_MARGIN.items())
    lines += ["Difference method minus baseline where both reach the retain model's forget ROUGE-L, per item "
              "interpolated between the evaluated points around the crossing (higher: more kept). Interval: 95 %, "
              "bootstrap over seeds and items (items paired between the two methods); in brackets after it, the "
              "interval over items alone (seeds averaged first). *better* claims hold when the interval lies "
              "above 0; *competitive* claims when it lies above minus the margin "
              f"({margins}; our choice, declared before the results). A verdict on fewer than {MIN_SEEDS} seeds "
              "of either method is provisional (one seed: the seed-to-seed spread is not in the interval).", "",
              "| claim | metric | method - baseline | items only | items | seeds | verdict |",
              "|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        seeds = (f"{r['seeds_method']} of {r['seeds_method_total']} / "
                 f"{r['seeds_baseline']} of {r['seeds_baseline_total']}")
        lines.append(f"| {r['text']} ({r['setting']}, {r['forget_split']}) | {METRICS[r['metric']]} | "
                     f"{stats.format_interval(r['difference'], r['low'], r['high'])} | "
                     f"{stats.format_interval(r['difference'], r['items_only_low'], r['items_only_high'])} | {r['items']} | "
                     f"{seeds} | {r['verdict']} |")
    return "\n".join(lines) + "\n"


def find_row(table: pd.DataFrame, **where: object) -> pd.Series | None:
    """The one row of ``table`` whose columns equal ``where`` (e.g. ``claim="palu-over-npo",
    metric="model_utility"``), or None when there is none (a grid that does not run those methods);
    ValueError when several rows match (``where`` does not say which)."""
    mask = np.ones(len(table), dtype=bool)
    for column, value in where.items():
        mask &= (table[column] == value).to_numpy()
    if mask.sum() > 1:
        raise ValueError(f"{int(mask.sum())} rows match {where}: add a column to tell them apart")
    return table[mask].iloc[0] if mask.any() else None


README_START = "<!-- verdicts {name}: written by `python -m palu_perta.verdicts {name}` from figures/study_{name}_verdicts.csv -->"
README_END = "<!-- /verdicts -->"


def readme_block(name: str, table: pd.DataFrame) -> str:
    """The README's verdict table for study ``name`` (from its ``study_<name>_verdicts.csv``), between the
    two marker lines, so a test can compare it with the committed results."""
    lines = [README_START.format(name=name)]
    if table.empty:
        lines.append(f"No claim can be tested yet on the `{name}` study: it has not run both methods of any claim.")
    else:
        lines += ["| claim | metric | method - baseline, 95 % CI (seeds and items) | seeds | items | verdict |",
                  "|---|---|---|---|---|---|"]
        for _, r in table.iterrows():
            seeds = f"{r['seeds_method']} / {r['seeds_baseline']}"
            lines.append(f"| {r['text']} | {METRICS[r['metric']]} | "
                         f"{stats.format_interval(r['difference'], r['low'], r['high'])} | {seeds} | {r['items']} | "
                         f"{r['verdict']} |")
    lines.append(README_END)
    return "\n".join(lines)


def replace_readme_block(text: str, name: str, table: pd.DataFrame) -> str:
    """``text`` (the README) with study ``name``'s verdict block replaced by :func:`readme_block`."""
    return splice_block(text, README_START.format(name=name), README_END, readme_block(name, table),
                        where=f"verdict block for study {name!r}")


# The pages that hold a study's verdict block: the README holds the headline study's (cpu); a study whose block
# would push the README over its 8 KB (PALU's 2 x 2, `scope`) has it in docs/studies.md, the README one sentence.
BLOCK_PAGES = ("README.md", "docs/studies.md")


def block_page(name: str, root: Path | None = None) -> Path | None:
    """The page (of :data:`BLOCK_PAGES`, under the checkout ``root``) holding study ``name``'s verdict block,
    or None when none does."""
    from .config import repo_root

    root = root or repo_root()
    start = README_START.format(name=name)
    for page in BLOCK_PAGES:
        path = root / page
        if path.is_file() and start in path.read_text():
            return path
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m palu_perta.verdicts NAME``: rewrite study NAME's verdict block (in the README, or in the page of
    :data:`BLOCK_PAGES` that holds it) from its committed ``figures/study_<NAME>_verdicts.csv``
    (``python -m palu_perta.report NAME`` writes that)."""
    import sys

    from .paths import figures_dir

    names = list(argv if argv is not None else sys.argv[1:]) or ["cpu"]
    for name in names:
        csv = figures_dir() / f"study_{name}_verdicts.csv"
        if not csv.is_file():
            print(f"{csv} does not exist: run `python -m palu_perta.report {name}` first", file=sys.stderr)
            return 2
        page = block_page(name)
        if page is None:
            print(f"no page of {', '.join(BLOCK_PAGES)} has a line {README_START.format(name=name)!r}: add it (and "
                  f"the line {README_END!r}) where study {name}'s verdicts belong", file=sys.stderr)
            return 2
        page.write_text(replace_readme_block(page.read_text(), name, read_table(csv)))
        print(f"wrote the verdict block {name} of {page}")
    return 0


def read_table(path) -> pd.DataFrame:
    """A verdict table written by :func:`palu_perta.report.build` (``study_<name>_verdicts.csv``)."""
    table = pd.read_csv(path)
    for column in ("items", "seeds_method", "seeds_method_total", "seeds_baseline", "seeds_baseline_total"):
        if column in table.columns:
            table[column] = table[column].astype(int)
    return table


if __name__ == "__main__":
    raise SystemExit(main())
