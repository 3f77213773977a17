"""The study runner and its results store: a declared grid, a plan with a time estimate, a study killed
mid-cell that resumes to the same results, and committed results that must match the current code."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from palu_perta import figures, kept, store, study
from palu_perta.cli import main
from palu_perta.config import repo_root

SMOKE = study.GRIDS["smoke"]
# one training-based method, one seed: the smallest study that trains (epochs 3: a checkpoint to kill after)
SMALL = dataclasses.replace(SMOKE, name="smoke-small", seeds=(0,), methods={"ga": ({},)}, budget={"epochs": 3})


def test_grid_declares_references_first_then_seed_by_seed():
    cells = SMOKE.cells()
    assert [c.method for c in cells[:2]] == ["retain", "target"]
    seeds = [c.seed for c in cells[2:]]
    assert seeds == sorted(seeds) and set(seeds) == set(SMOKE.seeds)
    assert len({c.id for c in cells}) == len(cells)  # ids name files: unique
    for cell in cells:
        assert study.Cell.from_dict(cell.to_dict()) == cell


def test_cell_hash_follows_the_configuration():
    cell = next(c for c in SMOKE.cells() if c.method == "ga")
    base = study.cell_hash(SMOKE, cell)
    assert study.cell_hash(SMOKE, cell) == base
    assert study.cell_hash(dataclasses.replace(SMOKE, budget={"learning_rate": 1e-3}), cell) != base
    assert study.cell_hash(SMOKE, dataclasses.replace(cell, seed=7)) != base
    other = dataclasses.replace(SMOKE, settings={"synthetic": {"n_authors": 7}})
    assert study.cell_hash(other, cell) != base  # other data


def test_dry_run_lists_every_cell_and_the_time_left(tmp_path, capsys):
    assert main(["study", "--profile", "smoke", "--results", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    for cell in SMOKE.cells():
        assert cell.id in out
    assert f"{len(SMOKE.cells())} cells, 0 done, {len(SMOKE.cells())} to run: about" in out
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


def test_the_tofu_grids_hold_the_setting_their_comments_declare(tofu_dir):
    """`tofu`: forget01's 40 answers, 4 retain authors (80 answers), one holdout author, open-unlearning's
    whole real-author and world-fact sets, no neighbour answers, and 1.3 / 2.3 times the synthetic setting's
    text; `tofu20`: 20 retain authors and TOFU's 11 neighbour answers (study.py's comments say so)."""
    from palu_perta import pipeline
    from palu_perta.config import get_profile

    default_bench = pipeline.benchmark(get_profile("cpu"))
    sizes = {}
    for name in ("tofu", "tofu20"):
        grid = study.get_grid(name)
        bench = pipeline.benchmark(grid.profile_for(grid.cells()[0]))
        sizes[name] = {split: len(records) for split, records in bench.splits().items()}
        assert bench.source == str(tofu_dir.resolve()) and sizes[name]["forget"] == 40
        assert sizes[name]["real_authors"] == 100 and sizes[name]["world_facts"] == 117
        if name == "tofu":
            scale = study.work_scale(bench, default_bench)
            assert (round(scale["train"], 1), round(scale["eval"], 1)) == (1.3, 2.3)
    assert (sizes["tofu"]["retain"], sizes["tofu"]["holdout"], sizes["tofu"].get("neighbour", 0)) == (80, 20, 0)
    assert (sizes["tofu20"]["retain"], sizes["tofu20"]["neighbour"]) == (400, 11)


def test_a_cells_hash_does_not_depend_on_where_the_tofu_copy_lies(tofu_dir, tmp_path, monkeypatch):
    """CI clones the repository elsewhere, with its own ../shared: a committed tofu result must keep its hash when
    the same TOFU files lie at another path (the data key holds their content hash, not their path)."""
    import shutil

    grid = study.get_grid("tofu")
    cell = grid.cells()[0]
    here = study.cell_hash(grid, cell)
    copy = shutil.copytree(tofu_dir, tmp_path / "elsewhere" / "tofu")
    monkeypatch.setenv("PALU_PERTA_TOFU_DIR", str(copy))
    assert {info["source"] for info in study.cell_config(grid, cell)["data"].values()} == {"tofu-format files"}
    assert study.cell_hash(grid, cell) == here


def test_an_untimed_setting_is_estimated_by_its_work(tmp_path):
    """Before a setting's own cells are timed, a cell's estimate is the default setting's cost scaled by how
    much text it fine-tunes on and evaluates (a bigger setting is estimated longer, in proportion); once a
    cell of that method on that setting is done, its time is used, and another setting's time is not."""
    from palu_perta import pipeline
    from palu_perta.config import get_profile

    bigger = dataclasses.replace(SMALL, name="smoke-bigger", settings={"big": {"n_authors": 12}})
    default_bench = pipeline.benchmark(get_profile("smoke"))
    cell = next(c for c in bigger.cells() if c.method == "ga")
    scale = study.work_scale(pipeline.benchmark(bigger.profile_for(cell)), default_bench)
    assert scale["train"] > 1.5 and scale["eval"] > 1.0
    assert study.work_scale(default_bench, default_bench) == {"train": 1.0, "eval": 1.0}
    base = study.estimate_seconds(bigger, cell)
    scaled = study.estimate_seconds(bigger, cell, scale=scale)
    cost, points = study.COSTS["smoke"], study.n_points(bigger, cell)
    assert scaled == pytest.approx(points * (cost["epoch"] * scale["train"] + cost["eval"] * scale["eval"]))
    assert scaled > base
    assert study.plan(bigger, tmp_path).rows[-1]["estimate_s"] == pytest.approx(scaled)
    timed = {"cell": {"method": "ga", "setting": "big"}, "wall_time_s": 30.0, "points": 3}
    other = {"cell": {"method": "ga", "setting": "synthetic"}, "wall_time_s": 300.0, "points": 3}
    assert study.estimate_seconds(bigger, cell, [timed, other], scale) == pytest.approx(10.0 * points)
    assert study.estimate_seconds(bigger, cell, [other], scale) == pytest.approx(scaled)


