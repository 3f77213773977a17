"""Training-based unlearning: one ``transformers.Trainer`` subclass for every loss in
:mod:`palu_perta.losses`.

Each step takes a forget batch and pairs it with a retain batch of the same size. The
retain items are drawn from ``(seed, process, epoch, forget item)``, so they differ between
processes under ``accelerate launch`` and a resumed run draws exactly what an uninterrupted
one would. The frozen reference model is held only when the loss needs it; each loss term is
logged separately; an optional ``evaluate`` callback measures the model at chosen epochs so
notebooks can draw trajectories.

    result = unlearn(model, tokenizer, benchmark, UnlearnConfig(method="palu"), out_dir)
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import numbers
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import PreTrainedModel, Trainer, TrainerCallback

from .artifacts import atomic_write_json, entry_path, is_complete
from .config import FinetuneConfig, Profile
from .data import Benchmark, refusals
from .lora import LoraSettings, add_adapters, as_lora, merge_adapters
from .losses import LOSSES, DualVariable, Method, ModelIO
from .models import load_model
from .spans import DEFAULT_MARGIN
from .tokenization import SENSITIVE, Collator, encode_qa, encode_records, pad_id
from .training import (TiedResume, check_finite, is_main_process, latest_complete_checkpoint, quiet,
                       records_info, trained_entry, training_arguments)

METHODS = tuple(LOSSES)


@dataclass(frozen=True)
class UnlearnConfig:
    """One unlearning run: the method, its loss hyperparameters and the optimiser budget.

    ``hyper`` overrides the loss function's defaults (e.g. ``config.PALU_HYPER`` for
    PALU); ``eval_epochs`` lists the (1-based) epochs after which ``evaluate`` is called. ``lora``
    (:class:`~palu_perta.lora.LoraSettings`, or a dict of its fields) trains LoRA adapters only, merged into
    the weights at the end; the reference model is then the model with its adapters disabled.
    """

    method: str = "palu"
    hyper: dict[str, Any] = field(default_factory=dict)
    epochs: float = 10.0
    learning_rate: float = 1e-5
    batch_size: int = 32
    per_device_batch_size: int = 8
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    bf16: bool = True
    max_length: int = 256
    seed: int = 0
    eval_epochs: tuple[int, ...] = ()
    pdu_step_size: float = 1.0
    pdu_epsilon: float = 0.0
    lora: LoraSettings | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "lora", as_lora(self.lora))
        if self.method not in LOSSES:
            raise ValueError(f"method={self.method!r} is not known; use one of {sorted(LOSSES)}")
        if not isinstance(self.hyper, dict):
            raise ValueError(f"hyper={self.hyper!r} must be a dict of hyperparameters, e.g. {{'top_k': 50}}")
        defaults = LOSSES[self.method].defaults
        unknown = set(self.hyper) - set(defaults)
        if unknown:
            raise ValueError(f"{self.method} has no hyperparameter(s) {sorted(unknown)}; "
                             f"it takes {sorted(defaults)}")
        for name, value in self.hyper.items():
            _check_type(f"{self.method}'s hyperparameter {name}", value, defaults[name])
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), f.default)
        if not all(isinstance(e, numbers.Integral) and not isinstance(e, bool) for e in self.eval_epochs):
            raise ValueError(f"eval_epochs={self.eval_epochs!r} must be a list of epoch numbers, e.g. [1, 2]")
        self.optimiser()  # validates learning rate, epochs, batch sizes

    @property
    def loss(self) -> Method:
        return LOSSES[self.method]

    def optimiser(self) -> FinetuneConfig:
        """The optimiser part, in the fine-tuning config's shape (shared TrainingArguments)."""
        return FinetuneConfig(epochs=self.epochs, learning_rate=self.learning_rate, batch_size=self.batch_size,
                              per_device_batch_size=self.per_device_batch_size, weight_decay=self.weight_decay,
                              warmup_ratio=self.warmup_ratio, bf16=self.bf16, max_length=self.max_length,
                              lr_scheduler="linear")

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a dict (``lora`` only when set, so cache keys made before it existed hold)."""
        out = dataclasses.asdict(self)
        if self.lora is None:
            del out["lora"]
        else:
            out["lora"] = self.lora.key()
        return out


# the fields of UnlearnConfig a budget may set (the method, its hyperparameters, the seed and LoRA are set apart)
BUDGET_FIELDS = tuple(f.name for f in dataclasses.fields(UnlearnConfig)
                      if f.name not in ("method", "hyper", "seed", "lora"))


def _check_type(name: str, value: Any, default: Any) -> None:
    """Raise a ``ValueError`` naming ``name`` when ``value`` is not of its default's type (bool, integer,
    number, which takes an integer too, or string); other defaults are not checked."""
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, numbers.Integral):
        ok, kind = isinstance(value, numbers.Integral) and not isinstance(value, bool), "an integer"
    elif isinstance(default, numbers.Real):
        ok, kind = isinstance(value, numbers.Real) and not isinstance(value, bool), "a number"
    elif isinstance(default, str):
        ok, kind = isinstance(value, str), "a string"
    else:
        return
    if not ok:
        hint = "; write numbers without quotes" if isinstance(value, str) and kind in ("an integer", "a number") else ""
        raise ValueError(f"{name} must be {kind} (default {default!r}), not the {type(value).__name__} {value!r}{hint}")


class PairedDataset(Dataset):
    """Item i: forget example i, a retain example drawn from (seed, process, epoch, i), and for
    IdkDPO the same forget question with a refusal answer."""

    def __init__(self, forget: list[dict], retain: list[dict], idk: list[dict] | None, seed: int, process: int) -> None:
        if not forget:
            raise ValueError("the forget split is empty: nothing to unlearn")
        self.forget, self.retain, self.idk = forget, retain, idk
        self.seed, self.process, self.epoch = seed, process, 0

    def __len__(self) -> int:
        return len(self.forget)

    def __getitem__(self, i: int) -> dict[str, dict]:
        item = {"forget": self.forget[i]}
        if self.retain:
            rng = random.Random(f"{self.seed}-{self.process}-{self.epoch}-{i}")
            item["retain"] = self.retain[rng.randrange(len(self.retain))]
        if self.idk is not None:
            item["idk"] = self.idk[i]
        return item


@dataclass
class PairedCollator:
    """Collate each part of :class:`PairedDataset` items into its own right-padded batch."""

    pad_token_id: int

    def __call__(self, items: Sequence[dict[str, dict]]) -> dict[str, dict[str, torch.Tensor]]:
        collate = Collator(self.pad_token_id, "right", with_classes=True)
        return {part: collate([item[part] for item in items]) for part in items[0]}


DUAL_FILE = "pdu_dual.json"


class _EpochCallback(TrainerCallback):
    """Tells the dataset the epoch (for retain sampling) and runs the evaluations."""

    def __init__(self, dataset: PairedDataset, trainer: "UnlearningTrainer") -> None:
        self.dataset, self.trainer = dataset, trainer

    def on_epoch_begin(self, args, state, control, **kwargs):  # noqa: D102
        self.dataset.epoch = int(round(state.epoch or 0))

    def on_epoch_end(self, args, state, control, **kwargs):  # noqa: D102
        epoch = int(round(state.epoch))
        if self.trainer.evaluate_fn is not None and epoch in self.trainer.eval_epochs:
            model = self.trainer.model
            model.eval()
            metrics = self.trainer.evaluate_fn(model)
            model.train()
            self.trainer.trajectory.append({"epoch": epoch, "step": state.global_step, **metrics})
            atomic_write_json(Path(args.output_dir) / "trajectory.json", self.trainer.trajectory)


class UnlearningTrainer(TiedResume, Trainer):
    """A Trainer whose loss is one of :data:`palu_perta.losses.LOSSES`.

    ``inputs`` are ``{"forget": batch, "retain": batch[, "idk": batch]}``; the reference model
    (a frozen copy of the model at the start) is created only if the method needs it. Under LoRA
    (``unlearn_config.lora``) it is no copy: the trained model with its adapters disabled is the model at
    the start exactly (its weights are frozen and the adapters' B starts at 0), in eval mode.
    """

    def __init__(self, *args: Any, unlearn_config: UnlearnConfig, evaluate_fn: Callable | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.unlearn_config = unlearn_config
        self.method = unlearn_config.loss
        self.hyper = {**self.method.defaults, **unlearn_config.hyper}
        self.reference = None
        self.reference_is_base = bool(self.method.needs_reference and unlearn_config.lora is not None)
        if self.method.needs_reference and not self.reference_is_base:
            self.reference = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.dual = None
        if self.method.name == "pdu":
            # the dual's settings are PDU's hyperparameters (open-unlearning's; palu_perta.losses.DualVariable)
            if (unlearn_config.pdu_step_size, unlearn_config.pdu_epsilon) != (1.0, 0.0):
                raise ValueError("pdu_step_size and pdu_epsilon are replaced by PDU's hyperparameters: set "
                                 "hyper={'dual_step_size': ..., 'retain_loss_eps': ...} instead")
            h = self.hyper
            self.dual = DualVariable(h["alpha"], h["dual_step_size"], h["retain_loss_eps"], h["dual_warmup_epochs"])
        self.evaluate_fn, self.eval_epochs = evaluate_fn, set(unlearn_config.eval_epochs)
        self.trajectory: list[dict] = []
        self._term_sums: dict[str, float] = {}
        self._term_count = 0

    def _forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    def _io(self, model: torch.nn.Module, batch: dict[str, torch.Tensor] | None,
            reference: bool = True) -> ModelIO | None:
        """The model's logits on ``batch``, with the reference model's when it is held and ``reference``."""
        if batch is None:
            return None
        ref_logits = None
        if self.reference is not None and reference:
            if next(self.reference.parameters()).device != batch["input_ids"].device:
                self.reference.to(batch["input_ids"].device)
            with torch.no_grad():
                ref_logits = self._forward(self.reference, batch)
        elif self.reference_is_base and reference:
            ref_logits = self.base_logits(batch)
        return ModelIO(self._forward(model, batch), batch, ref_logits)

    @torch.no_grad()
    def base_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The LoRA model's logits with its adapters disabled and in eval mode (no dropout): the model at the
        start of unlearning, i.e. the reference, without a copy of it."""
        model = self.model  # the peft model itself, not a distributed wrapper
        was_training = model.training
        model.eval()
        try:
            with model.disable_adapter():
                return self._forward(model, batch)
        finally:
            model.train(was_training)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: D102
        hyper = dict(self.hyper)
        if self.dual is not None:
            hyper["alpha"] = self.dual.value
        # PDU measures R even at lambda = 0: its dual grows back from it
        needs_retain = self.method.needs_retain and (self.dual is not None or hyper.get("alpha", 1.0) > 0)
        forget = self._io(model, inputs["forget"])
        # the reference runs on the retain batch only for a loss that reads those logits (none here)
        retain = self._io(model, inputs.get("retain"), self.method.reference_on_retain) if needs_retain else None
        extra = {"idk": self._io(model, inputs["idk"])} if self.method.refusals == "idk" else {}
        out = self.method.fn(forget, retain, **extra, **hyper)
        step = self.state.global_step
        for term, value in out.terms.items():
            check_finite(torch.tensor(value), f"{self.method.name} {term}", step, inputs["forget"], self.processing_class)
        check_finite(out.loss, f"{self.method.name} total", step, inputs["forget"], self.processing_class)
        if self.dual is not None and model.training:
            self.dual.update(out.terms["retain"], self.state.epoch or 0.0)
        for term, value in out.terms.items():
            self._term_sums[term] = self._term_sums.get(term, 0.0) + value
        self._term_count += 1
        return (out.loss, None) if return_outputs else out.loss

    def _save_checkpoint(self, model, trial):  # noqa: D102
        # PDU's dual variable is training state the Trainer does not know. It goes into the
        # checkpoint folder before anything else, so no checkpoint exists without it.
        if self.dual is not None:
            folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_json(folder / DUAL_FILE, {"value": self.dual.value})
        super()._save_checkpoint(model, trial)

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:  # noqa: D102
        if "loss" in logs and self._term_count:
            logs.update({f"loss_{k}": v / self._term_count for k, v in self._term_sums.items()})
            if self.dual is not None:
                logs["dual_alpha"] = self.dual.value
            self._term_sums, self._term_count = {}, 0
        super().log(logs, *args, **kwargs)


@dataclass
class UnlearnResult:
    """The log history (one dict per logged step, with each loss term), the evaluations and, for a loss
    that reads sensitive spans, where they came from (:func:`resolve_spans`'s provenance, with the spans
    in ``records``)."""

    history: list[dict]
    trajectory: list[dict]
    spans: dict[str, Any] | None = None


def check_hyperparameters(cfg: UnlearnConfig, vocab_size: int) -> None:
    """Run the loss once on a 3-token dummy batch, so an out-of-range hyperparameter (``top_k``
    above the vocabulary, ``first_n = 0``, a negative ``alpha``...) is rejected, naming the
    parameter and its range, before any model is copied or step is taken."""
    ids = torch.zeros(1, 3, dtype=torch.long)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([[-100, 0, 0]]),
             "token_classes": torch.tensor([[0, 2, 1]])}
    io = ModelIO(torch.zeros(1, 3, vocab_size), batch, torch.zeros(1, 3, vocab_size))
    extra = {"idk": io} if cfg.loss.refusals == "idk" else {}
    cfg.loss.fn(io, io if cfg.loss.needs_retain else None, **extra, **{**cfg.loss.defaults, **cfg.hyper})


