"""Unbounded input (issue 22): what max_length cuts in training is counted and reported, and evaluation
never allocates in proportion to an unbounded answer."""

from __future__ import annotations

import warnings

import pytest

from palu_perta.data import synthetic_benchmark
from palu_perta.evaluation import MAX_SCORED_TOKENS, evaluate
from palu_perta.models import load_model
from palu_perta.tokenization import encode_qa, encode_records


def test_training_cuts_are_counted(tokenizer):
    records = [{"question": "Q?", "answer": "short."}, {"question": "Q?", "answer": "word " * 300},
               {"question": "Q?", "answer": "word " * 50}]
    with pytest.warns(UserWarning, match=r"cuts the end of 2 of 3 answers .*record 1"):
        examples = encode_records(tokenizer, records, max_length=40)
    assert [e["input_ids"] for e in examples] == [encode_qa(tokenizer, r["question"], r["answer"], None, 40)["input_ids"]
                                                 for r in records]
    assert all(len(e["input_ids"]) <= 40 for e in examples)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encode_records(tokenizer, records[:1], max_length=40)  # nothing cut: no warning
        encode_records(tokenizer, records)  # no max_length: nothing cut


def test_a_prompt_longer_than_max_length_is_refused(tokenizer):
    with pytest.raises(ValueError, match="the prompt alone"):
        encode_records(tokenizer, [{"question": "why " * 100, "answer": "a"}], max_length=20)


def test_evaluation_scores_a_huge_answer_on_bounded_tokens():
    model, tokenizer = load_model("tiny", device="cpu")
    bench = synthetic_benchmark(n_authors=4, qa_per_author=2, n_holdout_authors=0, n_world_facts=2)
    bench.retain_eval[0] = {**bench.retain_eval[0], "answer": "blah " * 20_000}  # 100,000 characters
    with pytest.warns(UserWarning, match=f"longer than {MAX_SCORED_TOKENS} tokens"):
        result = evaluate(model, tokenizer, bench, max_new_tokens=2, batch_size=4, progress=False)
    assert 0 <= result["per_item"]["splits"]["retain"][0]["prob"] <= 1
