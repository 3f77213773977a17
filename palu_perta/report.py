"""A study's figures and tables, rebuilt from its committed results in seconds (nothing is trained).

    python -m palu_perta.report            # every study under results/ (``make figures``)
    python -m palu_perta.report cpu        # one study

From the results store (:mod:`palu_perta.store`) it computes, with :mod:`palu_perta.stats`:

- per evaluated point: forget ROUGE-L, model utility and the forget truth ratio with 95 % bootstrap
  intervals over items, and forget quality with the next attainable values of its KS lattice; retain
  ROUGE-L and, where the results have them, the *neighbour* metrics (retain-author questions whose answers
  share a fact with a forget answer: ROUGE-L, probability, truth ratio), also with item intervals;
- per method and point of its strength axis (epoch, or lambda as a multiple of lambda*): the mean over
  seeds with a Student-t interval;
- two tables: each method's best forget-quality point, as the papers report it, and each method at
  *matched forgetting*: model utility interpolated along its curve at the point where its forget ROUGE-L
  first comes down to the retain model's (a model that never saw the forget authors), with retain and
  neighbour ROUGE-L there;
- *collateral damage* at matched forgetting (:func:`collateral_damage`): per item, the method's value there
  minus the retain model's on the same item, with a paired bootstrap over items and a verdict
  ("loses", "gains", "cannot tell"); skipped when the results have no neighbour items;
- the verdicts on the two papers' claims at matched forgetting (:mod:`palu_perta.verdicts`);
- the trade-off figure: forget ROUGE-L against model utility, one curve per method, seed intervals as bars;
  with neighbour items a second one, forget ROUGE-L against neighbour ROUGE-L.

Every metric of the neighbour and retain groups is read "higher: more kept" (the truth ratio as
open-unlearning's true-better score ``max(0, 1 - tr)``), so a difference method minus reference below 0 is
damage. Results written before the neighbour split existed give NaN there, "-" in the tables, and no
collateral-damage section or neighbour figure.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import stats, store
from .stats import format_interval
from .paths import figures_dir

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LEVEL = 0.95
RESAMPLES = 1000  # bootstrap resamples per interval: the 2.5 % quantile moves by ~0.002 MU between seeds of the bootstrap
UTILITY_COLUMNS = {"retain": ("prob", "rougeL_recall", "truth_ratio"),
                   "real_authors": ("prob_normalised", "rougeL_recall", "truth_ratio"),
                   "world_facts": ("prob_normalised", "rougeL_recall", "truth_ratio")}
NEIGHBOUR = "neighbour"  # retain-author questions sharing a fact with a forget answer (trained on, to be kept)
# the neighbour metric group of points(): column -> per-item column it aggregates (truth ratio: true-better form)
NEIGHBOUR_METRICS = {"neighbour_rouge": "rougeL_recall", "neighbour_prob": "prob",
                     "neighbour_truth_ratio": "truth_ratio"}
# carried along a method's curve to matched forgetting (interpolated with model utility's share)
MATCHED_COLUMNS = ("model_utility", "forget_quality", "retain_rouge", *NEIGHBOUR_METRICS)
# (split, per-item column) pairs of the collateral-damage table
COLLATERAL_CHECKS = ((NEIGHBOUR, "rougeL_recall"), (NEIGHBOUR, "prob"), (NEIGHBOUR, "truth_ratio"),
                     ("retain", "rougeL_recall"), ("retain", "prob"))
COLLATERAL_COLUMNS = ("setting", "forget_split", "label", "kind", "split", "metric", "reference", "difference",
                      "difference_low", "difference_high", "items", "seeds", "seeds_not_reached", "seeds_total",
                      "verdict")
METRIC_NAMES = {"rougeL_recall": "ROUGE-L", "prob": "probability", "truth_ratio": "truth ratio (true-better)"}


def _utility(columns: dict[str, np.ndarray]) -> float:
    """Model utility from per-item columns named ``split:column`` (the summary's formula, item by item)."""
    parts = []
    for split, names in UTILITY_COLUMNS.items():
        for name in names:
            values = columns[f"{split}:{name}"]
            parts.append(np.mean(np.maximum(0.0, 1.0 - values)) if name == "truth_ratio" else np.mean(values))
    parts = np.asarray(parts)
    # scipy.stats.hmean's own formula (bit for bit) without its argument checks, which took most of the time:
    # the model-utility bootstrap calls this 2,000 times per evaluated point
    return 0.0 if np.any(parts <= 0) else float(1.0 / np.mean(1.0 / parts))


def _forget_tr(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    return np.mean(np.minimum(values, 1.0 / (values + 1e-10)), axis=axis)


def _true_better(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    """open-unlearning's retain-side truth ratio, ``mean(max(0, 1 - tr))``: higher when the truth is likelier."""
    return np.mean(np.maximum(0.0, 1.0 - values), axis=axis)


def item_scores(values: np.ndarray | pd.Series, column: str) -> np.ndarray:
    """Per-item values in their "higher: more kept" form: a truth ratio becomes ``max(0, 1 - tr)`` (its mean is
    the summary's ``*_Truth_Ratio``), any other column is returned as it is."""
    values = np.asarray(values, dtype=float)
    return np.maximum(0.0, 1.0 - values) if column == "truth_ratio" else values


def _nan_interval() -> stats.Interval:
    return stats.Interval(float("nan"), float("nan"), float("nan"), LEVEL, 0)


def _item_interval(values: pd.Series | None, statistic: Any = np.mean, seed: int = 0) -> stats.Interval:
    """Bootstrap interval over items, or all-NaN when there are no (non-NaN) values."""
    if values is None or not np.isfinite(np.asarray(values, dtype=float)).any():
        return _nan_interval()
    return stats.bootstrap_ci(values, statistic, level=LEVEL, n_resamples=RESAMPLES, seed=seed)


def point_intervals(items: pd.DataFrame, retain_forget_tr: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Intervals of one evaluated point from its item rows (one row per split x item).

    Returns ``forget_rouge``, ``model_utility``, ``forget_truth_ratio``, ``forget_quality``, ``retain_rouge``
    and the neighbour group (``neighbour_rouge``, ``neighbour_prob``, ``neighbour_truth_ratio``: true-better
    form; all-NaN intervals when the point has no neighbour items) as :class:`~palu_perta.stats.Interval`, and
    ``fq_steps``: the attainable forget-quality values just below and above the observed one for these item
    counts."""
    by_split = {split: frame.sort_values("index") for split, frame in items.groupby("split")}
    forget = by_split["forget"]
    groups = {split: {f"{split}:{name}": by_split[split][name].to_numpy(float) for name in names}
              for split, names in UTILITY_COLUMNS.items()}
    fq = stats.forget_quality_interval(forget["truth_ratio"].to_numpy(float), retain_forget_tr, level=LEVEL,
                                       n_resamples=RESAMPLES, seed=seed)
    return {
        "forget_rouge": stats.bootstrap_ci(forget["rougeL_recall"], level=LEVEL, n_resamples=RESAMPLES, seed=seed),
        "model_utility": stats.bootstrap_ci_of(None, _utility, groups=groups, level=LEVEL, n_resamples=RESAMPLES,
                                               seed=seed),
        "forget_truth_ratio": stats.bootstrap_ci(forget["truth_ratio"], _forget_tr, level=LEVEL,
                                                 n_resamples=RESAMPLES, seed=seed),
        "forget_quality": fq,
        "fq_steps": stats.next_attainable(fq.estimate, len(forget), len(retain_forget_tr)),
        "retain_rouge": _item_interval(by_split["retain"]["rougeL_recall"], seed=seed),
        **{name: _item_interval(None if NEIGHBOUR not in by_split else by_split[NEIGHBOUR][column],
                                _true_better if column == "truth_ratio" else np.mean, seed=seed)
           for name, column in NEIGHBOUR_METRICS.items()},
    }


def points(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per cell x evaluated point: identity (setting, split, label, method, seed, ``x``: the epoch,
    the lambda multiple, or 0 for a reference model; ``cell`` and ``point``: the keys of its item rows), the
    summary's metrics, and item-bootstrap intervals (``<metric>_low`` / ``_high``); ``fq_below`` /
    ``fq_above``: the neighbouring attainable FQ values. The neighbour group (``neighbour_rouge``,
    ``neighbour_prob``, ``neighbour_truth_ratio`` as ``mean(max(0, 1 - tr))``) is computed from the point's
    neighbour items (the summary's ``neighbour_*`` keys up to rounding); NaN when it has none."""
    cells = tables["cells"].set_index("id")
    items = {key: frame for key, frame in tables["items"].groupby(["cell", "point"])}
    rows = []
    for (setting, split), group in tables["summaries"].groupby(["setting", "forget_split"]):
        retain = items[(f"{setting}-{split}-retain", "{}")]
        retain_tr = retain[retain["split"] == "forget"].sort_values("index")["truth_ratio"].to_numpy(float)
        for _, summary in group.iterrows():
            cell = cells.loc[summary["cell"]]
            x = {"training": summary["epoch"], "arithmetic": summary["multiple"]}.get(cell["kind"], 0.0)
            intervals = point_intervals(items[(summary["cell"], summary["point"])], retain_tr)
            row = {"setting": setting, "forget_split": split, "label": cell["label"], "method": cell["method"],
                   "kind": cell["kind"], "seed": int(cell["seed"]), "x": float(x), "lambda": summary["lambda"],
                   "forget_quality": summary["forget_quality"], "model_utility": summary["model_utility"],
                   "forget_rouge": summary["forget_Q_A_ROUGE"], "forget_truth_ratio": summary["forget_truth_ratio"],
                   "retain_rouge": summary["retain_Q_A_ROUGE"], "n_forget": len(retain_tr),
                   "cell": summary["cell"], "point": summary["point"]}
            for name in NEIGHBOUR_METRICS:
                row[name] = intervals[name].estimate
            for name in ("forget_rouge", "model_utility", "forget_truth_ratio", "forget_quality", "retain_rouge",
                         *NEIGHBOUR_METRICS):
                row[f"{name}_low"], row[f"{name}_high"] = intervals[name].low, intervals[name].high
            row["fq_below"], row["fq_above"] = intervals["fq_steps"]
            rows.append(row)
    return pd.DataFrame(rows)


def seed_mean(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Mean over seeds of ``columns`` per (setting, split, label, x), with Student-t intervals
    (``<column>_seed_low`` / ``_seed_high``; NaN with one seed, all NaN where no seed has the column, e.g.
    neighbour metrics of old results) and the number of seeds."""
    rows = []
    for key, group in frame.groupby(["setting", "forget_split", "label", "kind", "x"], dropna=False):
        row = dict(zip(["setting", "forget_split", "label", "kind", "x"], key))
        row["seeds"] = len(group)
        for column in columns:
            interval = _seed_interval(group[column].to_numpy(float), column)
            row[column], row[f"{column}_seed_low"], row[f"{column}_seed_high"] = (interval.estimate, interval.low,
                                                                                  interval.high)
        rows.append(row)
    return pd.DataFrame(rows)


# The values a per-model column can take. A mean over seeds lies in the same range, so its interval is clipped to
# it: with two seeds Student-t's interval is 12.7 standard errors wide and would otherwise show a forget quality
# of -0.05 or 1.87. (The forget truth ratio has no upper bound; differences between methods are never clipped.)
RANGES: dict[str, tuple[float, float]] = {
    **dict.fromkeys(("forget_quality", "model_utility", "forget_rouge", "retain_rouge", *NEIGHBOUR_METRICS), (0.0, 1.0)),
    "x": (0.0, float("inf")), "forget_truth_ratio": (0.0, float("inf")),
}


def _seed_interval(values: np.ndarray, column: str | None = None) -> stats.Interval:
    """:func:`stats.seed_interval` over the non-NaN values, clipped to the column's :data:`RANGES`; all-NaN when
    there are none."""
    if not np.isfinite(values).any():
        return _nan_interval()
    interval = stats.seed_interval(values, level=LEVEL)
    low, high = RANGES.get(column or "", (-float("inf"), float("inf")))
    return dataclasses.replace(interval, low=max(interval.low, low), high=min(interval.high, high))


def best_fq(frame: pd.DataFrame) -> pd.DataFrame:
    """Each method's point of highest forget quality per seed (ties: higher model utility), as the papers
    report a method; then the mean over seeds with Student-t intervals."""
    best = (frame.sort_values(["forget_quality", "model_utility"], ascending=False)
            .groupby(["setting", "forget_split", "label", "kind", "seed"], as_index=False).head(1))
    best = best.assign(x=0.0)  # one point per seed: aggregate over seeds whatever epoch or lambda it was
    return seed_mean(best, ["forget_quality", "model_utility", "forget_rouge", "forget_truth_ratio"])


def at_matched_forgetting(frame: pd.DataFrame, threshold: float | None = None) -> pd.DataFrame:
    """Each method at matched forgetting, per seed: walking its curve from the target model (x = 0) along
    its strength axis, the first point where forget ROUGE-L comes down to the retain model's (or to
    ``threshold``, when given: a partial level, :func:`palu_perta.verdicts.common_level`); model utility
    and forget quality there (and retain ROUGE-L and the neighbour metrics, where ``frame`` has them) are
    interpolated linearly in forget ROUGE-L between the two points around the crossing. ``reached`` is False
    (values NaN) when the curve never gets there. One row per seed.

    ``share`` is the interpolation share, the value there being ``before + share * (after - before)``; the
    two points are ``x_before`` / ``x_after`` and, when ``frame`` has ``cell`` and ``point`` (as
    :func:`points` gives it), ``cell_before`` / ``point_before`` / ``cell_after`` / ``point_after`` name
    their item rows (``before`` is the target model's when the first step already crosses)."""
    carried = [column for column in MATCHED_COLUMNS if column in frame.columns]
    keyed = "cell" in frame.columns and "point" in frame.columns
    rows = []
    for (setting, split), group in frame.groupby(["setting", "forget_split"]):
        if not {"retain", "target"} <= set(group["method"]):
            continue  # a study in progress: no curve is placed before both reference models are evaluated
        retain = group[group["method"] == "retain"].iloc[0]
        target = group[group["method"] == "target"].iloc[0]
        level = retain["forget_rouge"] if threshold is None else threshold
        for (label, kind, seed), curve in group[group["kind"] != "reference"].groupby(["label", "kind", "seed"]):
            curve = curve.sort_values("x")
            xs = [0.0, *curve["x"]]
            rouge = [target["forget_rouge"], *curve["forget_rouge"]]
            values = {column: [target[column], *curve[column]] for column in carried}
            keys = [(target["cell"], target["point"]), *zip(curve["cell"], curve["point"])] if keyed else None
            row = {"setting": setting, "forget_split": split, "label": label, "kind": kind, "seed": seed,
                   "threshold": level, "reached": False, "x": np.nan, **dict.fromkeys(carried, np.nan),
                   "share": np.nan, "x_before": np.nan, "x_after": np.nan}
            if keyed:
                row.update(cell_before=None, point_before=None, cell_after=None, point_after=None)
            for i in range(1, len(xs)):
                if rouge[i] <= level:
                    share = 1.0 if rouge[i - 1] == rouge[i] else (rouge[i - 1] - level) / (rouge[i - 1] - rouge[i])
                    share = min(1.0, max(0.0, share))
                    row.update(reached=True, x=xs[i - 1] + share * (xs[i] - xs[i - 1]), share=share,
                               x_before=xs[i - 1], x_after=xs[i],
                               **{column: v[i - 1] + share * (v[i] - v[i - 1]) for column, v in values.items()})
                    if keyed:
                        row.update(cell_before=keys[i - 1][0], point_before=keys[i - 1][1], cell_after=keys[i][0],
                                   point_after=keys[i][1])
                    break
            rows.append(row)
    columns = ["setting", "forget_split", "label", "kind", "seed", "threshold", "reached", "x", *carried, "share",
               "x_before", "x_after", *(("cell_before", "point_before", "cell_after", "point_after") if keyed else ())]
    return pd.DataFrame(rows, columns=columns)  # the columns even when no curve is placed yet


def matched_summary(matched: pd.DataFrame) -> pd.DataFrame:
    """:func:`at_matched_forgetting` over seeds: how many seeds reached the retain model's forget ROUGE-L,
    and the mean model utility there with its Student-t interval over those seeds; likewise the point on the
    strength axis (``x``), retain ROUGE-L and the neighbour metrics (NaN where the results have none)."""
    columns = ["model_utility", "x", *(c for c in ("retain_rouge", *NEIGHBOUR_METRICS) if c in matched.columns)]
    rows = []
    for key, group in matched.groupby(["setting", "forget_split", "label", "kind"]):
        reached = group[group["reached"]]
        row = dict(zip(["setting", "forget_split", "label", "kind"], key))
        row.update(seeds=len(group), reached=len(reached))
        for column in columns:
            interval = _seed_interval(reached[column].to_numpy(float), column)
            row[column], row[f"{column}_seed_low"], row[f"{column}_seed_high"] = (interval.estimate, interval.low,
                                                                                  interval.high)
        rows.append(row)
    return pd.DataFrame(rows)


def seed_spread(matched: pd.DataFrame, column: str = "model_utility") -> pd.DataFrame:
    """How far one method's seeds land apart, next to how far the methods land apart: per method (``label``)
    with at least two seeds at matched forgetting (:func:`at_matched_forgetting`), its per-seed values of
    ``column``, their range (max - min) and standard deviation; plus ``methods_range``, the range of the
    methods' seed means in the same setting and split (every method that reached it). A seed covers the
    unlearning run's data order and retain sampling (training-based methods) or the reinforcement fine-tune
    behind tau (TV, PerTA); the target and retain models are shared."""
    reached = matched[matched["reached"] & matched["kind"].ne("reference")]
    rows = []
    for (setting, split), group in reached.groupby(["setting", "forget_split"]):
        means = group.groupby("label")[column].mean()
        methods_range = float(means.max() - means.min()) if len(means) > 1 else float("nan")
        for label, seeds in group.groupby("label"):
            if len(seeds) < 2:
                continue
            values = seeds.sort_values("seed")[column].to_numpy(float)
            rows.append({"setting": setting, "forget_split": split, "label": label, "seeds": len(values),
                         "values": [round(float(v), 4) for v in values], "range": float(values.max() - values.min()),
                         "sd": float(values.std(ddof=1)), "methods_range": methods_range})
    return pd.DataFrame(rows, columns=["setting", "forget_split", "label", "seeds", "values", "range", "sd",
                                       "methods_range"])


def damage_verdict(interval: stats.Interval) -> str:
    """Read the interval of (method - reference) on a "higher: more kept" metric: "loses" when it lies
    entirely below 0, "gains" when entirely above, else "cannot tell" (an interval containing 0 is not
    evidence of "no loss"); "not reached" when there is no interval (no seed reached matched forgetting)."""
    if interval.estimate != interval.estimate:
        return "not reached"
    return {"holds": "gains", "fails": "loses"}.get(stats.verdict(interval, better="higher"), "cannot tell")


def claim_verdict(interval: stats.Interval, better: str, margin: float = 0.0) -> str:
    """The interval of a difference (method minus baseline) read as the claim "the method is better":
    "holds", "fails" or "cannot tell at this size" (:func:`palu_perta.stats.verdict`, with its wording for
    an interval that overlaps ``[-margin, margin]``: more items or seeds might decide it)."""
    result = stats.verdict(interval, better=better, margin=margin)
    return "cannot tell at this size" if result == "cannot tell" else result


def collateral_damage(tables: dict[str, pd.DataFrame], frame: pd.DataFrame | None = None, split: str = NEIGHBOUR,
                      column: str = "rougeL_recall", reference: str = "retain") -> pd.DataFrame:
    """Damage to knowledge the model must keep, per method at matched forgetting, paired over items.

    For each method and seed reaching matched forgetting (:func:`at_matched_forgetting` on ``frame``, the
    output of :func:`points`, computed when not given): each item's ``column`` on ``split`` is interpolated
    between the two evaluated points around the crossing with the same share as model utility there
    (``before + share * (after - before)``); these are averaged over the seeds, item by item, and compared
    with the ``reference`` model's value on the same item (``"retain"``, which never saw the forget authors:
    the ideal; or ``"target"``): ``difference`` = mean over items of (method - reference), with a 95 % paired
    percentile bootstrap over items (:func:`palu_perta.stats.paired_difference`; seed-to-seed spread is
    averaged away, not included). A truth ratio is first made open-unlearning's true-better score
    ``max(0, 1 - tr)`` per item, so for every column *higher is more kept* and **a negative difference is
    damage**. ``verdict``: :func:`damage_verdict` ("no items" when the seeds that reached it were evaluated
    without ``split`` around the crossing). ``seeds``: the seeds used, ``seeds_not_reached``: those left out
    because their curve never reached matched forgetting, ``seeds_total``: all of them.

    One row per (setting, forget split, method); an empty frame (columns :data:`COLLATERAL_COLUMNS`) when
    the results have no ``split`` items (e.g. old results without the neighbour split)."""
    items = tables["items"]
    if (items.empty or "split" not in items.columns or column not in items.columns
            or not (items["split"] == split).any()):
        return pd.DataFrame(columns=list(COLLATERAL_COLUMNS))
    if reference not in ("retain", "target"):
        raise ValueError(f"reference must be 'retain' or 'target', got {reference!r}")
    items = items[items["split"] == split]
    values = {key: pd.Series(item_scores(group[column], column), index=group["index"].to_numpy()).sort_index()
              for key, group in items.groupby(["cell", "point"])}
    frame = points(tables) if frame is None else frame
    matched = at_matched_forgetting(frame)
    rows = []
    for (setting, forget_split), group in matched.groupby(["setting", "forget_split"]):
        ref_rows = frame[(frame["setting"] == setting) & (frame["forget_split"] == forget_split)
                         & (frame["method"] == reference) & (frame["kind"] == "reference")]
        ref_values = values.get((ref_rows["cell"].iloc[0], ref_rows["point"].iloc[0])) if len(ref_rows) else None
        if ref_values is None:
            continue  # the reference model was not evaluated on this split: nothing to compare with
        for (label, kind), seeds in group.groupby(["label", "kind"]):
            per_seed = {}
            for _, r in seeds[seeds["reached"]].iterrows():
                before = values.get((r["cell_before"], r["point_before"]))
                after = values.get((r["cell_after"], r["point_after"]))
                if before is not None and after is not None:
                    per_seed[r["seed"]] = before + r["share"] * (after - before)
            row = {"setting": setting, "forget_split": forget_split, "label": label, "kind": kind, "split": split,
                   "metric": column, "reference": reference, "items": 0, "seeds": len(per_seed),
                   "seeds_not_reached": int((~seeds["reached"].astype(bool)).sum()), "seeds_total": len(seeds)}
            interval = _nan_interval()
            if per_seed:
                method_values = pd.concat(per_seed, axis=1).mean(axis=1)  # mean over seeds, per item
                method_values, ref_aligned = method_values.align(ref_values, join="inner")
                if np.isfinite(method_values.to_numpy() - ref_aligned.to_numpy()).any():
                    interval = stats.paired_difference(method_values.to_numpy(), ref_aligned.to_numpy(), level=LEVEL,
                                                       n_resamples=RESAMPLES, seed=0)
            row.update(difference=interval.estimate, difference_low=interval.low, difference_high=interval.high,
                       items=interval.n, verdict=damage_verdict(interval))
            if not per_seed and seeds["reached"].any():
                row["verdict"] = "no items"  # it reached matched forgetting, at points evaluated without the split
            rows.append(row)
    return pd.DataFrame(rows, columns=list(COLLATERAL_COLUMNS))


def collateral_table(tables: dict[str, pd.DataFrame], frame: pd.DataFrame | None = None,
                     reference: str = "retain") -> pd.DataFrame:
    """:func:`collateral_damage` for every check of :data:`COLLATERAL_CHECKS` (neighbour ROUGE-L, probability
    and truth ratio; retain ROUGE-L and probability), one frame sorted by method, the checks in that order
    within a method; checks on absent splits give no rows."""
    frame = points(tables) if frame is None else frame
    parts = [collateral_damage(tables, frame, split, column, reference) for split, column in COLLATERAL_CHECKS]
    parts = [part for part in parts if len(part)]
    if not parts:
        return pd.DataFrame(columns=list(COLLATERAL_COLUMNS))
    table = pd.concat(parts, ignore_index=True)
    return table.sort_values(["setting", "forget_split", "label"], kind="stable").reset_index(drop=True)


def tables_markdown(name: str, frame: pd.DataFrame, best: pd.DataFrame, matched: pd.DataFrame,
                    collateral: pd.DataFrame | None = None, matched_seeds: pd.DataFrame | None = None) -> str:
    """The tables as markdown, with what every interval is: best forget quality, matched forgetting (with
    neighbour and retain ROUGE-L there), with ``matched_seeds`` (:func:`at_matched_forgetting`, one row per
    seed) the seed-to-seed spread there (:func:`seed_spread`) and, when ``collateral``
    (:func:`collateral_table`) has neighbour rows, collateral damage at matched forgetting; without neighbour
    items that section says so in one line."""
    refs = frame[frame["kind"] == "reference"]
    seeds = sorted(frame.loc[frame["kind"] != "reference", "seed"].unique())
    n_forget = int(frame["n_forget"].iloc[0])
    lines = [f"# Study `{name}`", "",
             f"{len(frame)} evaluated models; seeds {', '.join(map(str, seeds)) or '(no method cell yet)'}; "
             f"{n_forget} forget answers per forget set. Intervals: 95 %, Student-t over seeds (none with one seed; "
             f"clipped to the range a metric can take); reference models: bootstrap over items.", ""]
    lines += ["## Best forget quality per method (as the papers report it)", "",
              "| setting | split | method | seeds | FQ | MU | forget ROUGE-L |", "|---|---|---|---|---|---|---|"]
    for _, r in refs.iterrows():
        lines.append(f"| {r['setting']} | {r['forget_split']} | {r['label']} | - | {r['forget_quality']:.3g} | "
                     f"{format_interval(r['model_utility'], r['model_utility_low'], r['model_utility_high'])} | "
                     f"{format_interval(r['forget_rouge'], r['forget_rouge_low'], r['forget_rouge_high'])} |")
    for _, r in best[best["kind"] != "reference"].iterrows():
        lines.append(f"| {r['setting']} | {r['forget_split']} | {r['label']} | {r['seeds']} | "
                     f"{format_interval(r['forget_quality'], r['forget_quality_seed_low'], r['forget_quality_seed_high'])} | "
                     f"{format_interval(r['model_utility'], r['model_utility_seed_low'], r['model_utility_seed_high'])} | "
                     f"{format_interval(r['forget_rouge'], r['forget_rouge_seed_low'], r['forget_rouge_seed_high'])} |")
    lines += ["", "## At matched forgetting (forget ROUGE-L down to the retain model's)", "",
              "| setting | split | method | seeds reaching it | MU there | neighbour ROUGE-L | retain ROUGE-L | "
              "where (epoch or x lambda*) |", "|---|---|---|---|---|---|---|---|"]
    for _, r in refs.iterrows():
        lines.append(f"| {r['setting']} | {r['forget_split']} | {r['label']} model | - | "
                     f"{format_interval(r['model_utility'], r['model_utility_low'], r['model_utility_high'])} | "
                     f"{format_interval(r['neighbour_rouge'], r['neighbour_rouge_low'], r['neighbour_rouge_high'])} | "
                     f"{format_interval(r['retain_rouge'], r['retain_rouge_low'], r['retain_rouge_high'])} | - |")
    for _, r in matched.iterrows():
        lines.append(f"| {r['setting']} | {r['forget_split']} | {r['label']} | {r['reached']} of {r['seeds']} | "
                     f"{format_interval(r['model_utility'], r['model_utility_seed_low'], r['model_utility_seed_high'])} | "
                     f"{_cell(r, 'neighbour_rouge')} | {_cell(r, 'retain_rouge')} | "
                     f"{format_interval(r['x'], r['x_seed_low'], r['x_seed_high'], 2)} |")
    spread = seed_spread(matched_seeds) if matched_seeds is not None else pd.DataFrame()
    lines += ["", "## Seed-to-seed spread at matched forgetting (model utility)", ""]
    if spread.empty:
        lines.append("No method has two seeds at matched forgetting yet: the seed-to-seed spread is not measured, "
                     "and an interval from one seed holds the item-to-item spread only.")
    else:
        lines += ["A seed re-draws the unlearning run's data order and retain sampling (training-based methods) or "
                  "the reinforcement fine-tune behind tau (TV, PerTA); the target and retain models are shared. "
                  "Next to it: the range of all methods' seed means in the same setting.", "",
                  "| setting | split | method | seeds | MU per seed | range | SD | range of the methods' means |",
                  "|---|---|---|---|---|---|---|---|"]
        for _, r in spread.iterrows():
            lines.append(f"| {r['setting']} | {r['forget_split']} | {r['label']} | {r['seeds']} | "
                         f"{', '.join(f'{v:.3f}' for v in r['values'])} | {r['range']:.3f} | {r['sd']:.3f} | "
                         f"{r['methods_range']:.3f} |")
    lines += ["", "## Collateral damage at matched forgetting", ""]
    rows_there = collateral is not None and len(collateral) > 0
    neighbour = rows_there and (collateral["split"] == NEIGHBOUR).any()
    if not rows_there:
        lines.append("No method has been placed at matched forgetting yet (a study in progress: the reference "
                     "models and at least one method cell are needed): no collateral-damage table.")
        return "\n".join(lines) + "\n"
    if not neighbour:
        lines += ["No neighbour items in these results (a setting where no retain answer shares a fact with a "
                  "forget answer, or results evaluated before the neighbour split existed): the retain split's "
                  "rows only.", ""]
    reference = str(collateral["reference"].iloc[0])
    lines += ["Per item: the method's value at matched forgetting (interpolated between the two evaluated points "
              f"around the crossing, averaged over the seeds reaching it) minus the {reference} model's on the same "
              "item (the retain model never saw the forget authors). Every metric reads higher = more kept "
              "(truth ratio: max(0, 1 - tr)), so **negative = damage**. Interval: 95 %, paired bootstrap over "
              "items (seed-to-seed spread not included). Verdict: *loses* when the interval is entirely below 0, "
              "*gains* when entirely above, *cannot tell* when it contains 0 (which is not evidence of no loss).", "",
              f"| setting | split | method | evaluated on | metric | method - {reference} model | items | seeds | "
              "verdict |",
              "|---|---|---|---|---|---|---|---|---|"]
    for _, r in collateral.iterrows():
        lines.append(f"| {r['setting']} | {r['forget_split']} | {r['label']} | {r['split']} | "
                     f"{METRIC_NAMES.get(r['metric'], r['metric'])} | "
                     f"{format_interval(r['difference'], r['difference_low'], r['difference_high'])} | {r['items']} | "
                     f"{r['seeds']} of {r['seeds_total']} | {r['verdict']} |")
    return "\n".join(lines) + "\n"


def _cell(row: pd.Series, column: str) -> str:
    """A table cell of a seed mean with its interval, "-" where the column is missing or NaN."""
    if column not in row.index:
        return "-"
    return format_interval(row[column], row[f"{column}_seed_low"], row[f"{column}_seed_high"])


def tradeoff_figure(frame: pd.DataFrame, path: Path) -> Path:
    """Forget ROUGE-L (x) against model utility (y): each method's curve along its strength axis (mean over
    seeds, bars: seed intervals), the target and retain models as markers, the retain model's forget ROUGE-L
    as a dashed line (matched forgetting). One panel per setting and split."""
    return _curves_figure(frame, path, "model_utility", "model utility (higher: more kept)",
                          "Forgetting against utility along each method's strength axis (epochs / lambda)")


def neighbour_figure(frame: pd.DataFrame, path: Path) -> Path:
    """As :func:`tradeoff_figure`, with neighbour ROUGE-L (retain-author answers sharing a fact with a forget
    answer) in place of model utility: what forgetting costs on the knowledge closest to it."""
    return _curves_figure(frame, path, "neighbour_rouge", "neighbour ROUGE-L (higher: more kept)",
                          "Forgetting against neighbour knowledge along each method's strength axis")


def _curves_figure(frame: pd.DataFrame, path: Path, y: str, ylabel: str, title: str) -> Path:
    """:func:`curves_figure`, saved as PNG at ``path`` by :func:`palu_perta.plots.write_png` (checked for
    overlapping text and an incomplete legend, written to a temporary name, then renamed)."""
    import matplotlib.pyplot as plt

    from . import plots

    fig = curves_figure(frame, y, ylabel, title)
    try:
        return plots.write_png(fig, path)
    finally:
        plt.close(fig)


def curves_figure(frame: pd.DataFrame, y: str = "model_utility", ylabel: str = "model utility (higher: more kept)",
                  title: str = "Forgetting against utility along each method's strength axis (epochs / lambda)"
                  ) -> Figure:
    """Forget ROUGE-L (x, inverted: right is more forgotten) against ``y`` (a column of :func:`points`): each
    method's curve along its strength axis (mean over seeds, bars: 95 % Student-t seed intervals, none with
    one seed), the target and retain models as markers, the retain model's forget ROUGE-L as a dashed line
    (matched forgetting). One panel per setting and split; one legend, right of the panels, naming every
    line of every panel.
    Returns the matplotlib figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    means = seed_mean(frame, ["forget_rouge", y])
    panels = list(means.groupby(["setting", "forget_split"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels) + 3.5, 4.8), squeeze=False)  # + the legend
    labels = sorted(means.loc[means["kind"] != "reference", "label"].unique())
    colours = dict(zip(labels, sns.color_palette("tab10", len(labels))))
    intervals = False
    for ax, ((setting, split), panel) in zip(axes[0], panels):
        refs = panel[panel["kind"] == "reference"].set_index("label")
        for label in labels:
            curve = panel[panel["label"] == label].sort_values("x")
            if curve.empty:
                continue
            start = ([refs.loc["target", "forget_rouge"]], [refs.loc["target", y]]) if "target" in refs.index else ([], [])
            xs = [*start[0], *curve["forget_rouge"]]
            ys = [*start[1], *curve[y]]
            seeds = int(curve["seeds"].max())
            ax.plot(xs, ys, "-o", color=colours[label], ms=4, label=f"{label} ({seeds} seed{'s' if seeds > 1 else ''})")
            err = curve.dropna(subset=[f"{y}_seed_low"])
            if len(err):
                intervals = True
                ax.errorbar(err["forget_rouge"], err[y],
                            xerr=[err["forget_rouge"] - err["forget_rouge_seed_low"],
                                  err["forget_rouge_seed_high"] - err["forget_rouge"]],
                            yerr=[err[y] - err[f"{y}_seed_low"], err[f"{y}_seed_high"] - err[y]],
                            fmt="none", ecolor=colours[label], alpha=0.5, capsize=2, label="_nolegend_")
        for name, marker in (("target", "s"), ("retain", "*")):
            if name in refs.index:  # a study in progress may not have both yet
                ax.plot(refs.loc[name, "forget_rouge"], refs.loc[name, y], marker, color="black", ms=10,
                        label=f"{name} model")
        if "retain" in refs.index:
            ax.axvline(refs.loc["retain", "forget_rouge"], color="grey", ls="--", lw=1,
                       label="retain model's forget ROUGE-L (matched forgetting)")
        ax.set(title=f"{setting}, {split}", xlabel="forget ROUGE-L (lower: more forgotten)", ylabel=ylabel)
        ax.invert_xaxis()
    handles: dict[str, Any] = {}
    for ax in axes[0]:  # every panel's lines, once each, in one legend
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    note = ("mean over seeds; bars: 95 % Student-t interval over seeds" if intervals
            else "one seed per point: no interval over seeds")
    axes[0][-1].legend(handles.values(), handles.keys(), fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                       title=note, title_fontsize=8)  # outside the panel: it hides no curve
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def build(name: str, root: Path | None = None, out: Path | None = None) -> list[Path]:
    """The tables (markdown, the per-point CSV, the verdicts on the papers' claims as
    ``study_<name>_verdicts.csv``: :func:`palu_perta.verdicts.claim_table`) and the trade-off figure of study
    ``name``, written to ``out`` (default: ``figures/``) as ``study_<name>*``; with neighbour items also the
    neighbour figure ``study_<name>_neighbour.png``. Returns the paths written."""
    from . import verdicts
    from .artifacts import atomic_write_text

    directory = Path(root or store.results_root()) / name
    tables = store.load(directory)
    if tables["summaries"].empty:
        raise ValueError(f"no results in {directory}; run `python -m palu_perta study --grid {name}` first")
    frame = points(tables)
    out = Path(out or figures_dir())
    per_seed = at_matched_forgetting(frame)
    best, matched = best_fq(frame), matched_summary(per_seed)
    collateral = collateral_table(tables, frame)
    claims = verdicts.claim_table(tables, frame)
    text = (tables_markdown(name, frame, best, matched, collateral, per_seed) + "\n"
            + verdicts.claims_markdown(claims))
    paths = [atomic_write_text(out / f"study_{name}.md", text),
             atomic_write_text(out / f"study_{name}_points.csv", frame.round(6).to_csv(index=False)),
             atomic_write_text(out / f"study_{name}_verdicts.csv", claims.round(6).to_csv(index=False)),
             tradeoff_figure(frame, out / f"study_{name}_tradeoff.png")]
    if frame["neighbour_rouge"].notna().any():
        paths.append(neighbour_figure(frame, out / f"study_{name}_neighbour.png"))
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    names = list(argv if argv is not None else sys.argv[1:])
    if any(name.startswith("-") for name in names):
        print("usage: python -m palu_perta.report [STUDY ...]   (default: every study under results/)",
              file=sys.stderr)
        return 0 if set(names) & {"-h", "--help"} else 2
    root = store.results_root()
    names = names or store.study_names(root)
    if not names:
        print(f"no study results under {root}", file=sys.stderr)
        return 2
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    for name in names:
        for path in build(name):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
