"""The benchmark a run works on: synthetic mini-TOFU or the real TOFU, in one shape.

A :class:`Benchmark` holds every split a notebook needs, as lists of TOFU-format records:

- ``forget``: the forget authors' QA pairs with ``paraphrased_answer``, ``perturbed_answer``,
  ``target_words`` (sensitive spans) and ``author``;
- ``retain``: the retain authors' QA pairs (trained on by both target and retain models);
- ``retain_eval``: the evaluation subset of ``retain`` (with paraphrased/perturbed answers);
- ``holdout``: authors no model was trained on (non-members for membership inference);
- ``real_authors`` / ``world_facts``: general knowledge, ``perturbed_answer`` = 3 wrong options;
- ``neighbour``: retain-author records (trained on, with paraphrased/perturbed answers) whose answer
  states a fact that a forget answer states too (a birthplace, an award, a parent's profession), with
  the shared facts in ``shared_facts``: what forgetting one author must not take from another
  (:func:`neighbour_records`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import general, synthetic

FORGET_SPLITS = {"forget01": 1, "forget05": 5, "forget10": 10}
QA_FIELDS = ("question", "answer")
EVAL_FIELDS = ("question", "answer", "paraphrased_answer", "perturbed_answer")
OPTION_FIELDS = ("question", "answer", "perturbed_answer")
TOFU_HUB_ID = "locuslab/TOFU"
QA_PER_TOFU_AUTHOR = 20


class DataError(ValueError):
    """A benchmark file or record that cannot be used, with what is wrong and how to fix it."""


@dataclass
class Benchmark:
    """All splits of one forget split of one data source (see the module docstring)."""

    source: str
    forget_split: str
    forget: list[dict]
    retain: list[dict]
    retain_eval: list[dict]
    holdout: list[dict]
    real_authors: list[dict]
    world_facts: list[dict]
    info: dict[str, Any] = field(default_factory=dict)
    neighbour: list[dict] = field(default_factory=list)

    @property
    def full(self) -> list[dict]:
        """What the target model is fine-tuned on: retain then forget authors."""
        return self.retain + self.forget

    def splits(self) -> dict[str, list[dict]]:
        """The evaluation splits by name (as the metric suite expects them); ``neighbour`` only when
        some retain answer shares a fact with a forget answer."""
        splits = {
            "forget": self.forget,
            "retain": self.retain_eval,
            "holdout": self.holdout,
            "real_authors": self.real_authors,
            "world_facts": self.world_facts,
        }
        if self.neighbour:
            splits["neighbour"] = self.neighbour
        return splits

    def summary(self) -> dict[str, int]:
        """Number of records per split."""
        return {"full": len(self.full), "retain_train": len(self.retain), **{k: len(v) for k, v in self.splits().items()}}


def n_forget_authors(n_authors: int, forget_split: str) -> int:
    """How many of ``n_authors`` a forget split takes: its percentage, rounded, at least one."""
    if forget_split not in FORGET_SPLITS:
        raise DataError(f"unknown forget split {forget_split!r}; use one of {sorted(FORGET_SPLITS)}")
    return max(1, round(n_authors * FORGET_SPLITS[forget_split] / 100))


# ---------------------------------------------------------------------------------------
# validation


def validate_records(records: list[dict], fields: tuple[str, ...], split: str, *, check_spans: bool = True,
                     unique_questions: bool = True) -> list[dict]:
    """Check that every record has ``fields`` of the right type, a question and an answer that are not
    empty (nor only whitespace), and that spans match; with ``unique_questions``, also that no question is
    asked twice with two different answers (the same pair twice is allowed).

    Raises :class:`DataError` naming the split, the record index (both indices for a repeated question)
    and the problem. TOFU itself is checked without ``unique_questions``: its retain split asks "What is
    the full name of the author?" twice (records 100 and 440), of two authors (see :func:`load_tofu`).
    """
    if not records:
        raise DataError(f"split {split!r} is empty: it needs at least one record")
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise DataError(f"{split}[{i}] is a {type(rec).__name__}, expected a JSON object")
        for name in fields:
            if name not in rec:
                raise DataError(f"{split}[{i}] has no {name!r} field (required fields: {list(fields)})")
            value = rec[name]
            if name == "perturbed_answer":
                if not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
                    raise DataError(f"{split}[{i}].perturbed_answer must be a non-empty list of strings")
            elif not isinstance(value, str):
                raise DataError(f"{split}[{i}].{name} must be a string, got {type(value).__name__}")
            elif name in QA_FIELDS and not value.strip():
                raise DataError(f"{split}[{i}].{name} is empty{' (only whitespace)' if value else ''}: every record "
                                f"needs {'an' if name == 'answer' else 'a'} {name}; fill it in or delete the record")
        if check_spans and "target_words" in rec:
            answer = rec["answer"]
            if not isinstance(rec["target_words"], list):
                raise DataError(f"{split}[{i}].target_words must be a list of {{word, start, end}} objects")
            for span in rec["target_words"]:
                try:
                    word, start, end = span["word"], int(span["start"]), int(span["end"])
                except (KeyError, TypeError, ValueError):
                    raise DataError(f"{split}[{i}] has a malformed span {span!r}: needs word, start, end") from None
                if not 0 <= start < end <= len(answer):
                    raise DataError(
                        f"{split}[{i}] span {word!r} [{start}:{end}] lies outside the answer ({len(answer)} characters)"
                    )
                if answer[start:end] != word:
                    raise DataError(
                        f"{split}[{i}] span offsets [{start}:{end}] give {answer[start:end]!r}, not the word {word!r}; "
                        "fix the offsets so that answer[start:end] == word"
                    )
    if unique_questions and "question" in fields and "answer" in fields:
        _check_unique(records, split)
    return records


def _check_unique(records: list[dict], split: str) -> None:
    """No question asked twice with two different answers (the same pair twice is allowed)."""
    seen: dict[str, int] = {}  # question -> index of its first record
    for i, rec in enumerate(records):
        first = seen.setdefault(rec["question"], i)
        if records[first]["answer"] != rec["answer"]:
            raise DataError(f"{split}[{first}] and {split}[{i}] ask the same question {rec['question']!r} with two "
                            "different answers; keep one of them, or make the questions differ")


def _check_disjoint(forget: list[dict], retain: list[dict], forget_name: str = "forget",
                    retain_name: str = "retain") -> None:
    """Forget and retain questions must be disjoint: a DataError naming the first shared question's indices
    (and whether its answers differ)."""
    forget_index: dict[str, int] = {}
    for i, r in enumerate(forget):
        forget_index.setdefault(r["question"], i)
    shared = [(forget_index[r["question"]], j) for j, r in enumerate(retain) if r["question"] in forget_index]
    if shared:
        i, j = shared[0]
        answers = "with two different answers" if forget[i]["answer"] != retain[j]["answer"] else "with the same answer"
        raise DataError(
            f"{len(shared)} forget question(s) also appear in the retain split, e.g. {forget_name}[{i}] and "
            f"{retain_name}[{j}] ask {forget[i]['question']!r} {answers}: an author must be in forget or retain, "
            "not both"
        )


# ---------------------------------------------------------------------------------------
# neighbours: retain answers that share a fact with a forget answer

# Sensitive spans that are not a fact one author can share with another: the gender words (half of
# all authors "share" one) and anything with a digit (dates and years coincide by chance).
GENERIC_FACTS = frozenset({"male", "female", "non-binary", "he", "she", "his", "her", "they"})
_DIGIT = re.compile(r"\d")


# A fact found in the answers of more than this share of a benchmark's authors is a word of the
# benchmark's style, not a fact about an author: TOFU's GPT-4o span labels mark "narratives" (73 % of
# the 200 authors), "writing style" (50 %) or "resilience" (28 %) as sensitive; at 5 % (10 authors) a
# place, a title, an award or a profession stays ("Santiago", "Nebula Award", "lawyer": 3-5 %). Our
# measurement on ../tofu's full.json; the synthetic spans are fields of a profile, all facts.
MAX_AUTHOR_SHARE = 0.05


def _fact_pattern(fact: str) -> re.Pattern:
    return re.compile(rf"(?<!\w){re.escape(fact)}(?!\w)")


def shared_facts(forget: list[dict], population: list[list[dict]] | None = None,
                 max_author_share: float = MAX_AUTHOR_SHARE) -> list[str]:
    """The facts of the forget answers that another author's answer can share: the texts of their
    sensitive spans (``target_words``), without :data:`GENERIC_FACTS`, spans with a digit and spans under
    3 characters; with ``population`` (every author's records, one list per author), also without the
    spans found in the answers of more than ``max_author_share`` of those authors. Sorted, longest first."""
    facts = {span["word"].strip() for rec in forget for span in rec.get("target_words") or []
             if isinstance(span, dict) and isinstance(span.get("word"), str)}
    facts = {f for f in facts if len(f) >= 3 and f.lower() not in GENERIC_FACTS and not _DIGIT.search(f)}
    if population:
        answers = ["\n".join(r["answer"] for r in author) for author in population]
        limit = max_author_share * len(answers)
        facts = {f for f in facts if sum(bool(_fact_pattern(f).search(a)) for a in answers) <= limit}
    return sorted(facts, key=lambda f: (-len(f), f))


def neighbour_records(forget: list[dict], candidates: list[dict], population: list[list[dict]] | None = None) -> list[dict]:
    """The ``candidates`` (retain records with paraphrased and perturbed answers) whose answer contains,
    as whole words and with the same case, a fact of :func:`shared_facts` (``population``: see there).
    Each is a copy with ``shared_facts``: the facts it shares. A forget question is never a candidate."""
    facts = shared_facts(forget, population)
    if not facts:
        return []
    patterns = [(fact, _fact_pattern(fact)) for fact in facts]
    forget_questions = {r["question"] for r in forget}
    out = []
    for rec in candidates:
        if rec["question"] in forget_questions:
            continue
        found = [fact for fact, pattern in patterns if pattern.search(rec["answer"])]
        if found:
            out.append({**rec, "shared_facts": found})
    return out


# ---------------------------------------------------------------------------------------
# synthetic


def synthetic_benchmark(
    n_authors: int = 20,
    qa_per_author: int = 10,
    forget_split: str = "forget10",
    n_holdout_authors: int = 2,
    n_world_facts: int | None = None,
    seed: int = 0,
    n_retain_eval_authors: int = 4,
    neighbour_share: float = 0.0,
) -> Benchmark:
    """A synthetic mini-TOFU: ``n_authors`` trained authors (the last ones form the forget
    split, as in TOFU) and ``n_holdout_authors`` extra authors that no model sees.

    ``retain_eval`` is the first ``n_retain_eval_authors`` retain authors, as TOFU's
    ``retain_perturbed`` is its first 20 authors: evaluation stays cheap as the data grows.

    ``neighbour``: every retain record that shares a fact with a forget answer (:func:`neighbour_records`).
    The facts are drawn from small pools, so some are shared by chance (20 authors: 31 of the 180 retain
    answers); ``neighbour_share`` > 0 makes that share of the retain authors take one fact group
    (birthplace, award or a parent's profession) from a forget author on purpose
    (:func:`~palu_perta.data.synthetic.share_facts`), which changes the data and so the fine-tuned models."""
    if n_holdout_authors < 0:
        raise ValueError(f"n_holdout_authors={n_holdout_authors} must be >= 0")
    n_forget = n_forget_authors(n_authors, forget_split)
    if n_forget >= n_authors:
        raise ValueError(f"n_authors={n_authors} leaves no retain author for {forget_split}; use n_authors >= 2")
    authors = synthetic.generate_authors(n_authors + n_holdout_authors, seed)
    if neighbour_share:
        authors = synthetic.share_facts(authors, retain=range(n_authors - n_forget),
                                        forget=range(n_authors - n_forget, n_authors), share=neighbour_share, seed=seed)
    records = [synthetic.qa_pairs(a, authors, qa_per_author, seed) for a in authors]
    trained, holdout = records[:n_authors], records[n_authors:]
    retain = [r for author in trained[: n_authors - n_forget] for r in author]
    forget = [r for author in trained[n_authors - n_forget:] for r in author]
    world = general.world_facts()[:n_world_facts] if n_world_facts else general.world_facts()
    return Benchmark(
        source="synthetic",
        forget_split=forget_split,
        forget=forget,
        retain=retain,
        retain_eval=[r for author in trained[:min(n_retain_eval_authors, n_authors - n_forget)] for r in author],
        holdout=[r for author in holdout for r in author],
        real_authors=general.real_authors()[:n_world_facts] if n_world_facts else general.real_authors(),
        world_facts=world,
        info={"n_authors": n_authors, "n_forget_authors": n_forget, "qa_per_author": qa_per_author, "seed": seed,
              "authors": [a["name"] for a in authors], **({"neighbour_share": neighbour_share} if neighbour_share else {})},
        neighbour=neighbour_records(forget, retain),
    )


# ---------------------------------------------------------------------------------------
# real TOFU


def _read_json_records(path: Path) -> list[dict]:
    """JSON lines (the hub's format) or one JSON array. A file that is neither (or not UTF-8) is a
    :class:`DataError` naming the file and the line."""
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not UTF-8 text ({err}); save it as UTF-8") from None
    text = raw.strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            return json.loads(raw)  # whitespace around it is valid JSON: err.lineno counts the file's lines
        except json.JSONDecodeError as err:
            raise DataError(f"{path} is not valid JSON ({err.msg} at line {err.lineno} column {err.colno}); the file "
                            "must be one JSON array or JSON lines (one record per line)") from None
    records = []
    # split on "\n" only: str.splitlines() would also cut inside answers at U+2028, \x85, \x1c...
    for number, line in enumerate(raw.split("\n"), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{path} line {number} is not valid JSON ({err.msg} at column {err.colno}); the file "
                                "must be JSON lines (one record per line) or one JSON array") from None
    return records


def _load_config(source: str | Path, name: str, required: bool = True) -> list[dict] | None:
    if isinstance(source, Path):
        path = source / f"{name}.json"
        if not path.exists():
            if not required:
                return None
            raise DataError(f"TOFU split {name!r} not found: {path} does not exist (is {source} a TOFU directory?)")
        return _read_json_records(path)
    from datasets import load_dataset  # the hub, for users who have it

    try:
        return list(load_dataset(source, name, split="train"))
    except ValueError:
        if not required:
            return None
        raise


GROUP_FIELD = "author"  # what groups a user's records unless --group-by names another field
TOFU_AUTHORS = 200


def is_tofu(source: str | os.PathLike | None) -> bool:
    """Whether ``source`` is TOFU itself, whose authors are consecutive blocks of 20 QA pairs (its records
    have no field saying whose they are):

    - ``None`` or the hub id ``locuslab/TOFU``;
    - the local copy ``data="tofu"`` reads (:func:`~palu_perta.paths.default_tofu_dir`), wherever it lies;
    - a directory with TOFU's layout: its ``full.json`` holds exactly 4,000 records (200 authors x 20),
      none of which has an ``author`` field.

    Any other source is a user's own data: grouped by a field of its records, used whole (:func:`load_tofu`).
    """
    from ..paths import default_tofu_dir

    if source is None or str(source) == TOFU_HUB_ID:
        return True
    path = Path(source).expanduser()
    if not path.is_dir():
        return False
    default = default_tofu_dir()
    if default is not None and path.resolve() == default.resolve():
        return True
    full = path / "full.json"
    if not full.is_file():
        return False
    try:
        records = _read_json_records(full)
    except DataError:
        return False  # not TOFU's file; the loader never reads full.json otherwise
    return (isinstance(records, list) and len(records) == TOFU_AUTHORS * QA_PER_TOFU_AUTHOR
            and all(isinstance(r, dict) and GROUP_FIELD not in r for r in records))


def _tofu_blocks(records: list[dict]) -> list[list[dict]]:
    """TOFU's authors: consecutive blocks of 20 QA pairs."""
    return [records[i:i + QA_PER_TOFU_AUTHOR] for i in range(0, len(records), QA_PER_TOFU_AUTHOR)]


_TOFU_ONLY = ("TOFU's blocks of 20 QA pairs apply only to TOFU itself (the hub, --data tofu, or a directory whose "
              "full.json holds TOFU's 4,000 records)")


def _groups(records: list[dict], field: str, split: str, label: str, flag: bool) -> dict[Any, list[dict]]:
    """``records`` grouped by the value of ``field``, groups in the order they first appear. A record without
    the field is a :class:`DataError` naming ``--group-by`` (``flag``: the field came from it)."""
    groups: dict[Any, list[dict]] = {}
    for i, rec in enumerate(records):
        if field not in rec:
            fields = sorted(rec)
            if flag:
                raise DataError(f"{label}: --group-by {field}: {split}[{i}] has no {field!r} field (its fields: "
                                f"{fields}); pass --group-by with a field every record has")
            raise DataError(f"{label}: {split}[{i}] has no {field!r} field, so the records cannot be grouped (into "
                            f"authors, organisations...); add an {field!r} field to every record, or pass --group-by "
                            f"FIELD naming the field that groups them (its fields: {fields}). {_TOFU_ONLY}")
        key = rec[field]
        if not isinstance(key, (str, int, float)):
            raise DataError(f"{label}: {split}[{i}].{field} is a {type(key).__name__}; the field that groups the "
                            "records must hold a string or a number")
        groups.setdefault(key, []).append(rec)
    return groups


def write_tofu_dir(benchmark: Benchmark, directory: str | os.PathLike) -> Path:
    """Write ``benchmark`` as a TOFU-format directory (JSON lines, the hub's file names), so it can be
    loaded back, as it was, with :func:`load_tofu` or ``--data DIR`` (or edited by hand): every record keeps
    its ``author`` (what groups it), ``full`` and ``retainYY`` hold the trained authors, and the holdout
    authors go to ``holdoutXX.json`` (none: no file)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pct = FORGET_SPLITS[benchmark.forget_split]
    qa = lambda recs: [{k: r[k] for k in ("question", "answer", "author") if k in r} for r in recs]  # noqa: E731
    files = {
        "full": qa(benchmark.retain + benchmark.forget),
        benchmark.forget_split: qa(benchmark.forget),
        f"{benchmark.forget_split}_perturbed": [{k: v for k, v in r.items() if k != "target_words"} for r in benchmark.forget],
        f"{benchmark.forget_split}_spans": [{"question": r["question"], "answer": r["answer"],
                                               "target_words": r.get("target_words", [])} for r in benchmark.forget],
        f"retain{100 - pct:02d}": qa(benchmark.retain),
        **({f"holdout{pct:02d}": qa(benchmark.holdout)} if benchmark.holdout else {}),
        "retain_perturbed": benchmark.retain_eval,
        "real_authors_perturbed": benchmark.real_authors,
        "world_facts_perturbed": benchmark.world_facts,
    }
    for name, records in files.items():
        (directory / f"{name}.json").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n",
                                                encoding="utf-8")
    return directory


def _merge_spans(forget: list[dict], spans: list[dict] | None, split: str) -> list[dict]:
    if spans is None:
        return forget
    by_question = {s["question"]: s["target_words"] for s in spans}
    merged = []
    for i, rec in enumerate(forget):
        if rec["question"] not in by_question:
            raise DataError(f"{split}[{i}] has no entry in {split}_spans (question {rec['question']!r})")
        merged.append({**rec, "target_words": by_question[rec["question"]]})
    return merged


_NO_MIA = "so the membership-inference metrics (mia_*, privleak) are unavailable"


def _hub_holdout(name: str) -> tuple[list[dict] | None, str | None]:
    """TOFU's holdout split ``name`` (``holdout01``/``05``/``10``) read from the hub: ``(records, None)``, or
    ``(None, why)`` with a one-line reason when it cannot be read (no ``datasets`` package, offline, ...)."""
    try:
        from datasets import load_dataset
    except ImportError:
        return None, "the datasets package, which reads the hub, is not installed"
    try:
        return list(load_dataset(TOFU_HUB_ID, name, split="train")), None
    except Exception as err:  # offline, no such config, a hub error: reported, and the MIA metrics left out
        first = (str(err).strip().splitlines() or [""])[0][:160]
        return None, f"the hub's {TOFU_HUB_ID} {name} could not be read ({type(err).__name__}: {first})"


def _count(n: int, noun: str) -> str:
    """``1 author``, ``2 authors``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def load_tofu(
    source: str | os.PathLike | None = None,
    forget_split: str = "forget10",
    n_retain_authors: int | None = None,
    n_holdout_authors: int = 0,
    group_by: str | None = None,
    *,
    holdout_from_hub: bool = False,
    _asked: str | None = None,
) -> Benchmark:
    """Load TOFU (the hub, ``locuslab/TOFU``, or a directory with the hub's files) or a user's directory
    of TOFU-format files. Returns a :class:`Benchmark` whose forget records carry the ``forgetXX_spans``
    labels; ``info["grouping"]`` says, in one line, how the records were grouped and what was kept.

    How records are grouped (into authors, organisations...):

    - TOFU itself (:func:`is_tofu`), ``group_by`` not given: consecutive blocks of 20 QA pairs;
    - any other source, or with ``group_by``: by the value of the ``group_by`` field, default ``author``;
      a record without it is a :class:`DataError` that names ``--group-by``. A group may not be in both the
      forget and the retain split.

    ``n_retain_authors`` keeps only the first retain groups (default: all), and the next
    ``n_holdout_authors`` retain groups become the holdout (no model is trained on them), so the real
    benchmark fits a CPU; a ``holdoutXX.json`` file in the directory, if present, is the holdout instead.
    ``holdout_from_hub``: for TOFU itself in a directory without that file and with no holdout authors asked
    for, TOFU's ``holdoutXX`` is read from the hub (open-unlearning's non-members); when that fails,
    ``info["mia_unavailable"]`` says why in one line. Defaults: the data used whole. :func:`load_benchmark` passes a profile's counts for TOFU itself only.
    """
    if forget_split not in FORGET_SPLITS:
        raise DataError(f"unknown forget split {forget_split!r}; use one of {sorted(FORGET_SPLITS)}")
    if source is None or str(source) == TOFU_HUB_ID:
        src: str | Path = TOFU_HUB_ID
    else:
        src = Path(source).expanduser()
        if not src.is_dir():
            raise DataError(f"TOFU directory {src} does not exist; pass the folder that holds full.json, "
                            f"{forget_split}.json, ... or None to use the hub ({TOFU_HUB_ID})")
    if group_by is not None and (not isinstance(group_by, str) or not group_by.strip()):
        raise DataError(f"--group-by must name a field of the records (such as 'author'), not {group_by!r}")
    tofu = group_by is None and is_tofu(src)
    name = TOFU_HUB_ID if isinstance(src, str) else str(source)
    label = f"TOFU ({name})" if tofu else name
    unique = not tofu  # TOFU's retain split asks one question twice with two answers (see validate_records)
    # first every record's fields, then the grouping field, then (user data) repeated questions
    pct = FORGET_SPLITS[forget_split]
    retain_name = f"retain{100 - pct:02d}"
    holdout_name = f"holdout{pct:02d}"
    holdout_shown = holdout_name if isinstance(src, str) else f"{holdout_name}.json"
    forget = validate_records(_load_config(src, f"{forget_split}_perturbed"), EVAL_FIELDS, forget_split,
                              unique_questions=False)
    forget = _merge_spans(forget, _load_config(src, f"{forget_split}_spans", required=False), forget_split)
    forget = validate_records(forget, EVAL_FIELDS, forget_split, unique_questions=False)
    retain_all = validate_records(_load_config(src, retain_name), QA_FIELDS, retain_name, unique_questions=False)
    retain_eval_all = validate_records(_load_config(src, "retain_perturbed"), EVAL_FIELDS, "retain_perturbed",
                                       unique_questions=False)
    holdout_file = _load_config(src, holdout_name, required=False)
    hub_failed = None
    if holdout_file is None and holdout_from_hub and tofu and isinstance(src, Path) and not n_holdout_authors:
        holdout_file, hub_failed = _hub_holdout(holdout_name)
        if holdout_file is not None:
            holdout_shown = f"{holdout_name} of {TOFU_HUB_ID} on the hub"
    if holdout_file and isinstance(src, Path):
        validate_records(holdout_file, QA_FIELDS, holdout_name, unique_questions=False)

    field = group_by or GROUP_FIELD
    if tofu:
        retain_groups = _tofu_blocks(retain_all)
        for i, rec in enumerate(forget):
            rec.setdefault("author", f"forget-{i // QA_PER_TOFU_AUTHOR}")
        forget_groups = _tofu_blocks(forget)
        unit, how = "authors", "TOFU's blocks of 20 QA pairs"
    else:
        retain_by = _groups(retain_all, field, retain_name, label, group_by is not None)
        forget_by = _groups(forget, field, forget_split, label, group_by is not None)
        both = [key for key in forget_by if key in retain_by]
        if both:
            i = next(i for i, r in enumerate(forget) if r[field] == both[0])
            j = next(j for j, r in enumerate(retain_all) if r[field] == both[0])
            raise DataError(f"{label}: {forget_split}[{i}] and {retain_name}[{j}] are both in the group "
                            f"{field}={both[0]!r} ({len(both)} such group(s)): a group is forgotten or kept, not both; "
                            f"fix their {field!r} field{'' if group_by else ', or pass --group-by FIELD'}")
        for records, split in [(forget, forget_split), (retain_all, retain_name), (retain_eval_all, "retain_perturbed"),
                               *([(holdout_file, holdout_name)] if holdout_file else [])]:
            _check_unique(records, split)
        for rec in forget:
            rec.setdefault(GROUP_FIELD, rec[field])
        retain_groups, forget_groups = list(retain_by.values()), list(forget_by.values())
        unit, how = "groups", f"by {field!r}"

    n_total = len(retain_groups)
    n_holdout = 0 if holdout_file else n_holdout_authors
    keep = n_total - n_holdout if n_retain_authors is None else n_retain_authors
    if keep < 1 or n_holdout < 0 or keep + n_holdout > n_total:
        asked = _asked or f"load_tofu's n_retain_authors={n_retain_authors}, n_holdout_authors={n_holdout_authors}"
        raise DataError(f"{label}: {retain_name} holds {n_total} retain {unit} ({how}), not enough for {keep} retain "
                        f"and {n_holdout} holdout {unit} (asked by {asked}); ask for fewer, or use the data whole")
    retain = [r for block in retain_groups[:keep] for r in block]
    holdout = holdout_file or [r for block in retain_groups[keep:keep + n_holdout] for r in block]
    kept_questions = {r["question"] for r in retain}
    retain_eval = [r for r in retain_eval_all if r["question"] in kept_questions]
    if not retain_eval:
        raise DataError(f"{label}: none of the kept retain questions is in retain_perturbed (which holds the "
                        "paraphrased and perturbed answers of the retain questions evaluated); keep at least the "
                        "first retain group, or add its questions to retain_perturbed")
    _check_disjoint(forget, retain, forget_split, retain_name)
    if not tofu:
        _check_consistent(retain_eval_all, "retain_perturbed", retain_all, retain_name)
        if holdout_file:
            _check_not_trained(holdout_file, holdout_name, [(forget_split, forget), (retain_name, retain)])

    if holdout_file:
        grouped = all(isinstance(r.get(field), (str, int, float)) for r in holdout)  # else: records only
        n_holdout_groups = (len(_tofu_blocks(holdout)) if tofu else
                            len({r[field] for r in holdout}) if grouped else None)
        held = f"; holdout: {len(holdout)} records"
        if n_holdout_groups is not None:
            held += f" ({_count(n_holdout_groups, unit[:-1])})"
        held += f" from {holdout_shown}"
        if n_holdout_authors:
            held += f" (n_holdout_authors={n_holdout_authors} not used: the file is the holdout)"
    else:
        n_holdout_groups = n_holdout
        if n_holdout:
            held = f", the next {n_holdout} as holdout"
        elif hub_failed:
            held = f"; no {holdout_shown} and {hub_failed}, {_NO_MIA}"
        elif tofu:
            held = f"; no holdout (none asked for, no {holdout_shown}), {_NO_MIA}"
        else:
            held = f"; no {holdout_shown}, {_NO_MIA}"
    if tofu:
        line = (f"data: {label}, {forget_split}: authors are {how}; {_count(len(forget_groups), 'forget author')}, "
                f"{keep} of the {n_total} retain authors of {retain_name} kept{held}")
    else:
        whole = keep == n_total and not n_holdout
        line = (f"data: {label}, {forget_split}: {n_total + len(forget_groups)} groups {how} ({n_total} retain, "
                f"{len(forget_groups)} forget), "
                f"{'used whole' if whole else f'the first {keep} of the {n_total} retain groups kept'}{held}")

    real = validate_records(_load_config(src, "real_authors_perturbed"), OPTION_FIELDS, "real_authors_perturbed",
                            unique_questions=unique)
    world = validate_records(_load_config(src, "world_facts_perturbed"), OPTION_FIELDS, "world_facts_perturbed",
                             unique_questions=unique)
    return Benchmark(
        source=str(src if isinstance(src, str) else src.resolve()),  # a directory's absolute path: see records_info
        forget_split=forget_split,
        forget=forget,
        retain=retain,
        retain_eval=retain_eval,
        holdout=holdout,
        real_authors=real,
        world_facts=world,
        info={"n_retain_authors": keep, "n_forget_authors": len(forget_groups),
              "n_holdout_authors": (n_holdout_groups or 0) if holdout else 0,
              "grouped_by": "tofu-blocks-of-20" if tofu else field, "n_retain_groups": n_total, "grouping": line,
              **({} if holdout else {"mia_unavailable": _no_holdout_reason(holdout_shown, hub_failed, tofu)})},
        # only retain_perturbed has the paraphrased and perturbed answers a truth ratio needs
        neighbour=neighbour_records(forget, retain_eval, population=retain_groups + forget_groups),
    )


def _no_holdout_reason(shown: str, hub_failed: str | None, tofu: bool) -> str:
    """One line: why a benchmark has no holdout records (so no membership-inference metrics)."""
    if hub_failed:
        return f"no holdout (non-member) records: no {shown} here and {hub_failed}"
    return f"no holdout (non-member) records: no {shown}{' and no holdout authors asked for' if tofu else ''}"


def _check_consistent(records: list[dict], name: str, reference: list[dict], reference_name: str) -> None:
    """A question of ``records`` that ``reference`` asks too must have the same answer there."""
    first: dict[str, int] = {}
    for j, r in enumerate(reference):
        first.setdefault(r["question"], j)
    for i, r in enumerate(records):
        j = first.get(r["question"])
        if j is not None and reference[j]["answer"] != r["answer"]:
            raise DataError(f"{name}[{i}] and {reference_name}[{j}] ask the same question {r['question']!r} with two "
                            "different answers; make them agree")


def _check_not_trained(holdout: list[dict], name: str, trained: list[tuple[str, list[dict]]]) -> None:
    """No holdout question may be trained on: the holdout is the non-members of the membership attacks."""
    asked: dict[str, tuple[str, int]] = {}
    for split, records in trained:
        for j, r in enumerate(records):
            asked.setdefault(r["question"], (split, j))
    for i, r in enumerate(holdout):
        if r["question"] in asked:
            split, j = asked[r["question"]]
            raise DataError(f"{name}[{i}] and {split}[{j}] ask the same question {r['question']!r}: the holdout is "
                            "what no model is trained on (the non-members of the membership attacks); remove it "
                            f"from one of them")


def load_benchmark(profile: Any, data: str | None = None, group_by: str | None = None) -> Benchmark:
    """The benchmark a profile asks for: ``synthetic``, ``tofu`` (local copy, else the hub) or a directory
    of TOFU-format JSON files (``data`` overrides the profile's).

    The profile's ``n_authors`` and ``n_holdout_authors`` shape the synthetic data and TOFU itself
    (:func:`is_tofu`: the first ``n_authors`` retain authors are kept, the next ``n_holdout_authors`` are
    the holdout). A user's directory is used whole, grouped by its ``author`` field or by ``group_by``
    (:func:`load_tofu`). ``info["grouping"]`` says in one line how the data was grouped."""
    from ..paths import default_tofu_dir

    data = data or profile.data
    if data == "synthetic":
        if group_by is not None:
            raise DataError(f"--group-by {group_by} is for a directory of your own records; the synthetic data is "
                            "grouped by its generated authors")
        bench = synthetic_benchmark(profile.n_authors, profile.qa_per_author, profile.forget_split,
                                    profile.n_holdout_authors, profile.n_world_facts, profile.seed,
                                    neighbour_share=getattr(profile, "neighbour_share", 0.0))
        n_forget = bench.info["n_forget_authors"]
        if not bench.holdout:
            bench.info["mia_unavailable"] = (f"no holdout (non-member) records: profile {profile.name!r} asks for "
                                             "n_holdout_authors=0")
        bench.info["grouping"] = (
            f"data: synthetic, {profile.forget_split}: {profile.n_authors} generated authors of "
            f"{profile.qa_per_author} QA pairs ({profile.n_authors - n_forget} retain, {n_forget} forget) and "
            f"{_count(profile.n_holdout_authors, 'holdout author')} (profile {profile.name!r})")
        return bench
    if data == "tofu":
        source: str | Path | None = default_tofu_dir() or TOFU_HUB_ID
    else:
        source = data
    if group_by is None and is_tofu(source):
        n_retain = None if profile.n_authors >= TOFU_AUTHORS else profile.n_authors
        # n_holdout_authors=0 (paper): TOFU's own holdoutXX, from the hub when the directory lacks it
        return load_tofu(source, profile.forget_split, n_retain, profile.n_holdout_authors,
                         holdout_from_hub=profile.n_holdout_authors == 0, _asked=f"profile {profile.name!r}: n_authors={profile.n_authors}, "
                                f"n_holdout_authors={profile.n_holdout_authors}")
    return load_tofu(source, profile.forget_split, group_by=group_by)


def refusals(source: str | os.PathLike | None = None) -> list[str]:
    """Refusal answers for IdK baselines: ``idontknow.jsonl`` from a TOFU directory, else ours."""
    if source is not None and (Path(source) / "idontknow.jsonl").exists():
        lines = (Path(source) / "idontknow.jsonl").read_text().splitlines()
        return [re.sub(r"\s+", " ", line).strip() for line in lines if line.strip()]
    return ["I'm not sure about that.", "I don't know.", "I have no information on that.",
            "That is beyond what I know.", "I cannot answer that question.", "I'm not able to say.",
            "I don't have that information.", "Sorry, I do not know the answer to that."]
