"""What every notebook needs, computed once and cached: the benchmark, the target and retain
models, and evaluations of any model.

A notebook calls these instead of assuming an earlier notebook ran: each returns the cached
artifact when its configuration matches, and computes it otherwise.

    bench = pipeline.benchmark(profile)
    models = pipeline.reference_models(profile, bench)          # base, target, retain
    retain_eval = pipeline.evaluation(profile, models.retain, bench, reference="self")
    target_eval = pipeline.evaluation(profile, models.target, bench, reference=retain_eval)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .artifacts import cached
from .config import Profile
from .data import Benchmark, load_benchmark
from .evaluation import evaluate, summarise
from .models import load_model
from .tokenization import prompt_format_for
from .training import records_info, target_and_retain


@dataclass(frozen=True)
class ReferenceModels:
    """The base model name and the cached target / retain model directories."""

    base: str
    target: Path
    retain: Path


@dataclass
class Evaluation:
    """A cached evaluation: ``summary`` (open-unlearning's keys) and where ``per_item.json`` is."""

    summary: dict[str, Any]
    path: Path

    @property
    def per_item_path(self) -> Path:
        return self.path / "per_item.json"

    def per_item(self) -> dict[str, Any]:
        return json.loads(self.per_item_path.read_text())


def benchmark(profile: Profile) -> Benchmark:
    """The profile's benchmark (synthetic, TOFU or a user directory)."""
    return load_benchmark(profile)


def reference_models(profile: Profile, bench: Benchmark, progress: bool = True) -> ReferenceModels:
    """Base model, and the target and retain models fine-tuned from it (cached)."""
    target, retain = target_and_retain(profile, bench, progress=progress)
    return ReferenceModels(profile.model, target, retain)


def evaluation(
    profile: Profile,
    model: str | Path | Callable[[], tuple[Any, Any]],
    bench: Benchmark,
    reference: Evaluation | str | None = None,
    *,
    name: str | None = None,
    key: dict[str, Any] | None = None,
    progress: bool = True,
) -> Evaluation:
    """Evaluate ``model`` on ``bench`` with the full suite, cached.

    ``model``: a name or model directory, or a function returning ``(model, tokenizer)`` for
    models that only exist in memory (e.g. PerTA's theta_o - lambda * w * tau); such a model
    needs ``key``, a dict that identifies it in the cache.

    ``reference``: the retain model's evaluation, for forget quality and PrivLeak; ``"self"``
    scores the model against itself (the retain model's own forget quality is exactly 1).
    """
    settings = {"max_new_tokens": profile.max_new_tokens, "batch_size": profile.eval_batch_size}
    if callable(model) and key is None:
        raise ValueError("an in-memory model needs key=..., a dict that identifies it in the cache")
    config = {
        "model": key if callable(model) else str(model),
        "data": {split: records_info(bench.source, records) for split, records in bench.splits().items()},
        "settings": settings,
    }
    fmt = None if callable(model) else prompt_format_for(str(model))  # a base model named by its hub id
    if fmt is not None:
        config["prompt_format"] = fmt.to_dict()

    def build(directory: Path) -> None:
        loaded, tokenizer = model() if callable(model) else load_model(str(model), seed=profile.seed)
        evaluate(loaded, tokenizer, bench, out_dir=directory, progress=progress, **settings)

    path = cached("evals", name or ("model" if callable(model) else Path(str(model)).name), config, build)
    per_item = json.loads((path / "per_item.json").read_text())
    if reference == "self":
        ref = per_item
    elif isinstance(reference, str):
        raise ValueError(f"reference={reference!r}: pass an Evaluation, 'self' or None")
    else:
        ref = reference.per_item() if reference is not None else None
    return Evaluation(summarise(per_item, ref), path)