def _examples(tokenizer: Any, benchmark: Benchmark, cfg: UnlearnConfig) -> tuple[list[dict], list[dict], list[dict] | None]:
    forget = encode_records(tokenizer, benchmark.forget, cfg.max_length)
    retain = encode_records(tokenizer, benchmark.retain, cfg.max_length) if cfg.loss.needs_retain else []
    idk = None
    if cfg.loss.refusals is not None:
        answers = refusals(benchmark.source if Path(benchmark.source).is_dir() else None)
        rng = random.Random(cfg.seed)
        refused = [encode_qa(tokenizer, r["question"], rng.choice(answers), None, cfg.max_length) for r in benchmark.forget]
        if cfg.loss.refusals == "forget":
            forget = refused
        else:
            idk = refused
    return forget, retain, idk


# ----------------------------------------------------------------------------- sensitive spans

SPANS_FILE = "spans.json"  # where a run keeps its spans' provenance and the spans themselves


def needs_spans(cfg: UnlearnConfig) -> bool:
    """Whether ``cfg``'s loss reads the sensitive-token classes, i.e. the forget records' spans.

    Only PALU does (:func:`palu_perta.losses.palu_loss`): its forget positions are the onset tokens
    (``temporal="onset"``) or every sensitive token (``"sensitive"``). With ``temporal="answer"`` it
    acts on every answer token and the spans play no part; no other loss reads ``token_classes``.
    """
    if cfg.method != "palu":
        return False
    return {**cfg.loss.defaults, **cfg.hyper}["temporal"] != "answer"


