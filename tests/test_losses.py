"""Tests of palu_perta.losses: hand-computed values, equivalences between PALU's knobs, every baseline on a
case with a known answer, gradients through a tiny Llama, and argument errors."""

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from palu_perta.losses import (
    IGNORE_INDEX,
    LOSSES,
    ORDINARY,
    PROMPT,
    SENSITIVE,
    DualVariable,
    Method,
    ModelIO,
    answer_nll,
    ga_loss,
    graddiff_loss,
    idk_dpo_loss,
    idk_nll_loss,
    me_gd_loss,
    npo_loss,
    onset_mask,
    palu_forget_mask,
    palu_loss,
    palu_onset_length,
    pdu_loss,
    sequence_logprob,
    shifted,
    simnpo_loss,
    undial_loss,
)

LOG2 = math.log(2)


def make_batch(classes: list[list[int]], vocab: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch following the project's contract from unshifted token classes (0 = prompt or padding)."""
    token_classes = torch.tensor(classes)
    input_ids = torch.randint(0, vocab, token_classes.shape, generator=torch.Generator().manual_seed(seed))
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "labels": torch.where(token_classes != PROMPT, input_ids, IGNORE_INDEX),
        "token_classes": token_classes,
    }


def uniform_io(vocab: int, answer_tokens: int = 3) -> ModelIO:
    """One sequence with a 1-token prompt, ``answer_tokens`` answer tokens and all-zero (uniform) logits."""
    batch = make_batch([[PROMPT] + [ORDINARY] * answer_tokens], vocab=vocab)
    return ModelIO(torch.zeros(1, answer_tokens + 1, vocab), batch)


def retain_with_nll_log2() -> ModelIO:
    """A retain batch whose answer NLL is exactly log 2: label logit log 5 among 6 tokens, so p = 5 / 10."""
    batch = make_batch([[PROMPT, ORDINARY, ORDINARY]], vocab=6)
    logits = torch.zeros(1, 3, 6)
    for t in (0, 1):
        logits[0, t, batch["labels"][0, t + 1]] = math.log(5)
    return ModelIO(logits, batch)


def random_io(classes: list[list[int]], vocab: int = 6, seed: int = 0) -> ModelIO:
    g = torch.Generator().manual_seed(seed)
    shape = (len(classes), len(classes[0]), vocab)
    logits = torch.randn(shape, generator=g).requires_grad_()
    return ModelIO(logits, make_batch(classes, vocab, seed), ref_logits=torch.randn(shape, generator=g))


# ----------------------------------------------------------------------------- helpers and onset_mask


def test_shifted_drops_last_logit_and_first_label():
    io = random_io([[PROMPT, ORDINARY, SENSITIVE, ORDINARY]])
    logits, labels, classes = shifted(io.logits, io.batch)
    assert logits.shape == (1, 3, 6)
    assert labels.tolist() == [io.batch["labels"][0, 1:].tolist()]
    assert classes.tolist() == [[ORDINARY, SENSITIVE, ORDINARY]]


def test_answer_nll_and_sequence_logprob_on_uniform_logits():
    io = uniform_io(vocab=4, answer_tokens=3)
    assert answer_nll(io.logits, io.batch["labels"]).item() == pytest.approx(math.log(4))
    # 1 prompt + 3 answer tokens: position 0..2 predict the 3 answer tokens.
    assert sequence_logprob(io.logits, io.batch["labels"]).tolist() == pytest.approx([-3 * math.log(4)])


@pytest.mark.parametrize(
    ("classes", "first_n", "expected"),
    [
        ([1, 1, 2, 2, 2], 2, [0, 0, 1, 1, 0]),  # span at the very end
        ([2, 2, 2, 1, 2, 2, 2], 2, [1, 1, 0, 0, 1, 1, 0]),  # two spans separated by one ordinary token
        ([1, 2, 1, 2, 2], 3, [0, 1, 0, 1, 1]),  # spans shorter than N
        ([0, 2, 2, 1, 0, 0], 1, [0, 1, 0, 0, 0, 0]),  # padding after the answer
        ([2, 2, 2, 1, 2, 0], -1, [1, 1, 1, 0, 1, 0]),  # -1 keeps every sensitive token
        ([0, 1, 1, 1, 0, 0], 2, [0, 0, 0, 0, 0, 0]),  # no span
    ],
)
def test_onset_mask_patterns(classes, first_n, expected):
    assert onset_mask(torch.tensor([classes]), first_n).int().tolist() == [expected]


