"""Figure helpers: one style, one folder, one dpi.

``savefig(fig, name, profile)`` writes ``figures/<name>.png`` for the default ``cpu``
profile (the figures the README shows) and ``figures/<profile>/<name>.png`` for the others,
so a smoke run in the tests never overwrites the committed figures. Before writing, it checks the
figure (:func:`figure_problems`): no two drawn texts overlap (:func:`overlapping_text`) and every labelled
line or collection is named in the figure's legend (:func:`missing_legend_entries`); a problem is reported
as a :class:`FigureWarning` (the figure is still written), :func:`check_figure` raises instead (the tests).

Honest encodings: :func:`dot_intervals` draws estimates as dots with their intervals on an axis that need not
start at 0 (a bar on a truncated axis exaggerates differences), and :func:`mark_fq_lattice` marks, on a
log-scale forget-quality axis, the values forget quality can take for the forget-set size (it is a KS p-value
and moves in steps: :func:`palu_perta.stats.ks_pvalue_lattice`).

The two methods drawn (notebook 00, the README): :func:`palu_example` computes, with the loss's own
encoding and ``palu_forget_mask``, what :func:`palu_schematic` draws (an answer's tokens, its sensitive spans
and the positions the forget term acts on, and the top-K logits at one of them); :func:`perta_slice` takes a
block of one weight matrix from a task vector and PerTA's weights, and :func:`perta_schematic` draws tau, w
and the update -lambda (w ⊙ tau).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch
from matplotlib.patches import ConnectionPatch
from matplotlib.text import Text

from . import stats
from .losses import LOSSES, palu_forget_mask, palu_onset_length
from .paths import figures_dir, profile_folder
from .tokenization import ORDINARY, PROMPT, SENSITIVE, Collator, encode_qa, pad_id

DPI = 120
CLASS_COLOURS = {PROMPT: "#d9d9d9", ORDINARY: "#9ecae1", SENSITIVE: "#fc9272"}
CLASS_NAMES = {PROMPT: "prompt", ORDINARY: "ordinary", SENSITIVE: "sensitive"}
ONSET_COLOUR = "#cb181d"


def setup() -> None:
    """The project's plotting style (seaborn whitegrid, readable sizes)."""
    sns.set_theme(style="whitegrid", context="notebook")


def figure_path(name: str, profile: str = "cpu") -> Path:
    """Where figure ``name`` of ``profile`` is written."""
    folder = profile_folder(figures_dir(), profile)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.png"


class FigureWarning(UserWarning):
    """A saved figure has overlapping text or a legend that does not name every labelled line."""


def _drawn_texts(fig: plt.Figure) -> list[Text]:
    """The figure's Text artists that drawing it actually renders (visible, non-blank), in drawing order:
    titles, axis and tick labels (only the ticks inside the view), legend texts, annotations, colour-bar
    labels, the suptitle."""
    drawn: dict[int, Text] = {}
    original = Text.draw

    def recording(self: Text, renderer: Any) -> None:
        original(self, renderer)
        if self.get_visible() and self.get_text().strip() and self.get_alpha() != 0:
            drawn.setdefault(id(self), self)

    Text.draw = recording  # Annotation.draw and every tick, legend and title draw through Text.draw
    try:
        fig.canvas.draw()
    finally:
        Text.draw = original
    return list(drawn.values())


def _text_box(text: Text, renderer: Any) -> np.ndarray:
    """The four corners (display pixels) of the rectangle ``text``'s glyphs occupy, rotated with it."""
    aabb = Text.get_window_extent(text, renderer)  # the text alone: not an annotation's arrow
    angle = math.radians(text.get_rotation())
    if abs(math.sin(2 * angle)) < 1e-9:  # 0, 90, 180, 270 degrees: the axis-aligned box is the rectangle
        return np.array([[aabb.x0, aabb.y0], [aabb.x1, aabb.y0], [aabb.x1, aabb.y1], [aabb.x0, aabb.y1]])
    rotation = text.get_rotation()
    text.set_rotation(0)  # the unrotated size; a rotated rectangle's bounding box shares its centre
    try:
        width, height = Text.get_window_extent(text, renderer).size
    finally:
        text.set_rotation(rotation)
    centre = np.array([(aabb.x0 + aabb.x1) / 2, (aabb.y0 + aabb.y1) / 2])
    along, across = np.array([math.cos(angle), math.sin(angle)]), np.array([-math.sin(angle), math.cos(angle)])
    return np.array([centre + sx * width / 2 * along + sy * height / 2 * across
                     for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))])


