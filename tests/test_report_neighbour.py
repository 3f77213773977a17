"""The study report's neighbour metrics and collateral damage, on a hand-built study small enough to compute
by hand: four items per QA split, the retain model's forget ROUGE-L 0.4 (the matched-forgetting threshold), the
target model's 0.9, and methods crossing the threshold at known shares of their last step:

- ``ga`` (training, seeds 0 and 1): forget ROUGE-L 0.6 -> 0.2 (seed 0, share 0.5) and 0.8 -> 0.3 (seed 1, 0.8);
- ``gd`` (training, seed 0): 0.4 at epoch 1, exactly the threshold (share 1);
- ``tv`` (arithmetic, seed 0): 0.15 at 1 x lambda*, crossing between the target model and it (share 2/3);
- ``npo`` (training, seed 0): 0.8 -> 0.7, never reaches it.

Old-style results (no neighbour split, no neighbour summary keys) must still give every table and the figure."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from palu_perta import report, stats, store

SETTING, FORGET = "s", "f"
N = 4
# neighbour items: rougeL_recall and truth_ratio per model and point; prob is half the ROUGE-L
NEIGHBOUR = {
    ("retain", None): ([0.8, 0.6, 1.0, 0.4], [0.2, 0.5, 1.5, 0.1]),
    ("target", None): ([0.9, 0.7, 1.0, 0.5], [0.1, 0.4, 0.5, 0.1]),
    ("ga", 0, 1): ([0.7, 0.5, 0.9, 0.3], [0.4, 0.6, 0.5, 0.3]),
    ("ga", 0, 2): ([0.3, 0.1, 0.5, 0.1], [0.8, 0.9, 1.5, 0.5]),
    ("ga", 1, 1): ([0.8, 0.6, 1.0, 0.4], [0.4, 0.6, 0.5, 0.3]),
    ("ga", 1, 2): ([0.3, 0.1, 0.5, 0.2], [0.8, 0.9, 1.5, 0.5]),
    ("gd", 0, 1): ([1.0, 0.4, 0.9, 0.5], [0.2, 0.5, 1.5, 0.1]),
    ("tv", 0, 1.0): ([0.9, 0.9, 1.0, 0.8], [0.1, 0.4, 0.5, 0.1]),
    ("npo", 0, 1): ([0.85, 0.65, 1.0, 0.45], [0.2, 0.5, 1.5, 0.1]),
    ("npo", 0, 2): ([0.8, 0.6, 1.0, 0.4], [0.2, 0.5, 1.5, 0.1]),
}
# forget ROUGE-L (the mean; items spread around it) per model and point
FORGET_ROUGE = {("retain", None): 0.4, ("target", None): 0.9, ("ga", 0, 1): 0.6, ("ga", 0, 2): 0.2,
                ("ga", 1, 1): 0.8, ("ga", 1, 2): 0.3, ("gd", 0, 1): 0.4, ("tv", 0, 1.0): 0.15,
                ("npo", 0, 1): 0.8, ("npo", 0, 2): 0.7}
# retain-split ROUGE-L per model and point
RETAIN_ROUGE = {("retain", None): [0.9, 0.8, 1.0, 0.7], ("target", None): [0.9, 0.8, 1.0, 0.7],
                ("ga", 0, 1): [0.8, 0.7, 0.9, 0.6], ("ga", 0, 2): [0.4, 0.3, 0.5, 0.2],
                ("ga", 1, 1): [0.8, 0.7, 0.9, 0.6], ("ga", 1, 2): [0.4, 0.3, 0.5, 0.2],
                ("gd", 0, 1): [0.9, 0.8, 1.0, 0.7], ("tv", 0, 1.0): [0.9, 0.8, 1.0, 0.7],
                ("npo", 0, 1): [0.9, 0.8, 1.0, 0.7], ("npo", 0, 2): [0.9, 0.8, 1.0, 0.7]}
KINDS = {"retain": "reference", "target": "reference", "ga": "training", "gd": "training", "npo": "training",
         "tv": "arithmetic"}


def _per_item(key: tuple, neighbour: bool) -> dict:
    m = FORGET_ROUGE[key]
    forget = [{"prob": 0.5, "paraphrase_prob": 0.4, "perturbed_probs": [0.1, 0.2], "rougeL_recall": m + d,
               "rouge1_recall": m + d, "rougeL_f1": m + d, "truth_ratio": 0.3 + m + d, "generation": "x"}
              for d in (-0.1, 0.1, -0.05, 0.05)]
    retain = [{"prob": r, "paraphrase_prob": r, "perturbed_probs": [0.1], "rougeL_recall": r, "rouge1_recall": r,
               "rougeL_f1": r, "truth_ratio": 0.3} for r in RETAIN_ROUGE[key]]
    options = [{"prob": 0.6, "prob_normalised": p, "truth_ratio": 0.4, "correct_is_top": True, "rougeL_recall": p,
                "rouge1_recall": p, "rougeL_f1": p} for p in (0.5, 0.7, 0.9)]
    splits = {"forget": forget, "retain": retain, "real_authors": options, "world_facts": options, "holdout": []}
    if neighbour:
        rouge, tr = NEIGHBOUR[key]
        splits["neighbour"] = [{"prob": r / 2, "paraphrase_prob": r / 2, "perturbed_probs": [0.1], "rougeL_recall": r,
                                "rouge1_recall": r, "rougeL_f1": r, "truth_ratio": t} for r, t in zip(rouge, tr)]
    return {"splits": splits}


def _summary(key: tuple, neighbour: bool) -> dict:
    splits = _per_item(key, neighbour)["splits"]
    utility = report._utility({f"{split}:{name}": np.array([item[name] for item in splits[split]], float)
                               for split, names in report.UTILITY_COLUMNS.items() for name in names})
    summary = {"forget_quality": 1.0 if key[0] == "retain" else 0.1, "model_utility": utility,
               "forget_Q_A_ROUGE": FORGET_ROUGE[key], "forget_truth_ratio": 0.5,
               "retain_Q_A_ROUGE": float(np.mean(RETAIN_ROUGE[key]))}
    if neighbour:
        rouge, tr = NEIGHBOUR[key]
        summary.update(neighbour_Q_A_ROUGE=float(np.mean(rouge)), neighbour_Q_A_Prob=float(np.mean(rouge)) / 2,
                       neighbour_Truth_Ratio=float(np.mean(np.maximum(0.0, 1.0 - np.asarray(tr)))))
    return summary


def write_study(directory, neighbour: bool = True):
    """One cell file per model (references) or method x seed, as the study runner writes them."""
    cells: dict[tuple, list] = {}
    for key in FORGET_ROUGE:
        method, seed = key[0], (key[1] if len(key) == 3 else 0)
        cells.setdefault((method, seed), []).append(key)
    for (method, seed), keys in cells.items():
        kind = KINDS[method]
        cell_id = f"{SETTING}-{FORGET}-{method}" + ("" if kind == "reference" else f"-s{seed}")
        header = {"cell": {"id": cell_id, "setting": SETTING, "forget_split": FORGET, "method": method,
                           "label": method, "seed": seed, "kind": kind},
                  "config_hash": "0" * 12, "palu_perta": "test"}
        points = []
        for key in keys:
            point = ({} if kind == "reference" else {"epoch": key[2]} if kind == "training"
                     else {"lambda": 0.3 * key[2], "multiple": key[2]})
            points.append((point, _summary(key, neighbour), _per_item(key, neighbour)))
        store.write_cell(directory / f"{cell_id}.jsonl", header, points)
    return directory


@pytest.fixture(scope="module", autouse=True)
def few_resamples():
    """200 bootstrap resamples instead of 1000: the tests check numbers the resampling does not move."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report, "RESAMPLES", 200)
        yield