def test_onset_mask_rows_are_independent():
    classes = torch.tensor([[1, 2, 2, 2], [2, 2, 1, 0]])
    # Row 1 ends inside a span; row 2 must still start a new run at position 0.
    assert onset_mask(classes, 1).int().tolist() == [[0, 1, 0, 0], [1, 0, 0, 0]]


def test_onset_mask_matches_a_loop_on_random_patterns():
    classes = torch.randint(0, 3, (20, 30), generator=torch.Generator().manual_seed(1))
    for first_n in (1, 2, 5):
        expected = torch.zeros_like(classes, dtype=torch.bool)
        for b in range(len(classes)):
            run = 0
            for t in range(classes.size(1)):
                run = run + 1 if classes[b, t] == SENSITIVE else 0
                expected[b, t] = 0 < run <= first_n
        assert torch.equal(onset_mask(classes, first_n), expected)


# ----------------------------------------------------------------------------- PALU by hand

# One answer with two spans: shifted classes [P, S, S, S, O, S, O] (7 positions predicting tokens 1..7).
# With first_n = 2 the onset set is {1, 2, 5}; position 3 is a sensitive token after the first N.
HAND_CLASSES = [[PROMPT, PROMPT, SENSITIVE, SENSITIVE, SENSITIVE, ORDINARY, SENSITIVE, ORDINARY]]
HAND_LOGITS = [
    [0, 0, 0, 0, 0, 0],  # prompt
    [4, 2, 1, 0, 0, -1],  # onset; ref top-3 = {0, 1, 2}; full mean c = 6/6 = 1
    [0, 3, 0, 0, 3, 0],  # onset; ref top-3 = {1, 3, 5}; c = 1
    [10, 0, 0, 0, 0, 0],  # sensitive after N: no loss
    [0, 0, 0, 0, 0, 0],  # ordinary: uniform
    [6, 0, 0, 0, 0, 0],  # onset (a 1-token span); ref top-3 = {5, 4, 3}; c = 1
    [1, 2, 3, 0, 0, 0],  # ordinary (EOS), equal to the reference
    [5, 0, 0, 0, 0, 0],  # predicts past the end: dropped by the shift
]
HAND_REF = [
    [0, 0, 0, 0, 0, 0],
    [4, 2, 1, 0, 0, -1],
    [0, 5, 0, 4, 1, 3],
    [0, 0, 0, 1, 2, 9],
    [LOG2, 0, 0, 0, 0, 0],
    [0, 0, 0, 1, 2, 3],
    [1, 2, 3, 0, 0, 0],
    [0, 0, 0, 0, 0, 0],
]
# L_local: (3^2 + 1^2 + 0^2)/3 = 10/3; (2^2 + 1^2 + 1^2)/3 = 2; (1 + 1 + 1)/3 = 1.
HAND_FORGET = (10 / 3 + 2 + 1) / 3  # = 19/9
# KL(U || q) at position 4 with q = (2/7, 1/7, ..., 1/7): log(7/6) - log(2)/6; 0 at position 6.
HAND_NS_KL = (math.log(7 / 6) - LOG2 / 6) / 2


def hand_io() -> ModelIO:
    logits = torch.tensor([HAND_LOGITS], dtype=torch.float32, requires_grad=True)
    return ModelIO(logits, make_batch(HAND_CLASSES), ref_logits=torch.tensor([HAND_REF]))


def hand_palu(**hyper):
    return palu_loss(hand_io(), retain_with_nll_log2(), **{"top_k": 3, "first_n": 2, **hyper})


def test_palu_by_hand():
    out = hand_palu()
    assert out.terms["forget"] == pytest.approx(19 / 9)
    assert out.terms["ns"] == pytest.approx(HAND_NS_KL, rel=1e-5)  # float32 logs
    assert out.terms["retain"] == pytest.approx(LOG2)
    assert out.loss.item() == pytest.approx(19 / 9 + LOG2 + HAND_NS_KL)
    weighted = hand_palu(gamma=2.0, alpha=0.5)
    assert weighted.loss.item() == pytest.approx(2 * 19 / 9 + 0.5 * (LOG2 + HAND_NS_KL))


