"""Kept results: small cache entries (evaluations, lambda ladders) committed under ``results/kept/``, so that a
fresh clone reads them instead of training and evaluating again.

A notebook's comparisons cost a model per point (notebook 07: 18 PALU runs and 10 PerTA variants, each
trained and evaluated, about 81 minutes on 2 cores from nothing); what it reads back from each is a few
kilobytes of per-item metrics. With ``PALU_PERTA_KEEP=1`` every evaluation or ladder a run builds is also written to
``<results>/kept/<kind>/<entry>.json.gz`` (its files and the configuration that produced it; ``<entry>`` is
the cache entry's name, ``<name>-<hash>``, the hash covering that configuration and the package version).
Any later run, kept or not, whose cache lacks that entry restores it from there instead of building it, and
skips what only the build needed (the unlearning run behind an evaluation). A record is used only when its
configuration is exactly the one asked for; a record the current code would name otherwise is stale
(:func:`stale_records`, tested), never silently mixed in.

No weights: only the kinds of :data:`KEPT_KINDS`, whose entries hold JSON files.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import __version__
from .artifacts import CONFIG_FILE, _canonical, atomic_write_text, cached, config_hash, entry_path, portable

KEPT_KINDS = ("evals", "calibration")  # cache kinds whose entries are small JSON files, never weights
KEEP_ENV = "PALU_PERTA_KEEP"


def keeping() -> bool:
    """Whether this run writes what it builds to the kept results (``PALU_PERTA_KEEP=1``)."""
    return os.environ.get(KEEP_ENV, "").strip().lower() in ("1", "true", "yes")


def kept_root(root: Path | None = None) -> Path:
    """``<results>/kept`` (``results``: ``$PALU_PERTA_RESULTS`` or the repository's ``results/``)."""
    from .store import results_root  # store imports pandas: only when kept results are looked at

    return (root or results_root()) / "kept"


def record_path(kind: str, entry_name: str, root: Path | None = None) -> Path:
    """Where the kept record of the cache entry ``<kind>/<entry_name>`` lives."""
    if kind not in KEPT_KINDS:
        raise ValueError(f"kind {kind!r} is not kept (weights are never committed); kept kinds: {KEPT_KINDS}")
    return kept_root(root) / kind / f"{entry_name}.json.gz"


def _record_name(path: Path) -> str:
    return path.name.removesuffix(".json.gz")


def read_record(path: Path) -> dict[str, Any]:
    """A kept record: ``kind``, ``entry`` (the cache entry's name), ``config`` (portable), ``palu_perta`` and
    ``files`` (file name -> text)."""
    return json.loads(gzip.decompress(Path(path).read_bytes()))


def keep(kind: str, entry: Path, config: dict[str, Any], root: Path | None = None) -> Path:
    """Write the finished cache entry ``entry`` (of ``kind``, built for ``config``) to the kept results, through a
    temporary file and a rename. Every file but ``artifact.json`` is kept; they must be text (JSON)."""
    entry = Path(entry)
    files = {}
    for file in sorted(entry.iterdir()):
        if file.name == CONFIG_FILE or not file.is_file():
            continue
        try:
            files[file.name] = file.read_text()
        except UnicodeDecodeError:
            raise ValueError(f"{file} is not text: a kept record holds JSON files, never weights") from None
    record = {"kind": kind, "entry": entry.name, "config": portable(config, entry.parent.parent),
              "palu_perta": __version__, "files": files}
    path = record_path(kind, entry.name, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = gzip.compress(json.dumps(record, sort_keys=True).encode(), compresslevel=9, mtime=0)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)
    return path


def restore(kind: str, entry_name: str, config: dict[str, Any], directory: Path, root: Path | None = None) -> bool:
    """Write the files of the kept record of ``<kind>/<entry_name>`` into ``directory`` (an entry being built)
    when one exists for exactly ``config`` and this package version; returns whether it did."""
    path = record_path(kind, entry_name, root)
    if not path.is_file():
        return False
    record = read_record(path)
    artifacts = Path(directory).parent.parent  # <artifacts>/<kind>/<entry being built>
    if record.get("palu_perta") != __version__ or _canonical(record["config"], artifacts) != _canonical(config,
                                                                                                          artifacts):
        return False
    for name, text in record["files"].items():
        atomic_write_text(Path(directory) / name, text)
    return True


def cached_or_kept(kind: str, name: str, config: dict[str, Any], build: Callable[[Path], None],
                   root: Path | None = None) -> Path:
    """:func:`~palu_perta.artifacts.cached`, restoring a missing entry from the kept results when they hold it
    (``build`` then never runs), and keeping what it built or restored when :func:`keeping`. ``root``: the
    artifacts directory."""
    path = entry_path(kind, name, config, root)

    def build_or_restore(directory: Path) -> None:
        if not restore(kind, path.name, config, directory):
            build(directory)

    path = cached(kind, name, config, build_or_restore, root)
    if keeping() and not record_path(kind, path.name).is_file():
        keep(kind, path, config)
    return path


def records(root: Path | None = None) -> list[Path]:
    """Every kept record, sorted."""
    base = kept_root(root)
    return sorted(p for kind in KEPT_KINDS for p in (base / kind).glob("*.json.gz"))


def stale_records(root: Path | None = None) -> list[str]:
    """The kept records the current code would never read: made by another package version, or named with a
    hash other than their configuration's (``<kind>/<entry>`` each). Rerun what made them (with
    ``PALU_PERTA_KEEP=1``) or delete them."""
    stale = []
    for path in records(root):
        record = read_record(path)
        name = _record_name(path)
        expected = config_hash(record["config"])  # portable already: paths are marked, not resolved
        if record.get("palu_perta") != __version__ or not name.endswith(f"-{expected}") or record.get("entry") != name:
            stale.append(f"{path.parent.name}/{name}")
    return stale


__all__ = ["KEPT_KINDS", "KEEP_ENV", "keeping", "kept_root", "record_path", "read_record", "keep", "restore",
           "cached_or_kept", "records", "stale_records"]
