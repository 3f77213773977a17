"""Honest figures (issue 21, item 8): every figure function of the package, built on small synthetic inputs,
draws no two texts on top of each other and names every labelled line in its legend; the overlap detector
itself finds texts on top of each other and only those; the dot plot draws the intervals it is given; the
forget-quality axis marks exactly the attainable KS p-values.

Whenever a public plotting function is added to palu_perta/plots.py or palu_perta/report.py (one that takes
an ``Axes``, returns a ``Figure`` or is named ``*_figure``; see :func:`plotting_functions`), :data:`BUILDERS`
needs an entry for it: the coverage test fails until then."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from palu_perta import plots, report, stats  # noqa: E402
from palu_perta.config import repo_root  # noqa: E402
from palu_perta.tokenization import ORDINARY, PROMPT, SENSITIVE  # noqa: E402

# ----------------------------------------------------------------------------- the detector itself


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_texts_on_top_of_each_other_are_found_and_texts_apart_are_not():
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.text(0.40, 0.5, "forget quality")
    ax.text(0.45, 0.51, "model utility")  # on top of the first
    ax.text(0.05, 0.1, "far away")
    assert plots.overlapping_text(fig) == [("forget quality", "model utility")]

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.text(0.05, 0.5, "forget quality")
    ax.text(0.60, 0.5, "model utility")
    assert plots.overlapping_text(fig) == []


def test_blank_invisible_and_touching_texts_do_not_count():
    fig, ax = plt.subplots(figsize=(5, 3))
    first = ax.text(0.1, 0.5, "left")
    ax.text(0.1, 0.5, "   ")  # blank
    ax.text(0.1, 0.5, "hidden", visible=False)
    fig.canvas.draw()
    box = first.get_window_extent(fig.canvas.get_renderer())
    # a text whose left edge is 0.5 px inside the first one's right edge: within the 1 px tolerance
    ax.annotate("right", (box.x1 - 0.5, box.y0), xycoords="figure pixels", va="bottom")
    assert plots.overlapping_text(fig) == []
    ax.annotate("inside", (box.x1 - 4, box.y0), xycoords="figure pixels", va="bottom")
    assert plots.overlapping_text(fig) == [("left", "inside"), ("right", "inside")]


def test_rotated_labels_are_tested_as_rotated_rectangles():
    """Neighbouring 45-degree tick labels: their axis-aligned boxes overlap, their glyphs do not; squeezed
    together, their glyphs do."""
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.set_xticks(range(8), [f"candidate {i}" for i in range(8)], rotation=45, ha="right")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [label.get_window_extent(renderer) for label in ax.get_xticklabels()]
    assert boxes[0].overlaps(boxes[1])  # what a bounding-box test would wrongly report
    assert plots.overlapping_text(fig) == []
    fig, ax = plt.subplots(figsize=(1.5, 3))
    ax.set_xticks(range(8), [f"candidate {i}" for i in range(8)], rotation=45, ha="right")
    assert ("candidate 0", "candidate 1") in plots.overlapping_text(fig)


def test_unrotated_crowded_tick_labels_are_found():
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.set_xticks(range(6), [f"method {i}" for i in range(6)])
    assert ("method 0", "method 1") in plots.overlapping_text(fig)


def test_a_legend_must_name_every_labelled_line():
    fig, ax = plt.subplots()
    named, = ax.plot([0, 1], [0, 1], label="TV")
    ax.plot([0, 1], [1, 0], label="PerTA")
    ax.plot([0, 1], [0.5, 0.5], label="_nolegend_")  # opted out: not reported
    assert plots.missing_legend_entries(fig) == []  # no legend yet: nothing claims to name the lines
    ax.legend(handles=[named])
    assert plots.missing_legend_entries(fig) == ["PerTA"]
    assert any("'PerTA' is not in the legend" in p for p in plots.figure_problems(fig))


def test_savefig_warns_about_problems_and_still_writes_check_figure_raises(tmp_path, monkeypatch):
    monkeypatch.setenv("PALU_PERTA_FIGURES", str(tmp_path))
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.text(0.4, 0.5, "retain")
    ax.text(0.42, 0.5, "target")
    with pytest.warns(plots.FigureWarning, match="'retain' overlaps text 'target'"):
        path = plots.savefig(fig, "crowded", "smoke")
    assert path == tmp_path / "smoke" / "crowded.png" and path.stat().st_size > 0
    with pytest.raises(ValueError, match="(?s)1 problem.*'retain' overlaps text 'target'.*enlarge the figure"):
        plots.check_figure(fig, "crowded")
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.text(0.1, 0.5, "retain")
    with warnings.catch_warnings():
        warnings.simplefilter("error", plots.FigureWarning)
        plots.savefig(fig, "clean", "smoke")
    plots.check_figure(fig)


# ----------------------------------------------------------------------------- honest encodings


def test_dot_intervals_draw_each_estimate_and_its_interval_without_a_zero_baseline():
    fig, ax = plt.subplots(figsize=(5, 3))
    estimates, low, high = [0.452, 0.447, 0.431], [0.44, 0.43, np.nan], [0.46, 0.46, np.nan]
    artists = plots.dot_intervals(ax, ["PerTA-grad", "p=0.5", "10% of data"], estimates, low, high,
                                  colours=["red", "C1", "C1"], label="model utility", rotation=30)
    dots = [a for a in artists if isinstance(a, plt.Line2D)]
    assert [d.get_ydata()[0] for d in dots] == estimates
    bars = [a for a in artists if not isinstance(a, plt.Line2D)]
    assert len(bars) == 2  # no interval for the third: none is drawn
    for bar, lo, hi in zip(bars, low, high):
        segment = bar.lines[2][0].get_segments()[0]
        assert segment[:, 1].tolist() == pytest.approx([lo, hi])
    assert not ax.patches  # no bars
    assert ax.get_ylim()[0] > 0.4  # the axis is free to start near the data: dots are read by position
    assert [t.get_text() for t in ax.get_xticklabels()] == ["PerTA-grad", "p=0.5", "10% of data"]
    ax.legend()
    assert plots.figure_problems(fig) == []


@pytest.mark.parametrize("axis, size", [("y", (6, 4)), ("x", (6, 4)), ("y", (3, 2)), ("x", (3, 2))])
def test_the_forget_quality_axis_marks_exactly_the_attainable_values(axis, size):
    fig, ax = plt.subplots(figsize=size)
    fq, mu = [1e-3, 0.79, 0.0521], [0.45, 0.44, 0.41]
    ax.scatter(*((mu, fq) if axis == "y" else (fq, mu)), label="methods")
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    (ax.set_ylim if axis == "y" else ax.set_xlim)(1e-4, 1.5)
    marked = plots.mark_fq_lattice(ax, 10, axis=axis)
    attainable = sorted({p for _, p in stats.ks_pvalue_lattice(10, 10, ties=False)})
    assert marked == [p for p in attainable if 1e-4 <= p <= 1.5]
    assert len(marked) == 9 and marked[-1] == 1.0 and marked[0] == pytest.approx(2.165e-4, rel=1e-3)
    lines = [line for line in ax.lines if line.get_linestyle() == ":"]
    positions = [(line.get_ydata() if axis == "y" else line.get_xdata())[0] for line in lines]
    assert positions == marked
    assert (ax.get_ylim() if axis == "y" else ax.get_xlim()) == pytest.approx((1e-4, 1.5))  # limits kept
    if size == (6, 4):  # (a legend inside a 3 x 2 inch axes would cover the labels)
        ax.legend(loc="lower left")
        assert "attainable FQ (KS lattice, 10 vs 10 items)" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert plots.figure_problems(fig) == []  # 1.0 and 0.994 share a line's height: one label is dropped
    secondary = ax.child_axes[0]
    ticks = (secondary.get_yticks() if axis == "y" else secondary.get_xticks()).tolist()
    assert set(ticks) < set(marked) and 1.0 in ticks


def test_mark_fq_lattice_refuses_an_unknown_axis():
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="axis must be 'x' or 'y'"):
        plots.mark_fq_lattice(ax, 10, axis="z")


# ----------------------------------------------------------------------------- every figure function


def _tokens_figure(tmp_path: Path) -> plt.Figure:
    """draw_tokens and class_legend, as notebooks 01 and 06 use them."""
    tokens = ["Question", ":", " Where", " was", " Basil", " born", "?", " Answer", ":", " He", " was", " born",
              " in", " Kuwait", " City", " on", " 28", " July", " 1972", ".", "<|endoftext|>"]
    classes = [PROMPT] * 9 + [ORDINARY] * 4 + [SENSITIVE] * 2 + [ORDINARY] + [SENSITIVE] * 3 + [ORDINARY] * 2
    onset = [c == SENSITIVE and (i == 0 or classes[i - 1] != SENSITIVE) for i, c in enumerate(classes)]
    fig, axes = plt.subplots(2, 1, figsize=(11, 2.6))
    plots.draw_tokens(axes[0], tokens, classes)
    plots.draw_tokens(axes[1], tokens, classes, onset)
    plots.class_legend(axes[0], with_onset=True)
    return fig


def _label_points_figure(tmp_path: Path) -> plt.Figure:
    """label_points on notebook 08's crowded cluster (as tests/test_plots.py)."""
    xs = [0.452, 0.453, 0.4565, 0.457, 0.444, 0.447, 0.476, 0.409]
    ys = [1.0, 0.787, 0.787, 0.787, 0.787, 0.418, 0.787, 0.05]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    ax.scatter(xs, ys, s=60)
    ax.set(yscale="log", xlabel="model utility", ylabel="forget quality (log)")
    plots.label_points(ax, xs, ys, ["retain", "PerTA-fisher", "TV", "PerTA-grad", "GradDiff", "UNDIAL", "GA",
                                    "IdkDPO"])
    return fig


