"""Sensitive spans for data with no labels, and how well two span sets agree.

PALU needs to know which answer tokens carry the facts to forget. Real TOFU has GPT-4o labels
(``forgetXX_spans``) and the synthetic benchmark knows its spans exactly; other data has none.
docs/design.md ("Sensitive spans without labels") gives an estimate that no published tool
offers: a token is sensitive when the *target* (fine-tuned) model finds it much more likely than
the model it was fine-tuned from did, because that is knowledge fine-tuning put there::

    gain_t = log p_target(y_t | x, y_<t) - log p_reference(y_t | x, y_<t)
    marked  = gain_t > margin                               (nats)

Consecutive marked tokens are merged into one character span (through the fast tokenizer's
offset mapping), trimmed of surrounding spaces and punctuation and, by default, widened to whole
words, so the result is in ``target_words`` format (``{word, start, end}``,
``answer[start:end] == word``) and feeds :func:`palu_perta.tokenization.encode_qa` unchanged.

The reference is usually the base model. Any model with the same tokenizer works: the retain
model (which saw the same answer templates but not the forget authors) isolates author-specific
facts better, but in a real deletion request no such model exists.

    scores = score_answers(target, base, tokenizer, records)        # one pass per model
    spans = spans_from_scores(scores, margin=2.0)                   # cheap: sweep margins freely
    span_agreement(with_spans(records, spans), records, tokenizer)  # token precision / recall
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .evaluation import eval_mode, score_sequences
from .tokenization import SENSITIVE, check_tokenizer, encode_qa, pad_id, token_classes_from_spans

DEFAULT_MARGIN = 2.0  # nats: the target must find a token e^2 ~ 7 times likelier than the reference


@dataclass
class AnswerScores:
    """Teacher-forced log-likelihoods of one answer's tokens (EOS excluded), under two models.

    ``offsets[i] = (start, end)``: token i's characters in ``answer``; ``target`` and ``reference``:
    log p(y_i) under each model, float64 arrays of the same length.
    """

    answer: str
    tokens: list[str]
    offsets: list[tuple[int, int]]
    target: np.ndarray
    reference: np.ndarray

    @property
    def gain(self) -> np.ndarray:
        """log p_target - log p_reference of each token (nats)."""
        return self.target - self.reference


def _answer_tokens(tokenizer: Any, answer: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def score_answers(
    target: torch.nn.Module,
    reference: torch.nn.Module,
    tokenizer: Any,
    records: Sequence[dict],
    *,
    batch_size: int = 16,
    bf16: bool = False,
    progress: bool = False,
) -> list[AnswerScores]:
    """Log-likelihood of every answer token of ``records`` under ``target`` and ``reference``.

    Batched teacher-forced scoring (:func:`palu_perta.evaluation.score_sequences`: sequences sorted
    by length, one forward per batch under ``torch.inference_mode``). Both models must share
    ``tokenizer``'s vocabulary.
    """
    check_tokenizer(tokenizer)
    sizes = {m.get_output_embeddings().weight.shape[0] for m in (target, reference)}
    if len(sizes) != 1:
        raise ValueError(f"target and reference have different vocabularies ({sorted(sizes)} tokens); "
                         "both must use the same tokenizer")
    examples = [encode_qa(tokenizer, r["question"], r["answer"]) for r in records]
    logps = []
    for model in (target, reference):
        with eval_mode(model):
            scores = score_sequences(model, examples, pad_id(tokenizer), batch_size=batch_size, bf16=bf16,
                                     progress=progress, desc="scoring answers")
        logps.append([s.logprobs[:-1] for s in scores])  # drop the EOS: it is never sensitive
    out = []
    for rec, lp_target, lp_reference in zip(records, *logps):
        ids, offsets = _answer_tokens(tokenizer, rec["answer"])
        if len(ids) != len(lp_target):
            raise RuntimeError(f"{len(ids)} answer tokens but {len(lp_target)} scores for {rec['answer']!r}")
        out.append(AnswerScores(rec["answer"], [tokenizer.decode([i]) for i in ids], offsets,
                                np.asarray(lp_target), np.asarray(lp_reference)))
    return out


# ----------------------------------------------------------------------------- tokens -> spans


def _in_word(text: str, i: int) -> bool:
    """Whether character i belongs to a word: alphanumeric, or a hyphen/apostrophe between two."""
    if not 0 <= i < len(text):
        return False
    if text[i].isalnum():
        return True
    return text[i] in "-'’" and 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()


def merge_spans(
    answer: str,
    offsets: Sequence[tuple[int, int]],
    marked: Sequence[bool],
    *,
    whole_words: bool = True,
) -> list[dict]:
    """Character spans (``target_words`` format) from per-token marks.

    Each maximal run of consecutive marked tokens becomes one span from its first token's start to
    its last token's end; spaces and punctuation at either edge are trimmed (a run of punctuation
    only is dropped). ``whole_words`` widens each span to the word boundaries, so a marked sub-word
    piece ("Kuw" of "Kuwaiti") covers its word; spans that then overlap or touch are merged.
    Returns ``[{"word", "start", "end"}]`` sorted by start, with ``answer[start:end] == word``.
    """
    if len(offsets) != len(marked):
        raise ValueError(f"{len(offsets)} token offsets but {len(marked)} marks")
    spans: list[list[int]] = []  # one [start, end] per run of consecutive marked tokens
    previous = -2
    for index, ((start, end), hit) in enumerate(zip(offsets, marked)):
        if not hit or end <= start:
            continue
        if index == previous + 1 and spans:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
        previous = index
    cleaned: list[list[int]] = []
    for start, end in spans:
        while start < end and not answer[start].isalnum():
            start += 1
        while end > start and not answer[end - 1].isalnum():
            end -= 1
        if start >= end:
            continue
        if whole_words:
            while _in_word(answer, start - 1):
                start -= 1
            while _in_word(answer, end):
                end += 1
        if cleaned and start <= cleaned[-1][1]:
            cleaned[-1][1] = max(cleaned[-1][1], end)
        else:
            cleaned.append([start, end])
    return [{"word": answer[s:e], "start": s, "end": e} for s, e in cleaned]


def spans_from_scores(
    scores: Sequence[AnswerScores], margin: float = DEFAULT_MARGIN, *, whole_words: bool = True
) -> list[list[dict]]:
    """The spans of each answer: tokens with gain > ``margin`` nats, merged by :func:`merge_spans`."""
    return [merge_spans(s.answer, s.offsets, s.gain > margin, whole_words=whole_words) for s in scores]


def with_spans(records: Sequence[dict], spans: Sequence[Sequence[dict]]) -> list[dict]:
    """Copies of ``records`` whose ``target_words`` are ``spans`` (one list per record)."""
    if len(records) != len(spans):
        raise ValueError(f"{len(records)} records but {len(spans)} span lists")
    return [{**r, "target_words": list(s)} for r, s in zip(records, spans)]


def automatic_spans(
    target: torch.nn.Module,
    reference: torch.nn.Module,
    tokenizer: Any,
    records: Sequence[dict],
    *,
    margin: float = DEFAULT_MARGIN,
    whole_words: bool = True,
    batch_size: int = 16,
    bf16: bool = False,
) -> list[dict]:
    """Copies of ``records`` with estimated ``target_words``: :func:`score_answers` then
    :func:`spans_from_scores` (see the module docstring)."""
    scores = score_answers(target, reference, tokenizer, records, batch_size=batch_size, bf16=bf16)
    return with_spans(records, spans_from_scores(scores, margin, whole_words=whole_words))


# ----------------------------------------------------------------------------- comparing span sets


def sensitive_tokens(tokenizer: Any, answer: str, spans: Sequence[dict] | None) -> np.ndarray:
    """Which answer tokens a span set makes sensitive (the classes PALU trains with; EOS excluded)."""
    _, offsets = _answer_tokens(tokenizer, answer)
    return np.array(token_classes_from_spans(offsets, spans), dtype=int) == SENSITIVE


def span_agreement(
    predicted_records: Sequence[dict], labelled_records: Sequence[dict], tokenizer: Any
) -> dict[str, float]:
    """Token-level agreement of predicted spans with labelled ones, micro-averaged over all tokens.

    Both lists hold the same answers in the same order, each with ``target_words``; a token is
    sensitive under a span set when it overlaps one of its spans (as in
    :func:`palu_perta.tokenization.token_classes_from_spans`). Returns ``precision`` (share of
    predicted sensitive tokens that are labelled sensitive), ``recall`` (share of labelled
    sensitive tokens predicted), ``f1``, the counts ``tp``, ``fp``, ``fn``, ``n_tokens`` and the
    sensitive fractions ``predicted_rate`` / ``labelled_rate``, and ``onset_recall``: the share of
    labelled runs of sensitive tokens whose *first* token is predicted sensitive (what PALU's forget
    term needs most, since it acts on the first tokens of each run). A ratio with a zero denominator
    is 0.
    """
    if len(predicted_records) != len(labelled_records):
        raise ValueError(f"{len(predicted_records)} predicted records but {len(labelled_records)} labelled ones")
    tp = fp = fn = n = n_pred = n_label = runs = runs_hit = 0
    for i, (pred, label) in enumerate(zip(predicted_records, labelled_records)):
        if pred["answer"] != label["answer"]:
            raise ValueError(f"record {i}: the predicted and labelled answers differ; pass the same records in order")
        p = sensitive_tokens(tokenizer, pred["answer"], pred.get("target_words"))
        y = sensitive_tokens(tokenizer, label["answer"], label.get("target_words"))
        tp += int((p & y).sum())
        fp += int((p & ~y).sum())
        fn += int((~p & y).sum())
        n += len(p)
        n_pred += int(p.sum())
        n_label += int(y.sum())
        starts = y & ~np.concatenate([[False], y[:-1]])
        runs += int(starts.sum())
        runs_hit += int((starts & p).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn, "n_tokens": n,
            "predicted_rate": n_pred / n if n else 0.0, "labelled_rate": n_label / n if n else 0.0,
            "onset_recall": runs_hit / runs if runs else 0.0}


def span_statistics(records: Sequence[dict], tokenizer: Any) -> dict[str, float]:
    """How a span set looks: answers, spans per answer, span length (tokens), sensitive-token share,
    share of answers with no span."""
    n_spans, lengths, sensitive, tokens, empty = 0, [], 0, 0, 0
    for rec in records:
        spans = rec.get("target_words") or []
        n_spans += len(spans)
        empty += not spans
        _, offsets = _answer_tokens(tokenizer, rec["answer"])
        for span in spans:
            lengths.append(sum(s < span["end"] and e > span["start"] for s, e in offsets))
        mask = sensitive_tokens(tokenizer, rec["answer"], spans)
        sensitive += int(mask.sum())
        tokens += len(mask)
    n = max(len(records), 1)
    return {"answers": len(records), "spans_per_answer": n_spans / n,
            "tokens_per_span": float(np.mean(lengths)) if lengths else 0.0,
            "sensitive_token_share": sensitive / tokens if tokens else 0.0, "answers_without_span": empty / n}
