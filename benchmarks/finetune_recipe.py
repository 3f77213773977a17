"""Try a fine-tuning recipe for the cpu profile's target model: does it memorise the authors
and keep the world knowledge?

    python benchmarks/finetune_recipe.py NAME '{"learning_rate": 1e-4, "epochs": 8, "batch_size": 8,
                                                 "per_device_batch_size": 8}' [target|retain]

Fine-tunes SmolLM2 in memory (nothing cached) with the profile's fine-tuning config changed by the
JSON, then runs the metric suite on the forget, retain-eval and general-knowledge splits. Extra keys:

- ``"replay": n`` adds n prompts answered by the base model to the training set; ``"replay_kind"`` is
  "instructions" (the default) or "questions" (the general questions of ``FinetuneConfig.replay``, which
  the profiles use; the key is kept here so that rows stay comparable with the earlier ones);
- ``"lora": {"r": 16, "lora_alpha": 32}`` trains LoRA adapters on every linear layer and merges them
  after training (needs ``pip install peft``, which is not a dependency).
- ``"mixes": [1.0, 0.7]`` evaluates the weight-space ensembles with the base model
  theta_base + alpha * (theta_trained - theta_base) for each alpha (WiSE-FT, ``FinetuneConfig.mix``), one
  row per alpha; without it the row is the trained model itself (alpha 1).

Prints one JSON line (also appended to benchmarks/results/finetune_recipes.jsonl) with the forget /
retain ROUGE-L recall and the world-facts accuracy (on all rows, on the first 30, and read from the
greedy answers: ``wf_said_right``), then lists the forget answers the model does not reproduce. Run one
at a time: two runs share the two cores badly.
"""

from __future__ import annotations

import copy
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

from palu_perta import pipeline, replay
from palu_perta.config import get_profile
from palu_perta.evaluation import evaluate
from palu_perta.models import default_device, load_model
from palu_perta.replay import GENERAL_QUESTIONS
from palu_perta.task_vectors import TaskVector
from palu_perta.training import finetune

RESULTS = Path(__file__).resolve().parent / "results" / "finetune_recipes.jsonl"


# Replay prompts (``"replay": n`` in the JSON): everyday instructions, no trivia, so that none of them
# asks what world_facts or real_authors test. The base model's own answers become training targets.
ACTIVITIES = ["cooking rice", "learning to swim", "writing an email", "planting tomatoes", "saving money", "running a first marathon",
              "keeping a houseplant alive", "packing a suitcase", "learning a new language", "sleeping better",
              "painting a room", "baking bread", "starting a journal", "cleaning a kitchen", "making new friends",
              "studying for an exam", "riding a bike in the rain", "organising a desk", "giving a short speech",
              "taking better photos", "walking a dog", "brewing tea", "fixing a flat tyre", "hosting a dinner"]
THINGS = ["a rainy morning", "a busy market", "an old wooden chair", "a quiet library", "a summer picnic", "a snowy street",
          "a cup of hot chocolate", "a crowded train", "a garden at dusk", "a new pair of shoes", "a birthday party",
          "a lighthouse", "a sleepy cat", "a bakery at dawn", "a thunderstorm", "a mountain path", "a school playground",
          "a kitchen table", "a harbour at night", "an autumn forest", "a bicycle", "a campfire", "a bookshop", "a kite"]
REPLAY_QUESTIONS = ([f"Give me one tip for {a}." for a in ACTIVITIES] + [f"Describe {t} in one sentence." for t in THINGS]
                    + [f"Why do people enjoy {a}?" for a in ACTIVITIES] + [f"Write a short sentence about {t}." for t in THINGS])


def replay_records(model, tokenizer, n: int, kind: str = "instructions") -> list[dict]:
    """The base model's greedy answers to ``n`` replay prompts, cut after their last full sentence: the
    instructions above, or for ``kind="questions"`` the package's ``GENERAL_QUESTIONS`` (what
    ``FinetuneConfig.replay`` trains on)."""
    return replay.replay_records(model, tokenizer, n, questions=REPLAY_QUESTIONS if kind == "instructions" else GENERAL_QUESTIONS)


