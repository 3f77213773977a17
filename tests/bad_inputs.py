"""Every bad input we know of, the one line the user sees, and proof that nothing was left half-written.

``docs/troubleshooting.md`` holds the table this module renders; ``tests/test_troubleshooting.py`` reruns
every case and fails when a message in the table is no longer the message the code prints (or when a case
leaves a file behind). Regenerate the table after changing a message:

    python tests/bad_inputs.py > docs/troubleshooting.md
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _truncated_model(directory: Path) -> None:
    import torch
    from transformers import LlamaForCausalLM

    from palu_perta.models import tiny_config

    torch.manual_seed(0)
    model_dir = directory / "model"
    with contextlib.redirect_stderr(io.StringIO()):
        LlamaForCausalLM(tiny_config(64, 0)).save_pretrained(model_dir, safe_serialization=True)
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])


def _broken_tofu(directory: Path) -> None:
    from palu_perta.data import synthetic_benchmark, write_tofu_dir

    bench = synthetic_benchmark(n_authors=6, qa_per_author=6, n_holdout_authors=1, n_world_facts=8)
    write_tofu_dir(bench, directory / "mydata")
    (directory / "mydata" / "retain_perturbed.json").write_text('[{"question": "q", "answer": "a",}]')


def _own_data(directory: Path, edit: Callable[[str, list[dict]], list[dict]]) -> None:
    """A directory of one's own records (written as TOFU-format files), each file's records passed through
    ``edit(file name, records)``."""
    import json

    from palu_perta.data import synthetic_benchmark, write_tofu_dir

    bench = synthetic_benchmark(n_authors=6, qa_per_author=6, n_holdout_authors=1, n_world_facts=8)
    folder = write_tofu_dir(bench, directory / "mydata")
    for path in sorted(folder.glob("*.json")):
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in edit(path.stem, records)) + "\n",
                        encoding="utf-8")


def _ungrouped(directory: Path) -> None:
    _own_data(directory, lambda name, records: [{k: v for k, v in r.items() if k != "author"} for r in records])


def _two_answers(directory: Path) -> None:
    def ask_again(name: str, records: list[dict]) -> list[dict]:
        if name == "retain90":
            records[4] = {**records[4], "question": records[0]["question"]}
        return records

    _own_data(directory, ask_again)


def _a_file(directory: Path) -> None:
    (directory / "a_file").write_text("not a directory")


def _bad_spans(directory: Path) -> None:
    (directory / "spans.json").write_text('{"question": "Who is nobody?", "target_words": []}\n')


@dataclass(frozen=True)
class Case:
    """One bad input: what the user did (``argv``, after ``python -m palu_perta``; ``--profile smoke``
    is added), the setup it needs in an empty folder, and what it is, in words."""

    what: str
    argv: tuple[str, ...]
    setup: Callable[[Path], None] | None = None


CASES = (
    Case("`--hyper` that is not a JSON object", ("unlearn", "--hyper", "5")),
    Case("`--hyper` with unquoted keys", ("unlearn", "--hyper", "{top_k: 3}")),
    Case("a hyperparameter of the wrong type", ("unlearn", "--hyper", '{"top_k": "50"}')),
    Case("a hyperparameter the loss does not have", ("unlearn", "--hyper", '{"topk": 5}')),
    Case("an unknown method", ("unlearn", "--method", "forget_everything")),
    Case("an unknown `--budget` key", ("unlearn", "--budget", '{"lr": 1e-3}')),
    Case("a mistyped `--target` path", ("unlearn", "--target", "./models/nope")),
    Case("a spans file that misses forget questions", ("unlearn", "--spans", "spans.json"), _bad_spans),
    Case("a mistyped `--model` path", ("evaluate", "--model", "./models/nope", "--out", "out")),
    Case("`--out` on an existing file", ("evaluate", "--model", "tiny", "--out", "a_file"), _a_file),
    Case("a truncated `model.safetensors`", ("evaluate", "--model", "model", "--out", "out"), _truncated_model),
    Case("a data directory that does not exist", ("evaluate", "--model", "tiny", "--data", "/no/such/dir",
                                                  "--out", "out")),
    Case("a data file that is not valid JSON", ("finetune", "--data", "mydata"), _broken_tofu),
    Case("a directory without a grouping field", ("finetune", "--data", "mydata"), _ungrouped),
    Case("the same question with two answers", ("finetune", "--data", "mydata"), _two_answers),
    Case("a negative `--lambda`", ("tv", "--lambda", "-1", "--out", "out")),
    Case("a `--lambda` that is not a number", ("perta", "--lambda", "half", "--out", "out")),
    Case("an unknown study grid", ("study", "--grid", "huge")),
    Case("a method the grid does not run", ("study", "--grid", "smoke", "--methods", "simnpo")),
)


@dataclass
class Outcome:
    code: int
    message: str
    left_behind: list[str]


def run(case: Case) -> Outcome:
    """Run ``case`` in an empty folder with an empty cache; the exit code, the message (the folder's path
    replaced by ``<dir>``) and the files it wrote beyond its setup's."""
    from palu_perta import cli

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp).resolve()
        old_cwd, old_env = Path.cwd(), os.environ.get("PALU_PERTA_ARTIFACTS")
        os.chdir(directory)
        os.environ["PALU_PERTA_ARTIFACTS"] = str(directory / "artifacts")
        try:
            if case.setup:
                case.setup(directory)
            before = {p for p in directory.rglob("*")}
            err = io.StringIO()
            argv = [*case.argv, *([] if case.argv[0] == "study" else ["--profile", "smoke"]), "--no-progress"]
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = cli.main(argv)
            written = sorted(str(p.relative_to(directory)) for p in set(directory.rglob("*")) - before
                             if p.is_file())
        finally:
            os.chdir(old_cwd)
            if old_env is None:
                os.environ.pop("PALU_PERTA_ARTIFACTS", None)
            else:
                os.environ["PALU_PERTA_ARTIFACTS"] = old_env
        message = err.getvalue().strip().replace(str(directory), "<dir>")
    return Outcome(code, message, written)


def _command(case: Case) -> str:
    return "`python -m palu_perta " + " ".join(a if " " not in a and "{" not in a else f"'{a}'"
                                                 for a in case.argv) + "`"


def render() -> str:
    """The whole of ``docs/troubleshooting.md``."""
    lines = ["# Troubleshooting: bad input and what you see", "",
             "Every mistake below ends in one `error: ...` line and exit code 2, before any model is trained,",
             "loaded or evaluated, and leaves no file behind (no cache entry, no half-written output). The table",
             "is rendered by `tests/bad_inputs.py` and checked by `tests/test_troubleshooting.py`: each command",
             "is rerun (on the smoke profile, in an empty folder) and its message must be the one shown here.",
             "`<dir>` stands for the folder the command ran in.", "",
             "| bad input | command | what you see | files left |", "|---|---|---|---|"]
    for case in CASES:
        outcome = run(case)
        message = outcome.message.replace("|", "\\|").replace("\n", " ")
        left = ", ".join(outcome.left_behind) or "none"
        lines.append(f"| {case.what} | {_command(case).replace('|', chr(92) + '|')} | {message} | {left} |")
    lines += ["", "Other guards, tested elsewhere: a kill during training or while a checkpoint is written resumes",
              "from the newest complete checkpoint (`tests/test_resume.py`); cache entries and results files are",
              "written under a temporary name and renamed (`palu_perta.artifacts`); a forget record with no",
              "sensitive token is refused by index before PALU trains (`tests/test_spans_resolution.py`).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    sys.stdout.write(render())
