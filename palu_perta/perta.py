"""PerTA: per-parameter task arithmetic (docs/design.md, "PerTA").

    tau = TaskVector.from_models(target, forget_finetuned)
    w = perta_weights(parameter_importance(target, forget_batches, "grad"),
                      parameter_importance(target, retain_batches, "grad"))
    unlearned = perta_unlearn(target, tau, w, lam)          # theta_o - lam * (w * tau)

``weights=None`` is plain task arithmetic (the TV baseline). The controls of the ablations replace ``w``
by :func:`constant_weights_like` or :func:`random_weights_like`, which keep its global mean.
Weights are mappings name -> tensor with the keys and shapes of the task vector.

The second half of the module is the cached pipeline the notebooks call (03_task_vectors, 04_importance,
05_perta): :func:`perta_config` (the recipe a profile implies), :func:`reinforced_model` (theta_ft),
:func:`task_vector_for`, :func:`importance_for`, :func:`perta_weights_for`, :func:`unlearned` (an in-memory
model factory and its cache key for ``pipeline.evaluation``), :func:`sweep`, :func:`calibrate_lambda` (a
lambda grid from a cheap forget-ROUGE probe), :func:`build_times`, and small analysis helpers.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from palu_perta import pipeline
from palu_perta.artifacts import (TIMING_FILE, atomic_write_json, build_time, cached, entry_key, entry_path, is_complete,
                                  remove_entry)
from palu_perta.config import FinetuneConfig, Profile
from palu_perta.evaluation import generate_answers
from palu_perta.importance import parameter_importance
from palu_perta.kept import cached_or_kept
from palu_perta.metrics import rouge_scores
from palu_perta.models import load_model
from palu_perta.task_vectors import TaskVector, check_same_keys
from palu_perta.tokenization import Collator, encode_records, pad_id
from palu_perta.training import finetuned_entry, finetuned_model, records_info

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def perta_weights(
    importance_forget: Mapping[str, Tensor], importance_retain: Mapping[str, Tensor], p: float = 1.0, eps: float = 1e-12
) -> dict[str, Tensor]:
    """w = I_f^p / (I_f^p + I_r^p + eps), element-wise in float32, in [0, 1].

    Both importances are divided by m = max(I_f, I_r) before the power, so nothing overflows and only the
    smaller term can underflow (to its limit, 0): w = (I_f/m)^p / ((I_f/m)^p + (I_r/m)^p + eps). This is
    the formula of docs/design.md ("Weights"), with eps relative to m^p, which makes w invariant to a common
    rescaling of the importances (diagonal Fisher values of large models are far below an absolute eps of 1e-12).
    Limits: p -> 0 gives 1/2 wherever I_f, I_r > 0; p -> infinity (``math.inf`` is allowed) a hard mask,
    1 where I_f > I_r, 0 where I_f < I_r, 1/2 at ties. w = 0 where I_f = 0 (both zero included).
    """
    if not p > 0:
        raise ValueError(f"p must be > 0, got {p}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    check_same_keys(importance_forget, importance_retain, "retain importances do not match forget importances")
    weights = {}
    for name, forget in importance_forget.items():
        forget = forget.float()
        retain = importance_retain[name].to(device=forget.device, dtype=torch.float32)
        for importance in (forget, retain):
            if not (torch.isfinite(importance).all() and (importance >= 0).all()):
                raise ValueError(f"importance of {name!r} must be finite and >= 0")
        largest = torch.maximum(forget, retain)
        positive = largest > 0
        scale = torch.where(positive, largest, torch.ones_like(largest))
        a, b = (forget / scale).pow(p), (retain / scale).pow(p)
        weights[name] = torch.where(positive, a / (a + b + eps), torch.zeros_like(a))
    return weights


def global_mean(weights: Mapping[str, Tensor]) -> float:
    """Mean of all entries of all tensors (each entry counts once), accumulated in float64."""
    numel = sum(w.numel() for w in weights.values())
    if numel == 0:
        raise ValueError("weights are empty")
    return float(sum(w.sum(dtype=torch.float64).item() for w in weights.values()) / numel)


def constant_weights_like(weights: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Control: every entry equal to the global mean of ``weights`` (same keys, shapes, dtypes, devices)."""
    mean = global_mean(weights)
    return {name: torch.full_like(w, mean) for name, w in weights.items()}


def random_weights_like(weights: Mapping[str, Tensor], seed: int = 0) -> dict[str, Tensor]:
    """Control: i.i.d. uniform weights in [0, 1] with the global mean of ``weights``, deterministic in ``seed``.

    u ~ U(0, 1) (drawn on the CPU, in key order) with empirical mean mu is mapped affinely onto the target
    mean m: u * m / mu when m <= mu, else 1 - (1 - u) (1 - m) / (1 - mu). Both maps keep [0, 1] (the
    final clip only absorbs rounding), so the mean is m exactly up to float rounding.
    """
    generator = torch.Generator().manual_seed(seed)
    uniform = {name: torch.rand(w.shape, generator=generator) for name, w in weights.items()}
    target, mu = global_mean(weights), global_mean(uniform)
    out = {}
    for name, u in uniform.items():
        w = u * (target / mu) if target <= mu else 1 - (1 - u) * ((1 - target) / (1 - mu))
        out[name] = w.clamp_(0, 1).to(device=weights[name].device, dtype=weights[name].dtype)
    return out


