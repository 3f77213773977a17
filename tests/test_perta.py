"""Tests of palu_perta.perta: the weight formula and its limits, the control weights, unlearning (TV
reproduced bit for bit), the weight summary, and the cached pipeline the notebooks call (reinforced model,
task vector, importances, unlearned-model factories, lambda calibration, analysis helpers)."""

import copy
import json
import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from palu_perta import perta
from palu_perta.config import FinetuneConfig, get_profile
from palu_perta.data import synthetic_benchmark
from palu_perta.importance import parameter_importance
from palu_perta.models import load_model, save_model, tiny_model
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


# ----------------------------------------------------------------------------------------- the cached pipeline

FAST = FinetuneConfig(epochs=2, learning_rate=5e-3, batch_size=4, per_device_batch_size=4, warmup_ratio=0.0,
                      bf16=False, max_length=96)


def test_perta_config_scales_the_reinforcement_lr_like_the_profile():
    paper = perta.perta_config(get_profile("paper"))
    assert (paper.reinforce.epochs, paper.reinforce.learning_rate) == (5, pytest.approx(1e-5))  # MUSE's recipe
    for name in ("cpu", "smoke"):
        profile = get_profile(name)
        cfg = perta.perta_config(profile)
        assert cfg.reinforce.learning_rate == pytest.approx(profile.finetune.learning_rate)  # 1e-5 * lr / 1e-5
        assert cfg.reinforce.epochs == 5 and cfg.reinforce.batch_size == profile.finetune.batch_size
        assert cfg.batch_size == profile.finetune.per_device_batch_size
    changed = perta.perta_config(get_profile("smoke"), fraction=0.5, reinforce={"epochs": 1})
    assert (changed.fraction, changed.reinforce.epochs) == (0.5, 1)
    with pytest.raises(ValueError, match="importance_at"):
        changed.replace(importance_at="elsewhere")
    with pytest.raises(ValueError, match="fraction"):
        changed.replace(fraction=0.0)


@pytest.fixture()
def setup(tmp_path, monkeypatch, tiny):
    """A smoke-sized profile with a fast reinforcement, a tiny benchmark, and tiny 'target' and 'retain'
    models saved as directories (so that nothing else has to be trained), in a fresh artifacts directory."""
    model, tokenizer = tiny
    target, retain = tmp_path / "target", tmp_path / "retain"
    save_model(model, tokenizer, target)
    save_model(tiny_model(tokenizer, seed=1), tokenizer, retain)
    monkeypatch.setenv("PALU_PERTA_ARTIFACTS", str(tmp_path / "artifacts"))
    profile = get_profile("smoke", finetune=FAST, max_new_tokens=4)
    bench = synthetic_benchmark(3, 3, "forget10", n_holdout_authors=1, n_world_facts=2)
    return profile, bench, target, retain, perta.perta_config(profile)


def params_of(directory) -> dict[str, torch.Tensor]:
    model, _ = load_model(str(directory), device="cpu", dtype=torch.float32)
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_reinforced_model_and_task_vector_are_cached(setup, monkeypatch):
    profile, bench, target, _, cfg = setup
    theta_ft = perta.reinforced_model(profile, bench, target, cfg, progress=False)
    assert perta.reinforced_model(profile, bench, target, cfg, progress=False) == theta_ft
    assert perta.build_time(theta_ft) > 0  # the Trainer's train_runtime
    tau = perta.task_vector_for(profile, target, theta_ft)
    before, after = params_of(target), params_of(theta_ft)
    assert list(tau) == list(before)
    assert all(torch.equal(tau[name], after[name] - before[name]) for name in tau)
    assert tau.norm() > 0
    entry = perta.task_vector_entry(profile, target, theta_ft)
    assert json.loads((entry / "timing.json").read_text())["norm"] == pytest.approx(tau.norm())

    def fail(*args, **kwargs):
        raise AssertionError("rebuilt a cached artifact")

    monkeypatch.setattr(perta, "finetuned_model", fail)
    monkeypatch.setattr(TaskVector, "from_models", fail)
    with pytest.raises(AssertionError):  # the guard works...
        perta.reinforced_model(profile, bench, target, cfg.replace(reinforce={"epochs": 1}), progress=False)
    again = perta.task_vector_for(profile, target, theta_ft)  # ...and the cached vector needs no rebuild
    assert all(torch.equal(again[name], tau[name]) for name in tau)


