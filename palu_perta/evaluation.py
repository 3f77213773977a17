"""Running the model for the TOFU metric suite: batched teacher-forced scoring, batched greedy
generation, and :func:`evaluate`, which turns both into open-unlearning's result keys.

Speed on a CPU comes from doing each kind of work once and in large batches:

- every sequence to score (answer, paraphrase and perturbed answers of every item of every
  split, holdout answers) is flattened into one list and sorted by length into batches, so
  padding is small. Each distinct prompt runs once and its KV cache serves all the answers
  that continue it (7 per TOFU item: ~2.5x fewer tokens than whole sequences); logits only
  where an answer token is predicted, one ``log_softmax`` over those positions, from which
  log p(y_t), the argmax hits and the Min-k%++ statistics are all gathered;
- every question to answer is generated in left-padded batches sorted by prompt length, with
  the KV cache, stopping at EOS;
- everything under ``torch.inference_mode``, optionally under bf16 autocast (see
  :data:`DEFAULT_BF16` for the measurement that sets the default).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import metrics as M
from .artifacts import atomic_write_json, check_output_dir
from .modes import eval_mode  # noqa: F401  (re-exported: palu_perta.evaluation.eval_mode)
from .interop import (
    is_open_unlearning_log,
    open_unlearning_summary,
    retain_reference_from_open_unlearning,
    to_open_unlearning,
)
from .tokenization import (IGNORE_INDEX, Collator, check_tokenizer, encode_qa, pad_id, prompt_batch, prompt_text,
                           truncate)

# bf16 autocast, measured on SmolLM2-135M-Instruct over the cpu profile's synthetic benchmark
# (synthetic_benchmark(20, 10, "forget10", 2)), fp32 vs bf16: the full suite ran 1.5x faster
# (59 s vs 88 s on an idle 2-core machine, 2 threads), but per-item mean log-probs moved by up to 0.21
# nats (world_facts; 0.017 on forget), per-item truth ratios by up to 17 %, only 40-67 % of the
# greedy generations stayed identical, ra/wf_Q_A_ROUGE moved by 0.05, wf_accuracy by 1/30,
# model_utility by 0.002 and the MIA AUCs by up to 0.0075. That is beyond rounding, so fp32
# is the default; bf16=True is there for quick looks.
DEFAULT_BF16 = False

QA_SPLITS = ("forget", "retain")  # with paraphrased and perturbed answers
OPTION_SPLITS = ("real_authors", "world_facts")  # answer + wrong options
GENERATED_SPLITS = QA_SPLITS + OPTION_SPLITS
# Optional: retain answers that share a fact with a forget answer (data.neighbour_records). Scored like
# ``retain``, in calls of its own (the other splits' numbers stay bit-identical with or without it), and
# reported as a metric group of its own: model utility stays open-unlearning's, without it.
NEIGHBOUR = "neighbour"
PARAPHRASED_SPLITS = QA_SPLITS + (NEIGHBOUR,)
PREFIX = {"forget": "forget", "retain": "retain", "real_authors": "ra", "world_facts": "wf", NEIGHBOUR: NEIGHBOUR}
NEIGHBOUR_KEYS = tuple(f"{NEIGHBOUR}_{k}" for k in ("Q_A_Prob", "Q_A_PARA_Prob", "Q_A_PERT_Prob", "Q_A_ROUGE",
                                                     "rouge1_recall", "rougeL_f1", "Truth_Ratio"))
# Scoring memory grows with the square of a sequence's length: an answer of 100,000 characters asked for
# 11.5 GB. Longer sequences are scored on their first tokens, with a warning. The longest of TOFU's scored
# sequences (every split, answers, paraphrases and perturbed answers) is 162 tokens with SmolLM2's chat
# template [measured], so no benchmark answer is cut.
MAX_SCORED_TOKENS = 1024
MIA_KEYS = ("mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_plus_plus")
# Why the MIA keys and privleak are None when the splits hold no holdout records and the data says nothing more
# (a Benchmark's info["mia_unavailable"] says more: which file is missing, why the hub could not be read).
NO_HOLDOUT = ("no holdout (non-member) records were given: the membership attacks compare the forget answers "
              "with answers no model was trained on")


# ---------------------------------------------------------------------------------------
# teacher-forced scoring


@dataclass
class SequenceScore:
    """Teacher-forced statistics of one sequence's labelled tokens (answer tokens + EOS).

    Every field has shape [n], n = number of labelled tokens: ``labels`` (token ids),
    ``logprobs`` (log p(y_t), float64), ``hits`` (argmax == y_t), ``mu`` and ``var`` (mean and
    variance of log p over the full next-token distribution, for Min-k%++).
    """

    labels: np.ndarray
    logprobs: np.ndarray
    hits: np.ndarray
    mu: np.ndarray
    var: np.ndarray

    @property
    def mean_logprob(self) -> float:
        """Length-normalised log-probability (``-avg_loss``)."""
        return M.mean_logprob(self.logprobs)

    def without_eos(self) -> "SequenceScore":
        """The same statistics without the last labelled token (open-unlearning's ``tokenwise_logprobs``)."""
        return SequenceScore(*(a[:-1] for a in (self.labels, self.logprobs, self.hits, self.mu, self.var)))


def _autocast(model: torch.nn.Module, bf16: bool):
    if not bf16:
        return nullcontext()
    return torch.autocast(device_type=_device(model).type, dtype=torch.bfloat16)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _first_labelled(example: Mapping[str, Sequence[int]]) -> int:
    """Index of the first labelled token (= the prompt's length); it must be >= 1."""
    first = next((t for t, label in enumerate(example["labels"]) if label != IGNORE_INDEX), None)
    if first is None:
        raise ValueError("an example has no labelled token (empty answer after truncation?)")
    if first < 1:
        raise ValueError("the first token of an example is labelled: a prompt must come before the answer")
    return first


def _token_stats(logits: torch.Tensor, targets: torch.Tensor, counts: list[int],
                 order: torch.Tensor | None = None) -> list[SequenceScore]:
    """Statistics of labelled positions: ``logits`` [N, V] predict ``targets`` [N].

    ``order`` (optional, [N]) puts the positions in sequence order; ``counts`` then splits them
    into sequences. One log_softmax and one exp over [N, V]; the centred variance is computed
    in place (float32 sums, pairwise: ~1e-5 of a float64 reference).
    """
    logp = torch.log_softmax(logits.float(), dim=-1)  # one log_softmax, over labelled positions only
    token_logp = logp.gather(1, targets[:, None]).squeeze(1)
    hits = logp.argmax(dim=-1) == targets
    p = logp.exp()
    mu = (p * logp).sum(-1)
    logp.sub_(mu[:, None])  # centred: E[x^2] - mu^2 would cancel in float32
    var = p.mul_(logp).mul_(logp).sum(-1)
    stats = (targets, token_logp.double(), hits, mu.double(), var.double())
    if order is not None:
        stats = tuple(t[order] for t in stats)
    pieces = [t.cpu().split(counts) for t in stats]
    return [SequenceScore(*(piece[row].numpy() for piece in pieces)) for row in range(len(counts))]


def _batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices sorted by length (longest first: peak memory shows up at once), cut into batches."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def _score_flat(model, examples, pad_token_id, batch_size, bf16, progress, desc) -> list[SequenceScore]:
    """One right-padded forward per batch of whole sequences (any causal LM)."""
    device = _device(model)
    collate = Collator(pad_token_id, "right", with_classes=False)
    results: list[SequenceScore | None] = [None] * len(examples)
    for idx in tqdm(_batches([len(e["input_ids"]) for e in examples], batch_size), desc=desc, disable=not progress):
        first = min(_first_labelled(examples[i]) for i in idx)
        batch = collate([{"input_ids": examples[i]["input_ids"], "labels": examples[i]["labels"]} for i in idx])
        keep = batch["input_ids"].shape[1] - first + 1  # position t predicts t + 1: keep first-1 .. T-1
        inputs = {"input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].to(device),
                  "use_cache": False}
        with _autocast(model, bf16):
            try:
                logits = model(**inputs, logits_to_keep=keep).logits
            except TypeError:  # a model without logits_to_keep
                logits = model(**inputs).logits
        targets = torch.nn.functional.pad(batch["labels"][:, first:], (0, 1), value=IGNORE_INDEX).to(device)
        mask = targets != IGNORE_INDEX
        scores = _token_stats(logits[:, -keep:][mask], targets[mask], mask.sum(dim=1).tolist())
        for i, score in zip(idx, scores):
            results[i] = score
    return results  # type: ignore[return-value]


def _prompt_units(examples, batch_size: int) -> list[list[tuple[tuple[int, ...], list[int]]]]:
    """Batches of (prompt ids, indices of the examples that continue it), <= batch_size examples each."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, e in enumerate(examples):
        groups.setdefault(tuple(e["input_ids"][: _first_labelled(e)]), []).append(i)
    units = [(prompt, members[j:j + batch_size]) for prompt, members in groups.items()
             for j in range(0, len(members), batch_size)]
    # similar prompt and answer lengths side by side: little padding on either forward
    units.sort(key=lambda u: (-len(u[0]), -max(len(examples[i]["input_ids"]) for i in u[1])))
    batches: list[list[tuple[tuple[int, ...], list[int]]]] = []
    size = batch_size
    for unit in units:
        if size + len(unit[1]) > batch_size:
            batches.append([])
            size = 0
        batches[-1].append(unit)
        size += len(unit[1])
    return batches


class _NoSharedCache(Exception):
    """The model's KV cache cannot be expanded along the batch: use the flat path."""


def _cache_keyword(model: torch.nn.Module) -> str:
    """The keyword by which ``model``'s forward takes a KV cache: ``cache`` where it has one (the installed
    transformers 5.24 does; ``past_key_values`` is deprecated there and to be removed in 5.40), else
    ``past_key_values`` (earlier releases). Read from the signature: a forward taking ``**kwargs`` would
    swallow the wrong name silently and score the answers without their prompt."""
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in parameters else "past_key_values"


def _returned_cache(out: Mapping[str, Any]) -> Any:
    """The KV cache a forward returned (``cache``, or ``past_key_values`` before the rename), None if none;
    read as a mapping, so transformers' deprecated ``past_key_values`` property is not touched."""
    return out["cache"] if "cache" in out else out.get("past_key_values")


def _score_shared(model, examples, pad_token_id, batch_size, bf16, progress, desc) -> list[SequenceScore]:
    """Each distinct prompt runs once; its KV cache is copied to every answer that continues it.

    Per batch: a forward over the left-padded prompts (cache + the last prompt logit, which
    predicts each answer's first token), then one over the right-padded answers on top of the
    expanded cache. Same numbers as :func:`_score_flat` up to float rounding, ~2.5x fewer tokens
    on TOFU (an item's answer, paraphrase and 5 perturbed answers share one prompt).
    """
    device = _device(model)
    results: list[SequenceScore | None] = [None] * len(examples)
    for units in tqdm(_prompt_units(examples, batch_size), desc=desc, disable=not progress):
        prompts = [list(prompt) for prompt, _ in units]
        p_len = max(map(len, prompts))
        p_ids = torch.tensor([[pad_token_id] * (p_len - len(p)) + p for p in prompts], device=device)
        p_mask = torch.tensor([[0] * (p_len - len(p)) + [1] * len(p) for p in prompts], device=device)
        members = [i for _, idx in units for i in idx]
        owner = torch.tensor([g for g, (_, idx) in enumerate(units) for _ in idx], device=device)
        conts = [examples[i]["input_ids"][len(prompts[g]):] for g, (_, idx) in enumerate(units) for i in idx]
        labels = [examples[i]["labels"][len(prompts[g]):] for g, (_, idx) in enumerate(units) for i in idx]
        a_len = max(map(len, conts))
        c_ids = torch.tensor([list(c) + [pad_token_id] * (a_len - len(c)) for c in conts], device=device)
        c_mask = torch.tensor([[1] * len(c) + [0] * (a_len - len(c)) for c in conts], device=device)
        targets = torch.tensor([list(lab) + [IGNORE_INDEX] * (a_len - len(lab)) for lab in labels], device=device)
        with _autocast(model, bf16):
            try:
                out = model(input_ids=p_ids, attention_mask=p_mask, position_ids=(p_mask.cumsum(-1) - 1).clamp(min=0),
                            use_cache=True, logits_to_keep=1)
            except TypeError as err:  # no logits_to_keep / position_ids / cache arguments
                raise _NoSharedCache(str(err)) from err
            cache = _returned_cache(out)
            if not hasattr(cache, "batch_select_indices"):
                raise _NoSharedCache(type(cache).__name__)
            cache.batch_select_indices(owner)
            positions = p_mask.sum(-1)[owner][:, None] + torch.arange(a_len, device=device)
            c_logits = model(input_ids=c_ids, attention_mask=torch.cat([p_mask[owner], c_mask], dim=1),
                             position_ids=positions, use_cache=True, **{_cache_keyword(model): cache}).logits
        # answer token 0 is predicted by the prompt's last logit, token t > 0 by answer position t - 1
        rest = targets[:, 1:] != IGNORE_INDEX
        rows, cols = rest.nonzero(as_tuple=True)
        logits = torch.cat([out.logits[owner, -1], c_logits[:, :-1][rest]])
        del c_logits
        stride = a_len + 1  # sort key row * stride + position: back to sequence order
        order = torch.cat([torch.arange(len(members), device=device) * stride, rows * stride + cols + 1]).argsort()
        counts = (1 + rest.sum(dim=1)).tolist()
        stats = _token_stats(logits, torch.cat([targets[:, 0], targets[:, 1:][rest]]), counts, order)
        for i, score in zip(members, stats):
            results[i] = score
    return results  # type: ignore[return-value]


@torch.inference_mode()
def score_sequences(
    model: torch.nn.Module,
    examples: Sequence[Mapping[str, Sequence[int]]],
    pad_token_id: int,
    *,
    batch_size: int = 16,
    bf16: bool = DEFAULT_BF16,
    share_prompts: bool = True,
    progress: bool = True,
    desc: str = "scoring",
) -> list[SequenceScore]:
    """Teacher-forced statistics of every example's labelled tokens, in the examples' order.

    ``examples``: dicts with ``input_ids`` and ``labels`` (-100 on the prompt), as
    :func:`palu_perta.tokenization.encode_qa` makes them; at most ``batch_size`` sequences go
    through the model at once, sorted by length. ``share_prompts``: run each distinct prompt
    once and reuse its KV cache for all its answers (falls back to whole sequences for a model
    whose cache cannot be expanded); else one right-padded forward per batch of whole sequences.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    if not examples:
        return []
    if share_prompts:
        try:
            return _score_shared(model, examples, pad_token_id, batch_size, bf16, progress, desc)
        except _NoSharedCache as err:
            warnings.warn(f"{type(model).__name__} cannot share a prompt's cache between answers ({err}): "
                          "scoring whole sequences", stacklevel=2)
    return _score_flat(model, examples, pad_token_id, batch_size, bf16, progress, desc)


# ---------------------------------------------------------------------------------------
# greedy generation


def _eos_ids(model: torch.nn.Module, tokenizer: Any) -> list[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if configured is not None:
        ids.update(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)


@torch.inference_mode()
def generate_token_ids(
    model: torch.nn.Module,
    tokenizer: Any,
    questions: Sequence[str],
    *,
    max_new_tokens: int = 48,
    batch_size: int = 16,
    bf16: bool = DEFAULT_BF16,
    progress: bool = True,
    desc: str = "generating",
) -> list[list[int]]:
    """Greedy answers to ``questions`` as token ids (up to and including the first EOS).

    Prompts are sorted by length and left-padded (:func:`~palu_perta.tokenization.prompt_batch`);
    one ``generate`` call per batch with the KV cache, stopping when every row has hit EOS.
    """
    from transformers import GenerationConfig

    check_tokenizer(tokenizer)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
    device = _device(model)
    eos = _eos_ids(model, tokenizer)
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, use_cache=True,
                              eos_token_id=eos, pad_token_id=pad_id(tokenizer))
    lengths = [len(tokenizer(prompt_text(tokenizer, q), add_special_tokens=False)["input_ids"]) for q in questions]
    results: list[list[int] | None] = [None] * len(questions)
    for idx in tqdm(_batches(lengths, batch_size), desc=desc, disable=not progress):
        batch = {k: v.to(device) for k, v in prompt_batch(tokenizer, [questions[i] for i in idx]).items()}
        with _autocast(model, bf16):
            out = model.generate(**batch, generation_config=config)
        new = out[:, batch["input_ids"].shape[1]:].tolist()
        for i, ids in zip(idx, new):
            stop = next((t for t, tok in enumerate(ids) if tok in eos), None)
            results[i] = ids if stop is None else ids[: stop + 1]
    return results  # type: ignore[return-value]


def generate_answers(model: torch.nn.Module, tokenizer: Any, questions: Sequence[str], **kwargs: Any) -> list[str]:
    """Greedy answers as text (EOS and special tokens removed, stripped); kwargs as :func:`generate_token_ids`."""
    ids = generate_token_ids(model, tokenizer, questions, **kwargs)
    return [tokenizer.decode(t, skip_special_tokens=True).strip() for t in ids]


# ---------------------------------------------------------------------------------------
# fluency of generated text


def answer_perplexity(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    answers: Sequence[str],
    *,
    batch_size: int = 16,
    bf16: bool = DEFAULT_BF16,
    progress: bool = False,
) -> list[float]:
    """The perplexity under ``model`` of each answer to its prompt (teacher-forced, the prompt through the
    chat template as :func:`~palu_perta.tokenization.encode_qa` makes it): ``exp(-mean log p)`` over the
    answer's tokens, the EOS left out, so an answer cut at ``max_new_tokens`` is not penalised for
    lacking one. A fluency score: judged by a model that never saw the facts (the base model), a fluent
    answer scores low whatever facts it states, a garbled one high. ``nan`` for an empty answer."""
    check_tokenizer(tokenizer)
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers: give one answer per prompt")
    scored = [i for i, a in enumerate(answers) if a.strip()]
    examples = [truncate(encode_qa(tokenizer, prompts[i], answers[i]), MAX_SCORED_TOKENS) for i in scored]
    with eval_mode(model):
        scores = score_sequences(model, examples, pad_id(tokenizer), batch_size=batch_size, bf16=bf16,
                                 progress=progress, desc="perplexity")
    result = [float("nan")] * len(answers)
    for i, example, score in zip(scored, examples, scores):
        ends_with_eos = example["input_ids"][-1] == tokenizer.eos_token_id  # False where truncate cut the end
        tokens = score.without_eos() if ends_with_eos and len(score.logprobs) > 1 else score
        result[i] = M.perplexity(tokens.logprobs)
    return result


# ---------------------------------------------------------------------------------------
# inputs: validation, hashing, the retain reference


def validate_splits(splits: Mapping[str, Sequence[dict]]) -> dict[str, list[dict]]:
    """Check the evaluation splits; returns them as lists (``holdout`` may be missing or empty).

    ``forget`` / ``retain`` need ``paraphrased_answer`` and the same number of
    ``perturbed_answer``s in every item; ``real_authors`` / ``world_facts`` the same number of
    wrong options in every item (open-unlearning stacks them into one array).
    """
    out = {name: list(splits.get(name) or []) for name in (*GENERATED_SPLITS, "holdout")}
    if splits.get(NEIGHBOUR):
        out[NEIGHBOUR] = list(splits[NEIGHBOUR])
    for name in GENERATED_SPLITS:
        if not out[name]:
            raise ValueError(f"split {name!r} is missing or empty; the suite needs {list(GENERATED_SPLITS)}")
    for name, records in out.items():
        n_perturbed = None
        for i, rec in enumerate(records):
            for key in ("question", "answer") + (("paraphrased_answer",) if name in PARAPHRASED_SPLITS else ()):
                if not isinstance(rec.get(key), str):
                    raise ValueError(f"{name}[{i}] needs a string {key!r}")
            if name == "holdout":
                continue
            wrong = rec.get("perturbed_answer")
            if not (isinstance(wrong, list) and wrong and all(isinstance(w, str) for w in wrong)):
                raise ValueError(f"{name}[{i}].perturbed_answer must be a non-empty list of strings")
            if n_perturbed is None:
                n_perturbed = len(wrong)
            elif len(wrong) != n_perturbed:
                raise ValueError(
                    f"{name}[{i}] has {len(wrong)} perturbed answers but {name}[0] has {n_perturbed}: every item of a "
                    "split needs the same number (open-unlearning aligns them per position)"
                )
    return out


def forget_hash(forget: Sequence[dict]) -> str:
    """A 16-hex-digit hash of the forget questions (in order): which forget set results belong to."""
    return hashlib.sha256(json.dumps([r["question"] for r in forget]).encode()).hexdigest()[:16]


def load_retain_reference(reference: Mapping[str, Any] | str | os.PathLike, expected_hash: str | None = None,
                          expected_split: str | None = None, *, expected_n: int | None = None) -> dict:
    """The per-item results of a retain model, in our per-item shape (``{"splits": {"forget": [row]},
    "forget_hash", ...}``; for privleak also ``mia_auc``).

    ``reference``: :func:`evaluate`'s return value or the ``per_item.json`` it writes; or
    open-unlearning's ``TOFU_EVAL.json`` content (its per-item forget truth ratios and, when logged,
    ``mia_min_k``'s AUC are used; see :mod:`palu_perta.interop`); or a path to either file, or to a
    directory holding one (``per_item.json`` first, else ``TOFU_EVAL.json``).

    Which forget set the results are for: our results carry a hash of the forget questions, which
    must equal ``expected_hash``. open-unlearning's logs carry no questions, so for them (and
    whenever either hash is missing) only the number of forget items is checked, against
    ``expected_n``: a log of another forget set of the same size is not detected. Raises ValueError
    for anything that is neither format and on a mismatch.
    """
    if isinstance(reference, (str, os.PathLike)):
        reference = _read_reference(Path(reference))
    if is_open_unlearning_log(reference):
        ref = retain_reference_from_open_unlearning(reference)
    else:
        ref = dict(reference.get("per_item", reference)) if isinstance(reference, Mapping) else {}
        if "forget_hash" not in ref or "forget" not in ref.get("splits", {}):
            raise ValueError(
                "retain_reference is not an evaluation result: expected evaluate()'s return value or the "
                "per_item.json it writes (with 'forget_hash' and 'splits'), or open-unlearning's TOFU_EVAL.json "
                "(per-metric 'agg_value' / 'value_by_index'; TOFU_SUMMARY.json holds aggregates only)")
    n_forget = len(ref["splits"]["forget"])
    if expected_hash is not None and ref["forget_hash"] is not None:
        if ref["forget_hash"] != expected_hash:
            raise ValueError(
                f"the retain results are for another forget set ({ref.get('forget_split')!r}, "
                f"{n_forget} questions, hash {ref['forget_hash']}) than this evaluation's "
                f"({expected_split!r}, hash {expected_hash}); evaluate the retain model on the same forget split"
            )
    elif expected_n is not None and n_forget != expected_n:
        origin = ("open-unlearning's logs carry no questions, so only the number of forget items is checked"
                  if ref.get("source") == "open-unlearning" else "one side has no forget hash to compare")
        raise ValueError(
            f"the retain results have {n_forget} forget items but this evaluation has {expected_n} "
            f"({expected_split!r}): not the same forget set ({origin}); evaluate the retain model on the "
            "same forget split"
        )
    return ref


def _read_reference(path: Path) -> Any:
    """The JSON of a retain result file, or of ``per_item.json`` / ``TOFU_EVAL.json`` in a directory."""
    if path.is_dir():
        found = next((path / name for name in ("per_item.json", "TOFU_EVAL.json") if (path / name).is_file()), None)
        if found is None:
            raise FileNotFoundError(f"neither per_item.json nor open-unlearning's TOFU_EVAL.json in {path}")
        path = found
    if not path.is_file():
        raise FileNotFoundError(f"retain results {path} not found (pass per_item.json, open-unlearning's "
                                "TOFU_EVAL.json or a directory holding one)")
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------------------
# the suite


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def evaluate(
    model: torch.nn.Module,
    tokenizer: Any,
    splits: Mapping[str, Sequence[dict]] | Any,
    retain_reference: Mapping[str, Any] | str | os.PathLike | None = None,
    *,
    forget_split: str | None = None,
    max_new_tokens: int = 48,
    batch_size: int = 16,
    out_dir: str | os.PathLike | None = None,
    bf16: bool = DEFAULT_BF16,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the TOFU suite on ``model``; returns open-unlearning's keys plus ``per_item``.

    ``splits``: :meth:`Benchmark.splits` (or the Benchmark itself) — ``forget``, ``retain``,
    ``real_authors``, ``world_facts`` and ``holdout`` (if empty, the MIA keys and ``privleak``
    are None, and ``unavailable`` maps each of them to a one-line reason), and optionally ``neighbour`` (the ``neighbour_*`` keys; None without it). ``retain_reference``: the retain model's result (see
    :func:`load_retain_reference`); without it ``forget_quality`` is None and ``privleak`` uses
    open-unlearning's default reference AUC 0.5. With ``out_dir`` writes ``summary.json``
    (everything but ``per_item``) and ``per_item.json`` (generations, per-item probabilities,
    truth ratios, MIA scores; a valid ``retain_reference`` for other models), and the same results
    in open-unlearning's format: ``TOFU_EVAL.json`` (per metric ``agg_value`` and
    ``value_by_index``) and ``TOFU_SUMMARY.json`` (see :mod:`palu_perta.interop`).
    """
    check_tokenizer(tokenizer)
    if out_dir is not None:
        check_output_dir(out_dir)  # a file in the way fails now, not after the evaluation
    no_holdout = NO_HOLDOUT
    if hasattr(splits, "splits") and callable(splits.splits):  # a Benchmark
        forget_split = forget_split or splits.forget_split
        no_holdout = (getattr(splits, "info", None) or {}).get("mia_unavailable") or NO_HOLDOUT
        splits = splits.splits()
    data = validate_splits(splits)
    fhash = forget_hash(data["forget"])
    forget_split = forget_split or "forget"
    ref = (load_retain_reference(retain_reference, fhash, forget_split, expected_n=len(data["forget"]))
           if retain_reference is not None else None)
    start = time.perf_counter()
    with eval_mode(model):
        per_item = {"splits": {}}
        # the suite's splits, then the neighbour split in calls of its own (same batches as without it)
        for part, names in (("suite", GENERATED_SPLITS), (NEIGHBOUR, (NEIGHBOUR,))):
            chunk = {name: data[name] for name in data if name in names or (part == "suite" and name == "holdout")}
            if not any(chunk.values()):
                continue
            seqs, where = _score_requests(tokenizer, chunk)
            scores = score_sequences(model, seqs, pad_id(tokenizer), batch_size=batch_size, bf16=bf16,
                                     progress=progress)
            questions = [(name, i) for name in names for i in range(len(chunk[name]))]
            generations = generate_answers(model, tokenizer, [chunk[n][i]["question"] for n, i in questions],
                                           max_new_tokens=max_new_tokens, batch_size=batch_size, bf16=bf16,
                                           progress=progress)
            per_item["splits"].update(_per_item(tokenizer, chunk, scores, where, dict(zip(questions, generations)))["splits"])
    per_item.update(forget_split=forget_split, forget_hash=fhash,
                    settings={"max_new_tokens": max_new_tokens, "batch_size": batch_size, "bf16": bf16})
    if not data["holdout"]:
        per_item["mia_unavailable"] = no_holdout  # summarise() reports it again from the saved file
    summary = _summarise(per_item, ref)
    summary["meta"]["wall_time_s"] = round(time.perf_counter() - start, 2)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "per_item.json", per_item)
        atomic_write_json(out / "summary.json", summary)
        log = to_open_unlearning(per_item, summary)
        atomic_write_json(out / "TOFU_EVAL.json", log)
        atomic_write_json(out / "TOFU_SUMMARY.json", open_unlearning_summary(log))
    return {**summary, "per_item": per_item}