def perta_unlearn(
    original: nn.Module, task_vector: TaskVector, weights: Mapping[str, Tensor] | None, lam: float
) -> nn.Module:
    """A new model (``copy.deepcopy(original)``) with parameters theta_o - lam * (w * tau).

    ``weights=None`` is task arithmetic (TV): bit for bit ``task_vector.apply_to(copy, -lam)``.
    The update streams tensor by tensor (no weighted copy of the vector); the copy of the model is the
    memory cost. ``lam`` must be finite and >= 0.
    """
    if not (math.isfinite(lam) and lam >= 0):
        raise ValueError(f"lam must be finite and >= 0, got {lam}")
    return task_vector.apply_to(copy.deepcopy(original), scale=-lam, weights=weights)


def weights_summary(weights: Mapping[str, Tensor], bins: int = 10_000) -> dict[str, float]:
    """Global statistics of weights in [0, 1]: numel, mean, min, max, quantiles q01...q99 and the
    fraction of entries > 0.5.

    Quantiles come from a ``bins``-bin histogram over [0, 1] (streams over 7B entries; interpolated
    within a bin, so exact to 1 / ``bins``, and clipped to [min, max]); the other values are exact.
    """
    numel = sum(w.numel() for w in weights.values())
    if numel == 0:
        raise ValueError("weights are empty")
    lowest = min(float(w.min()) for w in weights.values() if w.numel())
    highest = max(float(w.max()) for w in weights.values() if w.numel())
    if not (0 <= lowest and highest <= 1):
        raise ValueError(f"weights must lie in [0, 1], got range [{lowest}, {highest}]")
    histogram = torch.from_numpy(weights_histogram(weights, bins)[0])
    above_half = sum(int((w > 0.5).sum()) for w in weights.values())
    cumulative = histogram.cumsum(0)
    summary = {"numel": float(numel), "mean": global_mean(weights), "min": lowest, "max": highest}
    for q in QUANTILES:
        rank = q * numel
        k = min(int(torch.searchsorted(cumulative, torch.tensor(rank, dtype=torch.float64))), bins - 1)
        below = float(cumulative[k - 1]) if k else 0.0
        within = (rank - below) / float(histogram[k]) if histogram[k] else 0.0
        summary[f"q{round(q * 100):02d}"] = min(max((k + within) / bins, lowest), highest)
    summary["frac_above_half"] = above_half / numel
    return summary


# =====================================================================================================
# The cached PerTA pipeline the notebooks call (03_task_vectors, 04_importance, 05_perta)
#
#     cfg = perta_config(profile)                                    # recipe derived from the profile
#     ft = reinforced_model(profile, bench, target)                  # theta_ft (cached fine-tune)
#     tau = task_vector_for(profile, target, ft)                     # theta_ft - theta_o (safetensors)
#     tau = reinforced_task_vector(profile, bench, target)           # the same, found without theta_ft on disk
#     i_f = importance_for(profile, target, bench.forget, "grad")    # safetensors
#     u = unlearned(profile, bench, target, "perta-grad", lam=2.0)   # lazy factory + cache key
#     ev = pipeline.evaluation(profile, u.factory, bench, retain_eval, name=u.name, key=u.key)
#
# Every piece is computed on first use and cached under the artifacts directory, keyed by everything that
# produced it; a key is computed from configurations alone, so a cached evaluation never builds anything.

METHODS = ("tv", "perta-grad", "perta-fisher")
CONTROLS = (None, "constant", "random")  # PerTA's w, or a control with the same global mean (ablations)
MUSE_TV_LR = 1e-5  # MUSE's task-vector recipe for theta_ft: 5 epochs at lr 1e-5 ...
MUSE_TV_EPOCHS = 5
TOFU_FINETUNE_LR = 1e-5  # ... for models that TOFU fine-tunes at lr 1e-5 (the paper profile)
IMPORTANCE_FILE = "importance.safetensors"
TAU_FILE = "tau.safetensors"


@dataclass(frozen=True)
class PerTAConfig:
    """The choices of the PerTA pipeline (docs/design.md, "PerTA"); :func:`perta_config` derives them.

    ``reinforce``: the fine-tune of the target on the forget set that gives theta_ft (MUSE's recipe,
    5 epochs, lr 1e-5 at paper scale; the other profiles scale the lr as their own fine-tuning lr is
    scaled from TOFU's 1e-5). ``importance_at``: evaluate importances at the target theta_o (the method)
    or at the base model (an ablation). ``fraction``: share of the forget and of the retain examples the
    importances use (random subset, seeded). ``p`` and ``eps``: the weight formula
    w = I_f^p / (I_f^p + I_r^p + eps). ``batch_size``: examples per forward pass of an importance pass.
    ``size_matched`` (gradient importance only; off in the authors' formula): the retain importance is the
    mean |mean gradient| over disjoint groups the size of the forget set, so both sides carry the same
    sampling-noise floor (:mod:`palu_perta.importance`, "The size bias"; our correction, measured in
    ``benchmarks/importance_bias.py``).
    """

    reinforce: FinetuneConfig
    importance_at: str = "target"
    fraction: float = 1.0
    p: float = 1.0
    eps: float = 1e-12
    batch_size: int = 8
    size_matched: bool = False

    def __post_init__(self) -> None:
        if self.importance_at not in ("target", "base"):
            raise ValueError(f"importance_at must be 'target' or 'base', got {self.importance_at!r}")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")

    def replace(self, **changes: Any) -> "PerTAConfig":
        """A copy with some fields changed (``reinforce`` may be given as a dict of changes)."""
        if isinstance(changes.get("reinforce"), dict):
            changes["reinforce"] = dataclasses.replace(self.reinforce, **changes["reinforce"])
        return dataclasses.replace(self, **changes)


