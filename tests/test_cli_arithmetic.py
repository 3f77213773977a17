"""``python -m palu_perta tv|perta``: task arithmetic and PerTA from the command line, on the smoke profile."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from palu_perta import cli, perta, pipeline
from palu_perta.config import get_profile
from palu_perta.models import load_model


@pytest.fixture(scope="module")
def smoke():
    profile = get_profile("smoke")
    bench = pipeline.benchmark(profile)
    refs = pipeline.reference_models(profile, bench, progress=False)
    return profile, bench, refs


@pytest.mark.parametrize("argv, message", [
    (["tv", "--lambda", "-1"], "--lambda must be a finite number >= 0"),
    (["tv", "--lambda", "half"], "--lambda must be a number >= 0 or 'auto'"),
    (["perta", "--variant", "grad", "--lambda", "inf"], "--lambda must be a finite number"),
])
def test_bad_lambda_is_one_line_before_any_work(argv, message, tmp_path, capsys):
    assert cli.main([*argv, "--profile", "smoke", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert cli.main(["perta", "--profile", "smoke", "--lambda", "1", "--out", str(tmp_path / "f")]) == 2
    assert "is an existing file" in capsys.readouterr().err


def test_tv_auto_calibrates_lambda_and_evaluates(smoke, tmp_path, capsys):
    profile, bench, refs = smoke
    out = tmp_path / "tv"
    assert cli.main(["tv", "--profile", "smoke", "--out", str(out), "--no-progress"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["method"] == "tv" and run["lambda"] == run["calibration"]["lam_star"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["forget_quality"] is not None  # scored against the retain model
    assert {"TOFU_EVAL.json", "TOFU_SUMMARY.json", "per_item.json"} <= {p.name for p in out.iterdir()}
    assert "lambda* =" in capsys.readouterr().out


def test_perta_at_lambda_zero_is_the_target(smoke, tmp_path):
    profile, bench, refs = smoke
    out = tmp_path / "p0"
    assert cli.main(["perta", "--profile", "smoke", "--variant", "grad", "--lambda", "0", "--out", str(out),
                     "--no-progress"]) == 0
    target = pipeline.evaluation(profile, refs.target, bench, progress=False)
    ours = json.loads((out / "per_item.json").read_text())["splits"]["forget"]
    theirs = target.per_item()["splits"]["forget"]
    assert [r["truth_ratio"] for r in ours] == pytest.approx([r["truth_ratio"] for r in theirs], rel=1e-6)
    assert [r["generation"] for r in ours] == [r["generation"] for r in theirs]


def test_perta_saves_the_edited_model(smoke, tmp_path):
    profile, bench, refs = smoke
    out = tmp_path / "p2"
    assert cli.main(["perta", "--profile", "smoke", "--variant", "fisher", "--lambda", "2", "--out", str(out),
                     "--save-model", "--no-progress"]) == 0
    saved = load_file(out / "model" / "model.safetensors")
    tau, weights = perta.task_vector_and_weights(profile, bench, refs.target, "perta-fisher", progress=False)
    original, _ = load_model(str(refs.target), seed=profile.seed)
    expected = perta.perta_unlearn(original, tau, weights, 2.0).state_dict()
    changed = 0
    for name, tensor in saved.items():
        assert torch.equal(tensor, expected[name]), name
        changed += not torch.equal(tensor, original.state_dict()[name])
    assert changed > 0  # lambda 2 moved the weights
    assert json.loads((out / "run.json").read_text())["model"] == str(out / "model")
    assert cli.main(["perta", "--profile", "smoke", "--lambda", "2", "--out", str(out), "--save-model"]) == 2