def test_palu_gives_no_gradient_to_sensitive_tokens_after_the_first_n():
    io = hand_io()
    palu_loss(io, retain_with_nll_log2(), top_k=3, first_n=2).loss.backward()
    grad_norm = io.logits.grad[0].norm(dim=-1)
    assert grad_norm[[0, 3, 7]].tolist() == [0, 0, 0]
    assert (grad_norm[[1, 2, 4, 5]] > 0).all()  # row 6 equals the reference: KL gradient is zero there


def test_palu_targets_by_hand():
    # fixed c = 0: (16 + 4 + 1)/3 = 7, (9 + 0 + 0)/3 = 3, 0.
    assert hand_palu(target="fixed", target_value=0.0).terms["forget"] == pytest.approx((7 + 3 + 0) / 3)
    # top-K mean: c = 7/3 -> (25 + 1 + 16)/27 = 14/9; c = 1 -> 2; c = 0 -> 0.
    assert hand_palu(target="topk_mean").terms["forget"] == pytest.approx((14 / 9 + 2 + 0) / 3)


def test_palu_entropy_form_by_hand():
    def log3_minus_entropy(z: list[float]) -> float:
        total = sum(math.exp(v) for v in z)
        return math.log(3) + sum(math.exp(v) / total * (v - math.log(total)) for v in z)

    # Current logits at the reference top-3 indices of positions 1, 2, 5.
    expected = (log3_minus_entropy([4, 2, 1]) + log3_minus_entropy([3, 0, 0]) + 0.0) / 3
    assert hand_palu(form="entropy").terms["forget"] == pytest.approx(expected)


def test_palu_temporal_sensitive_by_hand():
    # Adds position 3: z at ref top-3 {5, 4, 3} is 0, c = 10/6 -> (5/3)^2 = 25/9.
    assert hand_palu(temporal="sensitive").terms["forget"] == pytest.approx((10 / 3 + 2 + 25 / 9 + 1) / 4)


def test_palu_ns_options_by_hand():
    # Reference argmax: token 0 at position 4 (current uniform: log 6), token 2 at position 6.
    nll_6 = math.log(math.e + math.e**2 + math.e**3 + 3) - 3
    assert hand_palu(ns_constraint="nll").terms["ns"] == pytest.approx((math.log(6) + nll_6) / 2)
    out = hand_palu(ns_constraint="none")
    assert out.terms["ns"] == 0
    assert out.loss.item() == pytest.approx(19 / 9 + LOG2)


# ----------------------------------------------------------------------------- PALU equivalences

RANDOM_CLASSES = [
    [0, 0, 1, 2, 2, 2, 1, 2, 2, 1, 0, 0],
    [0, 2, 2, 2, 2, 1, 1, 2, 1, 2, 2, 1],
]


@pytest.mark.parametrize("target", ["full_mean", "topk_mean", "fixed"])
@pytest.mark.parametrize("form", ["squared", "entropy"])
def test_palu_top_k_equal_to_vocab_is_full_vocab(target, form):
    io = random_io(RANDOM_CLASSES)
    hyper = {"first_n": 2, "target": target, "target_value": 0.5, "form": form, "alpha": 0.0}
    topk = palu_loss(io, None, vocab="topk", top_k=6, **hyper)
    full = palu_loss(io, None, vocab="full", **hyper)
    assert topk.loss.item() == pytest.approx(full.loss.item())


def test_palu_first_n_minus_one_is_temporal_sensitive():
    io = random_io(RANDOM_CLASSES)
    retain = retain_with_nll_log2()
    onset_all = palu_loss(io, retain, top_k=3, first_n=-1, temporal="onset", alpha=0.5)
    sensitive = palu_loss(io, retain, top_k=3, temporal="sensitive", alpha=0.5)
    assert onset_all.loss.item() == pytest.approx(sensitive.loss.item())
    assert onset_all.terms == pytest.approx(sensitive.terms)


