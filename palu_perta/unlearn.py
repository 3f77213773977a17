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
import json
import numbers
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import PreTrainedModel, Trainer, TrainerCallback

from .artifacts import atomic_write_json, entry_path
from .config import FinetuneConfig, Profile
from .data import Benchmark, refusals
from .losses import LOSSES, DualVariable, Method, ModelIO
from .models import load_model
from .tokenization import Collator, encode_qa, encode_records, pad_id
from .training import check_finite, latest_complete_checkpoint, records_info, trained_entry, training_arguments

METHODS = tuple(LOSSES)


@dataclass(frozen=True)
class UnlearnConfig:
    """One unlearning run: the method, its loss hyperparameters and the optimiser budget.

    ``hyper`` overrides the loss function's defaults (e.g. ``{"top_k": 50, "first_n": 3}`` for
    PALU); ``eval_epochs`` lists the (1-based) epochs after which ``evaluate`` is called.
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

    def __post_init__(self) -> None:
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
        return dataclasses.asdict(self)


# the fields of UnlearnConfig a budget may set (the method, its hyperparameters and the seed are set apart)
BUDGET_FIELDS = tuple(f.name for f in dataclasses.fields(UnlearnConfig) if f.name not in ("method", "hyper", "seed"))


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


class UnlearningTrainer(Trainer):
    """A Trainer whose loss is one of :data:`palu_perta.losses.LOSSES`.

    ``inputs`` are ``{"forget": batch, "retain": batch[, "idk": batch]}``; the reference model
    (a frozen copy of the model at the start) is created only if the method needs it.
    """

    def __init__(self, *args: Any, unlearn_config: UnlearnConfig, evaluate_fn: Callable | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.unlearn_config = unlearn_config
        self.method = unlearn_config.loss
        self.hyper = {**self.method.defaults, **unlearn_config.hyper}
        self.reference = None
        if self.method.needs_reference:
            self.reference = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.dual = (DualVariable(self.hyper.get("alpha", 1.0), unlearn_config.pdu_step_size, unlearn_config.pdu_epsilon)
                     if self.method.name == "pdu" else None)
        self.evaluate_fn, self.eval_epochs = evaluate_fn, set(unlearn_config.eval_epochs)
        self.trajectory: list[dict] = []
        self._term_sums: dict[str, float] = {}
        self._term_count = 0

    def _forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    def _io(self, model: torch.nn.Module, batch: dict[str, torch.Tensor] | None) -> ModelIO | None:
        if batch is None:
            return None
        ref_logits = None
        if self.reference is not None:
            if next(self.reference.parameters()).device != batch["input_ids"].device:
                self.reference.to(batch["input_ids"].device)
            with torch.no_grad():
                ref_logits = self._forward(self.reference, batch)
        return ModelIO(self._forward(model, batch), batch, ref_logits)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: D102
        hyper = dict(self.hyper)
        if self.dual is not None:
            hyper["alpha"] = self.dual.value
        needs_retain = self.method.needs_retain and hyper.get("alpha", 1.0) > 0
        forget = self._io(model, inputs["forget"])
        retain = self._io(model, inputs.get("retain")) if needs_retain else None
        extra = {"idk": self._io(model, inputs["idk"])} if self.method.refusals == "idk" else {}
        out = self.method.fn(forget, retain, **extra, **hyper)
        step = self.state.global_step
        for term, value in out.terms.items():
            check_finite(torch.tensor(value), f"{self.method.name} {term}", step, inputs["forget"], self.processing_class)
        check_finite(out.loss, f"{self.method.name} total", step, inputs["forget"], self.processing_class)
        if self.dual is not None and model.training:
            self.dual.update(out.terms["retain"])
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
    """The log history (one dict per logged step, with each loss term) and the evaluations."""

    history: list[dict]
    trajectory: list[dict]


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
) -> UnlearnResult:
    """Unlearn ``benchmark.forget`` from ``model`` in place with ``cfg.method``.

    ``evaluate(model) -> dict`` (optional) runs after each epoch in ``cfg.eval_epochs``.
    ``output_dir`` receives epoch checkpoints; with ``resume`` a killed run restarts from the
    last complete one (:func:`~palu_perta.training.latest_complete_checkpoint`). ``callbacks`` are
    passed to the Trainer. Returns an :class:`UnlearnResult`.
    """
    check_hyperparameters(cfg, model.get_output_embeddings().weight.shape[0])
    forget, retain, idk = _examples(tokenizer, benchmark, cfg)
    output_dir = Path(output_dir)
    args = training_arguments(cfg.optimiser(), output_dir, cfg.seed, progress, save_checkpoints=resume)
    dataset = PairedDataset(forget, retain, idk, cfg.seed, args.process_index)
    model.train()
    trainer = UnlearningTrainer(
        model=model, args=args, train_dataset=dataset, data_collator=PairedCollator(pad_id(tokenizer)),
        processing_class=tokenizer, unlearn_config=cfg, evaluate_fn=evaluate, callbacks=list(callbacks),
    )
    trainer.add_callback(_EpochCallback(dataset, trainer))
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
    model.eval()
    return UnlearnResult(trainer.state.log_history, trainer.trajectory)


def unlearned_model(
    profile: Profile,
    target: Path,
    benchmark: Benchmark,
    cfg: UnlearnConfig,
    *,
    evaluate: Callable[[PreTrainedModel], dict] | None = None,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """The directory of a cached unlearned model (``log_history.json`` and ``trajectory.json``
    beside the weights), running :func:`unlearn` from ``target`` first if needed."""
    config = {"target": str(target), "forget": records_info(benchmark.source, benchmark.forget),
              "retain": records_info(benchmark.source, benchmark.retain), "unlearn": cfg.to_dict()}
    path = entry_path("unlearned", f"{profile.name}-{cfg.method}", config)

    def train(work: Path) -> tuple[PreTrainedModel, Any, dict[str, str]]:
        model, tokenizer = load_model(str(target))
        result = unlearn(model, tokenizer, benchmark, cfg, work, evaluate=evaluate, progress=progress)
        return model, tokenizer, {"log_history.json": json.dumps(result.history, indent=1),
                                  "trajectory.json": json.dumps(result.trajectory, indent=1, default=float)}

    return trained_entry(path, config, train, force=force)
