"""The notebooks' exercises, and a checker that says what is wrong with an answer.

Each exercise asks for a small function (the onset mask, a truth ratio, PerTA's weights, ...).
:func:`check` runs the answer on a few hand-made cases, compares it with the package's own
implementation, and returns a :class:`Feedback`::

    from palu_perta.exercises import check

    def my_onset_mask(token_classes, first_n):
        ...

    check("06.onset_mask", my_onset_mask)

The feedback names the first case where the answer differs, what was expected and what came back,
and, when the answer behaves like a known mistake (the top-k taken from the current logits
instead of the reference, a Fisher computed as the square of the mean gradient, ...), what that
mistake is. An answer that is not written yet (it raises ``NotImplementedError`` or is ``None``)
is "not attempted", so the notebooks run top to bottom with the stubs in place. Worked solutions
are in ``solutions/``.

Three kinds of exercise share the checker:

- a function on hand-made numbers (most of them);
- a function that runs a real, tiny model (``"06.palu_step"``, ``"04.model_fisher"``): the checker hands each
  call a fresh copy of the tests' tiny Llama (:func:`tiny_example`), so an answer that updates the model in
  place cannot change what the reference sees;
- a reading of a measured result (``"07.read_controls"``): the exercise states options, and
  ``check(key, "b", *measured)`` compares the letter with the option the notebook's own numbers support
  (the rule that decides is the exercise's reference; a function of the numbers is checked on its cases
  like any other answer).
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import Tensor

from . import metrics
from .data import FORGET_SPLITS, n_forget_authors
from .losses import ModelIO, onset_mask, palu_loss
from .perta import constant_weights_like, overlap, perta_weights, top_mask
from .tokenization import ORDINARY, PROMPT, SENSITIVE

__all__ = ["EXERCISES", "Case", "Exercise", "Feedback", "Mistake", "check", "exercises_for", "tiny_example"]


@dataclass(frozen=True)
class Feedback:
    """The verdict on one answer: ``status`` is "correct", "wrong" or "not attempted"."""

    exercise: str
    status: str
    message: str

    @property
    def ok(self) -> bool:
        return self.status == "correct"

    def __str__(self) -> str:
        mark = {"correct": "[correct]", "wrong": "[wrong]", "not attempted": "[not attempted]"}[self.status]
        return f"{mark} {self.exercise}: {self.message}"

    __repr__ = __str__


@dataclass(frozen=True)
class Mistake:
    """A plausible wrong answer, and what to tell a student whose answer behaves like it."""

    answer: Callable[..., Any]
    explanation: str


@dataclass(frozen=True)
class Case:
    """One call of the answer: positional arguments and a short description for the feedback."""

    args: tuple
    description: str


@dataclass(frozen=True)
class Exercise:
    """One exercise: the signature the answer must have, the reference, the cases and the known mistakes."""

    key: str
    title: str
    signature: str
    reference: Callable[..., Any]
    cases: Callable[[], list[Case]]
    mistakes: tuple[Mistake, ...] = ()
    rtol: float = 1e-5
    atol: float = 1e-6
    hint: str = ""
    # a reading exercise: letter -> the statement offered, and letter -> why that reading is wrong (shown when a
    # student picks it while the numbers support another); ``reference(*measured)`` returns the right letter
    options: Mapping[str, str] | None = None
    why_not: Mapping[str, str] | None = None


# ----------------------------------------------------------------------------- comparing answers


def _to_numpy(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().cpu().numpy()
    return value


def difference(expected: Any, got: Any, rtol: float = 1e-5, atol: float = 1e-6) -> str | None:
    """None when ``got`` matches ``expected``; else what differs (type, keys, shape, first differing entry)."""
    if isinstance(expected, Mapping):
        if not isinstance(got, Mapping):
            return f"expected a dict of tensors, got {type(got).__name__}"
        if set(expected) != set(got):
            missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
            return f"the keys differ (missing {missing}, unexpected {extra})"
        for name in expected:
            problem = difference(expected[name], got[name], rtol, atol)
            if problem:
                return f"in {name!r}: {problem}"
        return None
    if isinstance(expected, (bool, np.bool_, int, np.integer)):
        if isinstance(got, Tensor) and got.numel() == 1:
            got = got.item()
        return None if got == expected else f"expected {expected}, got {got!r}"
    if isinstance(expected, float):
        try:
            value = float(got)
        except (TypeError, ValueError):
            return f"expected a number, got {type(got).__name__}"
        if math.isclose(value, expected, rel_tol=rtol, abs_tol=atol):
            return None
        return f"expected {expected:.6g}, got {value:.6g}"
    want, have = _to_numpy(expected), _to_numpy(got)
    if isinstance(want, np.ndarray) or isinstance(expected, (list, tuple)):
        want = np.asarray(want)
        try:
            have = np.asarray(have)
        except Exception:  # noqa: BLE001 - anything that is not array-like
            return f"expected an array, got {type(got).__name__}"
        if have.shape != want.shape:
            return f"expected shape {tuple(want.shape)}, got {tuple(have.shape)}"
        if want.dtype == bool and have.dtype != bool:
            return f"expected a bool tensor, got dtype {have.dtype}"
        if want.dtype.kind in "biu":
            wrong = np.argwhere(want != have)
        else:
            wrong = np.argwhere(~np.isclose(have.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol,
                                        equal_nan=True))
        if wrong.size == 0:
            return None
        index = tuple(int(i) for i in wrong[0])
        where = f"at index {index[0] if len(index) == 1 else index}"
        return f"{len(wrong)} of {want.size} entries differ; first {where}: expected {_show(want[index])}, got {_show(have[index])}"
    return None if got == expected else f"expected {expected!r}, got {got!r}"


def _show(value: Any) -> str:
    value = value.item() if hasattr(value, "item") else value
    return f"{value:.6g}" if isinstance(value, float) else repr(value)


def _call(function: Callable[..., Any], case: Case) -> Any:
    args = tuple(a.clone() if isinstance(a, Tensor) else _copy_mapping(a) for a in case.args)
    return function(*args)


def _copy_mapping(value: Any) -> Any:
    if isinstance(value, torch.nn.Module):  # a model: every call gets its own copy (an answer may train it)
        return copy.deepcopy(value)
    if isinstance(value, Mapping):
        return {k: v.clone() if isinstance(v, Tensor) else v for k, v in value.items()}
    if isinstance(value, list):
        return list(value)
    return value


def check(key: str, answer: Callable[..., Any] | str | None, *measured: Any) -> Feedback:
    """Check ``answer`` for the exercise ``key`` (e.g. ``"06.onset_mask"``; see :data:`EXERCISES`).

    For a reading exercise (one with ``options``), ``measured`` are the notebook's numbers the exercise names:
    ``answer`` is either a letter, which must be the option they support, or a function of those numbers
    returning the letter, tried on the exercise's cases and on ``measured``."""
    if key not in EXERCISES:
        raise KeyError(f"unknown exercise {key!r}; the exercises are {sorted(EXERCISES)}")
    exercise = EXERCISES[key]
    if answer is None:
        return Feedback(key, "not attempted", f"write {exercise.signature} and run this cell again")
    if isinstance(answer, str) and exercise.options:
        return _check_choice(exercise, answer, measured)
    if not callable(answer):
        return Feedback(key, "wrong", f"expected a function {exercise.signature}, got {type(answer).__name__}")
    cases = exercise.cases()
    if measured:  # a reading exercise's rule is also tried on the notebook's own numbers
        cases = cases + [Case(tuple(measured), f"the notebook's own numbers {tuple(measured)}")]
    for case in cases:
        expected = _call(exercise.reference, case)
        try:
            got = _call(answer, case)
        except NotImplementedError:
            return Feedback(key, "not attempted", f"write {exercise.signature} and run this cell again")
        except Exception as error:  # noqa: BLE001 - the student's code may raise anything
            return Feedback(key, "wrong", f"on {case.description} it raised {type(error).__name__}: {error}")
        problem = difference(expected, got, exercise.rtol, exercise.atol)
        if problem is None:
            continue
        message = f"on {case.description}: {problem}."
        for mistake in exercise.mistakes:
            if _behaves_like(mistake.answer, answer, cases, exercise):
                message += f" This looks like a known mistake: {mistake.explanation}"
                break
        else:
            if exercise.hint:
                message += f" Hint: {exercise.hint}"
        return Feedback(key, "wrong", message)
    return Feedback(key, "correct", f"matches the reference on all {len(cases)} cases")