def perta_config(profile: Profile, **changes: Any) -> PerTAConfig:
    """The profile's PerTA recipe: the reinforcement fine-tune is the profile's own fine-tuning
    (batch, warm-up, precision, max length) run for MUSE's 5 epochs at MUSE's lr 1e-5 scaled by
    ``profile.finetune.learning_rate / 1e-5`` (so 1e-5 on the paper profile, 1e-4 on cpu, 5e-3 on smoke);
    importances use the profile's per-device batch size. ``changes`` override fields."""
    ft = profile.finetune
    reinforce = dataclasses.replace(  # theta_ft is the fine-tune itself: no ensemble, no replay, the forget set only
        ft, epochs=MUSE_TV_EPOCHS, learning_rate=MUSE_TV_LR * ft.learning_rate / TOFU_FINETUNE_LR, mix=1.0, replay=0
    )
    return PerTAConfig(reinforce=reinforce, batch_size=ft.per_device_batch_size).replace(**changes)


def model_key(model: str | Path) -> str:
    """What identifies a model in a cache key: ``<kind>/<name-hash>`` for a cached artifact (the hash
    covers its configuration, and the key survives moving the artifacts directory), else the name."""
    path = Path(model)
    if (path / "artifact.json").is_file():
        return f"{path.parent.name}/{path.name}"
    return str(model)


def _records_key(records: Sequence[dict]) -> dict[str, Any]:
    return records_info("records", records)


def _timed_build(build: Callable[[Path], dict[str, Any] | None]) -> Callable[[Path], None]:
    """Wrap a cache builder so that the entry records its wall time (and what ``build`` returns)."""

    def run(directory: Path) -> None:
        start = time.perf_counter()
        extra = build(directory) or {}
        atomic_write_json(directory / TIMING_FILE, {"wall_time_s": round(time.perf_counter() - start, 2), **extra})

    return run


# ------------------------------------------------------------------------------------ theta_ft and tau


def reinforced_model(
    profile: Profile, bench: Any, target_dir: str | Path, cfg: PerTAConfig | None = None, progress: bool = True
) -> Path:
    """theta_ft: the target fine-tuned further on the forget set (``cfg.reinforce``), cached."""
    cfg = cfg or perta_config(profile)
    return finetuned_model(profile, "reinforced", bench.forget, records_info(bench.source, bench.forget),
                           base=str(target_dir), cfg=cfg.reinforce, progress=progress)


def reinforced_entry(profile: Profile, bench: Any, target_dir: str | Path, cfg: PerTAConfig | None = None) -> Path:
    """Where :func:`reinforced_model` keeps theta_ft: computed from its configuration (the reinforcement
    recipe, the forget data, the seed, the target's key), nothing trained; the entry may not exist."""
    cfg = cfg or perta_config(profile)
    return finetuned_entry(profile, "reinforced", records_info(bench.source, bench.forget), base=str(target_dir),
                           cfg=cfg.reinforce)


def _tau_config(profile: Profile, original: str | Path, finetuned_key: str) -> dict[str, Any]:
    return {"original": model_key(original), "finetuned": finetuned_key, "seed": profile.seed}


def task_vector_entry(profile: Profile, original: str | Path, finetuned: str | Path) -> Path:
    """The cache entry holding tau = finetuned - original (``tau.safetensors``, float32), built if missing."""
    config = _tau_config(profile, original, model_key(finetuned))

    def build(directory: Path) -> dict[str, Any]:
        theta_o, _ = load_model(str(original), device="cpu", dtype=torch.float32, seed=profile.seed)
        theta_ft, _ = load_model(str(finetuned), device="cpu", dtype=torch.float32, seed=profile.seed)
        tau = TaskVector.from_models(theta_o, theta_ft)
        tau.save(directory / TAU_FILE)
        return {"norm": tau.norm()}

    return cached("task_vectors", f"{profile.name}-tau", config, _timed_build(build))


def task_vector_for(profile: Profile, original: str | Path, finetuned: str | Path) -> TaskVector:
    """tau = finetuned - original (float32, on the CPU), computed once and cached as safetensors."""
    return TaskVector.load(task_vector_entry(profile, original, finetuned) / TAU_FILE)