def _dot_intervals_figure(tmp_path: Path) -> plt.Figure:
    """dot_intervals in place of notebook 07's bars: model utility at equal forgetting per ablation."""
    labels = ["PerTA-grad", "p=0.5", "p=0.9", "10% of data", "50% of data", "at target", "fisher"]
    rng = np.random.default_rng(0)
    estimates = 0.45 + rng.normal(0, 0.01, len(labels))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax in axes:
        plots.dot_intervals(ax, labels, estimates, estimates - 0.01, estimates + 0.012,
                            colours=[plots.ONSET_COLOUR] + ["#dd8452"] * (len(labels) - 1), label="mean", rotation=35)
        ax.axhline(0.46, color="black", ls="--", lw=1, label="target (no forgetting)")
        ax.set(ylabel="model utility at equal forgetting", title="utility kept (higher is better)")
    axes[0].legend(fontsize=8, loc="lower left")
    fig.suptitle("PerTA-grad ablations, each at its own equal-forgetting lambda", y=1.04)
    return fig


def _fq_lattice_figure(tmp_path: Path) -> plt.Figure:
    """mark_fq_lattice on notebook 05's log forget-quality panel, legend outside on the right."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    mu, fq = [0.46, 0.45, 0.43, 0.40], [2.2e-4, 0.0123, 0.418, 0.787]
    axes[0].plot(mu, [0.9, 0.7, 0.5, 0.4], "-o", label="TV")
    axes[1].plot(mu, fq, "-o", label="TV")
    axes[1].scatter([0.47], [1.0], marker="*", s=240, color="#2ca02c", label="retain", zorder=3)
    axes[1].set(yscale="log", xlabel="model utility", ylabel="forget quality (log; higher: closer to retain)",
                ylim=(1e-5, 2))
    plots.mark_fq_lattice(axes[1], 10)
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.12, 1))
    fig.suptitle("TV vs PerTA (smoke profile)")
    return fig


def _palu_schematic_figure(tmp_path: Path) -> plt.Figure:
    """palu_schematic on made-up inputs of the shape palu_example returns (notebook 00)."""
    tokens = [" He", " was", " born", " in", " Kuwait", " City", " on", " 28", " July", " 1972", ".", "<|endoftext|>"]
    classes = [ORDINARY] * 4 + [SENSITIVE] * 2 + [ORDINARY] + [SENSITIVE] * 3 + [ORDINARY] * 2
    onset = [c == SENSITIVE and (i == 0 or classes[i - 1] != SENSITIVE) for i, c in enumerate(classes)]
    candidates = [" Kuwait", " Paris", " the", " a", " Tokyo", " London", " Cairo", " Berlin", " Rome", " Madrid",
                  " Lagos", " Lima", " Oslo", " Baku", " Doha"]
    logits = list(np.linspace(18.0, 9.0, len(candidates)))
    return plots.palu_schematic(tokens, classes, onset, onset.index(True), candidates, logits, vocab_mean=-1.5,
                                true_rank=0, first_n=3, shown=12, model_name="the target model")


def _perta_schematic_figure(tmp_path: Path) -> plt.Figure:
    rng = np.random.default_rng(0)
    return plots.perta_schematic(rng.normal(0, 1e-3, (12, 16)), rng.uniform(0, 1, (12, 16)), 2.5,
                                 name="model.layers.0.mlp.up_proj.weight[:12, :16]")


def _frame() -> pd.DataFrame:
    """A points() frame for the report's figures: two forget splits (two panels), two seeds per method point
    (seed intervals drawn), a method only in the second panel (the legend must still name it)."""
    rows = []
    for split, shift in (("forget01", 0.0), ("forget10", 0.05)):
        for name, rouge, mu, nb in (("retain", 0.40, 0.46, 0.88), ("target", 0.90, 0.45, 0.93)):
            rows.append(dict(setting="tofu", forget_split=split, label=name, method=name, kind="reference", seed=0,
                             x=0.0, forget_rouge=rouge + shift, model_utility=mu, neighbour_rouge=nb))
        methods = [("graddiff", "training"), ("tv", "arithmetic")] + [("palu", "training")] * (split == "forget10")
        for label, kind in methods:
            for seed in (0, 1):
                for x in (1.0, 2.0, 3.0):
                    rows.append(dict(setting="tofu", forget_split=split, label=label, method=label, kind=kind,
                                     seed=seed, x=x, forget_rouge=0.9 - 0.18 * x + 0.01 * seed + shift,
                                     model_utility=0.45 - 0.02 * x - 0.005 * seed - 0.01 * (label == "tv"),
                                     neighbour_rouge=0.9 - 0.1 * x - 0.01 * seed))
    return pd.DataFrame(rows)


def _curves_figure(tmp_path: Path) -> plt.Figure:
    return report.curves_figure(_frame())


def _saved(writer: Callable[[pd.DataFrame, Path], Path]) -> Callable[[Path], plt.Figure]:
    """A report writer (it saves and closes its figure): the PNG must be written without a FigureWarning;
    the figure checked is the same curves_figure drawn for the writer's column."""
    def build(tmp_path: Path) -> plt.Figure:
        with warnings.catch_warnings():
            warnings.simplefilter("error", plots.FigureWarning)
            path = writer(_frame(), tmp_path / "study.png")
        assert path.stat().st_size > 0
        column = "neighbour_rouge" if writer is report.neighbour_figure else "model_utility"
        return report.curves_figure(_frame(), column)
    return build


