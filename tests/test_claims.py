"""expect(): a number quoted in prose that a cpu rerun moves stops the maintainers' run (strict) and warns
a student's (the default)."""

from __future__ import annotations

import pytest

import warnings

from palu_perta.claims import StaleClaim, StaleClaimWarning, claims_mode, expect


@pytest.fixture(autouse=True)
def strict(monkeypatch):
    """The maintainers' mode: a stale claim raises (each test that wants the default unsets it)."""
    monkeypatch.setenv("PALU_PERTA_CLAIMS", "strict")


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


def test_by_default_a_stale_claim_warns_and_the_notebook_runs_on(monkeypatch):
    """A student's machine (another CPU or thread count) moves a fine-tune's last digits: the cell warns with
    the sentence, the value and the range, and returns the value instead of stopping the notebook."""
    monkeypatch.delenv("PALU_PERTA_CLAIMS")
    assert claims_mode() == "warn"
    with pytest.warns(StaleClaimWarning) as caught:
        assert expect(0.51, between=(0.4, 0.45), claim="TV keeps MU within 0.05", profile="cpu") == 0.51
    text = str(caught[0].message)
    assert "'TV keeps MU within 0.05'" in text and "0.51" in text and "[0.4, 0.45]" in text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert expect(0.42, between=(0.4, 0.45), claim="inside: silent", profile="cpu") == 0.42
    with pytest.raises(StaleClaim, match="quotes a number"):  # a computation that failed is not a moved number
        expect(float("nan"), between=(0.0, 1.0), claim="x", profile="cpu")
    monkeypatch.setenv("PALU_PERTA_CLAIMS", "loud")
    with pytest.raises(ValueError, match="PALU_PERTA_CLAIMS='loud'"):
        expect(0.51, between=(0.4, 0.45), claim="x", profile="cpu")


def test_summarize_checks_counts_the_checks_since_the_last_report_and_names_stale_ones(monkeypatch, capsys):
    from palu_perta.claims import summarize_checks

    def reported(profile):
        assert summarize_checks(profile) is None  # a notebook cell ending with it shows the line once
        return capsys.readouterr().out.strip()

    reported("cpu")  # start from a clean count, whatever ran before in this process
    monkeypatch.setenv("PALU_PERTA_CLAIMS", "warn")
    expect(0.42, between=(0.4, 0.45), claim="MU stays near 0.42", profile="cpu")
    expect("holds", equals="holds", claim="PALU forgets better", profile="cpu")
    assert reported("cpu") == "the sentences above match these results (2 checked)"
    with pytest.warns(StaleClaimWarning):
        expect(0.51, between=(0.4, 0.45), claim="TV keeps MU within 0.05", profile="cpu")
    expect(0.42, between=(0.4, 0.45), claim="MU stays near 0.42", profile="cpu")
    line = reported("cpu")
    assert line.startswith("1 of the 2 sentences checked above do not match this run")
    assert "the sentences above match" not in line  # the line that used to print after a stale claim
    expect(0.9, between=(0.4, 0.45), claim="a smoke number means nothing", profile="smoke")
    assert reported("smoke").startswith("no sentence checked on the smoke profile")
