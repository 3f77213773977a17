"""From QA records to token ids, labels and per-token classes.

A question-answer pair becomes ``prompt + answer + EOS``: the prompt is the tokenizer's chat
template (user turn + generation prompt) when it has one, else TOFU's
``"Question: {q}\\nAnswer: "``. A tokenizer that carries a :class:`PromptFormat` (the model families
open-unlearning configures, :data:`OPEN_UNLEARNING_PROMPTS`) gets that family's system prompt and date
in its chat template, at fine-tuning, unlearning and evaluation alike. Labels are -100 on the prompt;
answer tokens and the final EOS are learned. Each token gets a class: ``PROMPT`` (prompt and padding), ``ORDINARY``
(answer tokens, EOS included) or ``SENSITIVE`` (answer tokens that overlap a ``target_words``
span, mapped through the fast tokenizer's character offsets).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

PROMPT, ORDINARY, SENSITIVE = 0, 1, 2
IGNORE_INDEX = -100


def check_tokenizer(tokenizer: Any) -> None:
    """Raise a clear error for a tokenizer the pipeline cannot use."""
    if tokenizer is None:
        raise ValueError("no tokenizer: load the model with palu_perta.models.load_model, which returns one")
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; set tokenizer.eos_token (answers must end with one)")
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("a fast tokenizer is needed for character offsets; load it with use_fast=True")


@dataclass(frozen=True)
class PromptFormat:
    """What a model family's prompt adds to its chat template, as open-unlearning's model configuration
    (``template_args`` with ``apply_chat_template: True``) sets it: a system turn and the template's
    ``date_string``. ``source`` says where the values come from."""

    system_prompt: str | None = None
    date_string: str | None = None
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The fields that shape a prompt (``source`` left out), for cache keys and tokenizer files."""
        return {"system_prompt": self.system_prompt, "date_string": self.date_string}


# Llama-3.x Instruct in open-unlearning: the same template_args in configs/model/Llama-3.2-1B-Instruct.yaml,
# Llama-3.2-3B-Instruct.yaml and Llama-3.1-8B-Instruct.yaml (apply_chat_template: True, system_prompt
# "You are a helpful assistant.", date_string "10 Apr 2025"; without a date the template writes today's).
_OU_CONFIGS = "open-unlearning configs/model/"
OPEN_UNLEARNING_PROMPTS: dict[str, PromptFormat] = {
    f"meta-llama/{family}": PromptFormat("You are a helpful assistant.", "10 Apr 2025", f"{_OU_CONFIGS}{family}.yaml")
    for family in ("Llama-3.2-1B-Instruct", "Llama-3.2-3B-Instruct", "Llama-3.1-8B-Instruct")
}
TOKENIZER_KEY = "palu_perta_prompt_format"  # where a tokenizer carries its format (saved in tokenizer_config.json)


def prompt_format_for(model: str) -> PromptFormat | None:
    """open-unlearning's prompt format for the model ``model`` names: a hub id of
    :data:`OPEN_UNLEARNING_PROMPTS`, or one of open-unlearning's TOFU checkpoints of that family
    (``open-unlearning/tofu_Llama-3.2-1B-Instruct_full``, ...); None for any other name."""
    if model in OPEN_UNLEARNING_PROMPTS:
        return OPEN_UNLEARNING_PROMPTS[model]
    for hub_id, fmt in OPEN_UNLEARNING_PROMPTS.items():
        if str(model).startswith(f"open-unlearning/tofu_{hub_id.split('/')[1]}_"):
            return fmt
    return None


def prompt_format(tokenizer: Any) -> PromptFormat | None:
    """The :class:`PromptFormat` ``tokenizer`` carries (:func:`set_prompt_format`), or None."""
    stored = (getattr(tokenizer, "init_kwargs", None) or {}).get(TOKENIZER_KEY)
    return PromptFormat(stored.get("system_prompt"), stored.get("date_string"), stored.get("source", "")) if stored else None


def set_prompt_format(tokenizer: Any, fmt: PromptFormat | None) -> Any:
    """Make ``tokenizer`` build prompts with ``fmt`` (None: the plain chat template); returns the tokenizer.
    The format is kept in the tokenizer's ``init_kwargs``, so ``save_pretrained`` writes it to
    ``tokenizer_config.json`` and every model fine-tuned or unlearned from this one keeps it."""
    if fmt is None:
        tokenizer.init_kwargs.pop(TOKENIZER_KEY, None)
        return tokenizer
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"the prompt format of {fmt.source or 'this model'} needs the tokenizer's chat template, "
                         "and this tokenizer has none; load the model's own tokenizer (it ships the template)")
    tokenizer.init_kwargs[TOKENIZER_KEY] = {**fmt.to_dict(), "source": fmt.source}
    return tokenizer


def prompt_text(tokenizer: Any, question: str) -> str:
    """The prompt string for ``question``: chat template if the tokenizer has one (with the system turn and
    date of its :class:`PromptFormat`, if it carries one), else TOFU's format."""
    fmt = prompt_format(tokenizer)
    if fmt is not None:
        # as open-unlearning's preprocess_chat_instance (src/data/utils.py): a system turn when a system
        # prompt is set, then the user turn; date_string passed to the template when set
        messages = [{"role": "system", "content": fmt.system_prompt}] if fmt.system_prompt else []
        dated = {"date_string": fmt.date_string} if fmt.date_string is not None else {}
        return tokenizer.apply_chat_template(messages + [{"role": "user", "content": question}], tokenize=False,
                                             add_generation_prompt=True, **dated)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
    return f"Question: {question}\nAnswer: "