def _boxes_overlap(a: np.ndarray, b: np.ndarray, tolerance: float) -> bool:
    """Whether two rectangles (corners in order) overlap once each is shrunk by ``tolerance / 2`` pixels on
    every side (separating-axis test)."""
    def shrink(box: np.ndarray) -> np.ndarray:
        centre = box.mean(axis=0)
        u, v = box[1] - box[0], box[3] - box[0]
        lu, lv = np.linalg.norm(u), np.linalg.norm(v)
        su = max(lu - tolerance, 0.0) / lu if lu else 0.0
        sv = max(lv - tolerance, 0.0) / lv if lv else 0.0
        return np.array([centre + (-u * su - v * sv) / 2, centre + (u * su - v * sv) / 2,
                         centre + (u * su + v * sv) / 2, centre + (-u * su + v * sv) / 2])

    a, b = shrink(a), shrink(b)
    for box in (a, b):
        for edge in (box[1] - box[0], box[3] - box[0]):
            normal = np.array([-edge[1], edge[0]])
            if not normal.any():
                return False  # a degenerate (empty) box overlaps nothing
            pa, pb = a @ normal, b @ normal
            if pa.max() <= pb.min() or pb.max() <= pa.min():
                return False
    return True


def overlapping_text(fig: plt.Figure, tolerance: float = 1.0) -> list[tuple[str, str]]:
    """The pairs of drawn texts of ``fig`` whose boxes overlap by more than ``tolerance`` pixels, as their
    strings, in drawing order (empty when none). Draws the figure; rotated texts are tested as rotated
    rectangles, not by their (larger) axis-aligned bounding boxes."""
    texts = _drawn_texts(fig)
    renderer = fig.canvas.get_renderer()
    boxes = [_text_box(t, renderer) for t in texts]
    return [(texts[i].get_text(), texts[j].get_text()) for i, j in itertools.combinations(range(len(texts)), 2)
            if _boxes_overlap(boxes[i], boxes[j], tolerance)]


def missing_legend_entries(fig: plt.Figure) -> list[str]:
    """Labels of lines, collections and patches (those ``Axes.legend()`` would show) that no legend of ``fig``
    names, when the figure has a legend at all (empty when it has none: then nothing claims to name them)."""
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + list(fig.legends)
    if not legends:
        return []
    named = {t.get_text() for legend in legends for t in legend.get_texts()}
    labels = [label for ax in fig.axes for label in ax.get_legend_handles_labels()[1]]
    return list(dict.fromkeys(label for label in labels if label not in named))


def figure_problems(fig: plt.Figure) -> list[str]:
    """What is wrong with ``fig`` as a figure to publish, one sentence per problem naming the fix (empty when
    nothing is): overlapping texts (:func:`overlapping_text`) and labelled artists no legend names
    (:func:`missing_legend_entries`)."""
    problems = [f"text {a!r} overlaps text {b!r}: move, shorten, rotate or thin one of them, or enlarge the figure"
                for a, b in overlapping_text(fig)]
    problems += [f"the line/collection labelled {label!r} is not in the legend: add it (legend handles) or "
                 "label it '_nolegend_'" for label in missing_legend_entries(fig)]
    return problems


def check_figure(fig: plt.Figure, name: str = "the figure") -> None:
    """Raise ValueError listing :func:`figure_problems` of ``fig`` (nothing when it has none)."""
    problems = figure_problems(fig)
    if problems:
        raise ValueError(f"{name} has {len(problems)} problem(s):\n- " + "\n- ".join(problems))


