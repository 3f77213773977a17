"""The study runner: a declared grid of cells, each evaluated along its strength axis, its results
appended to the results store (:mod:`palu_perta.store`). Results are the product; models are scratch.

A :class:`Grid` crosses data settings x forget splits x methods x method settings x seeds into
:class:`Cell`\\ s. Each cell finds (or trains) what it needs in the artifacts cache and writes one
results file:

- ``target`` / ``retain``: the fine-tuned reference models, evaluated once (one point ``{}``); the
  retain model's per-item truth ratios are every other cell's forget-quality reference;
- a training-based method (``ga``, ``graddiff``, ``npo``, ``palu``...): unlearned from the target with
  the profile's budget (or the cell's learning rate) and evaluated after every epoch;
- ``tv`` / ``perta-grad`` / ``perta-fisher``: theta_o - lambda * (w *) tau evaluated at every lambda of
  the grid, given as multiples of lambda*, the smallest lambda at which TV forgets as far as the
  retain model (:func:`palu_perta.perta.calibrate_lambda`).

A seed is the unlearning run's seed (data order and retain sampling) for the training-based methods,
and the seed of the reinforcement fine-tune (hence of tau) for the task-arithmetic ones; the target and
retain models are fine-tuned once, with the profile's seed.

Resuming: a cell's file is written only when the cell is finished (through a rename), so a killed
study restarts at the first cell without a file, and inside that cell from its scratch folder: an
unlearning run from its last epoch checkpoint, a lambda sweep from its last evaluated lambda. The
scratch folder (checkpoints, no results) is deleted when the cell's file is written.

Models are scratch too: a seed's reinforced model theta_ft is deleted once its tau is cached, and tau
and the importances after the last cell of the run that reads them (:func:`release_entries`); a later
run (or notebook) that needs one again rebuilds it. The cache keeps the base, target and retain models.

    python -m palu_perta study --profile cpu --dry-run     # the cells, what is done, the time left
    python -m palu_perta study --profile cpu               # run (or resume) it
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .artifacts import artifacts_root, atomic_write_json, atomic_write_text, config_hash, remove_entry
from .config import PALU_HYPER, Profile, get_profile, lambda_grid_points, unlearn_budget
from .store import cell_files, cell_header, results_root, write_cell

REFERENCES = ("retain", "target")  # the retain model first: every other cell scores against it
ARITHMETIC = ("tv", "perta-grad", "perta-fisher")
DEFAULT_MULTIPLES = {
    # TV: one halving below lambda* (partly forgotten) to two doublings above, as notebook 03's grid.
    "tv": (0.5, 1.0, 2.0, 4.0),
    # PerTA's weights are below 1 (their mean is about a third on the cpu profile, notebook 04), so it
    # needs larger lambdas than TV to forget as far: its grid runs two doublings further.
    "perta-grad": (0.5, 1.0, 2.0, 4.0, 8.0, 16.0),
    "perta-fisher": (0.5, 1.0, 2.0, 4.0, 8.0, 16.0),
}


@dataclass(frozen=True)
class Cell:
    """One unit of a study: a method with its settings, on one data setting and forget split, one seed.

    ``hyper``: the loss's hyperparameters as sorted ``(name, value)`` pairs (training-based methods), or changes to
    the PerTA recipe (task-arithmetic methods, :class:`~palu_perta.perta.PerTAConfig` fields);
    ``learning_rate``: None for the profile's unlearning budget; ``multiples``: the lambdas of a
    task-arithmetic sweep as multiples of lambda*.
    """

    setting: str
    forget_split: str
    method: str
    seed: int = 0
    hyper: tuple[tuple[str, Any], ...] = ()
    learning_rate: float | None = None
    multiples: tuple[float, ...] = ()

    @property
    def kind(self) -> str:
        """``reference``, ``arithmetic`` or ``training``."""
        return "reference" if self.method in REFERENCES else "arithmetic" if self.method in ARITHMETIC else "training"

    @property
    def label(self) -> str:
        """The method with its settings, e.g. ``palu top_k=1`` or ``npo lr=2e-05``: what a figure's legend shows."""
        parts = [self.method, *(f"{k}={v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else f"{k}={v}"
                                for k, v in self.hyper)]
        if self.learning_rate is not None:
            parts.append(f"lr={self.learning_rate:g}")
        return " ".join(parts)

    @property
    def id(self) -> str:
        """A file-name-safe identifier, unique within a grid."""
        text = f"{self.setting}-{self.forget_split}-{self.label.replace(' ', '-')}"
        if self.kind != "reference":
            text += f"-s{self.seed}"
        return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in text)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "hyper": dict(self.hyper), "id": self.id, "label": self.label,
                "kind": self.kind}

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> "Cell":
        """The cell a results file's cell row declares (the inverse of :meth:`to_dict`)."""
        return cls(record["setting"], record["forget_split"], record["method"], int(record["seed"]),
                   tuple(sorted(record.get("hyper", {}).items())), record.get("learning_rate"),
                   tuple(record.get("multiples", ())))


