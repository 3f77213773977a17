"""A fine-tuning run killed part-way resumes from its last checkpoint and ends where an
uninterrupted run ends; the same configuration gives bit-identical results twice."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from palu_perta.config import FinetuneConfig
from palu_perta.data import synthetic_benchmark
from palu_perta.models import load_model
from palu_perta.training import finetune

CFG = FinetuneConfig(epochs=4, learning_rate=5e-3, batch_size=4, per_device_batch_size=4, warmup_ratio=0.0,
                     bf16=False, max_length=96)
RECORDS = synthetic_benchmark(2, 4, "forget10", 0).full  # 8 records: 2 steps an epoch

KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    from transformers import TrainerCallback
    from palu_perta.models import load_model
    from palu_perta.training import finetune
    from tests.test_resume import CFG, RECORDS

    class KillAfterEpoch2(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.epoch >= 2:
                os.kill(os.getpid(), signal.SIGKILL)   # no clean-up, as a cluster time limit would

    model, tokenizer = load_model("tiny", seed=0)
    finetune(model, tokenizer, RECORDS, CFG, sys.argv[1], progress=False, callbacks=[KillAfterEpoch2()])
""")


def _train(out, resume=True):
    model, tokenizer = load_model("tiny", seed=0)
    history = finetune(model, tokenizer, RECORDS, CFG, out, progress=False, resume=resume)
    return model, [h["loss"] for h in history if "loss" in h]


