"""The exercise checker: it accepts the shipped solutions, rejects each known mistake with its
explanation, and every exercise is asked in a notebook and solved in ``solutions/``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from palu_perta.exercises import EXERCISES, check, difference, exercises_for

ROOT = Path(__file__).resolve().parent.parent
MISTAKES = [(key, i) for key, exercise in EXERCISES.items() for i in range(len(exercise.mistakes))]


def _code(notebook: Path) -> str:
    cells = json.loads(notebook.read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def _checked_keys(folder: str) -> dict[str, set[str]]:
    return {path.name: set(re.findall(r'check\("([0-9]{2}\.[a-z0-9_]+)"', _code(path)))
            for path in sorted((ROOT / folder).glob("*.ipynb"))}


def test_every_exercise_has_at_least_one_mistake_to_reject() -> None:
    assert EXERCISES
    assert all(exercise.mistakes for exercise in EXERCISES.values())


@pytest.mark.parametrize("key", sorted(EXERCISES))
def test_reference_is_accepted(key: str) -> None:
    assert check(key, EXERCISES[key].reference).ok


@pytest.mark.parametrize("key,index", MISTAKES)
def test_known_mistake_is_rejected_with_its_explanation(key: str, index: int) -> None:
    mistake = EXERCISES[key].mistakes[index]
    feedback = check(key, mistake.answer)
    assert feedback.status == "wrong"
    assert mistake.explanation in feedback.message
    assert "expected" in feedback.message  # it also shows the case and the values


def test_unknown_wrong_answer_gets_the_case_and_the_values() -> None:
    feedback = check("06.onset_mask", lambda classes, first_n: torch.zeros_like(classes, dtype=torch.bool))
    assert feedback.status == "wrong"
    assert "first_n=3" in feedback.message and "expected True, got False" in feedback.message
    assert "known mistake" not in feedback.message


@pytest.mark.parametrize("answer", [None, "stub"])
def test_unwritten_answer_is_not_attempted(answer: object) -> None:
    def stub(*args: object) -> None:
        raise NotImplementedError

    feedback = check("04.fisher", stub if answer == "stub" else None)
    assert feedback.status == "not attempted" and not feedback.ok
    assert "my_fisher(per_example_grads)" in feedback.message


def test_answer_that_raises_is_wrong_and_says_what_it_raised() -> None:
    feedback = check("02.truth_ratio", lambda correct, wrong: correct / 0)
    assert feedback.status == "wrong" and "ZeroDivisionError" in feedback.message


def test_answer_cannot_change_the_cases_it_is_given() -> None:
    def mutating(classes: torch.Tensor, first_n: int) -> torch.Tensor:
        classes.zero_()
        return classes.bool()

    assert not check("06.onset_mask", mutating).ok
    assert check("06.onset_mask", EXERCISES["06.onset_mask"].reference).ok


def test_unknown_exercise_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="06.onset_mask"):
        check("06.onset", lambda: None)


def test_difference_names_shape_keys_and_first_entry() -> None:
    assert "shape" in difference(torch.zeros(2, 3), torch.zeros(3, 2))
    assert "missing ['b']" in difference({"a": torch.zeros(1), "b": torch.zeros(1)}, {"a": torch.zeros(1)})
    assert "index 1" in difference(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.5]))
    assert difference(0.5, 0.5 + 1e-9) is None
    assert "bool" in difference(torch.tensor([True]), torch.tensor([1]))


def test_every_exercise_is_asked_in_its_notebook_and_solved_in_solutions() -> None:
    asked = _checked_keys("notebooks")
    solved = _checked_keys("solutions")
    for key in EXERCISES:
        number = key[:2]
        assert any(name.startswith(number) and key in keys for name, keys in asked.items()), f"{key} is not in a notebook"
        assert any(name.startswith(number) and key in keys for name, keys in solved.items()), f"{key} has no solution"
    assert all(exercises_for(name) for name in solved), "a solutions notebook checks no exercise"


@pytest.mark.parametrize("notebook", sorted(p.name for p in (ROOT / "solutions").glob("*.ipynb")))
def test_shipped_solutions_are_accepted(notebook: str) -> None:
    """Run the solutions notebook's code (no kernel; its cells need no model) and collect each check."""
    namespace: dict = {}
    exec(compile(_code(ROOT / "solutions" / notebook), notebook, "exec"), namespace)  # noqa: S102 - our own file
    calls = dict(re.findall(r'check\("([0-9]{2}\.[a-z0-9_]+)",\s*(\w+)\)', _code(ROOT / "solutions" / notebook)))
    verdicts = {key: check(key, namespace[name]) for key, name in calls.items()}
    assert set(verdicts) == {e.key for e in exercises_for(notebook)}
    assert all(v.ok for v in verdicts.values()), [str(v) for v in verdicts.values() if not v.ok]