@pytest.fixture(scope="module")
def new_study(tmp_path_factory):
    return write_study(tmp_path_factory.mktemp("results") / "toy")


@pytest.fixture(scope="module")
def old_study(tmp_path_factory):
    return write_study(tmp_path_factory.mktemp("results") / "toy", neighbour=False)


@pytest.fixture(scope="module")
def new_tables(new_study, few_resamples):
    tables = store.load(new_study)
    return tables, report.points(tables)


@pytest.fixture(scope="module")
def old_tables(old_study, few_resamples):
    tables = store.load(old_study)
    return tables, report.points(tables)


def _row(frame: pd.DataFrame, **where) -> pd.Series:
    mask = np.logical_and.reduce([frame[k] == v for k, v in where.items()])
    assert mask.sum() == 1, where
    return frame[mask].iloc[0]


def test_points_carry_the_neighbour_group_with_item_intervals(new_tables):
    _, frame = new_tables
    retain = _row(frame, method="retain")
    assert retain["neighbour_rouge"] == pytest.approx(0.7)
    assert retain["neighbour_prob"] == pytest.approx(0.35)
    assert retain["neighbour_truth_ratio"] == pytest.approx(np.mean([0.8, 0.5, 0.0, 0.9]))  # max(0, 1 - tr)
    ga = _row(frame, label="ga", seed=1, x=2.0)
    assert ga["neighbour_rouge"] == pytest.approx(0.275)
    assert ga["neighbour_truth_ratio"] == pytest.approx(np.mean([0.2, 0.1, 0.0, 0.5]))
    for name in ("retain_rouge", *report.NEIGHBOUR_METRICS):
        assert (frame[f"{name}_low"] <= frame[name] + 1e-12).all()
        assert (frame[name] <= frame[f"{name}_high"] + 1e-12).all()
    # the retain model's neighbour ROUGE-L: 4 items 0.4..1.0, so a real interval, and the summary's mean
    assert retain["neighbour_rouge_low"] < 0.7 < retain["neighbour_rouge_high"]
    summaries = new_tables[0]["summaries"].set_index("cell")
    assert summaries.loc[retain["cell"], "neighbour_Q_A_ROUGE"] == pytest.approx(retain["neighbour_rouge"])
    assert summaries.loc[retain["cell"], "neighbour_Truth_Ratio"] == pytest.approx(retain["neighbour_truth_ratio"])


