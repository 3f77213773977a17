"""Lab plans that fit, and the students' copies of the notebooks.

A lab is a list of slots; a slot is one notebook, the sections read in it, the exercises done and the
minutes of discussion. Its budget, in minutes::

    words of its sections / 200  +  5 x exercises  +  the notebook's run time (cpu, cached)  +  discussion

The words are those of the sections' markdown cells (:func:`notebook_sections`); an exercise is a code cell
that calls ``check("NN.key", ...)`` (:mod:`palu_perta.exercises`); the run time is the notebook's latest
run that built no cache entry, read from ``benchmarks/results/notebook_runs.jsonl``
(:func:`latest_cached_runs`). ``docs/teaching.md`` holds the budgets between marker lines; regenerate them
with ``python -m palu_perta.teaching --write`` (``tests/test_teaching.py`` fails when they are stale, so
editing a notebook's prose flags the plan).

``python -m palu_perta.teaching student [--out DIR] [--force]`` (``make student``) writes copies of the
notebooks without outputs, for prediction-style teaching: the exercise stubs stay, no solution is copied.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

from .pages import splice_block
from .paths import repo_root

# The reading rate and the time per exercise of issue 21 (item 6): "words to read at about 200 per minute,
# about 5 minutes per exercise".
WORDS_PER_MINUTE = 200
MINUTES_PER_EXERCISE = 5.0
PROFILE = "cpu"  # the run times are the cpu profile's: the one a class runs on laptops
INTRO = "intro"  # the section name of the cells before a notebook's first `## ` heading
CHECK = re.compile(r"""\bcheck\(\s*["'](\d\d\.\w+)["']""")  # an exercise cell: check("06.onset_mask", ...)
STUB = "NotImplementedError"  # what an exercise cell holds until the student writes the function
DOC = Path("docs") / "teaching.md"
RUNS = Path("benchmarks") / "results" / "notebook_runs.jsonl"

# The cache of notebooks 01-07 on the cpu profile, computed from the sizes of its entries, not measured (no
# full cpu cache is on the machine that wrote this). Sizes: benchmarks/NOTES.md, "The cpu study's cache": a
# SmolLM2-135M model directory 541.7 MB, a task vector 538.1 MB, an importance map the same tensors as a task
# vector (fp32 safetensors). Counts: the five models the cpu profile starts from (base, target and retain,
# the last two with their `mix = 1` fine-tunes; same section), plus the weight-holding entries built by the
# rerun for the replay target (benchmarks/NOTES.md, "End to end": the records from 2026-11-24T16:24 to the
# one of notebook 07).
MODEL_MB = 541.7
TENSORS_MB = 538.1
REFERENCE_MODELS = 5
RERUN = ("2026-11-24T16:24:34+00:00", "2026-11-24T19:34:16+00:00")  # first and last record of that rerun
MODEL_KINDS = ("models", "unlearned")  # a whole model per entry
TENSOR_KINDS = ("task_vectors", "importance")  # one fp32 tensor per parameter per entry


def _root() -> Path:
    root = repo_root()
    if root is None:
        raise FileNotFoundError("palu_perta.teaching needs the checkout (notebooks/, docs/, benchmarks/): "
                                "install it with `pip install -e .` from a clone")
    return root


# ----------------------------------------------------------------------------- counting a notebook


@dataclass(frozen=True)
class Section:
    """One ``## `` section of a notebook: its title (:data:`INTRO` before the first heading), the words of its
    markdown cells, heading included, and the keys of the exercises its code cells check."""

    title: str
    words: int
    exercises: tuple[str, ...]


def count_words(text: str) -> int:
    """The words of ``text``: whitespace-separated tokens with at least one letter or digit (a lone ``-``,
    ``|---|`` or ``$`` is not a word)."""
    return sum(1 for token in text.split() if any(ch.isalnum() for ch in token))


def exercise_keys(source: str) -> list[str]:
    """The exercises a code cell checks: the keys of its ``check("NN.key", ...)`` calls, in order."""
    return CHECK.findall(source)


def notebook_sections(notebook: nbformat.NotebookNode) -> list[Section]:
    """The notebook's sections in order: a markdown line starting with ``## `` (outside a fenced code block)
    opens one; the cells before the first heading are :data:`INTRO`. Each has its words and exercises."""
    titles, words, exercises = [INTRO], {INTRO: 0}, {INTRO: []}
    for cell in notebook.cells:
        current = titles[-1]
        if cell.cell_type == "markdown":
            fenced = False
            for line in cell.source.splitlines():
                if line.lstrip().startswith("```"):
                    fenced = not fenced
                elif line.startswith("## ") and not fenced:
                    current = line[3:].strip()
                    if current in words:
                        raise ValueError(f"two sections are titled {current!r}: give them different titles")
                    titles.append(current)
                    words[current], exercises[current] = 0, []
                words[current] += count_words(line)
        elif cell.cell_type == "code":
            exercises[current] += exercise_keys(cell.source)
    return [Section(t, words[t], tuple(exercises[t])) for t in titles if t != INTRO or words[t] or exercises[t]]


def read_notebook(path: str | Path) -> nbformat.NotebookNode:
    """The notebook at ``path`` (nbformat 4)."""
    return nbformat.read(str(path), as_version=4)


def notebook_path(name: str, folder: Path | None = None) -> Path:
    """``notebooks/<name>.ipynb`` of the checkout (``name`` is a stem such as ``06_palu``)."""
    path = (folder or _root() / "notebooks") / f"{name}.ipynb"
    if not path.is_file():
        raise FileNotFoundError(f"no notebook {path}; the notebooks are "
                                f"{[p.stem for p in _numbered(path.parent)]}")
    return path


def _numbered(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("[0-9][0-9]*.ipynb") if not p.name.endswith(".failed.ipynb"))


# ----------------------------------------------------------------------------- run times


@dataclass(frozen=True)
class Run:
    """One notebook's time in one record of the runner: seconds, and when that run finished."""

    notebook: str
    seconds: float
    finished: str

    @property
    def minutes(self) -> float:
        return self.seconds / 60


def load_runs(path: Path | None = None) -> list[dict[str, Any]]:
    """The records of ``benchmarks/results/notebook_runs.jsonl`` (one per run of the notebook runner)."""
    path = path or _root() / RUNS
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `python -m palu_perta.notebooks --profile cpu` "
                                "(it appends a record per run)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def built_nothing(record: dict[str, Any]) -> bool:
    """True for a cached run: the record's run changed no cache entry (``cache_entries_built`` empty)."""
    return not record["cache_entries_built"]


def _latest(records: Iterable[dict[str, Any]], profile: str, keep) -> dict[str, Run]:
    latest: dict[str, Run] = {}
    for record in sorted(records, key=lambda r: r["finished"]):
        if record["profile"] != profile or not keep(record):
            continue
        for name, seconds in record["notebooks_s"].items():
            folder, stem = name.split("/", 1)
            if folder == "notebooks":
                latest[stem] = Run(stem, float(seconds), record["finished"])
    return latest


def latest_cached_runs(records: Iterable[dict[str, Any]], profile: str = PROFILE) -> dict[str, Run]:
    """Per notebook stem, its run in the latest record of ``profile`` that built no cache entry: the time a
    student waits with the teacher's cache in place."""
    return _latest(records, profile, built_nothing)


def latest_building_runs(records: Iterable[dict[str, Any]], profile: str = PROFILE) -> dict[str, Run]:
    """Per notebook stem, its run in the latest record of ``profile`` that built at least one cache entry
    (the time of a notebook that trained what it needs, when it is the one that built them)."""
    return _latest(records, profile, lambda r: any(n > 0 for n in r["cache_entries_built"].values()))


# ----------------------------------------------------------------------------- labs


@dataclass(frozen=True)
class Slot:
    """One notebook in a lab: the sections read (``"intro"``, a section's number or letter such as ``"1"`` or
    ``"A"``, or its full title such as ``"Exercises"``), the exercises done (keys), the minutes of discussion
    and what happens, for the teacher. ``run_before``: the students run the notebook before the lab (its
    run time is their preparation, shown but not counted in the lab's minutes)."""

    notebook: str
    sections: tuple[str, ...]
    exercises: tuple[str, ...]
    discussion: float
    activity: str
    run_before: bool = False


@dataclass(frozen=True)
class Lab:
    """A lab of ``length`` minutes: its slots in order."""

    key: str
    title: str
    length: float
    slots: tuple[Slot, ...]


@dataclass(frozen=True)
class SlotBudget:
    """A slot's minutes: reading (words / 200), exercises (5 each), the notebook's run (``None``: counted in
    an earlier slot of the same lab, or run before the lab: then ``before`` holds it) and discussion."""

    slot: Slot
    titles: tuple[str, ...]
    words: int
    run: Run | None
    before: Run | None = None

    @property
    def reading(self) -> float:
        return self.words / WORDS_PER_MINUTE

    @property
    def exercise_minutes(self) -> float:
        return MINUTES_PER_EXERCISE * len(self.slot.exercises)

    @property
    def run_minutes(self) -> float:
        return self.run.minutes if self.run else 0.0

    @property
    def minutes(self) -> float:
        return self.reading + self.exercise_minutes + self.run_minutes + self.slot.discussion


def select_sections(sections: Sequence[Section], selectors: Sequence[str], notebook: str = "") -> list[Section]:
    """The sections ``selectors`` name, in the notebook's order: a selector matches a title equal to it or
    starting with it and a dot (``"1"`` is ``"1. The splits"``). ValueError for one that matches none or
    several."""
    chosen = []
    for selector in selectors:
        found = [s for s in sections if s.title == selector or s.title.startswith(selector + ".")]
        if len(found) != 1:
            what = "no" if not found else f"{len(found)}"
            raise ValueError(f"{what} section of {notebook or 'the notebook'} matches {selector!r}; its sections are "
                             f"{[s.title for s in sections]}")
        chosen.append(found[0])
    return [s for s in sections if s in chosen]


def slot_budget(slot: Slot, sections: Sequence[Section], run: Run | None) -> SlotBudget:
    """The budget of ``slot`` given its notebook's ``sections`` and run (``None``: already counted).
    ValueError when an exercise is not in the sections read (read the Exercises section to do one)."""
    chosen = select_sections(sections, slot.sections, slot.notebook)
    available = {key for s in chosen for key in s.exercises}
    missing = [key for key in slot.exercises if key not in available]
    if missing:
        raise ValueError(f"{slot.notebook}: the exercises {missing} are not in the sections {list(slot.sections)} "
                         f"(they are checked in {[s.title for s in sections if set(missing) & set(s.exercises)]})")
    return SlotBudget(slot, tuple(s.title for s in chosen), sum(s.words for s in chosen), run)


def lab_budget(lab: Lab, notebooks: dict[str, Sequence[Section]], runs: dict[str, Run]) -> list[SlotBudget]:
    """Every slot's budget; a notebook's run time counts once per lab, in its first slot. KeyError naming the
    fix when a notebook has no cached run."""
    budgets, seen = [], set()
    for slot in lab.slots:
        if slot.notebook not in runs:
            raise KeyError(f"no cached {PROFILE} run of {slot.notebook} in {RUNS}: run `python -m "
                           f"palu_perta.notebooks --profile {PROFILE} {slot.notebook[:2]}` where the cache holds "
                           "what it needs (a run that builds nothing)")
        run = None if slot.notebook in seen else runs[slot.notebook]
        budget = slot_budget(slot, notebooks[slot.notebook], None if slot.run_before else run)
        budgets.append(dataclasses.replace(budget, before=run) if slot.run_before else budget)
        seen.add(slot.notebook)
    return budgets


def total_minutes(budgets: Sequence[SlotBudget]) -> float:
    """The lab's minutes: the sum of its slots'."""
    return sum(b.minutes for b in budgets)


# The labs. Discussion minutes are the plan's choice; sections and exercises name the notebooks' own.
LABS: tuple[Lab, ...] = (
    Lab("palu", "PALU lab (90 minutes)", 90, (
        Slot("00_quickstart", ("intro", "1", "2", "3", "4", "6", "7", "Exercises"), ("00.rouge_l_recall",), 5,
             "the students run it before the lab (it trains its own models: the run column); the teacher "
             "introduces unlearning and TOFU; PALU's picture in section 4; what 'forgotten' means (section 3's "
             "two measures)", run_before=True),
        Slot("01_data", ("intro", "1", "2", "3", "Exercises"), ("01.token_classes",), 3,
             "the benchmark and the sensitive spans: which tokens PALU will act on (a short discussion: the "
             "questions it raises come back in 06)"),
        Slot("02_finetune", ("intro", "1", "2", "3", "5", "Exercises"), ("02.truth_ratio",), 5,
             "the target and retain models; what forget quality and model utility measure (the exercise on "
             "forget quality is homework)"),
        Slot("06_palu", ("intro", "1", "2", "3", "Exercises"), ("06.onset_mask", "06.palu_local"), 10,
             "the loss on one example, then PALU against the baselines on one budget; does its claim hold here?"),
        Slot("08_paper_figures", ("5",), (), 5,
             "the verdicts at matched forgetting, with error bars: PALU against GradDiff and NPO, and PALU's 2 x 2"),
    )),
    Lab("perta", "PerTA lab (90 minutes)", 90, (
        Slot("00_quickstart", ("intro", "1", "3", "5", "6", "Exercises"), ("00.smallest_lambda",), 5,
             "the students run it before the lab (it trains its own models); the teacher introduces "
             "unlearning; PerTA's picture in section 5", run_before=True),
        Slot("03_task_vectors", ("intro", "3", "4", "6", "8", "Exercises"), ("03.task_vector", "03.negate"), 5,
             "the task vector, its negation (TV), and how lambda is chosen"),
        Slot("04_importance", ("intro", "1", "3", "4", "Exercises"),
             ("04.grad_importance", "04.fisher", "04.perta_weights"), 5,
             "gradient and Fisher importance, and PerTA's weights w = I_f / (I_f + I_r)"),
        Slot("05_perta", ("intro", "5", "6", "Exercises"), ("05.perta_update",), 5,
             "PerTA against TV at equal forgetting, and when PerTA has little to win"),
        Slot("08_paper_figures", ("5",), (), 5,
             "the verdicts at matched forgetting, with error bars: PerTA against TV"),
    )),
    Lab("short", "45-minute variant", 45, (
        Slot("00_quickstart", ("intro", "1", "2", "3", "4", "5", "6", "7", "Exercises"), ("00.rouge_l_recall",), 5,
             "one author forgotten with PALU and with PerTA, start to finish (the students run it before the "
             "lab)", run_before=True),
        Slot("06_palu", ("1", "Exercises"), ("06.onset_mask",), 5,
             "PALU's loss on one example: the onset tokens and the local loss (its exercises are homework)"),
    )),
    Lab("ablations", "Follow-up on why the methods work (45 minutes)", 45, (
        Slot("07_ablations", ("intro", "A", "B"), ("07.k1_is_pdu", "07.top_overlap", "07.read_controls"),
             14,
             "A0 (how much of PALU's place comes from the step size), A5 (the paper's central claim, 2 x 2), "
             "B's controls (do PerTA's weights do the work at equal forgetting?); every verdict rests on one run "
             "of 20 forget answers: how large must a difference be to mean anything?"),
    )),
)


def all_sections(names: Iterable[str], folder: Path | None = None) -> dict[str, list[Section]]:
    """The sections of each named notebook (stems)."""
    return {name: notebook_sections(read_notebook(notebook_path(name, folder))) for name in dict.fromkeys(names)}


# ----------------------------------------------------------------------------- rendering


def _m(minutes: float) -> str:
    return f"{minutes:.1f}"


def lab_table(lab: Lab, budgets: Sequence[SlotBudget]) -> str:
    """One lab's budget as a markdown table, slot by slot, with its total against its length."""
    lines = [f"### {lab.title}", "",
             "| minutes | notebook: sections | what happens | words | reading | exercises | run | discussion | slot |",
             "|---|---|---|---:|---:|---|---:|---:|---:|"]
    start = 0.0
    for b in budgets:
        end = start + b.minutes
        exercises = ", ".join(f"`{k}`" for k in b.slot.exercises) or "none"
        run = _m(b.run_minutes) if b.run else f"before the lab ({_m(b.before.minutes)})" if b.before else "(above)"
        lines.append(f"| {_m(start)}-{_m(end)} | `{b.slot.notebook}`: {', '.join(b.slot.sections)} | {b.slot.activity} "
                     f"| {b.words:,} | {_m(b.reading)} | {exercises} ({_m(b.exercise_minutes)}) | {run} | "
                     f"{_m(b.slot.discussion)} | {_m(b.minutes)} |")
        start = end
    total = total_minutes(budgets)
    lines.append(f"| **total** | | | {sum(b.words for b in budgets):,} | {_m(sum(b.reading for b in budgets))} | "
                 f"{sum(len(b.slot.exercises) for b in budgets)} ({_m(sum(b.exercise_minutes for b in budgets))}) | "
                 f"{_m(sum(b.run_minutes for b in budgets))} | {_m(sum(b.slot.discussion for b in budgets))} | "
                 f"**{_m(total)} of {lab.length:g}** |")
    verdict = (f"Fits: {_m(total)} of {lab.length:g} minutes, {_m(lab.length - total)} to spare." if total <= lab.length
               else f"Does not fit: {_m(total)} of {lab.length:g} minutes, {_m(total - lab.length)} over.")
    lines += ["", verdict]
    return "\n".join(lines)


def labs_markdown(labs: Sequence[Lab] = LABS, folder: Path | None = None,
                  records: list[dict[str, Any]] | None = None) -> str:
    """Every lab's table, then where the run times come from (the notebooks and run records of the checkout
    unless ``folder`` / ``records`` are given)."""
    records = load_runs() if records is None else records
    runs = latest_cached_runs(records)
    notebooks = all_sections((s.notebook for lab in labs for s in lab.slots), folder)
    parts = [
        f"Minutes per slot = words of its sections / {WORDS_PER_MINUTE} + {MINUTES_PER_EXERCISE:g} per exercise "
        f"+ the notebook's run time + discussion. Words: the sections' markdown cells (`palu_perta.teaching."
        f"count_words`); exercises: the `check(...)` cells done; run: the notebook's latest {PROFILE}-profile run "
        "that built no cache entry, on the 2-core development machine (a notebook's run counts once per lab; "
        "one the students run before the lab, as preparation, is shown but not counted); "
        "discussion: the plan's choice. Sections are the notebooks' `## ` headings by number or letter (intro: "
        "before the first)."]
    for lab in labs:
        parts.append(lab_table(lab, lab_budget(lab, notebooks, runs)))
    used = sorted({s.notebook for lab in labs for s in lab.slots})
    by_record: dict[str, list[str]] = {}
    for name in used:
        by_record.setdefault(runs[name].finished, []).append(f"`{name}` {runs[name].seconds:.1f} s")
    parts.append("Run times, from `benchmarks/results/notebook_runs.jsonl`: "
                 + "; ".join(f"the record finished {when}: {', '.join(names)}" for when, names in by_record.items())
                 + ".")
    return "\n\n".join(parts)


def makefile_install(makefile: str, python: str = "python3", venv_python: str = ".venv/bin/python",
                     null: str = "/dev/null") -> list[str]:
    """The Makefile's install recipe (the ``$(STAMP)`` rule) as shell lines, its comments kept: ``$(PYTHON)``,
    ``$(VENV)`` and ``$(PY)`` spelled out, the stamp's ``touch`` (make's bookkeeping) left out."""
    lines = makefile.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("$(STAMP):"))
    except StopIteration:
        raise ValueError("the Makefile has no `$(STAMP):` rule (the install recipe)") from None
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        command = line[1:].replace("$(PYTHON)", python).replace("$(PY)", venv_python).replace("$(VENV)", ".venv")
        if command.startswith("touch "):
            continue
        recipe.append(command.replace("/dev/null", null))
    return recipe


def install_markdown(makefile: str | None = None) -> str:
    """The install steps without make: the Makefile's recipe for Linux and macOS, and the same for Windows
    PowerShell."""
    makefile = makefile if makefile is not None else (_root() / "Makefile").read_text()
    posix = makefile_install(makefile)
    windows = makefile_install(makefile, python="py -3", venv_python=r".venv\Scripts\python", null="$null")
    return "\n".join(["Linux and macOS (the Makefile's `install` recipe, command for command):", "", "```bash",
                      *posix, "```", "", "Windows (PowerShell; the same commands):", "", "```powershell", *windows,
                      "```"])


@dataclass(frozen=True)
class CacheEstimate:
    """The notebooks' cpu cache, computed: whole-model entries, task-vector-sized entries, and megabytes."""

    models: int
    tensors: int

    @property
    def megabytes(self) -> float:
        return self.models * MODEL_MB + self.tensors * TENSORS_MB


def cache_estimate(records: Iterable[dict[str, Any]], window: tuple[str, str] = RERUN) -> CacheEstimate:
    """What the cache of notebooks 01-07 (cpu) holds besides JSON: :data:`REFERENCE_MODELS` plus the
    weight-holding entries built by the records finished inside ``window`` (see the constants' sources)."""
    inside = [r for r in records if r["profile"] == PROFILE and window[0] <= r["finished"] <= window[1]]
    if not inside:
        raise ValueError(f"no {PROFILE} record finished between {window[0]} and {window[1]} in {RUNS}")

    def built(kinds: Sequence[str]) -> int:
        return sum(max(r["cache_entries_built"].get(k, 0), 0) for r in inside for k in kinds)

    return CacheEstimate(REFERENCE_MODELS + built(MODEL_KINDS), built(TENSOR_KINDS))


def cache_markdown(records: list[dict[str, Any]] | None = None) -> str:
    """The paragraph of docs/teaching.md that sizes the teacher's cache."""
    estimate = cache_estimate(load_runs() if records is None else records)
    mb = estimate.megabytes
    return (f"**The cache's size**, computed from the sizes of its entries (`benchmarks/NOTES.md`, \"The cpu study's "
            f"cache\": a model directory {MODEL_MB} MB, a task vector or importance map {TENSORS_MB} MB, fp32) and the "
            "entries the replay rerun built (`benchmarks/results/notebook_runs.jsonl`, the records from "
            f"{RERUN[0]} to {RERUN[1]}), not measured: the cache of notebooks 01-07 holds {estimate.models} whole "
            f"models (the {REFERENCE_MODELS} the profile starts from, the reinforced model, the unlearned models of 06 "
            f"and 07) and {estimate.tensors} tensors the size of a task vector (the task vector, the importance "
            f"maps): {estimate.models} x {MODEL_MB} + {estimate.tensors} x {TENSORS_MB} MB = **{mb / 1000:.1f} GB "
            f"({mb * 1e6 / 2 ** 30:.1f} GiB)**, plus evaluations and calibrations, small JSON files.")


BLOCKS = {"labs": labs_markdown, "install": install_markdown, "cache": cache_markdown}


def block_markers(name: str) -> tuple[str, str]:
    """The marker lines around the generated block ``name`` of docs/teaching.md."""
    return (f"<!-- teaching:{name}: written by `python -m palu_perta.teaching --write`; tests/test_teaching.py "
            "checks it -->", f"<!-- /teaching:{name} -->")


def replace_block(text: str, name: str, content: str) -> str:
    """``text`` with the block ``name`` (between :func:`block_markers`) replaced by ``content``."""
    start, end = block_markers(name)
    return splice_block(text, start, end, f"{start}\n{content}\n{end}", where=f"block {name!r} in {DOC}")


def block(text: str, name: str) -> str:
    """The content of the block ``name`` of ``text`` (between its marker lines)."""
    start, end = block_markers(name)
    if start not in text or end not in text:
        raise ValueError(f"{DOC} has no block {name!r} (between {start!r} and {end!r})")
    return text.split(start, 1)[1].split(end, 1)[0].strip("\n")


def write_doc(path: Path | None = None) -> Path:
    """Rewrite every generated block of docs/teaching.md (the lab budgets, the install steps, the cache size)."""
    from .artifacts import atomic_write_text

    path = path or _root() / DOC
    text = path.read_text()
    for name, render in BLOCKS.items():
        text = replace_block(text, name, render())
    atomic_write_text(path, text)
    return path


# ----------------------------------------------------------------------------- students' copies


def student_copy(notebook: nbformat.NotebookNode, name: str = "") -> nbformat.NotebookNode:
    """A copy of ``notebook`` for students: no outputs, no execution counts, no run metadata (papermill's
    timings); every cell, exercise stubs included, kept. ValueError when an exercise cell holds no
    ``NotImplementedError`` stub (a solution would be handed out)."""
    copy = nbformat.from_dict(json.loads(json.dumps(notebook)))
    copy.metadata.pop("papermill", None)
    for cell in copy.cells:
        for key in ("execution", "papermill", "collapsed", "scrolled"):
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            if exercise_keys(cell.source) and STUB not in cell.source:
                raise ValueError(f"{name or 'a notebook'}: the exercise cell checking {exercise_keys(cell.source)} "
                                 f"holds no `raise {STUB}` stub: it looks solved; restore the stub before "
                                 "handing it out")
    nbformat.validate(copy)
    return copy


def write_student_copies(out: Path, folder: Path | None = None, force: bool = False) -> list[Path]:
    """Write :func:`student_copy` of every numbered notebook of ``folder`` (default: the checkout's
    ``notebooks/``; ``solutions/`` is never read) into ``out``. A copy that exists and differs (a student's work?)
    is a FileExistsError unless ``force``; nothing is written then. Returns the paths written or current."""
    folder = folder or _root() / "notebooks"
    sources = _numbered(folder)
    if not sources:
        raise FileNotFoundError(f"no numbered notebook (NN_*.ipynb) in {folder}")
    copies = {out / p.name: nbformat.writes(student_copy(read_notebook(p), p.name)) + "\n" for p in sources}
    changed = [path for path, text in copies.items() if path.exists() and path.read_text() != text]
    if changed and not force:
        raise FileExistsError(f"{', '.join(str(p) for p in changed)} exist and differ from a fresh copy (a "
                              "student's work?): move them away, pass --out DIR, or --force to overwrite them")
    out.mkdir(parents=True, exist_ok=True)
    for path, text in copies.items():
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    return list(copies)


# ----------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m palu_perta.teaching``: print the generated blocks; ``--write``: rewrite them in
    docs/teaching.md; ``student [--out DIR] [--force]``: write the students' copies (default ``student/``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", nargs="?", choices=["student"], help="student: write the students' copies")
    parser.add_argument("--write", action="store_true", help=f"rewrite the generated blocks of {DOC}")
    parser.add_argument("--out", type=Path, help="where `student` writes (default: student/ in the checkout)")
    parser.add_argument("--force", action="store_true", help="`student`: overwrite copies that differ")
    args = parser.parse_args(argv)
    try:
        if args.command == "student":
            out = args.out or _root() / "student"
            written = write_student_copies(out, force=args.force)
            print(f"wrote {len(written)} notebooks without outputs to {out} (exercises kept, no solutions)")
        elif args.write:
            print(f"wrote {write_doc()}")
        else:
            for name, render in BLOCKS.items():
                print(f"<!-- {name} -->\n{render()}\n")
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