def reinforced_task_vector_path(profile: Profile, bench: Any, target_dir: str | Path,
                                cfg: PerTAConfig | None = None) -> Path:
    """Where the entry of tau = theta_ft - theta_o is (or will be), theta_ft being :func:`reinforced_model`'s:
    the key names theta_ft's entry as computed from its configuration (:func:`reinforced_entry`), which is
    the key :func:`task_vector_entry` gives once theta_ft exists. Nothing is trained."""
    config = _tau_config(profile, target_dir, entry_key(reinforced_entry(profile, bench, target_dir, cfg)))
    return entry_path("task_vectors", f"{profile.name}-tau", config)


def reinforced_task_vector_entry(
    profile: Profile, bench: Any, target_dir: str | Path, cfg: PerTAConfig | None = None, progress: bool = True,
    keep_finetuned: bool = True,
) -> Path:
    """The entry of tau = theta_ft - theta_o for :func:`reinforced_model`'s theta_ft, found without theta_ft
    on disk (:func:`reinforced_task_vector_path`). Only when tau is missing is theta_ft looked up, or
    fine-tuned, and tau built from it by :func:`task_vector_entry` (the same key, the same tensors).
    ``keep_finetuned=False`` deletes theta_ft's entry once tau is cached: it is scratch when no notebook
    reads it, and :func:`reinforced_model` fine-tunes it again (deterministically) when asked for."""
    cfg = cfg or perta_config(profile)
    ft = reinforced_entry(profile, bench, target_dir, cfg)
    path = reinforced_task_vector_path(profile, bench, target_dir, cfg)
    config = _tau_config(profile, target_dir, entry_key(ft))
    if not is_complete(path, config):
        built = task_vector_entry(profile, target_dir, reinforced_model(profile, bench, target_dir, cfg, progress))
        if built != path:
            raise RuntimeError(f"tau was cached as {entry_key(built)} but its configuration names {entry_key(path)}: "
                               "reinforced_entry no longer matches reinforced_model; report this as a bug")
    if not keep_finetuned:
        remove_entry(ft)
    return path


def reinforced_task_vector(
    profile: Profile, bench: Any, target_dir: str | Path, cfg: PerTAConfig | None = None, progress: bool = True,
    keep_finetuned: bool = True,
) -> TaskVector:
    """tau = theta_ft - theta_o (float32, on the CPU) from :func:`reinforced_task_vector_entry`."""
    return TaskVector.load(reinforced_task_vector_entry(profile, bench, target_dir, cfg, progress,
                                                        keep_finetuned) / TAU_FILE)


# ------------------------------------------------------------------------------------ importances


def importance_batches(tokenizer: Any, records: Sequence[dict], max_length: int, batch_size: int) -> list[dict[str, Tensor]]:
    """Right-padded batches (input_ids, attention_mask, labels) of ``records``' answers, in record order."""
    examples = [{"input_ids": e["input_ids"], "labels": e["labels"]} for e in encode_records(tokenizer, records, max_length)]
    collate = Collator(pad_id(tokenizer), "right", with_classes=False)
    return [collate(examples[i:i + batch_size]) for i in range(0, len(examples), batch_size)]


def _importance_config(profile: Profile, model_dir: str | Path, records: Sequence[dict], method: str,
                       fraction: float, group_size: int | None = None) -> dict[str, Any]:
    config = {"model": model_key(model_dir), "data": _records_key(records), "method": method, "fraction": fraction,
              "seed": profile.seed, "max_length": profile.finetune.max_length}
    if group_size is not None:  # keys made before grouping existed hold
        config["group_size"] = group_size
    return config


def importance_entry(
    profile: Profile,
    model_dir: str | Path,
    records: Sequence[dict],
    method: str,
    fraction: float = 1.0,
    *,
    label: str = "data",
    batch_size: int | None = None,
    progress: bool = True,
    group_size: int | None = None,
) -> Path:
    """The cache entry of :func:`importance_for` (``importance.safetensors``), built if missing."""
    config = _importance_config(profile, model_dir, records, method, fraction, group_size)

    def build(directory: Path) -> dict[str, Any]:
        model, tokenizer = load_model(str(model_dir), seed=profile.seed)
        batches = importance_batches(tokenizer, records, profile.finetune.max_length,
                                     batch_size or profile.finetune.per_device_batch_size)
        importance = parameter_importance(model, batches, method, fraction=fraction, seed=profile.seed,
                                          progress=progress, group_size=group_size)
        save_file({name: t.detach().cpu().contiguous() for name, t in importance.items()}, directory / IMPORTANCE_FILE,
                  metadata={"keys": json.dumps(list(importance))})
        return {"n_examples": max(1, round(fraction * len(records)))}

    return cached("importance", f"{profile.name}-{method}-{label}", config, _timed_build(build))


def importance_for(
    profile: Profile,
    model_dir: str | Path,
    records: Sequence[dict],
    method: str,
    fraction: float = 1.0,
    *,
    label: str = "data",
    batch_size: int | None = None,
    progress: bool = True,
    group_size: int | None = None,
) -> dict[str, Tensor]:
    """:func:`~palu_perta.importance.parameter_importance` of ``records`` ("grad" or "fisher") at the model
    in ``model_dir`` (a directory or a name such as the profile's base model), on a seeded random
    ``fraction`` of the examples; computed once and cached as safetensors. Batches of ``batch_size``
    (default: the profile's per-device batch size; the result does not depend on it). ``label`` only
    names the cache entry (e.g. "forget"). ``group_size``: the size-matched gradient importance
    (:func:`~palu_perta.importance.parameter_importance`)."""
    entry = importance_entry(profile, model_dir, records, method, fraction, label=label, batch_size=batch_size,
                             progress=progress, group_size=group_size)
    file = entry / IMPORTANCE_FILE
    tensors = load_file(file)
    with safe_open(str(file), framework="pt") as f:
        order = json.loads((f.metadata() or {})["keys"])
    return {name: tensors[name] for name in order}