def write_png(fig: plt.Figure, path: Path, *, check: bool = True) -> Path:
    """Save ``fig`` as PNG at ``path`` (the project's dpi, a tight bounding box; written to a temporary name
    and renamed) and return the path. With ``check``, :func:`figure_problems` are reported first as a
    :class:`FigureWarning`: a warning, not an error, so a notebook run of hours is not lost at its last cell
    for a crowded label, while the tests (tests/test_figures.py) hold every figure function to none."""
    if check:
        problems = figure_problems(fig)
        if problems:
            warnings.warn(f"{path.name}: " + "; ".join(problems), FigureWarning, stacklevel=3)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=DPI, bbox_inches="tight")
    tmp.replace(path)
    return path


def picture_difference(expected: Path, actual: Path, tol: float = 1.0) -> str | None:
    """None when two PNGs show the same picture (same size, root-mean-square pixel difference at most ``tol``
    on 0-255, :func:`matplotlib.testing.compare.compare_images`), else what differs."""
    from matplotlib.testing.compare import compare_images
    from matplotlib.testing.exceptions import ImageComparisonFailure

    try:
        return compare_images(str(expected), str(actual), tol=tol)
    except ImageComparisonFailure as err:
        return str(err)


def savefig(fig: plt.Figure, name: str, profile: str = "cpu") -> Path:
    """Save ``fig`` as PNG (see the module docstring for where), warning (:class:`FigureWarning`) about
    overlapping text or an incomplete legend; returns the path."""
    return write_png(fig, figure_path(name, profile))


def draw_tokens(
    ax: plt.Axes,
    tokens: Sequence[str],
    classes: Sequence[int],
    onset: Sequence[bool] | None = None,
    width: float = 60.0,
) -> list[plt.Rectangle]:
    """Draw tokens as coloured boxes (grey prompt, blue ordinary, red sensitive), wrapping lines.

    ``onset[i]`` (optional) outlines the tokens that PALU's forget term acts on. Returns the boxes, one
    per token, in order (in data coordinates of ``ax``).
    """
    x, y, row_height = 0.0, 0.0, 1.0
    boxes = []
    for i, (tok, cls) in enumerate(zip(tokens, classes)):
        text = tok.replace("\n", "\\n") or " "
        w = max(1.0, len(text)) * 0.62 + 0.4
        if x + w > width:
            x, y = 0.0, y - row_height * 1.25
        edge = ONSET_COLOUR if onset is not None and onset[i] else "white"
        boxes.append(ax.add_patch(plt.Rectangle((x, y), w, row_height, facecolor=CLASS_COLOURS[cls], edgecolor=edge,
                                                linewidth=2.0 if edge != "white" else 0.5)))
        ax.text(x + w / 2, y + row_height / 2, text, ha="center", va="center", fontsize=8, family="monospace")
        x += w + 0.15
    ax.set_xlim(-0.2, width + 0.2)
    ax.set_ylim(y - 0.3, row_height + 0.3)
    ax.set_axis_off()
    return boxes


def class_legend(ax: plt.Axes, with_onset: bool = False, onset_label: str = "onset") -> None:
    """A legend for :func:`draw_tokens`' colours (``onset_label``: what the outline marks)."""
    handles = [plt.Rectangle((0, 0), 1, 1, color=CLASS_COLOURS[c], label=CLASS_NAMES[c]) for c in CLASS_NAMES]
    if with_onset:
        handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor=ONSET_COLOUR, linewidth=2,
                                     label=onset_label))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)