def test_study_arguments_are_checked(tmp_path, capsys):
    assert main(["study", "--profile", "smoke", "--methods", "sgd", "--dry-run", "--results", str(tmp_path)]) == 2
    assert "no method(s) ['sgd']" in capsys.readouterr().err
    assert main(["study", "--grid", "cpu", "--profile", "smoke", "--dry-run"]) == 2
    assert main(["study", "--grid", "nope", "--dry-run"]) == 2


# The study in a child process that stops (hangs, as a process about to be killed) right after the unlearning
# cell's first complete checkpoint, and says so on stdout: the parent then kills it mid-cell on every machine,
# however loaded (polling for the checkpoint could see the cell finish first).
KILLED = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import transformers
    from palu_perta import study
    from tests.test_study import SMALL
    ga = next(c for c in SMALL.cells() if c.method == "ga")
    save = transformers.Trainer._save_checkpoint

    def save_then_hang(self, *args, **kwargs):
        save(self, *args, **kwargs)
        if Path(self.args.output_dir).name.startswith(f"{SMALL.name}-{ga.id}-"):
            print("checkpoint", flush=True)
            time.sleep(3600)

    transformers.Trainer._save_checkpoint = save_then_hang
    study.run_study(SMALL, Path(sys.argv[1]), progress=False, log=lambda _: None)
""")


def _comparable(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0].pop("wall_time_s")
    for row in rows:
        row.get("meta", {}).pop("wall_time_s", None)
    return rows


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The small study run once without interruption (its results directory)."""
    root = tmp_path_factory.mktemp("straight")
    study.run_study(SMALL, root, progress=False, log=lambda _: None)
    return root


