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

from .config import figures_dir
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