@pytest.mark.parametrize("method", ["grad", "fisher"])
def test_importance_for_matches_parameter_importance_and_is_cached(setup, monkeypatch, method):
    profile, bench, target, _, _ = setup
    cached = perta.importance_for(profile, target, bench.forget, method, label="forget", progress=False)
    model, tokenizer = load_model(str(target), device="cpu", dtype=torch.float32)
    batches = perta.importance_batches(tokenizer, bench.forget, profile.finetune.max_length,
                                       profile.finetune.per_device_batch_size)
    direct = parameter_importance(model, batches, method, progress=False)
    assert list(cached) == list(direct)
    for name in direct:
        torch.testing.assert_close(cached[name], direct[name], rtol=1e-6, atol=0)
    monkeypatch.setattr(perta, "parameter_importance", lambda *a, **k: pytest.fail("recomputed"))
    again = perta.importance_for(profile, target, bench.forget, method, label="forget", batch_size=1, progress=False)
    assert all(torch.equal(again[name], cached[name]) for name in cached)  # batch size is not part of the key
    entry = perta.importance_entry(profile, target, bench.forget, method, label="forget")
    assert perta.build_time(entry) >= 0


def test_unlearned_factories_and_keys(setup, tmp_path):
    profile, bench, target, _, cfg = setup
    models = {method: perta.unlearned(profile, bench, target, method, 2.0, cfg, progress=False)
              for method in perta.METHODS}
    assert not (tmp_path / "artifacts" / "importance").exists(), "a key is computed without building anything"
    assert "weights" not in models["tv"].key and "weights" in models["perta-grad"].key
    keys = [json.dumps(m.key, sort_keys=True) for m in models.values()]
    keys.append(json.dumps(perta.unlearned(profile, bench, target, "tv", 3.0, cfg).key, sort_keys=True))
    keys.append(json.dumps(perta.unlearned(profile, bench, target, "perta-grad", 2.0, cfg.replace(p=2.0)).key,
                           sort_keys=True))
    assert len(set(keys)) == len(keys)
    assert models["perta-fisher"].name == "perta-fisher-lam2"

    theta_ft = perta.reinforced_model(profile, bench, target, cfg, progress=False)
    tau = perta.task_vector_for(profile, target, theta_ft)
    original, _ = load_model(str(target))
    for method, weights in [("tv", None),
                            ("perta-grad", perta.perta_weights_for(profile, bench, target, "grad", cfg, False))]:
        model, tokenizer = models[method].factory()
        expected = perta_unlearn(original, tau, weights, 2.0)
        reference = dict(expected.named_parameters())
        assert all(torch.equal(p, reference[name]) for name, p in model.named_parameters())
        assert tokenizer.eos_token_id is not None
    times = perta.build_times(profile, bench, target, cfg, progress=False)
    assert set(times) == {"reinforce", "tau", "grad_forget", "grad_retain", "fisher_forget", "fisher_retain"}
    assert all(t is not None and t >= 0 for t in times.values())
    with pytest.raises(ValueError, match="method"):
        perta.unlearned(profile, bench, target, "ga", 1.0)
    with pytest.raises(ValueError, match="lam"):
        perta.unlearned(profile, bench, target, "tv", -1.0)


def fake_probe(monkeypatch, target_rouge, retain_rouge, curve):
    """Replace the generation probe: the target and retain models (first two calls) score the given
    ROUGE-L; a TV model made by perta_unlearn at lambda scores curve(lambda)."""
    calls = []
    unlearn = perta.perta_unlearn

    def tagged(original, tau, weights, lam):
        model = unlearn(original, tau, weights, lam)
        model.probe_lambda = lam
        return model

    def probe(model, tokenizer, records, profile):
        lam = getattr(model, "probe_lambda", None)
        calls.append(lam)
        if lam is not None:
            return curve(lam)
        return target_rouge if len(calls) == 1 else retain_rouge

    monkeypatch.setattr(perta, "perta_unlearn", tagged)
    monkeypatch.setattr(perta, "forget_rouge", probe)
    return calls


