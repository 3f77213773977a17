"""LoRA (palu_perta.lora) on the tiny model: only the adapters train, the saved model is the merged one, the
reference of a LoRA unlearning run is the base model exactly, every training-based method takes a LoRA step,
and PerTA on a LoRA fine-tune subtracts the merged update."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from palu_perta import artifacts, cli
from palu_perta.config import FinetuneConfig, get_profile
from palu_perta.data import synthetic_benchmark
from palu_perta.lora import LoraSettings, add_adapters, as_lora, linear_targets, merge_adapters, trainable_parameters
from palu_perta.losses import LOSSES
from palu_perta.models import load_model
from palu_perta.perta import perta_unlearn
from palu_perta.task_vectors import TaskVector
from palu_perta.tokenization import Collator, encode_records, pad_id
from palu_perta.training import finetune, finetune_config, finetuned_model, records_info
from palu_perta.unlearn import BUDGET_FIELDS, UnlearnConfig, UnlearningTrainer, unlearn

FT = FinetuneConfig(epochs=2, learning_rate=5e-3, batch_size=4, per_device_batch_size=4, warmup_ratio=0.0, bf16=False,
                    max_length=96, lora=LoraSettings(rank=4))
STEP = dict(epochs=1, learning_rate=5e-3, batch_size=4, per_device_batch_size=4, warmup_ratio=0.0, bf16=False,
            max_length=96)


@pytest.fixture(scope="module")
def bench():
    return synthetic_benchmark(4, 3, "forget10", 1)


def _batch(tokenizer, records):
    return Collator(pad_id(tokenizer))(encode_records(tokenizer, records, 96))


def _logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


class Spy(TrainerCallback):
    """At the end of training (adapters not merged yet): the trainable names, the frozen weights, each adapted
    layer's merged update (alpha / r) B A, and the LoRA model's logits on a batch."""

    def __init__(self, batch):
        self.batch = batch

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        self.frozen = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
        self.updates = {}
        for name, module in model.named_modules():
            if hasattr(module, "lora_A") and "default" in module.lora_A:
                a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
                key = name.removeprefix("base_model.model.") + ".weight"
                self.updates[key] = (b @ a).detach().float() * module.scaling["default"]
        model.eval()
        self.logits = _logits(model, self.batch)
        model.train()


def test_lora_finetune_trains_only_the_adapters_and_merges_them(tiny, bench, tmp_path):
    model, tokenizer = tiny
    base = copy.deepcopy(model)
    batch = _batch(tokenizer, bench.forget)
    spy = Spy(batch)
    finetune(model, tokenizer, bench.full, FT, tmp_path, progress=False, resume=False, callbacks=[spy])
    assert spy.trainable and all("lora_A" in n or "lora_B" in n for n in spy.trainable)
    # the frozen weights are the base model's, bit for bit, at the end of training
    base_params = dict(base.named_parameters())
    assert all(torch.equal(w, base_params[n.replace("base_model.model.", "").replace(".base_layer", "")])
               for n, w in spy.frozen.items())
    # the model given back is a plain model holding theta + (alpha / r) B A, and computes what the LoRA model did
    assert type(model) is type(base) and not any("lora_" in n for n, _ in model.named_parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert set(spy.updates) == {n for n, _ in base.named_parameters() if n.endswith("proj.weight")}
    for name, p in model.named_parameters():
        delta = (p - base_params[name]).float()
        if name in spy.updates:
            assert delta.abs().max() > 0 and torch.linalg.matrix_rank(delta) <= 4, name
            torch.testing.assert_close(delta, spy.updates[name], atol=1e-6, rtol=1e-4)
        else:
            assert torch.equal(p, base_params[name]), name  # embeddings, norms: untouched
    torch.testing.assert_close(_logits(model, batch), spy.logits, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(_logits(model, batch), _logits(base, batch))


def test_the_saved_lora_model_is_the_merged_one_and_keyed_apart(tokenizer, bench, tmp_path, monkeypatch):
    monkeypatch.setenv("PALU_PERTA_ARTIFACTS", str(tmp_path / "artifacts"))
    profile = get_profile("smoke")
    info = records_info(bench.source, bench.forget)
    cfg = dataclasses.replace(FT, epochs=1)
    path = finetuned_model(profile, "reinforced", bench.forget, info, cfg=cfg, progress=False)
    assert path.is_relative_to(tmp_path) and (path / "model.safetensors").is_file()
    assert not any(path.glob("adapter_*")), "the adapters are merged, not saved apart"
    saved, _ = load_model(str(path), device="cpu")
    base, _ = load_model("tiny", device="cpu")
    assert {n for n, _ in saved.named_parameters()} == {n for n, _ in base.named_parameters()}
    assert not torch.equal(saved.model.layers[0].self_attn.q_proj.weight, base.model.layers[0].self_attn.q_proj.weight)
    assert torch.equal(saved.model.embed_tokens.weight, base.model.embed_tokens.weight)
    # LoRA enters the key; without it the key is the one it always was (no "lora" field)
    plain = finetune_config(profile, "reinforced", info, "tiny", dataclasses.replace(cfg, lora=None))
    assert "lora" not in plain["finetune"] and "lora" not in profile.to_dict()["finetune"]
    lora = finetune_config(profile, "reinforced", info, "tiny", cfg)
    assert lora["finetune"]["lora"] == {"rank": 4, "alpha": 32.0, "dropout": 0.05, "target_modules": []}
    assert artifacts.config_hash(plain) != artifacts.config_hash(lora)


def test_the_reference_is_the_base_model_with_the_adapters_disabled(tiny, bench, tmp_path):
    model, tokenizer = tiny
    base = copy.deepcopy(model).eval()
    lora = add_adapters(model, LoraSettings(rank=4, dropout=0.5), seed=0)
    with torch.no_grad():  # a run part-way: the adapters have moved
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_()
    lora.train()
    cfg = UnlearnConfig(method="npo", lora={"rank": 4, "dropout": 0.5}, **STEP)
    from transformers import TrainingArguments

    trainer = UnlearningTrainer(model=lora, args=TrainingArguments(str(tmp_path), use_cpu=True, report_to="none"),
                                unlearn_config=cfg)
    assert trainer.reference is None and trainer.reference_is_base  # no copy of the model
    batch = _batch(tokenizer, bench.forget)
    assert torch.equal(trainer.base_logits(batch), _logits(base, batch))
    assert lora.training  # the mode is given back
    lora.eval()
    assert not torch.allclose(_logits(lora, batch), _logits(base, batch))  # the adapters are on again


@pytest.mark.parametrize("method", sorted(LOSSES))
def test_every_training_method_takes_a_finite_lora_step(method, tiny, bench, tmp_path):
    model, tokenizer = tiny
    base = copy.deepcopy(model)
    forget = dataclasses.replace(bench, forget=bench.forget[:4])  # one batch of 4: one step
    result = unlearn(model, tokenizer, forget, UnlearnConfig(method=method, lora=LoraSettings(rank=4), **STEP),
                     tmp_path, progress=False, resume=False, log=None)
    steps = [h for h in result.history if "loss" in h]
    assert len(steps) == 1 and math.isfinite(steps[0]["loss"]), result.history
    changed = {n for (n, p), q in zip(model.named_parameters(), base.parameters()) if not torch.equal(p, q)}
    assert changed and all(n.endswith("proj.weight") for n in changed), changed


def test_perta_on_a_lora_finetune_subtracts_the_merged_update(tiny, bench, tmp_path):
    model, tokenizer = tiny
    target = copy.deepcopy(model)
    spy = Spy(_batch(tokenizer, bench.forget))
    finetune(model, tokenizer, bench.forget, FT, tmp_path, progress=False, resume=False, callbacks=[spy])
    tau = TaskVector.from_models(target, model)
    for name, t in tau.items():  # tau is the merged update, (alpha / r) B A, and 0 where no adapter is
        expected = spy.updates.get(name, torch.zeros_like(t))
        torch.testing.assert_close(t, expected, atol=1e-6, rtol=1e-4)
    generator = torch.Generator().manual_seed(0)
    weights = {name: torch.rand(t.shape, generator=generator) for name, t in tau.items()}
    edited = perta_unlearn(target, tau, weights, lam=2.0)
    for name, p in edited.named_parameters():
        expected = dict(target.named_parameters())[name] - 2.0 * weights[name] * spy.updates.get(name, 0.0)
        torch.testing.assert_close(p, expected, atol=1e-6, rtol=1e-5)


def test_lora_settings_are_checked():
    assert as_lora({"rank": 8}) == LoraSettings(8, 32.0, 0.05, ())
    for bad, words in [({"rank": 0}, "rank"), ({"rank": 8, "dropout": 1.0}, "dropout"), ({"rank": 8, "alpha": 0}, "alpha"),
                       ({"rank": 8, "r": 8}, "no field")]:
        with pytest.raises(ValueError, match=words):
            as_lora(bad)
    with pytest.raises(ValueError, match="frozen or anchor"):
        FinetuneConfig(lora=LoraSettings(8), anchor=1.0)
    assert "lora" not in BUDGET_FIELDS and "lora" not in UnlearnConfig(**STEP).to_dict()
    assert UnlearnConfig(lora={"rank": 2}, **STEP).to_dict()["lora"]["rank"] == 2


def test_lora_targets(tiny):
    model, _ = tiny
    assert linear_targets(model, LoraSettings(4)) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj",
                                                       "up_proj", "v_proj"]  # every linear layer but lm_head
    with pytest.raises(ValueError, match=r"\['nope'\].*q_proj"):
        linear_targets(model, LoraSettings(4, target_modules=("q_proj", "nope")))
    lora = add_adapters(model, LoraSettings(4, target_modules=("q_proj", "v_proj")))
    cfg = model.config  # 2 layers, q: 64 -> 64, v: 64 -> 32 (2 of 4 heads of 16)
    assert trainable_parameters(lora) == cfg.num_hidden_layers * 4 * ((64 + 64) + (64 + 32))
    with pytest.raises(ValueError, match="already has LoRA"):
        add_adapters(lora, LoraSettings(4))
    assert merge_adapters(lora) is model


def test_cli_lora_finetune_and_palu_run(tmp_path, monkeypatch, capsys):
    """`finetune --lora-rank` and `unlearn --method palu --lora-rank` on the smoke profile, end to end."""
    monkeypatch.setenv("PALU_PERTA_ARTIFACTS", str(tmp_path / "artifacts"))
    assert cli.main(["finetune", "--profile", "smoke", "--role", "target", "--lora-rank", "4", "--no-progress"]) == 0
    target = capsys.readouterr().out.strip().splitlines()[-1].split(": ", 1)[1]
    assert json.loads((Path(target) / "artifact.json").read_text())["config"]["finetune"]["lora"]["rank"] == 4
    assert cli.main(["unlearn", "--profile", "smoke", "--method", "palu", "--lora-rank", "4", "--lora-targets",
                     "q_proj,v_proj", "--target", target, "--no-progress"]) == 0
    out = capsys.readouterr().out
    run = out.strip().splitlines()[-1].split(": ", 1)[1]
    assert json.loads((Path(run) / "artifact.json").read_text())["config"]["unlearn"]["lora"]["target_modules"] == [
        "q_proj", "v_proj"]
    history = json.loads((Path(run) / "log_history.json").read_text())
    assert all(math.isfinite(h["loss"]) for h in history if "loss" in h)