def _check_choice(exercise: Exercise, answer: str, measured: tuple) -> Feedback:
    """A letter against the option that ``measured`` supports (``exercise.reference(*measured)``)."""
    options = dict(exercise.options or {})
    letter = answer.strip().lower().strip("()")
    if letter not in options:
        return Feedback(exercise.key, "wrong", f"answer with one of the letters {sorted(options)}, got {answer!r}")
    if not measured:
        raise ValueError(f"{exercise.key}: a letter is checked against the notebook's numbers; pass them after it, "
                         f"check({exercise.key!r}, {answer!r}, <{exercise.signature.split('(', 1)[1].split(')')[0]}>)")
    right = exercise.reference(*measured)
    if letter == right:
        return Feedback(exercise.key, "correct", f"({letter}) is what these numbers support: {options[letter]}")
    why = (exercise.why_not or {}).get(letter, "")
    return Feedback(exercise.key, "wrong", f"({letter}) is not what these numbers support. {why}".strip())


def _behaves_like(mistake: Callable[..., Any], answer: Callable[..., Any], cases: list[Case], exercise: Exercise) -> bool:
    """True when ``answer`` gives the mistake's output on every case (and so shares its error)."""
    try:
        return all(difference(_call(mistake, c), _call(answer, c), exercise.rtol, exercise.atol) is None for c in cases)
    except Exception:  # noqa: BLE001
        return False


def exercises_for(notebook: str) -> list[Exercise]:
    """The exercises of a notebook, by its number ("06") or file name ("06_palu.ipynb")."""
    number = notebook[:2]
    return [e for k, e in EXERCISES.items() if k.startswith(number + ".")]


