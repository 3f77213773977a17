"""How fast the TOFU metric suite runs on this machine.

Prints a table: teacher-forced scoring (TOFU items/s, an item = answer + paraphrase + 5
perturbed answers = 7 sequences) batched with shared prompts / batched whole sequences / one
sequence per forward, and greedy generation (new tokens/s) batched vs one question at a time, fp32
vs bf16 autocast, for the tiny model and SmolLM2-135M; then the wall time of the full suite
(:func:`palu_perta.evaluation.evaluate`) for SmolLM2 on the cpu profile's synthetic benchmark
``synthetic_benchmark(20, 10, "forget10", 2)`` (20 forget, 180 retain, 20 holdout, 20 + 30
general-knowledge items).

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
from palu_perta.evaluation import DEFAULT_BF16, evaluate, generate_token_ids, score_sequences
from palu_perta.models import load_model
from palu_perta.tokenization import encode_qa, pad_id


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
