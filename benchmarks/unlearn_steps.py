"""Per-step cost of every unlearning loss on identical batches.

Each method runs in its own subprocess (so its peak memory is its own) on the same forget /
retain / refusal batches, through :class:`palu_perta.unlearn.UnlearningTrainer`'s
``compute_loss`` (reference forward included where the loss needs one), backward and an AdamW
step, with the autocast setting of the training budget. Prints a table: seconds per step (median
over the timed steps after a warm-up), peak resident memory, and both as ratios to GradDiff;
writes the rows as JSON.

    python benchmarks/unlearn_steps.py                              # SmolLM2, cpu budget (minutes)
    python benchmarks/unlearn_steps.py --model tiny --steps 3       # seconds
    python benchmarks/unlearn_steps.py --methods graddiff npo palu
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from palu_perta.config import PALU_HYPER
from palu_perta.data import synthetic_benchmark
from palu_perta.losses import LOSSES
from palu_perta.models import load_model
from palu_perta.tokenization import pad_id
from palu_perta.unlearn import PairedCollator, PairedDataset, UnlearnConfig, UnlearningTrainer, _examples
from palu_perta.training import training_arguments

HYPER = {"palu": PALU_HYPER}  # notebook 06's PALU setting: the authors' released configuration


def _rss_mib() -> float:
    """Peak resident memory of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fixed_batches(model_name: str, method: str, batch_size: int, n: int, bf16: bool = False) -> tuple:
    """The model, its unlearning config and ``n`` collated batches of the cpu profile's synthetic data (the
    same batches for every setting a benchmark compares): ``(model, tokenizer, cfg, dataset, collate,
    batches)``, the dataset and its collator for constructing the Trainer."""
    torch.manual_seed(0)
    model, tokenizer = load_model(model_name, device="cpu", dtype=torch.float32)
    bench = synthetic_benchmark(20, 10, "forget10", 2, seed=0)
    cfg = UnlearnConfig(method=method, hyper=HYPER.get(method, {}), epochs=1, learning_rate=1e-5,
                        batch_size=batch_size, per_device_batch_size=batch_size, bf16=bf16, max_length=160)
    forget, retain, idk = _examples(tokenizer, bench, cfg)
    dataset = PairedDataset(forget, retain, idk, seed=0, process=0)
    collate = PairedCollator(pad_id(tokenizer))
    batches = [collate([dataset[(s * batch_size + j) % len(dataset)] for j in range(batch_size)]) for s in range(n)]
    return model, tokenizer, cfg, dataset, collate, batches


def _measure(method: str, model_name: str, batch_size: int, steps: int, warmup: int, bf16: bool,
             threads: int | None, queue: mp.Queue) -> None:
    """Run in a fresh process: time ``steps`` optimiser steps of ``method``; put a result row on ``queue``."""
    if threads:
        torch.set_num_threads(threads)
    model, tokenizer, cfg, dataset, collate, batches = fixed_batches(model_name, method, batch_size, steps + warmup, bf16)
    loaded = _rss_mib()
    with tempfile.TemporaryDirectory() as tmp:
        args = training_arguments(cfg.optimiser(), Path(tmp), 0, progress=False, save_checkpoints=False)
        trainer = UnlearningTrainer(model=model, args=args, train_dataset=dataset, data_collator=collate,
                                    processing_class=tokenizer, unlearn_config=cfg)
        model.train()
        optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        times = []
        for i, batch in enumerate(batches):
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = trainer.compute_loss(model, batch)
            loss.backward()
            optimiser.step()
            optimiser.zero_grad(set_to_none=True)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    tokens = sum(int(part["attention_mask"].sum()) for b in batches[warmup:] for part in b.values()) / len(times)
    queue.put({"method": method, "step_s": statistics.median(times), "tokens_per_step": tokens,
               "peak_rss_mib": _rss_mib(), "loaded_rss_mib": loaded,
               "reference_model": LOSSES[method].needs_reference})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2", help="tiny | smollm2 | a path")
    parser.add_argument("--methods", nargs="+", default=["graddiff", *[m for m in LOSSES if m != "graddiff"]])
    parser.add_argument("--batch-size", type=int, default=None, help="default: the cpu profile's unlearning batch (8)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per method")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/unlearn_steps.json"))
    args = parser.parse_args()
    if "graddiff" not in args.methods:
        args.methods.insert(0, "graddiff")
    batch_size = args.batch_size or 8
    bf16 = not args.fp32
    context = mp.get_context("spawn")
    rows = []
    print(f"model {args.model}, batch {batch_size} forget (+ {batch_size} retain where used), bf16 autocast {bf16}, "
          f"{args.steps} timed steps after {args.warmup} warm-up, torch threads {args.threads or torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    for method in args.methods:
        queue = context.Queue()
        proc = context.Process(target=_measure, args=(method, args.model, batch_size, args.steps, args.warmup, bf16,
                                                      args.threads, queue))
        proc.start()
        row = queue.get()
        proc.join()
        rows.append(row)
        print(f"  {method:9s} {row['step_s']:.3f} s/step", flush=True)
    base = next(r for r in rows if r["method"] == "graddiff")
    for r in rows:
        r["step_vs_graddiff"] = r["step_s"] / base["step_s"]
        r["peak_vs_graddiff"] = r["peak_rss_mib"] / base["peak_rss_mib"]
        r["extra_mib"] = r["peak_rss_mib"] - r["loaded_rss_mib"]
    print(f"\n{'method':<9} {'s/step':>7} {'x GradDiff':>10} {'tokens/step':>11} {'peak RSS MiB':>12} "
          f"{'x GradDiff':>10} {'above loaded model':>18} reference")
    for r in rows:
        print(f"{r['method']:<9} {r['step_s']:>7.3f} {r['step_vs_graddiff']:>10.2f} {r['tokens_per_step']:>11.0f} "
              f"{r['peak_rss_mib']:>12.0f} {r['peak_vs_graddiff']:>10.2f} {r['extra_mib']:>18.0f} "
              f"{'yes' if r['reference_model'] else 'no'}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"model": args.model, "batch_size": batch_size, "bf16": bf16, "rows": rows},
                                    indent=1))
    print(f"\nrows written to {args.json}")


if __name__ == "__main__":
    main()
