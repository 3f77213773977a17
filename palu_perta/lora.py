"""LoRA (``peft``) for models whose full fine-tune does not fit: adapters in, training, adapters merged out.

A fine-tune or an unlearning run with ``lora=LoraSettings(rank=8)`` trains low-rank adapters on the
linear layers while every weight of the model stays frozen, then merges them into the weights
(``theta + (alpha / r) B A``), so the saved model is a plain safetensors model that every other tool
reads unchanged, and PerTA's task vector of a LoRA fine-tune is the merged update. The methods that
compare against a frozen reference model take it from the same model with its adapters disabled
(:func:`palu_perta.unlearn.UnlearningTrainer`): with B = 0 at the start and the weights frozen, that is
exactly the model at the start of unlearning, without a second copy of it.

Defaults follow TOFU's LoRA recipe [TOFU locuslab/tofu, config/finetune_lora.yaml: ``r: 8, alpha: 32,
dropout: 0.05``; finetune.py: adapters on every ``nn.Linear`` but ``lm_head`` (``find_all_linear_names``),
``bias="none"``, merged with ``merge_and_unload`` before saving]. The rank has no default: it is asked for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

TOFU_LORA_ALPHA = 32.0  # [TOFU config/finetune_lora.yaml, LoRA.alpha]
TOFU_LORA_DROPOUT = 0.05  # [TOFU config/finetune_lora.yaml, LoRA.dropout]
PEFT_INSTALL = "pip install peft==0.21.2"


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapters of rank ``rank``, scaled by ``alpha / rank``, with ``dropout`` on their input.

    ``target_modules``: the last name components of the linear layers that get adapters (e.g.
    ``("q_proj", "v_proj")``); empty (the default) means every ``nn.Linear`` but the output layer, as TOFU.
    """

    rank: int
    alpha: float = TOFU_LORA_ALPHA
    dropout: float = TOFU_LORA_DROPOUT
    target_modules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"LoRA rank={self.rank!r} must be an integer >= 1 (e.g. 8, TOFU's)")
        if not (isinstance(self.alpha, (int, float)) and self.alpha > 0):
            raise ValueError(f"LoRA alpha={self.alpha!r} must be a number > 0 (default {TOFU_LORA_ALPHA:g}, TOFU's)")
        if not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
            raise ValueError(f"LoRA dropout={self.dropout!r} must be in [0, 1) (default {TOFU_LORA_DROPOUT}, TOFU's)")
        if not all(isinstance(name, str) and name for name in self.target_modules):
            raise ValueError(f"LoRA target_modules={self.target_modules!r} must be module names such as 'q_proj'")

    def key(self) -> dict[str, Any]:
        """The settings as a plain dict, for cache keys."""
        return {**dataclasses.asdict(self), "target_modules": list(self.target_modules)}


def as_lora(value: LoraSettings | Mapping[str, Any] | None) -> LoraSettings | None:
    """``value`` as :class:`LoraSettings` (a dict of its fields is accepted), or None."""
    if value is None or isinstance(value, LoraSettings):
        return value
    if isinstance(value, Mapping):
        unknown = set(value) - {f.name for f in dataclasses.fields(LoraSettings)}
        if unknown:
            raise ValueError(f"LoRA settings have no field(s) {sorted(unknown)}; use rank, alpha, dropout, target_modules")
        return LoraSettings(**value)
    raise ValueError(f"lora={value!r} must be LoraSettings(rank=...), a dict such as {{'rank': 8}}, or None")


def linear_targets(model: nn.Module, settings: LoraSettings) -> list[str]:
    """The module names (last components) that get adapters: ``settings.target_modules``, checked against
    the model, or every ``nn.Linear`` but the output layer (TOFU's ``find_all_linear_names``)."""
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    linear = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
              if isinstance(module, nn.Linear) and module is not output}
    if not settings.target_modules:
        if not linear:
            raise ValueError("the model has no linear layer besides its output layer: LoRA has nothing to adapt")
        return sorted(linear)
    missing = sorted(set(settings.target_modules) - linear)
    if missing:
        raise ValueError(f"LoRA target module(s) {missing} are not linear layers of this model; its linear layers "
                         f"are {sorted(linear)} (leave the targets out to adapt all of them)")
    return list(settings.target_modules)


def add_adapters(model: nn.Module, settings: LoraSettings, seed: int = 0) -> nn.Module:
    """``model`` wrapped as a ``peft`` model with fresh adapters (A drawn from ``seed``, B = 0, so the
    wrapped model computes exactly what ``model`` did); only the adapters are trainable. The adapters are
    injected into ``model``'s own modules: :func:`merge_adapters` gives ``model`` back, merged."""
    try:
        from peft import LoraConfig, PeftModel, get_peft_model
    except ModuleNotFoundError:
        raise ModuleNotFoundError(f"LoRA needs the peft package: run `{PEFT_INSTALL}` (it is a dependency of "
                                  "palu-perta; reinstall with `pip install -e .`)") from None
    if isinstance(model, PeftModel):
        raise ValueError("the model already has LoRA adapters; merge them first (merge_adapters)")
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=linear_targets(model, settings), bias="none", task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(model, config)


def is_lora(model: nn.Module) -> bool:
    """Whether ``model`` is a ``peft`` model (adapters not merged yet)."""
    try:
        from peft import PeftModel
    except ModuleNotFoundError:
        return False
    return isinstance(model, PeftModel)


def merge_adapters(model: nn.Module) -> nn.Module:
    """Merge the adapters of the ``peft`` ``model`` into its weights and remove them; returns the underlying
    model (the object given to :func:`add_adapters`), with every parameter trainable again as before."""
    merged = model.merge_and_unload()
    for parameter in merged.parameters():
        parameter.requires_grad_(True)
    return merged


def trainable_parameters(model: nn.Module) -> int:
    """Number of parameters that get gradients."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
