"""Task vectors (docs/design.md, "PerTA"): tau = theta_ft - theta_o, one small class with arithmetic.

In the style of mlfoundations/task_vectors (Ilharco et al. 2023)::

    tau = TaskVector.from_models(target, forget_finetuned)          # theta_ft - theta_o
    tv_model = tau.apply_to(copy.deepcopy(target), scale=-lam)      # task-arithmetic unlearning
    tau.save("tau.safetensors"); tau = TaskVector.load("tau.safetensors")

A vector holds one tensor per floating parameter, keyed by ``model.named_parameters()`` names, in float32
by default: fine-tuning differences are small and would lose most of their digits in bf16.

Tied weights: ``named_parameters()`` lists a shared tensor once (``lm_head.weight`` tied to
``model.embed_tokens.weight`` in Llama / SmolLM2 appears only as the latter), so a vector built from models
has one entry for it and :meth:`TaskVector.apply_to` updates it once. :meth:`TaskVector.from_state_dicts`
drops the same aliases (keys whose tensor shares storage with an earlier key).

Memory: a vector is one extra model copy (28 GB in float32 for a 7B model). Construction, arithmetic and
:meth:`TaskVector.apply_to` stream tensor by tensor: besides their inputs and output they never hold more
than one tensor-sized temporary.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Callable, ItemsView, Iterator, KeysView, Mapping
from numbers import Real
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

FORMAT = "palu_perta.TaskVector"
FORMAT_VERSION = "1"
_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks)\.(\d+)\.")


def _floating(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The floating tensors of a state dict in order, a tensor seen under several keys (tied weights) only
    under its first key. Tensors without storage (meta, empty) are all kept."""
    seen: set[tuple[torch.device, int, tuple[int, ...]]] = set()
    out = {}
    for name, tensor in state_dict.items():
        if not tensor.is_floating_point():
            continue
        key = (tensor.device, tensor.data_ptr(), tuple(tensor.shape))
        if key not in seen:
            out[name] = tensor
            if tensor.data_ptr():
                seen.add(key)
    return out


def check_same_keys(reference: Mapping[str, Tensor], other: Mapping[str, Tensor], what: str) -> None:
    """ValueError naming the first key missing from, extra in, or of another shape in ``other``."""
    for name, tensor in reference.items():
        if name not in other:
            raise ValueError(f"{what}: {name!r} is missing")
        if tuple(other[name].shape) != tuple(tensor.shape):
            raise ValueError(f"{what}: {name!r} has shape {tuple(other[name].shape)}, expected {tuple(tensor.shape)}")
    extra = next((name for name in other if name not in reference), None)
    if extra is not None:
        raise ValueError(f"{what}: unexpected key {extra!r}")


