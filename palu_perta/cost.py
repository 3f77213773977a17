"""What each method costs to reach matched forgetting: the second half of PerTA's claim ("competitive with
training-based unlearning at a fraction of its cost").

The seconds come from one timed run, ``benchmarks/method_cost.py``, which writes
``benchmarks/results/method_cost_<grid>.json``: for each training-based method of the grid the cumulative
seconds at the end of every epoch of one unlearning run (the study's budget, seed 0, no evaluation), and for
TV and PerTA the seconds of each piece of their pipeline (the reinforcement fine-tune, tau, the importances,
the weights, one update). Where each method reaches matched forgetting comes from the study's results
(:func:`palu_perta.report.at_matched_forgetting`), so a seed added to the study moves the verdict without
timing anything again. Evaluations and model loading are left out on both sides.

"A fraction of the cost" is read as at most half (:data:`FRACTION`, our reading, fixed before the
measurement). The ratio's range covers the seeds' matched epochs and the spread of one run's epoch times
(:func:`epoch_spread`, a stand-in for run-to-run timing noise): holds when the whole range is at most the
fraction, fails when all of it lies above, cannot tell otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

FRACTION = 0.5  # "a fraction of the cost": at most half (our reading of the PerTA paper's claim)
# the pipeline pieces each task-arithmetic method pays for, by the record's piece names
SHARED_PIECES = ("reinforcement fine-tune", "task vector")
COLUMNS = ("method", "baseline", "method_seconds", "baseline_seconds", "seeds", "ratio", "low", "high",
           "fraction", "verdict")


def record_path(grid: str, root: Path | None = None) -> Path:
    """Where ``benchmarks/method_cost.py`` writes the timing record of ``grid``."""
    from .paths import benchmark_results_dir

    return benchmark_results_dir(root) / f"method_cost_{grid}.json"


def load_record(grid: str, root: Path | None = None) -> dict[str, Any] | None:
    """The timing record of ``grid``, or None when none was measured."""
    path = record_path(grid, root)
    return json.loads(path.read_text()) if path.is_file() else None


def seconds_at(epoch: float, epoch_ends: Sequence[float]) -> float:
    """Seconds a run timed at the end of each epoch (``epoch_ends[i]``: cumulative seconds after epoch i + 1)
    took to reach ``epoch`` (fractional: linear between two epoch ends; 0 at epoch 0)."""
    if not len(epoch_ends):
        raise ValueError("no epoch was timed")
    if not 0 <= epoch <= len(epoch_ends):
        raise ValueError(f"epoch {epoch} lies outside the {len(epoch_ends)} epochs timed")
    return float(np.interp(epoch, np.arange(len(epoch_ends) + 1), [0.0, *epoch_ends]))


def epoch_spread(epoch_ends: Sequence[float]) -> float:
    """The slowest epoch's time over the fastest's, minus 1 (0 when every epoch took as long)."""
    durations = np.diff([0.0, *epoch_ends])
    return float(durations.max() / durations.min() - 1)


def pipelines(pieces: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """The pieces each task-arithmetic method pays for (``tv``, ``perta-grad``, ``perta-fisher``), from the
    record's seconds per piece ("grad importance, retain set", "fisher weights", "tv update", ...)."""
    shared = {k: float(pieces[k]) for k in SHARED_PIECES}
    out = {"tv": {**shared, "update": float(pieces["tv update"])}}
    for kind in ("grad", "fisher"):
        out[f"perta-{kind}"] = {**shared, **{k: float(v) for k, v in pieces.items() if k.startswith(f"{kind} ")}}
    return out


def cost_verdict(method_seconds: float, baseline_seconds: Sequence[float], spread: float,
                 fraction: float = FRACTION) -> dict[str, Any]:
    """``method_seconds`` (a pipeline) against the baseline's seconds at each seed's matched epoch, with
    ``spread`` the relative timing noise (:func:`epoch_spread`): the ratio (to the seeds' mean), its range
    ``low``-``high`` and the verdict on "at most ``fraction`` of the cost". A seed that matched at epoch 0
    cost nothing, so against it any pipeline is infinitely dearer."""
    baseline = np.asarray(baseline_seconds, dtype=float)
    if baseline.size == 0 or (baseline < 0).any():
        raise ValueError("the baseline needs at least one time, none negative")
    with np.errstate(divide="ignore"):
        low = method_seconds / (baseline.max() * (1 + spread))
        high = method_seconds * (1 + spread) / baseline.min()
        ratio = method_seconds / baseline.mean()
    verdict = "holds" if high <= fraction else "fails" if low > fraction else "cannot tell"
    return {"ratio": float(ratio), "low": float(low), "high": float(high), "fraction": fraction, "verdict": verdict}


def cost_table(record: Mapping[str, Any], matched: pd.DataFrame, methods: Sequence[str] = ("perta-grad", "perta-fisher"),
               fraction: float = FRACTION) -> pd.DataFrame:
    """Each task-arithmetic method of ``methods`` against each training-based method the record timed, at
    the epochs where the study's seeds reached matched forgetting (``matched``:
    :func:`~palu_perta.report.at_matched_forgetting`, restricted to the record's setting and forget split).
    One row per pair (:data:`COLUMNS`); a baseline with no seed at matched forgetting is left out."""
    setting, split = record["setting"]
    here = matched[(matched["setting"] == setting) & (matched["forget_split"] == split) & matched["reached"]]
    pipeline_seconds = {m: sum(parts.values()) for m, parts in pipelines(record["pieces"]).items()}
    rows = []
    for method in methods:
        for label, ends in record["epoch_ends"].items():
            epochs = here.loc[here["label"] == label, "x"].to_numpy(float)
            if not len(epochs):
                continue
            baseline = [seconds_at(float(x), ends) for x in epochs]
            verdict = cost_verdict(pipeline_seconds[method], baseline, epoch_spread(ends), fraction)
            rows.append({"method": method, "baseline": label, "method_seconds": pipeline_seconds[method],
                         "baseline_seconds": float(np.mean(baseline)), "seeds": len(baseline), **verdict})
    return pd.DataFrame(rows, columns=list(COLUMNS))