def test_palu_temporal_answer_is_sensitive_with_every_answer_token_sensitive():
    io = random_io(RANDOM_CLASSES)
    all_sensitive = [[SENSITIVE if c != PROMPT else PROMPT for c in row] for row in RANDOM_CLASSES]
    io_sensitive = ModelIO(io.logits, make_batch(all_sensitive), io.ref_logits)
    answer = palu_loss(io, retain_with_nll_log2(), top_k=3, temporal="answer")
    sensitive = palu_loss(io_sensitive, retain_with_nll_log2(), top_k=3, temporal="sensitive")
    assert answer.terms["ns"] == 0
    assert answer.loss.item() == pytest.approx(sensitive.loss.item())


@pytest.mark.parametrize("hyper", [{}, {"top_k": 1, "temporal": "sensitive", "alpha": 1.0}, {"first_n": 1},
                                   {"temporal": "onset", "first_n": -1}, {"temporal": "answer"}])
def test_palu_forget_mask_is_where_the_forget_term_acts(hyper):
    """palu_forget_mask(classes, hyper) marks exactly the positions whose logits get a gradient from L_forget."""
    io = random_io(RANDOM_CLASSES)
    palu_loss(io, None, **{**hyper, "top_k": 3, "ns_constraint": "none", "alpha": 0.0}).loss.backward()
    acted = io.logits.grad[:, :-1].norm(dim=-1) > 0
    assert torch.equal(acted, palu_forget_mask(io.batch["token_classes"][:, 1:], hyper))


def test_palu_onset_length_names_n_for_the_positions():
    assert palu_onset_length() == LOSSES["palu"].defaults["first_n"] == 3
    assert palu_onset_length({"temporal": "sensitive", "top_k": 1}) == -1
    assert palu_onset_length({"first_n": 2}) == 2
    with pytest.raises(ValueError, match="no onset length"):
        palu_onset_length({"temporal": "answer"})
    with pytest.raises(ValueError, match=r"palu has no hyperparameter\(s\) \['topk'\]"):
        palu_forget_mask(torch.zeros(1, 3, dtype=torch.long), {"topk": 5})
    with pytest.raises(ValueError, match="first_n"):
        palu_forget_mask(torch.zeros(1, 3, dtype=torch.long), {"first_n": 0})


def test_palu_top_1_onset_is_pdu_margin_on_onset_tokens():
    io = random_io(RANDOM_CLASSES)
    io.ref_logits = io.logits.detach().clone()  # reference = current model: its argmax is the current max
    palu = palu_loss(io, None, top_k=1, first_n=2, ns_constraint="none", alpha=0.0)
    onset = onset_mask(io.batch["token_classes"][:, 1:], 2)
    onset_labels = io.batch["labels"].clone()
    onset_labels[:, 1:][~onset] = IGNORE_INDEX
    pdu = pdu_loss(ModelIO(io.logits, {**io.batch, "labels": onset_labels}), None, alpha=0.0)
    assert palu.loss.item() == pytest.approx(pdu.loss.item())


def test_palu_without_forget_positions_is_finite():
    io = random_io([[0, 1, 1, 1, 0]])
    out = palu_loss(io, retain_with_nll_log2(), top_k=3)
    assert out.terms["forget"] == 0
    out.loss.backward()
    assert torch.isfinite(io.logits.grad).all()


def test_palu_full_vocab_without_ns_needs_no_reference():
    io = random_io(RANDOM_CLASSES)
    io.ref_logits = None
    assert math.isfinite(palu_loss(io, None, vocab="full", ns_constraint="none", alpha=0.0).loss.item())


# ----------------------------------------------------------------------------- baselines


def test_ga_is_minus_nll():
    assert ga_loss(uniform_io(vocab=6)).loss.item() == pytest.approx(-math.log(6))


def test_graddiff():
    out = graddiff_loss(uniform_io(vocab=6), retain_with_nll_log2(), gamma=2.0, alpha=0.5)
    assert out.loss.item() == pytest.approx(-2 * math.log(6) + 0.5 * LOG2)
    assert out.terms == pytest.approx({"forget": -math.log(6), "retain": LOG2})