def label_points(ax: plt.Axes, xs: Sequence[float], ys: Sequence[float], labels: Sequence[str], *,
                 fontsize: float = 9, marker_radius: float = 5.0) -> list:
    """Label scatter points without overlaps: each label takes the first free spot around its point.

    Tries positions right, left, above, below and diagonal to the point at growing distances,
    skipping any that overlaps a label already placed, another point's marker, a text already on the
    axes, or the axes' edge (if no spot is free, the least-overlapping one); a label placed away from
    its point gets a thin line to it. Call it after the axes' scales and limits are final (it works
    in display coordinates). Returns the annotations, in the order of ``labels``.
    """
    fig = ax.figure
    fig.canvas.draw()  # final limits and transforms; a renderer for text sizes
    renderer = fig.canvas.get_renderer()
    to_px = fig.dpi / 72.0
    centres = ax.transData.transform(list(zip(xs, ys)))
    r = marker_radius * to_px
    frame = ax.get_window_extent(renderer)
    obstacles = [(cx - r, cy - r, cx + r, cy + r) for cx, cy in centres]
    obstacles += [tuple(t.get_window_extent(renderer).extents) for t in ax.texts]  # e.g. a reference line's label

    def cost(rect: tuple) -> float:
        """Area overlapping the obstacles, plus a whole label's area per edge it crosses."""
        area = sum(max(min(rect[2], b[2]) - max(rect[0], b[0]), 0.0) * max(min(rect[3], b[3]) - max(rect[1], b[1]), 0.0)
                   for b in obstacles)
        crossed = (rect[0] < frame.x0) + (rect[2] > frame.x1) + (rect[1] < frame.y0) + (rect[3] > frame.y1)
        return area + crossed * (rect[2] - rect[0]) * (rect[3] - rect[1])

    annotations = []
    for (cx, cy), label in zip(centres, labels):
        probe = ax.annotate(label, (0, 0), xycoords="figure pixels", fontsize=fontsize)
        w, h = probe.get_window_extent(renderer).size
        probe.remove()
        best = None
        for gap in (g * to_px for g in (4, 10, 16, 25, 34)):  # points from the marker's centre
            for dx, dy in ((gap, -h / 2), (-gap - w, -h / 2), (-w / 2, gap), (-w / 2, -gap - h),
                           (gap, gap), (gap, -gap - h), (-gap - w, gap), (-gap - w, -gap - h)):
                rect = (cx + dx, cy + dy, cx + dx + w, cy + dy + h)
                spot = (cost(rect), rect)
                if best is None or spot[0] < best[0]:
                    best = spot
                if best[0] == 0:
                    break
            if best[0] == 0:
                break
        x0, y0, x1, y1 = best[1]
        far = max(abs((x0 + x1) / 2 - cx) - w / 2, abs((y0 + y1) / 2 - cy) - h / 2) > 12 * to_px
        ann = ax.annotate(label, ax.transData.inverted().transform((cx, cy)),
                          xytext=ax.transData.inverted().transform((x0, y0)), textcoords="data",
                          fontsize=fontsize, ha="left", va="bottom",
                          arrowprops=dict(arrowstyle="-", color="grey", lw=0.6, shrinkA=1, shrinkB=4) if far else None)
        annotations.append(ann)
        obstacles.append(tuple(ann.get_window_extent(renderer).extents))
    return annotations


