"""expect(): a number quoted in prose fails the notebook on the cpu profile when a rerun moves it."""

from __future__ import annotations

import pytest

from palu_perta.claims import StaleClaim, expect


def test_a_number_inside_its_range_passes_and_is_returned():
    assert expect(0.42, between=(0.4, 0.45), claim="MU stays near 0.42", profile="cpu") == 0.42
    assert expect(0.4, between=(0.4, 0.45), claim="ends are inclusive", profile="cpu") == 0.4


def test_a_moved_number_names_the_sentence_to_rewrite():
    with pytest.raises(StaleClaim) as err:
        expect(0.51, between=(0.4, 0.45), claim="TV keeps MU within 0.05", profile="cpu")
    text = str(err.value)
    assert "'TV keeps MU within 0.05'" in text and "0.51" in text and "[0.4, 0.45]" in text and "cpu" in text


def test_verdicts_and_sets():
    assert expect("holds", equals="holds", claim="PALU forgets better", profile="cpu") == "holds"
    with pytest.raises(StaleClaim, match="not the stated 'holds'"):
        expect("cannot tell at this size", equals="holds", claim="PALU forgets better", profile="cpu")
    with pytest.raises(StaleClaim, match="not one of"):
        expect(3, one_of=[1, 2], claim="one or two seeds", profile="cpu")


def test_smoke_only_checks_the_cell_runs(monkeypatch):
    monkeypatch.setenv("PALU_PERTA_PROFILE", "smoke")
    assert expect(0.99, between=(0.0, 0.1), claim="a cpu number") == 0.99
    assert expect("fails", equals="holds", claim="a cpu verdict") == "fails"
    with pytest.raises(StaleClaim, match="quotes a number"):
        expect(float("nan"), between=(0.0, 1.0), claim="a number that is not one")
    monkeypatch.setenv("PALU_PERTA_PROFILE", "cpu")
    with pytest.raises(StaleClaim):
        expect(0.99, between=(0.0, 0.1), claim="a cpu number")


def test_a_claim_must_be_stated_once():
    with pytest.raises(ValueError, match="exactly one"):
        expect(1.0, claim="x", between=(0, 2), equals=1.0)
    with pytest.raises(ValueError, match="exactly one"):
        expect(1.0, claim="x")
    with pytest.raises(ValueError, match="claim="):
        expect(1.0, claim="", between=(0, 2))
    with pytest.raises(ValueError, match="low end"):
        expect(1.0, claim="x", between=(2, 0))
