"""The same code scales out through accelerate: fine-tuning, unlearning and importance estimation
under ``accelerate launch`` with two CPU processes (gloo) match a single process.

Launcher: ``accelerate launch --cpu`` multiplies processes only through MPI (``mpirun``), so two
processes on one machine are started through torchrun with ``--multi_gpu``; with no GPU visible
(``CUDA_VISIBLE_DEVICES=""``) the Trainer and accelerate join a gloo CPU process group, which is
the DDP path ``--cpu`` would take under MPI.

Tolerances: the two runs add the same numbers in a different order (gradients are all-reduced
across processes instead of accumulated in one), so results agree to float32 rounding amplified
by Adam: logged losses to 1e-5, weights to 5e-5 (1 % of one Adam step at lr 5e-3), importances to
a relative 1e-4.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from palu_perta.config import repo_root

JOB = "tests/distributed_job.py"


def _run(command, out):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(command + [str(out)], cwd=repo_root(), env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads((out / "report.json").read_text()), load_file(str(out / "tensors.safetensors"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("distributed")
    single = _run([sys.executable, JOB], tmp / "single")
    launched = _run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                     "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", JOB], tmp / "two")
    return single, launched


def test_two_processes_really_ran(runs):
    (single, _), (launched, _) = runs
    assert single["world_size"] == 1 and launched["world_size"] == 2


@pytest.mark.parametrize("part", ["finetune_losses", "unlearn_losses"])
def test_logged_losses_match(runs, part):
    (single, _), (launched, _) = runs
    assert len(single[part]) == len(launched[part]) > 0
    torch.testing.assert_close(torch.tensor(launched[part]), torch.tensor(single[part]), rtol=0, atol=1e-5)


def _assert_part_matches(single, launched, part, rtol, atol):
    """Every tensor saved under ``part.`` agrees between the two runs; returns their names."""
    names = [k for k in single if k.startswith(part + ".")]
    assert names
    for name in names:
        torch.testing.assert_close(launched[name], single[name], rtol=rtol, atol=atol, msg=name)
    return names


@pytest.mark.parametrize("part", ["finetuned", "unlearned"])
def test_trained_weights_match(runs, part):
    (_, single), (_, launched) = runs
    _assert_part_matches(single, launched, part, rtol=0, atol=5e-5)


@pytest.mark.parametrize("method", ["grad", "fisher"])
def test_importances_are_reduced_across_processes(runs, method):
    """Each process scores half of the batches; the all-reduced result is the whole data set's."""
    (_, single), (_, launched) = runs
    names = _assert_part_matches(single, launched, method, rtol=1e-4, atol=1e-7)
    assert sum(float(single[n].sum()) for n in names) > 0


def test_retain_sampling_differs_per_process(runs):
    (single, _), (launched, _) = runs
    first, second = launched["retain_drawn_per_process"]
    assert len(first) == len(second) == 2  # 4 forget answers split across 2 processes
    assert first != second
    assert len(single["retain_drawn_per_process"][0]) == 4


def test_cli_under_two_processes_writes_one_complete_entry(tmp_path):
    """``accelerate launch -m palu_perta unlearn``: both processes train, process 0 writes the cached
    target and unlearned models, and a second launch finds them in the cache."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "TOKENIZERS_PARALLELISM": "false",
           "PALU_PERTA_ARTIFACTS": str(tmp_path)}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "palu_perta", "unlearn", "--profile", "smoke", "--method", "ga", "--no-progress"]
    first = subprocess.run(command, cwd=repo_root(), env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-4000:]
    printed = [line for line in first.stdout.splitlines() if line.startswith("unlearned (ga): ")]
    assert len(printed) == 1  # process 0 reports, process 1 stays quiet
    complete = [p.parent.name.rsplit("-", 1)[0] for p in tmp_path.glob("*/*/artifact.json")]
    assert sorted(c for c in complete if c.startswith("smoke-")) == ["smoke-ga", "smoke-target"]
    assert not list(tmp_path.glob("*/*.work")) and not list(tmp_path.glob("*/.*tmp-*"))  # nothing half-written
    second = subprocess.run(command, cwd=repo_root(), env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0 and printed[0] in second.stdout
    assert "train_runtime" not in second.stdout + second.stderr  # from the cache, no training
