"""palu_local_parts: the split of PALU's local loss that notebook 06 uses to show where the flattening
comes from (the gap between the top-K candidates and c_t, and their spread)."""

from __future__ import annotations

import pytest
import torch

from palu_perta.losses import ModelIO, palu_local_parts, palu_loss
from palu_perta.tokenization import ORDINARY, PROMPT, SENSITIVE


def _logits(seed: int, vocab: int = 40) -> torch.Tensor:
    return torch.randn(vocab, generator=torch.Generator().manual_seed(seed)) * 3


@pytest.mark.parametrize("top_k", [1, 5, 40])
def test_parts_add_up_to_the_local_loss_of_palu_loss(top_k: int) -> None:
    ref, now = _logits(0), _logits(1)
    parts = palu_local_parts(now, ref, top_k)
    assert parts["local"] == pytest.approx(parts["gap"] ** 2 + parts["spread"], rel=1e-5)
    # the same number as the package's loss, with the position as the only onset of a one-token answer
    classes = torch.tensor([[PROMPT, SENSITIVE, ORDINARY]])
    batch = {"input_ids": torch.zeros(1, 3, dtype=torch.long), "attention_mask": torch.ones(1, 3, dtype=torch.long),
             "labels": torch.tensor([[-100, 0, 0]]), "token_classes": classes}
    logits = torch.stack([now, now, now])[None]
    ref_logits = torch.stack([ref, ref, ref])[None]
    out = palu_loss(ModelIO(logits, batch, ref_logits), None, top_k=top_k, first_n=1, alpha=0.0,
                    ns_constraint="none")
    assert out.terms["forget"] == pytest.approx(parts["local"], rel=1e-5)


def test_the_pull_on_c_equals_the_pull_on_the_candidates() -> None:
    parts = palu_local_parts(_logits(2), _logits(3), 7)
    assert parts["d_c"] == pytest.approx(-2 * parts["gap"], rel=1e-5)
    assert parts["d_topk"] == pytest.approx(-parts["d_c"], rel=1e-5)


def test_raising_the_rest_of_the_vocabulary_closes_the_gap_alone() -> None:
    ref = _logits(4)
    top = ref.topk(5).indices
    rest = torch.ones_like(ref, dtype=torch.bool)
    rest[top] = False
    raised = ref.clone()
    raised[rest] += 2.0  # the other logits rise; the candidates do not move
    before, after = palu_local_parts(ref, ref, 5), palu_local_parts(raised, ref, 5)
    assert after["topk_mean"] == pytest.approx(before["topk_mean"])
    assert after["spread"] == pytest.approx(before["spread"])
    assert after["c"] - before["c"] == pytest.approx(2.0 * (ref.numel() - 5) / ref.numel(), rel=1e-5)
    assert after["gap"] < before["gap"] and after["local"] < before["local"]
    shifted = palu_local_parts(ref + 10.0, ref, 5)  # a shift of every logit changes nothing but c
    assert shifted["gap"] == pytest.approx(before["gap"], abs=1e-4)
    assert shifted["local"] == pytest.approx(before["local"], rel=1e-5)


def test_bad_shapes_and_top_k_name_the_fix() -> None:
    with pytest.raises(ValueError, match="index a position first"):
        palu_local_parts(torch.zeros(2, 10), torch.zeros(2, 10), 3)
    with pytest.raises(ValueError, match="top_k must be in"):
        palu_local_parts(torch.zeros(10), torch.zeros(10), 11)


def test_gradient_norms_of_forget_and_hold(tiny) -> None:
    from palu_perta.losses import palu_gradient_norms
    from palu_perta.tokenization import Collator, encode_qa, pad_id

    model, tokenizer = tiny
    collate = Collator(pad_id(tokenizer))
    answer = "He was born in Valparaiso, Chile."
    spans = [{"word": "Valparaiso", "start": answer.index("Valparaiso"), "end": answer.index("Valparaiso") + 10}]
    forget = collate([encode_qa(tokenizer, "Where was he born?", answer, spans)])
    retain = collate([encode_qa(tokenizer, "What does she write?", "She writes poems.")])
    inputs = {"input_ids": forget["input_ids"], "attention_mask": forget["attention_mask"]}
    with torch.no_grad():
        ref = model(**inputs).logits
    norms = palu_gradient_norms(model, forget, retain, ref, top_k=5, first_n=2, alpha=3.0, gamma=2.0)
    assert norms["forget"] > 0 and norms["hold"] > 0
    assert norms["ratio"] == pytest.approx(norms["forget"] / norms["hold"])
    assert all(p.grad is None for p in model.parameters())  # .grad untouched

    # by hand: the same norms from palu_loss with one weight at 0 (alpha and gamma in hyper are ignored)
    params = [p for p in model.parameters() if p.requires_grad]
    forget_io = ModelIO(model(**inputs).logits, forget, ref)
    retain_io = ModelIO(model(input_ids=retain["input_ids"], attention_mask=retain["attention_mask"]).logits, retain)
    hold = palu_loss(forget_io, retain_io, top_k=5, first_n=2, gamma=0.0).loss
    by_hand = torch.sqrt(sum(g.pow(2).sum() for g in torch.autograd.grad(hold, params, allow_unused=True)
                             if g is not None)).item()
    assert norms["hold"] == pytest.approx(by_hand, rel=1e-4)

    # a frozen model has no weight to pull on: the error says how to unfreeze it
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="requires_grad_"):
        palu_gradient_norms(model, forget, retain, ref, top_k=5)
