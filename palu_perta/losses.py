"""Unlearning objectives: PALU and the baselines (docs/design.md, "PALU" and "Baselines").

Design
------
Every objective is one plain function with the same call shape, so a trainer runs them all alike::

    out = LOSSES[name].fn(forget, retain, **hyper)    # -> LossOutput(loss, terms)
    out.loss.backward(); log(out.terms)

``forget`` and ``retain`` are :class:`ModelIO` records: the trainable model's logits on a batch, the
batch itself, and, for methods that compare against a frozen reference model, that model's logits on
the same batch (computed under ``torch.no_grad()``). ``retain`` may be ``None`` when the method has no
retain term (or its weight ``alpha`` is 0). The :data:`LOSSES` registry says what each method needs: a
reference model, a retain batch, refusal ("I don't know") answers (IdkDPO takes them as ``idk=ModelIO``),
and whether the reference logits of the retain batch are read (``reference_on_retain``; none of the losses
here reads them, so a trainer leaves ``retain.ref_logits`` None and saves that forward).

A batch is a dict of right-padded tensors: ``input_ids``, ``attention_mask``, ``labels`` (-100 on prompt
and padding) and ``token_classes`` (:data:`PROMPT`, :data:`ORDINARY`, :data:`SENSITIVE`), all [B, T] and
aligned with ``input_ids``. The losses do the shift: logits at position t predict token t + 1, so they
use ``logits[:, :-1]`` against ``labels[:, 1:]`` and ``token_classes[:, 1:]``.

Weights follow open-unlearning's names: ``gamma`` multiplies the forget term, ``alpha`` the retain term
R = mean answer-token NLL on the retain batch. ``terms`` holds each term before weighting.

Memory: for 7B models with 32k vocabularies the [B, T, V] logits dominate. Every loss first gathers the
rows it needs (answer positions, onset positions...) into an [n, V] tensor, upcasts only those rows to
float32, takes log_softmax once per tensor, and uses gathers instead of one-hot [B, T, V] tensors.

Conventions where the sources differ (open-unlearning is the reference implementation for baselines):

- SimNPO (beta 4.5, delta 0): ``gamma = 0.125`` weights the SimNPO term and ``alpha = 1`` the retain NLL,
  as in open-unlearning's ``configs/trainer/SimNPO.yaml`` (``gamma: 0.125, alpha: 1.0``). The margin
  follows the SimNPO paper and docs/design.md, ``sigmoid(-(beta/|y|) log pi - delta)``; open-unlearning writes
  ``sigmoid(beta (nll/|y| - delta))``, i.e. delta scaled by beta. Equal for the default delta = 0.
- IdkDPO is open-unlearning's DPO forget term ``-(2/beta) log sigmoid(beta (log-ratio_idk - log-ratio_forget))``
  [open-unlearning src/trainer/utils.py, compute_dpo_loss] with beta 0.1, gamma 1 and alpha 1
  [open-unlearning configs/trainer/DPO.yaml]; it equals (2/beta) log 2 = 20 log 2 at theta = ref. (Until
  issue 23 the 2/beta was dropped here, from the forget term only: that weighted the retain NLL 20 times
  more against the forget term than open-unlearning does, not merely a learning-rate rescaling.)
- PDU scores the answer positions with the mask every loss here uses: the logits that *predict* answer
  tokens (``logits[:, :-1]`` where ``labels[:, 1:] != -100``). open-unlearning's PDU also averages over
  answer positions only (since its commit "masked loss PDU", #147, 2025-10-05; before that it averaged
  over every position, prompt and padding included) but masks the unshifted logits with
  ``labels != -100`` [open-unlearning src/trainer/unlearn/pdu.py]: the logits *at* the answer tokens, one
  position later, so its average leaves out the last prompt position (which predicts the first answer
  token) and takes in the position of the last answer token. UNDIAL scores answer tokens only;
  open-unlearning's averages over every position, prompt and padding included [open-unlearning
  src/trainer/utils.py, compute_undial_loss].
- PDU's retain weight ``alpha`` is the dual variable lambda of the constraint R <= eps, as in
  open-unlearning's primal-dual PDU: a trainer holds a :class:`DualVariable`, passes ``alpha=dual.value``,
  then calls ``dual.update(out.terms["retain"], epoch)``. The defaults (lambda_0 = 100, step size 5,
  eps 0.3, 5 warm-up epochs) are open-unlearning's TOFU recipe for PDU; see :class:`DualVariable`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .tokenization import IGNORE_INDEX, ORDINARY, PROMPT, SENSITIVE  # noqa: F401 (re-exported)


@dataclass
class ModelIO:
    """A model's logits [B, T, V] on ``batch``, plus the frozen reference model's logits when needed."""

    logits: Tensor
    batch: Mapping[str, Tensor]
    ref_logits: Tensor | None = None


@dataclass
class LossOutput:
    """``loss``: scalar to backpropagate; ``terms``: each unweighted term as a float, for logging."""

    loss: Tensor
    terms: dict[str, float]


# PDU's primal-dual defaults: open-unlearning's TOFU recipe for PDU [open-unlearning
# community/methods/PDU/run.sh, the TOFU block: pref=100, dual_step_size=5, retain_loss_eps=0.3,
# dual_warmup_epochs=5, with learning rate 1e-5 and 10 epochs for Llama-3.2-1B]. The generic
# [open-unlearning configs/trainer/PDU.yaml] has alpha 1.0, dual_step_size 1.0, dual_warmup_epochs 5,
# dual_update_upon "step", and no default for retain_loss_eps (``???``: it must be given); its README
# [open-unlearning community/methods/PDU/README.md] says to start the retain preference at 50 or 100
# (the logit-margin loss is large) and to set retain_loss_eps somewhat above the retain loss of the
# model before unlearning.
PDU_INITIAL_DUAL = 100.0  # lambda_0, open-unlearning's trainer.method_args.alpha
PDU_DUAL_STEP_SIZE = 5.0  # eta, open-unlearning's dual_step_size
PDU_RETAIN_LOSS_EPS = 0.3  # eps, open-unlearning's retain_loss_eps (the tolerance on the retain NLL)
PDU_DUAL_WARMUP_EPOCHS = 5  # open-unlearning's dual_warmup_epochs


class DualVariable:
    """PDU's Lagrange multiplier lambda on the retain constraint R <= eps, updated as open-unlearning's
    PDU trainer does [open-unlearning src/trainer/unlearn/pdu.py, ``final_loss_value`` and
    ``DualOptimizationCallback``]:

    - the loss of a batch is ``gamma F + lambda (R - eps)`` with the current lambda (:func:`pdu_loss`);
    - then, once the warm-up is over, one dual ascent step ``lambda <- max(0, lambda + eta (R - eps))``
      from that batch's retain NLL R. open-unlearning updates in ``compute_loss`` (its default
      ``dual_update_upon="step"``), i.e. once per micro-batch under gradient accumulation; so does the
      trainer here. Its ``"epoch"`` mode (one step from the mean retain loss over an epoch) is not offered.
    - warm-up: no update before ``warmup_epochs`` epochs are complete. open-unlearning enables updates at
      the end of the first epoch whose ``state.epoch >= dual_warmup_epochs``, so with 5 the first update is
      in epoch 6; with 0, from the first step. A run of 5 epochs or fewer keeps lambda = lambda_0 throughout.

    Unlike open-unlearning, lambda moves only on training batches (its ``compute_loss`` also runs for
    evaluation batches), and the value is saved in checkpoints. Because R - eps can be negative (eps > 0),
    lambda can shrink as well as grow; with eps = 0, the setting here before issue 23, it could only grow.
    """

    def __init__(
        self,
        value: float = PDU_INITIAL_DUAL,
        step_size: float = PDU_DUAL_STEP_SIZE,
        eps: float = PDU_RETAIN_LOSS_EPS,
        warmup_epochs: int = PDU_DUAL_WARMUP_EPOCHS,
    ) -> None:
        if value < 0:
            raise ValueError(f"value must be >= 0, got {value}")
        if step_size <= 0:
            raise ValueError(f"step_size must be > 0, got {step_size}")
        if eps < 0:
            raise ValueError(f"eps must be >= 0 (a tolerance on the retain NLL), got {eps}")
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
        self.value, self.step_size, self.eps = float(value), float(step_size), float(eps)
        self.warmup_epochs = warmup_epochs

    def active(self, epoch: float) -> bool:
        """Whether the warm-up is over at training progress ``epoch`` (the Trainer's ``state.epoch``:
        completed epochs plus the fraction of the current one)."""
        return epoch >= self.warmup_epochs

    def update(self, retain_value: float, epoch: float) -> float:
        """One dual ascent step from the observed retain loss R at progress ``epoch``, unless still in the
        warm-up; returns lambda."""
        if self.active(epoch):
            self.value = max(0.0, self.value + self.step_size * (float(retain_value) - self.eps))
        return self.value


# ----------------------------------------------------------------------------- helpers


def shifted(logits: Tensor, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Align predictions with targets: logits [B, T-1, V], labels [B, T-1], token classes [B, T-1]."""
    if "token_classes" not in batch:
        raise ValueError("the batch has no 'token_classes' (0 prompt/padding, 1 ordinary, 2 sensitive)")
    return logits[:, :-1], batch["labels"][:, 1:], batch["token_classes"][:, 1:]


