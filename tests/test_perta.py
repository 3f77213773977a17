"""Tests of palu_perta.perta: the weight formula and its limits, the control weights, unlearning (TV
reproduced bit for bit) and the weight summary."""

import copy
import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from palu_perta.importance import parameter_importance
from palu_perta.perta import (
    constant_weights_like,
    global_mean,
    perta_unlearn,
    perta_weights,
    random_weights_like,
    weights_summary,
)
from palu_perta.task_vectors import TaskVector


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def importances(seed: int) -> dict[str, torch.Tensor]:
    """Positive importances spread over 24 orders of magnitude (1e-24 ... 1), as Fisher values can be."""
    generator = torch.Generator().manual_seed(seed)
    return {
        name: 10 ** (-24 * torch.rand(shape, generator=generator)) for name, shape in [("a", (50, 40)), ("b", (30,))]
    }


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.fixture()
def models() -> tuple[LlamaForCausalLM, TaskVector]:
    original = tiny_llama(0)
    finetuned = copy.deepcopy(original)
    with torch.no_grad():
        for p in finetuned.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return original, TaskVector.from_models(original, finetuned)


def test_p1_is_the_ratio_and_weights_lie_in_the_unit_interval():
    forget = {"a": torch.tensor([1.0, 3.0, 0.0, 2.0, 0.0]), "b": torch.tensor([[1e-30, 5.0]])}
    retain = {"a": torch.tensor([1.0, 1.0, 2.0, 0.0, 0.0]), "b": torch.tensor([[3e-30, 0.0]])}
    w = perta_weights(forget, retain)
    torch.testing.assert_close(w["a"], torch.tensor([0.5, 0.75, 0.0, 1.0, 0.0]))
    torch.testing.assert_close(w["b"], torch.tensor([[0.25, 1.0]]))  # eps is relative: tiny values still count
    random = perta_weights(importances(0), importances(1))
    assert all(((0 <= t) & (t <= 1)).all() and t.dtype == torch.float32 for t in random.values())


def test_weights_are_invariant_to_rescaling_both_importances():
    forget, retain = importances(0), importances(1)
    scaled = perta_weights({n: 1e-10 * t for n, t in forget.items()}, {n: 1e-10 * t for n, t in retain.items()}, p=2.0)
    for name, w in perta_weights(forget, retain, p=2.0).items():
        torch.testing.assert_close(scaled[name], w)


def test_p_to_zero_gives_one_half():
    for w in perta_weights(importances(0), importances(1), p=1e-6).values():
        torch.testing.assert_close(w, torch.full_like(w, 0.5), atol=1e-4, rtol=0)


@pytest.mark.parametrize("p", [1e4, math.inf])
def test_large_p_gives_a_hard_mask(p):
    forget, retain = importances(0), importances(1)
    forget["b"][:5] = retain["b"][:5]  # ties
    for name, w in perta_weights(forget, retain, p=p).items():
        f, r = forget[name], retain[name]
        expected = torch.where(f > r, 1.0, torch.where(f < r, 0.0, 0.5))
        checked = ((f.log() - r.log()).abs() > 0.02) | (f == r)  # p |log(f / r)| > 200: (f / r)^p underflows
        assert checked.float().mean() > 0.9
        assert torch.equal(w[checked], expected[checked]), name


def test_weight_argument_errors():
    forget, retain = importances(0), importances(1)
    for p in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="p must be > 0"):
            perta_weights(forget, retain, p=p)
    with pytest.raises(ValueError, match=">= 0"):
        perta_weights({"a": torch.tensor([-1.0])}, {"a": torch.tensor([1.0])})
    with pytest.raises(ValueError, match="'b' is missing"):
        perta_weights(forget, {"a": retain["a"]})


