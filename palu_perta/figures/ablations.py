"""The figures of notebook 07, each drawn from its recorded data (see :mod:`palu_perta.figures`): PALU's ablation
axes (forget quality and model utility per setting, with 95 % item-bootstrap intervals), PALU's 2 x 2 of
temporal x vocabulary scope (with the default's temporal scope, every sensitive token, as a third row), and
PerTA-grad's ablations at equal forgetting."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .. import plots
from . import register

FLOOR = 1e-30  # a log axis has no 0: forget quality is drawn at this floor at least
# what a setting's dot and intervals need: its x label, whether it is the default, and both metrics' 95 % intervals
POINT_KEYS = ("value", "default", "forget_quality", "forget_quality_low", "forget_quality_high",
              "model_utility", "model_utility_low", "model_utility_high")
DEFAULT_COLOUR = plots.ONSET_COLOUR  # the default setting's dots (red)
PALU_COLOUR = "#6baed6"  # PALU's other settings
PERTA_COLOUR = "#dd8452"  # PerTA's other variants


def point_columns(rows: pd.DataFrame, labels: Sequence[str] | None = None) -> pd.DataFrame:
    """The columns of ablation rows (with ``<metric>_low`` / ``_high`` intervals) that a dot figure draws
    (:data:`POINT_KEYS`), in order, the index reset; ``labels``, when given, replace ``value`` as the x labels."""
    points = rows.assign(value=list(labels)) if labels is not None else rows
    return points[list(POINT_KEYS)].reset_index(drop=True)


def _axis_plot(ax_fq: plt.Axes, ax_mu: plt.Axes, rows: pd.DataFrame, title: str, xlabel: str,
               fq_items: Sequence[int], target_utility: float, retain_utility: float) -> None:
    """One axis of the grid: forget quality (log, with the values it can take) and model utility, each setting a
    dot with its 95 % item-bootstrap interval (a bar on a log or truncated axis has no meaningful length)."""
    colours = [DEFAULT_COLOUR if d else PALU_COLOUR for d in rows["default"]]
    plots.dot_intervals(ax_fq, rows["value"], rows["forget_quality"].clip(lower=FLOOR),
                        rows["forget_quality_low"].clip(lower=FLOOR), rows["forget_quality_high"].clip(lower=FLOOR),
                        colours=colours)
    ax_fq.set(yscale="log", title=title, ylabel="forget quality (log)")
    plots.mark_fq_lattice(ax_fq, *fq_items)
    plots.dot_intervals(ax_mu, rows["value"], rows["model_utility"], rows["model_utility_low"],
                        rows["model_utility_high"], colours=colours)
    ax_mu.set(ylabel="model utility", xlabel=xlabel)
    ax_mu.axhline(target_utility, color="black", ls="--", lw=1, label="target")
    ax_mu.axhline(retain_utility, color="goldenrod", ls=":", lw=1.5, label="retain")
    lo = min(rows["model_utility_low"].min(), retain_utility, target_utility)
    hi = max(rows["model_utility_high"].max(), retain_utility, target_utility)
    ax_mu.set_ylim(max(0.0, lo - 0.05 * max(hi - lo, 0.01) - 0.01), hi + 0.05 * max(hi - lo, 0.01) + 0.01)


def _palu_grid(rows: Mapping[str, pd.DataFrame], panels: Sequence[tuple[str, str]], fq_items: Sequence[int],
               target_utility: float, retain_utility: float, title: str) -> plt.Figure:
    """Two PALU axes side by side (``panels``: (axis, x label) per column), forget quality above, utility below; an
    axis missing from ``rows`` (or without rows: not run) leaves its column empty."""
    fig, axes = plt.subplots(2, 2, figsize=(12, 6.5), sharex="col", gridspec_kw={"wspace": 0.45})
    for col, (axis, label) in enumerate(panels):
        points = rows.get(axis)
        if points is not None and len(points):
            _axis_plot(axes[0, col], axes[1, col], points, f"PALU, {axis}", label, fq_items, target_utility,
                       retain_utility)
    axes[1, 1].legend(loc="lower right", fontsize=8)
    axes[0, 1].legend(loc="lower right", fontsize=8)  # the attainable forget-quality values
    fig.suptitle(title)
    return fig


@register("07_palu_strength")
def palu_strength(rows: Mapping[str, pd.DataFrame], learning_rate: float, fq_items: Sequence[int],
                  target_utility: float, retain_utility: float, profile_name: str) -> plt.Figure:
    """PALU's ``lr_scale`` and ``alpha`` axes. ``learning_rate``: the budget's learning rate (the scales' unit).
    ``rows``: axis name -> that axis' settings in x order (:func:`point_columns`: ``value`` the x label, ``default``
    bool, ``forget_quality`` and ``model_utility`` each with ``_low`` / ``_high``, its 95 % item-bootstrap
    interval); ``fq_items``: (forget items, retain-model forget items), the counts forget quality compares (for
    the values it can take); ``target_utility``, ``retain_utility``: the reference models' model utility (lines);
    ``profile_name``: named in the title."""
    return _palu_grid(rows, [("lr_scale", f"learning rate, x the budget's {learning_rate:g}"),
                             ("alpha", "alpha (weight of retain NLL + KL on ordinary tokens)")],
                      fq_items, target_utility, retain_utility,
                      f"PALU: how hard it pushes (red: notebook 06's setting; bars: 95 % item-bootstrap intervals); "
                      f"{profile_name} profile")


@register("07_palu_k_and_n")
def palu_k_and_n(rows: Mapping[str, pd.DataFrame], default_top_k: int, default_first_n: int, fq_items: Sequence[int],
                 target_utility: float, retain_utility: float, profile_name: str) -> plt.Figure:
    """PALU's ``top_k`` and ``first_n`` axes. ``default_top_k``, ``default_first_n``: PALU's defaults K and N
    (named in the title; N = -1: every sensitive token, "all", as the authors' configuration has it).
    ``rows``: axis name -> that axis' settings in x order (:func:`point_columns`: ``value`` the x label, ``default``
    bool, ``forget_quality`` and ``model_utility`` each with ``_low`` / ``_high``, its 95 % item-bootstrap
    interval); ``fq_items``: (forget items, retain-model forget items), the counts forget quality compares (for
    the values it can take); ``target_utility``, ``retain_utility``: the reference models' model utility (lines);
    ``profile_name``: named in the title."""
    return _palu_grid(rows, [("top_k", "K (top-K candidates; V = the whole vocabulary)"),
                             ("first_n", "N (onset tokens per span; all = every sensitive token)")],
                      fq_items, target_utility, retain_utility,
                      f"PALU: top-K and onset length (red: the default; bars: 95 % intervals; K = {default_top_k}, "
                      f"N = {'all' if default_first_n == -1 else default_first_n}); {profile_name} profile")


@register("07_palu_target_and_form")
def palu_target_and_form(rows: Mapping[str, pd.DataFrame], top_k: int, fq_items: Sequence[int], target_utility: float,
                         retain_utility: float, profile_name: str) -> plt.Figure:
    """PALU's ``target`` (the value c the top-K logits are pulled to) and ``form`` (of the local loss) axes, both
    run at K = ``top_k`` (``ablations.TARGET_FORM_TOP_K``), so neither holds the default point (named in the title).
    ``rows``: axis name -> that axis' settings in x order (:func:`point_columns`: ``value`` the x label, ``default``
    bool, ``forget_quality`` and ``model_utility`` each with ``_low`` / ``_high``, its 95 % item-bootstrap
    interval); ``fq_items``: (forget items, retain-model forget items), the counts forget quality compares (for
    the values it can take); ``target_utility``, ``retain_utility``: the reference models' model utility (lines);
    ``profile_name``: named in the title."""
    return _palu_grid(rows, [("target", "target c"), ("form", "form of the local loss")], fq_items, target_utility,
                      retain_utility, f"PALU: the target c and the form of the loss, at K = {top_k} (the default, K = 1, "
                      f"is on no point; bars: 95 % item-bootstrap intervals); {profile_name} profile")


# the temporal scopes from the narrowest to the widest (rows), and the vocabulary scopes (columns)
TEMPORAL_ORDER = ("onset", "sensitive", "answer")
VOCABULARY_ORDER = ("topk", "full")


@register("07_palu_scope_2x2")
def palu_scope(cells: pd.DataFrame, profile_name: str) -> plt.Figure:
    """PALU's 2 x 2 as two heatmaps, log10 forget quality and model utility. ``cells``: one row per cell, columns
    ``temporal`` ("onset" / "answer", and "sensitive": the default's row beside the paper's 2 x 2), ``vocabulary``
    ("topk" / "full"), ``forget_quality``, ``model_utility``, and optionally ``default`` (bool: that cell is
    outlined in red). Rows run from the narrowest temporal scope to the widest."""
    rows = [t for t in TEMPORAL_ORDER if t in set(cells["temporal"])]
    fig, axes = plt.subplots(1, 2, figsize=(12, 1.4 + 1.2 * len(rows)), gridspec_kw={"wspace": 0.35})
    default = cells[cells["default"].astype(bool)] if "default" in cells else cells.iloc[:0]
    for ax, key, label, fmt in [(axes[0], "forget_quality", "forget quality (log10)", ".2f"),
                                (axes[1], "model_utility", "model utility", ".3f")]:
        grid = cells.pivot(index="temporal", columns="vocabulary", values=key)
        grid = grid.reindex(index=rows, columns=list(VOCABULARY_ORDER))
        shown = np.log10(grid.clip(lower=FLOOR)) if key == "forget_quality" else grid
        sns.heatmap(shown, annot=True, fmt=fmt, cmap="viridis", ax=ax)
        for _, cell in default.iterrows():  # the default point, outlined
            ax.add_patch(plt.Rectangle((VOCABULARY_ORDER.index(cell["vocabulary"]), rows.index(cell["temporal"])), 1, 1,
                                       fill=False, edgecolor=DEFAULT_COLOUR, lw=3))
        ax.set(title=label, xlabel="vocabulary scope", ylabel="temporal scope")
    outlined = "; outlined in red: the default" if len(default) else ""
    fig.suptitle(f"PALU's 2 x 2: which tokens (rows) x which logits (columns){outlined}; {profile_name} profile",
                 y=1.04)
    return fig


@register("07_perta_ablations")
def perta_ablations(points: pd.DataFrame, fq_items: Sequence[int], target_utility: float, retain_utility: float,
                    profile_name: str) -> plt.Figure:
    """PerTA-grad's variants, each at its own equal-forgetting lambda: model utility (left) and forget quality
    (log, right) as dots with 95 % item-bootstrap intervals. ``points``: one row per variant in x order
    (:func:`point_columns` with the variants' labels as ``value``; ``default`` marks PerTA-grad itself);
    ``fq_items``, ``target_utility``, ``retain_utility``, ``profile_name``: as for the PALU figures."""
    labels = list(points["value"])
    colours = [DEFAULT_COLOUR if d else PERTA_COLOUR for d in points["default"]]
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.5))
    # dots with 95 % item-bootstrap intervals: utility's axis does not start at 0 and forget quality's is logarithmic,
    # so a bar's length would mean nothing
    plots.dot_intervals(axes[0], labels, points["model_utility"], points["model_utility_low"],
                        points["model_utility_high"], colours=colours, rotation=35)
    axes[0].axhline(target_utility, color="black", ls="--", lw=1, label="target (no forgetting)")
    axes[0].axhline(retain_utility, color="goldenrod", ls=":", lw=1.5, label="retain")
    lo = min(points["model_utility_low"].min(), target_utility, retain_utility)
    hi = max(points["model_utility_high"].max(), target_utility, retain_utility)
    axes[0].set(ylim=(max(0, lo - 0.1 * (hi - lo) - 0.01), hi + 0.1 * (hi - lo) + 0.01),
                ylabel="model utility at equal forgetting", title="utility kept (higher is better)")
    axes[0].legend(fontsize=8, loc="lower left")
    plots.dot_intervals(axes[1], labels, points["forget_quality"].clip(lower=FLOOR),
                        points["forget_quality_low"].clip(lower=FLOOR), points["forget_quality_high"].clip(lower=FLOOR),
                        colours=colours, rotation=35)
    axes[1].set(yscale="log", ylabel="forget quality (log)", title="forget quality at each variant's own lambda")
    plots.mark_fq_lattice(axes[1], *fq_items)
    axes[1].legend(fontsize=8, loc="lower left")
    for ax in axes:
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(f"PerTA-grad ablations, each at its own equal-forgetting lambda (red: the default; bars: 95 % "
                 f"item-bootstrap intervals); {profile_name} profile")
    return fig
