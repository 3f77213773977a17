"""Kept results (palu_perta/kept.py): what one run keeps, a fresh cache reads back without training or
evaluating, only for exactly the configuration that made it; weights are never kept; stale records show."""

from __future__ import annotations

import gzip
import json

import pytest

from palu_perta import ablations, kept, pipeline
from palu_perta.artifacts import cached
from palu_perta.config import get_profile


@pytest.fixture()
def dirs(tmp_path, monkeypatch):
    """A scratch artifacts directory and results directory, kept results written."""
    monkeypatch.setenv("PALU_PERTA_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("PALU_PERTA_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv(kept.KEEP_ENV, "1")
    return tmp_path


def _build(calls: list, text: str = '{"lam": 2.0}'):
    def build(directory):
        calls.append(directory)
        (directory / "lambda.json").write_text(text)
    return build


def test_a_kept_entry_is_restored_into_a_fresh_cache_without_building(dirs, monkeypatch):
    calls: list = []
    config = {"model": "target", "retain_rouge": 0.4}
    first = kept.cached_or_kept("calibration", "smoke-ladder", config, _build(calls))
    assert len(calls) == 1
    record = kept.record_path("calibration", first.name)
    assert record.is_file() and kept.read_record(record)["files"] == {"lambda.json": '{"lam": 2.0}'}
    monkeypatch.setenv("PALU_PERTA_ARTIFACTS", str(dirs / "fresh"))  # a fresh clone: empty cache, same results
    monkeypatch.delenv(kept.KEEP_ENV)
    again = kept.cached_or_kept("calibration", "smoke-ladder", config, _build(calls))
    assert len(calls) == 1, "the kept record should have been restored, not rebuilt"
    assert again.name == first.name and (again / "lambda.json").read_text() == '{"lam": 2.0}'
    other = kept.cached_or_kept("calibration", "smoke-ladder", {**config, "retain_rouge": 0.5}, _build(calls))
    assert len(calls) == 2 and other.name != first.name  # another configuration is built, never restored


def test_a_record_is_not_used_for_another_configuration_even_under_its_name(dirs, monkeypatch):
    calls: list = []
    config = {"model": "target"}
    path = kept.cached_or_kept("calibration", "smoke-ladder", config, _build(calls))
    record = kept.record_path("calibration", path.name)
    payload = kept.read_record(record)
    payload["config"] = {"model": "another"}  # renamed, or edited by hand
    record.write_bytes(gzip.compress(json.dumps(payload).encode()))
    assert kept.stale_records() == [f"calibration/{path.name}"]
    monkeypatch.setenv("PALU_PERTA_ARTIFACTS", str(dirs / "fresh"))
    kept.cached_or_kept("calibration", "smoke-ladder", config, _build(calls))
    assert len(calls) == 2, "a record of another configuration must not be restored"


def test_records_are_byte_identical_when_kept_again_and_never_hold_weights(dirs):
    config = {"model": "target"}
    path = kept.cached_or_kept("calibration", "smoke-ladder", config, _build([]))
    record = kept.record_path("calibration", path.name)
    before = record.read_bytes()
    kept.keep("calibration", path, config)
    assert record.read_bytes() == before  # no timestamp inside: a rerun leaves git clean
    assert kept.stale_records() == []
    with pytest.raises(ValueError, match="weights are never committed"):
        kept.record_path("unlearned", "smoke-palu-0123")
    weights = cached("evals", "binary", {"x": 1}, lambda d: (d / "model.safetensors").write_bytes(b"\x80\x81\xff"))
    with pytest.raises(ValueError, match="not text"):
        kept.keep("evals", weights, {"x": 1})


def test_without_keeping_nothing_is_written_to_the_results(dirs, monkeypatch):
    monkeypatch.delenv(kept.KEEP_ENV)
    kept.cached_or_kept("calibration", "smoke-ladder", {"model": "target"}, _build([]))
    assert kept.records() == []


def _cache_sharing_models(root, shared):
    """An artifacts directory of its own whose ``models/`` (the converted base model, the target and retain
    fine-tunes) is the shared cache's: a fresh clone's cache, less the minutes of rebuilding those."""
    (shared / "models").mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True)
    (root / "models").symlink_to(shared / "models", target_is_directory=True)
    return root


def test_palu_ablation_points_kept_once_are_read_back_without_training_or_evaluating(tmp_path, monkeypatch):
    """07's PALU rows from a fresh cache and the kept results: identical numbers and training times, and the
    unlearning runs are never trained nor evaluated again."""
    from palu_perta.paths import artifacts_root

    shared = artifacts_root()
    monkeypatch.setenv("PALU_PERTA_ARTIFACTS", str(_cache_sharing_models(tmp_path / "artifacts", shared)))
    monkeypatch.setenv("PALU_PERTA_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv(kept.KEEP_ENV, "1")
    profile = get_profile("smoke")
    bench = pipeline.benchmark(profile)

    def rows_and_retain():
        models = pipeline.reference_models(profile, bench, progress=False)
        retain_eval = pipeline.evaluation(profile, models.retain, bench, reference="self", name="retain", progress=False)
        rows = ablations.palu_ablation(profile, bench, models.target, retain_eval, axes=["lr_scale"], log=None)
        return rows, models

    first, models = rows_and_retain()
    runs = {artifacts_root() / "unlearned" / run for run in first["run"]}
    assert all(run.is_dir() for run in runs) and first["train_s"].notna().all()
    assert len(kept.records()) == len(first) + 1  # each run's evaluation and the retain model's
    fresh = _cache_sharing_models(tmp_path / "fresh", shared)
    monkeypatch.setenv("PALU_PERTA_ARTIFACTS", str(fresh))
    monkeypatch.delenv(kept.KEEP_ENV)

    def forbidden(*args, **kwargs):
        raise AssertionError("trained or evaluated although the kept results hold the evaluation")

    monkeypatch.setattr(ablations, "unlearned_model", forbidden)
    monkeypatch.setattr(pipeline, "evaluate", forbidden)
    again, fresh_models = rows_and_retain()
    assert fresh_models.target.name == models.target.name
    assert not any((fresh / "unlearned").glob("*")), "no unlearning run should exist in the fresh cache"
    columns = [*ablations.KEYS, "value", "run", "train_s"]
    assert again[columns].equals(first[columns])


def test_the_committed_kept_records_are_current():
    """A committed record the current code would never read (another package version, renamed, edited) is
    dead weight that looks like a result: rerun what made it with PALU_PERTA_KEEP=1, or delete it."""
    from palu_perta.paths import repo_root

    root = repo_root() / "results"
    assert kept.stale_records(root) == [], "stale kept results: rerun their notebook with PALU_PERTA_KEEP=1"