def _score_requests(tokenizer: Any, data: dict[str, list[dict]]) -> tuple[list[dict], dict[tuple[str, int, str], Any]]:
    """Every sequence to score, and where each item's candidates sit in that list."""
    seqs: list[dict] = []
    where: dict[tuple[str, int, str], Any] = {}

    cut: list[int] = []

    def add(question: str, answer: str) -> int:
        example = encode_qa(tokenizer, question, answer)
        kept = truncate(example, MAX_SCORED_TOKENS)
        if len(kept["input_ids"]) < len(example["input_ids"]):
            cut.append(len(example["input_ids"]) - len(kept["input_ids"]))
        seqs.append(kept)
        return len(seqs) - 1

    for name, records in data.items():
        for i, rec in enumerate(records):
            where[name, i, "answer"] = add(rec["question"], rec["answer"])
            if name in PARAPHRASED_SPLITS:
                where[name, i, "paraphrase"] = add(rec["question"], rec["paraphrased_answer"])
            if name != "holdout":
                where[name, i, "perturbed"] = [add(rec["question"], w) for w in rec["perturbed_answer"]]
    if cut:
        warnings.warn(f"{len(cut)} answers are longer than {MAX_SCORED_TOKENS} tokens with their prompt: their "
                      f"probabilities are scored on the first {MAX_SCORED_TOKENS} tokens only ({sum(cut)} tokens "
                      "cut), so memory stays bounded. Shorten those answers for exact numbers.", stacklevel=3)
    return seqs, where