def _has_labels(record: dict) -> bool:
    return bool(record.get("target_words"))


@dataclass(frozen=True)
class BaseModel:
    """The model the target was fine-tuned from, loaded only when automatic spans need it."""

    name: str
    seed: int = 0

    def load(self) -> torch.nn.Module:
        return load_model(self.name, seed=self.seed)[0]


@dataclass(frozen=True)
class SpanPlan:
    """Where the forget records' sensitive spans come from, decided before any model is loaded.

    ``source``: "labels" (the records' own ``target_words``), "auto" (every record's spans estimated by
    :func:`palu_perta.spans.automatic_spans`), "labels+auto" (labels where a record has them, estimates
    for the others) or "file" (merged from ``file`` by question). ``records``: the forget records
    (a file's spans merged in); ``estimate``: the indices of the records whose spans are to be estimated.
    """

    source: str
    records: list[dict]
    estimate: tuple[int, ...]
    margin: float
    file: str | None = None
    requested: str | None = None

    def key(self, base: str | None = None) -> dict[str, Any]:
        """What identifies these spans in a cache key. Labels add nothing (entries made before spans
        could be chosen keep their keys); estimates add the margin, the base model and which records are
        estimated; a file adds a hash of the merged spans (not the file's path)."""
        if self.source == "labels":
            return {}
        if self.source == "file":
            spans = json.dumps([r["target_words"] for r in self.records], sort_keys=True)
            return {"source": "file", "sha256": hashlib.sha256(spans.encode()).hexdigest()[:16]}
        key: dict[str, Any] = {"source": self.source, "margin": self.margin, "base": base}
        if self.source == "labels+auto":
            key["estimated"] = list(self.estimate)
        return key