@dataclass(frozen=True)
class Grid:
    """A declared study: its profile, and the crossing that gives its cells.

    ``settings``: data setting name -> changes to the profile (e.g. ``{"data": "tofu", "n_authors": 20}``);
    ``methods``: method -> the hyperparameter settings to run it with (``[{}]``: its defaults);
    ``learning_rates``: for training-based methods (None: the profile's budget); ``budget``: changes to the
    profile's unlearning budget for every training-based cell; ``multiples``: per task-arithmetic method,
    the lambdas as multiples of lambda*.
    """

    name: str
    profile: str
    methods: dict[str, tuple[dict[str, Any], ...]]
    seeds: tuple[int, ...] = (0, 1, 2)
    settings: dict[str, dict[str, Any]] = field(default_factory=lambda: {"synthetic": {}})
    splits: tuple[str, ...] = ("forget10",)
    learning_rates: tuple[float | None, ...] = (None,)
    budget: dict[str, Any] = field(default_factory=dict)
    multiples: dict[str, tuple[float, ...]] = field(default_factory=lambda: dict(DEFAULT_MULTIPLES))
    description: str = ""

    def cells(self) -> list[Cell]:
        """Every cell: the reference models of each setting and split first, then the methods seed by seed
        (a study stopped early holds every method at the first seeds rather than some methods at all)."""
        cells = [Cell(s, split, ref) for s in self.settings for split in self.splits for ref in REFERENCES]
        for seed in self.seeds:
            for setting in self.settings:
                for split in self.splits:
                    for method, hypers in self.methods.items():
                        if method in ARITHMETIC:  # hypers: changes to the PerTA recipe (PerTAConfig fields)
                            for hyper in hypers or ({},):
                                cells.append(Cell(setting, split, method, seed, tuple(sorted(hyper.items())),
                                                  multiples=tuple(self.multiples.get(method, DEFAULT_MULTIPLES["tv"]))))
                            continue
                        for hyper in hypers or ({},):
                            for lr in self.learning_rates:
                                cells.append(Cell(setting, split, method, seed, tuple(sorted(hyper.items())), lr))
        return cells

    def profile_for(self, cell: Cell) -> Profile:
        """The profile a cell runs on: the grid's, with the setting's changes and the cell's forget split."""
        return get_profile(self.profile).replace(**self.settings[cell.setting], forget_split=cell.forget_split)


# PALU as the authors' released configuration runs it by default: config.PALU_HYPER (K = 1 on every sensitive
# token, alpha = 1; its comment gives the source and their sweep), the one definition notebooks 06 and 07 use too.
PALU_AUTHORS = PALU_HYPER

GRIDS: dict[str, Grid] = {
    # Seconds: the tiny random model. Exercises every kind of cell (tests and CI).
    "smoke": Grid(
        "smoke", "smoke", seeds=(0, 1),
        methods={"ga": ({},), "npo": ({},), "palu": (PALU_AUTHORS,), "tv": (), "perta-grad": ()},
        multiples={"tv": (0.5, 1.0), "perta-grad": (1.0, 4.0)},
        description="the tiny model on 6 synthetic authors: every kind of cell, in about a minute",
    ),
    # Hours on 2 cores: SmolLM2-135M on 20 synthetic authors, the methods the papers compare, three seeds.
    "cpu": Grid(
        "cpu", "cpu", seeds=(0, 1, 2),
        # the order a seed's cells run in: one of each family first, so a study stopped early still
        # holds both papers' comparisons (PALU against a baseline, PerTA against TV)
        methods={"graddiff": ({},), "tv": (), "palu": (PALU_AUTHORS,), "perta-grad": (), "npo": ({},),
                 "perta-fisher": ()},
        description="SmolLM2-135M on 20 synthetic authors (forget10: 2 authors, 20 answers), 3 seeds",
    ),
    # The cpu grid on the real benchmark, sized for 2 cores: TOFU's forget01 (two authors, 40 answers, with the
    # GPT-4o span labels), the first 4 retain authors (80 answers) and the next one as holdout (20 answers, as
    # many as the synthetic setting's); model utility on open-unlearning's whole real-author (100) and
    # world-fact (117) sets. Chosen before any tofu result, from `study.work_scale` (our measurement): its text
    # to fine-tune on is 1.3 times the synthetic setting's and to evaluate 2.3 times, about 8 h on 2 cores by
    # `--dry-run` (`tofu20`, with 20 retain authors, 5.1 and 6.5 times: about 25 h). None of these retain
    # authors shares a fact with a forget author (TOFU's 11 such answers lie among retain authors 7 to 17), so
    # this setting has no neighbour split: its verdicts are on model utility.
    "tofu": Grid(
        "tofu", "cpu", seeds=(0, 1, 2),
        settings={"tofu": {"data": "tofu", "n_authors": 4, "n_holdout_authors": 1}},
        splits=("forget01",),
        methods={"graddiff": ({},), "tv": (), "palu": (PALU_AUTHORS,), "perta-grad": (), "npo": ({},),
                 "perta-fisher": ()},
        description="SmolLM2-135M on 7 real TOFU authors (forget01: 2 authors, 40 answers; 4 retain, 1 holdout), 3 seeds",
    ),
    # The same on 22 real TOFU authors (20 retain, 2 holdout), with TOFU's 11 neighbour answers: a GPU's study.
    "tofu20": Grid(
        "tofu20", "cpu", seeds=(0, 1, 2),
        settings={"tofu": {"data": "tofu", "n_authors": 20, "n_holdout_authors": 2}},
        splits=("forget01",),
        methods={"graddiff": ({},), "tv": (), "palu": (PALU_AUTHORS,), "perta-grad": (), "npo": ({},),
                 "perta-fisher": ()},
        description="SmolLM2-135M on 22 real TOFU authors (forget01: 2 authors, 40 answers; 11 neighbour answers), "
                    "3 seeds: for a GPU",
    ),
    # The PALU paper's 2 x 2 (are both localisations needed?): temporal scope (onset tokens / every answer
    # token) x vocabulary scope (the top-K reference logits, K = 1 as the authors' default / the full
    # vocabulary), on the cpu grid's setting and budget; the other hyperparameters at the authors' values.
    "scope": Grid(
        "scope", "cpu", seeds=(0, 1, 2),
        methods={"palu": tuple({**PALU_AUTHORS, "temporal": temporal, "vocab": vocab}
                               for temporal in ("onset", "answer") for vocab in ("topk", "full"))},
        description="PALU's 2 x 2 (onset / every answer token x top-1 / full vocabulary), SmolLM2-135M, 3 seeds",
    ),
}