def _mia_scores(tokenizer: Any, score: SequenceScore) -> dict[str, float]:
    short = score.without_eos()
    text = tokenizer.decode(score.labels.tolist(), skip_special_tokens=True)
    return {
        "loss": M.loss_score(score.logprobs),
        "zlib": M.zlib_score(score.logprobs, text),
        "min_k": M.min_k_score(short.logprobs),
        "min_k_plus_plus": M.min_k_plus_plus_score(short.logprobs, short.mu, short.var),
    }


def _per_item(tokenizer: Any, data: dict[str, list[dict]], scores: list[SequenceScore],
              where: dict[tuple[str, int, str], Any], generations: dict[tuple[str, int], str]) -> dict[str, Any]:
    """Per-item numbers of every split (the content of ``per_item.json``)."""
    out: dict[str, list[dict]] = {}
    for name, records in data.items():
        rows = []
        for i, rec in enumerate(records):
            answer = scores[where[name, i, "answer"]]
            row: dict[str, Any] = {"question": rec["question"], "answer": rec["answer"],
                                   "prob": float(np.exp(answer.mean_logprob))}
            if name == "holdout":
                row["mia"] = _mia_scores(tokenizer, answer)
                rows.append(row)
                continue
            generation = generations[name, i]
            row.update(generation=generation, **M.rouge_scores(generation, rec["answer"]))
            wrong = [scores[j].mean_logprob for j in where[name, i, "perturbed"]]
            row["perturbed_probs"] = [float(np.exp(w)) for w in wrong]
            if name in PARAPHRASED_SPLITS:
                para = scores[where[name, i, "paraphrase"]].mean_logprob
                row["paraphrase_prob"] = float(np.exp(para))
                row["truth_ratio"] = M.truth_ratio(para, wrong)
            else:
                row["prob_normalised"] = M.option_normalised_probability(answer.mean_logprob, wrong)
                row["truth_ratio"] = M.truth_ratio(answer.mean_logprob, wrong)
                row["correct_is_top"] = M.correct_option_is_top(answer.mean_logprob, wrong)
            if name == "forget":
                short = answer.without_eos()
                row["extraction_strength"] = M.extraction_strength(short.hits)
                row["exact_memorization"] = M.exact_memorization(short.hits)
                row["mia"] = _mia_scores(tokenizer, answer)
            rows.append(row)
        out[name] = rows
    return {"splits": out}