def read_spans_file(path: str | os.PathLike) -> list[dict]:
    """The ``{question, target_words}`` entries of a spans file: JSON lines or one JSON array (as TOFU's
    ``forgetXX_spans.json``), or a run's ``spans.json`` (its ``records``). Other fields are ignored."""
    from .data import DataError, _read_json_records

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"spans file {path} does not exist; --spans takes 'auto', 'labels' or a JSON file "
                                "of {question, target_words} entries (as TOFU's forgetXX_spans.json)")
    try:
        whole = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        whole = None  # JSON lines, or not JSON: _read_json_records says which line
    if isinstance(whole, dict):
        entries = whole["records"] if "records" in whole else [whole]
    else:
        entries = whole if isinstance(whole, list) else _read_json_records(path)
    if not entries:
        raise DataError(f"spans file {path} has no entries; it needs one {{question, target_words}} per forget question")
    for j, entry in enumerate(entries):
        if not (isinstance(entry, dict) and isinstance(entry.get("question"), str)
                and isinstance(entry.get("target_words"), list)):
            raise DataError(f"spans file {path}, entry {j}: {str(entry)[:80]!r} is not an object with a 'question' "
                            "string and a 'target_words' list of {word, start, end}")
    return entries


def _merge_spans_file(records: Sequence[dict], path: str | os.PathLike) -> list[dict]:
    from .data import DataError, validate_records

    entries = read_spans_file(path)
    by_question: dict[str, list] = {}
    for entry in entries:
        previous = by_question.setdefault(entry["question"], entry["target_words"])
        if previous != entry["target_words"]:
            raise DataError(f"spans file {path} gives two different span lists for the question "
                            f"{entry['question']!r}; keep one")
    merged = []
    for i, rec in enumerate(records):
        if rec["question"] not in by_question:
            raise DataError(f"spans file {path} has no entry for forget record {i} (question {rec['question']!r}); "
                            "it needs one {question, target_words} per forget question")
        merged.append({**rec, "target_words": by_question[rec["question"]]})
    return validate_records(merged, ("question", "answer"), f"forget (spans from {path})")