def importance_model(profile: Profile, target_dir: str | Path, cfg: PerTAConfig) -> str:
    """Where importances are evaluated: the target (theta_o) or the profile's base model."""
    return str(target_dir) if cfg.importance_at == "target" else profile.model


def weights_entries(profile: Profile, bench: Any, target_dir: str | Path, method: str,
                    cfg: PerTAConfig | None = None) -> list[Path]:
    """Where the forget and retain importances :func:`perta_weights_for` reads are kept (computed, nothing built)."""
    cfg = cfg or perta_config(profile)
    method = method.removeprefix("perta-")
    where = importance_model(profile, target_dir, cfg)
    return [entry_path("importance", f"{profile.name}-{method}-{label}",
                       _importance_config(profile, where, records, method, cfg.fraction, group))
            for label, records, group in _importance_sides(bench, method, cfg)]


def _importance_sides(bench: Any, method: str, cfg: PerTAConfig) -> list[tuple[str, Sequence[dict], int | None]]:
    """(label, records, group_size) of the forget and the retain importance: the retain side grouped by the
    forget set's size when ``cfg.size_matched``."""
    if cfg.size_matched and method != "grad":
        raise ValueError(f"size_matched applies to the gradient importance only (method 'grad'), not {method!r}: "
                         "the Fisher has no sample-size bias")
    group = max(1, round(cfg.fraction * len(bench.forget))) if cfg.size_matched else None
    return [("forget", bench.forget, None), ("retain", bench.retain, group)]


def perta_weights_for(profile: Profile, bench: Any, target_dir: str | Path, method: str,
                      cfg: PerTAConfig | None = None, progress: bool = True) -> dict[str, Tensor]:
    """PerTA's weights w = I_f^p / (I_f^p + I_r^p + eps) from the cached forget and retain importances
    (``method`` "grad" or "fisher", or "perta-grad" / "perta-fisher")."""
    cfg = cfg or perta_config(profile)
    method = method.removeprefix("perta-")
    where = importance_model(profile, target_dir, cfg)
    forget, retain = (importance_for(profile, where, records, method, cfg.fraction, label=label,
                                     batch_size=cfg.batch_size, progress=progress, group_size=group)
                      for label, records, group in _importance_sides(bench, method, cfg))
    return perta_weights(forget, retain, p=cfg.p, eps=cfg.eps)


def build_times(profile: Profile, bench: Any, target_dir: str | Path, cfg: PerTAConfig | None = None,
                progress: bool = True) -> dict[str, float | None]:
    """Seconds each piece of the PerTA pipeline took when it was built (building what is missing):
    the reinforcement fine-tune (the Trainer's ``train_runtime``), tau, and the four importance passes."""
    cfg = cfg or perta_config(profile)
    theta_ft = reinforced_model(profile, bench, target_dir, cfg, progress)
    times = {"reinforce": build_time(theta_ft), "tau": build_time(task_vector_entry(profile, target_dir, theta_ft))}
    where = importance_model(profile, target_dir, cfg)
    for method in ("grad", "fisher"):
        for label, records in (("forget", bench.forget), ("retain", bench.retain)):
            entry = importance_entry(profile, where, records, method, cfg.fraction, label=label,
                                     batch_size=cfg.batch_size, progress=progress)
            times[f"{method}_{label}"] = build_time(entry)
    return times


# ------------------------------------------------------------------------------------ unlearned models


@dataclass(frozen=True)
class Unlearned:
    """An unlearned model that exists only in memory: ``factory()`` builds it and returns
    ``(model, tokenizer)``; ``key`` identifies it in the evaluation cache; ``name`` names the entry."""

    factory: Callable[[], tuple[Any, Any]]
    key: dict[str, Any]
    name: str


