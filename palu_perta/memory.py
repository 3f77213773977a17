"""How much accelerator memory a fine-tune or an unlearning run needs, with and without LoRA, computed from
parameter, gradient, optimiser-state and reference-model sizes (docs/memory.md is written from here).

    training_memory(ARCHITECTURES["Llama-2-7B"], "npo")                # full training, bytes by component
    training_memory(ARCHITECTURES["Llama-2-7B"], "npo", lora_rank=8)   # LoRA adapters only

Regenerate the docs table with ``python -m palu_perta.memory --write``; a test checks it is current.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .artifacts import atomic_write_text

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
OPTIMIZER_STATES = {"adamw": 2, "sgd": 0}  # tensors per trainable parameter: AdamW's exp_avg and exp_avg_sq
ADAPTER_BYTES = 4  # peft keeps LoRA adapters in float32 over bf16/fp16 weights (get_peft_model's autocast_adapter_dtype)
DOC_RANK = 8  # the table's LoRA rank [TOFU config/finetune_lora.yaml, r: 8]
DOC_BATCH, DOC_LENGTH = 8, 512  # the paper profile's per-device batch and max length (palu_perta.config)
GIB = 2 ** 30


@dataclass(frozen=True)
class Architecture:
    """A Llama-style decoder: what its parameter count and LoRA's trainable count depend on."""

    name: str
    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    tied: bool  # the output layer shares the embedding matrix
    head_dim: int | None = None  # default hidden / heads

    @classmethod
    def from_config(cls, config: Any, name: str | None = None) -> "Architecture":
        """The architecture of a ``transformers`` Llama config (``head_dim`` kept only when it is not
        hidden / heads)."""
        head_dim = getattr(config, "head_dim", None)
        if head_dim == config.hidden_size // config.num_attention_heads:
            head_dim = None
        return cls(name or getattr(config, "_name_or_path", "") or "model", config.hidden_size, config.num_hidden_layers,
                   config.intermediate_size, config.vocab_size, config.num_attention_heads, config.num_key_value_heads,
                   bool(config.tie_word_embeddings), head_dim)

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear layer of one decoder layer (no biases)."""
        d = self.head_dim or self.hidden // self.heads
        h, q, kv, i = self.hidden, self.heads * d, self.kv_heads * d, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def n_params(self) -> int:
        """Parameters, tied ones once: the layers' linear weights and two RMSNorms, the final norm, the
        embedding and (untied) the output layer."""
        per_layer = sum(a * b for a, b in self.linear_shapes().values()) + 2 * self.hidden
        return self.layers * per_layer + self.hidden + self.vocab * self.hidden * (1 if self.tied else 2)

    def lora_params(self, rank: int, targets: tuple[str, ...] = ()) -> int:
        """LoRA's trainable parameters: rank x (in + out) per adapted layer; ``targets`` empty means every
        linear layer but the output layer (TOFU's choice, palu_perta.lora's default)."""
        shapes = self.linear_shapes()
        unknown = set(targets) - set(shapes)
        if unknown:
            raise ValueError(f"no linear layer(s) {sorted(unknown)} in a Llama layer; use some of {sorted(shapes)}")
        return self.layers * sum(rank * (a + b) for name, (a, b) in shapes.items() if not targets or name in targets)


# From each model's published config.json on the Hugging Face hub (HuggingFaceTB/SmolLM2-135M-Instruct,
# meta-llama/Llama-3.2-1B-Instruct, meta-llama/Llama-2-7b-hf).
ARCHITECTURES: dict[str, Architecture] = {
    "SmolLM2-135M": Architecture("SmolLM2-135M", 576, 30, 1536, 49152, 9, 3, tied=True),
    "Llama-3.2-1B": Architecture("Llama-3.2-1B", 2048, 16, 8192, 128256, 32, 8, tied=True),
    "Llama-2-7B": Architecture("Llama-2-7B", 4096, 32, 11008, 32000, 32, 32, tied=False),
}


def needs_reference(method: str) -> bool:
    """Whether ``method`` ("finetune" or a loss of :data:`palu_perta.losses.LOSSES`) holds a frozen reference."""
    from .losses import LOSSES

    if method == "finetune":
        return False
    if method not in LOSSES:
        raise ValueError(f"method={method!r} is not known; use 'finetune' or one of {sorted(LOSSES)}")
    return LOSSES[method].needs_reference


def training_memory(
    model: Architecture | int,
    method: str,
    lora_rank: int | None = None,
    dtype: str = "bf16",
    optimizer: str = "adamw",
    lora_targets: tuple[str, ...] = (),
) -> dict[str, int]:
    """Bytes a training run holds besides activations: ``weights``, ``gradients``, ``optimizer`` (states),
    ``reference`` (the frozen copy that NPO, UNDIAL, IdkDPO and PALU compare with) and their ``total``.

    ``model``: an :class:`Architecture`, or a parameter count (full training only). ``dtype``: the weights'
    dtype; gradients and AdamW's states take it too (PyTorch's AdamW keeps its states in the parameter's
    dtype; the GPU default here loads bf16 weights). With ``lora_rank`` only the adapters train: they,
    their gradients and their states are float32 (:data:`ADAPTER_BYTES`), the weights are frozen, and the
    reference is the model with its adapters disabled, so it costs nothing.
    """
    if dtype not in BYTES:
        raise ValueError(f"dtype={dtype!r}; use one of {sorted(BYTES)}")
    if optimizer not in OPTIMIZER_STATES:
        raise ValueError(f"optimizer={optimizer!r}; use one of {sorted(OPTIMIZER_STATES)}")
    reference = needs_reference(method)
    n = model.n_params() if isinstance(model, Architecture) else int(model)
    size, states = BYTES[dtype], OPTIMIZER_STATES[optimizer]
    if lora_rank is None:
        out = {"weights": n * size, "gradients": n * size, "optimizer": states * n * size,
               "reference": n * size if reference else 0}
    else:
        if not isinstance(model, Architecture):
            raise ValueError("LoRA's trainable count depends on the layer shapes: pass an Architecture, not a count")
        t = model.lora_params(lora_rank, lora_targets) * ADAPTER_BYTES
        out = {"weights": n * size + t, "gradients": t, "optimizer": states * t, "reference": 0}
    out["total"] = sum(out.values())
    return out


def logits_bytes(model: Architecture, batch: int = DOC_BATCH, length: int = DOC_LENGTH, dtype: str = "bf16") -> int:
    """The [batch, length, vocab] logits of one forward pass: the largest single activation of a small model."""
    return batch * length * model.vocab * BYTES[dtype]


def _gib(n: int) -> str:
    return f"{n / GIB:.2f}"


GROUPS = (("fine-tune; GA, GradDiff, SimNPO, ME+GD, PDU, IdkNLL", "finetune"),
          ("NPO, UNDIAL, IdkDPO, PALU (reference model)", "palu"))


def markdown() -> str:
    """docs/memory.md: the table and its assumptions, computed now."""
    lines = [
        "# Memory per method, with and without LoRA",
        "",
        "Generated by `python -m palu_perta.memory --write` from `palu_perta.memory.training_memory`; "
        "`tests/test_memory.py` fails when this file and the function disagree.",
        "",
        "GiB (2^30 bytes) that a training run holds on the accelerator besides activations, for one process:",
        "",
        "- **weights**: bf16, 2 bytes per parameter (the GPU default, `models.default_dtype`);",
        "- **gradients** and **AdamW** states (two per trainable parameter): in the trainable parameters' dtype, "
        "bf16 for full training (PyTorch's AdamW keeps its states in the parameter's dtype);",
        "- **reference**: the frozen bf16 copy of the model held by the methods that compare with it (NPO, UNDIAL, "
        "IdkDPO, PALU); the other methods and the fine-tune hold none;",
        f"- **LoRA r {DOC_RANK}** (TOFU's rank, alpha 32, adapters on every linear layer but the output layer, "
        "`palu_perta.lora`): the weights are frozen and only the adapters train, in float32 (peft's default over "
        "bf16 weights), with their gradients and AdamW states; the reference is the same model with its "
        "adapters disabled, so it costs nothing.",
        "",
        f"Not counted: activations, which grow with batch and length. The largest single one of a small model is "
        f"the logits of a forward pass: one per-device batch of the paper profile ({DOC_BATCH} x {DOC_LENGTH} "
        "tokens, bf16) holds logits of "
        + ", ".join(f"{_gib(logits_bytes(a))} GiB ({a.name})" for a in ARCHITECTURES.values())
        + ", and a reference forward adds as much. PyTorch's allocator, CUDA context (about 0.5 GiB) "
        "and fragmentation come on top; gradient checkpointing and smaller per-device batches trade time for "
        "activation memory. PerTA trains only its reinforcement fine-tune (the fine-tune row); its task vector "
        "and importance maps are float32, 4 bytes per parameter each.",
        "",
        "| model | parameters | LoRA trainable | methods | full: weights | gradients | AdamW | reference | "
        "**total** | LoRA: weights | gradients | AdamW | reference | **total** |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for arch in ARCHITECTURES.values():
        for label, method in GROUPS:
            full, lora = training_memory(arch, method), training_memory(arch, method, lora_rank=DOC_RANK)
            cells = [arch.name, f"{arch.n_params():,}", f"{arch.lora_params(DOC_RANK):,}", label]
            for part in (full, lora):
                cells += [_gib(part[k]) for k in ("weights", "gradients", "optimizer", "reference")]
                cells.append(f"**{_gib(part['total'])}**")
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Parameter counts are computed from each model's published configuration (hidden size, layers, "
        "intermediate size, vocabulary, attention and key-value heads, tied embeddings: "
        "`palu_perta.memory.ARCHITECTURES`), and checked against `transformers`' own count in the tests.",
        "",
        "Sharding (FSDP, DeepSpeed ZeRO-3) divides weights, gradients and optimizer states across processes; no "
        "such configuration is shipped, as none has been tested on a GPU here (`benchmarks/gpu_check.sh` is the "
        "check to run first).",
        "",
    ]
    return "\n".join(lines)


DOC = Path(__file__).resolve().parents[1] / "docs" / "memory.md"


def main(argv: list[str] | None = None) -> int:
    """Print the docs table, or write it to docs/memory.md with ``--write``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help=f"write {DOC.name} in the checkout's docs/")
    args = parser.parse_args(argv)
    if args.write:
        atomic_write_text(DOC, markdown())
        print(f"wrote {DOC}")
    else:
        print(markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
