"""Supervised fine-tuning with ``transformers.Trainer``: the target, retain and reinforced models.

``finetune`` trains a model on QA records (answer tokens only) and is plain Trainer
underneath, so ``accelerate launch`` scales it out unchanged. ``finetuned_model`` caches the
result under the artifacts directory, keyed by everything that produced it; a run killed
part-way resumes from its last complete epoch checkpoint when started again.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback

from .artifacts import atomic_dir, build_lock, entry_path, is_complete
from .config import FinetuneConfig, Profile
from .lora import add_adapters, merge_adapters
from .models import load_model, save_model
from .paths import default_tofu_dir
from .replay import GENERAL_QUESTIONS, replay_records
from .tokenization import Collator, encode_records, pad_id, prompt_format_for

ROLES = ("target", "retain", "reinforced")
REPLAY_FILE = "replay.json"  # the replay records a fine-tune trained on, kept beside the model


class TiedResume:
    """Trainer mixin: resuming a model whose output layer is tied to its embeddings (SmolLM2, the tiny
    model) does not warn that ``lm_head.weight`` is missing from the checkpoint: it is the embedding
    matrix, saved once under its own name, and is tied again after the load."""

    def _issue_warnings_after_load(self, load_result: Any) -> None:
        missing = set(load_result.missing_keys)
        if missing == {"lm_head.weight"} and getattr(self.model.config, "tie_word_embeddings", False):
            self.model.tie_weights()
            load_result = load_result._replace(missing_keys=[])
        super()._issue_warnings_after_load(load_result)


class GuardedTrainer(TiedResume, Trainer):
    """A Trainer that stops on a NaN or infinite loss, naming the step and the batch."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: D102
        result = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        loss = result[0] if return_outputs else result
        check_finite(loss, "nll", self.state.global_step, inputs, getattr(self, "processing_class", None))
        return result