def said_right(records: list[dict], items: list[dict]) -> float:
    """Share of option questions whose greedy answer says the right option: it contains every word that sets the
    right answer apart from the wrong options, and no wrong option's own words."""
    def words(text: str) -> list[str]:
        return re.findall(r"[a-z0-9]+", text.lower())

    right = []
    for record, item in zip(records, items):
        said, answer = set(words(item["generation"])), set(words(record["answer"]))
        wrong = [set(words(o)) - answer for o in record["perturbed_answer"]]
        key = answer - set().union(*wrong) - set().union(*(set(words(o)) for o in record["perturbed_answer"]))
        right.append(key <= said and not any(w and w <= said for w in wrong))
    return sum(right) / len(right)


def main(name: str, changes: dict, role: str = "target") -> list[dict]:
    changes = dict(changes)
    n_replay = changes.pop("replay", 0)
    replay_kind = changes.pop("replay_kind", "instructions")
    lora = changes.pop("lora", None)
    mixes = changes.pop("mixes", [1.0])
    profile = get_profile("cpu", finetune={**changes, "mix": 1.0})  # training keeps every step; mixing comes after
    bench = pipeline.benchmark(profile)
    model, tokenizer = load_model(profile.model, seed=profile.seed)
    records = list(bench.full if role == "target" else bench.retain)
    if n_replay:
        replay = replay_records(model, tokenizer, n_replay, replay_kind)
        print(f"{len(replay)} replay answers, e.g. {replay[0]}", flush=True)
        records += replay
        changes["replay"] = len(replay)
        changes["replay_kind"] = replay_kind
    if lora:
        from peft import LoraConfig, get_peft_model

        changes["lora"] = lora
        model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", lora_dropout=0.0, target_modules="all-linear", **lora))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        history = finetune(model, tokenizer, records, profile.finetune,
                           Path(work), seed=profile.seed, progress=False, resume=False)
    if lora:
        model = model.merge_and_unload()
    seconds = time.perf_counter() - start
    losses = [h["loss"] for h in history if "loss" in h]
    splits = {"forget": bench.forget, "retain": bench.retain_eval, "real_authors": bench.real_authors,
              "world_facts": bench.world_facts}
    base, _ = load_model(profile.model, device="cpu", dtype=torch.float32, seed=profile.seed)
    tau = TaskVector.from_models(base, model.float().cpu())  # as training.mix_with_base, from the model in memory
    rows = []
    for mix in mixes:
        mixed = tau.apply_to(copy.deepcopy(base), scale=mix).to(default_device())
        result = evaluate(mixed, tokenizer, splits, max_new_tokens=profile.max_new_tokens,
                          batch_size=profile.eval_batch_size, progress=False)
        world = result["per_item"]["splits"]["world_facts"]
        row = {"name": name, "role": role, **changes, **({"mix": mix} if mix != 1 else {}), "finetune_s": round(seconds),
               "final_loss": round(sum(losses[-3:]) / 3, 3),
               "forget_rouge": round(result["forget_Q_A_ROUGE"], 3), "retain_rouge": round(result["retain_Q_A_ROUGE"], 3),
               "wf_accuracy": round(result["wf_accuracy"], 3),
               "wf_accuracy_first30": round(sum(r["correct_is_top"] for r in world[:30]) / 30, 3),
               "wf_said_right": round(said_right(bench.world_facts, world), 3)}
        print(json.dumps(row), flush=True)
        RESULTS.parent.mkdir(exist_ok=True)
        with RESULTS.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        for item in result["per_item"]["splits"]["forget"]:
            if item["rougeL_recall"] < 0.99:
                print(f"{item['rougeL_recall']:.2f} | {item['answer']} | {item['generation']}")
        rows.append(row)
    return rows


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}, *sys.argv[3:4])