@pytest.mark.slow
def test_a_study_killed_mid_cell_resumes_to_the_same_results(tmp_path, straight):
    killed = tmp_path / "killed"
    ga = next(c for c in SMALL.cells() if c.method == "ga")
    ga_file = study.cell_path(SMALL, ga, killed)
    scratch_root = study.artifacts_root() / "study-scratch"

    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(killed)], cwd=repo_root(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        said = proc.stdout.readline().strip()  # "checkpoint", or "" when the child ended without one
        if said != "checkpoint":
            proc.wait(timeout=60)
            pytest.fail(f"no checkpoint seen; the run ended with {proc.returncode}: {proc.stderr.read()[-2000:]}")
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)  # as a cluster's time limit would: no clean-up
        proc.wait()
    found = sorted(scratch_root.glob(f"{SMALL.name}-{ga.id}-*/checkpoint-*"))
    assert len(found) == 1 and (found[0] / "trainer_state.json").exists(), found
    checkpoint = found[0]
    assert not ga_file.exists(), "the cell finished before the kill: the test did not kill mid-cell"
    done = [p.name for p in (killed / SMALL.name).glob("*.jsonl")]
    assert sorted(done) == sorted(f"{c.id}.jsonl" for c in SMALL.cells() if c.kind == "reference")

    resumed = study.run_study(SMALL, killed, progress=False, log=lambda _: None)
    assert [r["cell"].id for r in resumed.todo] == [ga.id]  # only the killed cell ran again
    assert not checkpoint.parent.exists()  # its scratch folder is gone once its results are written
    for path in sorted((straight / SMALL.name).glob("*.jsonl")):
        assert _comparable(killed / SMALL.name / path.name) == _comparable(path), path.name
    # the epochs before the kill were not evaluated twice: one summary per epoch
    summaries = [r for r in store.read_rows(ga_file) if r["row"] == "summary"]
    assert [r["point"]["epoch"] for r in summaries] == [1, 2, 3]

    # a finished study has nothing left to run, and its plan says so
    assert study.plan(SMALL, killed).todo == []
    assert study.stale_cells(SMALL, killed) == []


HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from palu_perta import study
    from tests.test_study import SMALL
    ga = next(c for c in SMALL.cells() if c.method == "ga")
    with study.claim_cell(SMALL, ga, Path(sys.argv[1])) as claimed:
        print("held" if claimed else "refused", flush=True)
        time.sleep(600)
""")


def test_two_processes_never_run_one_cell(tmp_path, monkeypatch):
    """A cell another process holds is skipped (nothing of it written, none of its scratch entries released:
    the other process may be using them); its lock dies with that process, SIGKILL included, so a killed
    study never leaves a cell blocked."""
    ga = next(c for c in SMALL.cells() if c.method == "ga")
    monkeypatch.setattr(study, "release_entries", lambda *a, **k: pytest.fail("released a skipped cell's entries"))
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], cwd=repo_root(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held", holder.stderr.read()
        with study.claim_cell(SMALL, ga, tmp_path) as claimed:
            assert claimed is False
        lines: list[str] = []
        study.run_study(SMALL, tmp_path, cells=[ga], progress=False, log=lines.append)
        assert f"{ga.id}: another process is running it; skipped" in lines
        assert not study.cell_path(SMALL, ga, tmp_path).exists()
    finally:
        holder.kill()
        holder.wait()
    with study.claim_cell(SMALL, ga, tmp_path) as claimed:
        assert claimed is True


@pytest.mark.slow
def test_a_cell_finished_by_another_process_meanwhile_is_not_rerun(tmp_path, straight, monkeypatch):
    """The plan is made at the start; a cell another process finished since then is skipped, not recomputed."""
    ga = next(c for c in SMALL.cells() if c.method == "ga")
    before = study.plan(SMALL, tmp_path, [ga])
    assert [r["cell"] for r in before.todo] == [ga]
    target = study.cell_path(SMALL, ga, tmp_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(study.cell_path(SMALL, ga, straight), target)  # the other process's result
    monkeypatch.setattr(study, "plan", lambda *args, **kwargs: before)
    monkeypatch.setattr(study, "run_cell", lambda *args, **kwargs: pytest.fail("the finished cell was rerun"))
    lines: list[str] = []
    study.run_study(SMALL, tmp_path, cells=[ga], progress=False, log=lines.append)
    assert f"{ga.id}: done by another process meanwhile; skipped" in lines


def test_the_retain_model_is_trained_only_when_a_cell_asks_for_it(monkeypatch):
    """A study of training-based methods (its retain cell done) needs only the target model: the retain
    fine-tune, as long as the target's on two cores, is paid only by the cells that read it."""
    from palu_perta import training

    asked: list[str] = []

    def fake(profile, benchmark, role, progress=True):
        asked.append(role)
        return Path(f"/nowhere/{role}")

    monkeypatch.setattr(training, "reference_model", fake)
    ga = next(c for c in SMALL.cells() if c.method == "ga")
    ctx = study._context(SMALL, ga, {})
    assert asked == ["target"] and ctx.target == Path("/nowhere/target")
    assert ctx.retain == Path("/nowhere/retain") and asked == ["target", "retain"]
    assert ctx.retain == Path("/nowhere/retain") and asked == ["target", "retain"]  # once


