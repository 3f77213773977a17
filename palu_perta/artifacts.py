"""One artifacts directory, keyed by configuration, written atomically.

Every cached thing (a fine-tuned model, a task vector, an importance map, an evaluation)
lives in ``<artifacts>/<kind>/<name>-<hash>/`` where the hash covers the configuration that
produced it and the package version. The directory holds ``artifact.json`` (that
configuration) and is built under a temporary name, then renamed: an interrupted run never
leaves an entry that looks finished, and an entry whose recorded configuration differs from
the one asked for is rebuilt, never silently reused.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import __version__
from .paths import artifacts_root

CONFIG_FILE = "artifact.json"  # not config.json: HF model directories own that name
TIMING_FILE = "timing.json"  # how long an entry took to build (perta's pieces)


ROOT_MARK = "$PALU_PERTA_ARTIFACTS"  # stands for the artifacts directory inside keys


def portable(config: Any, root: Path | None = None) -> Any:
    """``config`` with every path inside the artifacts directory ``root`` (default: the current one)
    written as ``$PALU_PERTA_ARTIFACTS/<kind>/<entry>``, so that a key does not depend on where the
    directory is mounted (a class sharing one cache, a moved or linked directory). Returns plain JSON
    types (paths as strings, tuples as lists)."""
    root = Path(root or artifacts_root())
    prefixes = tuple(dict.fromkeys(f"{r}{os.sep}" for r in (root, root.resolve())))

    def walk(value: Any) -> Any:
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if isinstance(value, str):
            prefix = next((p for p in prefixes if value.startswith(p)), None)
            return value if prefix is None else f"{ROOT_MARK}/{value[len(prefix):]}"
        if isinstance(value, dict):
            return {key: walk(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [walk(item) for item in value]
        return value

    return walk(config)


def _canonical(config: dict[str, Any], root: Path | None = None) -> str:
    return json.dumps(portable(config, root), sort_keys=True, default=str, separators=(",", ":"))


def config_hash(config: dict[str, Any], root: Path | None = None) -> str:
    """A 12-hex-digit hash of the configuration (paths inside the artifacts directory ``root`` taken
    relative to it, :func:`portable`) plus the package version."""
    payload = _canonical({"config": config, "palu_perta": __version__}, root)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def entry_path(kind: str, name: str, config: dict[str, Any], root: Path | None = None) -> Path:
    """Where the artifact of this kind and configuration lives (it may not exist yet)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    root = root or artifacts_root()
    return root / kind / f"{safe}-{config_hash(config, root)}"


def is_complete(path: Path, config: dict[str, Any]) -> bool:
    """True when ``path`` is a finished entry recorded with exactly this configuration."""
    record = path / CONFIG_FILE
    if not record.is_file():
        return False
    try:
        stored = json.loads(record.read_text())
    except (json.JSONDecodeError, OSError):  # unreadable, or moved away by another builder meanwhile
        return False
    root = Path(path).parent.parent  # <root>/<kind>/<entry>
    return (_canonical(stored.get("config", {}), root) == _canonical(config, root)
            and stored.get("palu_perta") == __version__)


def _check_writable(directory: Path, entry: Path | None = None) -> None:
    """``directory`` exists (created if needed) and can be written, else a one-line PermissionError; with
    ``entry`` (a cache entry about to be built there) the error names the entry and how to get it."""
    problem = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        problem = f"cannot be created ({err.strerror})"
    if problem is None and not os.access(directory, os.W_OK):
        problem = "is read-only"
    if problem is None:
        return
    if entry is not None:
        raise PermissionError(
            f"the cache entry {entry.parent.name}/{entry.name} is missing and the directory {directory} {problem} "
            "(a shared cache?): build it where that cache is writable (run the same notebook or command there), "
            "or set PALU_PERTA_ARTIFACTS to a writable directory (a copy of the shared cache keeps its entries)"
        )
    raise PermissionError(f"the directory {directory} {problem}; set PALU_PERTA_ARTIFACTS (or PALU_PERTA_RESULTS "
                          "for study results) to a writable directory")


def check_output_dir(path: str | os.PathLike) -> Path:
    """``path`` as a directory results can be written to, checked before any work is done: an existing
    file there or above it is a ``ValueError``, an unwritable place a ``PermissionError``; nothing is
    created. Returns the path."""
    path = Path(path).expanduser()
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not existing.is_dir():
        where = ("is an existing file, not a directory" if existing == path
                 else f"cannot be created: {existing} is a file")
        raise ValueError(f"the output directory '{path}' {where}; pass a directory (it is created if missing) "
                         "or move the file away")
    if not os.access(existing, os.W_OK):
        raise PermissionError(f"the output directory {path} cannot be written ({existing} is read-only); "
                              "pass a writable directory")
    return path