def unlearned(
    profile: Profile,
    bench: Any,
    target_dir: str | Path,
    method: str,
    lam: float,
    cfg: PerTAConfig | None = None,
    progress: bool = True,
    control: str | None = None,
) -> Unlearned:
    """theta_o - lam * tau (``method="tv"``) or theta_o - lam * (w * tau) (``"perta-grad"``,
    ``"perta-fisher"``), as a lazy factory for :func:`palu_perta.pipeline.evaluation`.

    ``control`` replaces PerTA's w by one of the ablation's controls with the same global mean:
    ``"constant"`` (:func:`constant_weights_like`) or ``"random"`` (:func:`random_weights_like`, seeded by
    the profile). The key is computed from configurations only; the factory fine-tunes theta_ft and computes
    tau and the importances (each cached) only when called, i.e. when the evaluation is not cached yet.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if control not in CONTROLS:
        raise ValueError(f"control must be one of {CONTROLS}, got {control!r}")
    if control is not None and method == "tv":
        raise ValueError("a control replaces PerTA's weights: use it with 'perta-grad' or 'perta-fisher', not 'tv'")
    if not (math.isfinite(lam) and lam >= 0):
        raise ValueError(f"lam must be finite and >= 0, got {lam}")
    cfg = cfg or perta_config(profile)
    key: dict[str, Any] = {
        "method": method,
        "lam": float(lam),
        "target": model_key(target_dir),
        "reinforce": {"data": records_info(bench.source, bench.forget), "finetune": cfg.reinforce.cache_key(),
                      "seed": profile.seed},
    }
    if method != "tv":
        key["weights"] = {"at": model_key(importance_model(profile, target_dir, cfg)), "fraction": cfg.fraction,
                          "p": cfg.p, "eps": cfg.eps, "forget": _records_key(bench.forget),
                          "retain": _records_key(bench.retain), "max_length": profile.finetune.max_length,
                          "seed": profile.seed}
        if control is not None:
            key["weights"]["control"] = control

    def factory() -> tuple[Any, Any]:
        tau, weights = task_vector_and_weights(profile, bench, target_dir, method, cfg, progress, control)
        model, tokenizer = load_model(str(target_dir), seed=profile.seed)
        return tau.apply_to(model, scale=-lam, weights=weights), tokenizer

    return Unlearned(factory, key, f"{method}{'-' + control if control else ''}-lam{lam:g}")


def task_vector_and_weights(
    profile: Profile, bench: Any, target_dir: str | Path, method: str, cfg: PerTAConfig | None = None,
    progress: bool = True, control: str | None = None,
) -> tuple[TaskVector, dict[str, Tensor] | None]:
    """What :func:`unlearned` subtracts, for every lambda at once: ``(tau, w)`` with ``w`` None for TV,
    PerTA's weights, or the ``control`` that replaces them (each part cached). So a caller probing many
    lambdas builds them once and calls :func:`perta_unlearn` per lambda."""
    cfg = cfg or perta_config(profile)
    tau = reinforced_task_vector(profile, bench, target_dir, cfg, progress)
    weights = None if method == "tv" else perta_weights_for(profile, bench, target_dir, method, cfg, progress)
    if control == "constant":
        weights = constant_weights_like(weights)
    elif control == "random":
        weights = random_weights_like(weights, seed=profile.seed)
    return tau, weights


def evaluate_unlearned(
    profile: Profile, bench: Any, target_dir: str | Path, method: str, lam: float, reference: Any,
    cfg: PerTAConfig | None = None, progress: bool = False, control: str | None = None,
) -> Any:
    """The cached full-suite :class:`~palu_perta.pipeline.Evaluation` of :func:`unlearned`'s model;
    ``reference`` is the retain model's evaluation (for forget quality)."""
    model = unlearned(profile, bench, target_dir, method, lam, cfg, progress, control)
    return pipeline.evaluation(profile, model.factory, bench, reference, name=model.name, key=model.key,
                               progress=progress)


def sweep(
    profile: Profile, bench: Any, target_dir: str | Path, methods: Sequence[str], lambdas: Sequence[float],
    reference: Any, cfg: PerTAConfig | None = None, progress: bool = False, log: bool = True,
) -> list[dict[str, Any]]:
    """Evaluate every method at every lambda (cached); one row per model: ``method``, ``lam``, the
    summary's metrics and ``eval_s`` (how long its evaluation took when it was built)."""
    rows = []
    for method in methods:
        for lam in lambdas:
            start = time.perf_counter()
            ev = evaluate_unlearned(profile, bench, target_dir, method, lam, reference, cfg, progress)
            seconds = time.perf_counter() - start
            meta = json.loads((ev.path / "summary.json").read_text()).get("meta", {})
            rows.append({"method": method, "lam": float(lam),
                         **{k: v for k, v in ev.summary.items() if k != "meta"}, "eval_s": meta.get("wall_time_s")})
            if log:
                print(f"{method:13s} lambda={lam:<7g} forget ROUGE-L {ev.summary['forget_Q_A_ROUGE']:.3f}  "
                      f"MU {ev.summary['model_utility']:.3f}  FQ {ev.summary['forget_quality']:.3g}  "
                      f"[{seconds:.0f} s; {meta.get('wall_time_s') or 0:.0f} s to evaluate when built]", flush=True)
    return rows


# ------------------------------------------------------------------------------------ choosing lambda


def forget_rouge(model: nn.Module, tokenizer: Any, records: Sequence[dict], profile: Profile) -> float:
    """Mean ROUGE-L recall of greedy answers to ``records``' questions (the suite's ``forget_Q_A_ROUGE``,
    alone: a cheap probe)."""
    answers = generate_answers(model, tokenizer, [r["question"] for r in records], max_new_tokens=profile.max_new_tokens,
                               batch_size=profile.eval_batch_size, progress=False)
    return float(np.mean([rouge_scores(a, r["answer"])["rougeL_recall"] for a, r in zip(answers, records)]))


