"""The results table over both data settings (``palu_perta.headline``): rebuilt from the committed results it is
the committed ``figures/results.md`` / ``.csv`` and the block of ``docs/results.md``; its markdown marks the
reference models, the provisional methods and the studies still running."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from palu_perta import headline
from palu_perta.config import repo_root

ROOT = repo_root()


def needs_checkout():
    if ROOT is None or not (ROOT / "results" / "cpu").is_dir():
        pytest.skip("needs the git checkout's results/")


def test_the_committed_results_table_is_what_the_committed_results_give(tmp_path):
    """A result committed without `python -m palu_perta.headline` (or a change of the table's code) fails here."""
    needs_checkout()
    md, csv = headline.build(ROOT / "results", tmp_path, figures=ROOT / "figures")
    committed = ROOT / "figures" / "results.md"
    assert committed.is_file(), "figures/results.md is missing: run `python -m palu_perta.headline`"
    assert committed.read_text() == md.read_text(), "figures/results.md is stale: run `python -m palu_perta.headline`"
    pd.testing.assert_frame_equal(pd.read_csv(ROOT / "figures" / "results.csv"), pd.read_csv(csv), check_dtype=False,
                                  atol=1e-6)


def test_docs_results_shows_the_results_table():
    needs_checkout()
    page = (ROOT / headline.DOCS_PAGE).read_text()
    expected = headline.docs_block((ROOT / "figures" / "results.md").read_text())
    assert expected in page, "docs/results.md's results block is stale: run `python -m palu_perta.headline`"


def test_both_data_settings_are_in_the_table():
    """The headline studies are one per data setting, each with its reference models in the committed table."""
    needs_checkout()
    table = pd.read_csv(ROOT / "figures" / "results.csv")
    assert set(table["study"]) == set(headline.HEADLINE_STUDIES)
    assert set(table["setting"]) == {"synthetic", "tofu"}
    for study in headline.HEADLINE_STUDIES:
        assert {"target", "retain"} <= set(table.loc[table["study"] == study, "method"])


def test_a_table_from_loaded_studies_is_the_table_from_the_results_root():
    """Notebook 08 loads the studies once and passes them in (``loaded=``): the same table as reading the root."""
    needs_checkout()
    loaded = headline.load_studies(ROOT / "results", names=("tofu",))
    assert set(loaded) == {"tofu"} and {"cells", "items"} <= set(loaded["tofu"][0])
    from_loaded = headline.results_table(names=("tofu",), loaded=loaded)
    from_root = headline.results_table(ROOT / "results", names=("tofu",))
    pd.testing.assert_frame_equal(from_loaded, from_root)
    assert from_loaded.attrs["progress"] == from_root.attrs["progress"]


def row(**values) -> dict:
    base = {column: math.nan for column in headline.COLUMNS}
    base.update(study="cpu", setting="synthetic", forget_split="forget10", n_forget=20, seeds=0, seeds_matched=0)
    base.update(values)
    return base


def test_markdown_marks_references_provisional_methods_and_progress():
    table = pd.DataFrame([row(method="target", kind="reference", best_forget_quality=5.6e-5,
                              best_model_utility=0.46, best_model_utility_low=0.42, best_model_utility_high=0.49),
                          row(method="npo", kind="training", seeds=3, seeds_matched=3, best_forget_quality=0.88,
                              best_forget_quality_low=0.67, best_forget_quality_high=1.0),
                          row(method="tv", kind="arithmetic", seeds=1, seeds_matched=0, best_forget_quality=0.5)],
                         columns=list(headline.COLUMNS))
    table.attrs["progress"] = {"cpu": (8, 20)}
    text = headline.to_markdown(table, pd.DataFrame())
    assert "| synthetic | forget10 | 20 | target model | - | 5.6e-05 | 0.460 [0.420, 0.490] |" in text
    assert "| npo | 3 | 0.880 [0.670, 1.000] |" in text and "| 3 of 3 |" in text
    assert "| tv (provisional) | 1 | 0.500 |" in text and "| 0 of 1 | - |" in text
    assert "`cpu` 8 of 20 (the rest: `python -m palu_perta study --grid cpu`)" in text
    assert "No claim can be tested yet" in text


def test_a_study_without_results_is_left_out_and_counted(tmp_path):
    table = headline.results_table(tmp_path)
    assert table.empty and list(table.columns) == list(headline.COLUMNS)
    assert {name: done for name, (done, _) in table.attrs["progress"].items()} == {"cpu": 0, "tofu": 0}
    assert headline.load_studies(tmp_path) == {}
    assert "No headline study has results yet" in headline.to_markdown(table, pd.DataFrame())


def test_the_docs_block_is_replaced_and_a_missing_one_named():
    text = f"before\n{headline.DOCS_START}\nold\n{headline.DOCS_END}\nafter\n"
    new = headline.replace_docs_block(text, "# Title\n\nBody\n\n## Section\n")
    assert new == f"before\n{headline.DOCS_START}\nBody\n\n### Section\n{headline.DOCS_END}\nafter\n"
    with pytest.raises(ValueError, match="no results block"):
        headline.replace_docs_block("no markers", "# T\n")


def test_splice_block_replaces_from_start_through_end_and_names_a_missing_marker():
    from palu_perta.pages import splice_block

    text = "head\n<!-- a -->\nold\n<!-- /a -->\ntail <!-- /a -->\n"
    assert splice_block(text, "<!-- a -->", "<!-- /a -->", "<!-- a -->\nnew\n<!-- /a -->", where="block a") == (
        "head\n<!-- a -->\nnew\n<!-- /a -->\ntail <!-- /a -->\n")
    with pytest.raises(ValueError, match="no block a: the page lacks its start line"):
        splice_block("head\n", "<!-- a -->", "<!-- /a -->", "x", where="block a")
    with pytest.raises(ValueError, match="block a has no end line"):
        splice_block("<!-- /a -->\n<!-- a -->\nold\n", "<!-- a -->", "<!-- /a -->", "x", where="block a")
