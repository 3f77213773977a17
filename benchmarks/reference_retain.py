"""Step time with and without the frozen reference model's forward on the retain batch (issue 23).

Until issue 23 :class:`palu_perta.unlearn.UnlearningTrainer` ran the reference model on every batch it
fed a loss, the retain batch included, although no loss reads those logits (``Method.reference_on_retain``
is False for all of them). This times both on the same batches in one process: "before" sets
``reference_on_retain=True`` on the method (the old behaviour: reference on the forget, retain and, for
IdkDPO, refusal batches), "after" is the method as registered. The two alternate step by step (which one
goes first alternates too), so load from other processes falls on both alike; the table reports medians
over the timed steps and their ratio. A step is ``compute_loss``, backward and an AdamW step, in fp32.

    python benchmarks/reference_retain.py --model tiny                 # seconds
    python benchmarks/reference_retain.py --model smollm2 --steps 3    # a few minutes on 2 loaded cores
    python benchmarks/reference_retain.py --methods npo palu idk_dpo
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from palu_perta.training import training_arguments
from palu_perta.unlearn import UnlearningTrainer
from unlearn_steps import fixed_batches  # benchmarks/: the same model, config and batches as its step timings



def measure(model_name: str, method: str, batch_size: int, steps: int, warmup: int) -> dict:
    """Median step time of ``method`` with the reference on the retain batch ("before") and without ("after")."""
    model, tokenizer, cfg, dataset, collate, batches = fixed_batches(model_name, method, batch_size, steps + warmup)
    times: dict[str, list[float]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        args = training_arguments(cfg.optimiser(), Path(tmp), 0, progress=False, save_checkpoints=False)
        trainer = UnlearningTrainer(model=model, args=args, train_dataset=dataset, data_collator=collate,
                                    processing_class=tokenizer, unlearn_config=cfg)
        methods = {"before": dataclasses.replace(trainer.method, reference_on_retain=True),
                   "after": trainer.method}
        model.train()
        optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        for i, batch in enumerate(batches):
            order = ("before", "after") if i % 2 == 0 else ("after", "before")
            for mode in order:
                trainer.method = methods[mode]
                start = time.perf_counter()
                loss = trainer.compute_loss(model, batch)
                loss.backward()
                optimiser.step()
                optimiser.zero_grad(set_to_none=True)
                if i >= warmup:
                    times[mode].append(time.perf_counter() - start)
    before, after = statistics.median(times["before"]), statistics.median(times["after"])
    tokens = {part: int(sum(int(b[part]["attention_mask"].sum()) for b in batches[warmup:]) / steps)
              for part in batches[0]}
    return {"model": model_name, "method": method, "batch_size": batch_size, "steps": steps,
            "before_s": before, "after_s": after, "ratio": after / before, "saving": 1 - after / before,
            "tokens_per_step": tokens, "before_all_s": times["before"], "after_all_s": times["after"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", nargs="+", default=["tiny", "smollm2"], help="tiny | smollm2 | a path")
    parser.add_argument("--methods", nargs="+", default=["npo"])
    parser.add_argument("--batch-size", type=int, default=8, help="the cpu profile's per-device unlearning batch")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/reference_retain.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"batch {args.batch_size} forget + {args.batch_size} retain, fp32, {args.steps} timed steps per setting "
          f"after {args.warmup} warm-up, the two settings alternating; torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f} at the start", flush=True)
    rows = []
    for model_name in args.model:
        for method in args.methods:
            rows.append(measure(model_name, method, args.batch_size, args.steps, args.warmup))
            r = rows[-1]
            print(f"  {model_name} {method}: before {r['before_all_s']}, after {r['after_all_s']}", flush=True)
    print(f"\n{'model':<8} {'method':<8} {'tokens f+r/step':>15} {'before s/step':>13} {'after s/step':>12} "
          f"{'after/before':>12} {'saving':>7}")
    for r in rows:
        tokens = f"{r['tokens_per_step']['forget']}+{r['tokens_per_step']['retain']}"
        print(f"{r['model']:<8} {r['method']:<8} {tokens:>15} {r['before_s']:>13.3f} {r['after_s']:>12.3f} "
              f"{r['ratio']:>12.3f} {r['saving']:>7.1%}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=1))
    print(f"rows written to {args.json}")


if __name__ == "__main__":
    main()
