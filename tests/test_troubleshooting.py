"""docs/troubleshooting.md shows what the code prints: every bad input of ``tests/bad_inputs.py`` is rerun and
must end in one ``error:`` line, exit code 2, the message the table shows, and no file left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import bad_inputs

DOC = Path(__file__).resolve().parent.parent / "docs" / "troubleshooting.md"


@pytest.mark.parametrize("case", bad_inputs.CASES, ids=lambda c: c.what)
def test_a_bad_input_is_one_line_and_leaves_nothing(case):
    outcome = bad_inputs.run(case)
    assert outcome.code == 2, outcome
    assert outcome.message.startswith("error: ") and "\n" not in outcome.message, outcome.message
    assert not outcome.left_behind, f"{case.what} left {outcome.left_behind}"


def test_the_table_shows_the_messages_the_code_prints():
    assert DOC.read_text() == bad_inputs.render(), (
        "docs/troubleshooting.md is out of date: regenerate it with `python tests/bad_inputs.py > "
        "docs/troubleshooting.md` and read the diff")