def plan_spans(records: Sequence[dict], spans: str | os.PathLike | None = None, *,
               margin: float = DEFAULT_MARGIN) -> SpanPlan:
    """Decide where the spans of the forget ``records`` come from, with no model loaded.

    ``spans``: ``"labels"`` (every record must have non-empty ``target_words``), ``"auto"`` (estimate
    every record's spans), a file path (see :func:`read_spans_file`; every forget question must be in it),
    or None: the labels when every record has them, estimates when none has, and labels plus estimates
    for the unlabelled records otherwise (real TOFU's GPT-4o labels leave 12 of forget10's 400 answers
    without a span). Raises ``ValueError`` (or ``FileNotFoundError``) naming the problem and the fix.
    """
    if not math.isfinite(margin):
        raise ValueError(f"the span margin must be a finite number of nats, not {margin!r}")
    records = list(records)
    unlabelled = tuple(i for i, r in enumerate(records) if not _has_labels(r))
    requested = None if spans is None else str(spans)
    if spans is None:
        if not unlabelled:
            return SpanPlan("labels", records, (), margin)
        source = "auto" if len(unlabelled) == len(records) else "labels+auto"
        return SpanPlan(source, records, unlabelled, margin)
    if requested == "labels":
        if unlabelled:
            i = unlabelled[0]
            raise ValueError(f"--spans labels: {len(unlabelled)} of {len(records)} forget records have no span labels "
                             f"(no or empty target_words; first: record {i}, question {records[i]['question']!r}); "
                             "use --spans auto to estimate spans from the target and base models, --spans FILE to "
                             "give them, or leave --spans out (labels where present, estimates elsewhere)")
        return SpanPlan("labels", records, (), margin, requested=requested)
    if requested == "auto":
        return SpanPlan("auto", records, tuple(range(len(records))), margin, requested=requested)
    return SpanPlan("file", _merge_spans_file(records, spans), (), margin, file=str(spans), requested=requested)