def test_npo_at_the_reference_is_two_over_beta_log_two():
    io = random_io(RANDOM_CLASSES)
    io.ref_logits = io.logits.detach().clone()
    out = npo_loss(io, retain_with_nll_log2(), beta=0.1)
    assert out.loss.item() == pytest.approx(20 * LOG2 + LOG2)


def test_simnpo_on_a_known_log_prob():
    # Uniform over 4 tokens, 2 answer tokens: log pi = -2 log 4, (beta/|y|) log pi = -beta log 4.
    io = uniform_io(vocab=4, answer_tokens=2)
    out = simnpo_loss(io, retain_with_nll_log2())
    npo_part = (2 / 4.5) * math.log(1 + math.exp(-4.5 * math.log(4)))  # -(2/b) log sigmoid(b log 4)
    assert out.terms["forget"] == pytest.approx(npo_part)
    assert out.loss.item() == pytest.approx(0.125 * npo_part + LOG2)
    shifted_margin = simnpo_loss(io, None, beta=2.0, delta=1.0, alpha=0.0)
    assert shifted_margin.terms["forget"] == pytest.approx(math.log(1 + math.exp(-(2 * math.log(4) - 1))))


def test_me_gd_on_uniform_logits_is_retain_only():
    assert me_gd_loss(uniform_io(vocab=6), None, alpha=0.0).loss.item() == pytest.approx(0.0, abs=1e-6)
    out = me_gd_loss(uniform_io(vocab=6), retain_with_nll_log2())
    assert out.loss.item() == pytest.approx(LOG2)


def test_me_gd_on_a_peaked_distribution():
    io = uniform_io(vocab=4, answer_tokens=1)
    io.logits[0, 0] = torch.tensor([math.log(5), 0, 0, 0])  # p = (5/8, 1/8, 1/8, 1/8)
    kl = 0.25 * math.log(0.25 / (5 / 8)) + 0.75 * math.log(0.25 / (1 / 8))
    assert me_gd_loss(io, None, alpha=0.0).terms["forget"] == pytest.approx(kl)


def test_pdu_margin_on_known_logits():
    batch = make_batch([[PROMPT, ORDINARY, ORDINARY]])
    logits = torch.tensor([[[3.0, 0, 0, 0, 1, 2], [0, 0, 0, 0, 0, 6], [9, 0, 0, 0, 0, 0]]])
    out = pdu_loss(ModelIO(logits, batch), retain_with_nll_log2(), alpha=0.5, retain_loss_eps=0.25)
    # (3 - 1)^2 = 4 and (6 - 1)^2 = 25; the last position is dropped by the shift.
    assert out.terms["forget"] == pytest.approx(14.5)
    assert out.terms["retain"] == pytest.approx(LOG2)  # R itself is logged, as open-unlearning does
    # open-unlearning's gamma F + lambda (R - eps)
    assert out.loss.item() == pytest.approx(14.5 + 0.5 * (LOG2 - 0.25))


def test_pdu_measures_the_retain_loss_at_a_zero_dual():
    """At lambda = 0 the retain NLL is still measured (the dual grows back from it) and adds nothing."""
    out = pdu_loss(uniform_io(vocab=6), retain_with_nll_log2(), alpha=0.0)
    assert out.terms["retain"] == pytest.approx(LOG2)
    assert out.loss.item() == pytest.approx(out.terms["forget"])
    with pytest.raises(ValueError, match="retain"):
        pdu_loss(uniform_io(vocab=6), None, alpha=1.0)


def test_pdu_defaults_are_open_unlearnings_tofu_recipe():
    """[open-unlearning community/methods/PDU/run.sh, TOFU]: pref=100, dual_step_size=5, retain_loss_eps=0.3,
    dual_warmup_epochs=5; gamma 1 [configs/trainer/PDU.yaml]."""
    assert LOSSES["pdu"].defaults == {"gamma": 1.0, "alpha": 100.0, "retain_loss_eps": 0.3, "dual_step_size": 5.0,
                                      "dual_warmup_epochs": 5}
    dual = DualVariable()
    assert (dual.value, dual.step_size, dual.eps, dual.warmup_epochs) == (100.0, 5.0, 0.3, 5)


