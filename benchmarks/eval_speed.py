"""How fast the TOFU metric suite runs on this machine.

Prints a table: teacher-forced scoring (TOFU items/s, an item = answer + paraphrase + 5
perturbed answers = 7 sequences) batched with shared prompts / batched whole sequences / one
sequence per forward, and greedy generation (new tokens/s) batched vs one question at a time, fp32
vs bf16 autocast, for the tiny model and SmolLM2-135M; then where one full evaluation's time goes
(scoring against generation, in GFLOP/s; generation at larger batches), and the wall time of the full suite
(:func:`palu_perta.evaluation.evaluate`) for SmolLM2 on the cpu profile's synthetic benchmark
``synthetic_benchmark(20, 10, "forget10", 2)`` (20 forget, 40 retain-eval, 20 holdout, 20 real-author
and 96 world-fact items).

    python benchmarks/eval_speed.py                 # everything (a few minutes)
    python benchmarks/eval_speed.py --models tiny --no-suite
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import torch

from palu_perta.config import get_profile
from palu_perta.data import synthetic_benchmark
from palu_perta.evaluation import (DEFAULT_BF16, GENERATED_SPLITS, _prompt_units, _score_requests, evaluate,
                                   generate_token_ids, score_sequences, validate_splits)
from palu_perta.models import load_model
from palu_perta.tokenization import encode_qa, pad_id, prompt_text


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _cpu_timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of this process, result): CPU time shows what other jobs cost us."""
    cpu = time.process_time()
    wall, out = _timed(fn)
    return wall, time.process_time() - cpu, out


def _candidates(tokenizer, records: list[dict]) -> list[dict]:
    return [encode_qa(tokenizer, r["question"], a)
            for r in records for a in [r["answer"], r["paraphrased_answer"], *r["perturbed_answer"]]]


ROW = "{:<8} {:<16} {:<26} {:>9.2f} {}"


def _row(rows: list, *row) -> None:
    rows.append(row)
    print(ROW.format(*row), flush=True)


def bench_model(name: str, records: list[dict], n_batched: int, n_single: int, batch_size: int,
                max_new_tokens: int) -> list[tuple[str, str, str, float, str]]:
    """Rows (model, task, mode, rate, unit) for one model, printed as they come."""
    model, tokenizer = load_model(name, device="cpu")
    pad = pad_id(tokenizer)
    rows = []
    for bf16 in (False, True):
        precision = "bf16" if bf16 else "fp32"
        runs = [("batched, shared prompts", n_batched, dict(batch_size=batch_size)),
                ("batched, whole sequences", n_batched, dict(batch_size=batch_size, share_prompts=False)),
                ("one sequence at a time", n_single, dict(batch_size=1, share_prompts=False))]
        score_sequences(model, _candidates(tokenizer, records[:1]), pad, bf16=bf16, progress=False)  # warm-up
        for mode, n, kwargs in runs:
            examples = _candidates(tokenizer, records[:n])
            seconds, _ = _timed(lambda: score_sequences(model, examples, pad, bf16=bf16, progress=False, **kwargs))
            _row(rows, name, f"scoring {precision}", mode, n / seconds, "items/s")
        for mode, n, bs in (("batched", n_batched, batch_size), ("one question at a time", n_single, 1)):
            questions = [r["question"] for r in records[:n]]
            seconds, ids = _timed(lambda: generate_token_ids(model, tokenizer, questions, max_new_tokens=max_new_tokens,
                                                             batch_size=bs, bf16=bf16, progress=False))
            _row(rows, name, f"generation {precision}", mode, sum(map(len, ids)) / seconds, "new tokens/s")
    return rows