def get_grid(name: str) -> Grid:
    if name not in GRIDS:
        raise ValueError(f"unknown grid {name!r}; choose one of {sorted(GRIDS)}")
    return GRIDS[name]


# ------------------------------------------------------------------------------------------ configuration


def _data_key(profile: Profile, bench: Any = None) -> dict[str, Any]:
    """Each split's size and content hash. A local copy's source is its absolute path, which differs between
    checkouts (a CI clone, a student's machine): the key names such data "tofu-format files" instead, so a
    committed result stays current wherever the same data lies; the content hash tells data sets apart."""
    from .pipeline import benchmark
    from .training import records_info

    bench = bench if bench is not None else benchmark(profile)
    source = bench.source if bench.source == "synthetic" else "tofu-format files"
    return {split: records_info(source, records) for split, records in
            {"full": bench.full, "retain_train": bench.retain, **bench.splits()}.items()}


def unlearn_config(grid: Grid, cell: Cell, profile: Profile) -> Any:
    """The :class:`~palu_perta.unlearn.UnlearnConfig` of a training-based cell (evaluated after every epoch)."""
    from .unlearn import UnlearnConfig

    budget = {**unlearn_budget(profile), **grid.budget}
    if cell.learning_rate is not None:
        budget["learning_rate"] = cell.learning_rate
    epochs = int(budget["epochs"])
    return UnlearnConfig(method=cell.method, hyper=dict(cell.hyper), seed=cell.seed,
                         eval_epochs=tuple(range(1, epochs + 1)), **budget)


def cell_config(grid: Grid, cell: Cell, data_key: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything that determines a cell's results: the cell, its profile (model, data, fine-tuning
    recipe), the data's content, the evaluation settings and the method's full configuration (a loss's
    defaults included, so changing one makes the cell stale)."""
    profile = grid.profile_for(cell)
    config: dict[str, Any] = {
        "cell": {k: v for k, v in cell.to_dict().items() if k not in ("id", "label")},
        "profile": {**profile.to_dict(),  # the prompt format only where the model family has one (paper)
                    **({"prompt_format": profile.prompt_format.to_dict()} if profile.prompt_format else {})},
        "data": data_key if data_key is not None else _data_key(profile),
        "evaluation": {"max_new_tokens": profile.max_new_tokens, "batch_size": profile.eval_batch_size},
    }
    if cell.kind == "training":
        from .losses import LOSSES

        cfg = unlearn_config(grid, cell, profile)
        config["unlearn"] = {**cfg.to_dict(), "hyper": {**LOSSES[cell.method].defaults, **cfg.hyper}}
    elif cell.kind == "arithmetic":
        from .perta import perta_config

        config["perta"] = dataclasses.asdict(perta_config(profile, **dict(cell.hyper)))
        if config["perta"]["reinforce"]["lora"] is None:  # keys made before LoRA existed hold
            del config["perta"]["reinforce"]["lora"]
        if not config["perta"]["size_matched"]:  # and those made before the size-matched importance
            del config["perta"]["size_matched"]
        config["calibration"] = {"points": lambda_grid_points(profile)}
    return config


def cell_hash(grid: Grid, cell: Cell, data_key: dict[str, Any] | None = None) -> str:
    """The 12-hex-digit hash of :func:`cell_config` and the package version."""
    return config_hash(cell_config(grid, cell, data_key))


def study_dir(grid: Grid, root: Path | None = None) -> Path:
    """Where a grid's cell files live: ``<results>/<grid name>``."""
    return Path(root or results_root()) / grid.name


def cell_path(grid: Grid, cell: Cell, root: Path | None = None) -> Path:
    return study_dir(grid, root) / f"{cell.id}.jsonl"


