"""Prompt formatting, label masks and per-token classes on known strings."""

from __future__ import annotations

import pytest
import torch

from palu_perta.tokenization import (
    IGNORE_INDEX,
    ORDINARY,
    PROMPT,
    SENSITIVE,
    Collator,
    check_tokenizer,
    encode_qa,
    prompt_batch,
    prompt_text,
    token_classes_from_spans,
)


def test_token_classes_from_offsets():
    # "Ann was born in Porto." with tokens [Ann][ was][ born][ in][ Port][o][.]
    offsets = [(0, 3), (3, 7), (7, 12), (12, 15), (15, 20), (20, 21), (21, 22)]
    spans = [{"word": "Porto", "start": 16, "end": 21}]
    assert token_classes_from_spans(offsets, spans) == [1, 1, 1, 1, 2, 2, 1]
    assert token_classes_from_spans(offsets, None) == [1] * 7


def test_encode_qa_masks_prompt_and_marks_spans(tokenizer):
    answer = "Ann Lee was born in Porto, Portugal."
    spans = [{"word": "Porto", "start": 20, "end": 25}, {"word": "Portugal", "start": 27, "end": 35}]
    enc = encode_qa(tokenizer, "Where was Ann Lee born?", answer, spans)
    n_prompt = enc["prompt_length"]
    assert enc["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert enc["labels"][n_prompt:] == enc["input_ids"][n_prompt:]
    assert enc["input_ids"][-1] == tokenizer.eos_token_id and enc["token_classes"][-1] == ORDINARY
    assert set(enc["token_classes"][:n_prompt]) == {PROMPT}
    sensitive = [i for i, c in zip(enc["input_ids"], enc["token_classes"]) if c == SENSITIVE]
    assert tokenizer.decode(sensitive).replace(" ", "") == "PortoPortugal"
    ordinary = [i for i, c in zip(enc["input_ids"][n_prompt:-1], enc["token_classes"][n_prompt:-1]) if c == ORDINARY]
    assert tokenizer.decode(ordinary) == "Ann Lee was born in,."
    # the answer decodes back exactly
    assert tokenizer.decode(enc["input_ids"][n_prompt:-1]) == answer


def test_chat_template_is_used_and_fallback(tokenizer):
    assert "<|im_start|>user\nHi?<|im_end|>" in prompt_text(tokenizer, "Hi?")

    class NoTemplate:
        chat_template = None

    assert prompt_text(NoTemplate(), "Hi?") == "Question: Hi?\nAnswer: "


def test_truncation_keeps_prompt(tokenizer):
    enc = encode_qa(tokenizer, "Q?", "a b c d e f g h i j k", None, max_length=None)
    cut = encode_qa(tokenizer, "Q?", "a b c d e f g h i j k", None, max_length=enc["prompt_length"] + 3)
    assert len(cut["input_ids"]) == enc["prompt_length"] + 3
    with pytest.raises(ValueError, match="more than max_length"):
        encode_qa(tokenizer, "Q?", "a", None, max_length=3)


def test_collator_right_and_left_padding():
    examples = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "token_classes": [0, 1, 2]},
                {"input_ids": [8], "labels": [8], "token_classes": [1]}]
    right = Collator(pad_token_id=0)(examples)
    assert right["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert right["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert right["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert right["token_classes"].tolist() == [[0, 1, 2], [1, 0, 0]]
    left = Collator(pad_token_id=0, padding_side="left")(examples)
    assert left["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert left["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match="padding_side"):
        Collator(0, "middle")


def test_prompt_batch_is_left_padded(tokenizer):
    batch = prompt_batch(tokenizer, ["Hi?", "What is the capital of France, please?"])
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][:, -1].tolist() == [1, 1]
    assert batch["input_ids"].dtype == torch.long


def test_tokenizer_without_eos_is_rejected(tokenizer):
    import copy

    broken = copy.deepcopy(tokenizer)
    broken.eos_token = None
    with pytest.raises(ValueError, match="no EOS token"):
        check_tokenizer(broken)
    with pytest.raises(ValueError, match="no tokenizer"):
        check_tokenizer(None)
