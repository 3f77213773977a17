"""End-to-end cost of the tutorial: every run of the notebook runner in place
(``make reproduce`` / ``python -m palu_perta.notebooks``) appends what it cost to
``benchmarks/results/notebook_runs.jsonl``; this prints them as a table.

    python benchmarks/end_to_end.py [--profile cpu]

A warm-cache rerun builds no entry; a run from nothing builds every fine-tuned model, unlearned model
and evaluation (dozens of models and about a hundred evaluations on the cpu profile). Only runs on the same
machine, alone on it, compare.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RUNS = Path(__file__).resolve().parent / "results" / "notebook_runs.jsonl"


def load_runs(path: Path = RUNS, profile: str | None = None) -> list[dict]:
    if not path.is_file():
        return []
    runs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in runs if profile is None or r["profile"] == profile]


def table(runs: list[dict]) -> str:
    lines = ["| finished | profile | notebooks | cache entries built | total |", "|---|---|---|---|---|"]
    for run in runs:
        built = run["cache_entries_built"]
        kind = "built what was missing" if built else "warm cache"
        entries = ", ".join(f"{n} {k}" for k, n in sorted(built.items())) or "none"
        names = ", ".join(f"{name.split('/')[-1][:2]}{'s' if name.startswith('solutions') else ''} {s:.0f} s"
                          for name, s in run["notebooks_s"].items())
        lines.append(f"| {run['finished']} | {run['profile']} ({kind}) | {names} | {entries} | "
                     f"**{run['total_s'] / 60:.1f} min** |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", help="only this profile's runs")
    args = parser.parse_args()
    runs = load_runs(profile=args.profile)
    print(table(runs) if runs else f"no runs recorded yet in {RUNS}: run `make reproduce`")


if __name__ == "__main__":
    main()