def test_dual_variable_updates_by_hand():
    """lambda <- max(0, lambda + eta (R - eps)) once the warm-up epochs are complete, as open-unlearning's
    PDU: its updates start after the end of the epoch where state.epoch >= dual_warmup_epochs."""
    dual = DualVariable(value=10.0, step_size=2.0, eps=0.5, warmup_epochs=1)
    assert dual.update(3.0, epoch=0.0) == 10.0  # warm-up: epoch 1 not complete, R ignored
    assert dual.update(3.0, epoch=0.75) == 10.0
    assert dual.update(3.0, epoch=1.0) == pytest.approx(15.0)  # 10 + 2 (3 - 0.5)
    assert dual.update(0.25, epoch=1.5) == pytest.approx(14.5)  # R < eps: the dual shrinks, 15 + 2 (0.25 - 0.5)
    assert dual.update(0.5, epoch=1.75) == pytest.approx(14.5)  # R = eps: unchanged
    dual.value = 0.4
    assert dual.update(0.0, epoch=3.0) == 0.0  # max(0, 0.4 + 2 (0 - 0.5)) = max(0, -0.6)
    assert dual.update(1.0, epoch=3.0) == pytest.approx(1.0)  # and back up: 0 + 2 (1 - 0.5)
    no_warmup = DualVariable(value=1.0, step_size=0.5, eps=1.0, warmup_epochs=0)
    assert no_warmup.update(3.0, epoch=0.0) == pytest.approx(2.0)  # from the first step
    assert no_warmup.update(0.0, epoch=0.1) == pytest.approx(1.5)
    zero_eps = DualVariable(value=1.0, step_size=1.0, eps=0.0, warmup_epochs=0)
    assert [zero_eps.update(r, 0.0) for r in (0.5, 0.25)] == [1.5, 1.75]  # eps = 0: it can only grow


def test_undial_at_the_reference_with_beta_zero_is_the_reference_entropy():
    io = uniform_io(vocab=4, answer_tokens=1)
    io.logits[0, 0] = torch.tensor([1.0, 2.0, 3.0, 0.0])
    io.ref_logits = io.logits.clone()
    total = sum(math.exp(v) for v in (1, 2, 3, 0))
    entropy = -sum(math.exp(v) / total * (v - math.log(total)) for v in (1, 2, 3, 0))
    assert undial_loss(io, beta=0.0).loss.item() == pytest.approx(entropy)


def test_undial_lowers_the_label_in_the_target():
    io = uniform_io(vocab=4, answer_tokens=1)
    label = io.batch["labels"][0, 1].item()
    io.logits[0, 0, label] = math.log(3)  # p = (1/2 on the label, 1/6 elsewhere)
    io.ref_logits = torch.zeros_like(io.logits)
    # q = softmax(-log 3 on the label): 1/10 on the label, 3/10 elsewhere.
    expected = 0.1 * math.log(2) + 0.9 * math.log(6)
    assert undial_loss(io, beta=math.log(3)).loss.item() == pytest.approx(expected)


def test_idk_nll():
    out = idk_nll_loss(uniform_io(vocab=6), retain_with_nll_log2())
    assert out.loss.item() == pytest.approx(math.log(6) + LOG2)


def test_idk_dpo_at_the_reference_is_two_over_beta_log_two():
    forget, idk = random_io(RANDOM_CLASSES, seed=1), random_io(RANDOM_CLASSES, seed=2)
    for io in (forget, idk):
        io.ref_logits = io.logits.detach().clone()
    assert idk_dpo_loss(forget, None, idk=idk, alpha=0.0).loss.item() == pytest.approx(20 * LOG2)  # beta 0.1
    assert idk_dpo_loss(forget, None, idk=idk, beta=0.5, alpha=0.0).loss.item() == pytest.approx(4 * LOG2)