def _summarise(per_item: dict[str, Any], ref: dict | None) -> dict[str, Any]:
    """open-unlearning's aggregate keys from per-item results (and the retain model's)."""
    sp = per_item["splits"]
    s: dict[str, Any] = {}
    s.update(dict.fromkeys(NEIGHBOUR_KEYS))
    for name in (*GENERATED_SPLITS, *((NEIGHBOUR,) if sp.get(NEIGHBOUR) else ())):
        rows, p = sp[name], PREFIX[name]
        s[f"{p}_Q_A_Prob"] = _mean([r["prob"] for r in rows])
        if name in PARAPHRASED_SPLITS:
            s[f"{p}_Q_A_PARA_Prob"] = _mean([r["paraphrase_prob"] for r in rows])
        else:
            s[f"{p}_Q_A_Prob_normalised"] = _mean([r["prob_normalised"] for r in rows])
        s[f"{p}_Q_A_PERT_Prob"] = _mean([float(np.mean(r["perturbed_probs"])) for r in rows])
        s[f"{p}_Q_A_ROUGE"] = _mean([r["rougeL_recall"] for r in rows])
        s[f"{p}_rouge1_recall"] = _mean([r["rouge1_recall"] for r in rows])
        s[f"{p}_rougeL_f1"] = _mean([r["rougeL_f1"] for r in rows])
        trs = [r["truth_ratio"] for r in rows]
        if name == "forget":
            s["forget_truth_ratio"] = M.truth_ratio_closer_to_1(trs)
        else:
            s[f"{p}_Truth_Ratio"] = M.truth_ratio_true_better(trs)
    s["wf_accuracy"] = _mean([float(r["correct_is_top"]) for r in sp["world_facts"]])
    s["model_utility"] = M.model_utility({k: s[k] for k in M.UTILITY_KEYS})
    s["forget_quality"] = (M.forget_quality([r["truth_ratio"] for r in sp["forget"]],
                                            [r["truth_ratio"] for r in ref["splits"]["forget"]]) if ref else None)
    s["extraction_strength"] = _mean([r["extraction_strength"] for r in sp["forget"]])
    s["exact_memorization"] = _mean([r["exact_memorization"] for r in sp["forget"]])

    aucs = per_item["mia_auc"] = _mia_aucs(per_item)  # kept in per_item: a saved file carries its AUCs
    s.update(aucs)
    # open-unlearning's privleak is computed on mia_min_k, against the retain model's AUC
    # when given, else against its default ref_value 0.5. The retain model's AUC: saved with its results, or
    # computed from its forget and holdout items (a reference rebuilt from the results store carries no AUCs)
    ref_aucs = (ref or {}).get("mia_auc") or (_mia_aucs(ref) if ref and ref["splits"].get("holdout") else {})
    ref_auc = ref_aucs.get("mia_min_k")
    ref_auc = None if aucs["mia_min_k"] is None else (0.5 if ref_auc is None else ref_auc)
    s["privleak"] = None if ref_auc is None else M.privleak(aucs["mia_min_k"], ref_auc)
    if not sp["holdout"]:  # not a silent None: each metric left out, with the reason in one line
        why = per_item.get("mia_unavailable") or NO_HOLDOUT
        s["unavailable"] = {**dict.fromkeys(MIA_KEYS, why), "privleak": f"needs mia_min_k's AUC; {why}"}
    s["meta"] = {
        "forget_split": per_item["forget_split"],
        "forget_hash": per_item["forget_hash"],
        "n_items": {name: len(rows) for name, rows in sp.items()},
        "retain_reference": ref is not None,
        "privleak_reference_auc": ref_auc,
        **per_item.get("settings", {}),
    }
    return s