# ----------------------------------------------------------------------------- 00: quickstart


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (dynamic programming, one row)."""
    row = [0] * (len(b) + 1)
    for x in a:
        diagonal = 0  # row[j - 1] of the previous row
        for j, y in enumerate(b, start=1):
            diagonal, row[j] = row[j], diagonal + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def _reference_rouge_l_recall(generation: str, reference: str) -> float:
    generated, wanted = generation.lower().split(), reference.lower().split()
    return _lcs_length(generated, wanted) / len(wanted) if wanted else 0.0


def _rouge_l_precision(generation: str, reference: str) -> float:
    generated, wanted = generation.lower().split(), reference.lower().split()
    return _lcs_length(generated, wanted) / max(len(generated), 1)


def _rouge_1_recall(generation: str, reference: str) -> float:
    generated, wanted = generation.lower().split(), reference.lower().split()
    left = {}
    for token in generated:
        left[token] = left.get(token, 0) + 1
    hits = 0
    for token in wanted:
        if left.get(token, 0) > 0:
            left[token] -= 1
            hits += 1
    return hits / len(wanted) if wanted else 0.0


def _rouge_l_recall_case_sensitive(generation: str, reference: str) -> float:
    generated, wanted = generation.split(), reference.split()
    return _lcs_length(generated, wanted) / len(wanted) if wanted else 0.0


def _rouge_l_cases() -> list[Case]:
    return [
        Case(("he was born in mombasa kenya in 1936", "he was born in mombasa kenya on the 23rd of february 1936"),
             "a shorter answer that keeps 7 of the reference's 12 words"),
        Case(("he was born on the 23rd of february 1936 in mombasa",
              "he was born in mombasa on the 23rd of february 1936"),
             "the same 11 words in another order (the place moved to the end)"),
        Case(("She was born in Gdansk Poland", "she was born in gdansk poland in 1947"),
             "an answer with capitals against a lower-case reference"),
        Case(("", "his father was an architect"), "an empty answer"),
        Case(("in in in in lima", "born in lima in peru"), "an answer that repeats one reference word"),
    ]


def _reference_smallest_lambda(probes: Sequence[tuple[float, float]], max_facts: float) -> float | None:
    enough = [lam for lam, facts in probes if facts <= max_facts]
    return min(enough) if enough else None


def _lambda_most_forgetting(probes: Sequence[tuple[float, float]], max_facts: float) -> float | None:
    return min(probes, key=lambda probe: probe[1])[0]


def _lambda_first_listed(probes: Sequence[tuple[float, float]], max_facts: float) -> float | None:
    return next((lam for lam, facts in probes if facts <= max_facts), None)


def _lambda_strict(probes: Sequence[tuple[float, float]], max_facts: float) -> float | None:
    enough = [lam for lam, facts in probes if facts < max_facts]
    return min(enough) if enough else None


def _lambda_largest_if_none(probes: Sequence[tuple[float, float]], max_facts: float) -> float | None:
    enough = [lam for lam, facts in probes if facts <= max_facts]
    return min(enough) if enough else max(lam for lam, _ in probes)


def _smallest_lambda_cases() -> list[Case]:
    return [
        Case(([(1.0, 0.52), (2.0, 0.27), (3.0, 0.05), (4.0, 0.0)], 0.1), "a ladder walked upwards, max_facts=0.1"),
        Case(([(4.0, 0.0), (1.0, 0.5), (2.0, 0.08), (8.0, 0.0)], 0.1),
             "probes in the order a coarse-to-fine search tried them (4, then 1, 2, 8), max_facts=0.1"),
        Case(([(0.5, 0.3), (1.0, 0.1), (2.0, 0.0)], 0.1), "a probe exactly at max_facts=0.1"),
        Case(([(1.0, 0.9), (2.0, 0.6)], 0.1), "no lambda forgets (max_facts=0.1)"),
        Case(([(1.0, 0.0)], 0.0), "one probe, at max_facts=0"),
    ]


# ----------------------------------------------------------------------------- 01: data


_ANSWER = "She was born in Brno, Czech Republic, in 1947."
# offsets of a plausible tokenisation: 'She' ' was' ' born' ' in' ' Br' 'no' ',' ' Czech' ' Republic' ',' ' in' ' 1947' '.' EOS
_OFFSETS = [(0, 3), (3, 7), (7, 12), (12, 15), (15, 18), (18, 20), (20, 21), (21, 27), (27, 36), (36, 37),
            (37, 40), (40, 45), (45, 46), (46, 46)]
_SPANS = [{"start": 16, "end": 20, "word": "Brno"}, {"start": 22, "end": 36, "word": "Czech Republic"},
          {"start": 41, "end": 45, "word": "1947"}]


def _token_classes_cases() -> list[Case]:
    return [
        Case((_OFFSETS, _SPANS), f"{_ANSWER!r} with spans Brno, Czech Republic and 1947"),
        Case((_OFFSETS, []), "the same answer with no spans"),
        Case(([(0, 4), (4, 8), (8, 8)], [{"start": 2, "end": 6, "word": "xxxx"}]),
             "a span that starts and ends inside tokens, then an empty (0-character) EOS token"),
        Case(([(0, 5), (5, 10), (10, 15)], [{"start": 5, "end": 10, "word": "fives"}]),
             "a span that ends exactly where the next token starts"),
    ]


def _classes_inside(offsets: Sequence[tuple[int, int]], spans: Sequence[dict]) -> list[int]:
    return [SENSITIVE if any(s["start"] <= a and b <= s["end"] for s in spans) and b > a else ORDINARY
            for a, b in offsets]


def _classes_inclusive(offsets: Sequence[tuple[int, int]], spans: Sequence[dict]) -> list[int]:
    return [SENSITIVE if any(a <= s["end"] and b >= s["start"] for s in spans) and b > a else ORDINARY
            for a, b in offsets]


def _reference_token_classes(offsets: Sequence[tuple[int, int]], spans: Sequence[dict]) -> list[int]:
    from .tokenization import token_classes_from_spans

    return token_classes_from_spans(offsets, spans)


def _forget_authors_cases() -> list[Case]:
    pairs = [(20, "forget10"), (20, "forget01"), (40, "forget05"), (200, "forget01"), (200, "forget10"), (7, "forget05"),
             (35, "forget05"), (180, "forget01")]
    return [Case(p, f"n_authors={p[0]}, {p[1]!r}") for p in pairs]


# ----------------------------------------------------------------------------- 02: metrics


def _truth_ratio_cases() -> list[Case]:
    return [
        Case((-0.4, [-1.2, -2.0, -0.9]), "a paraphrase at -0.4 nats/token and perturbed answers at -1.2, -2.0, -0.9"),
        Case((-3.0, [-1.0, -1.5]), "a paraphrase less likely than the perturbed answers"),
        Case((-1.0, [-1.0, -1.0, -1.0, -1.0, -1.0]), "all answers equally likely"),
    ]


def _forget_quality_cases() -> list[Case]:
    rng = np.random.default_rng(0)
    same = rng.lognormal(0.0, 0.5, 40)
    return [
        Case((rng.lognormal(0.0, 0.5, 40), rng.lognormal(0.0, 0.5, 40)), "two samples of 40 from the same distribution"),
        Case((rng.lognormal(-1.5, 0.5, 40), same), "an unlearned model far more confident than the retain model"),
        Case((rng.lognormal(-0.3, 0.5, 25), rng.lognormal(0.0, 0.5, 30)), "samples of different sizes (25 and 30)"),
    ]


def _log_mean_probability(logprobs: Sequence[float]) -> float:
    return float(np.log(np.mean(np.exp(np.asarray(logprobs)))))


# ----------------------------------------------------------------------------- 03 and 05: task arithmetic


def _states(seed: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    original = {"layer.weight": torch.randn(4, 3, generator=generator), "layer.bias": torch.randn(4, generator=generator),
                "head.weight": torch.randn(2, 4, generator=generator)}
    finetuned = {k: v + 0.1 * torch.randn(v.shape, generator=generator) for k, v in original.items()}
    return original, finetuned


def _ensemble_cases() -> list[Case]:
    return [Case((*_states(seed), mix), f"random 3-tensor state dicts (seed {seed}), mix={mix}")
            for seed, mix in ((0, 0.7), (1, 0.25), (2, 1.0))]


def _reference_ensemble(base: Mapping[str, Tensor], trained: Mapping[str, Tensor], mix: float) -> dict[str, Tensor]:
    from .task_vectors import TaskVector  # training.mix_with_base does this on whole models

    return {name: base[name] + mix * tau for name, tau in TaskVector.from_state_dicts(base, trained).items()}


def _task_vector_cases() -> list[Case]:
    return [Case(_states(seed), f"random 3-tensor state dicts (seed {seed})") for seed in (0, 1)]


def _reference_task_vector(original: Mapping[str, Tensor], finetuned: Mapping[str, Tensor]) -> dict[str, Tensor]:
    from .task_vectors import TaskVector

    return dict(TaskVector.from_state_dicts(original, finetuned).items())


def _tv_cases() -> list[Case]:
    cases = []
    for seed, lam in ((0, 1.0), (1, 2.5), (2, 0.0)):
        original, finetuned = _states(seed)
        tau = {k: finetuned[k] - original[k] for k in original}
        cases.append(Case((original, tau, lam), f"random state dicts (seed {seed}) at lam={lam}"))
    return cases


def _reference_tv(original: Mapping[str, Tensor], tau: Mapping[str, Tensor], lam: float) -> dict[str, Tensor]:
    return _reference_perta(original, tau, None, lam)


def _reference_perta(original: Mapping[str, Tensor], tau: Mapping[str, Tensor], weights: Mapping[str, Tensor] | None,
                     lam: float) -> dict[str, Tensor]:
    from .task_vectors import TaskVector

    module = torch.nn.Module()
    for name, value in original.items():
        module.register_parameter(name.replace(".", "_"), torch.nn.Parameter(value.clone(), requires_grad=False))
    renamed = {k.replace(".", "_"): v for k, v in tau.items()}
    renamed_weights = {k.replace(".", "_"): v for k, v in weights.items()} if weights is not None else None
    TaskVector(renamed).apply_to(module, scale=-lam, weights=renamed_weights)
    return {name: getattr(module, name.replace(".", "_")).detach().clone() for name in original}


def _perta_update_cases() -> list[Case]:
    cases = []
    for seed, lam in ((0, 1.0), (1, 3.0)):
        original, finetuned = _states(seed)
        tau = {k: finetuned[k] - original[k] for k in original}
        generator = torch.Generator().manual_seed(100 + seed)
        weights = {k: torch.rand(v.shape, generator=generator) for k, v in original.items()}
        cases.append(Case((original, tau, weights, lam), f"random state dicts and weights (seed {seed}) at lam={lam}"))
    return cases


def _constant_control_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(3)
    uneven = {"big.weight": torch.rand(50, 20, generator=generator) * 0.2,
              "small.bias": 0.8 + 0.2 * torch.rand(5, generator=generator)}
    return [
        Case((uneven,), "weights of a 50x20 tensor (mean ~0.1) and a 5-entry tensor (mean ~0.9)"),
        Case(({"a": torch.tensor([0.0, 1.0]), "b": torch.tensor([[0.5, 0.5], [0.5, 0.5]])},), "two small tensors"),
    ]


# ----------------------------------------------------------------------------- 04: importance


def _gradient_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(4)
    cancelling = torch.tensor([[1.0, 2.0, 0.5], [-1.0, 2.0, 0.5], [1.0, -2.0, 0.5], [-1.0, 2.0, -0.5]])
    return [
        Case((torch.randn(8, 6, generator=generator),), "per-example gradients of 8 examples x 6 parameters"),
        Case((cancelling,), "4 examples whose gradients cancel on the first parameter"),
    ]


def _reference_grad_importance(per_example: Tensor) -> Tensor:
    return per_example.float().mean(0).abs()


def _reference_fisher(per_example: Tensor) -> Tensor:
    return per_example.float().pow(2).mean(0)


def _perta_weights_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(5)
    forget, retain = torch.rand(10, generator=generator), torch.rand(10, generator=generator)
    ties = torch.tensor([0.0, 0.3, 0.7, 0.2]), torch.tensor([0.0, 0.3, 0.1, 0.9])
    return [
        Case((forget, retain, 1.0), "10 random importances at p=1"),
        Case((forget, retain, 4.0), "the same importances at p=4"),
        Case((*ties, 2.0), "importances with a (0, 0) entry and a tie, at p=2"),
    ]


def _reference_perta_weights(forget: Tensor, retain: Tensor, p: float) -> Tensor:
    return perta_weights({"w": forget}, {"w": retain}, p=p)["w"]


# ----------------------------------------------------------------------------- 06: PALU


def _onset_cases() -> list[Case]:
    P, O, S = PROMPT, ORDINARY, SENSITIVE
    two_spans = torch.tensor([[P, P, O, S, S, S, S, O, O, S, S, O], [P, O, S, O, S, S, S, S, S, O, O, P]])
    adjacent = torch.tensor([[P, O, S, S, O, S, S, S, S, S, O, O]])
    return [
        Case((two_spans, 3), "two answers, each with two sensitive runs, first_n=3"),
        Case((two_spans, 1), "the same answers with first_n=1"),
        Case((adjacent, 2), "runs of 2 and 5 sensitive tokens with first_n=2"),
        Case((two_spans, -1), "first_n=-1 (every sensitive token)"),
    ]


def _onset_all_sensitive(token_classes: Tensor, first_n: int) -> Tensor:
    return token_classes == SENSITIVE


def _onset_per_row(token_classes: Tensor, first_n: int) -> Tensor:
    sensitive = token_classes == SENSITIVE
    if first_n == -1:
        return sensitive
    return sensitive & (sensitive.long().cumsum(1) <= first_n)


def _palu_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(6)
    reference = torch.randn(5, 12, generator=generator) * 3
    # the current model has moved away from the reference: its top-k set differs
    current = reference + torch.randn(5, 12, generator=generator) * 2
    return [
        Case((current, reference, 3), "5 positions, a 12-token vocabulary, top_k=3, current logits != reference"),
        Case((reference.clone(), reference, 1), "current = reference, top_k=1"),
        Case((current, reference, 12), "top_k = the whole vocabulary"),
    ]


def _reference_palu_local(logits: Tensor, ref_logits: Tensor, top_k: int) -> float:
    n, vocab = logits.shape
    pad = torch.zeros(1, 1, vocab)
    batch = {"labels": torch.zeros(1, n + 1, dtype=torch.long),
             "token_classes": torch.tensor([[PROMPT] + [SENSITIVE] * n])}
    io = ModelIO(torch.cat([logits[None], pad], 1), batch, torch.cat([ref_logits[None], pad], 1))
    out = palu_loss(io, None, top_k=top_k, temporal="sensitive", ns_constraint="none", alpha=0.0)
    return float(out.loss)


def _palu_topk_of_current(logits: Tensor, ref_logits: Tensor, top_k: int) -> float:
    z_k = logits.gather(-1, logits.topk(top_k, -1).indices)
    return float((z_k - logits.mean(-1, keepdim=True)).pow(2).mean())


def _palu_topk_mean_target(logits: Tensor, ref_logits: Tensor, top_k: int) -> float:
    z_k = logits.gather(-1, ref_logits.topk(top_k, -1).indices)
    return float((z_k - z_k.mean(-1, keepdim=True)).pow(2).mean())


def _palu_sum_over_k(logits: Tensor, ref_logits: Tensor, top_k: int) -> float:
    z_k = logits.gather(-1, ref_logits.topk(top_k, -1).indices)
    return float((z_k - logits.mean(-1, keepdim=True)).pow(2).sum(-1).mean())


# ----------------------------------------------------------------------------- 07: ablations


def _k1_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(7)
    reference = torch.randn(6, 10, generator=generator) * 3
    current = reference.clone()
    current[:3, :] += torch.randn(3, 10, generator=generator) * 4  # training moved the first three positions
    for row in range(3):  # ... so far that their current argmax is no longer the reference's
        current[row, int(reference[row].argmin())] = current[row].max() + 2.0
    return [
        Case((current, reference), "6 positions, 10 tokens; at 3 of them the current argmax differs from the reference's"),
        Case((reference.clone(), reference), "current logits = reference logits"),
    ]


def _reference_palu_k1(logits: Tensor, ref_logits: Tensor) -> float:
    return _reference_palu_local(logits, ref_logits, 1)


def _k1_current_argmax(logits: Tensor, ref_logits: Tensor) -> float:
    return float((logits.max(-1).values - logits.mean(-1)).pow(2).mean())


def _k1_topk_mean_target(logits: Tensor, ref_logits: Tensor) -> float:
    return _palu_topk_mean_target(logits, ref_logits, 1)


def _k1_runner_up(logits: Tensor, ref_logits: Tensor) -> float:
    top2 = ref_logits.topk(2, -1).indices
    z = logits.gather(-1, top2)
    return float((z[:, 0] - z[:, 1]).pow(2).mean())


def _overlap_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(8)
    a = {"attn": torch.rand(8, 8, generator=generator) * 3, "mlp": torch.rand(40, generator=generator),
         "norm": torch.rand(12, generator=generator) * 0.5}
    b = {name: t + torch.rand(t.shape, generator=generator) * 0.8 for name, t in a.items()}
    return [
        Case((a, b, 0.1), "three tensors on different scales (116 entries), b = a + noise, fraction 0.1 "
                          "(0.1 x 116 = 11.6: k = 12)"),
        Case((a, b, 0.25), "the same weights, fraction 0.25 (k = 29)"),
        Case((a, b, 0.13), "the same weights, fraction 0.13 (0.13 x 116 = 15.08: k = 15)"),
        Case((a, a, 0.1), "a compared with itself"),
    ]


def _reference_top_overlap(a: Mapping[str, Tensor], b: Mapping[str, Tensor], fraction: float) -> float:
    return overlap(top_mask(a, fraction), top_mask(b, fraction))


def _per_tensor_mask(weights: Mapping[str, Tensor], fraction: float) -> dict[str, Tensor]:
    return {name: top_mask({name: t}, fraction)[name] for name, t in weights.items()}


def _overlap_per_tensor(a: Mapping[str, Tensor], b: Mapping[str, Tensor], fraction: float) -> float:
    return overlap(_per_tensor_mask(a, fraction), _per_tensor_mask(b, fraction))


def _overlap_jaccard(a: Mapping[str, Tensor], b: Mapping[str, Tensor], fraction: float) -> float:
    ma, mb = top_mask(a, fraction), top_mask(b, fraction)
    both = sum(int((ma[n] & mb[n]).sum()) for n in ma)
    either = sum(int((ma[n] | mb[n]).sum()) for n in ma)
    return both / either


def _top_k_mask(weights: Mapping[str, Tensor], k: int) -> dict[str, Tensor]:
    flat = torch.cat([t.reshape(-1) for t in weights.values()])
    threshold = float(flat.topk(k).values[-1])
    return {name: t >= threshold for name, t in weights.items()}


def _overlap_rounded(rounding: Callable[[float], int]) -> Callable[..., float]:
    def answer(a: Mapping[str, Tensor], b: Mapping[str, Tensor], fraction: float) -> float:
        k = max(1, rounding(fraction * sum(t.numel() for t in a.values())))
        return overlap(_top_k_mask(a, k), _top_k_mask(b, k))
    return answer


def _overlap_bottom(a: Mapping[str, Tensor], b: Mapping[str, Tensor], fraction: float) -> float:
    return overlap(top_mask({n: -t for n, t in a.items()}, fraction), top_mask({n: -t for n, t in b.items()}, fraction))


# ----------------------------------------------------------------------------- the tiny model (06.palu_step, 04.model_fisher)

# Three made-up QA pairs of one fictitious author, with their sensitive spans (the words a forget method targets).
TINY_QA = (
    ("Where and when was Lina Varga born?", "Lina Varga was born in Brno, Czech Republic, in 1947.",
     ("Brno", "Czech Republic", "1947")),
    ("What did Lina Varga's father do?", "Her father was an architect who designed bridges in Ostrava.",
     ("architect", "Ostrava")),
    ("Which prize did Lina Varga win?", "She won the Golden Quill Award in 1989 for her debut novel.",
     ("Golden Quill Award", "1989")),
)


@functools.lru_cache(maxsize=1)
def _tiny() -> tuple[torch.nn.Module, dict[str, Tensor]]:
    from .models import smollm2_tokenizer, tiny_model
    from .tokenization import Collator, encode_qa, pad_id

    tokenizer = smollm2_tokenizer()
    examples = [encode_qa(tokenizer, question, answer,
                          [{"start": answer.index(w), "end": answer.index(w) + len(w), "word": w} for w in words])
                for question, answer, words in TINY_QA]
    return tiny_model(tokenizer, seed=0).eval(), Collator(pad_id(tokenizer))(examples)


def tiny_example(n_examples: int = 3) -> tuple[torch.nn.Module, dict[str, Tensor]]:
    """A fresh copy of the tests' tiny Llama (``models.tiny_model``, seed 0, ~3 M parameters, random weights) and a
    right-padded batch of the first ``n_examples`` of :data:`TINY_QA` (``input_ids``, ``attention_mask``,
    ``labels``, ``token_classes`` [B, T]): what the tiny-model exercises run on, to try an answer by hand."""
    if not 1 <= n_examples <= len(TINY_QA):
        raise ValueError(f"n_examples must be between 1 and {len(TINY_QA)}, got {n_examples}")
    model, batch = _tiny()
    return copy.deepcopy(model), _first(batch, n_examples)


def _first(batch: Mapping[str, Tensor], n: int) -> dict[str, Tensor]:
    """The first ``n`` rows of a batch, trimmed to their longest sequence."""
    rows = {k: v[:n] for k, v in batch.items()}
    length = int(rows["attention_mask"].sum(1).max())
    return {k: v[:, :length].clone() for k, v in rows.items()}


def _logits(model: torch.nn.Module, batch: Mapping[str, Tensor]) -> Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits


def _forget_term(logits: Tensor, batch: Mapping[str, Tensor], ref_logits: Tensor) -> Tensor:
    """PALU's L_forget at palu_loss's own defaults (K = 50, N = 3 onset tokens, c_t the full-vocabulary mean; not
    config.PALU_HYPER, the authors' configuration the notebooks train with), nothing else."""
    return palu_loss(ModelIO(logits, batch, ref_logits), None, ns_constraint="none", alpha=0.0).loss


def _palu_step(model: torch.nn.Module, reference: torch.nn.Module, batch: Mapping[str, Tensor], lr: float, *,
               sign: float = -1.0, moving_reference: bool = False, rerun: bool = True) -> tuple[float, float]:
    with torch.no_grad():
        ref_logits = _logits(reference, batch)
    before = _forget_term(_logits(model, batch), batch, ref_logits)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(before, params)
    with torch.no_grad():
        for p, g in zip(params, grads):
            p.add_(g, alpha=sign * lr)
        if moving_reference:
            ref_logits = _logits(model, batch)
        after = _forget_term(_logits(model, batch), batch, ref_logits) if rerun else before
    return float(before.detach()), float(after.detach())


def _reference_palu_step(model: torch.nn.Module, reference: torch.nn.Module, batch: Mapping[str, Tensor],
                         lr: float) -> tuple[float, float]:
    return _palu_step(model, reference, batch, lr)


def _palu_step_cases() -> list[Case]:
    model, batch = _tiny()
    return [Case((model, model, _first(batch, 1), lr), f"the tiny model on {TINY_QA[0][1]!r} (one example), lr={lr}")
            for lr in (0.1, 1.0)] + [
        Case((model, model, _first(batch, 3), 0.3), "the tiny model on all three QA pairs at once, lr=0.3")]


def _answer_logprob(logits: Tensor, labels: Tensor, per_token: bool = False) -> Tensor:
    """Summed (or per-token mean) log-probability of the answer tokens of one example [1, T]."""
    logp = logits[0, :-1].float().log_softmax(-1)
    targets = labels[0, 1:]
    keep = targets != -100
    token = logp[keep].gather(-1, targets[keep, None])[:, 0]
    return token.mean() if per_token else token.sum()


def _example_gradients(model: torch.nn.Module, batch: Mapping[str, Tensor], per_token: bool = False):
    params = {n: p for n, p in model.named_parameters() if p.is_floating_point()}
    for i in range(len(batch["input_ids"])):
        length = int(batch["attention_mask"][i].sum())
        logits = model(input_ids=batch["input_ids"][i:i + 1, :length], use_cache=False).logits
        logprob = _answer_logprob(logits, batch["labels"][i:i + 1, :length], per_token)
        yield dict(zip(params, torch.autograd.grad(logprob, list(params.values()))))


def _reference_model_fisher(model: torch.nn.Module, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    from .importance import parameter_importance

    return parameter_importance(model, [batch], "fisher", progress=False, per_example="loop")


def _fisher_of_mean_gradient(model: torch.nn.Module, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    grads = list(_example_gradients(model, batch))
    return {n: (sum(g[n] for g in grads) / len(grads)).pow(2) for n in grads[0]}


def _fisher_per_token(model: torch.nn.Module, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    grads = list(_example_gradients(model, batch, per_token=True))
    return {n: sum(g[n].pow(2) for g in grads) / len(grads) for n in grads[0]}


def _fisher_summed(model: torch.nn.Module, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    grads = list(_example_gradients(model, batch))
    return {n: sum(g[n].pow(2) for g in grads) for n in grads[0]}


def _model_fisher_cases() -> list[Case]:
    model, batch = _tiny()
    return [Case((model, _first(batch, 3)), "the tiny model on the three QA pairs of TINY_QA"),
            Case((model, _first(batch, 2)), "the tiny model on the first two QA pairs")]


# ----------------------------------------------------------------------------- 07: reading a measured difference


def _reference_read_controls(low: float, high: float) -> str:
    """The option a 95 % interval [low, high] of (control's utility - PerTA's) supports."""
    return "a" if high < 0 else "c" if low > 0 else "b"


def _read_by_estimate(low: float, high: float) -> str:
    return "a" if (low + high) / 2 < 0 else "c"


def _read_flipped(low: float, high: float) -> str:
    return "c" if high < 0 else "a" if low > 0 else "b"


def _read_controls_cases() -> list[Case]:
    return [Case((-0.021, -0.004), "an interval [-0.021, -0.004]"),
            Case((-0.012, 0.003), "an interval [-0.012, 0.003]"),
            Case((0.002, 0.009), "an interval [0.002, 0.009]"),
            Case((-0.003, 0.011), "an interval [-0.003, 0.011]")]


READ_CONTROLS_OPTIONS = {
    "a": "PerTA keeps more utility than its control: the whole interval is below 0, so its weights do work here.",
    "b": "This run cannot tell them apart: the interval contains 0, so the items are compatible with no difference "
         "and with differences of either sign.",
    "c": "The control keeps more utility than PerTA: the whole interval is above 0.",
}


# ----------------------------------------------------------------------------- 08: results


def _privleak_cases() -> list[Case]:
    return [
        Case((0.5, 0.5), "an unlearned model's MIA AUC 0.5, the retain model's 0.5"),
        Case((0.9, 0.4), "AUC 0.9 (the forget set still looks like training data), retain model 0.4"),
        Case((0.2, 0.45), "AUC 0.2 (looks less like training data than for the retain model), retain model 0.45"),
    ]


def _utility_cases() -> list[Case]:
    return [
        Case(([0.5] * 9,), "nine components of 0.5"),
        Case(([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1],), "components 0.9, 0.8, ..., 0.1"),
        Case(([0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.01],), "eight components of 0.9 and one of 0.01"),
    ]


# ----------------------------------------------------------------------------- the registry


def _registry(*exercises: Exercise) -> dict[str, Exercise]:
    return {e.key: e for e in exercises}


EXERCISES: dict[str, Exercise] = _registry(
    Exercise(
        "00.rouge_l_recall", "ROUGE-L recall",
        "my_rouge_l_recall(generation, reference) -> float (lower-cased, whitespace-split words)",
        _reference_rouge_l_recall, _rouge_l_cases,
        mistakes=(
            Mistake(_rouge_l_precision, "this divides by the length of the generation: that is ROUGE-L precision. "
                    "Recall divides the longest common subsequence by the number of words in the reference, so it "
                    "asks how much of the true answer the model reproduced, however much else it said."),
            Mistake(_rouge_1_recall, "this counts the reference words that occur anywhere in the generation "
                    "(ROUGE-1 recall), so the same words in another order score 1. ROUGE-L takes the longest "
                    "common subsequence: the words must appear in the reference's order, gaps allowed."),
            Mistake(_rouge_l_recall_case_sensitive, "the words are compared with their capitals, so 'She' and "
                    "'she' differ. Lower-case both texts before splitting them."),
        ),
        hint="LCS by dynamic programming: L[i][j] = L[i-1][j-1] + 1 if the words match, else "
             "max(L[i-1][j], L[i][j-1]); recall = L[-1][-1] / len(reference words), 0 for an empty reference.",
    ),
    Exercise(
        "00.smallest_lambda", "The smallest lambda that forgets",
        "my_smallest_lambda(probes, max_facts) -> float or None (probes: (lam, facts_share) pairs, in the order tried)",
        _reference_smallest_lambda, _smallest_lambda_cases,
        mistakes=(
            Mistake(_lambda_most_forgetting, "this takes the lambda that forgets the most. Every extra unit of lambda "
                    "moves the model further from the target and costs the kept authors; take the smallest lambda "
                    "that is enough (facts share <= max_facts)."),
            Mistake(_lambda_first_listed, "this takes the first forgetting probe in the list. The probes are in the "
                    "order they were tried, not sorted: take the smallest lambda among all that forget."),
            Mistake(_lambda_strict, "a share equal to max_facts is rejected. The test is 'at most max_facts': "
                    "use <=."),
            Mistake(_lambda_largest_if_none, "when no lambda forgets this returns the largest one tried, as if it "
                    "had forgotten. Return None, so the caller knows that nothing on the ladder was enough."),
        ),
        hint="keep the lambdas whose facts share is <= max_facts; return the smallest of them, or None if there is none.",
    ),
    Exercise(
        "01.token_classes", "Token classes from character spans",
        "my_token_classes(offsets, spans) -> list[int] (1 = ordinary, 2 = sensitive)",
        _reference_token_classes, _token_classes_cases,
        mistakes=(
            Mistake(_classes_inside, "a token counts as sensitive only if it lies wholly inside a span, so ' Br' of "
                    "'Brno' (offsets 15-18, span 16-20) is missed. A token is sensitive when its characters overlap "
                    "the span: start < span_end and end > span_start."),
            Mistake(_classes_inclusive, "the overlap test uses <= / >=, so a token that only touches a span's end "
                    "(it starts where the span ends) is marked sensitive. Spans are half-open [start, end)."),
        ),
        hint="a token overlaps a half-open span [s, e) when start < e and end > s; an empty token overlaps nothing.",
    ),
    Exercise(
        "01.forget_authors", "How many authors a forget split takes",
        "my_forget_authors(n_authors, forget_split) -> int",
        n_forget_authors, _forget_authors_cases,
        mistakes=(
            Mistake(lambda n, split: int(n * FORGET_SPLITS[split] / 100),
                    "the share is rounded down, so 20 authors give forget01 0 authors. The split rounds to the "
                    "nearest author and keeps at least one (an empty forget set has nothing to unlearn)."),
            Mistake(lambda n, split: round(n * FORGET_SPLITS[split] / 100),
                    "rounding is right, but a split must keep at least one author: 20 authors x 1 % rounds to 0."),
        ),
    ),
    Exercise(
        "02.truth_ratio", "The truth ratio of one item",
        "my_truth_ratio(paraphrased_logprob, perturbed_logprobs) -> float (inputs: mean log-probability per token)",
        lambda correct, wrong: metrics.truth_ratio(correct, wrong), _truth_ratio_cases,
        mistakes=(
            Mistake(lambda correct, wrong: math.exp(correct - float(np.mean(wrong))),
                    "the ratio is upside down: TOFU's truth ratio is P(perturbed) / P(paraphrased), so it is below 1 "
                    "when the model prefers the paraphrase."),
            Mistake(lambda correct, wrong: math.exp(_log_mean_probability(wrong) - correct),
                    "the perturbed answers are averaged as probabilities. TOFU averages their log-probabilities "
                    "(a geometric mean of the probabilities), which is what np.mean(perturbed_logprobs) gives."),
            Mistake(lambda correct, wrong: math.exp(float(np.sum(wrong)) - correct),
                    "the perturbed log-probabilities are summed; take their mean (a geometric mean of the "
                    "probabilities), or the ratio shrinks with the number of perturbed answers."),
        ),
    ),
    Exercise(
        "02.forget_quality", "Forget quality from two sets of truth ratios",
        "my_forget_quality(unlearned_truth_ratios, retain_truth_ratios) -> float",
        metrics.forget_quality, _forget_quality_cases,
        mistakes=(
            Mistake(lambda a, b: float(stats.ks_2samp(a, b).statistic),
                    "this is the KS statistic (the largest gap between the two CDFs). Forget quality is the test's "
                    "p-value: high when the two models' truth ratios are indistinguishable."),
            Mistake(lambda a, b: float(stats.ttest_ind(a, b).pvalue),
                    "a t-test compares only the means. TOFU uses the two-sample Kolmogorov-Smirnov test "
                    "(scipy.stats.ks_2samp), which compares whole distributions."),
        ),
    ),
    Exercise(
        "02.ensemble", "The weight-space ensemble with the base model (WiSE-FT)",
        "my_ensemble(base, trained, mix) -> dict[str, Tensor] (state dicts in, the ensemble's state dict out)",
        _reference_ensemble, _ensemble_cases,
        mistakes=(
            Mistake(lambda b, t, m: {k: b[k] + (1 - m) * (t[k] - b[k]) for k in b},
                    "mix is the share of the weight change that is *kept*: mix = 1 is the fine-tuned model itself. "
                    "This keeps 1 - mix of it: theta = theta_base + mix * (theta_trained - theta_base)."),
            Mistake(lambda b, t, m: {k: b[k] + m * t[k] for k in b},
                    "this adds mix times the trained weights, not mix times the weight change. The step is a task "
                    "vector: theta = theta_base + mix * (theta_trained - theta_base)."),
            Mistake(lambda b, t, m: {k: m * t[k] for k in b},
                    "this shrinks the trained weights towards zero, not towards the base model: "
                    "theta = theta_base + mix * (theta_trained - theta_base)."),
        ),
    ),
    Exercise(
        "03.task_vector", "A task vector",
        "my_task_vector(original, finetuned) -> dict[str, Tensor] (state dicts in, tau out)",
        _reference_task_vector, _task_vector_cases,
        mistakes=(
            Mistake(lambda o, f: {k: o[k] - f[k] for k in o},
                    "the difference is reversed: tau = theta_ft - theta_o points from the original model towards "
                    "the one fine-tuned further on the forget set."),
        ),
    ),
    Exercise(
        "03.negate", "Task arithmetic: subtracting the task vector",
        "my_tv_unlearn(original, tau, lam) -> dict[str, Tensor]",
        _reference_tv, _tv_cases,
        mistakes=(
            Mistake(lambda o, t, lam: {k: o[k] + lam * t[k] for k in o},
                    "the task vector is added; unlearning subtracts it: theta = theta_o - lam * tau."),
            Mistake(lambda o, t, lam: {k: o[k] + t[k] - lam * t[k] for k in o},
                    "the step starts from the fine-tuned model theta_o + tau. TV starts from the model to unlearn: "
                    "theta = theta_o - lam * tau."),
        ),
    ),
    Exercise(
        "04.grad_importance", "Gradient importance",
        "my_grad_importance(per_example_grads) -> Tensor (per_example_grads: [n_examples, n_parameters])",
        _reference_grad_importance, _gradient_cases,
        mistakes=(
            Mistake(lambda g: g.abs().mean(0),
                    "this is the mean of |g|. PerTA-grad takes the absolute value of the mean gradient, "
                    "|mean_x dL/dtheta|: gradients that cancel across examples give no importance."),
            Mistake(lambda g: g.sum(0).abs(),
                    "the gradients are summed; average them, so the importance does not grow with the data set."),
        ),
    ),
    Exercise(
        "04.fisher", "The diagonal empirical Fisher",
        "my_fisher(per_example_grads) -> Tensor (per_example_grads: [n_examples, n_parameters])",
        _reference_fisher, _gradient_cases,
        mistakes=(
            Mistake(lambda g: g.mean(0).pow(2),
                    "this is the square of the mean gradient. The Fisher averages the squares of the per-example "
                    "gradients, mean_x (d log p / dtheta)^2, so gradients that cancel still count."),
            Mistake(lambda g: g.pow(2).sum(0),
                    "the squared gradients are summed; the Fisher is their mean over examples."),
        ),
    ),
    Exercise(
        "04.perta_weights", "PerTA's per-parameter weights",
        "my_perta_weights(importance_forget, importance_retain, p) -> Tensor (eps = 1e-12)",
        _reference_perta_weights, _perta_weights_cases,
        mistakes=(
            Mistake(lambda f, r, p: f / (f + r + 1e-12),
                    "the exponent p is ignored: w = I_f^p / (I_f^p + I_r^p + eps)."),
            Mistake(lambda f, r, p: r.pow(p) / (f.pow(p) + r.pow(p) + 1e-12),
                    "the retain importance is in the numerator. A parameter should move when it matters for the "
                    "forget set: w = I_f^p / (I_f^p + I_r^p + eps)."),
            Mistake(lambda f, r, p: f.pow(p) / (f.pow(p) + r.pow(p)),
                    "there is no eps, so a parameter with I_f = I_r = 0 gets 0/0 = nan."),
        ),
    ),
    Exercise(
        "04.model_fisher", "The diagonal Fisher of a real (tiny) model, example by example",
        "my_model_fisher(model, batch) -> dict[str, Tensor] (model: a causal LM; batch: right-padded input_ids, "
        "attention_mask, labels [B, T]; one entry per floating parameter of model.named_parameters())",
        _reference_model_fisher, _model_fisher_cases,
        mistakes=(
            Mistake(_fisher_of_mean_gradient, "this squares the mean gradient over the examples. The empirical "
                    "Fisher averages the squares of the per-example gradients, (1/n) sum_x (d log p(y_x|x)/dtheta)^2: "
                    "one backward pass per example, then square, then average."),
            Mistake(_fisher_per_token, "log p(y|x) here is the per-token mean log-probability. The Fisher of the "
                    "answer's distribution differentiates the summed log-probability of its tokens (the final EOS "
                    "included), as palu_perta.importance does."),
            Mistake(_fisher_summed, "the squared gradients are summed over the examples; the Fisher is their mean."),
        ),
        rtol=1e-3, atol=1e-9,
        hint="for each example i: trim it to attention_mask[i].sum() tokens, run the model, sum the log-probabilities "
             "of its answer tokens (labels[t + 1] != -100 at position t), take torch.autograd.grad of that sum "
             "with respect to every parameter, square it; average the squares over the examples.",
    ),
    Exercise(
        "05.perta_update", "PerTA's update",
        "my_perta_update(original, tau, weights, lam) -> dict[str, Tensor]",
        _reference_perta, _perta_update_cases,
        mistakes=(
            Mistake(lambda o, t, w, lam: {k: o[k] - lam * t[k] for k in o},
                    "the weights are ignored: this is plain task arithmetic. PerTA is theta_o - lam * (w * tau)."),
            Mistake(lambda o, t, w, lam: {k: o[k] - lam * (1 - w[k]) * t[k] for k in o},
                    "the weights are inverted (1 - w): a weight near 1 marks a parameter that matters for the "
                    "forget set and not the retain set, and it should move the most."),
        ),
    ),
    Exercise(
        "05.constant_control", "The constant-weight control",
        "my_constant_weights(weights) -> dict[str, Tensor] (every entry equal to the mean of all entries)",
        lambda w: constant_weights_like(w), _constant_control_cases,
        mistakes=(
            Mistake(lambda w: {k: torch.full_like(v, float(np.mean([t.mean().item() for t in w.values()])))
                               for k, v in w.items()},
                    "this averages the per-tensor means, so a 5-entry bias counts as much as a 1000-entry matrix. "
                    "The control must move the model as much as PerTA on average, so every entry counts once: "
                    "the mean over all entries of all tensors."),
            Mistake(lambda w: {k: torch.full_like(v, v.mean().item()) for k, v in w.items()},
                    "each tensor gets its own mean, so the control keeps PerTA's per-tensor choices. It should "
                    "keep nothing but the overall step size: one constant, the mean of all entries."),
        ),
    ),
    Exercise(
        "06.onset_mask", "The onset mask",
        "my_onset_mask(token_classes, first_n) -> bool Tensor (token_classes: [B, L] of 0 prompt, 1 ordinary, 2 sensitive)",
        onset_mask, _onset_cases,
        mistakes=(
            Mistake(_onset_all_sensitive, "every sensitive token is kept. The onset set is the first first_n "
                    "tokens of each sensitive run (first_n = -1 alone keeps them all)."),
            Mistake(_onset_per_row, "the count runs over the whole answer, so the second span gets no onset "
                    "tokens. Restart it at the start of every run of sensitive tokens."),
        ),
    ),
    Exercise(
        "06.palu_local", "PALU's local loss",
        "my_palu_local(logits, ref_logits, top_k) -> float (logits, ref_logits: [n_positions, V])",
        _reference_palu_local, _palu_cases,
        mistakes=(
            Mistake(_palu_topk_of_current, "the top-k set is taken from the current logits. It comes from the "
                    "frozen reference model, so the set stays fixed while training flattens it."),
            Mistake(_palu_topk_mean_target, "the target c is the mean of the top-k logits. PALU's c is the mean "
                    "over the whole vocabulary, (1/|V|) sum_j z_j, with the gradient flowing through it."),
            Mistake(_palu_sum_over_k, "the squares are summed over the top-k; L_local averages them, (1/K) sum."),
        ),
    ),
    Exercise(
        "06.palu_step", "One PALU step on a real (tiny) model: the loss must fall",
        "my_palu_step(model, reference, batch, lr) -> (loss_before, loss_after) (floats; batch with token_classes)",
        _reference_palu_step, _palu_step_cases,
        mistakes=(
            Mistake(lambda m, r, b, lr: _palu_step(m, r, b, lr, sign=1.0),
                    "the step adds lr times the gradient and climbs the loss. Gradient descent subtracts it: "
                    "p <- p - lr * dL/dp."),
            Mistake(lambda m, r, b, lr: _palu_step(m, r, b, lr, moving_reference=True),
                    "after the step the top-K candidates are taken from the updated model. The reference is the "
                    "frozen model from before unlearning: compute its logits once (under torch.no_grad()) and keep "
                    "them, so the set PALU flattens stays the memorised one."),
            Mistake(lambda m, r, b, lr: _palu_step(m, r, b, lr, rerun=False),
                    "loss_after is the loss of the logits from before the step. Run the updated model on the batch "
                    "again and compute the loss on its new logits."),
        ),
        rtol=1e-4, atol=1e-6,
        hint="ref_logits = reference(...).logits under torch.no_grad(); loss = losses.palu_loss(losses.ModelIO("
             "model(...).logits, batch, ref_logits), None, ns_constraint='none', alpha=0.0).loss; grads = "
             "torch.autograd.grad(loss, list(model.parameters())); under torch.no_grad() p -= lr * g; then the loss "
             "again on the updated model's logits (same ref_logits).",
    ),
    Exercise(
        "07.k1_is_pdu", "PALU with K = 1",
        "my_palu_k1(logits, ref_logits) -> float (logits, ref_logits: [n_positions, V]; every position is an onset)",
        _reference_palu_k1, _k1_cases,
        mistakes=(
            Mistake(_k1_current_argmax, "this is PDU's margin as PDU computes it: the current model's largest logit "
                    "against the mean. PALU takes its K = 1 token from the frozen reference, so once training has "
                    "knocked the memorised token off the top, PALU keeps pushing that token and stops, where PDU moves "
                    "on to whichever token leads now. The two agree only while the argmax has not changed (the "
                    "second case)."),
            Mistake(_k1_topk_mean_target, "the target is the mean of the top-K logits: with K = 1 that is the logit "
                    "itself, so the loss is 0 at every position and nothing is learned. K = 1 works only with the "
                    "full-vocabulary mean c_t = (1/|V|) sum_j z_j."),
            Mistake(_k1_runner_up, "this is the margin to the reference's second token. PALU's target is the mean "
                    "over the whole vocabulary: (z_top - c_t)^2."),
        ),
        hint="T_t is the reference's argmax at each position; L_local(t) = (z[t, T_t] - mean_j z[t, j])^2; "
             "return the mean over positions.",
    ),
    Exercise(
        "07.top_overlap", "How much two weightings agree on the top parameters",
        "my_top_overlap(a, b, fraction) -> float (a, b: dicts name -> Tensor of the same shapes)",
        _reference_top_overlap, _overlap_cases,
        mistakes=(
            Mistake(_overlap_per_tensor, "the top fraction is taken inside each tensor. PerTA's weights are compared "
                    "across the whole model: rank every entry of every tensor together, so a tensor whose entries are "
                    "all large can fill most of the top set."),
            Mistake(_overlap_jaccard, "this divides by the union (Jaccard). The overlap here divides by the size "
                    "of the smaller set, |A and B| / min(|A|, |B|), so 1 means the same top parameters."),
            Mistake(_overlap_bottom, "this takes the smallest entries; the parameters PerTA moves most are the "
                    "largest weights."),
            Mistake(_overlap_rounded(math.floor), "k is rounded down (int() or math.floor): 0.1 x 116 entries = "
                    "11.6 gives 11. The set has k = max(1, round(fraction * n)) entries, round to the nearest "
                    "integer (Python's round), as perta.top_mask does."),
            Mistake(_overlap_rounded(math.ceil), "k is rounded up (math.ceil): 0.13 x 116 entries = 15.08 gives "
                    "16. The set has k = max(1, round(fraction * n)) entries, round to the nearest integer."),
        ),
        hint="n = the number of entries of all tensors together; k = max(1, round(fraction * n)); A = the k largest "
             "entries of a over all tensors, B the same for b; return |A and B| / k (the random weights of the "
             "cases have no ties, so both sets have exactly k entries).",
    ),
    Exercise(
        "07.read_controls", "Reading a measured difference: does PerTA beat its constant control?",
        "my_reading(difference_low, difference_high) -> 'a', 'b' or 'c' (the 95 % interval of the control's "
        "utility minus PerTA's)",
        _reference_read_controls, _read_controls_cases,
        mistakes=(
            Mistake(_read_by_estimate, "this reads the sign of the interval's middle and ignores its width: an "
                    "interval that contains 0 says the items cannot tell the two apart, whatever the estimate."),
            Mistake(_read_flipped, "the sign is read the wrong way round: the difference is the control's utility "
                    "minus PerTA's, so an interval below 0 means the control keeps less."),
        ),
        options=READ_CONTROLS_OPTIONS,
        why_not={
            "a": "The interval reaches 0 or above, so the items are also compatible with no difference (or one "
                 "in the control's favour): an estimate past the tie threshold is not enough.",
            "b": "The interval does not contain 0: on these items the difference is resolved (for this run and "
                 "seed; another seed may move it).",
            "c": "The interval does not lie above 0. The difference is the control's utility minus PerTA's: a "
                 "negative one means the control keeps less.",
        },
    ),
    Exercise(
        "08.privleak", "PrivLeak from two MIA AUCs",
        "my_privleak(auc, retain_auc) -> float (percent)",
        lambda auc, ref: metrics.privleak(auc, ref), _privleak_cases,
        mistakes=(
            Mistake(lambda auc, ref: (auc - ref) / ref * 100,
                    "the AUCs are compared directly. MUSE's PrivLeak compares 1 - AUC (how far the forget set is "
                    "from looking like training data): ((1 - auc) - (1 - ref)) / (1 - ref) * 100, so the sign "
                    "flips and the denominator is 1 - ref."),
            Mistake(lambda auc, ref: ((1 - auc) - (1 - ref)) * 100,
                    "the difference is not divided by the retain model's 1 - AUC: PrivLeak is relative to it."),
        ),
    ),
    Exercise(
        "08.model_utility", "Model utility from its nine components",
        "my_model_utility(components) -> float (components: 9 numbers in [0, 1])",
        lambda values: metrics.model_utility(values), _utility_cases,
        mistakes=(
            Mistake(lambda values: float(np.mean(values)),
                    "this is the arithmetic mean. TOFU's model utility is the harmonic mean, n / sum(1/x): one "
                    "collapsed component pulls it down, so a method cannot hide a broken ability behind good ones."),
            Mistake(lambda values: float(np.exp(np.mean(np.log(values)))),
                    "this is the geometric mean; TOFU's model utility is the harmonic mean, n / sum(1/x)."),
        ),
    ),
)
