"""The papers' claims read at matched forgetting (palu_perta.verdicts), on the hand-built study of
test_report_neighbour: every number below is computed by hand from that study's items."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from palu_perta import report, stats, store, verdicts

from .test_report_neighbour import write_study

RESAMPLES = verdicts.RESAMPLES, report.RESAMPLES  # the report's own counts (the toy fixture lowers them)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(verdicts, "RESAMPLES", 400)
        patch.setattr(report, "RESAMPLES", 100)
        tables = store.load(write_study(tmp_path_factory.mktemp("results") / "toy"))
        frame = report.points(tables)
        yield tables, frame


def _claims(*pairs, test="better"):
    return tuple(verdicts.Claim(f"{m}-{b}", "X", f"{m} over {b}", m, b, test) for m, b in pairs)


def _one(table, metric):
    rows = table[table["metric"] == metric]
    assert len(rows) == 1
    return rows.iloc[0]


# ga at matched forgetting: seed 0 halfway from epoch 1 to 2, seed 1 at 0.8 of the way; tv at 2/3 of the way from
# the target model to 1 x lambda* (one seed)
GA_NEIGHBOUR = np.mean([[0.5, 0.3, 0.7, 0.2], [0.4, 0.2, 0.6, 0.24]], axis=0)
TV_NEIGHBOUR = np.array([0.9, 0.7, 1.0, 0.5]) + 2 / 3 * (np.array([0.9, 0.9, 1.0, 0.8]) - [0.9, 0.7, 1.0, 0.5])


def test_a_method_that_keeps_more_on_every_item_holds_and_the_reverse_fails(toy):
    tables, frame = toy
    table = verdicts.claim_table(tables, frame, _claims(("tv", "ga"), ("ga", "tv")))
    forward = _one(table[table["claim"] == "tv-ga"], "neighbour_rouge")
    assert forward["difference"] == pytest.approx(TV_NEIGHBOUR.mean() - GA_NEIGHBOUR.mean())
    assert forward["low"] > 0 and forward["verdict"] == "holds (provisional: 1 seed)"  # tv has one seed
    assert (forward["items"], forward["seeds_method"], forward["seeds_baseline"]) == (4, 1, 2)
    assert (forward["seeds_method_total"], forward["seeds_baseline_total"]) == (1, 2)
    backward = _one(table[table["claim"] == "ga-tv"], "neighbour_rouge")
    assert backward["difference"] == pytest.approx(-forward["difference"])
    assert backward["verdict"] == "fails (provisional: 1 seed)"
    # with two seeds of ga the seed draw widens the interval beyond the items-only one (or leaves it equal)
    assert forward["high"] - forward["low"] >= forward["items_only_high"] - forward["items_only_low"] - 1e-9


def test_model_utility_is_recomputed_from_the_interpolated_items(toy):
    tables, frame = toy
    row = _one(verdicts.claim_table(tables, frame, _claims(("tv", "ga"))), "model_utility")
    options = {"prob_normalised": [0.5, 0.7, 0.9], "rougeL_recall": [0.5, 0.7, 0.9], "truth_ratio": [0.6] * 3}

    def utility(retain_rouge):
        columns = {"retain:prob": retain_rouge, "retain:rougeL_recall": retain_rouge, "retain:truth_ratio": [0.7] * 4}
        for split in ("real_authors", "world_facts"):
            columns.update({f"{split}:{k}": v for k, v in options.items()})
        return verdicts.kept_utility({k: np.asarray(v, float) for k, v in columns.items()})

    ga = np.mean([[0.6, 0.5, 0.7, 0.4], [0.8 - 0.32, 0.7 - 0.32, 0.9 - 0.32, 0.6 - 0.32]], axis=0)
    tv = np.array([0.9, 0.8, 1.0, 0.7])  # the target's retain items, unchanged by tv
    assert row["difference"] == pytest.approx(utility(tv) - utility(ga))
    assert row["items"] == 4 + 3 + 3 and row["verdict"] == "holds (provisional: 1 seed)"


def test_kept_utility_is_the_summarys_model_utility_and_vectorises():
    rng = np.random.default_rng(0)
    raw = {f"{split}:{name}": rng.uniform(0.05, 1.5 if name == "truth_ratio" else 1.0, size=7)
           for split, names in report.UTILITY_COLUMNS.items() for name in names}
    kept = {k: report.item_scores(v, k.split(":")[1]) for k, v in raw.items()}
    assert verdicts.kept_utility(kept) == pytest.approx(report._utility(raw))
    stacked = {k: np.stack([v, v[::-1] * 0.5]) for k, v in kept.items()}
    rows = [verdicts.kept_utility({k: v[r] for k, v in stacked.items()}) for r in range(2)]
    assert verdicts.kept_utility(stacked) == pytest.approx(rows)
    kept["retain:prob"] = np.zeros(7)  # one component at 0: utility 0, as the summary's
    assert verdicts.kept_utility(kept) == 0.0


def test_a_method_that_never_reaches_matched_forgetting_is_compared_at_the_partial_level(toy):
    """npo never comes down to the retain model's 0.4 (its lowest: 0.7); ga's seeds do (lowest 0.2 and 0.3). The
    pair is compared at 0.7, the deepest level every seed of both reaches: npo at its epoch 2, ga seed 0 at 2/3
    of the way from the target model (0.9) to its epoch 1 (0.6), seed 1 at 0.2 of the way from epoch 1 (0.8) to
    epoch 2 (0.3). Claims about a method the study never ran are left out."""
    tables, frame = toy
    assert verdicts.common_level(frame, ["npo", "ga"]) == pytest.approx(0.7)
    assert verdicts.common_level(frame, ["ga", "tv"]) == pytest.approx(0.3)
    table = verdicts.claim_table(tables, frame, _claims(("npo", "ga"), ("palu", "ga"), ("ga", "missing")))
    assert set(table["claim"]) == {"npo-ga"}
    row = _one(table, "neighbour_rouge")
    target, npo = np.array([0.9, 0.7, 1.0, 0.5]), np.array([0.8, 0.6, 1.0, 0.4])
    ga0 = target + 2 / 3 * (np.array([0.7, 0.5, 0.9, 0.3]) - target)
    ga1 = np.array([0.8, 0.6, 1.0, 0.4]) + 0.2 * (np.array([0.3, 0.1, 0.5, 0.2]) - [0.8, 0.6, 1.0, 0.4])
    assert row["difference"] == pytest.approx(npo.mean() - np.mean([ga0, ga1]))
    assert row["level"] == pytest.approx(0.7) and (row["seeds_method"], row["seeds_baseline"]) == (1, 2)
    assert row["verdict"].endswith("(partial: at forget ROUGE-L 0.700, which every seed of both reaches; the retain "
                                   "model's 0.400 not reached by npo)")
    reached = verdicts.claim_table(tables, frame, _claims(("tv", "ga")))
    assert reached["level"].tolist() == pytest.approx([0.4, 0.4])
    assert not reached["verdict"].str.contains("partial").any()


def test_a_seed_that_never_comes_below_the_target_leaves_the_pair_not_reached(toy):
    tables, frame = toy
    frame = frame.assign(forget_rouge=frame["forget_rouge"].where(frame["label"] != "npo", 0.95))
    assert verdicts.common_level(frame, ["npo", "ga"]) is None
    table = verdicts.claim_table(tables, frame, _claims(("npo", "ga")))
    assert set(table["verdict"]) == {"not reached: npo"}
    assert table["difference"].isna().all() and (table["seeds_method"] == 0).all()


def test_verdicts_with_three_seeds_are_not_provisional(toy, monkeypatch):
    tables, frame = toy
    monkeypatch.setattr(verdicts, "MIN_SEEDS", 1)
    row = _one(verdicts.claim_table(tables, frame, _claims(("tv", "ga"))), "neighbour_rouge")
    assert row["verdict"] == "holds"
    monkeypatch.setattr(verdicts, "MIN_SEEDS", 3)
    row = _one(verdicts.claim_table(tables, frame, _claims(("ga", "gd"))), "neighbour_rouge")
    assert row["verdict"].endswith("(provisional: 1 seed)")  # ga has 2 seeds, gd 1: the fewer counts


def test_competitive_claims_read_the_interval_against_the_margin():
    interval = stats.Interval
    assert verdicts.noninferiority_verdict(interval(-0.01, -0.015, 0.02), 0.02) == "holds"
    assert verdicts.noninferiority_verdict(interval(-0.05, -0.06, -0.03), 0.02) == "fails"
    assert verdicts.noninferiority_verdict(interval(-0.02, -0.04, 0.0), 0.02) == "cannot tell at this size"
    assert verdicts.noninferiority_verdict(interval(0.0, float("nan"), float("nan")), 0.02) == "cannot tell at this size"
    with pytest.raises(ValueError, match="margin"):
        verdicts.noninferiority_verdict(interval(0.0, 0.0, 0.0), -1)


def test_claims_name_labels_the_grids_declare():
    from palu_perta import study

    labels = {cell.label for grid in study.GRIDS.values() for cell in grid.cells()}
    methods = {cell.method for grid in study.GRIDS.values() for cell in grid.cells()}
    for claim in verdicts.CLAIMS:
        for name in (claim.method, claim.baseline):
            assert name in labels or name in methods, f"{claim.key}: no grid runs {name!r}"
        assert claim.test in ("better", "competitive")
    assert verdicts.PALU_FULL == "palu alpha=1 temporal=onset top_k=1 vocab=topk"


def test_markdown_states_the_interval_and_the_verdict(toy):
    tables, frame = toy
    table = verdicts.claim_table(tables, frame, _claims(("tv", "ga")))
    text = verdicts.claims_markdown(table)
    assert "bootstrap over seeds and items" in text
    row = _one(table, "neighbour_rouge")
    assert f"{row['difference']:.3f} [{row['low']:.3f}, {row['high']:.3f}]" in text
    assert "| 4 | 1 of 1 / 2 of 2 | holds (provisional: 1 seed) |" in text
    assert "No claim can be tested yet" in verdicts.claims_markdown(table.iloc[:0])


def committed_studies() -> list[str]:
    """The studies with committed results in the git checkout (``results/<name>/*.jsonl``)."""
    from palu_perta.config import repo_root

    root = repo_root()
    return store.study_names(root / "results") if root is not None else []


@pytest.mark.parametrize("name", committed_studies() or ["cpu"])
def test_the_committed_verdicts_are_what_the_committed_results_give(monkeypatch, name):
    """figures/study_<name>_verdicts.csv (and so its verdict block, in the README or docs/studies.md) is rebuilt
    from results/<name>: a result added without `python -m palu_perta.report <name>`, or a change of the reading,
    fails here."""
    from palu_perta.config import repo_root

    root = repo_root()
    if root is None or not (root / "results" / name).is_dir():
        pytest.skip("needs the git checkout's results/")
    monkeypatch.setattr(verdicts, "RESAMPLES", RESAMPLES[0])
    monkeypatch.setattr(report, "RESAMPLES", RESAMPLES[1])
    csv = root / "figures" / f"study_{name}_verdicts.csv"
    assert csv.is_file(), f"{csv.name} is missing: run `python -m palu_perta.report {name}`"
    committed = verdicts.read_table(csv)
    rebuilt = verdicts.claim_table(store.load(root / "results" / name)).round(6).reset_index(drop=True)
    assert list(committed.columns) == list(rebuilt.columns)
    assert len(committed) == len(rebuilt), (f"rerun `python -m palu_perta.report {name}` and "
                                            f"`python -m palu_perta.verdicts {name}`")
    if len(rebuilt):
        pd.testing.assert_frame_equal(committed, rebuilt, check_dtype=False, atol=1e-6)


@pytest.mark.parametrize("name", committed_studies() or ["cpu"])
def test_each_committed_studys_verdict_block_is_its_verdicts(name):
    """Every committed study's verdict block, in the README (cpu) or docs/studies.md (scope), is what
    ``python -m palu_perta.verdicts <name>`` writes from its committed verdict table (``tests/test_readme.py``
    checks the README's finding against the cpu table)."""
    from palu_perta.config import repo_root

    root = repo_root()
    csv = root / "figures" / f"study_{name}_verdicts.csv" if root is not None else None
    if csv is None or not csv.is_file():
        pytest.skip("needs the git checkout's figures/ (the test above fails when the table is missing)")
    page = verdicts.block_page(name, root)
    assert page is not None, (f"no page of {verdicts.BLOCK_PAGES} holds study {name}'s verdict block: add its two "
                              "marker lines and run `python -m palu_perta.verdicts " + name + "`")
    expected = verdicts.readme_block(name, verdicts.read_table(csv))
    assert expected in page.read_text(), (f"{page.name}'s verdicts of study {name} differ from the committed table: "
                                          f"run `python -m palu_perta.verdicts {name}`")


def test_verdicts_main_writes_the_block_where_it_is_and_names_a_missing_one(tmp_path, monkeypatch, capsys):
    """`python -m palu_perta.verdicts NAME` rewrites the block in whichever page holds it, and says which marker
    line to add when no page does."""
    from palu_perta import config

    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("# x\n")
    start = verdicts.README_START.format(name="toy")
    (tmp_path / "docs" / "studies.md").write_text(f"before\n{start}\nold\n{verdicts.README_END}\nafter\n")
    figures = tmp_path / "figures"
    figures.mkdir()
    pd.DataFrame(columns=list(verdicts.COLUMNS)).to_csv(figures / "study_toy_verdicts.csv", index=False)
    pd.DataFrame(columns=list(verdicts.COLUMNS)).to_csv(figures / "study_other_verdicts.csv", index=False)
    monkeypatch.setattr(config, "repo_root", lambda: tmp_path)
    monkeypatch.setenv("PALU_PERTA_FIGURES", str(figures))
    assert verdicts.main(["toy"]) == 0
    text = (tmp_path / "docs" / "studies.md").read_text()
    assert "old" not in text and "No claim can be tested yet on the `toy` study" in text
    assert text.startswith("before\n") and text.endswith("after\n")
    assert (tmp_path / "README.md").read_text() == "# x\n"
    assert verdicts.main(["other"]) == 2
    assert "verdicts other:" in capsys.readouterr().err


def test_find_row_returns_the_one_matching_row_or_none():
    table = pd.DataFrame({"claim": ["a", "a", "b"], "metric": ["mu", "nr", "mu"], "verdict": ["holds", "fails", "x"]})
    assert verdicts.find_row(table, claim="a", metric="nr")["verdict"] == "fails"
    assert verdicts.find_row(table, claim="c") is None
    with pytest.raises(ValueError, match="2 rows match"):
        verdicts.find_row(table, claim="a")


def test_the_partial_level_rules_account_quotes_the_committed_tofu_cell():
    """docs/design.md and the module say why the partial level exists: GradDiff's seed 0 on real TOFU ended its
    five epochs at forget ROUGE-L 0.367, against the retain model's 0.333. Both numbers are the committed cells'."""
    from palu_perta.config import repo_root

    root = repo_root()
    if root is None or not (root / "results" / "tofu" / "tofu-forget01-graddiff-s0.jsonl").is_file():
        pytest.skip("needs the git checkout's results/tofu")
    tables = store.load(root / "results" / "tofu", items=False)
    summaries = tables["summaries"]
    graddiff = summaries[(summaries["cell"] == "tofu-forget01-graddiff-s0") & (summaries["epoch"] == 5)]
    retain = summaries[summaries["cell"] == "tofu-forget01-retain"]
    assert f"{graddiff['forget_Q_A_ROUGE'].iloc[0]:.3f}" == "0.367"
    assert f"{retain['forget_Q_A_ROUGE'].iloc[0]:.3f}" == "0.333"
    design = " ".join((root / "docs" / "design.md").read_text().split())
    assert "forget ROUGE-L 0.367 against the retain model's 0.333" in design
    assert "0.367 against the retain model's 0.333" in " ".join(verdicts.__doc__.split())


def test_select_seeds_keeps_the_references_and_the_named_seeds(toy):
    """What one seed alone would have said (notebook 08 compares it with every seed's verdict)."""
    tables, _ = toy
    one = store.select_seeds(tables, [0])
    kept = one["cells"]
    assert set(kept.loc[kept["kind"] == "reference", "id"]) == set(tables["cells"].loc[tables["cells"]["kind"] ==
                                                                                       "reference", "id"])
    assert set(kept.loc[kept["kind"] != "reference", "seed"]) == {0}
    assert set(one["summaries"]["cell"]) == set(kept["id"]) and set(one["items"]["cell"]) == set(kept["id"])
    assert len(kept) < len(tables["cells"])  # ga's seed 1 is gone
    row = _one(verdicts.claim_table(one, report.points(one), _claims(("ga", "tv"))), "neighbour_rouge")
    assert row["seeds_method"] == 1