def dot_intervals(ax: plt.Axes, labels: Sequence[str], estimates: Sequence[float],
                  low: Sequence[float] | None = None, high: Sequence[float] | None = None, *,
                  colours: Sequence[Any] | str | None = None, label: str | None = None, rotation: float = 0.0,
                  markersize: float = 7.0) -> list:
    """Estimates as dots with their intervals, one per category of ``labels`` along x: the honest form of a
    bar chart whose axis does not start at 0 (a bar's length is read from 0, a dot's position is not).

    ``low`` / ``high``: the interval's ends (NaN or ``None``: no interval drawn for that dot); ``colours``:
    one colour, or one per dot; ``label`` names the dots in a legend (once); ``rotation`` turns the category
    labels (right-aligned when turned). The value axis is left to autoscale around the dots and intervals.
    Returns the artists drawn (the dots' line, then one errorbar container per interval)."""
    x = np.arange(len(labels))
    y = np.asarray(estimates, dtype=float)
    colours = [colours or "C0"] * len(x) if colours is None or isinstance(colours, str) else list(colours)
    artists = []
    for i, (xi, yi, colour) in enumerate(zip(x, y, colours)):
        artists += ax.plot([xi], [yi], "o", color=colour, ms=markersize, zorder=3,
                           label=label if label and i == 0 else "_nolegend_")
    if low is not None and high is not None:
        lo, hi = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
        for xi, yi, a, b, colour in zip(x, y, lo, hi, colours):
            if np.isfinite([yi, a, b]).all():
                artists.append(ax.errorbar([xi], [yi], yerr=[[yi - a], [b - yi]], fmt="none", ecolor=colour,
                                           elinewidth=1.5, capsize=3, zorder=2, label="_nolegend_"))
    ax.set_xticks(x, list(labels), rotation=rotation, ha="right" if rotation else "center")
    ax.set_xlim(-0.5, len(x) - 0.5)
    return artists


def mark_fq_lattice(ax: plt.Axes, n_forget: int, n_retain: int | None = None, *, axis: str = "y",
                    ties: bool = False, colour: str = "grey", fontsize: float = 7.0) -> list[float]:
    """Mark on ``ax``'s forget-quality axis (``axis``: "y" or "x", log scale) the values forget quality can
    take: the p-values of :func:`palu_perta.stats.ks_pvalue_lattice` for ``n_forget`` forget items against
    ``n_retain`` (default: as many) retain-model items; ``ties=False`` for continuous truth ratios.

    Each attainable value inside the axis' limits gets a faint dotted line (labelled once, for the legend: "attainable
    FQ (KS lattice, n vs m items)"); their values are written on a secondary axis on the opposite side, thinned
    so no two labels overlap. Call it after the scale and limits are final (it keeps them) and before
    ``legend()``. Returns the values marked, ascending."""
    if axis not in ("x", "y"):
        raise ValueError(f"axis must be 'x' or 'y', got {axis!r}")
    m = n_forget if n_retain is None else n_retain
    values = sorted({p for _, p in stats.ks_pvalue_lattice(n_forget, m, ties=ties)})
    limits = ax.get_ylim() if axis == "y" else ax.get_xlim()
    lo, hi = min(limits), max(limits)
    shown = [v for v in values if lo <= v <= hi]
    name = f"attainable FQ (KS lattice, {n_forget} vs {m} items)"
    line = ax.axhline if axis == "y" else ax.axvline
    for i, v in enumerate(shown):
        line(v, color=colour, lw=0.8, ls=":", alpha=0.7, zorder=0, label=name if i == 0 else "_nolegend_")
    (ax.set_ylim if axis == "y" else ax.set_xlim)(limits)  # the lines do not move the limits
    # the values' labels, thinned: each at least a label's extent from every one kept
    pixels = [float(ax.transData.transform((0.0, v) if axis == "y" else (v, 1.0))[1 if axis == "y" else 0])
              for v in shown]
    texts = [f"{v:.2g}" for v in shown]
    # a label's extent along the axis (points, a generous estimate of its glyphs): its height on y, its width on x
    extent = 1.4 * fontsize if axis == "y" else (0.62 * max(map(len, texts), default=1) + 1.0) * fontsize
    gap = extent * ax.figure.dpi / 72.0
    kept: list[int] = []
    for i in sorted(range(len(shown)), key=lambda i: -shown[i]):  # the largest (FQ 1, the retain model's) first
        if all(abs(pixels[i] - pixels[j]) >= gap for j in kept):
            kept.append(i)
    kept.sort(key=lambda i: shown[i])
    secondary = ax.secondary_yaxis("right") if axis == "y" else ax.secondary_xaxis("top")
    target = secondary.yaxis if axis == "y" else secondary.xaxis
    target.set_ticks([shown[i] for i in kept], [texts[i] for i in kept])
    target.set_minor_locator(plt.NullLocator())
    secondary.tick_params(labelsize=fontsize, colors=colour)
    (secondary.set_ylabel if axis == "y" else secondary.set_xlabel)(name, fontsize=fontsize, color=colour)
    return shown


