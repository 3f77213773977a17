"""One fine-tune, one unlearning run and both importance passes on the tiny model, run either as a
plain process or under ``accelerate launch --num_processes 2 --cpu`` (gloo). Rank 0 writes what it
got to OUT (safetensors + JSON), so ``tests/test_distributed.py`` can compare the two.

    python tests/distributed_job.py OUT
    accelerate launch --num_processes 2 --cpu tests/distributed_job.py OUT

The batch sizes are chosen so that every optimiser step sees the whole data set in both runs: the
single process accumulates the micro-batches that two processes compute side by side.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate import PartialState
from safetensors.torch import save_file

from palu_perta import unlearn as unlearn_module
from palu_perta.config import FinetuneConfig
from palu_perta.data import synthetic_benchmark
from palu_perta.importance import parameter_importance
from palu_perta.models import load_model
from palu_perta.tokenization import Collator, encode_records, pad_id
from palu_perta.training import finetune
from palu_perta.unlearn import UnlearnConfig, unlearn

# 8 training records: one forget author (4 answers) and one retain author (4 answers)
BENCH = synthetic_benchmark(2, 4, "forget10", 0)
FINETUNE = FinetuneConfig(epochs=3, learning_rate=5e-3, batch_size=8, per_device_batch_size=2, warmup_ratio=0.0,
                          bf16=False, max_length=96)
GA = dict(method="ga", epochs=2, learning_rate=2e-3, batch_size=4, per_device_batch_size=1, bf16=False,
          warmup_ratio=0.0, max_length=96)


def flat(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone().contiguous() for name, p in model.named_parameters()}


def main(out: Path) -> None:
    # joins the gloo process group under accelerate launch (the Trainer uses the same state); no-op alone
    state = PartialState(cpu=not torch.cuda.is_available())
    rank, world = state.process_index, state.num_processes
    report: dict = {"world_size": world}
    tensors: dict[str, torch.Tensor] = {}

    with tempfile.TemporaryDirectory() as work:
        # 1. fine-tuning (Trainer: DDP under accelerate)
        model, tokenizer = load_model("tiny", seed=0)
        history = finetune(model, tokenizer, BENCH.full, FINETUNE, Path(work) / "ft", progress=False, resume=False)
        report["finetune_losses"] = [h["loss"] for h in history if "loss" in h]
        tensors.update({f"finetuned.{k}": v for k, v in flat(model).items()})
        finetuned = flat(model)

        # 2. importance on the fine-tuned model: each process scores its shard of the batches
        collate = Collator(pad_id(tokenizer), "right", with_classes=False)
        examples = encode_records(tokenizer, BENCH.full, 96)
        batches = [collate(examples[i:i + 2]) for i in range(0, len(examples), 2)]
        for method in ("grad", "fisher"):
            importance = parameter_importance(model, batches[rank::world], method, progress=False)
            tensors.update({f"{method}.{k}": v for k, v in importance.items()})

        # 3. unlearning: gradient ascent (no retain batch), from the fine-tuned weights
        unlearner, _ = load_model("tiny", seed=0)
        unlearner.load_state_dict(finetuned, strict=False)
        result = unlearn(unlearner, tokenizer, BENCH, UnlearnConfig(**GA), Path(work) / "ga", progress=False, resume=False)
        report["unlearn_losses"] = [h["loss"] for h in result.history if "loss" in h]
        tensors.update({f"unlearned.{k}": v for k, v in flat(unlearner).items()})

        # 4. which retain answers GradDiff pairs with the forget answers, per process
        drawn: list[str] = []
        original = unlearn_module.PairedDataset.__getitem__

        def recording(self, i):
            item = original(self, i)
            drawn.append(tokenizer.decode(item["retain"]["input_ids"][-12:]))
            return item

        unlearn_module.PairedDataset.__getitem__ = recording
        graddiff, _ = load_model("tiny", seed=0)
        unlearn(graddiff, tokenizer, BENCH, UnlearnConfig(**{**GA, "method": "graddiff", "epochs": 1}),
                Path(work) / "gd", progress=False, resume=False)
        unlearn_module.PairedDataset.__getitem__ = original
        gathered = [None] * world
        if world > 1:
            dist.all_gather_object(gathered, drawn)
        else:
            gathered = [drawn]
        report["retain_drawn_per_process"] = gathered

    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(out / "tensors.safetensors"))
        (out / "report.json").write_text(json.dumps(report, indent=1))
    state.wait_for_everyone()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
