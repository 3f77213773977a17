"""Mistakes a user can make on the command line end in one ``error: ...`` line and exit code 2, before any
model is trained, loaded or evaluated: never a traceback."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LlamaForCausalLM

from palu_perta import cli, models, training
from palu_perta.data import synthetic_benchmark, write_tofu_dir
from palu_perta.models import tiny_config


@pytest.fixture()
def no_work(tmp_path, monkeypatch):
    """An empty artifacts directory, and no fine-tune or model load allowed: the errors must come first."""
    monkeypatch.setenv("PALU_PERTA_ARTIFACTS", str(tmp_path / "artifacts"))

    def forbidden(*args, **kwargs):
        raise AssertionError("the command went on to train or load a model")

    monkeypatch.setattr(training, "finetuned_model", forbidden)
    monkeypatch.setattr(models, "load_model", forbidden)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _error(argv: list[str], capsys) -> str:
    """Run the CLI; assert exit code 2 and a single ``error:`` line on stderr; return that line."""
    code = cli.main([*argv, "--profile", "smoke", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("argv, words", [
    (["unlearn", "--hyper", "5"], ["--hyper", "JSON object", "int", '{"top_k": 1000']),
    (["unlearn", "--hyper", "[1, 2]"], ["--hyper", "JSON object", "list"]),
    (["unlearn", "--hyper", "{top_k: 3}"], ["--hyper", "is not JSON", "double quotes"]),
    (["unlearn", "--hyper", '{"top_k": "50"}'], ["top_k", "integer", "'50'", "without quotes"]),
    (["unlearn", "--method", "npo", "--hyper", '{"beta": true}'], ["beta", "a number", "bool"]),
    (["unlearn", "--budget", '{"lr": 1e-3}'], ["'lr'", "learning_rate", "valid keys"]),
    (["unlearn", "--budget", '{"epochs": "2"}'], ["epochs", "a number", "'2'"]),
    (["unlearn", "--budget", "3"], ["--budget", "JSON object"]),
    (["unlearn", "--target", "./models/nope"], ["--target", "./models/nope", "not a model directory"]),
    (["unlearn", "--lora-alpha", "16"], ["--lora-alpha", "LoRA is off", "--lora-rank"]),
    (["finetune", "--lora-dropout", "0.1", "--lora-targets", "q_proj"], ["--lora-dropout", "--lora-targets", "--lora-rank"]),
    (["finetune", "--lora-rank", "0"], ["--lora-", "rank=0", ">= 1"]),
    (["unlearn", "--lora-rank", "8", "--lora-dropout", "1"], ["--lora-", "dropout", "[0, 1)"]),
    (["tv", "--lora-rank", "8", "--lora-targets", ",", "--out", "runs/tv"], ["--lora-targets", "names no layer"]),
    (["unlearn", "--budget", '{"lora": 8}'], ["'lora'", "valid keys", "learning_rate"]),
])
def test_bad_unlearn_options(argv, words, no_work, capsys):
    err = _error(argv, capsys)
    for word in words:
        assert word in err, (word, err)
    assert not (no_work / "artifacts").exists() or not any((no_work / "artifacts").rglob("*.safetensors"))


def _tiny_dir(path):
    """A tiny model directory (config.json and model.safetensors; no tokenizer needed for these errors)."""
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_config(64, 0)).save_pretrained(path, safe_serialization=True)
    return path


@pytest.mark.parametrize("entry", [False, True])
def test_a_truncated_weights_file_is_named_with_the_fix(entry, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model_dir = _tiny_dir(tmp_path / "model")
    if entry:  # a cache entry: its artifact.json marks it complete
        (model_dir / "artifact.json").write_text(json.dumps({"config": {}, "palu_perta": "0.1.0"}))
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:weights.stat().st_size - 1000])
    capsys.readouterr()  # the save's progress bar
    for argv in (["evaluate", "--model", str(model_dir), "--out", "out"], ["unlearn", "--target", str(model_dir)]):
        err = _error(argv, capsys)
        assert str(weights) in err and "truncated" in err, err
        assert ("delete the cache entry" if entry else "save the model again") in err and "re-create" in err, err
    assert not (tmp_path / "out").exists()


def test_an_intact_model_directory_passes_the_check(tmp_path):
    model_dir = _tiny_dir(tmp_path / "model")
    assert models.weights_problem(model_dir) is None
    assert models.local_model_dir(str(model_dir)) == model_dir


@pytest.mark.parametrize("name", ["./models/nope", "models/nope", "~/no-such-folder/model", "a/b/c", "no such"])
def test_a_mistyped_model_path_is_not_taken_for_a_hub_id(name, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()  # "models/nope": the folder exists, the model in it does not
    err = _error(["evaluate", "--model", name, "--out", "out"], capsys)
    assert f"model path {name} does not exist" in err and "check the spelling" in err, err


def test_a_hub_id_the_hub_cannot_give_is_one_line(tmp_path, capsys, monkeypatch):
    """``nope/model`` has a hub id's shape and no local folder ``nope``: the hub is asked (here it fails
    at once, as it does offline after its retries) and its failure becomes one line naming both readings."""
    monkeypatch.chdir(tmp_path)

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.\nCheck your connection.")

    monkeypatch.setattr(models.AutoTokenizer, "from_pretrained", offline)
    err = _error(["evaluate", "--model", "nope/model", "--out", "out"], capsys)
    assert "'nope/model' is not a path here" in err and "Hugging Face hub" in err and "couldn't connect" in err, err


@pytest.mark.parametrize("out", ["a_file", "a_file/inside"])
def test_evaluate_out_on_a_file_fails_before_the_evaluation(out, no_work, capsys):
    (no_work / "a_file").write_text("not a directory")
    err = _error(["evaluate", "--model", "tiny", "--out", out], capsys)
    assert f"'{out}'" in err and "pass a directory" in err, err
    assert ("is an existing file" if out == "a_file" else "a_file is a file") in err, err


@pytest.mark.parametrize("name, text, words", [
    ("retain_perturbed.json", '[{"question": "q", "answer": "a",}]', ["line 1 column", "not valid JSON"]),
    ("retain90.json", '{"question": "q", "answer": "a"}\n{"question": "q2"\n', ["line 2", "not valid JSON"]),
    ("forget10_perturbed.json", b"\xff\xfe not utf-8", ["not UTF-8"]),
])
def test_a_broken_data_file_is_named(name, text, words, no_work, capsys):
    data = write_tofu_dir(synthetic_benchmark(8, 3, "forget10"), no_work / "data")
    (data / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    for command in ("finetune", "unlearn"):
        err = _error([command, "--data", "data"], capsys)
        assert str(data / name).removeprefix(str(no_work) + "/") in err, err
        for word in words:
            assert word in err, (word, err)


def test_no_progress_prints_no_step_losses_or_loading_bars(tmp_path, capfd, monkeypatch):
    """``--no-progress``: nothing but the data's grouping line and the result line (issue 22: every step's loss
    and the weight-loading bars were printed). The Trainer's log history keeps the losses."""
    monkeypatch.setenv("PALU_PERTA_ARTIFACTS", str(tmp_path / "artifacts"))
    assert cli.main(["finetune", "--profile", "smoke", "--role", "retain", "--no-progress"]) == 0
    out, err = capfd.readouterr()
    assert "'loss'" not in out + err and "Loading weights" not in out + err, (out + err)[-2000:]
    assert [line.split(": ")[0] for line in out.strip().splitlines()] == ["data", "retain"], out  # grouping, result
    history = json.loads(next((tmp_path / "artifacts").rglob("log_history.json")).read_text())
    assert any("loss" in row for row in history)
