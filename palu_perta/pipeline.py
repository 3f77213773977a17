"""What every notebook needs, computed once and cached: the benchmark, the target and retain
models, and evaluations of any model.

A notebook calls these instead of assuming an earlier notebook ran: each returns the cached
artifact when its configuration matches, and computes it otherwise.

    bench = pipeline.benchmark(profile)
    models = pipeline.reference_models(profile, bench)          # base, target, retain
    retain_eval = pipeline.evaluation(profile, models.retain, bench, reference="self")
    target_eval = pipeline.evaluation(profile, models.target, bench, reference=retain_eval)
    rows = pipeline.lambda_sweep(profile, bench, models.target, {"tv": [0.5, 1.0]}, retain_eval)  # store first
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .artifacts import atomic_write_json, build_time
from .config import Profile
from .data import Benchmark, load_benchmark
from .evaluation import evaluate, summarise
from .kept import cached_or_kept
from .models import load_model
from .tokenization import prompt_format_for
from .training import records_info, target_and_retain


MODEL_FILE = "model.json"  # in an evaluation's entry: how long its model took to build


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

    def model_build_time(self) -> float | None:
        """Seconds the evaluated model directory took to build (its training run), when known, else None."""
        path = self.path / MODEL_FILE
        return json.loads(path.read_text()).get("build_s") if path.is_file() else None


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
    prepare: Callable[[], Any] | None = None,
) -> Evaluation:
    """Evaluate ``model`` on ``bench`` with the full suite, cached.

    ``model``: a name or model directory, or a function returning ``(model, tokenizer)`` for
    models that only exist in memory (e.g. PerTA's theta_o - lambda * w * tau); such a model
    needs ``key``, a dict that identifies it in the cache.

    ``reference``: the retain model's evaluation, for forget quality and PrivLeak; ``"self"``
    scores the model against itself (the retain model's own forget quality is exactly 1).

    ``prepare``: called before the model is loaded, only when the evaluation is neither cached nor kept
    (:mod:`palu_perta.kept`), e.g. to train the model directory ``model`` names. The entry's ``model.json``
    records how long that directory took to build (:meth:`Evaluation.model_build_time`), so the time survives
    in the kept results when the model itself is gone.
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
        if prepare is not None:
            prepare()
        loaded, tokenizer = model() if callable(model) else load_model(str(model), seed=profile.seed)
        evaluate(loaded, tokenizer, bench, out_dir=directory, progress=progress, **settings)
        if not callable(model):
            atomic_write_json(directory / MODEL_FILE, {"build_s": build_time(Path(str(model)))})

    path = cached_or_kept("evals", name or ("model" if callable(model) else Path(str(model)).name), config, build)
    per_item = json.loads((path / "per_item.json").read_text())
    if reference == "self":
        ref = per_item
    elif isinstance(reference, str):
        raise ValueError(f"reference={reference!r}: pass an Evaluation, 'self' or None")
    else:
        ref = reference.per_item() if reference is not None else None
    return Evaluation(summarise(per_item, ref), path)


def lambda_sweep(profile: Profile, bench: Benchmark, target_dir: str | Path, grids: dict[str, list[float]],
                 reference: Evaluation, cfg: Any = None, log: bool = True, root: Path | None = None,
                 ) -> list[dict[str, Any]]:
    """TV / PerTA at every lambda of its grid (``grids``: method -> lambdas), one row per model as
    :func:`palu_perta.perta.sweep` gives it (``method``, ``lam``, the summary's metrics), plus ``source``: the
    results store (``results/<profile>/``) when the profile's study holds that very model, evaluated by the same
    code (:func:`palu_perta.study.stored_points`: the cell's configuration hash must be current), else
    ``computed`` (evaluated now, or read from the cache, by :func:`palu_perta.perta.sweep`). A lambda is taken from
    the store only when it is exactly one the cell evaluated. ``root``: another results directory."""
    from . import perta
    from .study import stored_points
    from .training import reference_entry

    # the store holds runs from the profile's own target model, with PerTA's default recipe
    own_target = Path(target_dir).resolve() == reference_entry(profile, bench, "target").resolve()
    rows = []
    for method, lambdas in grids.items():
        default = own_target and (cfg is None or cfg == perta.perta_config(profile))
        points = stored_points(profile, method, root=root, bench=bench) if default else []
        stored = {float(p["point"]["lambda"]): p["metrics"] for p in points}
        missing = [lam for lam in lambdas if float(lam) not in stored]
        computed = {row["lam"]: row for row in perta.sweep(profile, bench, target_dir, [method], missing, reference, cfg,
                                                           log=log)}
        for lam in lambdas:
            if float(lam) in stored:
                rows.append({"method": method, "lam": float(lam), **stored[float(lam)], "source": "results store"})
                if log:
                    m = stored[float(lam)]
                    print(f"{method:13s} lambda={lam:<7g} forget ROUGE-L {m['forget_Q_A_ROUGE']:.3f}  MU "
                          f"{m['model_utility']:.3f}  FQ {m['forget_quality']:.3g}  [from the results store]", flush=True)
            else:
                rows.append({**computed[float(lam)], "source": "computed"})
    return rows