@pytest.mark.slow
def test_the_plan_counts_the_reference_models_a_fresh_cache_lacks(tmp_path, straight, monkeypatch):
    """Committed reference cells beside an empty cache: the cells still need the target model fine-tuned
    first, and the dry run says so and counts it; the retain model only where a cell to run reads it."""
    from palu_perta import training

    for cell in SMALL.cells():
        if cell.kind == "reference":
            target = study.cell_path(SMALL, cell, tmp_path)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(study.cell_path(SMALL, cell, straight), target)
    cached = study.plan(SMALL, tmp_path)
    assert cached.setup == []  # the straight run left both models in the cache
    monkeypatch.setattr(training, "reference_cached", lambda profile, bench, role: False)
    fresh = study.plan(SMALL, tmp_path)
    assert [s["what"].split(" (")[0] for s in fresh.setup] == ["fine-tune the target model"]  # ga reads no retain
    assert fresh.seconds_left == pytest.approx(cached.seconds_left + study.COSTS["smoke"]["finetune"])
    assert "+ fine-tune the target model" in fresh.table()
    # a reference cell still to run carries its own fine-tune: not counted twice
    (study.study_dir(SMALL, tmp_path) / f"{SMALL.cells()[1].id}.jsonl").unlink()
    assert study.plan(SMALL, tmp_path).setup == []


