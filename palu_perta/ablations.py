"""The ablations of notebook 07: one choice of PALU or PerTA changed at a time, the rest as in 06 / 05.

PALU (``palu_ablation``): every variant is an unlearning run from the target with notebook 06's budget
and :data:`~palu_perta.config.PALU_HYPER` (the authors' released configuration: K = 1 on every sensitive
token, alpha = 1) with one axis of :data:`PALU_AXES` changed, then the full metric suite. The default point is
notebook 06's own PALU run (same cache entry); it sits on every axis (:func:`default_value`), and points of two
axes that name the same loss share one run: the default, once per axis; K = |V| and the "sensitive x full"
cell of the scope grid; N = 3 and the "onset x topk" cell.

PerTA (``perta_ablation``): every variant changes one choice of PerTA-grad (:data:`PERTA_AXES`: the
exponent p, the share of examples behind the importances, where they are evaluated, or w replaced by a
control with the same mean). Variants forget by different amounts at the same lambda (a smaller mean
weight is a smaller step), so each is compared *at equal forgetting*: :func:`forgetting_lambda` finds the
smallest lambda at which its forget ROUGE-L is at or below the retain model's, with the cheap probe of
:func:`~palu_perta.perta.calibrate_lambda`, and the variant is evaluated there with the full suite.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from . import perta, pipeline
from .artifacts import atomic_write_json
from .config import PALU_HYPER, Profile, unlearn_budget
from .kept import cached_or_kept
from .losses import LOSSES
from .models import load_model
from .unlearn import UnlearnConfig, unlearned_model, unlearned_path

# metric keys every ablation row carries (open-unlearning's names)
KEYS = ("forget_quality", "model_utility", "forget_Q_A_ROUGE", "exact_memorization", "privleak")

# PALU: axis -> values, each around PALU_HYPER (K = 1, every sensitive token, alpha 1). "lr_scale" multiplies the
# profile's unlearning learning rate (cpu: 5e-5 -> 1e-5, 2e-5, 5e-5, the ends of the authors' sweep) and "alpha"
# weighs the retain NLL and the KL on ordinary tokens (the authors sweep 0.2-5): how hard PALU pushes, before what
# it pushes on. "top_k": K, with "V" the full vocabulary (vocab="full"); 1 is the default and 1000 the next point of
# the authors' sweep (their 5000 and 10000, a sixth and a third of their Llama-2's 32000-token vocabulary, lie
# between 1000 and V); 10 and 50 fill the gap their sweep leaves below 1000 (50 is the value of the paper's
# secondary notes, the package's default before it took the authors' configuration). "first_n":
# N onset tokens per sensitive run (temporal "onset"; 1, 2, 3, 5 from the authors' sweep, 3 palu_loss's default),
# -1 = "all", every sensitive token: the default itself. "scope" is the paper's 2 x 2, temporal scope (onset
# tokens, N = 3 / every answer token) x vocabulary scope (top-K / the full vocabulary), with the default's
# temporal scope (every sensitive token) as a third row: "sensitive x topk" is the default and "sensitive x full"
# is K = V, so the row costs no run. "target" and "form" run at K = TARGET_FORM_TOP_K, not at the default K = 1 (below).
PALU_AXES: dict[str, list[Any]] = {
    "lr_scale": [0.2, 0.4, 1.0],
    "alpha": [0.2, 1.0, 5.0],
    "top_k": [1, 10, 50, 1000, "V"],
    "first_n": [1, 2, 3, 5, -1],
    "target": ["full_mean", "topk_mean", "fixed"],
    "scope": [("onset", "topk"), ("onset", "full"), ("sensitive", "topk"), ("sensitive", "full"),
              ("answer", "topk"), ("answer", "full")],
    "form": ["squared", "entropy"],
}
# The K of the "target" and "form" axes. At the default K = 1 the "topk_mean" target (c_t = the one candidate's own
# logit) and the "entropy" form (the entropy of a softmax over one logit, always 0) have no forget term at all
# (tests/test_ablations.py checks it), so at K = 1 those axes would compare the loss with the retain terms alone.
# 50 is the K of the paper's secondary notes, the source of the "local mean" ranking the target axis tests; the
# axes' "full_mean" and "squared" points are then the top_k axis' K = 50 run (one run, shared), and neither axis
# holds the default point.
TARGET_FORM_TOP_K = 50
AXES_AT_TARGET_FORM_K = ("target", "form")
# the paper's own 2 x 2 among the scope axis' values (its claim: onset x top-K is the best of these four)
PALU_SCOPE_2X2: tuple[tuple[str, str], ...] = (("onset", "topk"), ("onset", "full"), ("answer", "topk"),
                                               ("answer", "full"))

# PerTA: axis -> values. Each axis contains PerTA-grad's own choice (p 1, every example, importances at the
# target, PerTA's w), which is notebook 05's PerTA-grad.
PERTA_AXES: dict[str, list[Any]] = {
    "p": [0.5, 1.0, 2.0, 4.0],
    "fraction": [0.1, 0.2, 0.5, 1.0],
    "importance_at": ["target", "base"],
    "weights": ["perta", "constant", "random"],
}


def palu_hyper(axis: str, value: Any) -> dict[str, Any]:
    """PALU's hyperparameters with one axis changed: :data:`PALU_HYPER` updated with the axis' change. A key
    that PALU_HYPER sets is overwritten; a key it leaves to the loss is added only when the value differs from
    :func:`~palu_perta.losses.palu_loss`'s default. So equal losses give equal dicts and share one cached run:
    the default point is exactly :data:`PALU_HYPER` (notebook 06's run) on every axis but ``target`` and ``form`` (N = "all" included:
    every sensitive token is the default's temporal scope), and N = 3 (the loss's default) is the dict of the
    "onset x topk" scope cell. The ``target`` and ``form`` axes also set K = :data:`TARGET_FORM_TOP_K` (50): their
    "full_mean" and "squared" points are the ``top_k`` axis' K = 50 run.

    ``first_n`` N >= 1 means temporal "onset" with N tokens per sensitive run, -1 every sensitive token;
    ``top_k`` "V" means the full vocabulary; ``scope`` takes (temporal, vocabulary) pairs."""
    if axis not in PALU_AXES:
        raise ValueError(f"unknown PALU axis {axis!r}; use one of {list(PALU_AXES)}")
    if axis == "lr_scale":
        change: dict[str, Any] = {}  # the optimiser's budget changes, not the loss: see palu_budget
    elif axis == "alpha":
        change = {"alpha": float(value)}
    elif axis == "top_k":
        change = {"vocab": "full"} if value == "V" else {"top_k": int(value)}
    elif axis == "first_n":
        if int(value) == -1:
            change = {"temporal": "sensitive"}  # every sensitive token (onset_mask with first_n = -1 is the same mask)
        elif int(value) >= 1:
            change = {"temporal": "onset", "first_n": int(value)}
        else:
            raise ValueError(f"first_n must be a positive integer or -1 (every sensitive token), got {value!r}")
    elif axis == "scope":
        temporal, vocab = value
        change = {"temporal": temporal, "vocab": vocab}
    else:  # "target" or "form" (AXES_AT_TARGET_FORM_K): the loss' key of the same name, at K = 50
        change = {"top_k": TARGET_FORM_TOP_K, axis: value}
    defaults = LOSSES["palu"].defaults
    hyper = dict(PALU_HYPER)
    hyper.update({k: v for k, v in change.items() if k in PALU_HYPER or v != defaults[k]})
    return hyper


def default_value(axis: str) -> Any:
    """The value of ``axis`` (in :data:`PALU_AXES`) that is the default point: PALU_HYPER and notebook 06's budget
    (e.g. 1 on ``top_k``, -1 on ``first_n``, ("sensitive", "topk") on ``scope``). The ``target`` and ``form`` axes,
    run at K = :data:`TARGET_FORM_TOP_K`, hold none: ValueError."""
    if axis not in PALU_AXES:
        raise ValueError(f"unknown PALU axis {axis!r}; use one of {list(PALU_AXES)}")
    if axis in AXES_AT_TARGET_FORM_K:
        raise ValueError(f"PALU axis {axis!r} runs at K = {TARGET_FORM_TOP_K} and holds no default point (K = 1 would "
                         "leave some of its values without a forget term); its reference is the top_k axis' "
                         f"K = {TARGET_FORM_TOP_K} run")
    found = [v for v in PALU_AXES[axis] if palu_hyper(axis, v) == PALU_HYPER
             and (axis != "lr_scale" or float(v) == 1.0)]  # the learning rate's scale: 1 is the budget's own
    if len(found) != 1:
        raise ValueError(f"PALU axis {axis!r} holds the default point {len(found)} times ({found}); "
                         "PALU_AXES must hold it exactly once")
    return found[0]


def palu_budget(profile: Profile, axis: str, value: Any) -> dict[str, Any]:
    """The profile's unlearning budget (notebook 06's), with the learning rate scaled on the ``lr_scale`` axis."""
    budget = unlearn_budget(profile)
    if axis == "lr_scale":
        budget["learning_rate"] *= float(value)
    return budget


def value_label(axis: str, value: Any) -> str:
    """How a value of a PALU axis is shown (a row's ``value``): "0.2x", "onset x topk", "all" for N = -1."""
    if axis == "lr_scale":
        return f"{value:g}x"
    if axis == "scope":
        return f"{value[0]} x {value[1]}"
    if axis == "first_n" and value == -1:
        return "all"
    return str(value)


def palu_ablation(
    profile: Profile,
    bench: Any,
    target_dir: str | Path,
    retain_eval: pipeline.Evaluation,
    axes: Sequence[str] | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = print,
) -> pd.DataFrame:
    """One row per (axis, value) of :data:`PALU_AXES` (``axes`` picks some): ``default`` (notebook 06's own
    setting), the metrics of :data:`KEYS`, the hyperparameters changed, the ``learning_rate``, ``run`` (the cache entry's name) and ``train_s`` (the
    unlearning run's training time when it was built). Runs and evaluations are cached and shared with
    notebook 06."""
    rows = []
    for axis in axes or list(PALU_AXES):
        for value in PALU_AXES[axis]:
            hyper = palu_hyper(axis, value)
            budget = palu_budget(profile, axis, value)
            cfg = UnlearnConfig(method="palu", hyper=hyper, seed=profile.seed, **budget)
            start = time.perf_counter()
            run = unlearned_path(profile, Path(target_dir), bench, cfg)

            def train(cfg: UnlearnConfig = cfg) -> None:  # only when the evaluation is neither cached nor kept
                # without progress, quiet: the Trainer prints every logged step
                with contextlib.nullcontext() if progress else contextlib.redirect_stdout(io.StringIO()):
                    unlearned_model(profile, Path(target_dir), bench, cfg, progress=progress)

            evaluation = pipeline.evaluation(profile, run, bench, retain_eval, progress=progress, prepare=train)
            default = hyper == PALU_HYPER and budget == unlearn_budget(profile)
            rows.append({"axis": axis, "value": value_label(axis, value), "default": default,
                         **{k: evaluation.summary[k] for k in KEYS},
                         "hyper": json.dumps({k: v for k, v in hyper.items() if PALU_HYPER.get(k) != v} or "default"),
                         "learning_rate": budget["learning_rate"],
                         "run": run.name, "train_s": perta.build_time(run) if run.is_dir()
                         else evaluation.model_build_time()})
            if log:
                log(f"{axis:8s} {value_label(axis, value):15s} FQ {evaluation.summary['forget_quality']:.3g}  "
                    f"MU {evaluation.summary['model_utility']:.3f}  forget ROUGE-L "
                    f"{evaluation.summary['forget_Q_A_ROUGE']:.3f}  [{time.perf_counter() - start:.0f} s]")
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------ PerTA


def perta_variant(axis: str, value: Any, cfg: perta.PerTAConfig) -> tuple[perta.PerTAConfig, str | None]:
    """The PerTA config and the weights control (None, "constant", "random") of one ablation point."""
    if axis not in PERTA_AXES:
        raise ValueError(f"unknown PerTA axis {axis!r}; use one of {list(PERTA_AXES)}")
    if axis == "weights":
        return cfg, None if value == "perta" else value
    return dataclasses.replace(cfg, **{axis: value}), None


def forgetting_lambda(
    profile: Profile,
    bench: Any,
    target_dir: str | Path,
    retain_rouge: float,
    method: str = "perta-grad",
    cfg: perta.PerTAConfig | None = None,
    control: str | None = None,
    start: float = 1.0,
    max_steps: int = 10,
    progress: bool = False,
) -> dict[str, Any]:
    """The smallest lambda (to within a factor sqrt 2) at which ``method``'s model forgets down to
    ``retain_rouge`` (forget ROUGE-L of greedy answers), by the ladder of
    :func:`~palu_perta.perta.calibrate_lambda`: double from ``start`` until a rung forgets (or halve while
    the rung below still does), then bisect the last doubling once. Cached as JSON.

    Returns ``lam``, ``rouge`` (at ``lam``), ``probes`` ((lambda, ROUGE) in probing order), ``note``
    (non-empty when no rung within ``max_steps`` forgot) and ``wall_time_s``.
    """
    cfg = cfg or perta.perta_config(profile)
    model = perta.unlearned(profile, bench, target_dir, method, 0.0, cfg, progress, control)
    config = {"model": {k: v for k, v in model.key.items() if k != "lam"}, "retain_rouge": round(retain_rouge, 6),
              "start": start, "max_steps": max_steps, "generation": {"max_new_tokens": profile.max_new_tokens}}

    def build(directory: Path) -> None:
        begin = time.perf_counter()
        tau, weights = perta.task_vector_and_weights(profile, bench, target_dir, method, cfg, progress, control)
        target, tokenizer = load_model(str(target_dir), seed=profile.seed)
        lam, note, probes = perta.forgetting_ladder(target, tokenizer, tau, weights, bench.forget, profile, retain_rouge,
                                                    start, max_steps)
        rouge = next(r for l, r in reversed(probes) if l == lam)
        atomic_write_json(directory / "lambda.json", {"lam": lam, "rouge": rouge, "probes": probes, "note": note,
                                                      "wall_time_s": round(time.perf_counter() - begin, 2)})

    path = cached_or_kept("calibration", f"{profile.name}-{method}{'-' + control if control else ''}-forgetting", config,
                          build)
    return json.loads((path / "lambda.json").read_text())


def perta_ablation(
    profile: Profile,
    bench: Any,
    target_dir: str | Path,
    retain_eval: pipeline.Evaluation,
    axes: Sequence[str] | None = None,
    method: str = "perta-grad",
    start: float = 1.0,
    progress: bool = False,
    log: Callable[[str], None] | None = print,
) -> pd.DataFrame:
    """One row per (axis, value) of :data:`PERTA_AXES` (``axes`` picks some), each evaluated at its own
    equal-forgetting lambda (:func:`forgetting_lambda`, ladder from ``start``): ``default`` (PerTA-grad as
    notebook 05 runs it), ``lam``, the metrics of :data:`KEYS`, ``mean_w`` (the global mean of the weights
    used) and ``note``. Everything is cached."""
    base_cfg = perta.perta_config(profile)
    retain_rouge = retain_eval.summary["forget_Q_A_ROUGE"]
    mean_w: dict[perta.PerTAConfig, float] = {}  # one weights computation per config (controls share PerTA's mean)
    rows = []
    for axis in axes or list(PERTA_AXES):
        for value in PERTA_AXES[axis]:
            cfg, control = perta_variant(axis, value, base_cfg)
            begin = time.perf_counter()
            found = forgetting_lambda(profile, bench, target_dir, retain_rouge, method, cfg, control, start,
                                      progress=progress)
            evaluation = perta.evaluate_unlearned(profile, bench, target_dir, method, found["lam"], retain_eval, cfg,
                                                  progress, control)
            if cfg not in mean_w:
                mean_w[cfg] = perta.global_mean(perta.perta_weights_for(profile, bench, target_dir, method, cfg, progress))
            rows.append({"axis": axis, "value": str(value), "default": cfg == base_cfg and control is None,
                         "lam": found["lam"], **{k: evaluation.summary[k] for k in KEYS}, "mean_w": mean_w[cfg],
                         "note": found["note"]})
            if log:
                log(f"{axis:13s} {str(value):8s} lambda {found['lam']:<8.3g} FQ {evaluation.summary['forget_quality']:.3g}  "
                    f"MU {evaluation.summary['model_utility']:.3f}  forget ROUGE-L "
                    f"{evaluation.summary['forget_Q_A_ROUGE']:.3f}  [{time.perf_counter() - begin:.0f} s]")
    return pd.DataFrame(rows)


def on_front(forget_quality: Sequence[float], model_utility: Sequence[float]) -> list[bool]:
    """For each point, whether no other point is at least as good on both forget quality and model utility
    and better on one (the Pareto front of the trade-off; higher is better on both)."""
    points = list(zip(forget_quality, model_utility))
    return [not any(f2 >= f and m2 >= m and (f2 > f or m2 > m) for f2, m2 in points) for f, m in points]


__all__ = ["KEYS", "PALU_AXES", "PALU_SCOPE_2X2", "TARGET_FORM_TOP_K", "AXES_AT_TARGET_FORM_K", "PERTA_AXES", "palu_hyper", "default_value", "palu_budget", "value_label", "palu_ablation",
           "perta_variant", "forgetting_lambda", "perta_ablation", "on_front"]