def cell_status(grid: Grid, cell: Cell, expected_hash: str, root: Path | None = None) -> str:
    """``done`` (a file with the current hash), ``stale`` (a file from another configuration) or ``todo``."""
    header = cell_header(cell_path(grid, cell, root))
    if header is None:
        return "todo"
    return "done" if header.get("config_hash") == expected_hash else "stale"


# ------------------------------------------------------------------------------------------ cost


# Seconds per unit of work on the 2-core machine, before any cell of a study has run (then the study's own
# finished cells set the estimate). Sources: benchmarks/NOTES.md and benchmarks/results/ (cpu: the full
# suite 100 s, the retain fine-tune 918 s, 9 unlearning runs of 5 epochs in 7.6 min); smoke: measured.
COSTS = {
    "smoke": {"finetune": 15.0, "eval": 2.0, "epoch": 1.0, "arithmetic_setup": 10.0},
    "cpu": {"finetune": 1000.0, "eval": 100.0, "epoch": 12.0, "arithmetic_setup": 300.0},
    "paper": {"finetune": 3600.0, "eval": 600.0, "epoch": 120.0, "arithmetic_setup": 1800.0},
}


def n_points(grid: Grid, cell: Cell) -> int:
    """How many evaluations a cell makes."""
    if cell.kind == "reference":
        return 1
    if cell.kind == "arithmetic":
        return len(cell.multiples)
    return int((grid.budget.get("epochs") or unlearn_budget(grid.profile_for(cell))["epochs"]))


def bench_work(bench: Any) -> dict[str, float]:
    """How much a setting asks of each kind of step, in characters of text: ``train``, the questions and
    answers fine-tuned on (the full set: the fine-tunes, an unlearning epoch, the importance passes scale with
    it); ``eval``, the answers of every evaluated split (the suite generates and scores them)."""
    def chars(records: Sequence[dict]) -> float:
        return float(sum(len(r["question"]) + len(r["answer"]) for r in records))

    return {"train": chars(bench.full), "eval": sum(chars(records) for records in bench.splits().values())}


def work_scale(bench: Any, default_bench: Any) -> dict[str, float]:
    """``bench``'s work over ``default_bench``'s (the grid profile's default setting), per kind of step
    (:func:`bench_work`): the factors :data:`COSTS`, timed on the default setting, are scaled by."""
    own, default = bench_work(bench), bench_work(default_bench)
    return {kind: own[kind] / default[kind] if default[kind] else 1.0 for kind in own}


def estimate_seconds(grid: Grid, cell: Cell, finished: Sequence[dict[str, Any]] = (),
                     scale: dict[str, float] | None = None) -> float:
    """A cell's expected wall time: the mean of finished cells of the same method on the same setting (scaled
    by their number of points), else :data:`COSTS`, timed on the profile's default setting, times ``scale``
    (:func:`work_scale`: the cell's setting's work over the default's; 1 when not given)."""
    same = [c for c in finished if c["cell"]["method"] == cell.method and c.get("wall_time_s")
            and c["cell"].get("setting", cell.setting) == cell.setting]
    points = n_points(grid, cell)
    if same:
        per_point = sum(c["wall_time_s"] / max(1, c.get("points", 1)) for c in same) / len(same)
        return per_point * points
    cost = COSTS.get(grid.profile, COSTS["cpu"])
    train, evaluate = (scale or {}).get("train", 1.0), (scale or {}).get("eval", 1.0)
    if cell.kind == "reference":
        return cost["finetune"] * train + cost["eval"] * evaluate
    if cell.kind == "arithmetic":
        return cost["arithmetic_setup"] * train + points * cost["eval"] * evaluate
    return points * (cost["epoch"] * train + cost["eval"] * evaluate)


