"""The single-run table: every model of notebooks 02-06 on one line, gathered from the cache
(``figures/single_runs.md``; the results table over the study's seeds and both data settings is
:mod:`palu_perta.headline`'s).

``results_table(profile)`` asks for the same cached entries the notebooks build, with the same
configurations (``palu_perta.config``: the lambda grid size, the unlearning budget, PALU's
hyperparameters), so it reads what they computed and builds only what is missing. For the task-
arithmetic methods, which are swept over lambda, the row is the grid point with the highest forget
quality (ties: the higher model utility), as notebooks 03 and 05 report it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from . import perta, pipeline
from .config import PALU_HYPER, UNLEARN_METHODS, Profile, lambda_grid_points, unlearn_budget
from .evaluation import forget_hash
from .plots import figure_path
from .unlearn import UnlearnConfig, spans_provenance, unlearned_model

# the table's columns: open-unlearning's key -> the heading it gets
COLUMNS = {"forget_quality": "FQ", "model_utility": "MU", "forget_Q_A_ROUGE": "forget ROUGE-L",
           "exact_memorization": "exact mem.", "privleak": "PrivLeak"}
LABELS = {"tv": "TV", "perta-grad": "PerTA-grad", "perta-fisher": "PerTA-fisher", "ga": "GA", "graddiff": "GradDiff",
          "npo": "NPO", "simnpo": "SimNPO", "me_gd": "ME+GD", "pdu": "PDU", "undial": "UNDIAL", "idk_dpo": "IdkDPO",
          "palu": "PALU"}


def _row(model: str, notebook: str, summary: dict[str, Any], setting: str = "") -> dict[str, Any]:
    return {"model": model, "notebook": notebook, "setting": setting, **{k: summary.get(k) for k in COLUMNS}}


def hyper_text(hyper: dict[str, Any]) -> str:
    """A loss's hyperparameters as the table's ``setting`` names them, e.g. "top_k 1, temporal sensitive, alpha 1"."""
    return ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else f"{k} {v}"
                     for k, v in hyper.items())


def best_on_grid(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The sweep row with the highest forget quality; ties go to the higher model utility."""
    return max(rows, key=lambda r: (r["forget_quality"], r["model_utility"]))


def distinct_splits(profile: Profile, splits: list[str]) -> list[list[str]]:
    """``splits`` grouped by the forget set they select, in order: a split is computed once per forget
    set (on 20 synthetic authors forget01 and forget05 are both one author, the same one)."""
    groups: dict[str, list[str]] = {}
    for split in dict.fromkeys(splits):  # a name given twice is one split
        forget = pipeline.benchmark(profile.replace(forget_split=split)).forget
        groups.setdefault(forget_hash(forget), []).append(split)
    return list(groups.values())


def results_table(profile: Profile, methods: tuple[str, ...] = UNLEARN_METHODS, progress: bool = False) -> pd.DataFrame:
    """One row per model (target, retain, TV, PerTA-grad, PerTA-fisher, then ``methods``) with the
    columns of :data:`COLUMNS`, plus where it comes from (``notebook``) and its setting."""
    bench = pipeline.benchmark(profile)
    models = pipeline.reference_models(profile, bench, progress=progress)
    retain_eval = pipeline.evaluation(profile, models.retain, bench, reference="self", name="retain", progress=progress)
    target_eval = pipeline.evaluation(profile, models.target, bench, retain_eval, name="target", progress=progress)
    rows = [_row("target", "02", target_eval.summary, "fine-tuned on all authors"),
            _row("retain", "02", retain_eval.summary, "never saw the forget authors")]

    cfg = perta.perta_config(profile)
    calibration = perta.calibrate_lambda(profile, bench, models.target, models.retain,
                                         points=lambda_grid_points(profile), cfg=cfg)
    sweep = perta.sweep(profile, bench, models.target, perta.METHODS, calibration["grid"], retain_eval, cfg,
                        progress=progress, log=False)
    for method in perta.METHODS:
        best = best_on_grid([r for r in sweep if r["method"] == method])
        rows.append(_row(LABELS[method], "03" if method == "tv" else "05", best,
                         f"lambda {best['lam']:g} (best FQ of {calibration['grid']})"))

    budget = unlearn_budget(profile)
    for method in methods:
        hyper = PALU_HYPER if method == "palu" else {}
        unlearn_cfg = UnlearnConfig(method=method, hyper=hyper, seed=profile.seed, **budget)
        path = unlearned_model(profile, models.target, bench, unlearn_cfg, progress=progress)
        evaluation = pipeline.evaluation(profile, path, bench, retain_eval, progress=progress)
        setting = f"{budget['epochs']:g} epochs, lr {budget['learning_rate']:g}"
        if hyper:
            setting += ", " + hyper_text(hyper)
        spans = spans_provenance(path)
        if spans is not None and spans["source"] != "labels":  # the row says when PALU's spans were not labels
            setting += f", spans {spans['source']}" + (f" (margin {spans['margin']:g})" if "margin" in spans else "")
        rows.append(_row(LABELS[method], "06", evaluation.summary, setting))
    table = pd.DataFrame(rows).set_index("model").rename(columns=COLUMNS)
    unavailable = {COLUMNS[k]: why for k, why in (target_eval.summary.get("unavailable") or {}).items() if k in COLUMNS}
    if unavailable:  # e.g. PrivLeak without holdout records: to_markdown says why under the table
        table.attrs["unavailable"] = unavailable
    return table


def to_markdown(table: pd.DataFrame) -> str:
    """The table as GitHub markdown, numbers to 3 significant digits (FQ in scientific notation when small),
    then one line per column that could not be computed, saying why (``table.attrs["unavailable"]``)."""
    def cell(value: Any, column: str) -> str:
        if value is None or (isinstance(value, float) and value != value):
            return "-"
        if isinstance(value, str):
            return value
        if column == "FQ" and value < 1e-3:
            return f"{value:.1e}"
        if column == "PrivLeak":
            return f"{value:.1f}"
        return f"{value:.3f}"

    columns = ["model", *table.columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for model, row in table.iterrows():
        lines.append("| " + " | ".join([str(model), *(cell(row[c], c) for c in table.columns)]) + " |")
    for column, why in (table.attrs.get("unavailable") or {}).items():
        lines.append(f"\n{column} unavailable: {why}")
    return "\n".join(lines)


def save_table(table: pd.DataFrame, profile_name: str, name: str = "single_runs") -> tuple[Path, Path]:
    """Write ``table`` as CSV and markdown beside the profile's figures (``figures/`` for cpu, else
    ``figures/<profile>/``), each through a temporary file and a rename. Returns both paths."""
    paths = []
    for suffix, text in ((".csv", table.to_csv()), (".md", to_markdown(table) + "\n")):
        path = figure_path(name, profile_name).with_suffix(suffix)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
        paths.append(path)
    return paths[0], paths[1]
