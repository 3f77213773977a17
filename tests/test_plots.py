"""Figure helpers: labels of crowded scatter points do not overlap and stay with their points."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from palu_perta import plots  # noqa: E402


def _overlap(a, b) -> float:
    return max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0)) * max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))


@pytest.fixture
def crowded():
    # a cluster like the results figure's: five methods within 0.01 MU at FQ 0.79, two at the same point
    xs = [0.452, 0.453, 0.4565, 0.457, 0.444, 0.447, 0.476, 0.409]
    ys = [1.0, 0.787, 0.787, 0.787, 0.787, 0.418, 0.787, 0.05]
    labels = ["retain", "PerTA-fisher", "TV", "PerTA-grad", "GradDiff", "UNDIAL", "GA", "IdkDPO"]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    ax.scatter(xs, ys, s=60)
    ax.set_yscale("log")
    ax.text(ax.get_xlim()[1], 0.06, "FQ 0.05 ", fontsize=8, ha="right")
    yield fig, ax, xs, ys, labels
    plt.close(fig)


def test_labels_do_not_overlap_each_other_or_the_axes_text(crowded):
    fig, ax, xs, ys, labels = crowded
    annotations = plots.label_points(ax, xs, ys, labels)
    renderer = fig.canvas.get_renderer()
    boxes = [a.get_window_extent(renderer) for a in annotations]
    assert [a.get_text() for a in annotations] == labels
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert _overlap(boxes[i], boxes[j]) == 0, (labels[i], labels[j])
    reference = ax.texts[0].get_window_extent(renderer)
    assert all(_overlap(b, reference) == 0 for b in boxes)


def test_each_label_points_at_its_own_point(crowded):
    fig, ax, xs, ys, labels = crowded
    annotations = plots.label_points(ax, xs, ys, labels)
    renderer = fig.canvas.get_renderer()
    for a, x, y in zip(annotations, xs, ys):
        assert a.xy == pytest.approx((x, y))
        # a label far from its point draws a line to it
        box = a.get_window_extent(renderer)
        px, py = ax.transData.transform((x, y))
        distance = max(box.x0 - px, px - box.x1, box.y0 - py, py - box.y1, 0)
        assert distance < 60 * fig.dpi / 72
        if distance > 14 * fig.dpi / 72:
            assert a.arrow_patch is not None