@dataclass
class Plan:
    """What a study run will do: every cell with its status and hash, and the estimated seconds of the rest."""

    grid: Grid
    rows: list[dict[str, Any]]
    # reference models the cells to run need and the cache lacks, while their cells are done (a fresh cache):
    # {"what": ..., "estimate_s": ...}, paid once before the first cell that needs them
    setup: list[dict[str, Any]] = field(default_factory=list)

    @property
    def todo(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] != "done"]

    @property
    def seconds_left(self) -> float:
        return sum(r["estimate_s"] for r in self.todo) + sum(s["estimate_s"] for s in self.setup)

    def table(self) -> str:
        """The plan as aligned text: one line per cell, then the total."""
        width = max([len(r["cell"].id) for r in self.rows] + [len(s["what"]) + 2 for s in self.setup])
        lines = [f"study {self.grid.name} (profile {self.grid.profile}): {self.grid.description}",
                 f"{'cell':<{width}}  {'status':<6}  {'points':>6}  {'estimate':>9}"]
        for r in self.rows:
            lines.append(f"{r['cell'].id:<{width}}  {r['status']:<6}  {r['points']:>6}  {_duration(r['estimate_s']):>9}")
        for s in self.setup:
            lines.append(f"{'+ ' + s['what']:<{width}}  {'todo':<6}  {'':>6}  {_duration(s['estimate_s']):>9}")
        done = len(self.rows) - len(self.todo)
        lines.append(f"{len(self.rows)} cells, {done} done, {len(self.todo)} to run: about "
                     f"{_duration(self.seconds_left)} on this machine")
        return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def plan(grid: Grid, root: Path | None = None, cells: Sequence[Cell] | None = None) -> Plan:
    """Each cell's hash and status (nothing is trained) and the time the missing ones should take."""
    from .pipeline import benchmark

    cells = list(cells if cells is not None else grid.cells())
    benches: dict[tuple[str, str], Any] = {}  # each setting's benchmark, loaded once for the plan
    data_keys: dict[tuple[str, str], dict[str, Any]] = {}
    finished = []
    rows = []
    for cell in cells:
        key = (cell.setting, cell.forget_split)
        if key not in data_keys:
            benches[key] = benchmark(grid.profile_for(cell))
            data_keys[key] = _data_key(grid.profile_for(cell), benches[key])
        expected = cell_hash(grid, cell, data_keys[key])
        status = cell_status(grid, cell, expected, root)
        rows.append({"cell": cell, "hash": expected, "status": status, "points": n_points(grid, cell)})
    # the time per point of every finished cell of the grid, also those not selected (e.g. by --seeds)
    folder = study_dir(grid, root)
    for path in cell_files(folder) if folder.is_dir() else []:
        header = cell_header(path)
        if header is not None and isinstance(header.get("cell"), dict) and "method" in header["cell"]:
            finished.append({"cell": header["cell"], "wall_time_s": header.get("wall_time_s"),
                             "points": header.get("points", 1)})
    default_bench = None
    scales = {}
    for key, bench in benches.items():  # COSTS were timed on the profile's default setting: scale by the work
        default_bench = default_bench if default_bench is not None else benchmark(get_profile(grid.profile))
        scales[key] = work_scale(bench, default_bench)
    for row in rows:
        cell = row["cell"]
        row["estimate_s"] = estimate_seconds(grid, cell, finished, scales.get((cell.setting, cell.forget_split)))
    return Plan(grid, rows, missing_reference_models(grid, rows, benches, scales))


def missing_reference_models(grid: Grid, rows: Sequence[dict[str, Any]],
                             benches: dict[tuple[str, str], Any] | None = None,
                             scales: dict[tuple[str, str], dict[str, float]] | None = None) -> list[dict[str, Any]]:
    """The reference models that the cells to run will fine-tune first because the cache lacks them, though
    their own cells are done (a fresh cache beside committed results): every cell needs the target model,
    the reference cell of the retain model and TV / PerTA's lambda calibration the retain model. A missing
    model whose cell is still to run is already in that cell's estimate. ``benches``: the benchmarks already
    loaded, by (setting, forget split); ``scales``: their :func:`work_scale` (a fine-tune's estimate scales with
    its setting's training text)."""
    from . import pipeline
    from .training import reference_cached

    cost = COSTS.get(grid.profile, COSTS["cpu"])
    setup = []
    for key in dict.fromkeys((r["cell"].setting, r["cell"].forget_split) for r in rows if r["status"] != "done"):
        here = [r for r in rows if (r["cell"].setting, r["cell"].forget_split) == key]
        todo = [r["cell"] for r in here if r["status"] != "done"]
        own_cell_todo = {r["cell"].method for r in here if r["cell"].kind == "reference" and r["status"] != "done"}
        needed = ["target"]
        if any(c.kind == "arithmetic" or c.method == "retain" for c in todo):
            needed.append("retain")
        profile = grid.profile_for(todo[0])
        bench = (benches or {}).get(key)
        for role in needed:
            if role in own_cell_todo:
                continue
            bench = bench if bench is not None else pipeline.benchmark(profile)
            if not reference_cached(profile, bench, role):
                setup.append({"what": f"fine-tune the {role} model ({key[0]}, {key[1]}): not cached",
                              "estimate_s": cost["finetune"] * (scales or {}).get(key, {}).get("train", 1.0)})
    return setup


# ------------------------------------------------------------------------------------------ running


@dataclass
class _Context:
    """What the cells of one setting and split share: the profile, the benchmark, the reference models. The
    retain model is fine-tuned only when a cell first asks for it (its own reference cell, and the lambda
    calibration of TV and PerTA): a study of training-based methods whose retain cell is done needs only the
    target model."""

    profile: Profile
    bench: Any
    target: Path
    retain_items: dict[str, Any] | None = None
    _retain: Path | None = None

    @property
    def retain(self) -> Path:
        if self._retain is None:
            from .training import reference_model

            self._retain = reference_model(self.profile, self.bench, "retain", progress=False)
        return self._retain


def _context(grid: Grid, cell: Cell, contexts: dict[tuple[str, str], _Context]) -> _Context:
    key = (cell.setting, cell.forget_split)
    if key not in contexts:
        from . import pipeline
        from .training import reference_model

        profile = grid.profile_for(cell)
        bench = pipeline.benchmark(profile)
        contexts[key] = _Context(profile, bench, reference_model(profile, bench, "target", progress=False))
    return contexts[key]


def _evaluate(model: Any, tokenizer: Any, ctx: _Context) -> dict[str, Any]:
    from .evaluation import evaluate

    result = evaluate(model, tokenizer, ctx.bench, max_new_tokens=ctx.profile.max_new_tokens,
                      batch_size=ctx.profile.eval_batch_size, progress=False)
    return result["per_item"]