def forgetting_ladder(
    target: nn.Module, tokenizer: Any, tau: TaskVector, weights: Mapping[str, Tensor] | None, forget: Sequence[dict],
    profile: Profile, retain_rouge: float, start: float = 1.0, max_steps: int = 10,
) -> tuple[float, str, list[tuple[float, float]]]:
    """:func:`lambda_ladder` over theta_o - lam * (w * tau): a rung forgets when the forget ROUGE-L of its
    greedy answers (:func:`forget_rouge`) is at most ``retain_rouge``. Returns ``(lam, note, probes)``, the
    probes as (lambda, ROUGE-L) in probing order."""
    probes: list[tuple[float, float]] = []

    def forgets(lam: float) -> bool:
        rouge = forget_rouge(perta_unlearn(target, tau, weights, lam), tokenizer, forget, profile)
        probes.append((lam, rouge))
        return rouge <= retain_rouge

    lam, note = lambda_ladder(forgets, start, max_steps)
    return lam, note, probes


def lambda_ladder(forgets: Callable[[float], bool], start: float = 1.0, max_steps: int = 10) -> tuple[float, str]:
    """The smallest lambda at which ``forgets(lambda)`` holds, to within a factor sqrt 2, assuming it holds
    from some lambda on: from ``start``, halve while the rung below still forgets, or double until a rung
    forgets; then bisect the last doubling once (geometrically). At most ``max_steps`` calls of ``forgets``.

    Returns ``(lambda, note)``; ``note`` is empty, or says that no rung up to the returned lambda forgot.
    """
    calls: list[float] = []

    def probe(lam: float) -> bool:
        calls.append(lam)
        return forgets(lam)

    lam, note = start, ""
    if probe(lam):  # walk down while the rung below still forgets
        while len(calls) < max_steps and probe(lam / 2):
            lam /= 2
    else:  # walk up until a rung forgets
        while len(calls) < max_steps:
            lam *= 2
            if probe(lam):
                break
        else:
            note = f"no rung up to lambda = {lam:g} forgot"
    bracketed = lam / 2 in calls and not note
    if bracketed and len(calls) < max_steps and probe(lam / math.sqrt(2)):
        lam /= math.sqrt(2)  # one geometric bisection of the last doubling
    return lam, note


def calibrate_lambda(
    profile: Profile,
    bench: Any,
    target_dir: str | Path,
    retain_dir: str | Path,
    points: int = 4,
    cfg: PerTAConfig | None = None,
    start: float = 1.0,
    max_steps: int = 10,
    min_gap: float = 0.1,
    progress: bool = False,
) -> dict[str, Any]:
    """A lambda grid for the TV sweep, from a cheap probe (forget ROUGE-L only), cached as JSON.

    tau's scale depends on the reinforcement recipe, so lambda has no natural unit. The probe walks a
    doubling ladder from ``start`` (halving instead if ``start`` already forgets) to find lambda*, the
    smallest rung at which TV's forget ROUGE-L is at or below the retain model's (forgotten as far as a
    model that never saw the forget set), then bisects the last doubling once (lambda* to within a factor
    sqrt 2). The grid is lambda* * 2^k, k = -1 ... points - 2, rounded to 3 digits: one doubling below
    lambda* (partly forgotten), lambda*, then over-forgetting (PerTA's weights are below 1, so it needs
    the larger lambdas to forget as much). If the target's forget ROUGE-L is not at least
    ``min_gap`` above the retain model's there is nothing to calibrate against (the smoke profile's tiny
    model): lambda* = ``start`` and ``note`` says so.

    Returns ``grid``, ``lam_star``, ``target_rouge``, ``retain_rouge``, ``probes`` (lambda, ROUGE pairs in
    probing order), ``note`` and ``wall_time_s``.
    """
    if points < 1:
        raise ValueError(f"points must be >= 1, got {points}")
    cfg = cfg or perta_config(profile)
    theta_ft = reinforced_entry(profile, bench, target_dir, cfg)  # named, not needed: tau is found without it
    config = {"target": model_key(target_dir), "retain": model_key(retain_dir), "finetuned": entry_key(theta_ft),
              "forget": _records_key(bench.forget), "points": points, "start": start, "max_steps": max_steps,
              "min_gap": min_gap, "generation": {"max_new_tokens": profile.max_new_tokens}}

    def build(directory: Path) -> None:
        begin = time.perf_counter()
        tau = reinforced_task_vector(profile, bench, target_dir, cfg, progress)
        target, tokenizer = load_model(str(target_dir), seed=profile.seed)
        retain, _ = load_model(str(retain_dir), seed=profile.seed)
        target_rouge = forget_rouge(target, tokenizer, bench.forget, profile)
        retain_rouge = forget_rouge(retain, tokenizer, bench.forget, profile)
        del retain
        probes: list[tuple[float, float]] = []
        note = ""
        if target_rouge - retain_rouge < min_gap:
            lam_star = start
            note = (f"the target's forget ROUGE-L ({target_rouge:.3f}) is not {min_gap} above the retain model's "
                    f"({retain_rouge:.3f}): no signal to calibrate on; lambda* = {start:g}")
        else:
            lam_star, note, probes = forgetting_ladder(target, tokenizer, tau, None, bench.forget, profile, retain_rouge,
                                                       start, max_steps)
            if note:
                note += ": the grid ends below forgetting"
        grid = [float(f"{lam_star * 2.0 ** k:.3g}") for k in range(-1, points - 1)]
        atomic_write_json(directory / "calibration.json", {
            "grid": grid, "lam_star": lam_star, "target_rouge": target_rouge, "retain_rouge": retain_rouge,
            "probes": probes, "note": note, "wall_time_s": round(time.perf_counter() - begin, 2)})

    path = cached_or_kept("calibration", f"{profile.name}-tv-lambda", config, build)
    return json.loads((path / "calibration.json").read_text())