@pytest.mark.slow
def test_results_store_round_trip(straight):
    """The summary a cell file records is the one its item rows recompute (against the retain model's rows)."""
    from palu_perta.evaluation import summarise

    tmp_path = straight
    tables = store.load(study.study_dir(SMALL, tmp_path))
    assert set(tables["summaries"]["method"]) == {"retain", "target", "ga"}
    assert (tables["summaries"].query("method == 'retain'")["forget_quality"] == 1.0).all()
    rows = store.read_rows(study.cell_path(SMALL, next(c for c in SMALL.cells() if c.method == "ga"), tmp_path))
    retain_rows = store.read_rows(study.cell_path(SMALL, SMALL.cells()[0], tmp_path))
    meta = next(r for r in rows if r["row"] == "summary")["meta"]
    reference = store.per_item_payload([r for r in retain_rows if r["row"] == "item"], meta["forget_split"],
                                       meta["forget_hash"])
    for summary in (r for r in rows if r["row"] == "summary"):
        items = [r for r in rows if r["row"] == "item" and r["point"] == summary["point"]]
        again = summarise(store.per_item_payload(items, meta["forget_split"], meta["forget_hash"]), reference)
        for key, value in summary["metrics"].items():
            if value is not None:
                assert again[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    # generations are kept on the forget split only, and no row carries the data's own text
    item_rows = [r for r in rows if r["row"] == "item"]
    assert all(("generation" in r) == (r["split"] == "forget") for r in item_rows if r["split"] != "holdout")
    assert not any("question" in r or "answer" in r for r in item_rows)


def test_stale_results_are_reported(tmp_path):
    """A file whose recorded hash differs from the current code's, or whose cell the grid no longer declares."""
    cell = next(c for c in SMALL.cells() if c.method == "ga")
    header = {"cell": cell.to_dict(), "config_hash": study.cell_hash(SMALL, cell), "palu_perta": "0"}
    store.write_cell(study.cell_path(SMALL, cell, tmp_path), header, [])
    assert study.stale_cells(SMALL, tmp_path) == []
    store.write_cell(study.cell_path(SMALL, cell, tmp_path), {**header, "config_hash": "0" * 12}, [])
    assert [p.split(":")[0] for p in study.stale_cells(SMALL, tmp_path)] == [f"{cell.id}.jsonl"]
    orphan = dataclasses.replace(cell, method="npo")
    store.write_cell(study.cell_path(SMALL, orphan, tmp_path), {**header, "cell": orphan.to_dict()}, [])
    assert any("no longer declares" in p for p in study.stale_cells(SMALL, tmp_path))
    # and the plan recomputes a stale cell rather than trusting it
    plan = study.plan(SMALL, tmp_path)
    assert next(r for r in plan.rows if r["cell"] == cell)["status"] == "stale"


def test_committed_results_match_the_current_code():
    """Every committed results file must be what the current code computes for its cell: when a change to a
    profile, a budget, a loss default or the data moves a cell's configuration hash, this fails and names the
    cells to rerun (``python -m palu_perta study --grid NAME``)."""
    root = repo_root() / "results"
    figure_data = figures.data_dir("cpu", root)  # results/figures: the notebooks' figure data, not a study
    kept_results = kept.kept_root(root)  # results/kept: notebooks' kept evaluations (tests/test_kept.py), not a study
    studies = sorted(p for p in root.iterdir() if p.is_dir() and p not in (figure_data, kept_results)) \
        if root.is_dir() else []
    if not studies:
        pytest.skip("no committed study results")
    problems = []
    for directory in studies:
        if directory.name not in study.GRIDS:
            problems.append(f"{directory.name}: no grid of that name in palu_perta.study.GRIDS")
            continue
        problems += [f"{directory.name}/{p}" for p in study.stale_cells(study.GRIDS[directory.name], root)]
    assert not problems, ("committed results no longer match the code; rerun their cells with "
                          "`python -m palu_perta study --grid NAME` and commit:\n" + "\n".join(problems))


def test_store_rejects_a_corrupt_file(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"row": "cell", "cell": {}}\n{"row": "summ')
    with pytest.raises(ValueError, match="x.jsonl:2 is not valid JSON"):
        store.read_rows(path)
    shutil.rmtree(tmp_path)


def test_matched_forgetting_interpolates_along_the_curve():
    """Hand-computed: the retain model's forget ROUGE-L is 0.4; the method's curve goes 0.9 (target) -> 0.6
    (epoch 1) -> 0.2 (epoch 2), so it crosses halfway through epoch 2: MU halfway between 0.50 and 0.40."""
    import pandas as pd

    from palu_perta.report import at_matched_forgetting

    def row(method, kind, seed, x, rouge, mu, fq):
        return {"setting": "s", "forget_split": "f", "label": method, "method": method, "kind": kind, "seed": seed,
                "x": x, "forget_rouge": rouge, "model_utility": mu, "forget_quality": fq}

    frame = pd.DataFrame([row("retain", "reference", 0, 0, 0.4, 0.55, 1.0), row("target", "reference", 0, 0, 0.9, 0.6, 0.01),
                          row("ga", "training", 0, 1, 0.6, 0.5, 0.1), row("ga", "training", 0, 2, 0.2, 0.4, 0.5),
                          row("npo", "training", 0, 1, 0.8, 0.58, 0.02), row("npo", "training", 0, 2, 0.7, 0.57, 0.03)])
    matched = at_matched_forgetting(frame).set_index("label")
    assert matched.loc["ga", "reached"] and matched.loc["ga", "x"] == pytest.approx(1.5)
    assert matched.loc["ga", "model_utility"] == pytest.approx(0.45)
    assert matched.loc["ga", "forget_quality"] == pytest.approx(0.3)
    assert not matched.loc["npo", "reached"] and pd.isna(matched.loc["npo", "model_utility"])


@pytest.mark.slow
def test_report_rebuilds_tables_and_figure_from_results(straight, tmp_path):
    from palu_perta import report

    paths = report.build(SMALL.name, straight, tmp_path)
    assert sorted(p.name for p in paths) == sorted([f"study_{SMALL.name}.md", f"study_{SMALL.name}_points.csv",
                                                    f"study_{SMALL.name}_tradeoff.png", f"study_{SMALL.name}_verdicts.csv",
                                                    f"study_{SMALL.name}_neighbour.png"])  # smoke data has neighbours
    text = (tmp_path / f"study_{SMALL.name}.md").read_text()
    assert "## Collateral damage at matched forgetting" in text
    assert "| synthetic | forget10 | ga | 1 |" in text  # one seed: the row says so
    points = report.points(store.load(study.study_dir(SMALL, straight)))
    assert len(points) == 2 + 3  # retain, target, ga after each of its 3 epochs
    assert (points["forget_rouge_low"] <= points["forget_rouge"] + 1e-12).all()
    assert (points["forget_rouge"] <= points["forget_rouge_high"] + 1e-12).all()


def test_cache_and_results_files_honour_the_umask(tmp_path):
    """A shared cache or results directory is readable by the group and others under the usual umask 022."""
    from palu_perta.artifacts import atomic_dir, atomic_write_text

    old = os.umask(0o022)
    try:
        written = atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_dir(tmp_path / "entry", {"k": 1}) as tmp:
            (tmp / "f").write_text("y")
    finally:
        os.umask(old)
    assert written.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "entry").stat().st_mode & 0o777 == 0o755