@contextlib.contextmanager
def atomic_dir(path: Path, config: dict[str, Any] | None = None, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name; rename it to ``path`` only on success.

    Yields the temporary directory to write into. ``config`` (if given) is recorded as
    ``artifact.json`` last, so its presence marks the entry complete. If another process
    completed the same entry meanwhile, its copy is kept unless ``overwrite``.
    """
    path = Path(path)
    _check_writable(path.parent, entry=path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700: a cache shared by a class must be readable by its users
    try:
        yield tmp
        if config is not None:
            record = {"config": portable(config, path.parent.parent), "palu_perta": __version__}
            (tmp / CONFIG_FILE).write_text(json.dumps(record, indent=1, default=str))
        _install(tmp, path, config, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _install(tmp: Path, path: Path, config: dict[str, Any] | None, overwrite: bool, attempts: int = 20) -> None:
    """Rename the finished ``tmp`` to ``path``, tolerating other builders of the same entry: when one of them
    has installed a complete entry with this configuration, theirs is kept and ``tmp`` discarded (unless
    ``overwrite``); anything else at ``path`` (a stale entry, an unfinished one) is first moved aside under a
    unique name, atomically, then deleted, so no two processes ever delete or fill the same folder."""
    for _ in range(attempts):
        if not overwrite and config is not None and is_complete(path, config):
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished the same entry first: keep theirs
            return
        try:
            os.replace(tmp, path)  # atomic; fails when path is a non-empty folder
            return
        except OSError as err:
            # ENOTEMPTY/EEXIST: a folder is in the way (stale, unfinished, or another builder's). Anything else
            # (a file at `path`, no permission) is raised. Not `path.exists() and not path.is_dir()`: another
            # builder can move the folder aside between those two calls, which read as "a file is in the way".
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
        try:
            os.replace(path, aside / "entry")  # whoever wins this rename deletes the old folder
        except FileNotFoundError:
            pass  # another builder moved it first
        shutil.rmtree(aside, ignore_errors=True)
    raise OSError(f"could not install the cache entry {path} after {attempts} attempts: other processes keep "
                  "replacing it; run one builder at a time")


@contextlib.contextmanager
def build_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the entry ``path`` while it is trained (blocking until it is free).

    Two processes that train the same entry (two notebooks, or test workers, sharing one artifacts
    directory) would otherwise share its ``.work`` checkpoint folder. The second one waits, then finds
    the entry complete. Under a distributed launch (``WORLD_SIZE`` > 1) every process must train
    together, so there is no lock; process 0 writes the entry. Without ``fcntl`` (Windows) no lock.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        fcntl = None
    if fcntl is None or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        yield
        return
    path = Path(path)
    _check_writable(path.parent, entry=path)
    with open(path.parent / f".{path.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same directory."""
    path = Path(path)
    _check_writable(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a file written the plain way honours the umask
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_json(path: Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=1, default=float))


def build_time(path: str | os.PathLike) -> float | None:
    """Seconds it took to build a cached entry: ``timing.json``, or a fine-tune's ``train_runtime``."""
    path = Path(path)
    if (path / TIMING_FILE).is_file():
        return json.loads((path / TIMING_FILE).read_text())["wall_time_s"]
    if (path / "log_history.json").is_file():
        runtime = [h["train_runtime"] for h in json.loads((path / "log_history.json").read_text()) if "train_runtime" in h]
        return runtime[-1] if runtime else None
    return None


def entry_key(path: str | os.PathLike) -> str:
    """``<kind>/<entry>``: how a key names a cache entry, whether or not it exists (it carries the entry's hash)."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}"


def remove_entry(path: str | os.PathLike) -> bool:
    """Delete the cache entry ``path`` (scratch no later step needs): it is first moved aside under a unique
    name, atomically, then deleted, so a builder never meets half an entry and two removers never delete the
    same folder. Returns whether an entry was removed (False: none there, or the cache is read-only)."""
    path = Path(path)
    if not path.is_dir():
        return False
    try:
        aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
    except OSError:  # a read-only (shared) cache: nothing to free here
        return False
    try:
        os.replace(path, aside / "entry")
        removed = True
    except OSError:  # another process removed or replaced it first
        removed = False
    shutil.rmtree(aside, ignore_errors=True)
    return removed


def cached(
    kind: str,
    name: str,
    config: dict[str, Any],
    build: Callable[[Path], None],
    root: Path | None = None,
    force: bool = False,
) -> Path:
    """Return the entry for ``config``, building it with ``build(tmp_dir)`` if missing or stale."""
    path = entry_path(kind, name, config, root)
    if force or not is_complete(path, config):
        with atomic_dir(path, config, overwrite=force) as tmp:
            build(tmp)
    return path