def test_matched_forgetting_carries_neighbour_and_retain_rouge_at_the_mu_share(new_tables):
    _, frame = new_tables
    matched = report.at_matched_forgetting(frame)
    ga0, ga1 = _row(matched, label="ga", seed=0), _row(matched, label="ga", seed=1)
    gd, tv, npo = _row(matched, label="gd"), _row(matched, label="tv"), _row(matched, label="npo")
    # shares: (0.6 - 0.4) / (0.6 - 0.2), (0.8 - 0.4) / (0.8 - 0.3), exactly at the threshold, (0.9 - 0.4) / (0.9 - 0.15)
    assert [ga0["share"], ga1["share"], gd["share"], tv["share"]] == pytest.approx([0.5, 0.8, 1.0, 2 / 3])
    assert ga1["x"] == pytest.approx(1.8) and tv["x"] == pytest.approx(2 / 3)
    assert tv["cell_before"] == "s-f-target" and tv["x_before"] == 0.0 and tv["cell_after"] == "s-f-tv-s0"
    assert json.loads(ga1["point_before"]) == {"epoch": 1} and json.loads(ga1["point_after"]) == {"epoch": 2}
    assert not npo["reached"] and math.isnan(npo["neighbour_rouge"]) and math.isnan(npo["retain_rouge"])
    # model utility with the same share as before
    mu = [_row(frame, label="ga", seed=1, x=x)["model_utility"] for x in (1.0, 2.0)]
    assert ga1["model_utility"] == pytest.approx(mu[0] + 0.8 * (mu[1] - mu[0]))
    # neighbour ROUGE-L: means 0.6 -> 0.3 (seed 0, halfway), 0.7 -> 0.275 (seed 1, 0.8 of the way)
    assert ga0["neighbour_rouge"] == pytest.approx(0.425) and ga1["neighbour_rouge"] == pytest.approx(0.36)
    assert ga0["retain_rouge"] == pytest.approx(0.55) and ga1["retain_rouge"] == pytest.approx(0.43)
    assert tv["neighbour_rouge"] == pytest.approx(0.775 + 2 / 3 * (0.9 - 0.775))
    summary = report.matched_summary(matched).set_index("label")
    assert summary.loc["ga", "neighbour_rouge"] == pytest.approx(0.3925)
    half = 12.706204736 * np.std([0.425, 0.36], ddof=1) / np.sqrt(2)  # Student-t, 2 seeds
    assert summary.loc["ga", "neighbour_rouge_seed_high"] == pytest.approx(0.3925 + half, rel=1e-6)
    assert summary.loc["ga", "retain_rouge"] == pytest.approx(0.49)
    assert math.isnan(summary.loc["npo", "neighbour_rouge"]) and summary.loc["npo", "reached"] == 0