# ----------------------------------------------------------------------------- the methods, drawn


def onset_words(first_n: int) -> str:
    """Which sensitive tokens PALU's forget term acts on, in words, for a figure's title: "the first N = 3 tokens
    of each sensitive span", or "every sensitive token" for ``first_n = -1`` (the authors' configuration)."""
    return "every sensitive token" if first_n == -1 else f"the first N = {first_n} tokens of each sensitive span"


def palu_example(model: Any, tokenizer: Any, record: dict, hyper: Mapping[str, Any] | None = None, *,
                 first_n: int | None = None, top_k: int | None = None, which: int = 0) -> dict[str, Any]:
    """What :func:`palu_schematic` draws for one forget record, computed as PALU's loss computes it.

    ``encode_qa`` gives the answer tokens and their classes (the record's ``target_words`` spans mapped
    through the tokenizer's offsets), ``losses.palu_forget_mask`` the positions the forget term acts on, on the
    shifted classes (position t predicts token t + 1), and ``model`` the logits at the ``which``-th of them: its
    top-K (as the frozen reference ranks them) and their mean over the whole vocabulary, c_t.

    ``hyper``: PALU's hyperparameters (e.g. ``config.PALU_HYPER``; a key left out takes ``palu_loss``'s default):
    its ``temporal`` / ``first_n`` choose the positions and its ``top_k`` is K. ``first_n`` (N onset tokens per
    sensitive span, temporal "onset"; -1: every sensitive token) and ``top_k``, when given, replace them.
    Returns the keyword arguments of :func:`palu_schematic`; ``onset`` and ``position`` index the answer
    tokens (EOS included), ``onset[i]`` telling whether the forget term acts on answer token i, and ``first_n``
    is N (-1 when it acts on every sensitive token).
    """
    settings = {**LOSSES["palu"].defaults, **(hyper or {})}
    if first_n is not None:
        settings.update(temporal="onset", first_n=first_n)
    if top_k is not None:
        settings.update(top_k=top_k, vocab="topk")
    if settings["temporal"] == "answer" or settings["vocab"] != "topk":
        raise ValueError(f"palu_example draws PALU on sensitive tokens and its top-K candidates; temporal="
                         f"{settings['temporal']!r}, vocab={settings['vocab']!r} is not such a setting (use temporal "
                         "'onset' or 'sensitive' and vocab 'topk')")
    example = encode_qa(tokenizer, record["question"], record["answer"], record.get("target_words"))
    batch = Collator(pad_id(tokenizer))([example])
    onset = palu_forget_mask(batch["token_classes"][:, 1:], settings)[0]  # [T - 1]: position t predicts t + 1
    positions = onset.nonzero()[:, 0].tolist()
    if not positions:
        raise ValueError("the record's answer has no sensitive token: nothing for PALU to act on")
    pos = positions[which]
    device = next(model.parameters()).device
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                       use_cache=False).logits[0, pos].float().cpu()
    top = logits.topk(settings["top_k"])
    start = example["prompt_length"]
    return {
        "tokens": [tokenizer.decode([i]) for i in example["input_ids"][start:]],
        "classes": example["token_classes"][start:],
        "onset": ([False] + onset.tolist())[start:],
        "position": pos + 1 - start,
        "candidates": [tokenizer.decode([i]) for i in top.indices.tolist()],
        "logits": top.values.tolist(),
        "vocab_mean": float(logits.mean()),
        "true_rank": next((r for r, i in enumerate(top.indices.tolist()) if i == example["input_ids"][pos + 1]), None),
        "first_n": palu_onset_length(settings),
    }


