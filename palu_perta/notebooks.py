"""Run the tutorial notebooks headless with papermill: ``python -m palu_perta.notebooks``.

Each notebook is executed into a temporary copy beside it and replaces the original only
if every cell succeeded, so a failing run never leaves red error cells in the only copy.
The profile reaches the kernel through ``PALU_PERTA_PROFILE`` (the notebooks' parameters
cell reads it), so the stored notebooks carry no injected-parameters cell.

    python -m palu_perta.notebooks --profile cpu                # all, in order
    python -m palu_perta.notebooks --profile cpu 01_data 02_finetune
    python -m palu_perta.notebooks --profile smoke --out /tmp/x # keep the originals

While it runs it says which notebook is running (``[k/n] name started HH:MM:SS``), shows papermill's
progress bar over its cells (on stderr; ``--no-progress`` turns it off) and, when the notebook is done,
the time it took and the time since the run began.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import TextIO

from .artifacts import CONFIG_FILE
from .config import PROFILES, artifacts_root, repo_root
from .paths import benchmark_results_dir


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


def run_notebook(path: Path, profile: str, out: Path | None = None, timeout: int = CELL_TIMEOUT,
                 progress: bool = False, desc: str | None = None) -> float:
    """Execute ``path`` with papermill under ``profile``; returns the wall time in seconds.

    Writes to ``out`` if given, else replaces ``path`` once the run succeeded. ``timeout`` bounds each cell
    (a hung cell fails the run instead of blocking it forever). ``progress`` shows papermill's progress bar
    over the notebook's cells on stderr, named ``desc`` (default: the notebook's stem).
    """
    import papermill

    os.environ["PALU_PERTA_PROFILE"] = profile
    target = out or path
    tmp = target.with_name(f".{target.stem}.running.ipynb")
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(path), str(tmp), kernel_name="python3", cwd=str(path.parent), execution_timeout=timeout,
            progress_bar={"desc": desc or path.stem, "unit": "cell", "file": sys.stderr} if progress else False,
        )
    except BaseException:
        failed = target.with_name(f"{target.stem}.failed.ipynb")
        if tmp.exists():
            tmp.replace(failed)
            print(f"{path.name} failed; the executed copy with the error is {failed}")
        raise
    tmp.replace(target)
    return time.perf_counter() - start


def duration(seconds: float) -> str:
    """``seconds`` for a person: "42.0 s", "3 min 05 s", "2 h 07 min"."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def run_all(paths: list[Path], profile: str, out: Path | None = None, timeout: int = CELL_TIMEOUT,
            progress: bool = True, stream: TextIO | None = None) -> dict[str, float]:
    """Run ``paths`` in order (:func:`run_notebook`), saying on ``stream`` (default: stdout) which one is
    running (``[k/n] name started HH:MM:SS``) and, when it ends, how long it took and how long the whole run
    has taken so far (or that it failed, and after how long, before the error propagates). ``out``: a folder
    for the executed copies (originals kept). Returns the seconds per notebook, keyed ``folder/stem``."""
    stream = stream or sys.stdout
    seconds: dict[str, float] = {}
    began = time.perf_counter()
    for k, path in enumerate(paths, 1):
        tag = f"[{k}/{len(paths)}] {path.parent.name}/{path.name}"
        print(f"{tag} started {datetime.datetime.now().strftime('%H:%M:%S')} (profile {profile})", file=stream,
              flush=True)
        target = None
        if out:
            out.mkdir(parents=True, exist_ok=True)
            target = out / path.name
        start = time.perf_counter()
        try:
            spent = run_notebook(path, profile, target, timeout=timeout, progress=progress, desc=f"[{k}/{len(paths)}] "
                                 f"{path.stem}")
        except BaseException:
            print(f"{tag} FAILED after {duration(time.perf_counter() - start)}", file=stream, flush=True)
            raise
        seconds[f"{path.parent.name}/{path.stem}"] = spent
        print(f"{tag} done in {duration(spent)} (run so far: {duration(time.perf_counter() - began)})", file=stream,
              flush=True)
    return seconds


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
    folder = folder or benchmark_results_dir()
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
    parser.add_argument("--no-progress", action="store_true", help="no progress bar over each notebook's cells")
    args = parser.parse_args(argv)
    before = cache_entries()
    seconds = run_all(list_notebooks(args.names), args.profile, args.out, timeout=args.cell_timeout,
                      progress=not args.no_progress)
    for name, spent in seconds.items():
        print(f"{name:40s} {spent:8.1f} s")
    print(f"{'total':40s} {sum(seconds.values()):8.1f} s")
    if not args.out:  # a run in place is a run of the tutorial: keep what it cost (benchmarks/NOTES.md)
        print("timing appended to", save_timing(timing_record(args.profile, seconds, before, cache_entries())))


if __name__ == "__main__":
    main()