class TaskVector:
    """An ordered mapping parameter name -> tensor (the difference theta_ft - theta_o), with arithmetic.

    ``tau + tau2``, ``tau - tau2``, ``-tau``, ``2.0 * tau``, ``tau * weights`` (element-wise, ``weights``
    a mapping name -> tensor of the same shapes, or another TaskVector) return new vectors;
    ``sum([tau1, tau2])`` works too.
    """

    def __init__(self, vector: Mapping[str, Tensor]) -> None:
        for name, tensor in vector.items():
            if not tensor.is_floating_point():
                raise ValueError(f"task vector entry {name!r} has dtype {tensor.dtype}, expected a floating dtype")
        self.vector: dict[str, Tensor] = dict(vector)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_state_dicts(
        cls,
        original: Mapping[str, Tensor],
        finetuned: Mapping[str, Tensor],
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> TaskVector:
        """finetuned - original, key by key over the floating tensors (tied aliases dropped).

        Each difference is computed in ``dtype`` and stored on ``device`` (default: the tensor's own).
        ValueError naming the first key that is missing, extra or of another shape.
        """
        original, finetuned = _floating(original), _floating(finetuned)
        check_same_keys(original, finetuned, "the fine-tuned model does not match the original")
        vector = {}
        with torch.no_grad():
            for name, theta in original.items():
                target = device or theta.device
                vector[name] = finetuned[name].to(target, dtype) - theta.to(target, dtype)
        return cls(vector)

    @classmethod
    def from_models(
        cls,
        original: nn.Module,
        finetuned: nn.Module,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> TaskVector:
        """finetuned - original over the floating ``named_parameters()`` (buffers excluded); see
        :meth:`from_state_dicts`."""
        return cls.from_state_dicts(
            dict(original.named_parameters()), dict(finetuned.named_parameters()), dtype=dtype, device=device
        )

    # ------------------------------------------------------------------ mapping access

    def __len__(self) -> int:
        return len(self.vector)

    def __iter__(self) -> Iterator[str]:
        return iter(self.vector)

    def __getitem__(self, name: str) -> Tensor:
        return self.vector[name]

    def keys(self) -> KeysView[str]:
        return self.vector.keys()

    def items(self) -> ItemsView[str, Tensor]:
        return self.vector.items()

    def __repr__(self) -> str:
        numel = sum(t.numel() for t in self.vector.values())
        return f"TaskVector({len(self)} tensors, {numel:,} entries)"

    # ------------------------------------------------------------------ arithmetic

    def _combine(
        self, other: Mapping[str, Tensor] | TaskVector, op: Callable[[Tensor, Tensor], Tensor], what: str
    ) -> TaskVector:
        other = other.vector if isinstance(other, TaskVector) else other
        check_same_keys(self.vector, other, what)
        return TaskVector({name: op(t, other[name].to(device=t.device, dtype=t.dtype)) for name, t in self.items()})

    def __add__(self, other: TaskVector) -> TaskVector:
        if not isinstance(other, TaskVector):
            return NotImplemented
        return self._combine(other, torch.add, "cannot add task vectors")

    def __radd__(self, other: object) -> TaskVector:
        """``0 + tau`` is tau, so that ``sum(vectors)`` works."""
        if isinstance(other, Real) and other == 0:
            return self
        return NotImplemented

    def __sub__(self, other: TaskVector) -> TaskVector:
        if not isinstance(other, TaskVector):
            return NotImplemented
        return self._combine(other, torch.sub, "cannot subtract task vectors")

    def __neg__(self) -> TaskVector:
        return TaskVector({name: -t for name, t in self.items()})

    def __mul__(self, other: float | Mapping[str, Tensor] | TaskVector) -> TaskVector:
        """Scalar multiple, or element-wise product with same-keyed weights (cast to this vector's dtype)."""
        if isinstance(other, (TaskVector, Mapping)):
            return self._combine(other, torch.mul, "weights do not match the task vector")
        if isinstance(other, Real) and not isinstance(other, bool):
            return TaskVector({name: t * float(other) for name, t in self.items()})
        return NotImplemented

    __rmul__ = __mul__

    # ------------------------------------------------------------------ norms

    def norms_per_tensor(self) -> dict[str, float]:
        """L2 norm of each tensor (accumulated in float64)."""
        return {name: float(torch.linalg.vector_norm(t, dtype=torch.float64)) for name, t in self.items()}

    def norm(self) -> float:
        """Global L2 norm over all entries."""
        return math.sqrt(sum(n * n for n in self.norms_per_tensor().values()))

    def norms_per_layer(self) -> dict[str, float]:
        """L2 norm per group: ``layers.<i>`` for the tensors of transformer layer i (names such as
        ``model.layers.3.mlp.up_proj.weight``); any other tensor is its own module's group
        (``model.embed_tokens``, ``model.norm``, ``lm_head``). Groups in order of first appearance."""
        squares: dict[str, float] = {}
        for name, n in self.norms_per_tensor().items():
            layer = _LAYER.search(name)
            group = f"layers.{layer.group(1)}" if layer else name.rsplit(".", 1)[0]
            squares[group] = squares.get(group, 0.0) + n * n
        return {group: math.sqrt(s) for group, s in squares.items()}

    # ------------------------------------------------------------------ application

    def apply_to(self, model: nn.Module, scale: float = 1.0, weights: Mapping[str, Tensor] | None = None) -> nn.Module:
        """Add ``scale * tau`` (or ``scale * (weights * tau)``) to ``model``'s parameters in place; returns it.

        Tensor by tensor under ``torch.no_grad``: the sum is computed in the wider of the parameter's and the
        vector's dtypes (float32 for a bf16 model) and rounded once to the parameter's dtype. Parameters come
        from ``named_parameters()``, which lists tied weights once, so a shared tensor is updated once.
        ValueError if the keys or shapes differ.
        """
        params = {name: p for name, p in model.named_parameters() if p.is_floating_point()}
        check_same_keys(params, self.vector, "the task vector does not match the model")
        if weights is not None:
            check_same_keys(self.vector, weights, "weights do not match the task vector")
        with torch.no_grad():
            for name, tau in self.items():
                param = params[name]
                delta = tau.to(param.device)
                if weights is not None:
                    delta = delta * weights[name].to(device=param.device, dtype=tau.dtype)
                if param.dtype == delta.dtype:
                    param.add_(delta, alpha=scale)
                else:
                    wide = torch.promote_types(param.dtype, delta.dtype)
                    param.copy_(param.to(wide).add_(delta.to(wide), alpha=scale))
        return model

    # ------------------------------------------------------------------ files

    def save(self, path: str | os.PathLike) -> Path:
        """Write a safetensors file atomically (temporary file, then ``os.replace``); returns the path.

        The metadata records the format, its version and the key order."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "keys": json.dumps(list(self.vector))}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file({name: t.contiguous() for name, t in self.items()}, tmp, metadata=metadata)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str = "cpu") -> TaskVector:
        """Read a file written by :meth:`save` onto ``device``; ValueError for another format or version."""
        with safe_open(os.fspath(path), framework="pt", device=str(device)) as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise ValueError(f"{path} is not a task vector file (format {metadata.get('format')!r})")
            version = metadata.get("format_version")
            if version != FORMAT_VERSION:
                raise ValueError(f"{path}: task vector format version {version!r}, expected {FORMAT_VERSION!r}")
            return cls({name: f.get_tensor(name) for name in json.loads(metadata["keys"])})