def palu_schematic(tokens: Sequence[str], classes: Sequence[int], onset: Sequence[bool], position: int,
                   candidates: Sequence[str], logits: Sequence[float], vocab_mean: float,
                   true_rank: int | None = None, first_n: int = 3, shown: int = 12,
                   model_name: str = "the model") -> plt.Figure:
    """PALU on one answer: its tokens (sensitive spans in red, the tokens the forget term acts on outlined: the
    onsets, or every sensitive token for ``first_n = -1``) and, for the token at ``position``, the logits of its
    top-K candidates drawn from the vocabulary mean c_t.

    Inputs as :func:`palu_example` returns them (``logits``: the K largest, in decreasing order;
    ``true_rank``: where the answer's own token is among them). The first ``shown`` candidates are drawn.
    Axes: the tokens, then the logits.
    """
    k = len(logits)
    fig = plt.figure(figsize=(11, 5.6))
    grid = fig.add_gridspec(2, 3, height_ratios=[1.0, 1.5], width_ratios=[0.12, 1, 0.12], hspace=0.45)
    ax_tokens, ax_logits = fig.add_subplot(grid[0, :]), fig.add_subplot(grid[1, 1])
    boxes = draw_tokens(ax_tokens, tokens, classes, onset, width=70)
    class_legend(ax_tokens, with_onset=True, onset_label="onset" if first_n != -1 else "forget term")
    outlined = f"the onsets ({onset_words(first_n)})" if first_n != -1 else onset_words(first_n)
    ax_tokens.set_title(f"1. the answer's tokens: sensitive spans in red; outlined, {outlined}, the only positions "
                        "PALU's forget term acts on", fontsize=9, loc="left")

    n = min(shown, k)
    heights = [z - vocab_mean for z in logits[:n]]
    colours = [ONSET_COLOUR if r == true_rank else "#969696" for r in range(n)]
    ax_logits.bar(range(n), heights, bottom=vocab_mean, color=colours)
    ax_logits.axhline(vocab_mean, color="black", ls="--", lw=1)
    ax_logits.text(n - 0.5, vocab_mean, "  c_t: mean logit over the vocabulary", va="center", ha="left", fontsize=8)
    ax_logits.annotate("", xy=(0, vocab_mean + 0.3 * heights[0]), xytext=(0, vocab_mean + 0.95 * heights[0]),
                       arrowprops=dict(arrowstyle="-|>", color="black", lw=1.5))
    ax_logits.set_xticks(range(n), [repr(c) for c in candidates[:n]], rotation=45, ha="right", fontsize=8)
    ax_logits.set_xlim(-0.6, max(n, 3) - 0.4)  # K = 1 (the authors' K): one bar a third of the panel wide
    ax_logits.set_ylabel("logit z")
    more = f" (the first {n} drawn)" if k > n else ""
    truth = (f"red: the answer's own token {tokens[position]!r}" if true_rank is not None and true_rank < n
             else f"the answer's own token {tokens[position]!r} is not among these")
    where = "the onset" if first_n != -1 else "the sensitive token"
    ax_logits.set_title(f"2. at {where} {tokens[position]!r}: the top-K = {k} logits of {model_name}{more};\n"
                        f"{truth}. PALU pulls each of the K towards c_t", fontsize=9, loc="left")
    top_value = max(logits[0], vocab_mean)
    ax_logits.set_ylim(vocab_mean - 0.12 * (top_value - vocab_mean) - 0.1, top_value + 0.08 * (top_value - vocab_mean) + 0.1)
    box = boxes[position]
    fig.add_artist(ConnectionPatch(xyA=(box.get_x() + box.get_width() / 2, box.get_y()), coordsA=ax_tokens.transData,
                                   xyB=(-0.02, 1.12), coordsB=ax_logits.transAxes, arrowstyle="-|>",
                                   color=ONSET_COLOUR, lw=1.2))
    positions = r"\mathrm{onsets}" if first_n != -1 else r"\mathrm{sensitive}"
    fig.suptitle(r"PALU: $L_\mathrm{forget} = \mathrm{mean}_{t\,\in\," + positions + r"}\ \frac{1}{K}"
                 r"\sum_{i\,\in\,\mathrm{top}\text{-}K_\mathrm{ref}(t)} (z_{t,i} - c_t)^2$", fontsize=13, y=1.0)
    return fig


