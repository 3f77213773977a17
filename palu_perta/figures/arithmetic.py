"""The figures of notebooks 03 (task vectors) and 05 (PerTA): tau's norms per layer, and the forgetting /
utility trade-off along lambda."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import pandas as pd

from .. import plots
from . import register

TRADEOFF_KEYS = ("lam", "model_utility", "forget_Q_A_ROUGE", "forget_quality")  # what the trade-off draws


def sweep_columns(rows: pd.DataFrame) -> pd.DataFrame:
    """The columns of a lambda sweep the trade-off figure draws (the data kept for it)."""
    return rows[list(TRADEOFF_KEYS)].reset_index(drop=True)


def summary_point(summary: Mapping[str, float]) -> dict[str, float]:
    """The numbers of an evaluation summary the trade-off figure draws (target, retain)."""
    return {k: float(summary[k]) for k in TRADEOFF_KEYS if k != "lam"}


@register("03_tau_norms")
def tau_norms(norms: pd.DataFrame) -> plt.Figure:
    """``norms``: one row per layer group (in depth order), columns ``||tau||`` and ``relative``
    (||tau_g|| / ||theta_o,g||)."""
    fig, axes = plt.subplots(1, 2, figsize=(14, 4))
    # dots, not bars: on a log axis a bar's length starts at an arbitrary bottom and means nothing. No interval:
    # each norm is one exact number of one pair of models, not an estimate over items
    plots.dot_intervals(axes[0], norms.index, norms["||tau||"], colours="#4c72b0", rotation=90)
    plots.dot_intervals(axes[1], norms.index, norms["relative"], colours="#dd8452", rotation=90)
    axes[0].set(title="norm of the task vector per layer group", ylabel="", xlabel="")
    axes[1].set(title="relative to the target's weights: ||tau_g|| / ||theta_o,g||", ylabel="", xlabel="")
    for ax in axes:
        ax.set_yscale("log")
    return fig


def _tradeoff(curves: Mapping[str, pd.DataFrame], target: Mapping[str, float], retain: Mapping[str, float],
              fq_items: Sequence[int], title: str, colours: Mapping[str, str] | None = None,
              figsize: tuple[float, float] = (12, 4.5)) -> plt.Figure:
    """Forget ROUGE-L and forget quality against model utility, one line per method (its points labelled with
    their lambdas); the target and retain models as stars. ``fq_items``: the numbers of forget truth ratios
    forget quality compares (unlearned, retain), for the values it can take."""
    colours = dict(colours or {})
    fig, axes = plt.subplots(1, 2, figsize=figsize)
    for ax, key, label in [(axes[0], "forget_Q_A_ROUGE", "forget ROUGE-L recall (lower: forgets more)"),
                           (axes[1], "forget_quality", "forget quality (log; higher: closer to retain)")]:
        for name, curve in curves.items():
            start = pd.DataFrame([{"lam": 0.0, **target}])  # every curve starts at the target (lambda = 0)
            line = pd.concat([start, curve])
            ax.plot(line["model_utility"], line[key], marker="o", label=name, color=colours.get(name))
        ax.scatter(target["model_utility"], target[key], marker="*", s=220, color="black", label="target", zorder=3)
        ax.scatter(retain["model_utility"], retain[key], marker="*", s=220, color="#2ca02c", label="retain", zorder=3)
        ax.set(xlabel="model utility", ylabel=label)
    axes[1].set_yscale("log")
    plots.mark_fq_lattice(axes[1], *fq_items)  # forget quality moves in steps: the values it can take
    for ax, key in ((axes[0], "forget_Q_A_ROUGE"), (axes[1], "forget_quality")):  # lambda labels, no overlaps
        for name, curve in curves.items():
            for text in plots.label_points(ax, curve["model_utility"], curve[key], [f"{lam:g}" for lam in curve["lam"]],
                                           fontsize=8):
                if name in colours:
                    text.set_color(colours[name])
    fig.legend(*axes[1].get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, -0.02),
               ncol=len(curves) + 3, fontsize=9)
    fig.suptitle(title)
    return fig


@register("03_tv_tradeoff")
def tv_tradeoff(tv: pd.DataFrame, target: Mapping[str, float], retain: Mapping[str, float],
                fq_items: Sequence[int]) -> plt.Figure:
    """``tv``: the TV sweep (:func:`sweep_columns`); ``target``, ``retain``: :func:`summary_point`."""
    return _tradeoff({"TV": tv}, target, retain, fq_items, "Task-vector negation: one point per lambda (labels)")


PERTA_COLOURS = {"TV": "#4c72b0", "PerTA-grad": "#dd8452", "PerTA-fisher": "#8172b3"}


@register("05_pareto")
def perta_pareto(curves: Mapping[str, pd.DataFrame], target: Mapping[str, float], retain: Mapping[str, float],
                 fq_items: Sequence[int], profile_name: str) -> plt.Figure:
    """``curves``: label ("TV", "PerTA-grad", "PerTA-fisher") -> that method's sweep (:func:`sweep_columns`)."""
    return _tradeoff(curves, target, retain, fq_items, f"TV vs PerTA ({profile_name} profile)", PERTA_COLOURS,
                     figsize=(13, 4.8))
