"""The unlearning Trainer: pairing, reference handling, logging, evaluation hooks, guards."""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch

from palu_perta import losses
from palu_perta.data import synthetic_benchmark
from palu_perta.losses import answer_nll
from palu_perta.tokenization import Collator, encode_records, pad_id
from palu_perta.unlearn import PairedCollator, PairedDataset, UnlearnConfig, unlearn

FAST = dict(epochs=2, learning_rate=2e-3, batch_size=4, per_device_batch_size=4, bf16=False, warmup_ratio=0.0)


@pytest.fixture(scope="module")
def bench():
    return synthetic_benchmark(4, 3, "forget10", 1)


def _forget_nll(model, tokenizer, records):
    batch = Collator(pad_id(tokenizer))(encode_records(tokenizer, records))
    with torch.no_grad():
        return answer_nll(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                          batch["labels"]).item()


def test_retain_pairs_are_deterministic_and_differ_per_process():
    forget, retain = [{"id": i} for i in range(4)], [{"id": 100 + i} for i in range(50)]
    a = PairedDataset(forget, retain, None, seed=0, process=0)
    b = PairedDataset(forget, retain, None, seed=0, process=0)
    c = PairedDataset(forget, retain, None, seed=0, process=1)
    draws = lambda d: [d[i]["retain"]["id"] for i in range(4)]  # noqa: E731
    assert draws(a) == draws(b)
    assert draws(a) != draws(c)
    a.epoch = 1
    assert draws(a) != draws(b)  # a new epoch draws new retain items
    with pytest.raises(ValueError, match="forget split is empty"):
        PairedDataset([], retain, None, 0, 0)


def test_paired_collator_builds_one_batch_per_part(tokenizer, bench):
    ex = encode_records(tokenizer, bench.forget[:2])
    batch = PairedCollator(pad_id(tokenizer))([{"forget": ex[0], "retain": ex[1]}, {"forget": ex[1], "retain": ex[0]}])
    assert set(batch) == {"forget", "retain"}
    assert batch["forget"]["token_classes"].shape == batch["forget"]["input_ids"].shape


def test_gradient_ascent_raises_forget_nll_and_logs_terms(tiny, bench, tmp_path):
    model, tokenizer = tiny
    before = _forget_nll(model, tokenizer, bench.forget)
    calls = []
    result = unlearn(model, tokenizer, bench, UnlearnConfig(method="ga", eval_epochs=(1, 2), **{**FAST, "learning_rate": 1e-2, "epochs": 4}), tmp_path,
                     evaluate=lambda m: calls.append(m.training) or {"forget_nll": _forget_nll(m, tokenizer, bench.forget)},
                     progress=False, resume=False)
    assert _forget_nll(model, tokenizer, bench.forget) > before + 0.3
    logged = [h for h in result.history if "loss" in h]
    assert logged and "loss_forget" in logged[0]
    assert [t["epoch"] for t in result.trajectory] == [1, 2] and calls == [False, False]
    # evaluated after epoch 1's step: the same forget NLL that step 2 logs (GA's loss is -NLL)
    assert result.trajectory[0]["forget_nll"] == pytest.approx(-logged[1]["loss"], abs=1e-4)


def test_palu_holds_reference_only_when_needed(tiny, bench, tmp_path, monkeypatch):
    model, tokenizer = tiny
    seen = {}
    original = losses.LOSSES["palu"].fn

    @functools.wraps(original)  # keeps the signature, which declares the hyperparameters
    def spy(forget, retain, **hyper):
        seen["ref"] = forget.ref_logits is not None
        seen["hyper"] = hyper
        return original(forget, retain, **hyper)

    monkeypatch.setitem(losses.LOSSES, "palu", losses.Method("palu", spy, True, True))
    cfg = UnlearnConfig(method="palu", hyper={"top_k": 5, "first_n": 2}, **{**FAST, "epochs": 1})
    result = unlearn(model, tokenizer, bench, cfg, tmp_path, progress=False, resume=False)
    assert seen["ref"] and seen["hyper"]["top_k"] == 5 and seen["hyper"]["first_n"] == 2
    assert {"loss_forget", "loss_retain", "loss_ns"} <= set(next(h for h in result.history if "loss" in h))


def test_bad_configurations_are_rejected_before_work():
    with pytest.raises(ValueError, match="method='forgetful' is not known"):
        UnlearnConfig(method="forgetful")
    with pytest.raises(ValueError, match=r"palu has no hyperparameter\(s\) \['topk'\]"):
        UnlearnConfig(method="palu", hyper={"topk": 3})
    with pytest.raises(ValueError, match="learning_rate"):
        UnlearnConfig(method="ga", learning_rate=-1.0)


def test_out_of_range_hyperparameters_fail_before_training(tiny, bench, tmp_path):
    model, tokenizer = tiny
    for hyper, message in [({"top_k": 60000}, r"top_k=60000 is larger than the vocabulary \(49152 tokens\)"),
                           ({"first_n": 0}, "first_n"), ({"alpha": -1.0}, "alpha")]:
        with pytest.raises(ValueError, match=message):
            unlearn(model, tokenizer, bench, UnlearnConfig(method="palu", hyper=hyper, **FAST), tmp_path / "x",
                    progress=False, resume=False)
    assert not (tmp_path / "x").exists()  # nothing written


