"""The README shows what the notebooks write: its figures are files the notebooks save, every figure in
``figures/`` is saved by a notebook (none left over from a renamed plot), and its results table holds
the numbers of ``figures/results.md``, which notebook 08 writes."""

from __future__ import annotations

import re

import pytest

from palu_perta.config import get_profile, repo_root

ROOT = repo_root()
pytestmark = pytest.mark.skipif(ROOT is None, reason="needs the git checkout (README, notebooks, figures)")


def saved_figures() -> set[str]:
    """Names the notebooks pass to ``plots.savefig``."""
    names: set[str] = set()
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        names |= set(re.findall(r'savefig\(fig, \\"([A-Za-z0-9_]+)\\"', path.read_text()))
    return names


def table_rows(text: str, header: str) -> list[list[str]]:
    """The rows (lists of cells) of the markdown table whose header line starts with ``header``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def report_figures() -> set[str]:
    """Names ``palu_perta.report`` gives the figures of the committed studies (``make figures``)."""
    results = ROOT / "results"
    studies = [p.name for p in results.iterdir() if p.is_dir() and any(p.glob("*.jsonl"))] if results.is_dir() else []
    return {f"study_{name}_{figure}" for name in studies for figure in ("tradeoff", "neighbour")}


def test_readme_figures_are_the_notebooks_figures():
    readme = (ROOT / "README.md").read_text()
    shown = set(re.findall(r"figures/([A-Za-z0-9_]+)\.png", readme))
    assert shown, "the README shows no figure"
    made = saved_figures() | report_figures()
    assert not shown - made, f"the README shows figures no notebook or committed study makes: {sorted(shown - made)}"
    assert all((ROOT / "figures" / f"{name}.png").is_file() for name in shown)


def test_every_committed_figure_is_saved_by_a_notebook():
    committed = {p.stem for p in (ROOT / "figures").glob("*.png")}
    made = saved_figures() | report_figures()
    assert not committed - made, f"stale figures (no notebook or committed study makes them): {sorted(committed - made)}"


def test_readme_results_table_is_notebook_08s():
    """The README shows the cpu profile's forget split, without the split column."""
    split = get_profile("cpu").forget_split
    readme = table_rows((ROOT / "README.md").read_text(), "| model | notebook |")
    written = [[row[0], *row[2:]] for row in table_rows((ROOT / "figures" / "results.md").read_text(), "| model | split |")
               if split in row[1].split(" = ")]
    assert readme and readme == written, "the README's results table differs from figures/results.md"


def test_readme_verdicts_are_the_committed_studys():
    """The README's verdict block is what ``python -m palu_perta.verdicts cpu`` writes from the committed
    ``figures/study_cpu_verdicts.csv`` (``tests/test_verdicts.py`` checks that file against the results)."""
    from palu_perta import verdicts

    csv = ROOT / "figures" / "study_cpu_verdicts.csv"
    readme = (ROOT / "README.md").read_text()
    assert csv.is_file(), "figures/study_cpu_verdicts.csv is missing: run `python -m palu_perta.report cpu`"
    expected = verdicts.readme_block("cpu", verdicts.read_table(csv))
    assert expected in readme, "the README's verdicts differ from the committed study's: run `python -m palu_perta.verdicts cpu`"
