"""What each method of a study costs to reach matched forgetting, timed in one run (issue 20: PerTA's claim
to be competitive with training-based unlearning "at a fraction of its cost").

- **Training-based methods** (the study's GradDiff, NPO, PALU): the unlearning run itself on the study's
  budget and configuration (seed 0), timed at the end of every epoch, with no evaluation, and read at the
  epoch where each seed's curve reached the retain model's forget ROUGE-L
  (``report.at_matched_forgetting``; between two epochs the time is interpolated).
- **TV and PerTA**: everything their one weight update needs, timed now: the reinforcement fine-tune that
  gives theta_ft, tau = theta_ft - theta_o, for PerTA the forget and the retain importances (gradient or
  Fisher) and the weights, then one update. Where their sweep sits along lambda does not change this.

Left out of both: loading models, and the evaluations (a training method evaluates to know when to stop,
TV and PerTA to calibrate lambda; the study evaluates every point of both alike). Every time comes from this
one process, in one run, on one thread count, beside whatever else the machine runs: read the ratios, not
the seconds.

The verdict is not this script's: it records the times, and ``palu_perta.cost.cost_table`` reads them at
the epochs where the study's committed seeds reached matched forgetting (so a new seed needs no new timing).

    python benchmarks/method_cost.py [--grid cpu] [--threads 1]

Prints a table and writes ``benchmarks/results/method_cost_<grid>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from transformers import TrainerCallback

RESULTS = Path(__file__).resolve().parent / "results"


class EpochClock(TrainerCallback):
    """Cumulative seconds from the start of training to the end of each epoch."""

    def __init__(self) -> None:
        self.start, self.ends = 0.0, []

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: D102
        self.start = time.perf_counter()

    def on_epoch_end(self, args, state, control, **kwargs):  # noqa: D102
        self.ends.append(time.perf_counter() - self.start)


def time_training(grid: Any, cell: Any, ctx: Any) -> list[float]:
    """The cumulative seconds at each epoch's end of ``cell``'s unlearning run, with no evaluation."""
    from palu_perta import study
    from palu_perta.models import load_model
    from palu_perta.unlearn import unlearn

    cfg = dataclasses.replace(study.unlearn_config(grid, cell, ctx.profile), eval_epochs=())
    model, tokenizer = load_model(str(ctx.target), seed=ctx.profile.seed)
    clock = EpochClock()
    with tempfile.TemporaryDirectory() as tmp:
        unlearn(model, tokenizer, ctx.bench, cfg, Path(tmp), progress=False, resume=False, callbacks=[clock], log=None)
    return [round(s, 2) for s in clock.ends]


def time_arithmetic(ctx: Any) -> dict[str, float]:
    """Seconds of each piece of the TV and PerTA pipelines, built now and thrown away."""
    from palu_perta import perta
    from palu_perta.importance import parameter_importance
    from palu_perta.models import load_model
    from palu_perta.task_vectors import TaskVector
    from palu_perta.training import finetune

    profile, bench = ctx.profile, ctx.bench
    cfg = perta.perta_config(profile)
    times: dict[str, float] = {}
    target, tokenizer = load_model(str(ctx.target), seed=profile.seed)
    finetuned, _ = load_model(str(ctx.target), seed=profile.seed)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        finetune(finetuned, tokenizer, bench.forget, cfg.reinforce, Path(tmp), seed=profile.seed, progress=False,
                 resume=False)
        times["reinforcement fine-tune"] = time.perf_counter() - start
    start = time.perf_counter()
    tau = TaskVector.from_models(target, finetuned)
    times["task vector"] = time.perf_counter() - start
    del finetuned
    for method in ("grad", "fisher"):
        found = {}
        for label, records in (("forget", bench.forget), ("retain", bench.retain)):
            model, _ = load_model(str(perta.importance_model(profile, ctx.target, cfg)), seed=profile.seed)
            batches = perta.importance_batches(tokenizer, records, profile.finetune.max_length, cfg.batch_size)
            start = time.perf_counter()
            found[label] = parameter_importance(model, batches, method, fraction=cfg.fraction, seed=profile.seed,
                                                progress=False)
            times[f"{method} importance, {label} set"] = time.perf_counter() - start
            del model
        start = time.perf_counter()
        weights = perta.perta_weights(found["forget"], found["retain"], p=cfg.p, eps=cfg.eps)
        times[f"{method} weights"] = time.perf_counter() - start
        start = time.perf_counter()
        perta.perta_unlearn(target, tau, weights, 1.0)
        times[f"{method} update"] = time.perf_counter() - start
    start = time.perf_counter()
    perta.perta_unlearn(target, tau, None, 1.0)
    times["tv update"] = time.perf_counter() - start
    return {k: round(v, 2) for k, v in times.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="default: benchmarks/results/method_cost_<grid>.json")
    args = parser.parse_args(argv)

    import torch
    from transformers.utils import logging as hf_logging

    from palu_perta import cost, report, store, study

    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    grid = study.get_grid(args.grid)
    started, load_start = time.perf_counter(), os.getloadavg()[0]
    print(f"grid {grid.name}, torch threads {torch.get_num_threads()}, load average {load_start:.1f}", flush=True)

    contexts: dict = {}
    epoch_ends: dict[str, list[float]] = {}
    training = [c for c in grid.cells() if c.kind == "training" and c.seed == 0]
    if not training or len({(c.setting, c.forget_split) for c in grid.cells()}) != 1:
        raise SystemExit(f"grid {grid.name!r} needs training-based cells on one setting and forget split")
    for cell in training:
        epoch_ends[cell.label] = time_training(grid, cell, study._context(grid, cell, contexts))
        print(f"  {cell.label:40s} epochs end at {epoch_ends[cell.label]} s", flush=True)
    pieces = time_arithmetic(next(iter(contexts.values())))
    print(f"  task arithmetic pieces: {pieces}", flush=True)
    record = {"grid": grid.name, "setting": [training[0].setting, training[0].forget_split],
              "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "threads": torch.get_num_threads(), "load_average_start": round(load_start, 2),
              "machine": {"cpu": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
                          "python": platform.python_version()},
              "wall_s": round(time.perf_counter() - started, 1), "epoch_ends": epoch_ends, "pieces": pieces}
    path = args.json or RESULTS / f"method_cost_{grid.name}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")

    print(f"\n{'pipeline':14s} {'seconds':>8s}  pieces")
    for method, parts in cost.pipelines(pieces).items():
        print(f"{method:14s} {sum(parts.values()):8.1f}  {' + '.join(parts)}")
    matched = report.at_matched_forgetting(report.points(store.load(store.results_root() / grid.name)))
    table = cost.cost_table(record, matched)
    print(f"\nat matched forgetting ('at a fraction of the cost': at most {cost.FRACTION:g} x):")
    for row in table.itertuples():
        ratio, low, high = (f"{v:.2f}" if np.isfinite(v) else "inf" for v in (row.ratio, row.low, row.high))
        print(f"  {row.method} ({row.method_seconds:.0f} s) / {row.baseline} ({row.baseline_seconds:.0f} s, "
              f"{row.seeds} seed{'s' if row.seeds != 1 else ''}): {ratio} [{low}, {high}] -> {row.verdict}")
    print(f"timings written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