def test_calibrate_lambda_walks_up_then_bisects(setup, monkeypatch):
    profile, bench, target, retain, cfg = setup
    calls = fake_probe(monkeypatch, 1.0, 0.3, lambda lam: 1 / (1 + lam))  # forgets from lambda = 7/3 on
    result = perta.calibrate_lambda(profile, bench, target, retain, points=4, cfg=cfg)
    assert [lam for lam, _ in result["probes"]] == pytest.approx([1, 2, 4, 4 / math.sqrt(2)])
    assert result["lam_star"] == pytest.approx(2 * math.sqrt(2))
    assert result["grid"] == [1.41, 2.83, 5.66, 11.3]
    assert (result["target_rouge"], result["retain_rouge"], result["note"]) == (1.0, 0.3, "")
    n = len(calls)
    assert perta.calibrate_lambda(profile, bench, target, retain, points=4, cfg=cfg) == result
    assert len(calls) == n, "the calibration is cached"


def test_calibrate_lambda_walks_down_and_handles_no_signal(setup, monkeypatch):
    profile, bench, target, retain, cfg = setup
    fake_probe(monkeypatch, 1.0, 0.3, lambda lam: 1 / (1 + 100 * lam))  # forgets from lambda = 7/300 on
    result = perta.calibrate_lambda(profile, bench, target, retain, points=2, cfg=cfg)
    assert result["lam_star"] == pytest.approx(1 / 32)  # 1/32 forgets, 1/64 and 1/(32 sqrt 2) do not
    assert len(result["probes"]) == 8 and result["grid"] == [0.0156, 0.0312]

    fake_probe(monkeypatch, 0.2, 0.2, lambda lam: pytest.fail("no probe without signal"))
    flat = perta.calibrate_lambda(profile, bench, target, retain, points=3, cfg=cfg, start=2.0)
    assert flat["probes"] == [] and "no signal" in flat["note"] and flat["grid"] == [1.0, 2.0, 4.0]


def test_compare_at_equal_forgetting():
    rows = [{"method": m, "lam": lam, "forget_Q_A_ROUGE": r, "model_utility": mu} for m, lam, r, mu in [
        ("tv", 1, 0.8, 0.45), ("tv", 2, 0.4, 0.30),
        ("perta-grad", 1, 0.9, 0.50), ("perta-grad", 2, 0.7, 0.46), ("perta-grad", 4, 0.35, 0.40),
        ("perta-fisher", 1, 0.95, 0.5), ("perta-fisher", 2, 0.85, 0.2)]]
    out = {(c["method"], c["baseline_lam"]): c for c in perta.compare_at_equal_forgetting(rows, target_utility=0.5)}
    assert len(out) == 4
    grad1 = out["perta-grad", 1]
    assert (grad1["lam"], grad1["mu"]) == (2, 0.46) and grad1["gain"] == pytest.approx(0.01)
    assert grad1["recovered"] == pytest.approx(0.01 / 0.05)
    assert out["perta-grad", 2]["lam"] == 4 and out["perta-grad", 2]["gain"] == pytest.approx(0.10)
    assert out["perta-fisher", 1]["mu"] is None and out["perta-fisher", 1]["gain"] is None
    assert out["perta-fisher", 2]["recovered"] is None


def test_analysis_helpers():
    names = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight",
             "model.layers.0.input_layernorm.weight", "model.norm.weight", "lm_head.weight", "something.else"]
    assert [perta.layer_type(n) for n in names] == ["embeddings", "attention", "mlp", "norm", "norm", "embeddings",
                                                    "other"]
    values = {"a": torch.arange(100.0).reshape(10, 10), "b": torch.arange(100.0, 200.0)}
    masks = perta.top_mask(values, 0.05)
    assert int(masks["a"].sum()) == 0 and masks["b"].nonzero().squeeze(1).tolist() == list(range(90, 100))
    assert perta.overlap(masks, masks) == 1.0
    shifted = perta.top_mask({"a": values["a"], "b": values["b"].flip(0)}, 0.05)
    assert perta.overlap(masks, shifted) == 0.0
    zeros = perta.top_mask({"a": torch.zeros(10), "b": torch.tensor([0.0, 1.0])}, 0.5)
    assert int(zeros["a"].sum()) == 0 and zeros["b"].tolist() == [False, True]  # ties at zero are not "top"
    counts, edges = perta.weights_histogram({"a": torch.tensor([0.0, 0.1, 0.95]), "b": torch.ones(3)}, bins=10)
    assert counts.sum() == 6 and counts[-1] == 4 and len(edges) == 11
    sample = perta.values_by_type({"model.layers.0.mlp.w": torch.ones(50), "model.norm.weight": torch.ones(5)}, 20)
    assert {k: len(v) for k, v in sample.items()} == {"mlp": 20, "norm": 5}