def test_collateral_damage_is_paired_over_items_and_negative_for_damage(new_tables):
    tables, frame = new_tables
    damage = report.collateral_damage(tables, frame, "neighbour", "rougeL_recall").set_index("label")
    # ga per item: seed 0 halfway [0.5, 0.3, 0.7, 0.2], seed 1 [0.4, 0.2, 0.6, 0.24]; mean over seeds
    # [0.45, 0.25, 0.65, 0.22] against the retain model's [0.8, 0.6, 1.0, 0.4]
    ga_items = np.array([0.45, 0.25, 0.65, 0.22])
    retain_items = np.array([0.8, 0.6, 1.0, 0.4])
    assert damage.loc["ga", "difference"] == pytest.approx(-0.3075)
    expected = stats.paired_difference(ga_items, retain_items, n_resamples=report.RESAMPLES, seed=0)
    assert damage.loc["ga", "difference_low"] == pytest.approx(expected.low)
    assert damage.loc["ga", "difference_high"] == pytest.approx(expected.high) and expected.high < 0
    assert damage.loc["ga", ["items", "seeds", "seeds_not_reached", "verdict"]].tolist() == [4, 2, 0, "loses"]
    # tv, between the target model and 1 x lambda* at share 2/3: [0.9, 0.833, 1.0, 0.7], above the retain model
    assert damage.loc["tv", "difference"] == pytest.approx(np.mean([0.1, 0.7 + 0.2 * 2 / 3 - 0.6, 0.0, 0.3]))
    assert damage.loc["tv", "verdict"] == "gains" and damage.loc["tv", "difference_low"] > 0
    # gd: +0.2, -0.2, -0.1, +0.1 -> mean 0, an interval around 0: not "no loss"
    assert damage.loc["gd", "difference"] == pytest.approx(0.0, abs=1e-12)
    assert damage.loc["gd", "difference_low"] < 0 < damage.loc["gd", "difference_high"]
    assert damage.loc["gd", "verdict"] == "cannot tell"
    # npo never reaches matched forgetting: its seed is left out and counted
    assert damage.loc["npo", ["seeds", "seeds_not_reached", "seeds_total", "verdict"]].tolist() == [0, 1, 1,
                                                                                                     "not reached"]
    assert math.isnan(damage.loc["npo", "difference"])
    # the mean of the per-item differences is the difference of the matched-forgetting means (all linear)
    summary = report.matched_summary(report.at_matched_forgetting(frame)).set_index("label")
    assert damage.loc["ga", "difference"] == pytest.approx(summary.loc["ga", "neighbour_rouge"] - 0.7)
    # against the target model instead: [0.9, 0.7, 1.0, 0.5]
    target = report.collateral_damage(tables, frame, "neighbour", "rougeL_recall", reference="target")
    assert _row(target, label="ga")["difference"] == pytest.approx(np.mean(ga_items - [0.9, 0.7, 1.0, 0.5]))
    # the retain split: ga's retain ROUGE-L 0.36 below the retain model's on every item
    retain = report.collateral_damage(tables, frame, "retain", "rougeL_recall").set_index("label")
    assert retain.loc["ga", "difference"] == pytest.approx(-0.36) and retain.loc["ga", "verdict"] == "loses"


def test_collateral_truth_ratio_is_interpolated_in_its_true_better_form(new_tables):
    """A truth ratio above the retain model's means damage: the score max(0, 1 - tr) is interpolated per item
    (item 2 goes 0.5 -> 0 between the epochs; interpolating the ratio 0.5 -> 1.5 first would give 0 and 0.1)."""
    tables, frame = new_tables
    damage = _row(report.collateral_damage(tables, frame, "neighbour", "truth_ratio"), label="ga")
    seed0 = np.array([0.4, 0.25, 0.25, 0.6])  # halfway between [0.6, 0.4, 0.5, 0.7] and [0.2, 0.1, 0.0, 0.5]
    seed1 = np.array([0.28, 0.16, 0.1, 0.54])
    expected = (seed0 + seed1) / 2 - np.array([0.8, 0.5, 0.0, 0.9])
    assert damage["difference"] == pytest.approx(expected.mean()) and damage["difference"] == pytest.approx(-0.2275)
    assert damage["difference"] < 0  # ratios went up: the model prefers the true answer less
    summary = report.matched_summary(report.at_matched_forgetting(frame)).set_index("label")
    assert damage["difference"] == pytest.approx(summary.loc["ga", "neighbour_truth_ratio"] - 0.55)


