"""Where things live: the checkout, the artifacts cache, the figures, a local TOFU copy.

Nothing here imports the rest of the package, so every layer (the cache, the results store, the
profiles) can ask for a path without an import cycle.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def repo_root() -> Path | None:
    """The checkout this package runs from (editable install), or None for a wheel install."""
    root = PACKAGE_DIR.parent
    return root if (root / "pyproject.toml").exists() and (root / "notebooks").exists() else None


def artifacts_root() -> Path:
    """Where models, task vectors and evaluations are cached.

    ``$PALU_PERTA_ARTIFACTS`` if set, else ``<repo>/artifacts`` in a checkout, else
    ``~/.cache/palu_perta``.
    """
    env = os.environ.get("PALU_PERTA_ARTIFACTS")
    if env:
        return Path(env).expanduser().resolve()
    root = repo_root()
    return (root / "artifacts") if root else Path.home() / ".cache" / "palu_perta"


def figures_dir() -> Path:
    """Where notebooks write their figures: ``$PALU_PERTA_FIGURES`` or ``<repo>/figures``."""
    env = os.environ.get("PALU_PERTA_FIGURES")
    if env:
        return Path(env).expanduser().resolve()
    root = repo_root()
    return (root / "figures") if root else Path.cwd() / "figures"


def benchmark_results_dir(root: Path | None = None) -> Path:
    """Where the benchmarks and the notebook runner keep their records: ``<root>/benchmarks/results`` (default
    root: the checkout, else the working directory)."""
    return Path(root or repo_root() or Path.cwd()) / "benchmarks" / "results"


def profile_folder(base: Path, profile_name: str) -> Path:
    """A profile's folder under ``base``: ``base`` itself for ``cpu`` (its figures and figure data are the
    committed ones), ``base/<profile>`` for the others (ignored by git)."""
    return base if profile_name == "cpu" else base / profile_name


def default_tofu_dir() -> Path | None:
    """A local TOFU copy: ``$PALU_PERTA_TOFU_DIR``, else ``../shared/tofu`` beside the checkout."""
    env = os.environ.get("PALU_PERTA_TOFU_DIR")
    if env:
        return Path(env).expanduser().resolve()
    root = repo_root()
    if root and (root.parent / "shared" / "tofu" / "full.json").exists():
        return root.parent / "shared" / "tofu"
    return None
