"""The figures of notebook 06 (PALU and the baselines), each drawn from its recorded data (see
:mod:`palu_perta.figures`): the onset tokens of one answer, the logits before and after a few PALU steps, forget
quality against model utility for every method, and the automatic sensitive spans against the labels."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .. import plots
from . import register


@register("06_onset_tokens")
def onset_tokens(tokens: Sequence[str], classes: Sequence[int], onset: Sequence[bool], first_n: int) -> plt.Figure:
    """One answer's tokens as boxes coloured by class, the tokens PALU's forget term acts on outlined. ``tokens``: the
    decoded answer tokens (length T); ``classes``: their token classes (T ints,
    :data:`palu_perta.tokenization.ORDINARY` ...); ``onset``: T bools, True on the tokens the forget term acts on;
    ``first_n``: PALU's N (for the title; -1: every sensitive token, the authors' configuration)."""
    fig, ax = plt.subplots(figsize=(12, 1.8))
    plots.draw_tokens(ax, tokens, classes, onset, width=80)
    plots.class_legend(ax, with_onset=True, onset_label="onset" if first_n != -1 else "forget term")
    ax.set_title(f"Answer tokens; outlined: the tokens PALU's forget term acts on ({plots.onset_words(first_n)})")
    return fig


@register("06_logits_before_after")
def logits_before_after(positions: Mapping[str, Mapping[str, object]], steps: int) -> plt.Figure:
    """The reference's top-K logits at two answer positions before and after ``steps`` PALU steps, one panel per
    position. ``positions``: kind ("onset", "ordinary") -> {"before": the reference's K largest logits in
    descending order (length K), "after": the trained model's logits of the same K tokens (length K), "c_before",
    "c_after": the mean of all the position's logits (c_t) before and after, "next_token": the true next token
    (text), "p_before", "p_after": its probability before and after}."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4), sharey=True)
    for ax, (kind, at) in zip(axes, positions.items()):
        before, after = np.asarray(at["before"], dtype=float), np.asarray(at["after"], dtype=float)
        ranks = np.arange(1, len(before) + 1)
        ax.plot(ranks, before, "o-", color="grey", ms=3, label="before (reference)")
        ax.plot(ranks, after, "o-", color=plots.ONSET_COLOUR, ms=3, label=f"after {steps} PALU steps")
        ax.axhline(at["c_before"], color="grey", ls="--", lw=1, label="c_t before")
        ax.axhline(at["c_after"], color=plots.ONSET_COLOUR, ls="--", lw=1, label="c_t after")
        ax.set(title=f"{kind} position: next token {at['next_token']!r}, p {at['p_before']:.3f} -> {at['p_after']:.3f}",
               xlabel="rank among the reference's top-K candidates",
               xticks=ranks if len(ranks) <= 10 else ax.get_xticks(), xlim=(0.5, len(ranks) + 0.5))
    axes[0].set_ylabel("logit")
    axes[1].legend(loc="upper right", fontsize=8)
    fig.suptitle(f"Logits at an onset and an ordinary position, before and after {steps} PALU steps on one example",
                 y=1.04)
    return fig


FQ_MU_STYLES = {"target": dict(marker="X", s=140, color="black", zorder=4),
                "retain": dict(marker="*", s=260, color="gold", edgecolor="black", zorder=4),
                "palu": dict(marker="o", s=110, color=plots.ONSET_COLOUR, zorder=3)}
OTHER_METHOD_STYLE = dict(marker="o", s=60, color="#6baed6", zorder=3)


@register("06_fq_vs_mu")
def fq_vs_mu(points: pd.DataFrame, fq_items: Sequence[int], profile_name: str, epochs: int,
             learning_rate: float) -> plt.Figure:
    """Forget quality (log) against model utility, one point per model, each named beside it (see
    :func:`_label_points`).
    ``points``: one row per model ("target", "retain" and each method), columns ``forget_quality`` and
    ``model_utility``; ``fq_items``: the numbers of forget truth ratios forget quality compares (unlearned,
    retain), for the values it can take; ``profile_name``, ``epochs``, ``learning_rate``: the unlearning budget
    (for the title)."""
    fig, ax = plt.subplots(figsize=(8, 5))
    points = points[["forget_quality", "model_utility"]].astype(float)
    points["forget_quality"] = points["forget_quality"].clip(lower=1e-30)  # a log axis has no 0
    for name, (fq, mu) in points.iterrows():
        ax.scatter(fq, mu, **FQ_MU_STYLES.get(name, OTHER_METHOD_STYLE))
    ax.set(xscale="log", xlabel="forget quality (KS p-value vs retain model; log scale)", ylabel="model utility")
    # forget quality moves in steps: the values it can take for these numbers of forget truth ratios, on a top axis
    plots.mark_fq_lattice(ax, *fq_items, axis="x")
    _label_points(ax, points)
    ax.set_title(f"Forgetting vs utility, same budget ({profile_name}: {epochs} epochs, lr {learning_rate:g})", pad=34)
    return fig