@pytest.mark.parametrize(("low", "high", "damage", "claim"), [(-0.4, -0.2, "loses", "fails"),
                                                               (-0.05, 0.2, "cannot tell", "cannot tell at this size"),
                                                               (0.0, 0.2, "cannot tell", "cannot tell at this size"),
                                                               (0.1, 0.3, "gains", "holds")])
def test_verdict_wording(low, high, damage, claim):
    interval = stats.Interval((low + high) / 2, low, high)
    assert report.damage_verdict(interval) == damage
    assert report.claim_verdict(interval, "higher") == claim
    mirrored = stats.Interval(-(low + high) / 2, -high, -low)
    assert report.claim_verdict(mirrored, "lower") == claim


def test_claim_verdict_margin_and_no_interval():
    assert report.claim_verdict(stats.Interval(0.2, 0.1, 0.3), "higher", margin=0.15) == "cannot tell at this size"
    assert report.claim_verdict(stats.Interval(-0.3, -0.4, -0.2), "higher", margin=0.15) == "fails"
    assert report.claim_verdict(stats.Interval(0.2, float("nan"), float("nan")), "higher") == "cannot tell at this size"
    assert report.damage_verdict(stats.Interval(float("nan"), float("nan"), float("nan"))) == "not reached"
    with pytest.raises(ValueError, match="better"):
        report.claim_verdict(stats.Interval(0.2, 0.1, 0.3), "more")


def test_old_results_without_neighbour_items_degrade(old_tables, old_study, tmp_path):
    tables, frame = old_tables
    assert frame[list(report.NEIGHBOUR_METRICS)].isna().all().all()
    assert frame["neighbour_rouge_low"].isna().all()
    assert frame["retain_rouge_low"].notna().all()
    summary = report.matched_summary(report.at_matched_forgetting(frame)).set_index("label")
    assert math.isnan(summary.loc["ga", "neighbour_rouge"]) and summary.loc["ga", "retain_rouge"] == pytest.approx(0.49)
    assert report.collateral_damage(tables, frame).empty
    collateral = report.collateral_table(tables, frame)
    assert set(collateral["split"]) == {"retain"}
    text = report.tables_markdown("toy", frame, report.best_fq(frame), report.matched_summary(
        report.at_matched_forgetting(frame)), collateral)
    assert "No neighbour items in these results" in text and "the retain split's rows only" in text
    shown = [line.split(" | ")[3] for line in text.splitlines() if line.startswith("| s | f | ga | ")]
    assert shown[-2:] == ["retain", "retain"]  # its collateral rows: retain ROUGE-L and probability, no neighbour
    assert not [line for line in text.splitlines() if " | neighbour | " in line]
    gd = next(line for line in text.splitlines() if line.startswith("| s | f | gd | 1 of 1 |"))
    assert gd.split(" | ")[5:7] == ["-", "0.850"]  # neighbour ROUGE-L "-", retain ROUGE-L there
    paths = report.build("toy", old_study.parent, tmp_path)
    assert sorted(p.name for p in paths) == ["study_toy.md", "study_toy_points.csv", "study_toy_tradeoff.png",
                                             "study_toy_verdicts.csv"]


def test_build_writes_tables_collateral_section_and_neighbour_figure(new_study, tmp_path):
    paths = report.build("toy", new_study.parent, tmp_path)
    assert sorted(p.name for p in paths) == ["study_toy.md", "study_toy_neighbour.png", "study_toy_points.csv",
                                             "study_toy_tradeoff.png", "study_toy_verdicts.csv"]
    assert all(p.stat().st_size > 0 for p in paths)
    text = (tmp_path / "study_toy.md").read_text()
    assert "## Collateral damage at matched forgetting" in text and "**negative = damage**" in text
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| s | f | ga | neighbour |")]
    assert [(r[4], r[-1]) for r in rows] == [("ROUGE-L", "loses |"), ("probability", "loses |"),
                                             ("truth ratio (true-better)", "cannot tell |")]
    assert "| s | f | npo | neighbour | ROUGE-L | - | 0 | 0 of 1 | not reached |" in text
    assert "| s | f | ga | 2 of 2 |" in text and "| s | f | retain model | - |" in text
    csv = pd.read_csv(tmp_path / "study_toy_points.csv")
    assert {"neighbour_rouge", "neighbour_rouge_low", "retain_rouge_high", "cell", "point"} <= set(csv.columns)
    # the toy's methods (ga, gd, tv, npo) are in no claim of the papers: the verdict section says so
    assert "## Verdicts on the papers' claims" in text and "No claim can be tested yet" in text
    assert pd.read_csv(tmp_path / "study_toy_verdicts.csv").empty