def suite_breakdown(model, tokenizer, bench, batch_size: int, max_new_tokens: int, bf16: bool = DEFAULT_BF16) -> None:
    """Where one full evaluation's time goes: its scoring and its generation, each timed alone, with the
    tokens each puts through the model and the GFLOP/s that makes (2 x parameters per token, padding and
    attention left out); then generation again at twice and four times the batch (same greedy answers?)."""
    data = validate_splits(bench.splits())
    seqs, _ = _score_requests(tokenizer, data)
    # with shared prompts each distinct prompt runs once, then each answer on top of its cache
    units = [unit for batch in _prompt_units(seqs, batch_size) for unit in batch]
    scored = sum(len(prompt) + sum(len(seqs[i]["input_ids"]) - len(prompt) for i in idx) for prompt, idx in units)
    questions = [data[name][i]["question"] for name in GENERATED_SPLITS for i in range(len(data[name]))]
    prompts = sum(len(tokenizer(prompt_text(tokenizer, q), add_special_tokens=False)["input_ids"]) for q in questions)
    params = sum(p.numel() for p in model.parameters())
    seconds, _ = _timed(lambda: score_sequences(model, seqs, pad_id(tokenizer), batch_size=batch_size, bf16=bf16,
                                                 progress=False))
    print(f"breakdown, bf16={bf16}: scoring {len(seqs)} sequences ({scored} tokens through the model): {seconds:.1f} s, "
          f"{2 * params * scored / seconds / 1e9:.1f} GFLOP/s", flush=True)
    first = None
    for size in (batch_size, 2 * batch_size, 4 * batch_size):
        seconds, ids = _timed(lambda: generate_token_ids(model, tokenizer, questions, max_new_tokens=max_new_tokens,
                                                         batch_size=size, bf16=bf16, progress=False))
        new = sum(map(len, ids))
        same = "" if first is None else f", {sum(a == b for a, b in zip(ids, first))} of {len(ids)} answers as at {batch_size}"
        first = first or ids
        # the prompts go through the model once (the prefill), then each new token
        print(f"breakdown, bf16={bf16}: generating {len(questions)} answers at batch {size} ({prompts} prompt + {new} "
              f"new tokens): {seconds:.1f} s, {new / seconds:.0f} new tokens/s, "
              f"{2 * params * (prompts + new) / seconds / 1e9:.1f} GFLOP/s{same}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=["tiny", "smollm2"], help="none: only the full suite")
    parser.add_argument("--items", type=int, default=16, help="items for the batched measurements")
    parser.add_argument("--single-items", type=int, default=4, help="items for the one-at-a-time measurements")
    parser.add_argument("--no-suite", action="store_true", help="skip the full-suite wall time")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    profile = get_profile("cpu")
    bench = synthetic_benchmark(profile.n_authors, profile.qa_per_author, profile.forget_split,
                                profile.n_holdout_authors)
    records = bench.forget + bench.retain_eval
    rows = []
    for name in args.models:
        rows += bench_model(name, records, args.items, args.single_items, profile.eval_batch_size,
                            profile.max_new_tokens)

    print(f"\nmachine: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f} (other processes slow every number down)")
    print(f"{'model':<8} {'task':<16} {'mode':<26} {'rate':>9}")
    for row in rows:
        print(ROW.format(*row))

    if not args.no_suite:
        model, tokenizer = load_model("smollm2", device="cpu")
        generate_token_ids(model, tokenizer, [records[0]["question"]], max_new_tokens=2, progress=False)  # warm-up
        suite_breakdown(model, tokenizer, bench, profile.eval_batch_size, profile.max_new_tokens)
        for bf16 in sorted({DEFAULT_BF16, True}):
            seconds, cpu, result = _cpu_timed(lambda: evaluate(
                model, tokenizer, bench, max_new_tokens=profile.max_new_tokens, batch_size=profile.eval_batch_size,
                bf16=bf16, progress=False))
            print(f"full suite, smollm2, cpu profile ({bench.summary()}), bf16={bf16}"
                  f"{' (default)' if bf16 == DEFAULT_BF16 else ''}: {seconds:.1f} s wall, {cpu:.1f} s CPU "
                  f"(model_utility {result['model_utility']:.4f}, forget_Q_A_ROUGE {result['forget_Q_A_ROUGE']:.4f}); "
                  f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