def _base_name(base: Any) -> str:
    if isinstance(base, BaseModel):
        return base.name
    if isinstance(base, str):
        return base
    return getattr(getattr(base, "config", None), "_name_or_path", "") or "the given base model"


def resolve_spans(
    records: Sequence[dict],
    tokenizer: Any,
    spans: str | os.PathLike | None = None,
    *,
    target: torch.nn.Module | None = None,
    base: "str | BaseModel | torch.nn.Module | None" = None,
    margin: float = DEFAULT_MARGIN,
    max_length: int | None = None,
    log: Callable[[str], None] | None = print,
) -> tuple[list[dict], dict[str, Any]]:
    """The forget ``records`` with the sensitive spans a span-reading loss (PALU) trains on, and their
    provenance.

    ``spans`` is decided by :func:`plan_spans`. Estimates (:func:`palu_perta.spans.automatic_spans`) mark
    the answer tokens that ``target`` (the model to unlearn) finds more than ``margin`` nats likelier than
    ``base``, the model it was fine-tuned from (a name for :func:`~palu_perta.models.load_model`, a
    :class:`BaseModel`, or a loaded model). Every choice but the data's own labels is reported by ``log``
    in one line: how the spans were found and how many answer tokens they mark.

    Returns ``(records, provenance)``; provenance holds ``source``, ``message``, ``records``,
    ``marked_tokens`` / ``answer_tokens`` (EOS excluded), ``estimated_records`` and, as they apply,
    ``margin``, ``base``, ``file``. Raises ``ValueError`` when a record ends with no sensitive token
    within ``max_length`` (PALU would forget nothing from it), naming the record and the fix.
    """
    from .spans import automatic_spans, sensitive_tokens

    plan = plan_spans(records, spans, margin=margin)
    resolved = [dict(r) for r in plan.records]
    provenance: dict[str, Any] = {"source": plan.source, "requested": plan.requested}
    if plan.estimate:
        if base is None:
            raise ValueError(f"{len(plan.estimate)} of {len(resolved)} forget records need estimated spans, which "
                             "compare the target with the base model it was fine-tuned from: pass base=... "
                             "(unlearned_model and the command line pass the profile's model), give the spans in a "
                             "file (spans=FILE), or label the records' target_words")
        if target is None:
            raise ValueError("estimated spans need target=..., the model to unlearn")
        name = _base_name(base)
        if isinstance(base, str):
            base = BaseModel(base)
        reference = base.load() if isinstance(base, BaseModel) else base
        estimated = automatic_spans(target, reference, tokenizer, [resolved[i] for i in plan.estimate], margin=margin)
        del reference
        for i, rec in zip(plan.estimate, estimated):
            resolved[i] = rec
        provenance.update(margin=margin, base=name)
    if plan.file:
        provenance["file"] = plan.file
    marked = [sensitive_tokens(tokenizer, r["answer"], r.get("target_words")) for r in resolved]
    n_marked, n_tokens = sum(int(m.sum()) for m in marked), sum(len(m) for m in marked)
    provenance.update(records=len(resolved), estimated_records=len(plan.estimate), marked_tokens=n_marked,
                      answer_tokens=n_tokens)
    counts = f"{n_marked} of {n_tokens} answer tokens marked in {len(resolved)} forget records"
    how = (f"answer tokens the target finds > {margin:g} nats likelier than the base model {provenance.get('base')!r}"
           if plan.estimate else "")
    if plan.source == "labels":
        message = f"sensitive spans: the data's labels, {counts}"
    elif plan.source == "file":
        message = f"sensitive spans: from {plan.file}, {counts}"
    elif plan.source == "auto" and plan.requested == "auto":
        message = f"sensitive spans: estimated for every record ({how}), {counts}"
    elif plan.source == "auto":
        message = (f"sensitive spans: the forget records have no span labels, so they were estimated ({how}), "
                   f"{counts}; --spans FILE gives your own")
    else:
        message = (f"sensitive spans: {len(plan.estimate)} of {len(resolved)} forget records have no span labels; "
                   f"theirs were estimated ({how}), the others keep their labels; {counts}")
    provenance["message"] = message
    for i, (rec, mask) in enumerate(zip(resolved, marked)):
        classes = encode_qa(tokenizer, rec["question"], rec["answer"], rec.get("target_words"), max_length)["token_classes"]
        if SENSITIVE in classes:
            continue
        where = f"forget record {i} (question {rec['question']!r}) has no sensitive token"
        if mask.any():
            fix = f"its spans lie past max_length={max_length}; raise max_length or shorten the answer"
        elif i in plan.estimate:
            fix = (f"no token of its answer is > {margin:g} nats likelier under the target than under the base model; "
                   "lower the margin (--span-margin) or give its spans in a file (--spans FILE)")
        else:
            fix = "give it a span over at least one answer token (--spans FILE) or estimate spans (--spans auto)"
        raise ValueError(f"{where} ({plan.source} spans), so PALU would forget nothing from it: {fix}")
    if log is not None and (plan.source != "labels" or plan.requested):
        log(message)
    return resolved, provenance