# ------------------------------------------------------------------------------------ analysis helpers

LAYER_TYPES = ("embeddings", "attention", "mlp", "norm", "other")


def layer_type(name: str) -> str:
    """The kind of a Llama-style parameter: embeddings (token embeddings, output head), attention, mlp,
    norm, or other."""
    if "embed" in name or "lm_head" in name or name.endswith("wte.weight"):
        return "embeddings"
    if "attn" in name or "attention" in name:
        return "attention"
    if "mlp" in name or "feed_forward" in name:
        return "mlp"
    if "norm" in name or ".ln_" in name:
        return "norm"
    return "other"


def values_by_type(tensors: Mapping[str, Tensor], per_type: int = 100_000, seed: int = 0) -> dict[str, np.ndarray]:
    """A uniform random sample of at most ``per_type`` entries of each layer type (float32 numpy arrays),
    for distribution plots of maps with millions of entries."""
    generator = torch.Generator().manual_seed(seed)
    groups: dict[str, list[Tensor]] = {}
    for name, t in tensors.items():
        groups.setdefault(layer_type(name), []).append(t.detach().reshape(-1).float().cpu())
    out = {}
    for kind in LAYER_TYPES:
        if kind in groups:
            flat = torch.cat(groups[kind])
            if flat.numel() > per_type:
                flat = flat[torch.randint(flat.numel(), (per_type,), generator=generator)]
            out[kind] = flat.numpy()
    return out


def top_mask(tensors: Mapping[str, Tensor], fraction: float = 0.01) -> dict[str, Tensor]:
    """Boolean masks of the global top ``fraction`` of entries (the largest values over all tensors;
    entries tied with the smallest kept value are kept too, except zeros)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    flat = torch.cat([t.detach().reshape(-1).float().cpu() for t in tensors.values()])
    k = max(1, round(fraction * flat.numel()))
    threshold = float(torch.kthvalue(flat, flat.numel() - k + 1).values)
    del flat
    keep = (lambda t: t > threshold) if threshold == 0 else (lambda t: t >= threshold)
    return {name: keep(t.detach().float().cpu()) for name, t in tensors.items()}


def overlap(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    """|A and B| / min(|A|, |B|) for two boolean masks of the same keys (1: one set contains the other)."""
    both = sum(int((a[n] & b[n]).sum()) for n in a)
    smaller = min(sum(int(m.sum()) for m in a.values()), sum(int(m.sum()) for m in b.values()))
    return both / smaller if smaller else float("nan")


def weights_histogram(weights: Mapping[str, Tensor], bins: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Counts of weights in ``bins`` equal bins over [0, 1], and the bin edges (streams over tensors)."""
    counts = torch.zeros(bins, dtype=torch.float64)
    for w in weights.values():
        counts += torch.histc(w.float().cpu(), bins=bins, min=0, max=1).double()
    return counts.numpy(), np.linspace(0, 1, bins + 1)


def compare_at_equal_forgetting(
    rows: Sequence[Mapping[str, Any]], target_utility: float, baseline: str = "tv",
    challengers: Sequence[str] = ("perta-grad", "perta-fisher"),
) -> list[dict[str, Any]]:
    """Compare methods at equal forgetting: for every ``baseline`` row (a sweep row with ``method``,
    ``lam``, ``forget_Q_A_ROUGE`` and ``model_utility``) and every challenger method, the challenger's
    row with the highest model utility among those whose forget ROUGE-L is equal or lower.

    Returns one dict per (challenger, baseline row): ``method``, ``baseline_lam``, ``baseline_rouge``,
    ``baseline_mu``, ``lam``, ``rouge``, ``mu`` (None when no challenger row forgets as much), ``gain``
    (mu - baseline_mu) and ``recovered`` (gain / the utility the baseline lost against
    ``target_utility``; None unless it lost some).
    """
    out = []
    for method in challengers:
        candidates = [r for r in rows if r["method"] == method]
        for base in (r for r in rows if r["method"] == baseline):
            eligible = [r for r in candidates if r["forget_Q_A_ROUGE"] <= base["forget_Q_A_ROUGE"]]
            best = max(eligible, key=lambda r: r["model_utility"]) if eligible else None
            lost = target_utility - base["model_utility"]
            gain = best["model_utility"] - base["model_utility"] if best else None
            out.append({
                "method": method, "baseline_lam": base["lam"], "baseline_rouge": base["forget_Q_A_ROUGE"],
                "baseline_mu": base["model_utility"], "lam": best["lam"] if best else None,
                "rouge": best["forget_Q_A_ROUGE"] if best else None, "mu": best["model_utility"] if best else None,
                "gain": gain, "recovered": gain / lost if best and lost > 0 else None,
            })
    return out
