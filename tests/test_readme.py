"""The README and the docs/ pages show what the code writes and what was measured: the README stays short
(under 8 KB) and starts with the two set-up commands; every figure shown is a file a notebook or a committed
study saves, with a caption under it; every relative link resolves; ``docs/results.md`` holds the results
table over both data settings as ``figures/results.md`` has it (``palu_perta.headline`` writes both) and the
single runs' numbers of ``figures/single_runs.md`` (notebook 08 writes it); the README's verdict block and its
one-line finding are what the committed study gives; its time, memory and disk figures are the ones
``docs/teaching.md`` and ``benchmarks/NOTES.md`` record, and the environment's size is measured here."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

from palu_perta.config import get_profile, repo_root

ROOT = repo_root()
pytestmark = pytest.mark.skipif(ROOT is None, reason="needs the git checkout (README, docs, notebooks, figures)")

README_LIMIT = 8192  # bytes: issue 21 asks for a README a newcomer reads in one go, "under about 8 KB"


def pages() -> list[Path]:
    """The README and every ``docs/*.md`` page."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def readme() -> str:
    """The README's text."""
    return (ROOT / "README.md").read_text()


def saved_figures() -> set[str]:
    """Names the notebooks pass to ``plots.savefig`` or to ``figures.draw`` (which saves the figure too)."""
    names: set[str] = set()
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        text = path.read_text()
        names |= set(re.findall(r'savefig\(fig, \\"([A-Za-z0-9_]+)\\"', text))
        names |= set(re.findall(r'figures\.draw\(\\"([A-Za-z0-9_]+)\\"', text))
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
    from palu_perta import store

    studies = store.study_names(ROOT / "results")
    return {f"study_{name}_{figure}" for name in studies for figure in ("tradeoff", "neighbour")}


def links(text: str) -> list[str]:
    """The targets of the markdown links and images and of the HTML ``src``/``href`` attributes in ``text``."""
    return (re.findall(r"\]\(([^)\s]+)\)", text)
            + re.findall(r'<(?:img|a)\b[^>]*?\b(?:src|href)="([^"]+)"', text))


def anchors(text: str) -> set[str]:
    """GitHub's anchors for the headings of a markdown page (lower case, punctuation dropped, spaces to '-')."""
    return {re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.MULTILINE)}


def test_readme_is_under_8_kb():
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_LIMIT, (f"README.md is {size} bytes, over {README_LIMIT}: move the details into a docs/ "
                                  "page and link it")


def test_readme_starts_with_the_two_set_up_commands():
    """The first section after the title and the two lines is the two commands, and `.ci/run` runs `make test`."""
    text = readme()
    first_section = text.split("\n## ", 2)[1]
    assert first_section.startswith("Two commands on a fresh machine"), "the README's first section is not the set-up"
    block = re.search(r"```bash\n(.*?)```", first_section, flags=re.DOTALL)
    assert block, "the set-up section has no command block"
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert commands == ["make reproduce", "make test"]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert ci == ["make test"], f".ci/run runs {ci}, not exactly `make test` as the README says"


def test_shown_figures_are_the_notebooks_figures():
    """Every figure the README or a docs/ page shows is saved by a notebook or a committed study."""
    made = saved_figures() | report_figures()
    shown_anywhere = set()
    for page in pages():
        shown = set(re.findall(r"figures/([A-Za-z0-9_]+)\.png", page.read_text()))
        assert not shown - made, f"{page.name} shows figures no notebook or committed study makes: {sorted(shown - made)}"
        assert all((ROOT / "figures" / f"{name}.png").is_file() for name in shown)
        shown_anywhere |= shown
    assert {"00_palu_schematic", "00_perta_schematic"} <= set(re.findall(r"figures/([A-Za-z0-9_]+)\.png", readme()))
    assert shown_anywhere


def test_every_figure_shown_has_a_caption():
    """Under every image of the README and the docs/ pages, the next line with text is an italic caption."""
    for page in pages():
        lines = page.read_text().splitlines()
        for i, line in enumerate(lines):
            if "<img" not in line:
                continue
            following = next((rest for rest in lines[i + 1:] if rest.strip()), "")
            assert following.startswith("*") and len(following) > 20, (
                f"{page.name}, line {i + 1}: the figure has no caption under it (an italic paragraph)")


def test_every_committed_figure_is_saved_by_a_notebook():
    committed = {p.stem for p in (ROOT / "figures").glob("*.png")}
    made = saved_figures() | report_figures()
    assert not committed - made, f"stale figures (no notebook or committed study makes them): {sorted(committed - made)}"


def test_relative_links_resolve():
    """Every relative link of the README and the docs/ pages names a file of the checkout (and a heading there)."""
    broken = []
    for page in pages():
        for target in links(page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto: ...
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.is_file() or ROOT.resolve() not in file.parents:
                broken.append(f"{page.name}: {target} (no such file in the checkout)")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text()):
                broken.append(f"{page.name}: {target} (no heading with that anchor)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_links_resolve_fails_on_a_missing_page():
    """The link check reads both link forms, and an anchor is a heading's."""
    text = '[a](docs/none.md) <img src="figures/x.png" width="5%"> [b](https://example.org)'
    assert links(text) == ["docs/none.md", "https://example.org", "figures/x.png"]
    assert anchors("# T\n## Studies: results, not models\n") == {"t", "studies-results-not-models"}


def test_single_run_table_is_notebook_08s():
    """docs/results.md shows the cpu profile's forget split of the single runs, without the split column."""
    split = get_profile("cpu").forget_split
    shown = table_rows((ROOT / "docs" / "results.md").read_text(), "| model | notebook |")
    written = [[row[0], *row[2:]] for row in table_rows((ROOT / "figures" / "single_runs.md").read_text(), "| model | split |")
               if split in row[1].split(" = ")]
    assert shown and shown == written, "docs/results.md's single-run table differs from figures/single_runs.md"


def test_results_readings_quote_the_table():
    """Every "Model (FQ a, MU b)" or "Model (forget ROUGE-L c)" quoted in docs/results.md is that model's row of
    the table notebook 08 wrote (figures/single_runs.md, the cpu profile's forget split), digit for digit."""
    split = get_profile("cpu").forget_split
    header = ["model", "split", "notebook", "setting", "FQ", "MU", "forget ROUGE-L"]
    table = {row[0]: dict(zip(header, row)) for row in
             table_rows((ROOT / "figures" / "single_runs.md").read_text(), "| model | split |")
             if split in row[1].split(" = ")}
    text = " ".join((ROOT / "docs" / "results.md").read_text().split())
    quotes = []
    for model, inside in re.findall(r"([A-Za-z][\w+-]*) \(([^()]*)\)", text):
        parts = [re.fullmatch(r"(FQ|MU|forget ROUGE-L) ([\d.e-]+)", part) for part in inside.split(", ")]
        if model in table and all(parts):
            quotes += [(model, m.group(1), m.group(2)) for m in parts]
    assert len(quotes) >= 12, f"docs/results.md quotes only {quotes}: its readings lost their numbers"
    wrong = [f"{model} {key} {value} (the table: {table[model][key]})" for model, key, value in quotes
             if table[model][key] != value]
    assert not wrong, f"docs/results.md's readings quote numbers the table no longer has: {wrong}"


def verdict_table():
    from palu_perta import verdicts

    csv = ROOT / "figures" / "study_cpu_verdicts.csv"
    assert csv.is_file(), "figures/study_cpu_verdicts.csv is missing: run `python -m palu_perta.report cpu`"
    return verdicts.read_table(csv)


def test_readme_cost_verdict_is_the_timing_records():
    """The README's cost sentence: PerTA-grad over GradDiff at matched forgetting, from the committed timing
    record (benchmarks/results/method_cost_cpu.json) and the committed study (``palu_perta.cost``)."""
    from palu_perta import cost, report, store

    line = " ".join(readme().split())
    match = re.search(r"\*(\w[\w ]*)\* here\. To reach matched forgetting PerTA-grad's pipeline takes "
                      r"([\d.]+) \[([\d.]+), ([\d.]+)\] times as long as GradDiff's training", line)
    assert match, "the README's cost sentence is missing or reworded: update this test with it"
    matched = report.at_matched_forgetting(report.points(store.load(ROOT / "results" / "cpu")))
    table = cost.cost_table(cost.load_record("cpu", ROOT), matched).set_index(["method", "baseline"])
    row = table.loc[("perta-grad", "graddiff")]
    assert match.group(1) == row["verdict"], f"the cost verdict is now {row['verdict']!r}"
    times = {2: "two", 3: "three", 4: "four", 5: "five"}.get(round(float(row["ratio"])), f"{row['ratio']:.1f}")
    assert f"at about {times} times GradDiff's cost" in line, f"the README's finding should say about {times} times"
    stated = [float(g) for g in match.group(2, 3, 4)]
    assert stated == [round(float(row[k]), 2) for k in ("ratio", "low", "high")], (
        f"the README says {stated}; the record and the study give {row[['ratio', 'low', 'high']].round(2).tolist()}")


# The README's one-line finding, phrase by phrase: the claims (and metrics) each phrase reads, and how their
# verdicts must begin. A phrase missing from the README, or a verdict that moved, fails.
FINDING = {
    "PALU keeps less utility than GradDiff and NPO when all forget as much":
        ([("palu-over-graddiff", "model_utility"), ("palu-over-npo", "model_utility")], "fails"),
    "PerTA cannot be told apart from plain task arithmetic":
        ([(claim, metric) for claim in ("perta-grad-over-tv", "perta-fisher-over-tv")
          for metric in ("model_utility", "neighbour_rouge")], "cannot tell"),
}


# The README's paragraph on PALU's 2 x 2, read the same way against the scope study's verdicts.
SCOPE_FINDING = {
    "the top-1 restriction is needed for model utility": ([("palu-topk-needed", "model_utility")], "holds"),
    "and the onset restriction for the neighbours' answers": ([("palu-onset-needed", "neighbour_rouge")], "holds"),
    "neither restriction shows on both":
        ([("palu-topk-needed", "neighbour_rouge"), ("palu-onset-needed", "model_utility")], "cannot tell"),
}


# The README's paragraph on the real-TOFU study, read against its verdicts (model utility: it has no neighbours).
TOFU_FINDING = {
    "PerTA-grad keeps less model utility than TV (*fails*)": ([("perta-grad-over-tv", "model_utility")], "fails"),
    "against GradDiff and NPO, PALU *cannot tell*": ([("palu-over-graddiff", "model_utility"),
                                                      ("palu-over-npo", "model_utility")], "cannot tell"),
    "PerTA-grad is *competitive* with NPO": ([("perta-vs-npo", "model_utility")], "holds"),
}


def assert_phrases_are_the_verdicts(findings: dict, table, line: str, update: str) -> None:
    from palu_perta import verdicts

    for phrase, (rows, verdict) in findings.items():
        assert phrase in line, f"the README no longer says {phrase!r}: update {update} with it"
        for claim, metric in rows:
            row = verdicts.find_row(table, claim=claim, metric=metric)
            assert row is not None and row["verdict"].startswith(verdict), (
                f"the README says {phrase!r}, but {claim} on {metric} reads "
                f"{None if row is None else row['verdict']!r}: rewrite the README's finding")


def assert_seeds_are_stated(table, line: str, one: str, what: str) -> None:
    """``line`` states the seeds behind the verdicts of ``table``: ``one`` for a single seed, else
    "a-b seeds per method so far" or "N seeds per method" (not inside a range: "1-2 seeds per method" holds
    "2 seeds per method" too)."""
    seeds = table[["seeds_method", "seeds_baseline"]].to_numpy()
    fewest, most = int(seeds.min()), int(seeds.max())
    stated = (one if most == 1 else f"{fewest}-{most} seeds per method so far" if fewest < most
              else f"{most} seeds per method")
    assert re.search(rf"(?<![\d-]){re.escape(stated)}", line), \
        f"the verdicts rest on {fewest} to {most} seeds per method: {what} should say {stated!r}"


def test_readme_finding_is_the_verdicts():
    table = verdict_table()
    line = " ".join(readme().split())
    assert_phrases_are_the_verdicts(FINDING, table, line, "FINDING")
    assert_seeds_are_stated(table, line, one="one seed so far", what="the finding")


def test_readme_scope_finding_is_the_scope_verdicts():
    """The README's 2 x 2 paragraph: each phrase against figures/study_scope_verdicts.csv, and the seeds it
    states against the seeds behind every scope verdict."""
    from palu_perta import verdicts

    table = verdicts.read_table(ROOT / "figures" / "study_scope_verdicts.csv")
    line = " ".join(readme().split())
    assert_phrases_are_the_verdicts(SCOPE_FINDING, table, line, "SCOPE_FINDING")
    seeds = sorted({int(s) for s in table[["seeds_method", "seeds_baseline"]].to_numpy().ravel()})
    assert len(seeds) == 1 and f"the `scope` study, {seeds[0]} seeds per variant" in line, (
        f"the scope verdicts rest on {seeds} seeds per variant: the README's 2 x 2 paragraph should say so")


def test_readme_tofu_finding_is_the_tofu_verdicts():
    """The README's real-TOFU paragraph: each phrase against figures/study_tofu_verdicts.csv, the seeds it states
    against the seeds behind them, and "each method placed at matched forgetting loses retain-author answers"
    against the collateral-damage rows the committed results give."""
    from palu_perta import report, store, verdicts

    table = verdicts.read_table(ROOT / "figures" / "study_tofu_verdicts.csv")
    line = " ".join(readme().split())
    assert_phrases_are_the_verdicts(TOFU_FINDING, table, line, "TOFU_FINDING")
    assert_seeds_are_stated(table[table["metric"] == "model_utility"], line,  # neighbour rows: no items, 0 seeds
                            one="one seed per method so far, so every verdict is provisional",
                            what="the real-TOFU paragraph")
    provisional = table[table["verdict"].astype(str).str.contains("provisional")]
    assert "so no verdict is provisional" not in line or provisional.empty, (
        f"the README's real-TOFU paragraph says no verdict is provisional, but {len(provisional)} of them are")
    tables = store.load(ROOT / "results" / "tofu")
    frame = report.points(tables)
    damage = report.collateral_damage(tables, frame, "retain", "rougeL_recall")
    placed = damage[damage["seeds"] > 0]
    assert len(placed) and (placed["verdict"] == "loses").all(), (
        "the README says each method placed at matched forgetting loses retain-author answers; the results say "
        + ", ".join(f"{r.label}: {r.verdict}" for r in placed.itertuples()))


def notes_section(title: str) -> str:
    """The text of the ``benchmarks/NOTES.md`` section whose heading starts with ``title``."""
    text = (ROOT / "benchmarks" / "NOTES.md").read_text()
    return re.split(r"\n## ", text.split(f"\n## {title}", 1)[1], maxsplit=1)[0]


def test_time_memory_and_disk_are_the_recorded_ones():
    """Each figure of the README's "What it needs" (and docs/install.md's) is the number its source records: the
    notebook runner's records (``benchmarks/results/notebook_runs.jsonl``), docs/teaching.md, benchmarks/NOTES.md."""
    text, install = " ".join(readme().split()), " ".join((ROOT / "docs" / "install.md").read_text().split())
    teaching = (ROOT / "docs" / "teaching.md").read_text()
    runs = [json.loads(line) for line in (ROOT / "benchmarks" / "results" / "notebook_runs.jsonl").read_text().splitlines()]
    quickstart = [run["notebooks_s"]["notebooks/00_quickstart"] for run in runs
                  if run["profile"] == "cpu" and "notebooks/00_quickstart" in run["notebooks_s"]]
    assert quickstart, "no cpu run of the quickstart is recorded"
    # the fastest and slowest recorded runs (2 cores, with and without native bf16: benchmarks/NOTES.md)
    span = f"{round(min(quickstart) / 60)}-{round(max(quickstart) / 60)} minutes"
    assert f"the quickstart {span} on 2 cores" in text, f"the quickstart took {quickstart} s: {span}"
    assert f"quickstart alone ({span})" in text
    hours = re.search(r"Together the column comes to about (\d+) hours", " ".join(teaching.split()))
    assert hours, "docs/teaching.md no longer totals its from-nothing column"
    assert f"from nothing about {hours.group(1)} hours on 2 cores" in text, f"teaching.md totals {hours.group(1)} hours"
    assert f"about {hours.group(1)} h from nothing on 2 cores" in install

    rss = {row[0]: int(row[3]) for row in table_rows(notes_section("Unlearning step cost"), "| method | s/step |")}
    assert f"up to {max(rss.values()):,} MiB of RAM" in text and f"PALU {rss['PALU (K = 50, N = 3, KL)']:,} MiB" in text
    assert f"{min(rss.values()):,} MiB (GA)" in install and f"{max(rss.values()):,} MiB (IdkDPO)" in install
    assert rss["GA"] == min(rss.values()) and rss["IdkDPO"] == max(rss.values())
    assert "24 GiB" in (ROOT / "benchmarks" / "NOTES.md").read_text().split("\n## ", 1)[0] and "24 GiB machine" in text

    cache = notes_section("The cpu study's cache")
    model, tau = (float(re.search(rf"{what}\s+([\d.]+) MB", cache).group(1)) for what in ("model directory", "a tau"))
    end, peak = 5 * model / 1000, (5 * model + 6 * tau) / 1000  # 5 models; + theta_ft, tau and 4 importance maps
    assert f"**{end:.2f} GB" in cache and f"**{peak:.1f} GB**" in cache
    for page in (text, install):
        assert f"{end:.2f} GB" in page and f"{peak:.1f} GB" in page and f"{model} MB" in page


@pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="measures a virtual environment (.venv); this is none")
def test_the_environment_is_about_the_size_the_readme_says():
    """`.venv` is "about 2 GB" (README, docs/install.md): the running environment, summed file by file."""
    assert ".venv` about 2 GB" in readme() and "is about 2 GB" in (ROOT / "docs" / "install.md").read_text()
    size = 0
    for folder, _, files in os.walk(sys.prefix):
        size += sum(os.path.getsize(p) for f in files if not os.path.islink(p := os.path.join(folder, f)))
    assert 1.5e9 <= size <= 2.5e9, f"the environment holds {size / 1e9:.2f} GB, not about 2 GB: update README.md"


def test_the_profiles_named_are_the_code_s():
    text = " ".join(readme().split())
    models = (ROOT / "palu_perta" / "models.py").read_text()  # read, not imported: importing loads transformers
    assert get_profile("cpu").model == "smollm2" and 'SMOLLM2_GGUF = "SmolLM2-135M-Instruct' in models
    assert "SmolLM2-135M" in text
    assert "Llama-3.2-1B" in get_profile("paper").model and "`paper` profile (Llama-3.2-1B" in text
    assert "untested on a GPU here" in text
