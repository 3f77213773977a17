"""What a study costs from nothing (an empty cache, no results): the wall time each finished cell recorded in
its results file, the estimate of each cell still to run (from the finished cells of the same method,
per evaluated point: ``study.estimate_seconds``), and the two reference fine-tunes per data setting, which
the finished reference cells found cached and so never timed (their ``train_runtime`` when the cached model
has one, else the profile's default cost scaled by the setting's text to fine-tune on, ``study.work_scale``;
a reference cell still to run has its fine-tune in its own estimate).

    python benchmarks/study_cost.py [--grid cpu]

Prints a table; nothing is asserted. Cells that ran on another day, thread count or beside other work are
summed as they are: the total is what this machine took, not a controlled measurement.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from typing import Any

from palu_perta import study
from palu_perta.store import cell_header


def _finetune_seconds(grid: study.Grid) -> list[dict[str, Any]]:
    from palu_perta import pipeline
    from palu_perta.config import get_profile
    from palu_perta.training import load_log_history, reference_cached, reference_model

    rows = []
    default = study.COSTS.get(grid.profile, study.COSTS["cpu"])["finetune"]
    default_bench = pipeline.benchmark(get_profile(grid.profile))
    for setting in grid.settings:
        for split in grid.splits:
            profile = grid.profile_for(study.Cell(setting, split, "target"))
            bench = pipeline.benchmark(profile)
            scale = study.work_scale(bench, default_bench)["train"]
            for role in ("target", "retain"):
                seconds = default * scale
                source = f"default estimate (study.COSTS) x {scale:.2f}, the setting's text to fine-tune on"
                if reference_cached(profile, bench, role):
                    runtime = [h["train_runtime"] for h in load_log_history(reference_model(profile, bench, role))
                               if "train_runtime" in h]
                    if runtime:
                        seconds, source = runtime[-1], "train_runtime of the cached model (its last run)"
                rows.append({"what": f"fine-tune {role} ({setting}, {split})", "seconds": seconds, "source": source,
                             "cell": study.Cell(setting, split, role).id})
    return rows


def cost_table(grid: study.Grid) -> tuple[str, float]:
    """The table (markdown) and the total seconds from nothing."""
    plan = study.plan(grid)
    folder = study.study_dir(grid)
    lines = ["| what | status | points | seconds | threads | source |", "|---|---|---|---:|---:|---|"]
    by_method: dict[str, float] = defaultdict(float)
    total = 0.0
    todo = {row["cell"].id for row in plan.rows if row["status"] != "done"}
    for row in _finetune_seconds(grid):
        if row["cell"] in todo:  # a reference cell still to run: its estimate includes its fine-tune
            continue
        lines.append(f"| {row['what']} | | | {row['seconds']:.0f} | | {row['source']} |")
        total += row["seconds"]
    for row in plan.rows:
        cell = row["cell"]
        header = cell_header(folder / f"{cell.id}.jsonl") if row["status"] == "done" else None
        if header and header.get("wall_time_s"):
            seconds, threads, source = header["wall_time_s"], header.get("machine", {}).get("threads", ""), "measured"
        else:
            seconds, threads = row["estimate_s"], ""
            source = "estimated (study.estimate_seconds: finished cells of its method, else COSTS)"
        lines.append(f"| {cell.id} | {row['status']} | {row['points']} | {seconds:.0f} | {threads} | {source} |")
        by_method[cell.method] += seconds
        total += seconds
    lines.append(f"| **total from nothing** | | | **{total:.0f}** ({total / 3600:.1f} h) | | |")
    lines.append("")
    lines.append("per method: " + ", ".join(f"{m} {s / 3600:.2f} h" for m, s in by_method.items()))
    return "\n".join(lines), total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", default="cpu")
    args = parser.parse_args()
    text, _ = cost_table(study.get_grid(args.grid))
    print(text)


if __name__ == "__main__":
    main()
