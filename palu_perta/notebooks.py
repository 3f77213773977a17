"""Run the tutorial notebooks headless with papermill: ``python -m palu_perta.notebooks``.

Each notebook is executed into a temporary copy beside it and replaces the original only
if every cell succeeded, so a failing run never leaves red error cells in the only copy.
The profile reaches the kernel through ``PALU_PERTA_PROFILE`` (the notebooks' parameters
cell reads it), so the stored notebooks carry no injected-parameters cell.

    python -m palu_perta.notebooks --profile cpu                # all, in order
    python -m palu_perta.notebooks --profile cpu 01_data 02_finetune
    python -m palu_perta.notebooks --profile smoke --out /tmp/x # keep the originals
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

from .artifacts import CONFIG_FILE
from .config import PROFILES, artifacts_root, repo_root


def notebook_dir() -> Path:
    """The checkout's ``notebooks/`` folder."""
    root = repo_root()
    if root is None:
        raise FileNotFoundError("the notebooks live in the git checkout: run this from an editable install")
    return root / "notebooks"


def list_notebooks(names: list[str] | None = None, folder: Path | None = None) -> list[Path]:
    """The numbered notebooks (``NN_*.ipynb``) in order, then the worked solutions (``solutions/NN_*``);
    ``names`` filters by stem or prefix."""
    folder = folder or notebook_dir()

    def numbered(directory: Path) -> list[Path]:  # not the executed copy a failed run leaves beside one
        return sorted(p for p in directory.glob("[0-9][0-9]*.ipynb") if not p.name.endswith(".failed.ipynb"))

    found = numbered(folder)
    if folder == notebook_dir() and (folder.parent / "solutions").is_dir():  # the worked exercises run after
        found += numbered(folder.parent / "solutions")
    if not names:
        return found
    chosen = [p for p in found if any(p.stem == n or p.stem.startswith(n) for n in names)]
    missing = [n for n in names if not any(p.stem == n or p.stem.startswith(n) for p in found)]
    if missing:
        raise FileNotFoundError(f"no notebook matches {missing}; have {[p.stem for p in found]}")
    return chosen


CELL_TIMEOUT = 4 * 3600  # seconds per cell: notebook 07's PALU grid alone trains for about an hour on 2 cores


def run_notebook(path: Path, profile: str, out: Path | None = None, timeout: int = CELL_TIMEOUT) -> float:
    """Execute ``path`` with papermill under ``profile``; returns the wall time in seconds.

    Writes to ``out`` if given, else replaces ``path`` once the run succeeded. ``timeout`` bounds each cell
    (a hung cell fails the run instead of blocking it forever).
    """
    import papermill

    os.environ["PALU_PERTA_PROFILE"] = profile
    target = out or path
    tmp = target.with_name(f".{target.stem}.running.ipynb")
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(path), str(tmp), kernel_name="python3", cwd=str(path.parent), execution_timeout=timeout,
            progress_bar=False,
        )
    except BaseException:
        failed = target.with_name(f"{target.stem}.failed.ipynb")
        if tmp.exists():
            tmp.replace(failed)
            print(f"{path.name} failed; the executed copy with the error is {failed}")
        raise
    tmp.replace(target)
    return time.perf_counter() - start


def cache_entries() -> dict[str, int]:
    """Finished entries in the artifacts directory, per kind (``models``, ``evals``, ...)."""
    root = artifacts_root()
    if not root.is_dir():
        return {}
    return {kind.name: sum(1 for entry in kind.iterdir() if (entry / CONFIG_FILE).is_file())
            for kind in sorted(root.iterdir()) if kind.is_dir()}


def timing_record(profile: str, seconds: dict[str, float], before: dict[str, int], after: dict[str, int]) -> dict:
    """What one run of the runner cost: seconds per notebook, the total, and how many cache entries it
    built (none: a warm-cache rerun; many: a run from nothing), with the machine it ran on."""
    import torch  # here, not at import: listing or running notebooks does not need it

    built = {kind: after.get(kind, 0) - before.get(kind, 0) for kind in after if after.get(kind, 0) != before.get(kind, 0)}
    return {"profile": profile, "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "notebooks_s": {name: round(s, 1) for name, s in seconds.items()}, "total_s": round(sum(seconds.values()), 1),
            "cache_entries_before": before, "cache_entries_built": built,
            "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                        "torch_threads": torch.get_num_threads()}}


def save_timing(record: dict, folder: Path | None = None) -> Path:
    """Append ``record`` as one JSON line to ``benchmarks/results/notebook_runs.jsonl`` (or ``folder``)."""
    folder = folder or (repo_root() or Path.cwd()) / "benchmarks" / "results"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "notebook_runs.jsonl"
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="notebook stems or prefixes (default: all)")
    parser.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    parser.add_argument("--out", type=Path, help="write executed notebooks here instead of in place")
    parser.add_argument("--cell-timeout", type=int, default=CELL_TIMEOUT, help="seconds a cell may run (default: %(default)s)")
    args = parser.parse_args(argv)
    before = cache_entries()
    seconds: dict[str, float] = {}
    for path in list_notebooks(args.names):
        out = None
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            out = args.out / path.name
        spent = seconds[f"{path.parent.name}/{path.stem}"] = run_notebook(path, args.profile, out, timeout=args.cell_timeout)
        print(f"{path.name:32s} {spent:8.1f} s", flush=True)
    print(f"{'total':32s} {sum(seconds.values()):8.1f} s")
    if not args.out:  # a run in place is a run of the tutorial: keep what it cost (benchmarks/NOTES.md)
        print("timing appended to", save_timing(timing_record(args.profile, seconds, before, cache_entries())))


if __name__ == "__main__":
    main()
