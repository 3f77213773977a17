"""The notebook runner says what it is doing: which notebook runs (k of n, its name, when it started), a
progress bar over its cells, and how long each took; a failing notebook is named with the time it ran.

Two tiny notebooks under tmp_path (one kernel start each, a few seconds)."""

from __future__ import annotations

import io
import re

import pytest

from palu_perta.notebooks import duration, run_all

pytestmark = pytest.mark.notebooks


def _notebook(path, *sources):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_the_runner_names_each_notebook_its_progress_and_time(tmp_path, capsys):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    first = _notebook(folder / "01_first.ipynb", "x = 1", "print(x + 1)", "y = 3")
    broken = _notebook(folder / "02_broken.ipynb", "raise RuntimeError('boom')")
    stream = io.StringIO()
    with pytest.raises(Exception, match="boom"):
        run_all([first, broken], "smoke", out=tmp_path / "out", timeout=120, stream=stream)
    lines = stream.getvalue().splitlines()
    assert re.fullmatch(r"\[1/2\] notebooks/01_first\.ipynb started \d\d:\d\d:\d\d \(profile smoke\)", lines[0])
    assert re.fullmatch(r"\[1/2\] notebooks/01_first\.ipynb done in \d+\.\d s \(run so far: \d+\.\d s\)", lines[1])
    assert re.fullmatch(r"\[2/2\] notebooks/02_broken\.ipynb started \d\d:\d\d:\d\d \(profile smoke\)", lines[2])
    assert re.fullmatch(r"\[2/2\] notebooks/02_broken\.ipynb FAILED after \d+\.\d s", lines[3])
    assert len(lines) == 4
    # papermill's bar over the cells, on stderr, named after the notebook: three cells of three done
    bar = capsys.readouterr().err
    assert "[1/2] 01_first" in bar and "3/3" in bar and "cell" in bar
    assert (tmp_path / "out" / "01_first.ipynb").exists() and (tmp_path / "out" / "02_broken.failed.ipynb").exists()


def test_the_runner_can_run_without_a_bar(tmp_path, capsys):
    path = _notebook(tmp_path / "01_quiet.ipynb", "pass")
    stream = io.StringIO()
    seconds = run_all([path], "smoke", out=tmp_path / "out", timeout=120, progress=False, stream=stream)
    assert list(seconds) == [f"{tmp_path.name}/01_quiet"] and seconds[f"{tmp_path.name}/01_quiet"] > 0
    assert "cell/s" not in capsys.readouterr().err and "done in" in stream.getvalue()


@pytest.mark.parametrize("seconds, text", [(4.25, "4.2 s"), (59.94, "59.9 s"), (61, "1 min 01 s"),
                                           (3599, "59 min 59 s"), (7620, "2 h 07 min")])
def test_durations_read_as_a_person_would_say_them(seconds, text):
    assert duration(seconds) == text