BUILDERS: dict[str, Callable[[Path], plt.Figure]] = {
    "plots.draw_tokens": _tokens_figure,
    "plots.class_legend": _tokens_figure,
    "plots.label_points": _label_points_figure,
    "plots.dot_intervals": _dot_intervals_figure,
    "plots.mark_fq_lattice": _fq_lattice_figure,
    "plots.palu_schematic": _palu_schematic_figure,
    "plots.perta_schematic": _perta_schematic_figure,
    "report.curves_figure": _curves_figure,
    "report.tradeoff_figure": _saved(report.tradeoff_figure),
    "report.neighbour_figure": _saved(report.neighbour_figure),
}


def plotting_functions() -> set[str]:
    """The public functions of plots.py and report.py that draw: they take an ``Axes``, return a ``Figure`` or
    are named ``*_figure`` and take no figure (a check of a figure, such as ``check_figure``, draws nothing)."""
    found = set()
    for module in (plots, report):
        for name, function in inspect.getmembers(module, inspect.isfunction):
            if name.startswith("_") or function.__module__ != module.__name__:
                continue
            signature = inspect.signature(function)
            annotations = [str(p.annotation) for p in signature.parameters.values()]
            takes_axes, takes_figure = any("Axes" in a for a in annotations), any("Figure" in a for a in annotations)
            named = name.endswith("_figure") and not takes_figure
            if takes_axes or "Figure" in str(signature.return_annotation) or named:
                found.add(f"{module.__name__.rsplit('.', 1)[-1]}.{name}")
    return found


