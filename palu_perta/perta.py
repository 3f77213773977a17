"""PerTA: per-parameter task arithmetic (DESIGN.md section 6).

    tau = TaskVector.from_models(target, forget_finetuned)
    w = perta_weights(parameter_importance(target, forget_batches, "grad"),
                      parameter_importance(target, retain_batches, "grad"))
    unlearned = perta_unlearn(target, tau, w, lam)          # theta_o - lam * (w * tau)

``weights=None`` is plain task arithmetic (the TV baseline). The controls of the ablations replace ``w``
by :func:`constant_weights_like` or :func:`random_weights_like`, which keep its global mean.
Weights are mappings name -> tensor with the keys and shapes of the task vector.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from palu_perta.task_vectors import TaskVector, check_same_keys

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def perta_weights(
    importance_forget: Mapping[str, Tensor], importance_retain: Mapping[str, Tensor], p: float = 1.0, eps: float = 1e-12
) -> dict[str, Tensor]:
    """w = I_f^p / (I_f^p + I_r^p + eps), element-wise in float32, in [0, 1].

    Both importances are divided by m = max(I_f, I_r) before the power, so nothing overflows and only the
    smaller term can underflow (to its limit, 0): w = (I_f/m)^p / ((I_f/m)^p + (I_r/m)^p + eps). This is
    DESIGN.md's formula with eps relative to m^p, which makes w invariant to a common rescaling of the
    importances (diagonal Fisher values of large models are far below an absolute eps of 1e-12).
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
    histogram = torch.zeros(bins, dtype=torch.float64)
    above_half = 0
    for w in weights.values():
        histogram += torch.histc(w.float(), bins=bins, min=0, max=1).double().cpu()
        above_half += int((w > 0.5).sum())
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