# where a point's label may go, tried in order: (dx, dy) in points, horizontal and vertical alignment
LABEL_PLACES = ((7, 5, "left", "bottom"), (-7, 5, "right", "bottom"), (7, -5, "left", "top"), (-7, -5, "right", "top"))


def _label_points(ax: plt.Axes, points: pd.DataFrame, marker_px: float = 8.0) -> None:
    """Name every point of ``points`` (index: name; columns forget_quality, model_utility) beside it, in the
    first of :data:`LABEL_PLACES` where the label stays inside the axes and covers no other label and no other
    point; a point on top of a labelled one, or with no free place, joins the label of the nearest labelled
    point (names in one label, left to right)."""

    def annotate(name: str, fq: float, mu: float, place: tuple[int, int, str, str]) -> plt.Annotation:
        dx, dy, ha, va = place
        return ax.annotate(name, (fq, mu), textcoords="offset points", xytext=(dx, dy), ha=ha, va=va, fontsize=9)

    ax.figure.canvas.draw()
    renderer = ax.figure.canvas.get_renderer()
    at = {name: ax.transData.transform((fq, mu)) for name, (fq, mu) in points.iterrows()}
    frame = ax.get_window_extent(renderer)
    placed: dict[str, tuple[plt.Annotation, list[str]]] = {}
    for name, (fq, mu) in points.sort_values("model_utility", ascending=False, kind="stable").iterrows():
        others = [xy for other, xy in at.items() if other != name]
        under = [other for other in placed if float(np.hypot(*(at[other] - at[name]))) < marker_px]
        for place in LABEL_PLACES if not under else ():
            label = annotate(name, fq, mu, place)
            box = label.get_window_extent(renderer).expanded(1.05, 1.1)
            hits_point = any(box.x0 - marker_px < x < box.x1 + marker_px and box.y0 - marker_px < y < box.y1 + marker_px
                             for x, y in others)
            hits_label = any(box.overlaps(t.get_window_extent(renderer)) for t, _ in placed.values())
            outside = box.x0 < frame.x0 or box.x1 > frame.x1 or box.y0 < frame.y0 or box.y1 > frame.y1
            if not (hits_point or hits_label or outside):
                placed[name] = (label, [name])
                break
            label.remove()
        else:  # on top of a labelled point, or no free place: share the nearest label
            if not placed:  # the first point, with no free place at all: its label goes in the first place anyway
                placed[name] = (annotate(name, fq, mu, LABEL_PLACES[0]), [name])
                continue
            nearest = min(placed, key=lambda other: float(np.hypot(*(at[other] - at[name]))))
            label, names = placed[nearest]
            names.append(name)
            names.sort(key=lambda n: at[n][0])
            label.set_text("\n".join(textwrap.wrap(", ".join(names), 24)))


SPAN_CURVES = (("precision", "#3182bd"), ("recall", "#e6550d"), ("onset_recall", "#31a354"), ("f1", "black"))


@register("06_span_agreement")
def spans_vs_labels(sweep: pd.DataFrame, label_name: str) -> plt.Figure:
    """Token-level agreement of the automatic spans with the labelled ones against the margin, one panel per
    reference model (in the order they first appear). ``sweep``: one row per (reference, margin), columns
    ``reference``, ``margin`` (nats), ``precision``, ``recall``, ``onset_recall``, ``f1`` and ``labelled_rate``
    (the share of tokens labelled: the precision of marking every token); ``label_name``: what the labels are."""
    references = list(dict.fromkeys(sweep["reference"]))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for ax, ref in zip(axes, references):
        part = sweep[sweep.reference == ref]
        for key, colour in SPAN_CURVES:
            ax.plot(part.margin, part[key], "o-", ms=3, color=colour, label=key)
        ax.axhline(part.labelled_rate.iloc[0], color="grey", ls=":", label="precision of marking every token")
        ax.set(title=f"reference = {ref}", xlabel="margin (nats)", ylim=(0, 1.05))
    axes[0].set_ylabel("token-level agreement with labels")
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9, frameon=False)
    fig.suptitle(f"Automatic spans (log-likelihood gain of the target) vs {label_name}", y=1.04)
    return fig