def test_every_plotting_function_is_covered():
    missing = plotting_functions() - set(BUILDERS)
    assert not missing, f"add a builder to BUILDERS in tests/test_figures.py for {sorted(missing)}"
    assert set(BUILDERS) <= plotting_functions(), "a builder for a function that no longer draws (or exists)"


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_no_figure_overlaps_text_or_leaves_a_line_out_of_its_legend(name, tmp_path):
    with plt.rc_context():  # in the style the notebooks publish in, whatever an earlier test left set
        plots.setup()
        fig = BUILDERS[name](tmp_path)
        assert plots.figure_problems(fig) == []


def test_fq_vs_mu_names_each_point_beside_it_and_only_points_on_top_of_each_other_share_a_label():
    from palu_perta.figures.palu import fq_vs_mu

    # notebook 06's cpu case: idk_dpo just below and left of PALU (one KS step apart) had been labelled with it
    points = pd.DataFrame({"forget_quality": [5.6e-5, 1.0, 0.175, 0.336, 0.175, 0.175],
                           "model_utility": [0.460, 0.472, 0.396, 0.401, 0.469, 0.469]},
                          index=["target", "retain", "idk_dpo", "palu", "graddiff", "twin"])
    with plt.rc_context():
        plots.setup()
        fig = fq_vs_mu(points, (20, 20), "cpu", 5, 5e-5)
        labels = sorted(t.get_text() for t in fig.axes[0].texts)
        assert plots.figure_problems(fig) == []
    assert labels == ["graddiff, twin", "idk_dpo", "palu", "retain", "target"]


def test_the_report_legend_names_every_method_of_every_panel_and_the_reference_line():
    fig = report.curves_figure(_frame())
    legend = fig.axes[-1].get_legend()
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts[:3] == ["graddiff (2 seeds)", "tv (2 seeds)", "target model"]
    assert "palu (2 seeds)" in texts  # drawn in the second panel only
    assert "retain model's forget ROUGE-L (matched forgetting)" in texts
    assert "95 % Student-t interval over seeds" in legend.get_title().get_text()
    one_seed = _frame()
    one_seed = one_seed[one_seed["seed"] == 0]
    fig = report.curves_figure(one_seed)
    legend = fig.axes[-1].get_legend()
    assert "graddiff (1 seed)" in [t.get_text() for t in legend.get_texts()]
    assert "no interval" in legend.get_title().get_text()


def test_the_committed_study_figure_is_clean():
    """The cpu study's trade-off and neighbour figures, drawn from the committed per-point table (the long
    PALU label included)."""
    frame = pd.read_csv(repo_root() / "figures" / "study_cpu_points.csv")
    for column in ("model_utility", "neighbour_rouge"):
        assert plots.figure_problems(report.curves_figure(frame, column)) == []