def test_killed_run_resumes_to_the_same_result(tmp_path):
    from palu_perta.config import repo_root

    work = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, str(work)], cwd=repo_root(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert [p.name for p in work.glob("checkpoint-*")] == ["checkpoint-4"]  # epoch 2 of 4

    import logging

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__()
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    collect = Collect()
    library = logging.getLogger("transformers")  # every transformers logger reports to it
    library.addHandler(collect)
    try:
        resumed, resumed_losses = _train(work)
    finally:
        library.removeHandler(collect)
    # the tied output layer is tied again, without a warning that lm_head.weight is missing (issue 22)
    assert not [m for m in collect.messages if "missing keys" in m], collect.messages
    assert resumed.lm_head.weight.data_ptr() == resumed.model.embed_tokens.weight.data_ptr()
    straight, straight_losses = _train(tmp_path / "straight", resume=False)
    # the restored log holds epochs 1-2 from before the kill, then the resumed epochs 3-4
    assert len(resumed_losses) == 8
    torch.testing.assert_close(torch.tensor(resumed_losses), torch.tensor(straight_losses), rtol=0, atol=1e-5)
    for (name, a), b in zip(resumed.state_dict().items(), straight.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)


def test_same_configuration_is_bit_identical(tmp_path):
    first, first_losses = _train(tmp_path / "a", resume=False)
    second, second_losses = _train(tmp_path / "b", resume=False)
    assert first_losses == second_losses
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


# PDU: a warm-up of 1 epoch (of 4), so the dual moves in epoch 2, before the kill, and after the resume
METHOD_HYPER = {"palu": {"top_k": 5, "first_n": 2},
                "pdu": {"alpha": 1.0, "dual_step_size": 1.0, "retain_loss_eps": 0.3, "dual_warmup_epochs": 1}}
UNLEARN_CFG = dict(method="palu", hyper=METHOD_HYPER["palu"], epochs=4, learning_rate=2e-3, batch_size=2,
                   per_device_batch_size=2, bf16=False, warmup_ratio=0.0, max_length=96, eval_epochs=(1, 2, 3, 4))

KILLED_UNLEARNING = textwrap.dedent("""
    import os, signal, sys
    from transformers import TrainerCallback
    from palu_perta.models import load_model
    from palu_perta.unlearn import UnlearnConfig, unlearn
    from tests.test_resume import METHOD_HYPER, RECORDS_BENCH, UNLEARN_CFG, weight_sum
    method = sys.argv[2]

    class KillAfterEpoch2(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.epoch >= 2:
                os.kill(os.getpid(), signal.SIGKILL)

    model, tokenizer = load_model("tiny", seed=0)
    cfg = UnlearnConfig(**{**UNLEARN_CFG, "method": method, "hyper": METHOD_HYPER[method]})
    unlearn(model, tokenizer, RECORDS_BENCH, cfg, sys.argv[1], progress=False,
            callbacks=[KillAfterEpoch2()], evaluate=weight_sum)
""")
RECORDS_BENCH = synthetic_benchmark(3, 4, "forget10", 0)


def weight_sum(model):
    """The per-epoch 'evaluation' of the unlearning resume test: a checksum of the weights."""
    return {"probe": float(sum(p.detach().double().sum() for p in model.parameters()))}  # one forget author, 4 answers: 2 steps an epoch


def _unlearn(out, method, resume=True):
    from palu_perta.unlearn import UnlearnConfig, unlearn

    model, tokenizer = load_model("tiny", seed=0)
    cfg = UnlearnConfig(**{**UNLEARN_CFG, "method": method, "hyper": METHOD_HYPER[method]})
    result = unlearn(model, tokenizer, RECORDS_BENCH, cfg, out, progress=False, resume=resume,
                     evaluate=weight_sum)
    return model, result


@pytest.mark.parametrize("method", ["palu", "pdu"])
def test_killed_unlearning_run_resumes_to_the_same_result(tmp_path, method):
    """An unlearning run killed after epoch 2 of 4 ends where an uninterrupted run ends: same
    losses, weights and per-epoch evaluations. PALU holds a frozen reference and samples retain
    batches per epoch; PDU carries a dual variable the Trainer does not checkpoint."""
    from palu_perta.config import repo_root

    work = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILLED_UNLEARNING, str(work), method], cwd=repo_root(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert [p.name for p in work.glob("checkpoint-*")] == ["checkpoint-4"]

    resumed, resumed_result = _unlearn(work, method)
    straight, straight_result = _unlearn(tmp_path / "straight", method, resume=False)
    losses = [[h["loss"] for h in r.history if "loss" in h] for r in (resumed_result, straight_result)]
    assert len(losses[0]) == 8
    torch.testing.assert_close(torch.tensor(losses[0]), torch.tensor(losses[1]), rtol=0, atol=1e-5)
    for (name, a), b in zip(resumed.state_dict().items(), straight.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    # the evaluations of epochs 1-2 come back from the killed run's trajectory.json
    assert [t["epoch"] for t in resumed_result.trajectory] == [1, 2, 3, 4]
    torch.testing.assert_close(torch.tensor([t["probe"] for t in resumed_result.trajectory]),
                               torch.tensor([t["probe"] for t in straight_result.trajectory]), rtol=1e-9, atol=1e-6)


def test_same_configuration_gives_bit_identical_metrics(tmp_path):
    """Two fine-tunes of the same configuration, each evaluated with the full suite: every metric
    is the same number, bit for bit (CPU)."""
    from palu_perta.evaluation import evaluate

    bench = synthetic_benchmark(3, 3, "forget10", 1)
    summaries = []
    for name in ("a", "b"):
        model, _ = _train(tmp_path / name, resume=False)
        _, tokenizer = load_model("tiny", seed=0)
        result = evaluate(model, tokenizer, bench, max_new_tokens=8, batch_size=4, progress=False)
        summaries.append({k: v for k, v in result.items() if k not in ("meta", "per_item")})
    assert summaries[0] == summaries[1]
    assert summaries[0]["forget_Q_A_Prob"] > 0  # a real evaluation, not an empty one


KILLED_MID_SAVE = textwrap.dedent("""
    import os, signal, sys
    from transformers import Trainer
    from palu_perta.models import load_model
    from tests.test_resume import CFG, METHOD_HYPER, RECORDS, RECORDS_BENCH, UNLEARN_CFG, weight_sum

    save_rng_state = Trainer._save_rng_state

    def killed_at_step_6(self, output_dir):
        # the weights, optimiser and scheduler of checkpoint-6 are written; its RNG and trainer state are not
        if self.state.global_step == 6:
            os.kill(os.getpid(), signal.SIGKILL)
        save_rng_state(self, output_dir)

    Trainer._save_rng_state = killed_at_step_6
    model, tokenizer = load_model("tiny", seed=0)
    if sys.argv[2] == "finetune":
        from palu_perta.training import finetune
        finetune(model, tokenizer, RECORDS, CFG, sys.argv[1], progress=False)
    else:
        from palu_perta.unlearn import UnlearnConfig, unlearn
        cfg = UnlearnConfig(**{**UNLEARN_CFG, "method": sys.argv[2], "hyper": METHOD_HYPER[sys.argv[2]]})
        unlearn(model, tokenizer, RECORDS_BENCH, cfg, sys.argv[1], progress=False, evaluate=weight_sum)
""")


def _killed_mid_save(work, kind):
    """Run ``kind`` (finetune, or an unlearning method) in a subprocess SIGKILLed while it writes checkpoint-6."""
    from palu_perta.config import repo_root

    proc = subprocess.run([sys.executable, "-c", KILLED_MID_SAVE, str(work), kind], cwd=repo_root(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert sorted(p.name for p in work.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]
    assert not (work / "checkpoint-6" / "trainer_state.json").exists()  # the Trainer's last write never came


def _assert_same_weights(a, b):
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)  # bit-identical


def test_a_kill_while_writing_a_checkpoint_resumes_from_the_complete_one(tmp_path):
    """A fine-tune killed while the Trainer writes checkpoint-6 (weights there, trainer state not): the
    rerun deletes that folder, with a warning, resumes from checkpoint-4 and ends as an uninterrupted run."""
    work = tmp_path / "killed"
    _killed_mid_save(work, "finetune")
    with pytest.warns(UserWarning, match=r"incomplete checkpoint \S*checkpoint-6 \(no .*trainer_state.json.*"
                                         r"resuming from checkpoint-4"):
        resumed, resumed_losses = _train(work)
    straight, straight_losses = _train(tmp_path / "straight", resume=False)
    assert len(resumed_losses) == 8  # epochs 1-2 restored from checkpoint-4's log, then 3-4
    torch.testing.assert_close(torch.tensor(resumed_losses), torch.tensor(straight_losses), rtol=0, atol=1e-5)
    _assert_same_weights(resumed, straight)


def test_a_pdu_run_killed_while_writing_a_checkpoint_resumes_from_the_complete_one(tmp_path):
    """The same for unlearning with PDU: its dual variable and the per-epoch evaluations come from the
    complete checkpoint-4, not from the epoch-3 evaluation made before the kill."""
    work = tmp_path / "killed"
    _killed_mid_save(work, "pdu")
    assert [t["epoch"] for t in json.loads((work / "trajectory.json").read_text())] == [1, 2, 3]
    with pytest.warns(UserWarning, match="incomplete checkpoint"):
        resumed, resumed_result = _unlearn(work, "pdu")
    straight, straight_result = _unlearn(tmp_path / "straight", "pdu", resume=False)
    losses = [[h["loss"] for h in r.history if "loss" in h] for r in (resumed_result, straight_result)]
    assert len(losses[0]) == 8
    torch.testing.assert_close(torch.tensor(losses[0]), torch.tensor(losses[1]), rtol=0, atol=1e-5)
    _assert_same_weights(resumed, straight)
    duals = [[h["dual_alpha"] for h in r.history if "dual_alpha" in h] for r in (resumed_result, straight_result)]
    assert duals[0] == duals[1] and duals[1][:2] == [1.0, 1.0] and len(set(duals[1][2:])) == 6  # warm-up: epoch 1
    assert [t["epoch"] for t in resumed_result.trajectory] == [1, 2, 3, 4]
    torch.testing.assert_close(torch.tensor([t["probe"] for t in resumed_result.trajectory]),
                               torch.tensor([t["probe"] for t in straight_result.trajectory]), rtol=1e-9, atol=1e-6)


def test_checkpoint_completeness(tmp_path):
    """What makes a checkpoint folder incomplete: each file a resume reads missing or cut short."""
    from palu_perta.training import checkpoint_problem, latest_complete_checkpoint

    model, tokenizer = load_model("tiny", seed=0)
    finetune(model, tokenizer, RECORDS, dataclasses.replace(CFG, epochs=1), tmp_path / "run", progress=False)
    complete = tmp_path / "run" / "checkpoint-2"
    assert checkpoint_problem(complete) is None
    assert "pdu_dual.json" in checkpoint_problem(complete, required=("pdu_dual.json",))

    def broken(step: int, damage) -> None:
        folder = shutil.copytree(complete, tmp_path / "run" / f"checkpoint-{step}")
        state = json.loads((folder / "trainer_state.json").read_text())
        (folder / "trainer_state.json").write_text(json.dumps({**state, "global_step": step}))
        damage(folder)

    def truncate(path) -> None:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    broken(3, lambda f: truncate(f / "model.safetensors"))
    broken(4, lambda f: truncate(f / "optimizer.pt"))
    broken(5, lambda f: (f / "scheduler.pt").unlink())
    broken(6, lambda f: truncate(f / "trainer_state.json"))
    broken(7, lambda f: [p.unlink() for p in f.glob("rng_state*.pth")])
    shutil.copytree(complete, tmp_path / "run" / "checkpoint-9")  # its trainer state says step 2
    problems = {p.name: checkpoint_problem(p) for p in (tmp_path / "run").glob("checkpoint-*")}
    assert "truncated" in problems["checkpoint-3"] and "model.safetensors" in problems["checkpoint-3"]
    assert "optimizer.pt" in problems["checkpoint-4"] and "scheduler.pt" in problems["checkpoint-5"]
    assert "trainer_state.json" in problems["checkpoint-6"] and "rng_state" in problems["checkpoint-7"]
    assert "step 2" in problems["checkpoint-9"]
    with pytest.warns(UserWarning, match="incomplete checkpoint") as caught:
        assert latest_complete_checkpoint(tmp_path / "run") == complete
    assert len(caught) == 6
    assert [p.name for p in (tmp_path / "run").glob("checkpoint-*")] == ["checkpoint-2"]
    assert latest_complete_checkpoint(tmp_path / "nowhere") is None