def spans_provenance(run: str | os.PathLike) -> dict[str, Any] | None:
    """The spans' provenance an unlearned model's entry recorded (None when its loss reads no spans)."""
    path = Path(run) / SPANS_FILE
    if not path.is_file():
        return None
    return {k: v for k, v in json.loads(path.read_text()).items() if k != "records"}


def unlearn(
    model: PreTrainedModel,
    tokenizer: Any,
    benchmark: Benchmark,
    cfg: UnlearnConfig,
    output_dir: Path,
    *,
    evaluate: Callable[[PreTrainedModel], dict] | None = None,
    progress: bool = True,
    resume: bool = True,
    callbacks: Sequence[TrainerCallback] = (),
    spans: str | os.PathLike | None = None,
    base: "str | BaseModel | torch.nn.Module | None" = None,
    margin: float = DEFAULT_MARGIN,
    log: Callable[[str], None] | None = print,
) -> UnlearnResult:
    """Unlearn ``benchmark.forget`` from ``model`` in place with ``cfg.method``.

    ``evaluate(model) -> dict`` (optional) runs after each epoch in ``cfg.eval_epochs``.
    ``output_dir`` receives epoch checkpoints; with ``resume`` a killed run restarts from the
    last complete one (:func:`~palu_perta.training.latest_complete_checkpoint`). ``callbacks`` are
    passed to the Trainer. Returns an :class:`UnlearnResult`.

    For a loss that reads sensitive spans (:func:`needs_spans`: PALU) the forget records' spans are
    resolved first by :func:`resolve_spans`: ``spans`` = "labels", "auto", a spans file, or None (labels
    where the records have them, else estimates against ``base``, the model ``model`` was fine-tuned
    from, with ``margin`` nats; one line to ``log`` says so). A record left with no sensitive token is a
    ``ValueError``. The provenance goes to ``output_dir/spans.json`` and :attr:`UnlearnResult.spans`.
    Other losses ignore these arguments. With ``cfg.lora`` the adapters are merged into ``model`` at the end.
    """
    check_hyperparameters(cfg, model.get_output_embeddings().weight.shape[0])
    output_dir = Path(output_dir)
    provenance = None
    if needs_spans(cfg):
        forget_records, provenance = resolve_spans(
            benchmark.forget, tokenizer, spans, target=model, base=base, margin=margin, max_length=cfg.max_length,
            log=log if is_main_process() else None)
        provenance["records"] = [{"question": r["question"], "answer": r["answer"], "target_words": r["target_words"]}
                                 for r in forget_records]
        benchmark = dataclasses.replace(benchmark, forget=forget_records)
        if is_main_process():
            output_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(output_dir / SPANS_FILE, provenance)
    forget, retain, idk = _examples(tokenizer, benchmark, cfg)
    args = training_arguments(cfg.optimiser(), output_dir, cfg.seed, progress, save_checkpoints=resume)
    dataset = PairedDataset(forget, retain, idk, cfg.seed, args.process_index)
    trained = add_adapters(model, cfg.lora, cfg.seed) if cfg.lora is not None else model
    trained.train()
    trainer = UnlearningTrainer(
        model=trained, args=args, train_dataset=dataset, data_collator=PairedCollator(pad_id(tokenizer)),
        processing_class=tokenizer, unlearn_config=cfg, evaluate_fn=evaluate, callbacks=list(callbacks),
    )
    trainer.add_callback(_EpochCallback(dataset, trainer))
    quiet(trainer, progress)
    checkpoint = (latest_complete_checkpoint(output_dir, required=(DUAL_FILE,) if trainer.dual is not None else ())
                  if resume else None)
    if checkpoint is not None:
        step = int(checkpoint.name.split("-")[1])
        if (output_dir / "trajectory.json").exists():
            # evaluations up to the checkpoint; one made after it (killed before the save) is redone
            trajectory = json.loads((output_dir / "trajectory.json").read_text())
            trainer.trajectory = [t for t in trajectory if t["step"] <= step]
        if trainer.dual is not None:
            trainer.dual.value = float(json.loads((checkpoint / DUAL_FILE).read_text())["value"])
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    if trained is not model:
        merge_adapters(trained)  # in place: ``model`` now holds the merged weights
    model.eval()
    return UnlearnResult(trainer.state.log_history, trainer.trajectory, provenance)


