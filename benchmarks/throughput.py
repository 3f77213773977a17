"""The machine's ceilings and how close fine-tuning gets to them: ``python benchmarks/throughput.py``.

Prints one table and writes ``benchmarks/results/throughput.json`` (and ``.txt``):

- matrix-product GFLOP/s in fp32 and bf16 on a large square product (``n x n @ n x n``, 2 n^3 FLOPs),
  the median of several repeats after a warm-up: the ceiling everything else is compared with;
- fine-tuning throughput of the tiny model and SmolLM2: one optimiser step (forward, backward, AdamW)
  on the cpu profile's real batches (8 answers, right-padded), fp32 and bf16 autocast. Tokens/s counts
  the non-padding tokens; MFU = 6 x parameters x tokens/s over the measured bf16 ceiling (the
  6 N T rule: 2 N T for the forward pass, 4 N T for the backward);
- PerTA's importance pass on SmolLM2 in examples/s: the mean gradient ("grad") and the diagonal Fisher
  with per-example gradients from ``torch.func.vmap`` and from a loop.

Each measurement runs in this one process, one after another, so the ratios compare like with like.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from palu_perta import pipeline
from palu_perta.config import get_profile
from palu_perta.importance import parameter_importance
from palu_perta.models import load_model
from palu_perta.perta import importance_batches
from palu_perta.tokenization import Collator, encode_records, pad_id

RESULTS = Path(__file__).resolve().parent / "results"


def matmul_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Median GFLOP/s of an n x n matrix product in ``dtype``."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up (thread pool, kernels)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def train_step_rate(model_name: str, bf16: bool, records: list[dict], steps: int, batch_size: int = 8,
                    max_length: int = 160) -> dict[str, float]:
    """Median seconds per optimiser step and non-padding tokens/s on ``records``' first batches."""
    model, tokenizer = load_model(model_name, seed=0)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    examples = encode_records(tokenizer, records, max_length)
    collate = Collator(pad_id(tokenizer), "right", with_classes=False)
    batches = [collate([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples[i:i + batch_size]])
               for i in range(0, batch_size * (steps + 1), batch_size)]
    times, tokens = [], []
    for i, batch in enumerate(batches):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i > 0:  # the first step warms up
            times.append(time.perf_counter() - start)
            tokens.append(int(batch["attention_mask"].sum()))
    seconds = statistics.median(times)
    n_params = sum(p.numel() for p in model.parameters())
    return {"s_per_step": seconds, "tokens_per_s": statistics.mean(tokens) / seconds, "parameters": n_params,
            "padded_tokens_per_step": float(batches[1]["attention_mask"].numel()),
            "tokens_per_step": float(statistics.mean(tokens))}


def importance_rate(records: list[dict], method: str, per_example: str, n: int = 16) -> float:
    """Examples per second of one importance pass over ``n`` forget examples on SmolLM2."""
    model, tokenizer = load_model("smollm2", seed=0)
    batches = importance_batches(tokenizer, records[:n], 160, 8)
    start = time.perf_counter()
    parameter_importance(model, batches, method, progress=False, per_example=per_example)
    return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4, help="timed optimiser steps per configuration")
    parser.add_argument("--skip-importance", action="store_true")
    args = parser.parse_args(argv)
    profile = get_profile("cpu")
    bench = pipeline.benchmark(profile)
    records = bench.full
    out: dict = {"threads": torch.get_num_threads(), "torch": torch.__version__}
    out["matmul_gflops"] = {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16)}
    ceiling = out["matmul_gflops"]["bf16"]
    rows = []
    for model_name in ("tiny", "smollm2"):
        for bf16 in (False, True):
            rate = train_step_rate(model_name, bf16, records, args.steps)
            rate["mfu_vs_bf16_ceiling"] = 6 * rate["parameters"] * rate["tokens_per_s"] / (ceiling * 1e9)
            rate["mfu_vs_fp32_ceiling"] = 6 * rate["parameters"] * rate["tokens_per_s"] / (out["matmul_gflops"]["fp32"] * 1e9)
            rows.append({"model": model_name, "precision": "bf16 autocast" if bf16 else "fp32", **rate})
            print(rows[-1], flush=True)
    out["finetune"] = rows
    if not args.skip_importance:
        out["importance_examples_per_s"] = {
            "grad": importance_rate(bench.forget, "grad", "auto"),
            "fisher (vmap)": importance_rate(bench.forget, "fisher", "vmap"),
            "fisher (loop)": importance_rate(bench.forget, "fisher", "loop"),
        }
    lines = [f"threads {out['threads']}, torch {out['torch']}",
             f"matmul 2048^3: fp32 {out['matmul_gflops']['fp32']:.1f} GFLOP/s, bf16 {ceiling:.1f} GFLOP/s", "",
             "| model | precision | params | s/step | tokens/step | tokens/s | MFU (bf16 ceiling) | MFU (fp32 ceiling) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['precision']} | {r['parameters'] / 1e6:.1f} M | {r['s_per_step']:.3f} | "
                     f"{r['tokens_per_step']:.0f} of {r['padded_tokens_per_step']:.0f} | {r['tokens_per_s']:.0f} | "
                     f"{100 * r['mfu_vs_bf16_ceiling']:.1f} % | {100 * r['mfu_vs_fp32_ceiling']:.1f} % |")
    if "importance_examples_per_s" in out:
        lines += ["", "| importance pass (SmolLM2, 16 forget examples) | examples/s |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in out["importance_examples_per_s"].items()]
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "throughput.json").write_text(json.dumps(out, indent=1))
    (RESULTS / "throughput.txt").write_text(table + "\n")
    return out


if __name__ == "__main__":
    main()
