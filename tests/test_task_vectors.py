"""Tests of palu_perta.task_vectors: construction, exact round trips, arithmetic, norms, tied weights,
dtype casting, files and mismatch errors, on a tiny random Llama."""

import copy

import pytest
import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

from palu_perta.task_vectors import FORMAT_VERSION, TaskVector


def tiny_llama(seed: int = 0, tie: bool = False, intermediate: int = 64) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=intermediate,
        tie_word_embeddings=tie,
    )
    return LlamaForCausalLM(config)


def quantised(model: LlamaForCausalLM) -> LlamaForCausalLM:
    """Round every parameter to a multiple of 2^-10: sums and differences of such small numbers are exact."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.round(p * 1024) / 1024)
    return model


def shifted_copy(model: LlamaForCausalLM, seed: int = 1) -> LlamaForCausalLM:
    """A copy with k / 64 (k in -3..3) added to each parameter entry: exact on a quantised model."""
    out = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(torch.randint(-3, 4, p.shape, generator=generator).float() / 64)
    return out


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def assert_params_equal(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    got = dict(model.named_parameters())
    assert list(got) == list(expected)
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name


@pytest.fixture()
def pair() -> tuple[LlamaForCausalLM, LlamaForCausalLM]:
    original = quantised(tiny_llama())
    return original, shifted_copy(original)


def test_vector_of_a_model_with_itself_is_zero():
    model = tiny_llama()
    tau = TaskVector.from_models(model, model)
    assert list(tau) == [name for name, _ in model.named_parameters()]
    assert all(t.dtype == torch.float32 and not t.any() for t in tau.vector.values())
    assert tau.norm() == 0.0


def test_apply_adds_the_difference_and_subtracting_restores_exactly(pair):
    original, finetuned = pair
    before = params(original)
    tau = TaskVector.from_models(original, finetuned)
    model = copy.deepcopy(original)
    assert tau.apply_to(model) is model
    assert_params_equal(model, params(finetuned))
    tau.apply_to(model, scale=-1.0)
    assert_params_equal(model, before)
    assert_params_equal(original, before)  # from_models leaves its inputs alone


def test_state_dicts_give_the_same_vector_and_skip_non_float(pair):
    original, finetuned = pair
    original_sd = dict(original.state_dict(), step=torch.tensor(3))
    finetuned_sd = dict(finetuned.state_dict(), step=torch.tensor(5))
    from_sd = TaskVector.from_state_dicts(original_sd, finetuned_sd)
    from_models = TaskVector.from_models(original, finetuned)
    assert list(from_sd) == list(from_models)
    assert all(torch.equal(from_sd[name], from_models[name]) for name in from_models)


def test_dtype_option_and_casting_to_a_bf16_model(pair):
    original, finetuned = pair
    tau = TaskVector.from_models(original, finetuned, dtype=torch.float64)
    assert all(t.dtype == torch.float64 for t in tau.vector.values())
    model = copy.deepcopy(original).to(torch.bfloat16)
    before = params(model)
    tau.apply_to(model, scale=0.5)
    for name, p in model.named_parameters():
        assert p.dtype == torch.bfloat16
        assert torch.equal(p, (before[name].double() + 0.5 * tau[name]).to(torch.bfloat16)), name


def test_arithmetic(pair):
    original, finetuned = pair
    tau = TaskVector.from_models(original, finetuned)
    other = TaskVector.from_models(original, shifted_copy(original, seed=2))
    weights = {name: torch.rand(t.shape, generator=torch.Generator().manual_seed(0)) for name, t in tau.items()}
    cases = {
        "add": (tau + other, lambda n: tau[n] + other[n]),
        "sub": (tau - other, lambda n: tau[n] - other[n]),
        "neg": (-tau, lambda n: -tau[n]),
        "scalar right": (tau * 0.25, lambda n: tau[n] * 0.25),
        "scalar left": (3 * tau, lambda n: 3 * tau[n]),
        "weights": (tau * weights, lambda n: tau[n] * weights[n]),
        "vector": (tau * other, lambda n: tau[n] * other[n]),
        "sum": (sum([tau, other]), lambda n: tau[n] + other[n]),
    }
    for case, (result, expected) in cases.items():
        assert isinstance(result, TaskVector), case
        assert list(result) == list(tau), case
        assert all(torch.equal(result[n], expected(n)) for n in tau), case
    assert (tau - tau).norm() == 0.0
    with pytest.raises(TypeError):
        tau * "2"
    with pytest.raises(ValueError, match="lm_head.weight"):
        tau * {name: w for name, w in weights.items() if name != "lm_head.weight"}
    with pytest.raises(ValueError, match="shape"):
        tau * dict(weights, **{"model.norm.weight": torch.ones(3)})


def test_norms(pair):
    tau = TaskVector.from_models(*pair)
    flat = torch.cat([t.flatten() for t in tau.vector.values()]).double()
    assert tau.norm() == pytest.approx(float(flat.norm()), rel=1e-12)
    per_tensor = tau.norms_per_tensor()
    assert per_tensor["model.norm.weight"] == pytest.approx(float(tau["model.norm.weight"].double().norm()))
    per_layer = tau.norms_per_layer()
    assert list(per_layer) == ["model.embed_tokens", "layers.0", "layers.1", "model.norm", "lm_head"]
    layer0 = [t.flatten() for name, t in tau.items() if name.startswith("model.layers.0.")]
    assert per_layer["layers.0"] == pytest.approx(float(torch.cat(layer0).double().norm()), rel=1e-9)
    assert sum(n**2 for n in per_layer.values()) == pytest.approx(tau.norm() ** 2, rel=1e-9)


def test_save_load_roundtrip_is_exact_and_atomic(pair, tmp_path):
    tau = TaskVector.from_models(*pair) * 0.1
    path = tau.save(tmp_path / "sub" / "tau.safetensors")
    assert sorted(p.name for p in path.parent.iterdir()) == ["tau.safetensors"]  # no temporary left
    loaded = TaskVector.load(path)
    assert list(loaded) == list(tau)
    assert all(torch.equal(loaded[n], tau[n]) for n in tau)
    assert FORMAT_VERSION == "1"


def test_load_rejects_other_files(tmp_path):
    save_file({"x": torch.zeros(2)}, tmp_path / "other.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="not a task vector"):
        TaskVector.load(tmp_path / "other.safetensors")
    save_file(
        {"x": torch.zeros(2)},
        tmp_path / "future.safetensors",
        metadata={"format": "palu_perta.TaskVector", "format_version": "99"},
    )
    with pytest.raises(ValueError, match="version"):
        TaskVector.load(tmp_path / "future.safetensors")


def test_mismatching_models_raise_naming_the_key():
    small, wide = tiny_llama(), tiny_llama(intermediate=96)
    with pytest.raises(ValueError, match=r"model\.layers\.0\.mlp\.gate_proj\.weight.*shape"):
        TaskVector.from_models(small, wide)
    sd = small.state_dict()
    missing = {name: t for name, t in sd.items() if name != "model.norm.weight"}
    with pytest.raises(ValueError, match=r"'model\.norm\.weight' is missing"):
        TaskVector.from_state_dicts(sd, missing)
    with pytest.raises(ValueError, match=r"unexpected key 'extra'"):
        TaskVector.from_state_dicts(sd, dict(sd, extra=torch.zeros(1)))
    tau = TaskVector.from_models(small, small)
    with pytest.raises(ValueError, match="does not match the model"):
        tau.apply_to(wide)
    with pytest.raises(ValueError, match="floating"):
        TaskVector({"x": torch.zeros(2, dtype=torch.int64)})


def test_tied_weights_are_applied_once():
    original = quantised(tiny_llama(tie=True))
    assert original.lm_head.weight is original.model.embed_tokens.weight
    finetuned = shifted_copy(original)
    tau = TaskVector.from_models(original, finetuned)
    assert "lm_head.weight" not in tau.vector and "model.embed_tokens.weight" in tau.vector
    from_sd = TaskVector.from_state_dicts(original.state_dict(), finetuned.state_dict())
    assert list(from_sd) == list(tau)  # the alias lm_head.weight shares storage: dropped
    model = tau.apply_to(copy.deepcopy(original))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert torch.equal(model.model.embed_tokens.weight, finetuned.model.embed_tokens.weight)