def _unlearned_entry(profile: Profile, target: Path, benchmark: Benchmark, cfg: UnlearnConfig,
                     spans: str | os.PathLike | None, margin: float) -> tuple[Path, dict[str, Any], Any]:
    config = {"target": str(target), "forget": records_info(benchmark.source, benchmark.forget),
              "retain": records_info(benchmark.source, benchmark.retain), "unlearn": cfg.to_dict(),
              # the loss's defaults too: changing one (PDU's dual settings, IdK-DPO's 2/beta) retrains
              "hyper": {**LOSSES[cfg.method].defaults, **cfg.hyper}}
    plan = plan_spans(benchmark.forget, spans, margin=margin) if needs_spans(cfg) else None
    if plan is not None and plan.source != "labels":
        config["spans"] = plan.key(base=profile.model)
    return entry_path("unlearned", f"{profile.name}-{cfg.method}", config), config, plan


def unlearned_path(profile: Profile, target: Path, benchmark: Benchmark, cfg: UnlearnConfig, *,
                   spans: str | os.PathLike | None = None, margin: float = DEFAULT_MARGIN) -> Path:
    """Where :func:`unlearned_model` caches this run (same arguments), without building it: a key for what is
    computed from the run (an evaluation) before deciding whether the run must be trained at all."""
    return _unlearned_entry(profile, target, benchmark, cfg, spans, margin)[0]


def unlearned_model(
    profile: Profile,
    target: Path,
    benchmark: Benchmark,
    cfg: UnlearnConfig,
    *,
    evaluate: Callable[[PreTrainedModel], dict] | None = None,
    progress: bool = True,
    force: bool = False,
    spans: str | os.PathLike | None = None,
    margin: float = DEFAULT_MARGIN,
    log: Callable[[str], None] | None = print,
) -> Path:
    """The directory of a cached unlearned model (``log_history.json`` and ``trajectory.json``
    beside the weights), running :func:`unlearn` from ``target`` first if needed.

    ``spans`` and ``margin`` choose the sensitive spans of a loss that reads them (see :func:`unlearn`);
    estimates compare ``target`` with the profile's model. The entry then holds ``spans.json`` (how the
    spans were found, and the spans), and spans other than the data's labels enter the cache key, so
    labels, estimates and a file never share an entry. A cached entry's spans line is logged again."""
    path, config, plan = _unlearned_entry(profile, target, benchmark, cfg, spans, margin)
    if plan is not None and log is not None and not force and is_complete(path, config) and is_main_process():
        stored = spans_provenance(path)
        if stored and (stored["source"] != "labels" or stored.get("requested")):
            log(f"{stored['message']} (cached run)")

    def train(work: Path) -> tuple[PreTrainedModel, Any, dict[str, str]]:
        model, tokenizer = load_model(str(target))
        result = unlearn(model, tokenizer, benchmark, cfg, work, evaluate=evaluate, progress=progress, spans=spans,
                         base=BaseModel(profile.model, profile.seed), margin=margin, log=log)
        files = {"log_history.json": json.dumps(result.history, indent=1),
                 "trajectory.json": json.dumps(result.trajectory, indent=1, default=float)}
        if result.spans is not None:
            files[SPANS_FILE] = json.dumps(result.spans, indent=1, ensure_ascii=False)
        return model, tokenizer, files

    return trained_entry(path, config, train, force=force)