@pytest.mark.parametrize("keep", [("retain",), ("retain", "target"), ("retain", "ga")])
def test_a_study_in_progress_builds(new_study, tmp_path, keep):
    """A study stopped early (only some cells written: the retain model alone, the two reference models, or a
    method without the target) still gives its tables and figures, saying what is missing."""
    partial = tmp_path / "study" / "partial"
    partial.mkdir(parents=True)
    for path in new_study.glob("*.jsonl"):
        method = path.stem.split(f"{FORGET}-")[1].split("-s")[0]
        if method in keep:
            (partial / path.name).write_text(path.read_text())
    paths = report.build("partial", tmp_path / "study", tmp_path / "out")
    text = (tmp_path / "out" / "study_partial.md").read_text()
    assert {p.name for p in paths} >= {"study_partial.md", "study_partial_tradeoff.png"}
    assert "No method has been placed at matched forgetting yet" in text


def test_seed_spread_puts_one_methods_seeds_next_to_the_methods_means():
    import pandas as pd

    from palu_perta import report

    rows = [("palu", 0, 0.40), ("palu", 1, 0.44), ("palu", 2, 0.42), ("graddiff", 0, 0.47), ("npo", 0, 0.45),
            ("npo", 1, 0.43), ("tv", 0, float("nan"))]
    matched = pd.DataFrame([{"setting": "synthetic", "forget_split": "forget10", "label": label, "kind": "training",
                             "seed": seed, "reached": mu == mu, "model_utility": mu} for label, seed, mu in rows])
    spread = report.seed_spread(matched).set_index("label")
    assert list(spread.index) == ["npo", "palu"]  # graddiff has one seed; tv never reached matched forgetting
    assert spread.loc["palu", "values"] == [0.40, 0.44, 0.42]
    assert spread.loc["palu", "range"] == pytest.approx(0.04)
    assert spread.loc["palu", "sd"] == pytest.approx(0.02)
    assert spread.loc["npo", "range"] == pytest.approx(0.02)
    # the methods' seed means: palu 0.42, graddiff 0.47, npo 0.44 -> range 0.05
    assert spread.loc["palu", "methods_range"] == pytest.approx(0.05)
    assert report.seed_spread(matched[matched["seed"] == 0]).empty


def test_seed_intervals_are_clipped_to_the_range_a_column_can_take():
    """Two seeds of forget quality 0.05 and 0.98: Student-t's interval (12.7 standard errors) runs past 0 and 1; the
    mean of values in [0, 1] cannot, so the interval stops there. An unbounded column and one seed are left alone."""
    frame = pd.DataFrame({"setting": "s", "forget_split": "f", "label": "m", "kind": "training", "x": 1.0,
                          "forget_quality": [0.05, 0.98], "forget_truth_ratio": [0.2, 3.0]})
    row = report.seed_mean(frame, ["forget_quality", "forget_truth_ratio"]).iloc[0]
    raw = stats.seed_interval(np.array([0.05, 0.98]), level=report.LEVEL)
    assert raw.low < 0 and raw.high > 1  # what the clip removes
    assert row["forget_quality"] == pytest.approx(0.515)
    assert (row["forget_quality_seed_low"], row["forget_quality_seed_high"]) == (0.0, 1.0)
    truth = stats.seed_interval(np.array([0.2, 3.0]), level=report.LEVEL)
    assert row["forget_truth_ratio_seed_low"] == 0.0 and row["forget_truth_ratio_seed_high"] == pytest.approx(truth.high)
    single = report.seed_mean(frame.head(1), ["forget_quality"]).iloc[0]
    assert math.isnan(single["forget_quality_seed_low"]) and math.isnan(single["forget_quality_seed_high"])
