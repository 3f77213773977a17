"""Two CPU-path choices, measured: thread layout and length-grouped batches. ``python benchmarks/threads_padding.py``

Prints two tables and writes ``benchmarks/results/threads_padding.json``:

1. **Threads.** The same work (SmolLM2 fine-tuning steps in bf16 autocast on the cpu profile's batches, and
   teacher-forced scoring of TOFU items in fp32) done by one process with 2 torch threads, one process with
   1 thread, and two processes with 1 thread each at the same time (as two notebooks or two cache entries
   built side by side would be). Throughput is work done per wall second, so 2 x 1 thread wins only if
   two half-machines do more than one whole one.
2. **Padding.** The cpu fine-tune's answers (the 200 author answers; the 100 replay answers are left out,
   they need the base model's generations) batched 8 at a time as the Trainer's random sampler does and
   grouped by length as ``TrainingArguments(group_by_length=True)`` does (random mega-batches of
   min(N / 32, 50) batches, each sorted by length): the share of padded positions per epoch,
   and the step time on 12 batches of each kind from the middle of the epoch, timed in turn.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import random
import statistics
import time
from pathlib import Path

import torch
from transformers.trainer_pt_utils import get_length_grouped_indices

from palu_perta import pipeline
from palu_perta.config import get_profile
from palu_perta.evaluation import score_sequences
from palu_perta.models import load_model
from palu_perta.tokenization import Collator, encode_qa, encode_records, pad_id

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 8


PROFILE = get_profile("cpu")


def _train_batches(tokenizer, order: str, n: int | None = None) -> list[dict]:
    """The first ``n`` (default: all) batches of 8 of an epoch of the cpu fine-tune's answers: in the random
    sampler's order, or grouped by length."""
    examples = encode_records(tokenizer, pipeline.benchmark(PROFILE).full, PROFILE.finetune.max_length)
    if order == "grouped":  # the Trainer's own grouping: random mega-batches, each sorted by length
        lengths = [len(e["input_ids"]) for e in examples]
        index = get_length_grouped_indices(lengths, BATCH, generator=torch.Generator().manual_seed(0))
    else:
        index = list(range(len(examples)))
        random.Random(0).shuffle(index)
    collate = Collator(pad_id(tokenizer), "right", with_classes=False)
    steps = len(examples) // BATCH if n is None else n
    return [collate([{k: examples[i][k] for k in ("input_ids", "labels")} for i in index[j:j + BATCH]])
            for j in range(0, BATCH * steps, BATCH)]


def _train_steps(model, batches: list[dict], optimizer: torch.optim.Optimizer) -> list[float]:
    """Seconds of each optimiser step (forward in bf16 autocast, backward, AdamW) on ``batches``."""
    times = []
    for batch in batches:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return times


def _work(kind: str, threads: int, start_at: float | None, queue) -> None:
    """One worker: ``kind`` ("train": 4 steps after a warm-up; "score": 24 TOFU items) on ``threads`` threads."""
    torch.set_num_threads(threads)
    model, tokenizer = load_model("smollm2", seed=0)
    if kind == "train":
        model.train()
        batches = _train_batches(tokenizer, "random", 5)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
        _train_steps(model, batches[:1], optimizer)  # warm-up (and AdamW's state)
        work = lambda: _train_steps(model, batches[1:], optimizer)  # noqa: E731
    else:
        model.eval()
        bench = pipeline.benchmark(PROFILE)
        seqs = [encode_qa(tokenizer, r["question"], a) for r in bench.forget + bench.retain_eval
                for a in [r["answer"], r["paraphrased_answer"], *r["perturbed_answer"]]][:7 * 24]
        score_sequences(model, seqs[:7], pad_id(tokenizer), batch_size=32, progress=False)  # warm-up
        work = lambda: score_sequences(model, seqs, pad_id(tokenizer), batch_size=32, progress=False)  # noqa: E731
    if start_at is not None:  # start together with the other worker
        time.sleep(max(0.0, start_at - time.time()))
    begin = time.perf_counter()
    work()
    queue.put(time.perf_counter() - begin)


def _layout(kind: str, processes: int, threads: int) -> float:
    """Seconds of wall time per unit of work (one worker's share) for ``processes`` x ``threads``."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    start_at = time.time() + 60 if processes > 1 else None  # time for both to load the model
    workers = [ctx.Process(target=_work, args=(kind, threads, start_at, queue)) for _ in range(processes)]
    for w in workers:
        w.start()
    seconds = [queue.get(timeout=900) for _ in workers]  # a crashed worker ends the run instead of hanging it
    for w in workers:
        w.join()
    return max(seconds) / processes  # both finish their unit in max(seconds): per unit, divide by the count


def padding_share(lengths_batches: list[list[int]]) -> float:
    padded = sum(len(b) * max(b) for b in lengths_batches)
    return 1 - sum(map(sum, lengths_batches)) / padded


def main() -> dict:
    results: dict = {"threads": [], "padding": {}}
    print("| work | 1 process x 2 threads | 1 process x 1 thread | 2 processes x 1 thread |", flush=True)
    print("|---|---|---|---|", flush=True)
    for kind, unit in (("train", "4 fine-tuning steps"), ("score", "24 TOFU items scored")):
        row = {"work": unit, "1x2": _layout(kind, 1, 2), "1x1": _layout(kind, 1, 1), "2x1": _layout(kind, 2, 1)}
        results["threads"].append(row)
        print(f"| {unit} | {row['1x2']:.1f} s | {row['1x1']:.1f} s | {row['2x1']:.1f} s per unit |", flush=True)

    model, tokenizer = load_model("smollm2", seed=0)
    model.train()
    batches = {order: _train_batches(tokenizer, order) for order in ("random", "grouped")}
    steps = len(batches["random"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    _train_steps(model, [batches["random"][0], batches["grouped"][0]], optimizer)  # warm-up (and AdamW's state)
    # 12 steps of each from the middle of the epoch (grouped: mid-length batches), taken in turn, so
    # that anything else slowing the machine down hits both kinds alike
    middle = slice(steps // 2 - 6, steps // 2 + 6)
    times: dict[str, list[float]] = {"random": [], "grouped": []}
    for pair in zip(batches["random"][middle], batches["grouped"][middle]):
        for order, batch in zip(("random", "grouped"), pair):
            times[order] += _train_steps(model, [batch], optimizer)
    for order in ("random", "grouped"):
        timed = batches[order][middle]
        real = sum(int(b["attention_mask"].sum()) for b in timed)
        row = {"epoch_padding_share": padding_share([b["attention_mask"].sum(dim=1).tolist() for b in batches[order]]),
               "timed_padding_share": padding_share([b["attention_mask"].sum(dim=1).tolist() for b in timed]),
               "step_s": statistics.median(times[order]), "real_tokens_per_s": real / sum(times[order])}
        results["padding"][order] = row
        print(f"{order:>8}: {row['epoch_padding_share']:.1%} of an epoch's positions are padding; 12 timed steps "
              f"({row['timed_padding_share']:.1%} padding): median {row['step_s']:.2f} s/step, "
              f"{row['real_tokens_per_s']:.0f} real tokens/s", flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "threads_padding.json").write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
