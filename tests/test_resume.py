"""A fine-tuning run killed part-way resumes from its last checkpoint and ends where an
uninterrupted run ends; the same configuration gives bit-identical results twice."""

from __future__ import annotations

import subprocess
import sys
import textwrap

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

    resumed, resumed_losses = _train(work)
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
