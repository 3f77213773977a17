"""The results table's helpers: the grid point it reports, and the files it writes."""

from __future__ import annotations

import pandas as pd

from palu_perta import results
from palu_perta.config import get_profile
from palu_perta.results import best_on_grid, distinct_splits, save_table, to_markdown


def test_best_on_grid_takes_the_highest_forget_quality_then_utility():
    rows = [{"lam": 1, "forget_quality": 0.2, "model_utility": 0.5},
            {"lam": 2, "forget_quality": 0.9, "model_utility": 0.3},
            {"lam": 4, "forget_quality": 0.9, "model_utility": 0.4}]
    assert best_on_grid(rows)["lam"] == 4


def test_the_setting_names_palus_hyperparameters_numbers_and_words_alike():
    from palu_perta.config import PALU_HYPER

    assert results.hyper_text({"top_k": 50, "first_n": 3, "alpha": 1.0}) == "top_k 50, first_n 3, alpha 1"
    assert results.hyper_text(PALU_HYPER) == "top_k 1, temporal sensitive, alpha 1"  # a word: no number format


def test_markdown_formats_small_forget_quality_and_missing_values():
    table = pd.DataFrame({"FQ": [1.3e-6, 0.832], "MU": [0.344, None], "PrivLeak": [-100.0, 9.64]},
                         index=pd.Index(["target", "TV"], name="model"))
    text = to_markdown(table)
    assert text.splitlines()[0] == "| model | FQ | MU | PrivLeak |"
    assert "| target | 1.3e-06 | 0.344 | -100.0 |" in text
    assert "| TV | 0.832 | - | 9.6 |" in text


def test_save_table_writes_csv_and_markdown_beside_the_profile_figures(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "figure_path", lambda name, profile: tmp_path / profile / f"{name}.png")
    (tmp_path / "smoke").mkdir()
    table = pd.DataFrame({"FQ": [0.5]}, index=pd.Index(["GA"], name="model"))
    csv_path, md_path = save_table(table, "smoke")
    assert csv_path == tmp_path / "smoke" / "single_runs.csv" and md_path.suffix == ".md"
    assert pd.read_csv(csv_path, index_col=0).loc["GA", "FQ"] == 0.5
    assert "| GA | 0.500 |" in md_path.read_text()
    assert not [p for p in (tmp_path / "smoke").iterdir() if p.name.startswith(".")]  # no temporary left


def test_splits_that_select_the_same_forget_set_are_grouped():
    profile = get_profile("cpu")  # 20 authors: forget01 and forget05 are one author, forget10 two
    assert distinct_splits(profile, ["forget01", "forget05", "forget10"]) == [["forget01", "forget05"], ["forget10"]]
    assert distinct_splits(profile, ["forget10", "forget10"]) == [["forget10"]]