def test_controls_keep_the_global_mean():
    weights = perta_weights(importances(0), importances(1))
    mean = global_mean(weights)
    constant = constant_weights_like(weights)
    assert all(torch.equal(c, torch.full_like(weights[n], mean)) for n, c in constant.items())
    high = {name: 1 - 0.1 * w for name, w in weights.items()}  # mean above 1/2 takes the other affine map
    for target in (weights, high):
        random = random_weights_like(target, seed=3)
        assert list(random) == list(target)
        assert all(r.shape == target[n].shape and ((0 <= r) & (r <= 1)).all() for n, r in random.items())
        assert global_mean(random) == pytest.approx(global_mean(target), abs=1e-6)
        assert all(torch.equal(r, random_weights_like(target, seed=3)[n]) for n, r in random.items())
        assert not torch.equal(random["a"], random_weights_like(target, seed=4)["a"])


def test_weights_of_one_reproduce_task_arithmetic_bit_for_bit(models):
    original, tau = models
    before = params(original)
    tv = tau.apply_to(copy.deepcopy(original), scale=-0.7)
    none = perta_unlearn(original, tau, None, 0.7)
    ones = perta_unlearn(original, tau, {name: torch.ones_like(t) for name, t in tau.items()}, 0.7)
    expected = params(tv)
    for model in (none, ones):
        assert model is not original
        assert all(torch.equal(p, expected[n]) for n, p in model.named_parameters())
    assert all(torch.equal(p, before[n]) for n, p in original.named_parameters())  # original untouched


def test_perta_subtracts_the_weighted_vector(models):
    original, tau = models
    weights = random_weights_like({name: torch.full_like(t, 0.3) for name, t in tau.items()}, seed=0)
    unlearned = perta_unlearn(original, tau, weights, lam=2.0)
    before = params(original)
    for name, p in unlearned.named_parameters():
        torch.testing.assert_close(p, before[name] - 2.0 * weights[name] * tau[name])
    zeros = perta_unlearn(original, tau, {name: torch.zeros_like(t) for name, t in tau.items()}, lam=5.0)
    assert all(torch.equal(p, before[n]) for n, p in zeros.named_parameters())


@pytest.mark.parametrize("lam", [-0.1, math.nan, math.inf])
def test_lambda_must_be_finite_and_non_negative(models, lam):
    original, tau = models
    with pytest.raises(ValueError, match="lam"):
        perta_unlearn(original, tau, None, lam)


def test_importance_to_unlearning_end_to_end(models):
    original, tau = models
    ids = torch.tensor([[5, 9, 14, 3, 7, 22], [8, 2, 40, 17, 6, 1]])
    labels = ids.clone()
    labels[:, :3] = -100
    forget = [{"input_ids": ids[:1], "attention_mask": torch.ones_like(ids[:1]), "labels": labels[:1]}]
    retain = [{"input_ids": ids[1:], "attention_mask": torch.ones_like(ids[1:]), "labels": labels[1:]}]
    for method in ("grad", "fisher"):
        weights = perta_weights(*(parameter_importance(original, d, method, progress=False) for d in (forget, retain)))
        assert list(weights) == list(tau)
        unlearned = perta_unlearn(original, tau, weights, lam=1.0)
        assert all(torch.isfinite(p).all() for p in unlearned.parameters())


def test_weights_summary():
    values = {"a": torch.linspace(0, 1, 10_001), "b": torch.tensor([[0.5, 0.5]])}
    summary = weights_summary(values)
    assert summary["numel"] == 10_003
    assert summary["mean"] == pytest.approx(0.5)
    assert (summary["min"], summary["max"]) == (0.0, 1.0)
    for q in (1, 5, 25, 50, 75, 95, 99):
        assert summary[f"q{q:02d}"] == pytest.approx(q / 100, abs=2e-4)
    assert summary["frac_above_half"] == pytest.approx(5000 / 10_003)
    constant = weights_summary(constant_weights_like(values))
    assert all(constant[f"q{q:02d}"] == constant["mean"] for q in (1, 50, 99))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        weights_summary({"a": torch.tensor([1.5])})
