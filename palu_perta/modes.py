"""Context managers that put a model (or some of its parameters) in a mode for one block and restore what was
there before, even when the block raises. No caching, no orchestration: the math modules may use them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model`` in eval mode (no dropout) for the block, its training flag restored afterwards, even on error."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextmanager
def requiring_grad(params: Mapping[str, torch.Tensor]) -> Iterator[Mapping[str, torch.Tensor]]:
    """``params`` with ``requires_grad`` on for the block (a frozen parameter's gradient is needed too), each
    parameter's own flag restored afterwards, even on error."""
    before = {name: p.requires_grad for name, p in params.items()}
    for p in params.values():
        p.requires_grad_(True)
    try:
        yield params
    finally:
        for name, p in params.items():
            p.requires_grad_(before[name])