def check_finite(loss: torch.Tensor, term: str, step: int, batch: dict[str, torch.Tensor], tokenizer: Any = None) -> None:
    """Raise ``FloatingPointError`` if ``loss`` is NaN or infinite, naming step, term and batch."""
    if torch.isfinite(loss.detach()).all():
        return
    first = batch["input_ids"][0]
    text = tokenizer.decode(first[batch["attention_mask"][0].bool()])[-120:] if tokenizer is not None else first[:20].tolist()
    raise FloatingPointError(
        f"the {term} loss is {loss.detach().float().item()} at step {step} (batch of {len(batch['input_ids'])}, "
        f"first example ends {text!r}); lower the learning rate or check the data"
    )


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 matrix products in hardware (AVX512-BF16 or AMX on x86, read from
    /proc/cpuinfo; elsewhere a 256 x 256 product timed in both precisions decides).

    Without it PyTorch emulates bf16 and a product is about 57x *slower* than in fp32 (measured on a 2-core
    AMD EPYC with AVX2 only: 4.0 s against 0.070 s for 1024 x 1024; benchmarks/NOTES.md), so a bf16
    fine-tune of SmolLM2 takes minutes a step instead of seconds."""
    import platform
    import time

    cpuinfo = Path("/proc/cpuinfo")
    if platform.machine() in ("x86_64", "AMD64") and cpuinfo.is_file():
        flags = set(cpuinfo.read_text().split())
        return bool({"avx512_bf16", "amx_bf16"} & flags)
    a = torch.randn(256, 256)
    seconds = {}
    for dtype in (torch.float32, torch.bfloat16):
        x = a.to(dtype)
        x @ x
        start = time.perf_counter()
        for _ in range(3):
            x @ x
        seconds[dtype] = time.perf_counter() - start
    return seconds[torch.bfloat16] < 2 * seconds[torch.float32]


def use_bf16(requested: bool) -> bool:
    """Whether a run that asks for bf16 mixed precision gets it: on a GPU that supports bf16, or on a CPU with
    native bf16 (:func:`cpu_has_native_bf16`); otherwise it trains in fp32, said once at INFO level on the
    ``palu_perta.training`` logger (the profiles ask for bf16 so that a GPU gets it; on a laptop CPU the fp32
    fall-back is the expected case, not a problem to warn about in every notebook's output)."""
    if not requested:
        return False
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    if cpu_has_native_bf16():
        return True
    if not getattr(use_bf16, "warned", False):
        logging.getLogger(__name__).info("bf16 was asked for, but this CPU has no native bf16 (no AVX512-BF16 or "
                                         "AMX): training in fp32, which is far faster here than emulated bf16")
        use_bf16.warned = True  # type: ignore[attr-defined]
    return False


def quiet(trainer: Trainer, progress: bool) -> Trainer:
    """Without ``progress`` the Trainer prints nothing: with its bar disabled it would print every logged
    step's losses instead (its ``PrinterCallback``); the log history keeps them. Returns ``trainer``."""
    if not progress:
        trainer.remove_callback(PrinterCallback)
    return trainer


def training_arguments(cfg: FinetuneConfig, output_dir: Path, seed: int, progress: bool, save_checkpoints: bool) -> TrainingArguments:
    """TrainingArguments for ``cfg``: effective batch ``cfg.batch_size`` across all processes."""
    world = max(1, torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1)
    # more processes than the batch needs: smaller per-device batches, so the effective batch stays
    per_device = min(cfg.per_device_batch_size, max(1, cfg.batch_size // world))
    accumulation = max(1, cfg.batch_size // (per_device * world))
    on_gpu = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        num_train_epochs=cfg.epochs,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        lr_scheduler_type=cfg.lr_scheduler,
        bf16=use_bf16(cfg.bf16),
        use_cpu=not on_gpu,
        logging_steps=1,
        save_strategy="epoch" if save_checkpoints else "no",
        save_total_limit=1,
        save_only_model=False,
        report_to="none",
        seed=seed,
        data_seed=seed,
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,  # every parameter gets a gradient: skip DDP's extra graph walk
        remove_unused_columns=False,
    )


CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")  # the Trainer's checkpoint folders
RESUME_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt")  # besides the weights and the RNG state


def checkpoint_problem(folder: Path, required: Sequence[str] = ()) -> str | None:
    """What a resume from the Trainer checkpoint ``folder`` would miss, or None when it is complete.

    Complete means: ``trainer_state.json`` parses and records the folder's step, the safetensors weights are
    whole, ``optimizer.pt`` and ``scheduler.pt`` are whole zip archives (what ``torch.save`` writes), an
    ``rng_state*.pth`` is there, and so is every name in ``required`` (e.g. PDU's dual variable).
    ``trainer_state.json`` is the Trainer's last write, so a run killed while saving fails the first test.
    """
    import zipfile

    from .models import weights_problem

    folder = Path(folder)
    missing = [name for name in (*RESUME_FILES, *required) if not (folder / name).is_file()]
    if not any(folder.glob("rng_state*.pth")):
        missing.append("rng_state.pth")
    if missing:
        return f"no {', '.join(missing)}"
    try:
        step = json.loads((folder / "trainer_state.json").read_text()).get("global_step")
    except (ValueError, AttributeError):
        return "trainer_state.json is not a JSON object"
    match = CHECKPOINT_DIR.match(folder.name)
    if match is None or step != int(match.group(1)):
        return f"trainer_state.json records step {step}, not the folder's"
    broken = [name for name in ("optimizer.pt", "scheduler.pt") if not zipfile.is_zipfile(folder / name)]
    if broken:
        return f"{', '.join(broken)} truncated"
    return weights_problem(folder)


def latest_complete_checkpoint(output_dir: Path, required: Sequence[str] = ()) -> Path | None:
    """The newest complete ``checkpoint-N`` folder of ``output_dir`` (:func:`checkpoint_problem`), or None.

    The incomplete ones (a run killed while the Trainer wrote or rotated a checkpoint) are deleted, with a
    warning naming each: resuming from one fails, and the Trainer's rotation would keep a broken newer one.
    """
    folders = [p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and CHECKPOINT_DIR.match(p.name)]
    problems = {p: checkpoint_problem(p, required) for p in sorted(folders, key=lambda p: int(p.name.split("-")[1]))}
    chosen = max((p for p, problem in problems.items() if problem is None), default=None,
                 key=lambda p: int(p.name.split("-")[1]))
    for folder, problem in problems.items():
        if problem is not None:
            warnings.warn(f"deleting the incomplete checkpoint {folder} ({problem}; the run was killed while "
                          f"writing it); resuming from {chosen.name if chosen else 'the start'}", stacklevel=2)
            if is_main_process():
                shutil.rmtree(folder, ignore_errors=True)
    return chosen


def finetune(
    model: PreTrainedModel,
    tokenizer: Any,
    records: Sequence[dict],
    cfg: FinetuneConfig,
    output_dir: Path,
    *,
    seed: int = 0,
    progress: bool = True,
    resume: bool = True,
    callbacks: Sequence[TrainerCallback] = (),
) -> list[dict]:
    """Fine-tune ``model`` in place on the answers of ``records``.

    ``output_dir`` receives epoch checkpoints; with ``resume`` a run restarts from the last
    complete one found there (:func:`latest_complete_checkpoint`). With ``cfg.replay`` the model's own
    answers to that many general questions are generated first and trained beside ``records``
    (:mod:`palu_perta.replay`); they are written to ``output_dir / "replay.json"``. ``callbacks`` are
    passed to the Trainer. With ``cfg.lora`` only LoRA adapters are trained (:mod:`palu_perta.lora`), and
    they are merged into ``model``'s weights at the end. Returns the Trainer's log history (one dict per
    logged step).
    """
    if not records:
        raise ValueError("no records to fine-tune on: the training split is empty")
    output_dir = Path(output_dir)
    if cfg.replay:
        replayed = replay_records(model.eval(), tokenizer, cfg.replay)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / REPLAY_FILE).write_text(json.dumps(replayed, indent=1))
        records = [*records, *replayed]
    examples = encode_records(tokenizer, records, cfg.max_length)
    dataset = [{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples]
    args = training_arguments(cfg, output_dir, seed, progress, save_checkpoints=resume)
    frozen = freeze_parameters(model, cfg.frozen)
    if cfg.anchor:
        callbacks = [*callbacks, AnchorToStart(model, cfg.anchor)]
    trained = add_adapters(model, cfg.lora, seed) if cfg.lora is not None else model
    trained.train()
    trainer = GuardedTrainer(
        model=trained,
        args=args,
        train_dataset=dataset,
        data_collator=Collator(pad_id(tokenizer), "right", with_classes=False),
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )
    quiet(trainer, progress)
    checkpoint = latest_complete_checkpoint(output_dir) if resume else None
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    finally:
        for parameter in frozen:
            parameter.requires_grad_(True)
    if trained is not model:
        merge_adapters(trained)  # in place: ``model`` now holds theta + (alpha / r) B A
    model.eval()
    return trainer.state.log_history


class AnchorToStart(TrainerCallback):
    """L2-SP as decoupled decay: after each optimiser step, theta <- theta - lr * anchor * (theta - theta_start).

    ``theta_start`` is copied when the callback is made (before training, so a resumed run anchors to the
    same weights). Costs one float32 copy of the trainable parameters.
    """

    def __init__(self, model: torch.nn.Module, anchor: float) -> None:
        self.anchor = float(anchor)
        self.start = {name: p.detach().float().clone() for name, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def on_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):  # noqa: D102
        pull = optimizer.param_groups[0]["lr"] * self.anchor
        for name, parameter in model.named_parameters():
            start = self.start.get(name.removeprefix("module."))
            if start is not None:
                parameter.add_((start.to(parameter.dtype) - parameter), alpha=pull)


def freeze_parameters(model: torch.nn.Module, patterns: Sequence[str]) -> list[torch.nn.Parameter]:
    """Turn off gradients of every parameter whose name contains one of ``patterns``.

    Returns the parameters frozen (so the caller can turn them back on). A pattern that names no
    parameter is an error: a typo would otherwise silently train everything.
    """
    if not patterns:
        return []
    names = [name for name, _ in model.named_parameters()]
    for pattern in patterns:
        if not any(pattern in name for name in names):
            raise ValueError(f"frozen pattern {pattern!r} matches no parameter of the model; "
                             f"parameter names look like {names[:3]}")
    frozen = [p for name, p in model.named_parameters() if any(pattern in name for pattern in patterns)]
    if len(frozen) == len(names):
        raise ValueError(f"frozen={tuple(patterns)} freezes every parameter; nothing would be trained")
    for parameter in frozen:
        parameter.requires_grad_(False)
    return frozen


def finetune_config(profile: Profile, role: str, data_info: dict[str, Any], base: str, cfg: FinetuneConfig) -> dict[str, Any]:
    """Everything that determines a fine-tuned model, for its cache key (with ``cfg.replay``, a hash of the
    replay questions too, so editing them retrains)."""
    config = {"role": role, "base": base, "data": data_info, "finetune": cfg.cache_key(), "seed": profile.seed}
    fmt = prompt_format_for(base)  # open-unlearning's prompt format of the base's family: it shapes every example
    if fmt is not None:
        config["prompt_format"] = fmt.to_dict()
    if cfg.replay:
        asked = json.dumps(GENERAL_QUESTIONS[:cfg.replay]).encode()
        config["replay_questions"] = hashlib.sha256(asked).hexdigest()[:16]
    return config


def finetuned_entry(
    profile: Profile, role: str, data_info: dict[str, Any], *, base: str | None = None,
    cfg: FinetuneConfig | None = None,
) -> Path:
    """Where :func:`finetuned_model` keeps this fine-tune (the same arguments): computed from the
    configuration alone, so the path (and a key naming it) is known whether or not the entry exists."""
    base = base or profile.model
    cfg = cfg or profile.finetune
    return entry_path("models", f"{profile.name}-{role}", finetune_config(profile, role, data_info, str(base), cfg))


def finetuned_model(
    profile: Profile,
    role: str,
    records: Sequence[dict],
    data_info: dict[str, Any],
    *,
    base: str | None = None,
    cfg: FinetuneConfig | None = None,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """The directory of a cached fine-tuned model, training it first if needed.

    ``role`` names it ("target", "retain", "reinforced"); ``base`` is the model it starts
    from (default: the profile's model); ``data_info`` identifies ``records`` in the cache
    key. The directory also holds ``log_history.json`` (and ``replay.json`` with ``cfg.replay``).
    With ``cfg.mix < 1`` the entry is the trained model's weight-space ensemble with ``base``
    (:func:`mix_with_base`), built from the cached ``mix = 1`` entry, so trying another mix does not
    train again.
    """
    if role not in ROLES:
        raise ValueError(f"role={role!r}; use one of {ROLES}")
    base = base or profile.model
    cfg = cfg or profile.finetune
    config = finetune_config(profile, role, data_info, str(base), cfg)
    path = finetuned_entry(profile, role, data_info, base=base, cfg=cfg)
    if cfg.mix != 1:
        trained = finetuned_model(profile, role, records, data_info, base=str(base),
                                  cfg=dataclasses.replace(cfg, mix=1.0), progress=progress)

        def ensemble(work: Path) -> tuple[PreTrainedModel, Any, dict[str, str]]:
            model, tokenizer = mix_with_base(str(trained), str(base), cfg.mix, seed=profile.seed)
            names = ["log_history.json", *([REPLAY_FILE] if (trained / REPLAY_FILE).is_file() else [])]
            return model, tokenizer, {name: (trained / name).read_text() for name in names}

        return trained_entry(path, config, ensemble, force=force)

    def train(work: Path) -> tuple[PreTrainedModel, Any, dict[str, str]]:
        model, tokenizer = load_model(str(base), seed=profile.seed)
        history = finetune(model, tokenizer, records, cfg, work, seed=profile.seed, progress=progress)
        files = {"log_history.json": json.dumps(history, indent=1)}
        if cfg.replay:
            files[REPLAY_FILE] = (work / REPLAY_FILE).read_text()
        return model, tokenizer, files

    return trained_entry(path, config, train, force=force)


def mix_with_base(trained: str, base: str, mix: float, *, seed: int = 0,
                  device: torch.device | str = "cpu") -> tuple[PreTrainedModel, Any]:
    """WiSE-FT: ``theta_base + mix * (theta_trained - theta_base)``, the fine-tune's task vector scaled
    by ``mix`` (0 < mix <= 1). Computed in float32 on the CPU; returns ``(model, tokenizer)`` in float32
    on ``device`` (``"cpu"`` to save it, :func:`~palu_perta.models.default_device` to evaluate it)."""
    from .task_vectors import TaskVector

    if not 0 < mix <= 1:
        raise ValueError(f"mix={mix} is out of range; use 0 < mix <= 1")
    model, tokenizer = load_model(trained, device="cpu", dtype=torch.float32, seed=seed)
    start, _ = load_model(base, device="cpu", dtype=torch.float32, seed=seed)
    tau = TaskVector.from_models(start, model)
    del model
    return tau.apply_to(start, scale=mix).to(device), tokenizer


def trained_entry(
    path: Path,
    config: dict[str, Any],
    train: Callable[[Path], tuple[PreTrainedModel, Any, dict[str, str]]],
    *,
    force: bool = False,
) -> Path:
    """The cached model entry ``path``, training it first if it is missing (or ``force``).

    ``train(work)`` trains with its checkpoints in ``work`` (``path`` + ``.work``, so a killed run
    resumes) and returns the model, its tokenizer and extra files (name -> text) to write beside it.
    A second process training the same entry waits for the first and reuses its model; under
    accelerate every process trains and process 0 writes the entry.
    """
    if is_complete(path, config) and not force:
        return path
    with build_lock(path):
        if is_complete(path, config) and not force:
            return path
        work = path.with_name(path.name + ".work")
        model, tokenizer, files = train(work)
        if is_main_process():  # under accelerate every process holds the same weights: one writes them
            with atomic_dir(path, config, overwrite=force) as tmp:
                save_model(model, tokenizer, tmp)
                for name, text in files.items():
                    (tmp / name).write_text(text)
            shutil.rmtree(work, ignore_errors=True)
        wait_for_everyone()
    return path


def is_main_process() -> bool:
    """True in a single process, and in process 0 of a torch.distributed group."""
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0


def wait_for_everyone() -> None:
    """A barrier when torch.distributed is initialised (so no process reads an entry before it is written)."""
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def load_log_history(model_dir: Path) -> list[dict]:
    """The training log saved beside a cached model."""
    return json.loads((Path(model_dir) / "log_history.json").read_text())


def records_info(source: str, records: Sequence[dict]) -> dict[str, Any]:
    """What identifies a set of training records in a cache key: their source (:func:`source_key`), count
    and a hash of every question and answer (so the target model is shared by forget splits that train on
    the same authors)."""
    digest = hashlib.sha256(json.dumps([[r["question"], r["answer"]] for r in records]).encode()).hexdigest()
    return {"source": source_key(source, records), "n": len(records), "sha256": digest[:16]}


def source_key(source: str, records: Sequence[dict]) -> str:
    """How a data source enters a cache key. Names ("synthetic", the hub's "locuslab/TOFU", any relative
    string) and the local TOFU copy of ``data="tofu"`` (:func:`~palu_perta.paths.default_tofu_dir`) stay as
    they are. Any other directory (an absolute path, as :func:`~palu_perta.data.load_tofu` records it) is
    keyed by the content of ``records`` (every field), not by where it lies: typed relative or absolute, or
    copied elsewhere, the same data finds the same cache entries."""
    if not os.path.isabs(source) or not os.path.isdir(source):
        return source
    tofu = default_tofu_dir()
    if tofu is not None and Path(source).resolve() == tofu.resolve():
        return str(tofu)  # the key data="tofu" has always had
    content = json.dumps(list(records), sort_keys=True, ensure_ascii=False, default=str)
    return f"directory:sha256={hashlib.sha256(content.encode()).hexdigest()[:16]}"


def _reference_records(benchmark: Any, role: str) -> Sequence[dict]:
    """What a reference model trains on: every author for ``"target"``, the retain authors for ``"retain"``."""
    records = {"target": benchmark.full, "retain": benchmark.retain}.get(role)
    if records is None:
        raise ValueError(f"role={role!r}: a reference model is 'target' or 'retain'")
    return records


def reference_model(profile: Profile, benchmark: Any, role: str, progress: bool = True) -> Path:
    """The cached ``"target"`` (fine-tuned on every author) or ``"retain"`` (the retain authors only) model of a
    profile, trained first if it is not cached."""
    records = _reference_records(benchmark, role)
    return finetuned_model(profile, role, records, records_info(benchmark.source, records), progress=progress)


def reference_entry(profile: Profile, benchmark: Any, role: str) -> Path:
    """Where :func:`reference_model` keeps the profile's ``"target"`` or ``"retain"`` model (computed from the
    configuration; nothing is trained and the entry need not exist)."""
    return finetuned_entry(profile, role, records_info(benchmark.source, _reference_records(benchmark, role)))


def reference_cached(profile: Profile, benchmark: Any, role: str) -> bool:
    """Whether :func:`reference_model` would find its model in the cache (nothing is trained)."""
    info = records_info(benchmark.source, _reference_records(benchmark, role))
    return is_complete(finetuned_entry(profile, role, info),
                       finetune_config(profile, role, info, str(profile.model), profile.finetune))


def target_and_retain(profile: Profile, benchmark: Any, progress: bool = True) -> tuple[Path, Path]:
    """The cached target (all authors) and retain (retain authors only) models of a profile."""
    return (reference_model(profile, benchmark, "target", progress=progress),
            reference_model(profile, benchmark, "retain", progress=progress))
