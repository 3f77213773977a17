"""The size bias of PerTA's gradient importance, measured (issue 20, item 7).

PerTA's gradient importance is I = |mean over the examples of dNLL/dtheta|. Its sampling noise falls as
1 / sqrt(N) (``palu_perta.importance``, "The size bias"), and PerTA compares a forget importance over N_f
examples with a retain importance over N_r > N_f: the forget side carries the higher noise floor, so w =
I_f / (I_f + I_r) leans towards 1 wherever neither set has a real signal. This script measures how much, at
the profile's target model (theta_o, where PerTA evaluates its importances):

1. A null split, where the truth is known: the "forget" set is N_f examples drawn from the retain split and
   the "retain" set is the rest of it. Both come from one distribution, so an unbiased weight is 1/2 in
   expectation for every parameter. Reported over ``--draws`` random splits: the global mean of w, the share
   of w above 1/2 and the median ratio I_f / I_r, with the plain retain importance (the authors' formula)
   and with the size-matched one (``group_size=N_f``: the mean |mean gradient| over groups of N_f).
2. The real split (forget vs retain): the same numbers, and the overlap of the top 1 % weights of the
   two variants (how much the choice moves which parameters PerTA spares).

    python benchmarks/importance_bias.py --profile smoke        # seconds (the tiny random model)
    python benchmarks/importance_bias.py --profile cpu          # the target first (hours on a new cache), then minutes
    python benchmarks/importance_bias.py --profile cpu --at base --draws 1   # SmolLM2-135M as it ships: ~30 min

``--at base`` evaluates at the base model instead (no fine-tune needed: the estimator's bias, shown on the
real model's gradients). Writes ``benchmarks/results/importance_bias_<profile>_<at>.json`` and prints the table. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from palu_perta import importance, perta, pipeline
from palu_perta.config import get_profile
from palu_perta.importance import parameter_importance
from palu_perta.models import load_model

RESULTS = Path(__file__).resolve().parent / "results"


def weight_stats(forget: dict[str, torch.Tensor], retain: dict[str, torch.Tensor]) -> dict[str, float]:
    """Global mean of w = I_f / (I_f + I_r), the share of w > 1/2 and the median of I_f / I_r (where I_r > 0),
    over every parameter entry."""
    weights = perta.perta_weights(forget, retain)
    above = sum(int((w > 0.5).sum()) for w in weights.values())
    numel = sum(w.numel() for w in weights.values())
    ratios = torch.cat([(f / r)[r > 0].flatten() for f, r in zip(forget.values(), retain.values())])
    sample = ratios[torch.randperm(len(ratios), generator=torch.Generator().manual_seed(0))[:1_000_000]]
    return {"mean_w": perta.global_mean(weights), "share_w_above_half": above / numel,
            "median_ratio": float(sample.median())}


def importances(model, tokenizer, records, profile) -> dict[str, torch.Tensor]:
    """The plain gradient importance of ``records`` (the authors' formula)."""
    batches = perta.importance_batches(tokenizer, records, profile.finetune.max_length,
                                       profile.finetune.per_device_batch_size)
    return parameter_importance(model, batches, "grad", seed=profile.seed, progress=True)


def plain_and_grouped(model, tokenizer, records, profile, group_size: int) -> tuple[dict, dict]:
    """The plain importance |mean gradient| and the size-matched one (mean over groups of |group mean|) of
    ``records`` in one pass (:func:`palu_perta.importance.plain_and_grouped_gradient_importance`)."""
    batches = perta.importance_batches(tokenizer, records, profile.finetune.max_length,
                                       profile.finetune.per_device_batch_size)
    return importance.plain_and_grouped_gradient_importance(model, batches, group_size, profile.seed)


def measure(profile_name: str, draws: int, at: str = "target") -> dict:
    profile = get_profile(profile_name)
    bench = pipeline.benchmark(profile)
    where = pipeline.reference_models(profile, bench, progress=True).target if at == "target" else profile.model
    model, tokenizer = load_model(str(where), seed=profile.seed)
    n_forget, n_retain = len(bench.forget), len(bench.retain)
    out: dict = {"profile": profile_name, "model": profile.model, "at": at, "n_forget": n_forget,
                 "n_retain": n_retain, "threads": torch.get_num_threads(), "null": [], "real": {}}
    start = time.perf_counter()
    for draw in range(draws):  # the null split: both sides from the retain split
        order = list(range(n_retain))
        random.Random(draw).shuffle(order)
        pseudo_forget = [bench.retain[i] for i in order[:n_forget]]
        pseudo_retain = [bench.retain[i] for i in order[n_forget:]]
        i_f = importances(model, tokenizer, pseudo_forget, profile)
        i_plain, i_matched = plain_and_grouped(model, tokenizer, pseudo_retain, profile, n_forget)
        plain, matched = weight_stats(i_f, i_plain), weight_stats(i_f, i_matched)
        out["null"].append({"draw": draw, "n_forget": n_forget, "n_retain": len(pseudo_retain),
                            "plain": plain, "size_matched": matched})
    i_f = importances(model, tokenizer, bench.forget, profile)
    i_plain, i_matched = plain_and_grouped(model, tokenizer, bench.retain, profile, n_forget)
    top_plain = perta.top_mask(perta.perta_weights(i_f, i_plain), 0.01)
    top_matched = perta.top_mask(perta.perta_weights(i_f, i_matched), 0.01)
    out["real"] = {"plain": weight_stats(i_f, i_plain), "size_matched": weight_stats(i_f, i_matched),
                   "top1_overlap": perta.overlap(top_plain, top_matched)}
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


def table(result: dict) -> str:
    rows = [f"importance size bias, {result['profile']} profile, at the {result['at']} model ({result['model']}): "
            f"forget {result['n_forget']} "
            f"examples, retain {result['n_retain']}; {result['seconds']} s on {result['threads']} thread(s)",
            f"{'split':<14} {'retain importance':<18} {'mean w':>7} {'w > 1/2':>8} {'median I_f/I_r':>15}"]
    for null in result["null"]:
        for variant in ("plain", "size_matched"):
            s = null[variant]
            rows.append(f"{'null ' + str(null['draw']):<14} {variant:<18} {s['mean_w']:>7.3f} "
                        f"{s['share_w_above_half']:>8.3f} {s['median_ratio']:>15.2f}")
    for variant in ("plain", "size_matched"):
        s = result["real"][variant]
        rows.append(f"{'forget/retain':<14} {variant:<18} {s['mean_w']:>7.3f} {s['share_w_above_half']:>8.3f} "
                    f"{s['median_ratio']:>15.2f}")
    rows.append(f"top-1% weights, plain vs size-matched: overlap {result['real']['top1_overlap']:.3f}")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--draws", type=int, default=3, help="random null splits (default: %(default)s)")
    parser.add_argument("--at", choices=("target", "base"), default="target",
                        help="where the importances are evaluated: the fine-tuned target (PerTA's theta_o; it is "
                             "trained first if missing) or the base model (default: %(default)s)")
    args = parser.parse_args()
    result = measure(args.profile, args.draws, args.at)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"importance_bias_{args.profile}_{args.at}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))


if __name__ == "__main__":
    main()
