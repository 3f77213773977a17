"""The results store: every evaluation a study makes, as tidy rows, small enough to commit.

A study cell (one method, one setting, one seed; :mod:`palu_perta.study`) writes one JSON-lines
file, ``<results>/<study>/<cell id>.jsonl``, through a temporary file and a rename, so a killed
run leaves either the whole file or none. Its rows:

- one ``cell`` row: the cell's declaration, its ``config_hash`` (the configuration that produced
  it plus the package version; a row is *stale* when the current code computes another hash for
  the same cell), the package version and the wall time;
- one ``summary`` row per evaluated point (``point``: ``{"epoch": 3}``, ``{"lambda": 0.5}``, or
  ``{}`` for a fine-tuned reference model) with open-unlearning's aggregate keys;
- one ``item`` row per point x split x item with that item's numbers (probabilities, truth ratio,
  ROUGE, MIA scores; the generated answer on the forget split only).

No weights: a figure or a table rebuilds from these rows in seconds (:func:`load`), and a
summary can be recomputed against another retain reference (:func:`per_item_payload`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from .artifacts import atomic_write_text
from .paths import repo_root

ROW_KINDS = ("cell", "summary", "item")
TEXT_FIELDS = ("question", "answer")  # the data's own text: the data setting reproduces it
DIGITS = 7  # significant digits kept for per-item floats (float32 scoring is no finer)


def results_root() -> Path:
    """Where study results live: ``$PALU_PERTA_RESULTS``, else ``<repo>/results``, else ``./results``."""
    env = os.environ.get("PALU_PERTA_RESULTS")
    if env:
        return Path(env).expanduser().resolve()
    root = repo_root()
    return (root / "results") if root else Path.cwd() / "results"


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return value if value != value or value in (float("inf"), float("-inf")) else float(f"{value:.{DIGITS}g}")
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_round(v) for v in value]
    return value


def item_rows(per_item: Mapping[str, Any], point: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per split x item of an evaluation's ``per_item`` payload (:func:`~palu_perta.evaluation.evaluate`),
    without the data's own text and with generations kept on the forget split only."""
    rows = []
    for split, items in per_item["splits"].items():
        for index, item in enumerate(items):
            values = {k: v for k, v in item.items() if k not in TEXT_FIELDS and (k != "generation" or split == "forget")}
            rows.append({"row": "item", "point": dict(point), "split": split, "index": index, **_round(values)})
    return rows


def per_item_payload(items: Iterable[Mapping[str, Any]], forget_split: str, forget_hash: str) -> dict[str, Any]:
    """The ``per_item`` payload of one point rebuilt from its item rows, for
    :func:`~palu_perta.evaluation.summarise` (e.g. to score it against another retain model)."""
    splits: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(items, key=lambda r: (r["split"], r["index"])):
        splits.setdefault(row["split"], []).append(
            {k: v for k, v in row.items() if k not in ("row", "point", "split", "index", "cell", "config_hash")})
    splits.setdefault("holdout", [])
    return {"splits": splits, "forget_split": forget_split, "forget_hash": forget_hash}


def write_cell(path: Path, header: Mapping[str, Any], points: Iterable[tuple[Mapping[str, Any], Mapping[str, Any],
                                                                           Mapping[str, Any]]]) -> Path:
    """Write one cell's file atomically. ``header``: the cell row's fields (``cell``, ``config_hash``...);
    ``points``: ``(point, summary, per_item)`` per evaluated point. Every row carries the cell id and hash."""
    tag = {"cell": header["cell"]["id"], "config_hash": header["config_hash"]}
    lines = [json.dumps({"row": "cell", **header}, sort_keys=True)]
    for point, summary, per_item in points:
        metrics = {k: v for k, v in summary.items() if k != "meta"}
        lines.append(json.dumps({"row": "summary", **tag, "point": dict(point), "metrics": _round(metrics),
                                 "meta": summary.get("meta", {})}, sort_keys=True, default=float))
        lines.extend(json.dumps({**r, **tag}, sort_keys=True, default=float) for r in item_rows(per_item, point))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, "\n".join(lines) + "\n")


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of one cell file (a truncated or corrupt file raises ValueError naming it)."""
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number} is not valid JSON ({err.msg}); delete the file to recompute "
                             "that cell") from None
    if not rows or rows[0].get("row") != "cell":
        raise ValueError(f"{path} does not start with a cell row; delete it to recompute that cell")
    return rows


def cell_header(path: Path) -> dict[str, Any] | None:
    """The cell row of a finished cell file, or None when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    with path.open() as handle:
        first = handle.readline()
    try:
        row = json.loads(first)
    except json.JSONDecodeError:
        return None
    return row if row.get("row") == "cell" else None


def cell_files(study_dir: Path) -> list[Path]:
    """Every cell file of a study directory, sorted by name."""
    return sorted(Path(study_dir).glob("*.jsonl"))


def study_names(root: Path | None = None) -> list[str]:
    """The studies under ``root`` (default :func:`results_root`): its folders holding a cell file, sorted."""
    root = Path(root) if root is not None else results_root()
    return sorted(p.name for p in root.iterdir() if p.is_dir() and cell_files(p)) if root.is_dir() else []


def load(study_dir: Path, items: bool = True) -> dict[str, pd.DataFrame]:
    """A study's results as three tables: ``cells`` (one row per cell, its declaration flattened),
    ``summaries`` (one row per cell x point, the metrics as columns) and ``items`` (one row per cell x
    point x split x item; skipped with ``items=False``). Point columns: ``point`` (the point as canonical
    JSON, a key to group by), ``epoch``, ``lambda`` and ``multiple`` (of lambda*)."""
    cells, summaries, item_list = [], [], []
    for path in cell_files(study_dir):
        rows = read_rows(path)
        header = rows[0]
        cell = {**header["cell"], "config_hash": header["config_hash"], "wall_time_s": header.get("wall_time_s"),
                "palu_perta": header.get("palu_perta")}
        cells.append(cell)
        for row in rows[1:]:
            base = {"cell": row["cell"], **{k: v for k, v in cell.items() if k in ("setting", "forget_split", "method",
                                                                                    "label", "seed")},
                    "point": json.dumps(row["point"], sort_keys=True), "epoch": row["point"].get("epoch"),
                    "lambda": row["point"].get("lambda"), "multiple": row["point"].get("multiple")}
            if row["row"] == "summary":
                summaries.append({**base, **row["metrics"]})
            elif items and row["row"] == "item":
                item_list.append({**base, **{k: v for k, v in row.items() if k not in ("row", "point", "cell",
                                                                                       "config_hash")}})
    return {"cells": pd.DataFrame(cells), "summaries": pd.DataFrame(summaries), "items": pd.DataFrame(item_list)}


def select_seeds(tables: dict[str, pd.DataFrame], seeds: Iterable[int]) -> dict[str, pd.DataFrame]:
    """``tables`` (:func:`load`) with only the method cells of ``seeds``; the reference models are kept. What
    those seeds alone say: ``verdicts.claim_table(select_seeds(tables, [0]))`` is the verdict one seed gives."""
    cells = tables["cells"]
    keep = set(cells.loc[(cells["kind"] == "reference") | cells["seed"].isin(list(seeds)), "id"])
    return {name: frame if frame.empty else frame[frame["id" if name == "cells" else "cell"].isin(keep)]
            .reset_index(drop=True) for name, frame in tables.items()}
