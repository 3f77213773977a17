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


@pytest.mark.parametrize("key", sorted(k for k, e in EXERCISES.items() if e.options))
def test_a_reading_is_checked_against_the_numbers_it_is_given(key: str) -> None:
    """A letter is right for the numbers that support it and wrong, with the reason, for the others."""
    exercise = EXERCISES[key]
    for case in exercise.cases():
        right = exercise.reference(*case.args)
        assert right in exercise.options, case.description
        assert check(key, right, *case.args).ok and check(key, f"({right.upper()})", *case.args).ok
        for letter in set(exercise.options) - {right}:
            feedback = check(key, letter, *case.args)
            assert feedback.status == "wrong" and exercise.why_not[letter] in feedback.message
    assert {exercise.reference(*case.args) for case in exercise.cases()} == set(exercise.options)  # each option occurs
    assert check(key, "z", *exercise.cases()[0].args).status == "wrong"
    assert check(key, exercise.reference, *exercise.cases()[0].args).ok  # a rule: tried on the cases and the numbers
    with pytest.raises(ValueError, match="pass them after it"):
        check(key, right)


def test_a_tiny_model_answer_that_trains_its_model_cannot_move_the_reference() -> None:
    """Every call gets its own copy of the model: an answer that takes the step twice is caught, and the
    reference still passes after it (it would not if the first answer had trained the shared model)."""
    def twice(model, reference, batch, lr):
        EXERCISES["06.palu_step"].reference(model, reference, batch, lr)
        return EXERCISES["06.palu_step"].reference(model, reference, batch, lr)

    assert check("06.palu_step", twice).status == "wrong"
    assert check("06.palu_step", EXERCISES["06.palu_step"].reference).ok
    before, after = EXERCISES["06.palu_step"].reference(*_first_case_args("06.palu_step"))
    assert after < before  # the loss falls, as the exercise promises


def _first_case_args(key: str) -> tuple:
    from palu_perta.exercises import _call  # noqa: PLC0415 - the checker's own copying

    case = EXERCISES[key].cases()[0]
    return tuple(_call(lambda *args: args, case))


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