def test_idk_dpo_forget_term_by_hand():
    """open-unlearning's compute_dpo_loss: -(2/beta) log sigmoid(beta (r_idk - r_forget)), r = log pi - log pi_ref."""
    forget, idk = uniform_io(vocab=4, answer_tokens=1), uniform_io(vocab=4, answer_tokens=1)
    forget.ref_logits, idk.ref_logits = torch.zeros_like(forget.logits), torch.zeros_like(idk.logits)
    # pi(y) = 1/4, pi_ref(y) = 3/6: r_forget = log(1/4) - log(1/2) = -log 2
    forget.ref_logits[0, 0, forget.batch["labels"][0, 1]] = math.log(3)
    idk.logits[0, 0, idk.batch["labels"][0, 1]] = math.log(3)  # pi(idk) = 1/2, pi_ref(idk) = 1/4: r_idk = log 2
    # beta (r_idk - r_forget) = beta 2 log 2; at beta = 0.5, sigmoid(log 2) = 2/3
    assert idk_dpo_loss(forget, None, idk=idk, beta=0.5, alpha=0.0).terms["forget"] == pytest.approx(4 * math.log(1.5))
    default = idk_dpo_loss(forget, retain_with_nll_log2(), idk=idk)  # beta 0.1, gamma 1, alpha 1
    s = 2 ** 0.2 / (1 + 2 ** 0.2)  # sigmoid(0.1 * 2 log 2)
    assert default.terms["forget"] == pytest.approx(-20 * math.log(s))
    assert default.loss.item() == pytest.approx(-20 * math.log(s) + LOG2)
    assert LOSSES["idk_dpo"].defaults == {"beta": 0.1, "gamma": 1.0, "alpha": 1.0}  # [configs/trainer/DPO.yaml]


def test_idk_dpo_prefers_the_refusal():
    forget, idk = random_io(RANDOM_CLASSES, seed=1), random_io(RANDOM_CLASSES, seed=2)
    forget.ref_logits, idk.ref_logits = forget.logits.detach().clone(), idk.logits.detach().clone()
    idk_dpo_loss(forget, None, idk=idk, alpha=0.0).loss.backward()
    # Descending the loss raises the refusal's log-probability and lowers the original answer's.
    step = 0.1
    up = sequence_logprob(idk.logits - step * idk.logits.grad, idk.batch["labels"])
    down = sequence_logprob(forget.logits - step * forget.logits.grad, forget.batch["labels"])
    assert (up > sequence_logprob(idk.logits, idk.batch["labels"])).all()
    assert (down < sequence_logprob(forget.logits, forget.batch["labels"])).all()


# ----------------------------------------------------------------------------- a tiny Llama, every method


def tiny_llama(seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
    )
    return LlamaForCausalLM(config)


def llama_batch(seed: int) -> dict[str, torch.Tensor]:
    classes = [[0, 0, 0, 2, 2, 2, 1, 2, 1, 1], [0, 0, 1, 2, 1, 1, 1, 0, 0, 0]]
    batch = make_batch(classes, vocab=64, seed=seed)
    batch["attention_mask"][1, 7:] = 0  # right padding
    return batch


def test_answer_nll_matches_the_model_loss():
    model, batch = tiny_llama(0), llama_batch(0)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    assert ga_loss(ModelIO(out.logits, batch)).loss.item() == pytest.approx(-out.loss.item(), rel=1e-5)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_method_backpropagates_through_a_tiny_llama(name):
    method = LOSSES[name]
    model, reference = tiny_llama(0), tiny_llama(1)
    reference.requires_grad_(False)

    def io(batch: dict[str, torch.Tensor]) -> ModelIO:
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        ref_logits = reference(**inputs).logits if method.needs_reference else None
        return ModelIO(model(**inputs).logits, batch, ref_logits)

    forget_batch, refusal_batch = llama_batch(seed=1), llama_batch(seed=2)
    forget = io(refusal_batch if method.refusals == "forget" else forget_batch)
    retain = io(llama_batch(seed=3)) if method.needs_retain else None
    extra = {"idk": io(refusal_batch)} if method.refusals == "idk" else {}
    out = method.fn(forget, retain, **extra)

    out.loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0
    assert all(math.isfinite(v) for v in out.terms.values())


