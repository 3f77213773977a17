"""Automatic sensitive spans: merging marked tokens, scoring with two models, token agreement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from palu_perta.data import synthetic_benchmark
from palu_perta.models import load_model
from palu_perta.spans import (
    AnswerScores,
    automatic_spans,
    merge_spans,
    score_answers,
    sensitive_tokens,
    span_agreement,
    span_statistics,
    spans_from_scores,
    with_spans,
)

ANSWER = "Basil Mahfouz Al-Kuwaiti was born in Kuwait City, Kuwait."


def _offsets(tokenizer, answer):
    enc = tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
    return [tuple(o) for o in enc["offset_mapping"]]


def _tokens(tokenizer, answer):
    return [tokenizer.decode([i]) for i in tokenizer(answer, add_special_tokens=False)["input_ids"]]


def _check_format(answer, spans):
    for s in spans:
        assert answer[s["start"]:s["end"]] == s["word"]


def _scores(tokenizer, answer, gains):
    """Hand-made log-likelihoods: reference log p = -5 everywhere, target = -5 + gain."""
    gains = np.asarray(gains, dtype=float)
    reference = np.full_like(gains, -5.0)
    return AnswerScores(answer, _tokens(tokenizer, answer), _offsets(tokenizer, answer), reference + gains, reference)


def test_consecutive_marked_tokens_merge_into_one_trimmed_span(tokenizer):
    toks = _tokens(tokenizer, ANSWER)
    marked = [t in (" Kuwait", " City") for t in toks]
    spans = merge_spans(ANSWER, _offsets(tokenizer, ANSWER), marked)
    # " Kuwait" + " City" are consecutive: one span, without the leading space; the last " Kuwait"
    # follows "," (not marked) and is a span of its own, without the final "."
    assert [s["word"] for s in spans] == ["Kuwait City", "Kuwait"]
    _check_format(ANSWER, spans)


def test_whole_words_widen_subword_marks(tokenizer):
    toks = _tokens(tokenizer, ANSWER)
    marked = [t == "wait" for t in toks]  # a piece inside "Al-Kuwaiti"
    offsets = _offsets(tokenizer, ANSWER)
    assert [s["word"] for s in merge_spans(ANSWER, offsets, marked)] == ["Al-Kuwaiti"]
    assert [s["word"] for s in merge_spans(ANSWER, offsets, marked, whole_words=False)] == ["wait"]


def test_punctuation_only_runs_are_dropped_and_empty_marks_give_no_span(tokenizer):
    toks = _tokens(tokenizer, ANSWER)
    offsets = _offsets(tokenizer, ANSWER)
    assert merge_spans(ANSWER, offsets, [t in (",", ".") for t in toks]) == []
    assert merge_spans(ANSWER, offsets, [False] * len(toks)) == []
    everything = merge_spans(ANSWER, offsets, [True] * len(toks))
    assert [s["word"] for s in everything] == [ANSWER[:-1]]  # one span, final "." trimmed
    with pytest.raises(ValueError, match="marks"):
        merge_spans(ANSWER, offsets, [True])


def test_margin_decides_which_tokens_are_marked(tokenizer):
    toks = _tokens(tokenizer, ANSWER)
    # big gain on the name pieces, moderate on " City", none elsewhere
    name = {"Bas", "il", " Mah", "f", "ou", "z", " Al", "-", "K", "u", "wait", "i"}
    gains = [6.0 if t in name else 2.5 if t == " City" else 0.3 for t in toks]
    scores = _scores(tokenizer, ANSWER, gains)
    np.testing.assert_allclose(scores.gain, gains)
    high, low = spans_from_scores([scores], margin=4.0)[0], spans_from_scores([scores], margin=2.0)[0]
    assert [s["word"] for s in high] == ["Basil Mahfouz Al-Kuwaiti"]
    assert [s["word"] for s in low] == ["Basil Mahfouz Al-Kuwaiti", "City"]
    assert spans_from_scores([scores], margin=10.0) == [[]]


def test_span_agreement_counts_tokens(tokenizer):
    rec = {"question": "q", "answer": ANSWER}
    label = {**rec, "target_words": [{"word": "Kuwait City", "start": 37, "end": 48}]}
    same = span_agreement([label], [label], tokenizer)
    assert (same["precision"], same["recall"], same["f1"]) == (1.0, 1.0, 1.0)
    # predicted: "Kuwait" (the first one, 1 token, correct) + "Basil" (2 tokens, wrong)
    pred = {**rec, "target_words": [{"word": "Kuwait", "start": 37, "end": 43},
                                    {"word": "Basil", "start": 0, "end": 5}]}
    got = span_agreement([pred], [label], tokenizer)
    assert (got["tp"], got["fp"], got["fn"]) == (1, 2, 1)  # labelled: " Kuwait", " City"
    assert got["precision"] == pytest.approx(1 / 3)
    assert got["recall"] == pytest.approx(1 / 2)
    assert got["f1"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert got["n_tokens"] == len(_tokens(tokenizer, ANSWER))
    assert got["onset_recall"] == 1.0  # the labelled run starts at " Kuwait", which is predicted
    late = span_agreement([{**rec, "target_words": [{"word": "City", "start": 44, "end": 48}]}], [label], tokenizer)
    assert (late["recall"], late["onset_recall"]) == (0.5, 0.0)
    none = span_agreement([{**rec, "target_words": []}], [label], tokenizer)
    assert (none["precision"], none["recall"], none["f1"]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="differ"):
        span_agreement([{**rec, "answer": "other"}], [label], tokenizer)
    with pytest.raises(ValueError, match="records"):
        span_agreement([pred, pred], [label], tokenizer)


def test_sensitive_tokens_and_statistics(tokenizer):
    bench = synthetic_benchmark(3, 4, "forget10", 0)
    rec = bench.forget[0]
    mask = sensitive_tokens(tokenizer, rec["answer"], rec["target_words"])
    assert mask.any() and not mask.all()
    stats = span_statistics(bench.forget, tokenizer)
    assert stats["answers"] == len(bench.forget)
    assert 0 < stats["sensitive_token_share"] < 1 and stats["tokens_per_span"] >= 1
    # the exact spans agree with themselves; spans estimated from nothing agree with nothing
    assert span_agreement(bench.forget, bench.forget, tokenizer)["f1"] == 1.0
    assert with_spans(bench.forget[:1], [[]])[0]["target_words"] == []


def test_score_answers_matches_the_models_and_a_model_against_itself_marks_nothing():
    target, tokenizer = load_model("tiny", seed=0)
    reference, _ = load_model("tiny", seed=1)
    records = synthetic_benchmark(3, 3, "forget10", 0).forget
    scores = score_answers(target, reference, tokenizer, records, batch_size=2)
    assert len(scores) == len(records)
    # the first answer token's log-probability, recomputed by hand with one forward of the whole sequence
    from palu_perta.tokenization import encode_qa

    ex = encode_qa(tokenizer, records[0]["question"], records[0]["answer"])
    with torch.inference_mode():
        logits = target(input_ids=torch.tensor([ex["input_ids"]])).logits[0]
    first = ex["prompt_length"]
    expected = torch.log_softmax(logits[first - 1].double(), -1)[ex["input_ids"][first]].item()
    assert scores[0].target[0] == pytest.approx(expected, abs=1e-4)
    assert len(scores[0].target) == len(scores[0].offsets) == len(ex["input_ids"]) - first - 1  # EOS dropped
    same = automatic_spans(target, target, tokenizer, records, margin=0.01)
    assert all(r["target_words"] == [] for r in same)
    for rec, spans in zip(records, spans_from_scores(scores, margin=-100.0)):
        _check_format(rec["answer"], spans)
        assert spans  # every token is marked: at least one span