def point_payload(rows: Sequence[dict[str, Any]], point: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """The ``per_item`` payload of one evaluated point of a cell file (its ``rows``, :func:`store.read_rows`),
    rebuilt from the point's item rows (``meta``: its summary row's, for the forget split and hash)."""
    from .store import per_item_payload

    items = [r for r in rows if r["row"] == "item" and r["point"] == point]
    return per_item_payload(items, meta["forget_split"], meta["forget_hash"])


def _retain_payload(path: Path) -> dict[str, Any]:
    """The retain cell's per-item payload, from its file: every other cell's forget-quality reference."""
    from .store import read_rows

    rows = read_rows(path)
    summary = next(r for r in rows if r["row"] == "summary")
    return point_payload(rows, summary["point"], summary["meta"])


def _retain_items(grid: Grid, ctx: _Context, cell: Cell, root: Path | None) -> dict[str, Any]:
    """The retain model's per-item payload (from its cell file): the forget-quality reference."""
    if ctx.retain_items is None:
        ctx.retain_items = _retain_payload(cell_path(grid, Cell(cell.setting, cell.forget_split, "retain"), root))
    return ctx.retain_items


def _run_reference(cell: Cell, ctx: _Context, scratch: Path) -> list[tuple[dict, dict]]:
    from .models import load_model

    model, tokenizer = load_model(str(ctx.target if cell.method == "target" else ctx.retain), seed=ctx.profile.seed)
    return [({}, _evaluate(model, tokenizer, ctx))]


def _run_training(grid: Grid, cell: Cell, ctx: _Context, scratch: Path) -> list[tuple[dict, dict]]:
    from .models import load_model
    from .unlearn import unlearn

    cfg = unlearn_config(grid, cell, ctx.profile)
    model, tokenizer = load_model(str(ctx.target), seed=ctx.profile.seed)
    result = unlearn(model, tokenizer, ctx.bench, cfg, scratch, progress=False,
                     evaluate=lambda m: {"per_item": _evaluate(m, tokenizer, ctx)})
    return [({"epoch": t["epoch"]}, t["per_item"]) for t in result.trajectory]


def _importance_profile(ctx: _Context, seeded: Profile, cfg: Any) -> Profile:
    """The importances use every example (fraction 1), so they do not depend on the seed: computed once
    with the profile's seed and shared by every seed's cell; a random subset is drawn with the cell's seed."""
    return ctx.profile if cfg.fraction == 1 else seeded


def _run_arithmetic(cell: Cell, ctx: _Context, scratch: Path) -> list[tuple[dict, dict]]:
    from . import perta
    from .models import load_model

    seeded = ctx.profile.replace(seed=cell.seed)  # the reinforcement fine-tune's seed: a different tau
    cfg = perta.perta_config(ctx.profile)
    # tau from the seeded reinforcement, keyed by theta_ft's configuration: theta_ft is scratch once tau is
    # cached (no notebook shows its answers; it fine-tunes again in about 85 s on the cpu profile)
    tau = perta.reinforced_task_vector(seeded, ctx.bench, ctx.target, cfg, progress=False, keep_finetuned=False)
    calibration = perta.calibrate_lambda(seeded, ctx.bench, ctx.target, ctx.retain,
                                         points=lambda_grid_points(ctx.profile), cfg=cfg)
    recipe = cfg.replace(**dict(cell.hyper))  # the cell's changes to the weights (tau and lambda* are shared)
    weights = (None if cell.method == "tv" else
               perta.perta_weights_for(_importance_profile(ctx, seeded, recipe), ctx.bench, ctx.target,
                                       cell.method, recipe, progress=False))
    target, tokenizer = load_model(str(ctx.target), seed=ctx.profile.seed)
    points = []
    for i, multiple in enumerate(cell.multiples):
        lam = float(f"{calibration['lam_star'] * multiple:.4g}")
        done = scratch / f"point-{i}.json"  # a sweep killed midway resumes at its first missing lambda
        if done.is_file():
            per_item = json.loads(done.read_text())
        else:
            per_item = _evaluate(perta.perta_unlearn(target, tau, weights, lam), tokenizer, ctx)
            atomic_write_json(done, per_item)
        points.append(({"lambda": lam, "multiple": multiple, "lam_star": calibration["lam_star"]}, per_item))
    return points


def scratch_entries(cell: Cell, ctx: _Context) -> set[Path]:
    """The large cache entries a task-arithmetic cell reads and no notebook needs kept: its seed's theta_ft
    and tau and, for PerTA, the forget and retain importances. Paths computed from configurations; they
    need not exist. Empty for other cells."""
    if cell.kind != "arithmetic":
        return set()
    from . import perta

    seeded = ctx.profile.replace(seed=cell.seed)
    cfg = perta.perta_config(ctx.profile)
    entries = {perta.reinforced_task_vector_path(seeded, ctx.bench, ctx.target, cfg),
               perta.reinforced_entry(seeded, ctx.bench, ctx.target, cfg)}
    if cell.method != "tv":
        recipe = cfg.replace(**dict(cell.hyper))
        entries.update(perta.weights_entries(_importance_profile(ctx, seeded, recipe), ctx.bench, ctx.target,
                                             cell.method, recipe))
    return entries


def release_entries(grid: Grid, cell: Cell, later: Sequence[Cell], contexts: dict[tuple[str, str], _Context]) -> list[Path]:
    """After ``cell`` ran, delete its :func:`scratch_entries` that none of the ``later`` cells of this run
    reads (a seed's tau after that seed's last task-arithmetic cell, the importances after the last PerTA
    cell). A later study that needs one again rebuilds it, deterministically. Returns the entries deleted."""
    if cell.kind != "arithmetic":
        return []
    ctx = _context(grid, cell, contexts)
    needed: set[Path] = set()
    for other in later:
        if other.kind == "arithmetic" and (other.setting, other.forget_split) == (cell.setting, cell.forget_split):
            needed |= scratch_entries(other, ctx)
    # in sorted order (not the set's, which follows str hashing and changes from one process to the next)
    return [path for path in sorted(scratch_entries(cell, ctx) - needed) if remove_entry(path)]


def _machine() -> dict[str, Any]:
    """Where a cell ran (not part of its hash): the numbers of a configuration differ in the last digits
    between machines, and a CPU without native bf16 trains a bf16 recipe in fp32 (:func:`~palu_perta.training.use_bf16`)."""
    import platform

    import torch

    from .training import cpu_has_native_bf16

    return {"torch": torch.__version__, "device": "cuda" if torch.cuda.is_available() else "cpu",
            "cpu": torch.backends.cpu.get_cpu_capability(), "native_bf16": cpu_has_native_bf16(),
            "threads": torch.get_num_threads(), "python": platform.python_version()}


def run_cell(grid: Grid, cell: Cell, expected_hash: str, contexts: dict[tuple[str, str], _Context],
             root: Path | None = None) -> Path:
    """Compute one cell and write its results file; returns the file's path."""
    from .evaluation import summarise

    ctx = _context(grid, cell, contexts)
    results = str(study_dir(grid, root).resolve())
    where = hashlib.sha256(results.encode()).hexdigest()[:8]  # two results directories never share a scratch folder
    scratch = artifacts_root() / "study-scratch" / f"{grid.name}-{cell.id}-{expected_hash}-{where}"
    scratch.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if cell.kind == "reference":
        points = _run_reference(cell, ctx, scratch)
    elif cell.kind == "training":
        points = _run_training(grid, cell, ctx, scratch)
    else:
        points = _run_arithmetic(cell, ctx, scratch)
    reference = points[0][1] if cell.method == "retain" else _retain_items(grid, ctx, cell, root)
    header = {"cell": cell.to_dict(), "config_hash": expected_hash, "palu_perta": __version__,
              "wall_time_s": round(time.perf_counter() - start, 1), "points": len(points), "machine": _machine()}
    path = write_cell(cell_path(grid, cell, root), header,
                      ((point, summarise(per_item, reference), per_item) for point, per_item in points))
    shutil.rmtree(scratch, ignore_errors=True)
    return path


def stale_cells(grid: Grid, root: Path | None = None) -> list[str]:
    """The results files of ``grid`` that the current code would not reproduce, each with the reason: a
    configuration hash that differs from the one the code computes for that cell now, or a cell the grid
    no longer declares. Empty when every committed result is current."""
    from .store import cell_files

    declared = {c.id: c for c in grid.cells()}
    data_keys: dict[tuple[str, str], dict[str, Any]] = {}
    problems = []
    for path in cell_files(study_dir(grid, root)):
        header = cell_header(path)
        if header is None:
            problems.append(f"{path.name}: no cell row (an unfinished or corrupt file)")
            continue
        cell = Cell.from_dict(header["cell"])
        if cell.id not in declared or declared[cell.id] != cell:
            problems.append(f"{path.name}: grid {grid.name!r} no longer declares this cell")
            continue
        key = (cell.setting, cell.forget_split)
        if key not in data_keys:
            data_keys[key] = _data_key(grid.profile_for(cell))
        current = cell_hash(grid, cell, data_keys[key])
        if header.get("config_hash") != current:
            problems.append(f"{path.name}: recorded hash {header.get('config_hash')}, the code now computes {current}")
    return problems


def resummarise(grid: Grid, root: Path | None = None) -> list[str]:
    """Recompute every summary row of a study's results from its item rows, against the retain cell's items
    (as :func:`run_cell` scores them), and rewrite the files whose summaries change (atomically; the cell rows,
    hashes and item rows are kept). For a fix in :func:`palu_perta.evaluation.summarise` that leaves every
    per-item number as it was (no cell must be rerun). Returns the ids of the cells rewritten."""
    from .evaluation import summarise
    from .store import _round, read_rows

    folder = study_dir(grid, root)
    changed = []
    retain_payloads = {(setting, split): _retain_payload(path) for setting in grid.settings for split in grid.splits
                       if (path := cell_path(grid, Cell(setting, split, "retain"), root)).is_file()}
    for path in cell_files(folder):
        rows = read_rows(path)
        cell = Cell.from_dict(rows[0]["cell"])
        reference = retain_payloads.get((cell.setting, cell.forget_split))
        if reference is None:
            continue  # no retain cell: nothing to score against
        new_rows = []
        for row in rows:
            if row["row"] == "summary":
                own = point_payload(rows, row["point"], row["meta"])
                summary = summarise(own, own if cell.method == "retain" else reference)
                fresh = json.loads(json.dumps(_round({k: v for k, v in summary.items() if k != "meta"})))
                # a value that moved only within the items' rounding (7 digits) keeps its stored digits
                metrics = {k: row["metrics"][k] if _same_number(row["metrics"].get(k), v) else v for k, v in fresh.items()}
                meta = {**row["meta"], "privleak_reference_auc": summary["meta"]["privleak_reference_auc"]}
                row = {**row, "metrics": metrics, "meta": meta}
            new_rows.append(row)
        if new_rows != rows:
            atomic_write_text(path, "\n".join(json.dumps(r, sort_keys=True, default=float) for r in new_rows) + "\n")
            changed.append(cell.id)
    return changed


def _same_number(a: Any, b: Any, rel: float = 1e-5) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return a == b or abs(a - b) <= rel * max(1.0, abs(a), abs(b))
    return a == b


def stored_points(profile: Profile, method: str, hyper: dict[str, Any] | None = None, grid_name: str | None = None,
                  root: Path | None = None, bench: Any = None) -> list[dict[str, Any]]:
    """The evaluated points a finished, current cell of the profile's study holds for ``method`` run exactly as a
    notebook runs it on ``profile`` (its seed, the method's defaults or ``hyper``): one dict per point, its
    ``point`` (``{"lambda": ...}`` or ``{"epoch": ...}``) and its summary ``metrics``. Empty when no cell of the
    grid (default: the one named like the profile) is that run, or its results are missing or stale: the
    notebook then computes the points itself. Reads the results store only; trains nothing. ``bench``: the
    notebook's benchmark, whose content the cell's hash must match (default: the profile's, loaded here)."""
    from .store import read_rows

    name = grid_name or profile.name
    if name not in GRIDS:
        return []
    grid = GRIDS[name]
    wanted = tuple(sorted((hyper or {}).items()))
    for cell in grid.cells():
        if (cell.method, cell.seed, cell.hyper) != (method, profile.seed, wanted) or cell.learning_rate is not None:
            continue
        if grid.profile_for(cell) != profile:
            continue
        if cell_status(grid, cell, cell_hash(grid, cell, _data_key(profile, bench)), root) != "done":
            return []
        return [{"point": row["point"], "metrics": row["metrics"]}
                for row in read_rows(cell_path(grid, cell, root)) if row["row"] == "summary"]
    return []


def select(cells: Iterable[Cell], methods: Sequence[str] | None = None, seeds: Sequence[int] | None = None) -> list[Cell]:
    """The cells of the given methods and seeds (the reference models are always kept)."""
    return [c for c in cells if c.kind == "reference" or
            ((methods is None or c.method in methods) and (seeds is None or c.seed in seeds))]


@contextlib.contextmanager
def claim_cell(grid: Grid, cell: Cell, root: Path | None = None) -> Iterator[bool]:
    """Hold an exclusive lock on ``cell`` for the block (an OS file lock on ``.<cell id>.lock`` beside its
    results file, released when the block ends or the process dies, SIGKILL included): yields True when this
    process holds it, False when another process does. So two study processes on one results directory (one
    per core or per GPU) never compute the same cell; each skips what the other runs. Where the OS has no
    ``fcntl`` (Windows) every claim succeeds: run one process per results directory there."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield True
        return
    folder = study_dir(grid, root)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f".{cell.id}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def run_study(grid: Grid, root: Path | None = None, cells: Sequence[Cell] | None = None, progress: bool = True,
              log: Callable[[str], None] = print, release: bool = True) -> Plan:
    """Run every cell that is not done (stale ones are recomputed), in the grid's order, with one
    progress bar over the estimated seconds. With ``release`` each cell's scratch cache entries are deleted
    once no later cell of the run reads them (:func:`release_entries`). Returns the plan it ran."""
    from tqdm.auto import tqdm

    todo_plan = plan(grid, root, cells)
    log(todo_plan.table())
    contexts: dict[tuple[str, str], _Context] = {}
    bar = tqdm(total=round(todo_plan.seconds_left), unit="s", desc=f"study {grid.name}", disable=not progress,
               bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} est. s [{elapsed}<{remaining}]{postfix}")
    todo = todo_plan.todo
    for i, row in enumerate(todo):
        bar.set_postfix_str(row["cell"].id)
        ran = False
        with claim_cell(grid, row["cell"], root) as claimed:
            if not claimed:
                log(f"{row['cell'].id}: another process is running it; skipped")
            elif cell_status(grid, row["cell"], row["hash"], root) == "done":
                log(f"{row['cell'].id}: done by another process meanwhile; skipped")
            else:
                run_cell(grid, row["cell"], row["hash"], contexts, root)
                ran = True
        if release and ran:  # a skipped cell's scratch entries may be in use by the process that runs it
            release_entries(grid, row["cell"], [r["cell"] for r in todo[i + 1:]], contexts)
        bar.update(round(row["estimate_s"]))
    bar.close()
    return todo_plan