def test_non_finite_loss_stops_with_step_and_term(tiny, bench, tmp_path, monkeypatch):
    model, tokenizer = tiny

    def nan_loss(forget, retain, **hyper):
        return losses.LossOutput(forget.logits.sum() * float("nan"), {"forget": float("nan")})

    monkeypatch.setitem(losses.LOSSES, "ga", losses.Method("ga", nan_loss, False, False))
    with pytest.raises(FloatingPointError, match=r"the ga forget loss is nan at step 0"):
        unlearn(model, tokenizer, bench, UnlearnConfig(method="ga", **FAST), tmp_path, progress=False, resume=False)


# ----------------------------------------------------------------------------- the reference on the retain batch, PDU's dual


def _trainer(model, tokenizer, bench, cfg, tmp_path):
    """An UnlearningTrainer on ``cfg`` and one paired batch of the whole forget split."""
    from palu_perta.training import training_arguments
    from palu_perta.unlearn import UnlearningTrainer, _examples

    forget, retain, idk = _examples(tokenizer, bench, cfg)
    dataset = PairedDataset(forget, retain, idk, seed=0, process=0)
    collate = PairedCollator(pad_id(tokenizer))
    args = training_arguments(cfg.optimiser(), tmp_path, 0, progress=False, save_checkpoints=False)
    trainer = UnlearningTrainer(model=model, args=args, train_dataset=dataset, data_collator=collate,
                                processing_class=tokenizer, unlearn_config=cfg)
    batch = collate([dataset[i] for i in range(len(dataset))])
    return trainer, batch


def _reference_inputs(trainer):
    """The input_ids tensors the reference model is called on, recorded by a forward pre-hook."""
    seen = []
    trainer.reference.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs["input_ids"]),
                                                with_kwargs=True)
    return seen


@pytest.mark.parametrize("method", ["npo", "palu", "idk_dpo"])
def test_reference_model_skips_the_retain_batch(tiny, bench, tmp_path, method):
    model, tokenizer = tiny
    trainer, batch = _trainer(model, tokenizer, bench, UnlearnConfig(method=method, **FAST), tmp_path)
    seen = _reference_inputs(trainer)
    trainer.compute_loss(model, batch)
    parts = ["forget", "idk"] if method == "idk_dpo" else ["forget"]
    assert len(seen) == len(parts) and all(s is batch[p]["input_ids"] for s, p in zip(seen, parts))
    assert not any(s is batch["retain"]["input_ids"] for s in seen)


def test_reference_on_retain_runs_it_and_skipping_changes_no_number(tiny, bench, tmp_path, monkeypatch):
    """A loss that declares reference_on_retain gets the retain batch's reference logits; NPO, which does
    not read them, has the same loss and gradients with and without that forward."""
    model, tokenizer = tiny
    trainer, batch = _trainer(model, tokenizer, bench, UnlearnConfig(method="npo", **FAST), tmp_path)
    seen = _reference_inputs(trainer)
    model.train()

    def loss_and_grads():
        model.zero_grad(set_to_none=True)
        loss = trainer.compute_loss(model, batch)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    skipped, skipped_grads = loss_and_grads()
    assert len(seen) == 1
    got = {}
    original = trainer.method.fn

    def spy(forget, retain, **hyper):
        got["retain_ref"] = retain.ref_logits
        return original(forget, retain, **hyper)

    trainer.method = dataclasses.replace(trainer.method, fn=spy, reference_on_retain=True)
    full, full_grads = loss_and_grads()
    assert len(seen) == 3 and seen[2] is batch["retain"]["input_ids"]
    assert got["retain_ref"] is not None and got["retain_ref"].shape[:2] == batch["retain"]["input_ids"].shape
    assert torch.equal(skipped, full)
    assert all(torch.equal(a, b) for a, b in zip(skipped_grads, full_grads))


def test_pdu_trainer_dual_warm_up_and_step(tiny, bench, tmp_path):
    """The trainer's dual: lambda_0 from alpha, no step before the warm-up epochs are complete, then
    lambda + eta (R - eps) per training batch, none in evaluation; R is measured at lambda = 0."""
    model, tokenizer = tiny
    hyper = {"alpha": 2.0, "dual_step_size": 0.5, "retain_loss_eps": 0.1, "dual_warmup_epochs": 1}
    trainer, batch = _trainer(model, tokenizer, bench, UnlearnConfig(method="pdu", hyper=hyper, **FAST), tmp_path)
    model.train()
    last = {}
    original = trainer.method.fn

    def record(forget, retain, **kw):
        out = original(forget, retain, **kw)
        last.update(out.terms, loss=out.loss.item())
        return out

    trainer.method = dataclasses.replace(trainer.method, fn=record)
    trainer.state.epoch = 0.5  # in epoch 1: warm-up
    trainer.compute_loss(model, batch)
    assert trainer.dual.value == 2.0
    assert last["loss"] == pytest.approx(last["forget"] + 2.0 * (last["retain"] - 0.1), rel=1e-5)
    trainer.state.epoch = 1.0  # epoch 1 complete
    trainer.compute_loss(model, batch)
    assert trainer.dual.value == pytest.approx(2.0 + 0.5 * (last["retain"] - 0.1))
    value = trainer.dual.value
    model.eval()
    trainer.compute_loss(model, batch)
    assert trainer.dual.value == value  # evaluation batches leave it alone
    model.train()
    trainer.dual.value = 0.0
    trainer.compute_loss(model, batch)
    assert last["retain"] > 0.1 and trainer.dual.value == pytest.approx(0.5 * (last["retain"] - 0.1))


def test_old_pdu_dual_fields_are_refused(tiny, bench, tmp_path):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="dual_step_size"):
        _trainer(model, tokenizer, bench, UnlearnConfig(method="pdu", pdu_step_size=2.0, **FAST), tmp_path)