def test_registry():
    names = {"ga", "graddiff", "npo", "simnpo", "me_gd", "pdu", "undial", "idk_nll", "idk_dpo", "palu"}
    assert set(LOSSES) == names
    assert LOSSES["simnpo"].defaults == {"beta": 4.5, "delta": 0.0, "gamma": 0.125, "alpha": 1.0}
    assert LOSSES["npo"].needs_reference and not LOSSES["ga"].needs_retain
    assert LOSSES["palu"].defaults["top_k"] == 50
    assert "idk" not in LOSSES["idk_dpo"].defaults  # required keyword, no default
    # every retain term is the answer NLL: no loss reads the reference's logits on the retain batch
    assert not any(m.reference_on_retain for m in LOSSES.values())
    with pytest.raises(ValueError, match="reference_on_retain"):
        Method("kl_retain", graddiff_loss, needs_reference=False, needs_retain=True, reference_on_retain=True)


# ----------------------------------------------------------------------------- argument errors


@pytest.mark.parametrize(
    ("hyper", "message"),
    [
        ({"top_k": 0}, "top_k"),
        ({"top_k": 7}, r"top_k=7 is larger than the vocabulary \(6 tokens\); use top_k <= 6"),
        ({"first_n": 0}, "first_n"),
        ({"first_n": -2}, "first_n"),
        ({"alpha": -1.0}, "alpha"),
        ({"gamma": -1.0}, "gamma"),
        ({"temporal": "prefix"}, "temporal='prefix'"),
        ({"vocab": "half"}, "vocab"),
        ({"target": "median"}, "target"),
        ({"form": "cubic"}, "form"),
        ({"ns_constraint": "l2"}, "ns_constraint"),
    ],
)
def test_palu_argument_errors(hyper, message):
    with pytest.raises(ValueError, match=message):
        palu_loss(random_io(RANDOM_CLASSES), None, **{"top_k": 3, "alpha": 0.0, **hyper})


def test_top_k_error_message_names_the_vocabulary():
    io = random_io([[0, 2, 1]], vocab=49152)
    expected = "top_k=50000 is larger than the vocabulary (49152 tokens); use top_k <= 49152"
    with pytest.raises(ValueError) as error:
        palu_loss(io, None, top_k=50000, alpha=0.0)
    assert str(error.value) == expected


def test_missing_inputs_raise():
    io = random_io(RANDOM_CLASSES)
    with pytest.raises(ValueError, match="ref_logits"):
        palu_loss(ModelIO(io.logits, io.batch), None, top_k=3, alpha=0.0)
    with pytest.raises(ValueError, match="ref_logits"):
        npo_loss(ModelIO(io.logits, io.batch), None, alpha=0.0)
    with pytest.raises(ValueError, match="ref_logits"):
        palu_loss(ModelIO(io.logits, io.batch, io.ref_logits[:, :-1]), None, top_k=3, alpha=0.0)
    without_classes = {k: v for k, v in io.batch.items() if k != "token_classes"}
    with pytest.raises(ValueError, match="token_classes"):
        palu_loss(ModelIO(io.logits, without_classes, io.ref_logits), None, top_k=3, alpha=0.0)
    with pytest.raises(ValueError, match="retain"):
        graddiff_loss(io, None)
    with pytest.raises(ValueError, match="idk"):
        idk_dpo_loss(io, None, idk=random_io(RANDOM_CLASSES[:1]), alpha=0.0)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda io: npo_loss(io, None, beta=0.0, alpha=0.0), "beta"),
        (lambda io: simnpo_loss(io, None, beta=-1.0, alpha=0.0), "beta"),
        (lambda io: undial_loss(io, beta=-1.0), "beta"),
        (lambda io: pdu_loss(io, None, alpha=-0.1), "alpha"),
        (lambda io: onset_mask(io.batch["token_classes"], 0), "first_n"),
        (lambda io: DualVariable(step_size=0.0), "step_size"),
        (lambda io: DualVariable(eps=-0.1), "eps"),
        (lambda io: DualVariable(warmup_epochs=-1), "warmup_epochs"),
        (lambda io: pdu_loss(io, None, alpha=0.0, retain_loss_eps=-1.0), "retain_loss_eps"),
        (lambda io: pdu_loss(io, None, alpha=0.0, dual_step_size=0.0), "dual_step_size"),
        (lambda io: pdu_loss(io, None, alpha=0.0, dual_warmup_epochs=-1), "dual_warmup_epochs"),
    ],
)
def test_baseline_argument_errors(call, name):
    with pytest.raises(ValueError, match=name):
        call(random_io(RANDOM_CLASSES))
