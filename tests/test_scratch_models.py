"""Models are scratch (issue 19, item 2): tau is keyed by what produced theta_ft, so it is found without
theta_ft on disk and equals the tau of the old keying bit for bit; a study deletes each seed's theta_ft,
tau and the importances after the last cell that reads them, and a study that needs them again rebuilds
them to the same results. Every test uses its own artifacts directory."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from palu_perta import artifacts, perta, pipeline, study
from palu_perta.config import get_profile
from palu_perta.models import save_model, tiny_model
from palu_perta.task_vectors import TaskVector

from .test_study import _comparable


@pytest.fixture()
def smoke(tmp_path, monkeypatch, tokenizer):
    """The smoke profile and benchmark, a tiny target saved as a directory, a fresh artifacts directory."""
    monkeypatch.setenv("PALU_PERTA_ARTIFACTS", str(tmp_path / "artifacts"))
    target = tmp_path / "target"
    save_model(tiny_model(tokenizer, seed=0), tokenizer, target)
    profile = get_profile("smoke")
    return profile, pipeline.benchmark(profile), target, perta.perta_config(profile)


def _same(a: TaskVector, b: TaskVector) -> bool:
    return list(a) == list(b) and all(torch.equal(a[name], b[name]) for name in a)


def _no_training(monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("fine-tuned theta_ft again")

    monkeypatch.setattr(perta, "finetuned_model", fail)


def test_tau_is_found_without_theta_ft_and_equals_the_old_keying(smoke, monkeypatch):
    profile, bench, target, cfg = smoke
    # the old way: theta_ft first, then tau keyed by theta_ft's entry as found on disk
    theta_ft = perta.reinforced_model(profile, bench, target, cfg, progress=False)
    old_entry = perta.task_vector_entry(profile, target, theta_ft)
    old = TaskVector.load(old_entry / perta.TAU_FILE)
    assert perta.reinforced_entry(profile, bench, target, cfg) == theta_ft  # computed, not trained
    assert perta.reinforced_task_vector_path(profile, bench, target, cfg) == old_entry  # the same key

    artifacts.remove_entry(theta_ft)
    assert not theta_ft.exists()
    _no_training(monkeypatch)
    assert perta.reinforced_task_vector_entry(profile, bench, target, cfg, progress=False) == old_entry
    assert _same(perta.reinforced_task_vector(profile, bench, target, cfg, progress=False), old)
    # the calibration's key names theta_ft the same way, so it is found too
    assert json.loads((old_entry / artifacts.CONFIG_FILE).read_text())["config"]["finetuned"] == \
        f"models/{theta_ft.name}"


def test_tau_built_without_keeping_theta_ft_is_the_same_tensor(smoke, tmp_path, monkeypatch):
    profile, bench, target, cfg = smoke
    theta_ft = perta.reinforced_model(profile, bench, target, cfg, progress=False)
    old = perta.task_vector_for(profile, target, theta_ft)

    monkeypatch.setenv("PALU_PERTA_ARTIFACTS", str(tmp_path / "fresh"))  # from nothing, the new way
    entry = perta.reinforced_task_vector_entry(profile, bench, target, cfg, progress=False, keep_finetuned=False)
    assert entry.parent.parent == tmp_path / "fresh"
    assert not perta.reinforced_entry(profile, bench, target, cfg).exists()  # theta_ft was scratch
    assert _same(TaskVector.load(entry / perta.TAU_FILE), old)  # the fine-tune is deterministic: the same tau
    assert perta.build_time(entry) > 0


def test_remove_entry(tmp_path):
    entry = artifacts.cached("kind", "thing", {"a": 1}, lambda d: (d / "f").write_text("x"), root=tmp_path)
    assert artifacts.remove_entry(entry)
    assert not entry.exists() and list(entry.parent.iterdir()) == []  # nothing left aside
    assert not artifacts.remove_entry(entry)  # already gone


# the smoke grid's task-arithmetic cells at two seeds: TV and PerTA-grad share each seed's tau
ARITH = dataclasses.replace(study.GRIDS["smoke"], name="smoke-arith", seeds=(0, 1),
                            methods={"tv": (), "perta-grad": ()})


@pytest.mark.slow
def test_a_study_deletes_its_scratch_entries_and_rebuilds_them_to_the_same_results(tmp_path, monkeypatch):
    monkeypatch.setenv("PALU_PERTA_ARTIFACTS", str(tmp_path / "artifacts"))
    removed: list[Path] = []
    remove = study.remove_entry

    def record(path):
        done = remove(path)
        if done:
            removed.append(Path(path))
        return done

    monkeypatch.setattr(study, "remove_entry", record)
    study.run_study(ARITH, tmp_path / "released", progress=False, log=lambda _: None)
    root = tmp_path / "artifacts"
    kept = sorted(p.name for p in (root / "models").iterdir() if not p.name.startswith("."))
    # kept: the reference models (and the SmolLM2 conversion the tokenizer comes from); no reinforced model
    assert [name.rsplit("-", 1)[0] for name in kept] == ["smoke-retain", "smoke-target", "smollm2-135m-instruct"]
    for kind in ("task_vectors", "importance"):
        assert [p for p in (root / kind).iterdir() if not p.name.startswith(".")] == [], kind
    # each seed's tau went after its last cell (perta-grad), the importances after the last PerTA cell
    order = [(p.parent.name, p.name.rsplit("-", 1)[0]) for p in removed]
    assert order == [("task_vectors", "smoke-tau"), ("importance", "smoke-grad-forget"),
                     ("importance", "smoke-grad-retain"), ("task_vectors", "smoke-tau")]

    # a later study needing them again rebuilds theta_ft, tau and the importances: the same results
    study.run_study(ARITH, tmp_path / "again", progress=False, log=lambda _: None, release=False)
    assert len(list((root / "task_vectors").glob("smoke-tau-*"))) == 2
    for path in sorted((tmp_path / "released" / ARITH.name).glob("*.jsonl")):
        assert _comparable(tmp_path / "again" / ARITH.name / path.name) == _comparable(path), path.name
