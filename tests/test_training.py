"""Fine-tuning the tiny model, the model cache and the artifacts directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from palu_perta.artifacts import atomic_dir, atomic_write_text, build_lock, cached, entry_path, is_complete
from palu_perta.config import FinetuneConfig, get_profile
from palu_perta.data import synthetic_benchmark
from palu_perta.models import load_model
from palu_perta.training import finetune, finetuned_model, load_log_history, records_info

FAST = FinetuneConfig(epochs=3, learning_rate=5e-3, batch_size=8, per_device_batch_size=8, warmup_ratio=0.0,
                      bf16=False, max_length=96)


def test_tiny_finetune_loss_goes_down(tiny, tmp_path):
    model, tokenizer = tiny
    records = synthetic_benchmark(3, 4, "forget10", 0).full
    history = finetune(model, tokenizer, records, FAST, tmp_path / "run", progress=False, resume=False)
    losses = [h["loss"] for h in history if "loss" in h]
    assert len(losses) == 6  # 12 records / batch 8 -> 2 steps per epoch, 3 epochs
    assert losses[-1] < losses[0] - 1.0
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_finetuned_model_is_cached_by_configuration(tmp_path, monkeypatch):
    monkeypatch.setenv("PALU_PERTA_ARTIFACTS", str(tmp_path))
    profile = get_profile("smoke", finetune=FAST)
    records = synthetic_benchmark(3, 2, "forget10", 0).full
    info = records_info("synthetic", records)
    path = finetuned_model(profile, "target", records, info, progress=False)
    assert (path / "model.safetensors").exists() and is_complete(path, json.loads((path / "artifact.json").read_text())["config"])
    assert load_log_history(path)[-1]["epoch"] == 3
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert finetuned_model(profile, "target", records, info, progress=False) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not retrained
    other = finetuned_model(profile.replace(finetune={"learning_rate": 1e-3}), "target", records, info, progress=False)
    assert other != path
    model, _ = load_model(str(path))
    assert model.config.num_hidden_layers == 2
    assert not list(tmp_path.glob("models/*.work")), "checkpoint work directories are cleaned up"


def test_stale_entry_is_rebuilt_and_failed_build_leaves_nothing(tmp_path):
    config = {"a": 1}
    path = entry_path("things", "x", config, root=tmp_path)

    def boom(directory):
        (directory / "half.bin").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached("things", "x", config, boom, root=tmp_path)
    assert not path.exists() and not list(path.parent.iterdir())

    built = []
    cached("things", "x", config, lambda d: built.append((d / "v").write_text("1")), root=tmp_path)
    cached("things", "x", config, lambda d: built.append((d / "v").write_text("2")), root=tmp_path)
    assert len(built) == 1 and (path / "v").read_text() == "1"
    # an entry recorded with another configuration is not reused
    (path / "artifact.json").write_text(json.dumps({"config": {"a": 2}, "palu_perta": "0.1.0"}))
    cached("things", "x", config, lambda d: (d / "v").write_text("3"), root=tmp_path)
    assert (path / "v").read_text() == "3"


def test_read_only_artifacts_directory_is_named(tmp_path, monkeypatch):
    import os

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.access(ro, os.W_OK):  # root writes anywhere: answer as the kernel would for any other user
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == ro else real_access(p, mode, **kw))
    try:
        # a missing entry of a read-only (shared) cache: the entry, and how to get it
        with pytest.raises(PermissionError, match=r"the cache entry ro/x is missing and the directory .*ro is "
                                                  r"read-only \(a shared cache\?\): build it where that cache is "
                                                  r"writable .* or set PALU_PERTA_ARTIFACTS"):
            with atomic_dir(ro / "x", {"a": 1}):
                raise AssertionError("the build must not start")
        with pytest.raises(PermissionError, match=r"the cache entry ro/y is missing"):
            with build_lock(ro / "y"):
                raise AssertionError("the build must not start")
        with pytest.raises(PermissionError, match=r"the directory .*ro is read-only; set PALU_PERTA_ARTIFACTS"):
            atomic_write_text(ro / "z.txt", "x")
        assert list(ro.iterdir()) == []  # nothing written, not even a lock file
    finally:
        ro.chmod(0o700)


def test_non_finite_finetune_loss_stops_with_step_and_batch(tiny, tmp_path):
    model, tokenizer = tiny
    with torch.no_grad():
        model.model.norm.weight.fill_(float("nan"))
    records = synthetic_benchmark(2, 2, "forget10", 0).full
    with pytest.raises(FloatingPointError, match=r"the nll loss is nan at step 0 \(batch of 4, first example ends .*\); "
                                                 r"lower the learning rate or check the data"):
        finetune(model, tokenizer, records, FAST, tmp_path / "run", progress=False)
    assert not list((tmp_path / "run").glob("checkpoint-*"))


def test_frozen_parameters_keep_their_values_and_get_their_gradients_back(tiny, tmp_path):
    model, tokenizer = tiny
    records = synthetic_benchmark(3, 4, "forget10", 0).full
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    cfg = FinetuneConfig(**{**FAST.__dict__, "frozen": ["embed_tokens", "layers.0."]})
    finetune(model, tokenizer, records, cfg, tmp_path / "run", progress=False, resume=False)
    for name, parameter in model.named_parameters():
        frozen = "embed_tokens" in name or "layers.0." in name
        assert torch.equal(parameter, before[name]) == frozen, name
        assert parameter.requires_grad  # turned back on: unlearning trains every parameter


def test_frozen_pattern_that_names_nothing_is_an_error(tiny, tmp_path):
    model, tokenizer = tiny
    records = synthetic_benchmark(3, 2, "forget10", 0).full
    cfg = FinetuneConfig(**{**FAST.__dict__, "frozen": ["embed_token5"]})
    with pytest.raises(ValueError, match="'embed_token5' matches no parameter"):
        finetune(model, tokenizer, records, cfg, tmp_path / "run", progress=False, resume=False)


def test_anchor_pulls_the_weights_towards_the_start(tokenizer, tmp_path):
    from palu_perta.models import tiny_model

    records = synthetic_benchmark(3, 4, "forget10", 0).full
    distance = {}
    for anchor in (0.0, 50.0):
        model = tiny_model(tokenizer, seed=0)
        start = {name: p.detach().clone() for name, p in model.named_parameters()}
        cfg = FinetuneConfig(**{**FAST.__dict__, "anchor": anchor})
        finetune(model, tokenizer, records, cfg, tmp_path / f"run{anchor}", progress=False, resume=False)
        distance[anchor] = sum((p.detach() - start[n]).pow(2).sum() for n, p in model.named_parameters()).sqrt().item()
    assert distance[50.0] < 0.7 * distance[0.0]
    with pytest.raises(ValueError, match="anchor"):
        FinetuneConfig(learning_rate=1e-2, anchor=100.0)


def test_cache_key_leaves_out_unset_new_fields():
    key = FAST.cache_key()
    assert not {"frozen", "anchor", "mix"} & set(key)  # entries cached before the fields existed stay valid
    both = FinetuneConfig(**{**FAST.__dict__, "frozen": ("embed_tokens",), "anchor": 10.0, "mix": 0.5}).cache_key()
    assert both["frozen"] == ["embed_tokens"] and both["anchor"] == 10.0 and both["mix"] == 0.5
    for mix in (0.0, 1.5):
        with pytest.raises(ValueError, match="mix"):
            FinetuneConfig(mix=mix)


def test_mix_is_the_weight_space_ensemble_of_the_cached_finetune(tmp_path, monkeypatch):
    """mix < 1 keeps base + mix * (trained - base), built from the mix = 1 entry without training again."""
    monkeypatch.setenv("PALU_PERTA_ARTIFACTS", str(tmp_path))
    profile = get_profile("smoke", finetune=FAST)
    records = synthetic_benchmark(3, 2, "forget10", 0).full
    info = records_info("synthetic", records)
    trained = finetuned_model(profile, "target", records, info, progress=False)
    stamp = (trained / "model.safetensors").stat().st_mtime_ns
    mixed = finetuned_model(profile.replace(finetune={"mix": 0.25}), "target", records, info, progress=False)
    assert mixed != trained and (trained / "model.safetensors").stat().st_mtime_ns == stamp
    assert load_log_history(mixed) == load_log_history(trained)
    base, _ = load_model("tiny", seed=profile.seed)
    end, _ = load_model(str(trained))
    middle, _ = load_model(str(mixed))
    moved = 0
    for (name, b), e, m in zip(base.named_parameters(), end.parameters(), middle.parameters()):
        torch.testing.assert_close(m, b + 0.25 * (e - b), msg=name)
        moved += not torch.equal(e, b)
    assert moved > 0


def test_build_lock_makes_a_second_builder_wait(tmp_path):
    import subprocess
    import sys
    import time

    from palu_perta.artifacts import build_lock

    entry = tmp_path / "models" / "smoke-target-abc"
    entry.parent.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from palu_perta.artifacts import build_lock\n"
        f"with build_lock(Path({str(entry)!r})):\n    print('locked', flush=True); time.sleep(2)")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    start = time.perf_counter()
    with build_lock(entry):
        waited = time.perf_counter() - start
    holder.wait(timeout=30)
    assert waited > 1.0  # it waited for the other process to finish its build


def test_build_lock_is_off_under_a_distributed_launch(tmp_path, monkeypatch):
    from palu_perta.artifacts import build_lock

    monkeypatch.setenv("WORLD_SIZE", "2")
    with build_lock(tmp_path / "entry"):
        pass
    assert not list(tmp_path.iterdir())  # every process trains together: no lock file, no waiting


def test_keys_survive_moving_the_artifacts_directory(tmp_path):
    """An entry keyed by another entry's path (a reinforced model by its target, an evaluation by its model)
    is found again when the whole directory is moved or reached through another path."""
    first = tmp_path / "here"
    target = cached("models", "target", {"lr": 1}, lambda d: (d / "w").write_text("t"), root=first)
    config = {"base": str(target), "nested": [{"model": target}]}
    child = cached("models", "child", config, lambda d: (d / "w").write_text("c"), root=first)
    assert "$PALU_PERTA_ARTIFACTS/models/" in (child / "artifact.json").read_text()
    assert str(first) not in (child / "artifact.json").read_text()

    moved = tmp_path / "there"
    first.rename(moved)
    (tmp_path / "link").symlink_to(moved)
    for root in (moved, tmp_path / "link"):
        new_target = entry_path("models", "target", {"lr": 1}, root=root)
        assert new_target.name == target.name
        config = {"base": str(new_target), "nested": [{"model": new_target}]}
        again = cached("models", "child", config, lambda d: pytest.fail("rebuilt after the move"), root=root)
        assert again.name == child.name and (again / "w").read_text() == "c"
    # a path outside the artifacts directory stays as it is, and still tells entries apart
    outside = entry_path("models", "child", {"base": str(tmp_path / "elsewhere" / target.name)}, root=moved)
    assert outside.name != child.name


def test_whole_sentences_cuts_after_the_last_sentence_end():
    from palu_perta.replay import whole_sentences

    assert whole_sentences(" A hammer drives nails. It has a handle ") == "A hammer drives nails."
    assert whole_sentences("Boil it! Then wait?") == "Boil it! Then wait?"
    assert whole_sentences("no sentence end here") == ""
    assert whole_sentences("Version 2.5 is out") == ""  # a dot inside a number is not a sentence end


def test_replay_trains_on_the_starting_models_own_answers(tiny, tmp_path, monkeypatch):
    """replay = n: the model's answers to n general questions (whole sentences only) join the training set,
    are generated before training, and are kept beside the cached model."""
    import palu_perta.evaluation as evaluation
    from palu_perta.replay import GENERAL_QUESTIONS, replay_records

    real_generate = evaluation.generate_answers
    seen = []

    def generate(model, tokenizer, questions, **kwargs):  # the real greedy answers of the tiny model, plus a sentence end
        seen.append(model.training)
        answers = real_generate(model, tokenizer, questions, **kwargs)
        return [f"{a} It works. Half a sente" if i % 3 else "no end" for i, a in enumerate(answers)]

    monkeypatch.setattr(evaluation, "generate_answers", generate)
    model, tokenizer = tiny
    replayed = replay_records(model, tokenizer, 6)
    assert [r["question"] for r in replayed] == [GENERAL_QUESTIONS[i] for i in (1, 2, 4, 5)]  # "no end" answers dropped
    assert all(r["answer"].endswith("It works.") for r in replayed)
    with pytest.raises(ValueError, match="replay=101"):
        replay_records(model, tokenizer, 101)
    with pytest.raises(ValueError, match="replay"):
        FinetuneConfig(replay=len(GENERAL_QUESTIONS) + 1)

    records = synthetic_benchmark(3, 4, "forget10", 0).full  # 12 records: 2 steps per epoch at batch 8
    cfg = FinetuneConfig(**{**FAST.__dict__, "epochs": 1, "replay": 6})
    history = finetune(model, tokenizer, records, cfg, tmp_path / "run", progress=False, resume=False)
    assert seen[-1] is False, "replay answers are generated in eval mode"
    assert [h["step"] for h in history if "loss" in h] == [1, 2]  # 12 + 4 = 16 examples
    assert json.loads((tmp_path / "run" / "replay.json").read_text()) == replayed
    cfg = FinetuneConfig(**{**FAST.__dict__, "epochs": 1, "replay": 20})
    history = finetune(model, tokenizer, records, cfg, tmp_path / "run2", progress=False, resume=False)
    assert [h["step"] for h in history if "loss" in h] == [1, 2, 3, 4]  # 12 + 13 = 25 examples: 4 batches of 8

    monkeypatch.setenv("PALU_PERTA_ARTIFACTS", str(tmp_path / "artifacts"))
    profile = get_profile("smoke", finetune={**FAST.__dict__, "epochs": 1, "replay": 6, "mix": 0.5})
    path = finetuned_model(profile, "target", records, records_info("synthetic", records), progress=False)
    assert json.loads((path / "replay.json").read_text()) == replayed  # the ensemble keeps its fine-tune's replay
    config = json.loads((path / "artifact.json").read_text())["config"]
    assert config["finetune"]["replay"] == 6 and len(config["replay_questions"]) == 16
    assert "replay" not in FAST.cache_key()

    from palu_perta.perta import perta_config

    assert perta_config(profile).reinforce.replay == 0  # theta_ft is trained on the forget set alone


def test_concurrent_builders_of_one_entry_all_succeed(tmp_path):
    """Issue 22: builders of a lock-free entry (evaluations, task vectors, importance maps) that finish at once
    collided with `OSError: [Errno 39] Directory not empty`. Now every builder returns, one complete entry
    stays, and no temporary folder is left behind."""
    import threading

    from palu_perta.artifacts import CONFIG_FILE

    config = {"entry": 1}
    errors: list[BaseException] = []
    rounds = 100  # the race hit about one round in ten under load (CI); 100 rounds take a few seconds
    for round_ in range(rounds):
        path = tmp_path / "kind" / f"entry-{round_}"
        (path.parent).mkdir(exist_ok=True)
        if round_ % 2:  # a stale entry (another configuration) in the way
            path.mkdir()
            (path / "old").write_text("stale")
        barrier = threading.Barrier(6)

        def build(index: int) -> None:
            try:
                with atomic_dir(path, config) as tmp:
                    for i in range(20):
                        (tmp / f"part-{i}").write_text(str(index))
                    barrier.wait()  # everyone installs at the same moment
            except BaseException as err:  # noqa: BLE001 - collected for the assertion
                errors.append(err)

        threads = [threading.Thread(target=build, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert is_complete(path, config) and (path / CONFIG_FILE).is_file()
        assert len({(path / f"part-{i}").read_text() for i in range(20)}) == 1  # one builder's files, whole
        assert not (path / "old").exists()
    assert sorted(p.name for p in (tmp_path / "kind").iterdir()) == sorted(f"entry-{r}" for r in range(rounds))


def test_install_retries_when_the_folder_in_the_way_vanishes_mid_check(tmp_path, monkeypatch):
    """The race behind CI's `OSError: [Errno 39]`: a stale folder blocks the rename, and another builder moves it
    aside right after. The install must retry (not read the vanished folder as "a file is in the way")."""
    import errno as errno_
    import os as os_
    import shutil

    from palu_perta import artifacts

    path = tmp_path / "entry"
    path.mkdir()
    (path / "old").write_text("stale")
    real_replace = os_.replace
    calls = {"n": 0}

    def replace_then_vanish(src, dst):
        calls["n"] += 1
        if calls["n"] == 1:  # the first rename fails on the stale folder; another builder then removes it
            shutil.rmtree(path)
            raise OSError(errno_.ENOTEMPTY, "Directory not empty", str(src), None, str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(artifacts.os, "replace", replace_then_vanish)
    with atomic_dir(path, {"k": 1}) as tmp:
        (tmp / "part").write_text("new")
    assert is_complete(path, {"k": 1}) and (path / "part").read_text() == "new"


def test_install_refuses_a_file_in_the_way(tmp_path):
    path = tmp_path / "entry"
    path.write_text("not a folder")
    with pytest.raises(OSError):
        with atomic_dir(path, {"k": 1}) as tmp:
            (tmp / "part").write_text("new")
    assert path.read_text() == "not a folder"
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]  # the temporary folder is removed
