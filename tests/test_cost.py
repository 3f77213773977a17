"""palu_perta.cost: the arithmetic of the cost comparison on hand-computed cases, and the committed timing
record read against the committed study (the timing itself is a benchmark, benchmarks/method_cost.py)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from palu_perta import cost


def test_seconds_at_interpolates_between_epoch_ends():
    ends = [10.0, 30.0, 40.0]  # epochs of 10, 20 and 10 s
    assert cost.seconds_at(0, ends) == 0.0
    assert cost.seconds_at(1, ends) == 10.0
    assert cost.seconds_at(1.5, ends) == 20.0  # half-way through the 20 s epoch
    assert cost.seconds_at(3, ends) == 40.0
    with pytest.raises(ValueError, match="outside the 3 epochs"):
        cost.seconds_at(3.5, ends)
    with pytest.raises(ValueError, match="no epoch"):
        cost.seconds_at(1, [])


def test_epoch_spread_is_the_slowest_epoch_over_the_fastest():
    assert cost.epoch_spread([10.0, 20.0, 30.0]) == 0.0
    assert cost.epoch_spread([10.0, 30.0, 40.0]) == pytest.approx(1.0)  # 20 s over 10 s


def test_cost_verdict_reads_the_whole_range_against_the_fraction():
    # 10 s against 40 and 50 s, no timing noise: ratio 10/45, range [10/50, 10/40] = [0.2, 0.25]: holds
    held = cost.cost_verdict(10.0, [40.0, 50.0], spread=0.0)
    assert held["ratio"] == pytest.approx(10 / 45)
    assert (held["low"], held["high"]) == (pytest.approx(0.2), pytest.approx(0.25))
    assert held["verdict"] == "holds"
    # 30 s against 40 and 50 s with 10 % noise: [30/55, 33/40] = [0.545, 0.825], all above 0.5: fails
    failed = cost.cost_verdict(30.0, [40.0, 50.0], spread=0.1)
    assert (failed["low"], failed["high"]) == (pytest.approx(30 / 55), pytest.approx(0.825))
    assert failed["verdict"] == "fails"
    # 22 s against 40 and 50 s: [0.44, 0.55] straddles 0.5
    assert cost.cost_verdict(22.0, [40.0, 50.0], spread=0.0)["verdict"] == "cannot tell"
    # a seed matched at epoch 0 cost nothing: no pipeline is a fraction of that
    free = cost.cost_verdict(5.0, [0.0, 20.0], spread=0.0)
    assert math.isinf(free["high"]) and free["verdict"] == "cannot tell"
    assert cost.cost_verdict(5.0, [0.0, 0.0], spread=0.0)["verdict"] == "fails"
    with pytest.raises(ValueError, match="at least one time"):
        cost.cost_verdict(5.0, [], spread=0.0)


PIECES = {"reinforcement fine-tune": 80.0, "task vector": 1.0, "tv update": 0.5,
          "grad importance, forget set": 10.0, "grad importance, retain set": 90.0, "grad weights": 2.0,
          "grad update": 0.5, "fisher importance, forget set": 20.0, "fisher importance, retain set": 180.0,
          "fisher weights": 2.0, "fisher update": 0.5}


def test_each_pipeline_pays_for_its_own_pieces():
    lines = cost.pipelines(PIECES)
    assert sum(lines["tv"].values()) == 81.5
    assert sum(lines["perta-grad"].values()) == 183.5
    assert sum(lines["perta-fisher"].values()) == 283.5
    assert not any("fisher" in k for k in lines["perta-grad"])


def test_cost_table_reads_each_seeds_matched_epoch_on_the_records_setting():
    record = {"setting": ["synthetic", "forget10"], "pieces": PIECES,
              "epoch_ends": {"graddiff": [100.0, 200.0, 300.0], "npo": [50.0, 100.0, 150.0]}}
    matched = pd.DataFrame([
        {"setting": "synthetic", "forget_split": "forget10", "label": "graddiff", "reached": True, "x": 1.5},
        {"setting": "synthetic", "forget_split": "forget10", "label": "graddiff", "reached": True, "x": 2.5},
        {"setting": "synthetic", "forget_split": "forget10", "label": "graddiff", "reached": False, "x": float("nan")},
        {"setting": "tofu", "forget_split": "forget01", "label": "graddiff", "reached": True, "x": 0.1},  # elsewhere
        {"setting": "synthetic", "forget_split": "forget10", "label": "npo", "reached": False, "x": float("nan")},
    ])
    table = cost.cost_table(record, matched, methods=("perta-grad",))
    assert list(table["baseline"]) == ["graddiff"]  # npo never reached matched forgetting: left out
    row = table.iloc[0]
    assert row["seeds"] == 2 and row["baseline_seconds"] == 200.0  # 150 s and 250 s
    assert row["method_seconds"] == 183.5 and row["ratio"] == pytest.approx(183.5 / 200)
    assert (row["low"], row["high"]) == (pytest.approx(183.5 / 250), pytest.approx(183.5 / 150))
    assert row["verdict"] == "fails"


def test_the_committed_record_times_the_cpu_grids_methods():
    """The timing record of the cpu study covers each of its training-based methods (seed 0's label) with
    one time per epoch of the budget, and every piece of the PerTA pipeline."""
    from palu_perta import study
    from palu_perta.config import get_profile, unlearn_budget

    record = cost.load_record("cpu")
    assert record is not None, "run `python benchmarks/method_cost.py --grid cpu`"
    grid = study.get_grid("cpu")
    labels = {c.label for c in grid.cells() if c.kind == "training"}
    assert set(record["epoch_ends"]) == labels
    epochs = unlearn_budget(get_profile("cpu"))["epochs"]
    assert all(len(ends) == epochs and ends == sorted(ends) for ends in record["epoch_ends"].values())
    assert set(cost.pipelines(record["pieces"])) == {"tv", "perta-grad", "perta-fisher"}
    assert record["setting"] == [grid.cells()[0].setting, grid.cells()[0].forget_split]


def test_notes_quote_the_committed_cost_record():
    """benchmarks/NOTES.md's cost section: its totals, the headline ratio and the retain pass's share are the
    committed record's, read against the committed study."""
    import re

    from palu_perta import report, store
    from palu_perta.paths import repo_root

    root = repo_root()
    notes = (root / "benchmarks" / "NOTES.md").read_text()
    section = notes.split("## What each method costs to reach matched forgetting", 1)[1].split("\n## ", 1)[0]
    text = " ".join(section.split())
    record = cost.load_record("cpu", root)
    totals = [round(sum(parts.values())) for parts in cost.pipelines(record["pieces"]).values()]
    assert f"**TV / PerTA-grad / PerTA-Fisher** | **{' / '.join(map(str, totals))}**" in text
    matched = report.at_matched_forgetting(report.points(store.load(root / "results" / "cpu")))
    row = cost.cost_table(record, matched).set_index(["method", "baseline"]).loc[("perta-grad", "graddiff")]
    assert f"**{row['ratio']:.2f} [{row['low']:.2f}, {row['high']:.2f}] times**" in text
    share = record["pieces"]["grad importance, retain set"] / totals[1]
    assert re.search(rf"importance pass is {round(share * 100)} % of PerTA-grad's pipeline", text)
