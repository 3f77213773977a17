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
import os
import time
from pathlib import Path

from .config import PROFILES, repo_root


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
    found = sorted(p for p in folder.glob("[0-9][0-9]*.ipynb"))
    if folder == notebook_dir() and (folder.parent / "solutions").is_dir():  # the worked exercises run after
        found += sorted((folder.parent / "solutions").glob("[0-9][0-9]*.ipynb"))
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="notebook stems or prefixes (default: all)")
    parser.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    parser.add_argument("--out", type=Path, help="write executed notebooks here instead of in place")
    parser.add_argument("--cell-timeout", type=int, default=CELL_TIMEOUT, help="seconds a cell may run (default: %(default)s)")
    args = parser.parse_args(argv)
    total = 0.0
    for path in list_notebooks(args.names):
        out = None
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            out = args.out / path.name
        seconds = run_notebook(path, args.profile, out, timeout=args.cell_timeout)
        total += seconds
        print(f"{path.name:32s} {seconds:8.1f} s", flush=True)
    print(f"{'total':32s} {total:8.1f} s")


if __name__ == "__main__":
    main()