def _answer_rows(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Rows of the answer positions of model-aligned logits [B, T, V] and labels [B, T].

    Returns float32 logits [n, V], their target tokens [n] and the batch row of each [n].
    """
    labels = labels[:, 1:]
    mask = labels != IGNORE_INDEX
    return logits[:, :-1][mask].float(), labels[mask], mask.nonzero()[:, 0]


def _mean(values: Tensor) -> Tensor:
    """Mean of a 1-D tensor; 0 (still attached to the graph) when it is empty."""
    return values.sum() / max(values.numel(), 1)


def answer_nll(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy over answer tokens. logits [B, T, V] and labels [B, T] as the model sees them."""
    rows, targets, _ = _answer_rows(logits, labels)
    return F.cross_entropy(rows, targets, reduction="sum") / max(targets.numel(), 1)


def sequence_logprob(logits: Tensor, labels: Tensor) -> Tensor:
    """Summed answer log-probability log pi(y|x) of each sequence: [B]. Inputs as in :func:`answer_nll`."""
    rows, targets, row_of = _answer_rows(logits, labels)
    token_logprob = -F.cross_entropy(rows, targets, reduction="none")
    return torch.zeros(len(labels), device=rows.device).index_add(0, row_of, token_logprob)


def answer_length(labels: Tensor) -> Tensor:
    """Number of answer tokens |y| of each sequence: [B]."""
    return (labels[:, 1:] != IGNORE_INDEX).sum(-1)


def onset_mask(token_classes: Tensor, first_n: int) -> Tensor:
    """Onset positions: the first ``first_n`` of each maximal run of sensitive positions. bool [B, L].

    ``token_classes`` is [B, L] (already shifted). Adjacent spans with no other token between them form
    one run. ``first_n = -1`` keeps every sensitive position.
    """
    _check_first_n(first_n)
    sensitive = token_classes == SENSITIVE
    if first_n == -1:
        return sensitive
    position = torch.arange(sensitive.size(1), device=sensitive.device).expand_as(sensitive)
    previous = torch.cat([torch.zeros_like(sensitive[:, :1]), sensitive[:, :-1]], dim=1)
    starts = sensitive & ~previous
    run_start = torch.where(starts, position, 0).cummax(dim=1).values
    return sensitive & (position - run_start < first_n)


# ----------------------------------------------------------------------------- validation


def _check_first_n(first_n: int) -> None:
    if first_n == 0 or first_n < -1:
        raise ValueError(f"first_n must be a positive integer or -1 (all sensitive tokens), got {first_n}")


def _check_weights(**weights: float) -> None:
    for name, value in weights.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ValueError(f"{name} must be > 0, got {value}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, choices))}")


def _reference(io: ModelIO, method: str) -> Tensor:
    """The reference logits of ``io``, checked against its logits."""
    if io.ref_logits is None:
        raise ValueError(f"{method} needs ref_logits: the frozen reference model's logits on the same batch")
    if io.ref_logits.shape != io.logits.shape:
        shapes = f"{tuple(io.ref_logits.shape)} and logits {tuple(io.logits.shape)}"
        raise ValueError(f"ref_logits has shape {shapes}; they must match")
    return io.ref_logits.detach()


def _retain_term(retain: ModelIO | None, alpha: float, method: str, like: Tensor) -> Tensor:
    """R = answer NLL on the retain batch; 0 (and no batch needed) when alpha = 0."""
    if alpha == 0:
        return like.new_zeros((), dtype=torch.float32)
    if retain is None:
        raise ValueError(
            f"{method} with alpha={alpha} needs a retain batch (retain=None); pass one or set alpha=0"
        )
    return answer_nll(retain.logits, retain.batch["labels"])


def _output(forget_term: Tensor, retain_term: Tensor, gamma: float, alpha: float) -> LossOutput:
    """gamma * forget + alpha * retain, with both terms logged."""
    terms = {"forget": forget_term.item(), "retain": retain_term.item()}
    return LossOutput(gamma * forget_term + alpha * retain_term, terms)


# ----------------------------------------------------------------------------- baselines


def ga_loss(forget: ModelIO, retain: ModelIO | None = None) -> LossOutput:
    """Gradient ascent: -NLL_f."""
    nll = answer_nll(forget.logits, forget.batch["labels"])
    return LossOutput(-nll, {"forget": -nll.item()})


def graddiff_loss(
    forget: ModelIO, retain: ModelIO | None, *, gamma: float = 1.0, alpha: float = 1.0
) -> LossOutput:
    """Gradient difference: gamma * (-NLL_f) + alpha * R."""
    _check_weights(gamma=gamma, alpha=alpha)
    forget_term = -answer_nll(forget.logits, forget.batch["labels"])
    return _output(forget_term, _retain_term(retain, alpha, "graddiff", forget_term), gamma, alpha)


def npo_loss(
    forget: ModelIO, retain: ModelIO | None, *, beta: float = 0.1, gamma: float = 1.0, alpha: float = 1.0
) -> LossOutput:
    """NPO: -(2/beta) mean_b log sigmoid(-beta (log pi_theta(y_b) - log pi_ref(y_b))) + alpha * R."""
    _check_positive(beta=beta)
    _check_weights(gamma=gamma, alpha=alpha)
    labels = forget.batch["labels"]
    log_ratio = sequence_logprob(forget.logits, labels) - sequence_logprob(_reference(forget, "npo"), labels)
    forget_term = -(2 / beta) * F.logsigmoid(-beta * log_ratio).mean()
    return _output(forget_term, _retain_term(retain, alpha, "npo", forget_term), gamma, alpha)


def simnpo_loss(
    forget: ModelIO,
    retain: ModelIO | None,
    *,
    beta: float = 4.5,
    delta: float = 0.0,
    gamma: float = 0.125,
    alpha: float = 1.0,
) -> LossOutput:
    """SimNPO: gamma * -(2/beta) mean_b log sigmoid(-(beta/|y_b|) log pi_theta(y_b) - delta) + alpha * R."""
    _check_positive(beta=beta)
    _check_weights(gamma=gamma, alpha=alpha)
    labels = forget.batch["labels"]
    mean_logprob = sequence_logprob(forget.logits, labels) / answer_length(labels).clamp(min=1)
    forget_term = -(2 / beta) * F.logsigmoid(-beta * mean_logprob - delta).mean()
    return _output(forget_term, _retain_term(retain, alpha, "simnpo", forget_term), gamma, alpha)


def me_gd_loss(
    forget: ModelIO, retain: ModelIO | None, *, gamma: float = 0.1, alpha: float = 1.0
) -> LossOutput:
    """Maximum entropy + GD: gamma * mean over answer tokens of KL(U || p_theta) + alpha * R.

    KL(U || p) = sum_v (1/V) (log(1/V) - log p_v) = -log V - mean_v log p_v.
    """
    _check_weights(gamma=gamma, alpha=alpha)
    rows, _, _ = _answer_rows(forget.logits, forget.batch["labels"])
    kl = -math.log(rows.size(-1)) - rows.log_softmax(-1).mean(-1)
    forget_term = _mean(kl)
    return _output(forget_term, _retain_term(retain, alpha, "me_gd", forget_term), gamma, alpha)


def pdu_loss(
    forget: ModelIO,
    retain: ModelIO | None,
    *,
    gamma: float = 1.0,
    alpha: float = PDU_INITIAL_DUAL,
    retain_loss_eps: float = PDU_RETAIN_LOSS_EPS,
    dual_step_size: float = PDU_DUAL_STEP_SIZE,
    dual_warmup_epochs: int = PDU_DUAL_WARMUP_EPOCHS,
) -> LossOutput:
    """PDU: gamma * F + alpha * (R - retain_loss_eps), F = mean over answer tokens of (max_j z_j - mean_j z_j)^2.

    ``alpha`` is the dual variable lambda (its default is lambda_0): a trainer passes ``DualVariable.value``
    and updates it with ``terms["retain"]`` (R itself, not R - eps, as open-unlearning logs it). The constant
    ``-alpha * retain_loss_eps`` leaves the gradient alone; it makes the loss value open-unlearning's.
    R is computed whenever a retain batch is given, also at alpha = 0, so that the dual can grow again.
    ``dual_step_size`` and ``dual_warmup_epochs`` configure the trainer's :class:`DualVariable`; they are
    declared here so that they are the method's hyperparameters (``UnlearnConfig.hyper``, cache keys).
    Defaults and sources: :data:`PDU_INITIAL_DUAL` and the lines above it.
    """
    _check_weights(gamma=gamma, alpha=alpha, retain_loss_eps=retain_loss_eps, dual_warmup_epochs=dual_warmup_epochs)
    _check_positive(dual_step_size=dual_step_size)
    rows, _, _ = _answer_rows(forget.logits, forget.batch["labels"])
    forget_term = _mean((rows.max(-1).values - rows.mean(-1)).pow(2))
    if retain is None:
        retain_term = _retain_term(retain, alpha, "pdu", forget_term)  # 0, or the error when alpha > 0
    else:
        retain_term = answer_nll(retain.logits, retain.batch["labels"])
    terms = {"forget": forget_term.item(), "retain": retain_term.item()}
    return LossOutput(gamma * forget_term + alpha * (retain_term - retain_loss_eps), terms)


def undial_loss(
    forget: ModelIO,
    retain: ModelIO | None = None,
    *,
    beta: float = 10.0,
    gamma: float = 1.0,
    alpha: float = 0.0,
) -> LossOutput:
    """UNDIAL: mean over answer tokens of CE(q, p_theta), q = softmax(z_ref - beta onehot(y)); + alpha * R."""
    _check_weights(beta=beta, gamma=gamma, alpha=alpha)
    labels = forget.batch["labels"]
    rows, targets, _ = _answer_rows(forget.logits, labels)
    ref_rows, _, _ = _answer_rows(_reference(forget, "undial"), labels)
    ref_rows[torch.arange(len(targets), device=targets.device), targets] -= beta
    soft_targets = ref_rows.softmax(-1)
    forget_term = _mean(-(soft_targets * rows.log_softmax(-1)).sum(-1))
    return _output(forget_term, _retain_term(retain, alpha, "undial", forget_term), gamma, alpha)


def idk_nll_loss(
    forget: ModelIO, retain: ModelIO | None, *, gamma: float = 1.0, alpha: float = 1.0
) -> LossOutput:
    """IdkNLL: gamma * NLL_f + alpha * R, where ``forget`` pairs the forget questions with refusal answers."""
    _check_weights(gamma=gamma, alpha=alpha)
    forget_term = answer_nll(forget.logits, forget.batch["labels"])
    return _output(forget_term, _retain_term(retain, alpha, "idk_nll", forget_term), gamma, alpha)


def idk_dpo_loss(
    forget: ModelIO,
    retain: ModelIO | None,
    *,
    idk: ModelIO,
    beta: float = 0.1,
    gamma: float = 1.0,
    alpha: float = 1.0,
) -> LossOutput:
    """IdkDPO: gamma * -(2/beta) mean_b log sigmoid(beta (r(idk_b) - r(y_b))) + alpha * R, r = log pi - log pi_ref.

    ``forget`` holds the original answers (rejected), ``idk`` the same questions with refusals (preferred);
    both need ref_logits. The forget term is open-unlearning's ``compute_dpo_loss`` [open-unlearning
    src/trainer/utils.py], 2/beta included, with its TOFU defaults beta 0.1, gamma 1, alpha 1 [open-unlearning
    configs/trainer/DPO.yaml; the DPO class's own default beta is 1.0]: (2/beta) log 2 at theta = ref.
    """
    _check_positive(beta=beta)
    _check_weights(gamma=gamma, alpha=alpha)
    if len(idk.logits) != len(forget.logits):
        sizes = f"idk has {len(idk.logits)} sequences, forget {len(forget.logits)}"
        raise ValueError(f"{sizes}; the two must pair the same questions")

    def log_ratio(io: ModelIO) -> Tensor:
        labels = io.batch["labels"]
        return sequence_logprob(io.logits, labels) - sequence_logprob(_reference(io, "idk_dpo"), labels)

    forget_term = -(2 / beta) * F.logsigmoid(beta * (log_ratio(idk) - log_ratio(forget))).mean()
    return _output(forget_term, _retain_term(retain, alpha, "idk_dpo", forget_term), gamma, alpha)


# ----------------------------------------------------------------------------- PALU

Temporal = Literal["onset", "sensitive", "answer"]
Vocab = Literal["topk", "full"]
Target = Literal["full_mean", "topk_mean", "fixed"]
Form = Literal["squared", "entropy"]
NsConstraint = Literal["kl", "nll", "none"]


def palu_forget_mask(token_classes: Tensor, hyper: Mapping[str, Any] | None = None) -> Tensor:
    """The positions PALU's forget term acts on under the hyperparameters ``hyper``: bool, the shape of
    ``token_classes`` ([B, L], already shifted: position t predicts token t + 1).

    ``temporal`` and ``first_n`` decide it ("onset": the first ``first_n`` of each sensitive run,
    :func:`onset_mask`; "sensitive": every sensitive position; "answer": every answer position); a key that
    ``hyper`` leaves out takes :func:`palu_loss`'s default, and its other keys (``top_k``, ``alpha``...) do
    not matter here, so a notebook passes the dict it trains with. :func:`palu_loss` takes its forget
    positions from the same code, so the two cannot disagree.
    """
    settings = _palu_settings(hyper)
    return _forget_mask(token_classes, settings["temporal"], settings["first_n"])


def palu_onset_length(hyper: Mapping[str, Any] | None = None) -> int:
    """N, the sensitive tokens per run PALU's forget term acts on under ``hyper`` (keys left out take
    :func:`palu_loss`'s defaults): ``first_n`` with temporal "onset", -1 (every sensitive token, as
    :func:`onset_mask` writes it) with "sensitive". A ValueError for "answer", which is no choice of sensitive
    tokens (it acts on every answer token)."""
    settings = _palu_settings(hyper)
    if settings["temporal"] == "answer":
        raise ValueError("temporal='answer' acts on every answer token: it has no onset length N; use temporal "
                         "'onset' (first_n = N) or 'sensitive' (N = -1)")
    return int(settings["first_n"]) if settings["temporal"] == "onset" else -1


def _palu_settings(hyper: Mapping[str, Any] | None) -> dict[str, Any]:
    """``hyper`` over :func:`palu_loss`'s defaults, its names, ``first_n`` and ``temporal`` checked."""
    defaults = {p.name: p.default for p in inspect.signature(palu_loss).parameters.values()
                if p.kind is p.KEYWORD_ONLY}
    unknown = set(hyper or {}) - set(defaults)
    if unknown:
        raise ValueError(f"palu has no hyperparameter(s) {sorted(unknown)}; it takes {sorted(defaults)}")
    settings = {**defaults, **(hyper or {})}
    _check_first_n(settings["first_n"])
    _check_choice("temporal", settings["temporal"], ("onset", "sensitive", "answer"))
    return settings


def _forget_mask(classes: Tensor, temporal: str, first_n: int) -> Tensor:
    if temporal == "onset":
        return onset_mask(classes, first_n)
    if temporal == "sensitive":
        return classes == SENSITIVE
    return classes != PROMPT


def palu_loss(
    forget: ModelIO,
    retain: ModelIO | None,
    *,
    top_k: int = 50,
    first_n: int = 3,
    temporal: Temporal = "onset",
    vocab: Vocab = "topk",
    target: Target = "full_mean",
    target_value: float = 0.0,
    form: Form = "squared",
    ns_constraint: NsConstraint = "kl",
    alpha: float = 1.0,
    gamma: float = 1.0,
) -> LossOutput:
    """PALU: gamma * L_forget + alpha * (L_retain + L_ns), docs/design.md, "PALU".

    Forget positions (``temporal``): "onset" = the first ``first_n`` tokens of each sensitive run,
    "sensitive" = every sensitive token, "answer" = every answer token. At a forget position t with
    current logits z_t [V] and T_t = indices of the top-``top_k`` reference logits (``vocab="full"``: all V,
    ``top_k`` unused):

    - ``form="squared"``: L_local(t) = (1/K) sum_{i in T_t} (z_{t,i} - c_t)^2, with c_t (``target``) the
      mean of z_t over V ("full_mean"), over T_t ("topk_mean"), or ``target_value`` ("fixed"); gradients
      flow through c_t.
    - ``form="entropy"``: L_local(t) = log K - H(softmax(z_{t, T_t})), >= 0 and 0 when the K logits are
      equal (``target`` is not used).

    L_forget is the mean over forget positions (0 when there are none). L_ns is taken at ordinary
    positions (none when ``temporal="answer"``): KL(p_theta || p_ref) ("kl"), the NLL of the reference
    argmax token ("nll") or 0 ("none"). Sensitive tokens outside the forget positions get no loss.
    L_retain is the answer NLL on ``retain``. terms: forget, retain, ns. :func:`palu_forget_mask` gives the
    forget positions for a dict of these hyperparameters.
    """
    logits, _, classes = shifted(forget.logits, forget.batch)
    vocab_size = logits.size(-1)
    _check_choice("vocab", vocab, ("topk", "full"))
    if vocab == "topk" and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if vocab == "topk" and top_k > vocab_size:
        raise ValueError(
            f"top_k={top_k} is larger than the vocabulary ({vocab_size} tokens); use top_k <= {vocab_size}"
        )
    _check_first_n(first_n)
    _check_choice("temporal", temporal, ("onset", "sensitive", "answer"))
    _check_choice("target", target, ("full_mean", "topk_mean", "fixed"))
    _check_choice("form", form, ("squared", "entropy"))
    _check_choice("ns_constraint", ns_constraint, ("kl", "nll", "none"))
    _check_weights(alpha=alpha, gamma=gamma)
    needs_ref = vocab == "topk" or ns_constraint != "none"
    ref = _reference(forget, "palu")[:, :-1] if needs_ref else None

    forget_mask = _forget_mask(classes, temporal, first_n)  # as palu_forget_mask gives it
    ns_mask = (classes == ORDINARY) & ~forget_mask

    z = logits[forget_mask].float()  # [n, V]
    z_k = z.gather(-1, ref[forget_mask].topk(top_k, dim=-1).indices) if vocab == "topk" else z  # [n, K]
    if form == "squared":
        if target == "full_mean":
            c = z.mean(-1, keepdim=True)
        elif target == "topk_mean":
            c = z_k.mean(-1, keepdim=True)
        else:
            c = torch.full_like(z_k[:, :1], target_value)
        local = (z_k - c).pow(2).mean(-1)
    else:
        log_p = z_k.log_softmax(-1)
        local = math.log(z_k.size(-1)) + (log_p.exp() * log_p).sum(-1)
    forget_term = _mean(local)

    if ns_constraint == "none":
        ns_term = forget_term.new_zeros(())
    else:
        current, reference = logits[ns_mask].float(), ref[ns_mask].float()
        if ns_constraint == "kl":
            log_p, log_q = current.log_softmax(-1), reference.log_softmax(-1)
            ns_term = _mean((log_p.exp() * (log_p - log_q)).sum(-1))
        else:
            ns_term = _mean(F.cross_entropy(current, reference.argmax(-1), reduction="none"))

    retain_term = _retain_term(retain, alpha, "palu", forget_term)
    loss = gamma * forget_term + alpha * (retain_term + ns_term)
    terms = {"forget": forget_term.item(), "retain": retain_term.item(), "ns": ns_term.item()}
    return LossOutput(loss, terms)


def palu_local_parts(logits: Tensor, ref_logits: Tensor, top_k: int) -> dict[str, float]:
    """PALU's squared local loss at one position (target c_t = the full-vocabulary mean), taken apart.

    ``logits`` and ``ref_logits`` are one position's current and reference logits, [V]; the candidates T are
    the reference's top-``top_k``. The loss splits exactly into a gap and a spread::

        L_local = (1/K) sum_{i in T} (z_i - c)^2 = (mean_T z - c)^2 + var_T z

    Returns ``c`` (c_t), ``topk_mean`` (mean_T z), ``gap`` (topk_mean - c), ``spread`` (var_T z, about the
    candidates' own mean), ``local`` (gap^2 + spread), and the gradient of ``local`` with respect to c_t
    (``d_c``) and to the K candidates directly, summed (``d_topk``): ``d_c = -2 gap = -d_topk``, the loss pulls
    c_t up exactly as hard as it pulls the K candidates down together.
    """
    if logits.dim() != 1 or logits.shape != ref_logits.shape:
        raise ValueError(f"palu_local_parts takes one position's logits, two [V] tensors; got {tuple(logits.shape)} "
                         f"and {tuple(ref_logits.shape)} (index a position first: logits[0, t])")
    if not 1 <= top_k <= logits.numel():
        raise ValueError(f"top_k must be in [1, {logits.numel()}] (the vocabulary), got {top_k}")
    z = logits.detach().float()
    z_k = z[ref_logits.detach().float().topk(top_k).indices].clone().requires_grad_(True)
    c = z.mean().clone().requires_grad_(True)  # c_t as its own variable: the gradient that flows through it
    local = (z_k - c).pow(2).mean()
    d_topk, d_c = torch.autograd.grad(local, (z_k, c))
    gap = z_k.detach().mean() - c.detach()
    return {"c": c.item(), "topk_mean": z_k.detach().mean().item(), "gap": gap.item(),
            "spread": z_k.detach().var(unbiased=False).item(), "local": local.item(),
            "d_c": d_c.item(), "d_topk": d_topk.sum().item()}


def palu_gradient_norms(model: torch.nn.Module, forget: Mapping[str, Tensor], retain: Mapping[str, Tensor],
                        ref_logits: Tensor, **hyper: Any) -> dict[str, float]:
    """How hard each part of PALU's loss pulls on ``model``'s weights where they are now: the norms, over every
    trainable weight, of the gradients of ``forget`` (L_forget) and of ``hold`` (L_retain + L_ns), both
    unweighted (``gamma`` and ``alpha`` in ``hyper`` are left out), and ``ratio`` = forget / hold.

    ``forget`` and ``retain`` are batches (``encode_qa`` + ``Collator``), ``ref_logits`` the frozen reference's
    logits on ``forget``; ``hyper`` as for :func:`palu_loss`. The weights' ``.grad`` are left untouched.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable weight (requires_grad is False everywhere): call "
                         "model.requires_grad_(True) first")
    hyper = {k: v for k, v in hyper.items() if k not in ("alpha", "gamma")}

    def io(batch: Mapping[str, Tensor], ref: Tensor | None) -> ModelIO:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return ModelIO(logits, batch, ref)

    forget_io, retain_io = io(forget, ref_logits), io(retain, None)
    parts = {"forget": palu_loss(forget_io, retain_io, **hyper, alpha=0.0).loss,
             "hold": palu_loss(forget_io, retain_io, **hyper, gamma=0.0).loss}
    norms = {}
    for name, loss in parts.items():
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        norms[name] = math.sqrt(sum(float(g.float().pow(2).sum()) for g in grads if g is not None))
    norms["ratio"] = norms["forget"] / norms["hold"] if norms["hold"] > 0 else math.inf
    return norms


# ----------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Method:
    """A registered objective and what a trainer must feed it.

    ``refusals``: None; "forget" = the ``forget`` ModelIO pairs the forget questions with refusal answers;
    "idk" = ``forget`` keeps the original answers and the refusals come as the ``idk=`` ModelIO.
    ``needs_reference``: the loss reads ``ref_logits`` of the forget batch (and of ``idk``).
    ``reference_on_retain``: it also reads ``retain.ref_logits`` (a retain term that compares with the
    reference, e.g. a KL retain loss as open-unlearning's ``retain_loss_type: KL``); only then does a
    trainer run the reference model on the retain batch. No loss here does: every retain term is the
    answer NLL, and PALU's non-sensitive constraint is taken on the forget batch.
    """

    name: str
    fn: Callable[..., LossOutput]
    needs_reference: bool
    needs_retain: bool
    refusals: Literal["forget", "idk"] | None = None
    reference_on_retain: bool = False

    def __post_init__(self) -> None:
        if self.reference_on_retain and not (self.needs_reference and self.needs_retain):
            raise ValueError(f"{self.name}: reference_on_retain needs needs_reference and needs_retain")

    @property
    def defaults(self) -> dict[str, Any]:
        """The method's hyperparameters and their defaults, read from the function's signature."""
        parameters = inspect.signature(self.fn).parameters.values()
        keyword_only = [p for p in parameters if p.kind is p.KEYWORD_ONLY]
        return {p.name: p.default for p in keyword_only if p.default is not p.empty}


LOSSES: dict[str, Method] = {
    m.name: m
    for m in [
        Method("ga", ga_loss, needs_reference=False, needs_retain=False),
        Method("graddiff", graddiff_loss, needs_reference=False, needs_retain=True),
        Method("npo", npo_loss, needs_reference=True, needs_retain=True),
        Method("simnpo", simnpo_loss, needs_reference=False, needs_retain=True),
        Method("me_gd", me_gd_loss, needs_reference=False, needs_retain=True),
        Method("pdu", pdu_loss, needs_reference=False, needs_retain=True),
        Method("undial", undial_loss, needs_reference=True, needs_retain=False),
        Method("idk_nll", idk_nll_loss, needs_reference=False, needs_retain=True, refusals="forget"),
        Method("idk_dpo", idk_dpo_loss, needs_reference=True, needs_retain=True, refusals="idk"),
        Method("palu", palu_loss, needs_reference=True, needs_retain=True),
    ]
}