def perta_slice(tau: Mapping[str, Any], weights: Mapping[str, Any], name: str | None = None,
                rows: int = 12, cols: int = 16) -> dict[str, Any]:
    """A small block of one weight matrix, for :func:`perta_schematic`: tau and w over rows x cols entries.

    ``name`` defaults to the first 2-D tensor whose name contains "mlp" (else the first 2-D tensor). The
    block is the one at the matrix's top-left corner: no choice of entries that would flatter the picture.
    """
    if name is None:
        matrices = [n for n in tau.keys() if tau[n].dim() == 2]
        name = next((n for n in matrices if "mlp" in n), matrices[0])
    block = (slice(0, rows), slice(0, cols))
    return {"tau": tau[name][block].float().cpu().numpy(), "weights": weights[name][block].float().cpu().numpy(),
            "name": f"{name}[:{rows}, :{cols}]"}


def perta_schematic(tau: Any, weights: Any, lam: float, name: str = "") -> plt.Figure:
    """PerTA on a block of one weight matrix: the task vector tau, the weights w, PerTA's update
    -lam (w ⊙ tau) and, for comparison, task arithmetic's -lam tau, as four heatmaps (the two updates on
    one colour scale). ``tau`` and ``weights`` are 2-D arrays of one shape (:func:`perta_slice`).
    Axes: the four heatmaps, then their colour bars.
    """
    import numpy as np

    tau, weights = np.asarray(tau, dtype=float), np.asarray(weights, dtype=float)
    update, tv = -lam * weights * tau, -lam * tau
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.5), gridspec_kw={"wspace": 0.35})
    tau_max, step_max = float(np.abs(tau).max()) or 1.0, float(np.abs(tv).max()) or 1.0
    panels = [
        (tau, r"task vector $\tau = \theta_\mathrm{ft} - \theta_o$", "RdBu_r", -tau_max, tau_max),
        (weights, r"weights $w = I_f\,/\,(I_f + I_r + \varepsilon)$", "viridis", 0.0, 1.0),
        (update, rf"PerTA's update $-\lambda\,(w \odot \tau)$, $\lambda = {lam:g}$", "RdBu_r", -step_max, step_max),
        (tv, r"for comparison, TV's $-\lambda\,\tau$", "RdBu_r", -step_max, step_max),
    ]
    for ax, (values, title, cmap, lo, hi) in zip(axes, panels):
        sns.heatmap(values, ax=ax, cmap=cmap, vmin=lo, vmax=hi, square=True, xticklabels=False, yticklabels=False,
                    cbar_kws={"orientation": "horizontal", "pad": 0.05, "shrink": 0.9})
        colour_bar = ax.collections[0].colorbar
        colour_bar.set_ticks([lo, (lo + hi) / 2, hi], labels=[f"{v:.2g}" for v in (lo, (lo + hi) / 2, hi)])
        ax.set_title(title, fontsize=10)
    fig.canvas.draw()  # final positions of the square heatmaps
    for left, right, symbol in zip(axes[:3], axes[1:], (r"$\odot$", r"$\Rightarrow$", "vs")):  # between the panels
        a, b = left.get_position(), right.get_position()
        fig.text((a.x1 + b.x0) / 2, (a.y0 + a.y1) / 2, symbol, fontsize=20 if symbol != "vs" else 12,
                 ha="center", va="center")
    fig.suptitle(r"PerTA: $\theta = \theta_o - \lambda\,(w \odot \tau)$: task arithmetic braked weight by weight "
                 "(w near 1: the weight matters for the forget set; near 0: for the retain set)\n"
                 f"a {tau.shape[0]} x {tau.shape[1]} block of {name}", fontsize=11,
                 y=max(ax.get_position().y1 for ax in axes) + 0.14, va="bottom")
    return fig