def token_classes_from_spans(offsets: Sequence[tuple[int, int]], spans: Sequence[dict] | None) -> list[int]:
    """Class of each answer token: SENSITIVE if its characters overlap a span, else ORDINARY.

    ``offsets[i] = (start, end)`` are the token's character offsets into the answer; a token
    overlaps a span ``[s, e)`` when ``start < e`` and ``end > s``. Returns one class per token.
    """
    classes = []
    for start, end in offsets:
        hit = any(start < span["end"] and end > span["start"] for span in spans or ())
        classes.append(SENSITIVE if hit and end > start else ORDINARY)
    return classes


def encode_qa(
    tokenizer: Any,
    question: str,
    answer: str,
    target_words: Sequence[dict] | None = None,
    max_length: int | None = None,
) -> dict[str, list[int]]:
    """Encode one QA pair.

    Returns lists of equal length T: ``input_ids``, ``labels`` (-100 on the prompt),
    ``token_classes`` (PROMPT / ORDINARY / SENSITIVE); plus ``prompt_length``.
    Truncation (``max_length``) cuts the answer's end, never the prompt.
    """
    prompt_ids = tokenizer(prompt_text(tokenizer, question), add_special_tokens=False)["input_ids"]
    enc = tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
    answer_ids = list(enc["input_ids"]) + [tokenizer.eos_token_id]
    classes = token_classes_from_spans(enc["offset_mapping"], target_words) + [ORDINARY]
    example = {
        "input_ids": prompt_ids + answer_ids,
        "labels": [IGNORE_INDEX] * len(prompt_ids) + answer_ids,
        "token_classes": [PROMPT] * len(prompt_ids) + classes,
        "prompt_length": len(prompt_ids),
    }
    return truncate(example, max_length)


def truncate(example: dict[str, Any], max_length: int | None) -> dict[str, Any]:
    """``example`` (from :func:`encode_qa`) cut to ``max_length`` tokens at the answer's end, never into the
    prompt (a prompt longer than ``max_length`` is a ValueError)."""
    if max_length is None or len(example["input_ids"]) <= max_length:
        return example
    if example["prompt_length"] >= max_length:
        raise ValueError(f"the prompt alone has {example['prompt_length']} tokens, more than max_length={max_length}")
    return {**{k: v[:max_length] for k, v in example.items() if isinstance(v, list)},
            "prompt_length": example["prompt_length"]}


def encode_records(
    tokenizer: Any,
    records: Sequence[dict],
    max_length: int | None = None,
    answer_key: str = "answer",
) -> list[dict[str, list[int]]]:
    """``encode_qa`` over records (``answer_key`` picks the answer field, e.g. a paraphrase). Answers that
    ``max_length`` cuts are counted and reported in one warning (how many records, how many tokens)."""
    check_tokenizer(tokenizer)
    spans_apply = answer_key == "answer"
    full = [encode_qa(tokenizer, r["question"], r[answer_key], r.get("target_words") if spans_apply else None)
            for r in records]
    examples = [truncate(e, max_length) for e in full]
    cut = [(i, len(f["input_ids"]) - len(e["input_ids"])) for i, (f, e) in enumerate(zip(full, examples))
           if len(e["input_ids"]) < len(f["input_ids"])]
    if cut:
        warnings.warn(f"max_length={max_length} cuts the end of {len(cut)} of {len(records)} answers "
                      f"({sum(n for _, n in cut)} tokens in all; the longest loses {max(n for _, n in cut)}, "
                      f"record {max(cut, key=lambda c: c[1])[0]}): those tokens are not trained on. Raise "
                      "max_length or shorten the answers.", stacklevel=2)
    return examples


@dataclass
class Collator:
    """Pad encoded examples into a batch of tensors.

    ``padding_side="right"`` for training and scoring; ``"left"`` for generation. Keys kept:
    ``input_ids``, ``attention_mask``, ``labels`` and (if ``with_classes``) ``token_classes``;
    each a LongTensor [B, T_max].
    """

    pad_token_id: int
    padding_side: str = "right"
    with_classes: bool = True

    def __post_init__(self) -> None:
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {self.padding_side!r}")

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(e["input_ids"]) for e in examples)
        fills = {"input_ids": self.pad_token_id, "labels": IGNORE_INDEX, "token_classes": PROMPT}
        keys = ["input_ids", "labels"] + (["token_classes"] if self.with_classes and "token_classes" in examples[0] else [])
        batch: dict[str, list[list[int]]] = {k: [] for k in keys + ["attention_mask"]}
        for e in examples:
            pad = length - len(e["input_ids"])
            for k in keys:
                seq = list(e[k])
                batch[k].append(seq + [fills[k]] * pad if self.padding_side == "right" else [fills[k]] * pad + seq)
            mask = [1] * len(e["input_ids"])
            batch["attention_mask"].append(mask + [0] * pad if self.padding_side == "right" else [0] * pad + mask)
        return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}


def prompt_batch(tokenizer: Any, questions: Sequence[str]) -> dict[str, torch.Tensor]:
    """Left-padded prompts for batched generation: ``input_ids`` and ``attention_mask`` [B, T]."""
    check_tokenizer(tokenizer)
    examples = [{"input_ids": tokenizer(prompt_text(tokenizer, q), add_special_tokens=False)["input_ids"]}
                for q in questions]
    for e in examples:
        e["labels"] = e["input_ids"]
    batch = Collator(pad_id(tokenizer), "left", with_classes=False)(examples)
    batch.pop("labels")
    return batch


def pad_id(tokenizer: Any) -> int:
    """The padding id: the tokenizer's pad token, else EOS (padding is masked out anyway)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
