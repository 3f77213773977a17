"""The memory table (palu_perta.memory): hand-computed cases, parameter counts checked against transformers and
peft, and docs/memory.md equal to what the function computes now."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from palu_perta import memory
from palu_perta.config import repo_root
from palu_perta.lora import LoraSettings, add_adapters, trainable_parameters
from palu_perta.memory import ARCHITECTURES, Architecture, training_memory

# hidden 4, 1 layer, intermediate 8, vocab 10, 2 heads of 2, 1 key-value head
SMALL = Architecture("small", hidden=4, layers=1, intermediate=8, vocab=10, heads=2, kv_heads=1, tied=True)


def test_hand_computed_counts():
    # q 4x4 + k 4x2 + v 4x2 + o 4x4 + gate, up, down 3 x 4x8 = 144; 2 norms of 4; final norm 4; embedding 40
    assert SMALL.n_params() == 144 + 8 + 4 + 40 == 196
    assert Architecture(**{**SMALL.__dict__, "tied": False}).n_params() == 236  # + output layer 40
    # rank 2 x (in + out): q 16, k 12, v 12, o 16, gate 24, up 24, down 24
    assert SMALL.lora_params(2) == 128
    assert SMALL.lora_params(2, ("q_proj", "v_proj")) == 28
    with pytest.raises(ValueError, match="qproj"):
        SMALL.lora_params(2, ("qproj",))


def test_hand_computed_memory():
    assert training_memory(1000, "ga") == {"weights": 2000, "gradients": 2000, "optimizer": 4000, "reference": 0,
                                           "total": 8000}
    assert training_memory(1000, "finetune", dtype="fp32") == {"weights": 4000, "gradients": 4000, "optimizer": 8000,
                                                               "reference": 0, "total": 16000}
    assert training_memory(1000, "npo")["reference"] == 2000 and training_memory(1000, "npo")["total"] == 10000
    assert training_memory(1000, "palu", optimizer="sgd")["total"] == 6000
    # LoRA r 2 on SMALL: 196 bf16 weights + 128 float32 adapters; their gradients and two AdamW states; no reference
    assert training_memory(SMALL, "palu", lora_rank=2) == {"weights": 392 + 512, "gradients": 512, "optimizer": 1024,
                                                           "reference": 0, "total": 2440}
    for bad, words in [(dict(method="nope"), "finetune"), (dict(method="ga", dtype="int8"), "dtype"),
                       (dict(method="ga", optimizer="adam"), "optimizer"), (dict(method="ga", lora_rank=8), "Architecture")]:
        with pytest.raises(ValueError, match=words):
            training_memory(1000, **bad)


def _llama(arch: Architecture) -> LlamaForCausalLM:
    config = LlamaConfig(hidden_size=arch.hidden, num_hidden_layers=arch.layers, intermediate_size=arch.intermediate,
                         vocab_size=arch.vocab, num_attention_heads=arch.heads, num_key_value_heads=arch.kv_heads,
                         tie_word_embeddings=arch.tied)
    with torch.device("meta"):  # shapes only: no memory, no download
        return LlamaForCausalLM(config)


@pytest.mark.parametrize("name, published", [("SmolLM2-135M", 134_515_008), ("Llama-3.2-1B", 1_235_814_400),
                                             ("Llama-2-7B", 6_738_415_616)])
def test_counts_agree_with_transformers_and_peft(name, published):
    arch = ARCHITECTURES[name]
    model = _llama(arch)
    assert arch.n_params() == sum(p.numel() for p in model.parameters()) == published
    assert Architecture.from_config(model.config, name) == arch
    assert trainable_parameters(add_adapters(model, LoraSettings(8))) == arch.lora_params(8)


def test_the_tiny_model(tiny):
    model, _ = tiny
    arch = Architecture.from_config(model.config)
    assert arch.n_params() == sum(p.numel() for p in model.parameters())
    assert trainable_parameters(add_adapters(model, LoraSettings(4))) == arch.lora_params(4)


@pytest.mark.skipif(repo_root() is None, reason="needs the checkout's docs/")
def test_the_docs_table_is_current():
    doc = repo_root() / "docs" / "memory.md"
    assert doc.read_text() == memory.markdown(), "docs/memory.md is stale: run python -m palu_perta.memory --write"
