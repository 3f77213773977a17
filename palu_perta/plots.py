"""Figure helpers: one style, one folder, one dpi.

``savefig(fig, name, profile)`` writes ``figures/<name>.png`` for the default ``cpu``
profile (the figures the README shows) and ``figures/<profile>/<name>.png`` for the others,
so a smoke run in the tests never overwrites the committed figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns

from .paths import figures_dir
from .tokenization import ORDINARY, PROMPT, SENSITIVE

DPI = 120
CLASS_COLOURS = {PROMPT: "#d9d9d9", ORDINARY: "#9ecae1", SENSITIVE: "#fc9272"}
CLASS_NAMES = {PROMPT: "prompt", ORDINARY: "ordinary", SENSITIVE: "sensitive"}
ONSET_COLOUR = "#cb181d"


def setup() -> None:
    """The project's plotting style (seaborn whitegrid, readable sizes)."""
    sns.set_theme(style="whitegrid", context="notebook")


def figure_path(name: str, profile: str = "cpu") -> Path:
    """Where figure ``name`` of ``profile`` is written."""
    folder = figures_dir() if profile == "cpu" else figures_dir() / profile
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.png"


def savefig(fig: plt.Figure, name: str, profile: str = "cpu") -> Path:
    """Save ``fig`` as PNG (see the module docstring for where) and return the path."""
    path = figure_path(name, profile)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=DPI, bbox_inches="tight")
    tmp.replace(path)
    return path


def draw_tokens(
    ax: plt.Axes,
    tokens: Sequence[str],
    classes: Sequence[int],
    onset: Sequence[bool] | None = None,
    width: float = 60.0,
) -> None:
    """Draw tokens as coloured boxes (grey prompt, blue ordinary, red sensitive), wrapping lines.

    ``onset[i]`` (optional) outlines the tokens that PALU's forget term acts on.
    """
    x, y, row_height = 0.0, 0.0, 1.0
    for i, (tok, cls) in enumerate(zip(tokens, classes)):
        text = tok.replace("\n", "\\n") or " "
        w = max(1.0, len(text)) * 0.62 + 0.4
        if x + w > width:
            x, y = 0.0, y - row_height * 1.25
        edge = ONSET_COLOUR if onset is not None and onset[i] else "white"
        ax.add_patch(plt.Rectangle((x, y), w, row_height, facecolor=CLASS_COLOURS[cls], edgecolor=edge,
                                   linewidth=2.0 if edge != "white" else 0.5))
        ax.text(x + w / 2, y + row_height / 2, text, ha="center", va="center", fontsize=8, family="monospace")
        x += w + 0.15
    ax.set_xlim(-0.2, width + 0.2)
    ax.set_ylim(y - 0.3, row_height + 0.3)
    ax.set_axis_off()


def class_legend(ax: plt.Axes, with_onset: bool = False) -> None:
    """A legend for :func:`draw_tokens`' colours."""
    handles = [plt.Rectangle((0, 0), 1, 1, color=CLASS_COLOURS[c], label=CLASS_NAMES[c]) for c in CLASS_NAMES]
    if with_onset:
        handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor=ONSET_COLOUR, linewidth=2, label="onset"))
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
