"""A study's figures and tables, rebuilt from its committed results in seconds (nothing is trained).

    python -m palu_perta.report            # every study under results/ (``make figures``)
    python -m palu_perta.report cpu        # one study

From the results store (:mod:`palu_perta.store`) it computes, with :mod:`palu_perta.stats`:

- per evaluated point: forget ROUGE-L, model utility and the forget truth ratio with 95 % bootstrap
  intervals over items, and forget quality with the next attainable values of its KS lattice;
- per method and point of its strength axis (epoch, or lambda as a multiple of lambda*): the mean over
  seeds with a Student-t interval;
- two tables: each method's best forget-quality point, as the papers report it, and each method at
  *matched forgetting*: model utility interpolated along its curve at the point where its forget ROUGE-L
  first comes down to the retain model's (a model that never saw the forget authors);
- the trade-off figure: forget ROUGE-L against model utility, one curve per method, seed intervals as bars.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from . import stats, store
from .paths import figures_dir

LEVEL = 0.95
RESAMPLES = 1000  # bootstrap resamples per interval: the 2.5 % quantile moves by ~0.002 MU between seeds of the bootstrap
UTILITY_COLUMNS = {"retain": ("prob", "rougeL_recall", "truth_ratio"),
                   "real_authors": ("prob_normalised", "rougeL_recall", "truth_ratio"),
                   "world_facts": ("prob_normalised", "rougeL_recall", "truth_ratio")}


def _utility(columns: dict[str, np.ndarray]) -> float:
    """Model utility from per-item columns named ``split:column`` (the summary's formula, item by item)."""
    parts = []
    for split, names in UTILITY_COLUMNS.items():
        for name in names:
            values = columns[f"{split}:{name}"]
            parts.append(np.mean(np.maximum(0.0, 1.0 - values)) if name == "truth_ratio" else np.mean(values))
    parts = np.asarray(parts)
    return 0.0 if np.any(parts <= 0) else float(scipy_stats.hmean(parts))


def _forget_tr(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    return np.mean(np.minimum(values, 1.0 / (values + 1e-10)), axis=axis)


def point_intervals(items: pd.DataFrame, retain_forget_tr: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Intervals of one evaluated point from its item rows (one row per split x item).

    Returns ``forget_rouge``, ``model_utility``, ``forget_truth_ratio`` and ``forget_quality`` as
    :class:`~palu_perta.stats.Interval`, and ``fq_steps``: the attainable forget-quality values just
    below and above the observed one for these item counts."""
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
    }


def points(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per cell x evaluated point: identity (setting, split, label, method, seed, ``x``: the epoch,
    the lambda multiple, or 0 for a reference model), the summary's metrics, and item-bootstrap intervals
    (``<metric>_low`` / ``_high``); ``fq_below`` / ``fq_above``: the neighbouring attainable FQ values."""
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
                   "retain_rouge": summary["retain_Q_A_ROUGE"], "n_forget": len(retain_tr)}
            for name in ("forget_rouge", "model_utility", "forget_truth_ratio", "forget_quality"):
                row[f"{name}_low"], row[f"{name}_high"] = intervals[name].low, intervals[name].high
            row["fq_below"], row["fq_above"] = intervals["fq_steps"]
            rows.append(row)
    return pd.DataFrame(rows)


def seed_mean(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Mean over seeds of ``columns`` per (setting, split, label, x), with Student-t intervals
    (``<column>_seed_low`` / ``_seed_high``; NaN with one seed) and the number of seeds."""
    rows = []
    for key, group in frame.groupby(["setting", "forget_split", "label", "kind", "x"], dropna=False):
        row = dict(zip(["setting", "forget_split", "label", "kind", "x"], key))
        row["seeds"] = len(group)
        for column in columns:
            interval = stats.seed_interval(group[column].to_numpy(float), level=LEVEL)
            row[column], row[f"{column}_seed_low"], row[f"{column}_seed_high"] = (interval.estimate, interval.low,
                                                                                  interval.high)
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt(estimate: float, low: float, high: float, digits: int = 3) -> str:
    if estimate is None or estimate != estimate:
        return "-"
    if low != low or high != high:
        return f"{estimate:.{digits}f}"
    return f"{estimate:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def best_fq(frame: pd.DataFrame) -> pd.DataFrame:
    """Each method's point of highest forget quality per seed (ties: higher model utility), as the papers
    report a method; then the mean over seeds with Student-t intervals."""
    best = (frame.sort_values(["forget_quality", "model_utility"], ascending=False)
            .groupby(["setting", "forget_split", "label", "kind", "seed"], as_index=False).head(1))
    best = best.assign(x=0.0)  # one point per seed: aggregate over seeds whatever epoch or lambda it was
    return seed_mean(best, ["forget_quality", "model_utility", "forget_rouge", "forget_truth_ratio"])


def at_matched_forgetting(frame: pd.DataFrame) -> pd.DataFrame:
    """Each method at matched forgetting, per seed: walking its curve from the target model (x = 0) along
    its strength axis, the first point where forget ROUGE-L comes down to the retain model's; model utility
    and forget quality there are interpolated linearly in forget ROUGE-L between the two points around the
    crossing. ``reached`` is False (values NaN) when the curve never gets there. One row per seed."""
    rows = []
    for (setting, split), group in frame.groupby(["setting", "forget_split"]):
        retain = group[group["method"] == "retain"].iloc[0]
        target = group[group["method"] == "target"].iloc[0]
        threshold = retain["forget_rouge"]
        for (label, kind, seed), curve in group[group["kind"] != "reference"].groupby(["label", "kind", "seed"]):
            curve = curve.sort_values("x")
            xs = [0.0, *curve["x"]]
            rouge = [target["forget_rouge"], *curve["forget_rouge"]]
            mu = [target["model_utility"], *curve["model_utility"]]
            fq = [target["forget_quality"], *curve["forget_quality"]]
            row = {"setting": setting, "forget_split": split, "label": label, "kind": kind, "seed": seed,
                   "threshold": threshold, "reached": False, "x": np.nan, "model_utility": np.nan,
                   "forget_quality": np.nan}
            for i in range(1, len(xs)):
                if rouge[i] <= threshold:
                    share = 1.0 if rouge[i - 1] == rouge[i] else (rouge[i - 1] - threshold) / (rouge[i - 1] - rouge[i])
                    share = min(1.0, max(0.0, share))
                    row.update(reached=True, x=xs[i - 1] + share * (xs[i] - xs[i - 1]),
                               model_utility=mu[i - 1] + share * (mu[i] - mu[i - 1]),
                               forget_quality=fq[i - 1] + share * (fq[i] - fq[i - 1]))
                    break
            rows.append(row)
    return pd.DataFrame(rows)


def matched_summary(matched: pd.DataFrame) -> pd.DataFrame:
    """:func:`at_matched_forgetting` over seeds: how many seeds reached the retain model's forget ROUGE-L,
    and the mean model utility there with its Student-t interval over those seeds."""
    rows = []
    for key, group in matched.groupby(["setting", "forget_split", "label", "kind"]):
        reached = group[group["reached"]]
        row = dict(zip(["setting", "forget_split", "label", "kind"], key))
        row.update(seeds=len(group), reached=len(reached))
        for column in ("model_utility", "x"):
            if len(reached):
                interval = stats.seed_interval(reached[column].to_numpy(float), level=LEVEL)
                row[column], row[f"{column}_seed_low"], row[f"{column}_seed_high"] = (interval.estimate, interval.low,
                                                                                      interval.high)
            else:
                row[column] = row[f"{column}_seed_low"] = row[f"{column}_seed_high"] = np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def tables_markdown(name: str, frame: pd.DataFrame, best: pd.DataFrame, matched: pd.DataFrame) -> str:
    """Both tables as markdown, with what every interval is."""
    refs = frame[frame["kind"] == "reference"]
    seeds = sorted(frame.loc[frame["kind"] != "reference", "seed"].unique())
    n_forget = int(frame["n_forget"].iloc[0])
    lines = [f"# Study `{name}`", "",
             f"{len(frame)} evaluated models; seeds {', '.join(map(str, seeds))}; {n_forget} forget answers per "
             f"forget set. Intervals: 95 %, Student-t over seeds (none with one seed); reference models: "
             f"bootstrap over items.", ""]
    lines += ["## Best forget quality per method (as the papers report it)", "",
              "| setting | split | method | seeds | FQ | MU | forget ROUGE-L |", "|---|---|---|---|---|---|---|"]
    for _, r in refs.iterrows():
        lines.append(f"| {r['setting']} | {r['forget_split']} | {r['label']} | - | {r['forget_quality']:.3g} | "
                     f"{_fmt(r['model_utility'], r['model_utility_low'], r['model_utility_high'])} | "
                     f"{_fmt(r['forget_rouge'], r['forget_rouge_low'], r['forget_rouge_high'])} |")
    for _, r in best[best["kind"] != "reference"].iterrows():
        lines.append(f"| {r['setting']} | {r['forget_split']} | {r['label']} | {r['seeds']} | "
                     f"{_fmt(r['forget_quality'], r['forget_quality_seed_low'], r['forget_quality_seed_high'])} | "
                     f"{_fmt(r['model_utility'], r['model_utility_seed_low'], r['model_utility_seed_high'])} | "
                     f"{_fmt(r['forget_rouge'], r['forget_rouge_seed_low'], r['forget_rouge_seed_high'])} |")
    lines += ["", "## At matched forgetting (forget ROUGE-L down to the retain model's)", "",
              "| setting | split | method | seeds reaching it | MU there | where (epoch or x lambda*) |",
              "|---|---|---|---|---|---|"]
    for _, r in matched.iterrows():
        lines.append(f"| {r['setting']} | {r['forget_split']} | {r['label']} | {r['reached']} of {r['seeds']} | "
                     f"{_fmt(r['model_utility'], r['model_utility_seed_low'], r['model_utility_seed_high'])} | "
                     f"{_fmt(r['x'], r['x_seed_low'], r['x_seed_high'], 2)} |")
    return "\n".join(lines) + "\n"


def tradeoff_figure(frame: pd.DataFrame, path: Path) -> Path:
    """Forget ROUGE-L (x) against model utility (y): each method's curve along its strength axis (mean over
    seeds, bars: seed intervals), the target and retain models as markers, the retain model's forget ROUGE-L
    as a dashed line (matched forgetting). One panel per setting and split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    means = seed_mean(frame, ["forget_rouge", "model_utility"])
    panels = list(means.groupby(["setting", "forget_split"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.8), squeeze=False)
    labels = sorted(means.loc[means["kind"] != "reference", "label"].unique())
    colours = dict(zip(labels, sns.color_palette("tab10", len(labels))))
    for ax, ((setting, split), panel) in zip(axes[0], panels):
        refs = panel[panel["kind"] == "reference"].set_index("label")
        for label in labels:
            curve = panel[panel["label"] == label].sort_values("x")
            if curve.empty:
                continue
            xs = [refs.loc["target", "forget_rouge"], *curve["forget_rouge"]]
            ys = [refs.loc["target", "model_utility"], *curve["model_utility"]]
            ax.plot(xs, ys, "-o", color=colours[label], ms=4, label=f"{label} ({int(curve['seeds'].max())} seeds)")
            err = curve.dropna(subset=["model_utility_seed_low"])
            if len(err):
                ax.errorbar(err["forget_rouge"], err["model_utility"],
                            xerr=[err["forget_rouge"] - err["forget_rouge_seed_low"],
                                  err["forget_rouge_seed_high"] - err["forget_rouge"]],
                            yerr=[err["model_utility"] - err["model_utility_seed_low"],
                                  err["model_utility_seed_high"] - err["model_utility"]],
                            fmt="none", ecolor=colours[label], alpha=0.5, capsize=2)
        for name, marker in (("target", "s"), ("retain", "*")):
            ax.plot(refs.loc[name, "forget_rouge"], refs.loc[name, "model_utility"], marker, color="black", ms=10,
                    label=f"{name} model")
        ax.axvline(refs.loc["retain", "forget_rouge"], color="grey", ls="--", lw=1)
        ax.set(title=f"{setting}, {split}", xlabel="forget ROUGE-L (lower: more forgotten)",
               ylabel="model utility (higher: more kept)")
        ax.invert_xaxis()
    axes[0][-1].legend(fontsize=8, loc="best")
    fig.suptitle("Forgetting against utility along each method's strength axis (epochs / lambda)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


def build(name: str, root: Path | None = None, out: Path | None = None) -> list[Path]:
    """The tables (markdown and the per-point CSV) and the trade-off figure of study ``name``, written to
    ``out`` (default: ``figures/``) as ``study_<name>*``. Returns the paths written."""
    from .artifacts import atomic_write_text

    directory = Path(root or store.results_root()) / name
    tables = store.load(directory)
    if tables["summaries"].empty:
        raise ValueError(f"no results in {directory}; run `python -m palu_perta study --grid {name}` first")
    frame = points(tables)
    out = Path(out or figures_dir())
    best, matched = best_fq(frame), matched_summary(at_matched_forgetting(frame))
    paths = [atomic_write_text(out / f"study_{name}.md", tables_markdown(name, frame, best, matched)),
             atomic_write_text(out / f"study_{name}_points.csv", frame.round(6).to_csv(index=False)),
             tradeoff_figure(frame, out / f"study_{name}_tradeoff.png")]
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    names = list(argv if argv is not None else sys.argv[1:])
    root = store.results_root()
    names = names or sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*.jsonl"))) if root.is_dir() \
        else names
    if not names:
        print(f"no study results under {root}", file=sys.stderr)
        return 2
    for name in names:
        for path in build(name):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