def summary_lines(summary: Mapping[str, Any]) -> list[str]:
    """The summary as aligned ``key  value`` lines (``meta`` and ``per_item`` left out); a metric in
    ``unavailable`` shows ``unavailable: <reason>`` instead of None."""
    unavailable = summary.get("unavailable") or {}
    shown = {k: v for k, v in summary.items() if k not in ("meta", "per_item", "unavailable")}
    width = max(len(k) for k in shown)
    return [f"{key:<{width}}  " + (f"unavailable: {unavailable[key]}" if value is None and key in unavailable
                                   else "None" if value is None else f"{value:.4g}") for key, value in shown.items()]


def _mia_aucs(per_item: dict[str, Any]) -> dict[str, float | None]:
    """AUC of each attack, forget vs holdout (all None without holdout items)."""
    forget, holdout = per_item["splits"]["forget"], per_item["splits"]["holdout"]
    if not holdout:
        return dict.fromkeys(MIA_KEYS)
    return {key: M.mia_auc([r["mia"][key.removeprefix("mia_")] for r in forget],
                           [r["mia"][key.removeprefix("mia_")] for r in holdout]) for key in MIA_KEYS}


def summarise(per_item: Mapping[str, Any],
              retain_reference: Mapping[str, Any] | str | os.PathLike | None = None) -> dict[str, Any]:
    """Recompute the summary from saved per-item results (e.g. against another retain model).

    ``per_item``: our payload (``per_item.json``, a result holding it, or
    :func:`palu_perta.interop.from_open_unlearning` of a complete open-unlearning log);
    ``retain_reference``: as :func:`load_retain_reference` takes it.
    """
    per_item = dict(per_item.get("per_item", per_item))
    ref = (load_retain_reference(retain_reference, per_item["forget_hash"], per_item.get("forget_split"),
                                 expected_n=len(per_item["splits"]["forget"]))
           if retain_reference is not None else None)
    return _summarise(per_item, ref)
