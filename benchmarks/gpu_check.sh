#!/usr/bin/env bash
# GPU check: the paper profile on forget01, timed. One fine-tune epoch of the target, one PALU run (the
# paper's unlearning budget), one evaluation of the unlearned model. Run it before shipping any FSDP or
# DeepSpeed ZeRO-3 configuration, and whenever the GPU path changes.
#
#   MODEL=/path/to/Llama-3.2-1B-Instruct bash benchmarks/gpu_check.sh
#   LORA_RANK=8 MODEL=... bash benchmarks/gpu_check.sh        # the same with LoRA adapters (palu_perta.lora)
#
# Environment (all optional):
#   MODEL      the model (default: the paper profile's, meta-llama/Llama-3.2-1B-Instruct, from the hub; give a
#              local directory on a machine without network)
#   DATA       'tofu' (default: $PALU_PERTA_TOFU_DIR, else shared/tofu beside the checkout, else the hub) or a
#              TOFU directory
#   LORA_RANK  train LoRA adapters of this rank (TOFU's alpha 32, dropout 0.05) instead of every weight
#   OUT        where timings.json and the evaluation go (default: benchmarks/results/gpu_check)
#   PY         the Python to run (default: .venv/bin/python when it exists, else python)
#
# The cache goes to a fresh temporary directory unless PALU_PERTA_ARTIFACTS is set, so nothing is reused
# and the checkout's artifacts/ is not touched. Writes OUT/timings.json: per step the wall time and the peak
# GPU memory allocated by PyTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PY:-}" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python; fi
fi
OUT_DIR="${OUT:-benchmarks/results/gpu_check}"
mkdir -p "$OUT_DIR"
export PALU_PERTA_ARTIFACTS="${PALU_PERTA_ARTIFACTS:-$(mktemp -d)}"
export TOKENIZERS_PARALLELISM=false
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv \
  | tee "$OUT_DIR/gpu.csv"

"$PY" - "$OUT_DIR" <<'PYTHON'
import json
import os
import sys
import time
from pathlib import Path

import torch

from palu_perta.config import get_profile, unlearn_budget
from palu_perta.data import load_benchmark
from palu_perta.evaluation import evaluate
from palu_perta.lora import LoraSettings
from palu_perta.models import load_model
from palu_perta.training import finetuned_model, records_info
from palu_perta.unlearn import UnlearnConfig, unlearned_model

out = Path(sys.argv[1])
if not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA device; this check is for a GPU")
lora = LoraSettings(int(os.environ["LORA_RANK"])) if os.environ.get("LORA_RANK") else None
changes = {"forget_split": "forget01", "finetune": {"epochs": 1.0, "lora": lora}}
if os.environ.get("MODEL"):
    changes["model"] = os.environ["MODEL"]
if os.environ.get("DATA"):
    changes["data"] = os.environ["DATA"]
profile = get_profile("paper", **changes)
bench = load_benchmark(profile)
print(bench.info.get("grouping", ""), flush=True)
timings = {"gpu": torch.cuda.get_device_name(), "model": profile.model, "forget_split": profile.forget_split,
           "lora": lora.key() if lora else None, "steps": {}}


def step(name, fn):
    """Run fn, recording its wall time and the peak GPU memory PyTorch allocated meanwhile."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = fn()
    torch.cuda.synchronize()
    timings["steps"][name] = {"seconds": round(time.perf_counter() - start, 1),
                              "peak_gib": round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)}
    print(name, timings["steps"][name], flush=True)
    (out / "timings.json").write_text(json.dumps(timings, indent=1))
    return result


target = step("finetune_1_epoch", lambda: finetuned_model(
    profile, "target", bench.full, records_info(bench.source, bench.full), progress=False))
cfg = UnlearnConfig(method="palu", hyper={"top_k": 50, "first_n": 3}, seed=profile.seed, lora=lora,
                    **unlearn_budget(profile))
palu = step("palu", lambda: unlearned_model(profile, target, bench, cfg, progress=False))


def evaluation():
    model, tokenizer = load_model(str(palu))
    return evaluate(model, tokenizer, bench, max_new_tokens=profile.max_new_tokens,
                    batch_size=profile.eval_batch_size, out_dir=out / "eval", progress=False)


summary = step("evaluate", evaluation)
timings["summary"] = {k: v for k, v in summary.items() if k not in ("per_item", "meta")}
(out / "timings.json").write_text(json.dumps(timings, indent=1, default=str))
print(json.dumps(timings["steps"]))
PYTHON
