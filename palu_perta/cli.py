"""Command line: ``python -m palu_perta <command> ...`` (or the ``palu-perta`` script).

Each subcommand is a :class:`Command` in :data:`COMMANDS`: a function that adds its arguments
to an argparse parser and a function that runs it. Adding one (``unlearn``, ``finetune``) is
one entry in that dict.

    python -m palu_perta evaluate --model PATH --data synthetic --forget-split forget10 \\
        [--profile cpu] [--retain-results DIR_OR_JSON] --out DIR  # JSON: ours or open-unlearning's
    python -m palu_perta finetune --profile paper [--role target|retain|both]
    python -m palu_perta unlearn --profile paper --method palu --hyper '{"top_k": 1000, "temporal": "onset", "first_n": 1}'
    python -m palu_perta unlearn --profile paper --method npo --lora-rank 8   # LoRA (palu_perta.lora)
    python -m palu_perta tv --profile cpu --lambda auto --out runs/tv
    python -m palu_perta perta --profile cpu --variant fisher --lambda 2.5 --out runs/perta --save-model

``finetune`` and ``unlearn`` run unchanged under ``accelerate launch`` (see ``accelerate/README.md``):
every process trains its shard, process 0 writes the cached model.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Command:
    """One subcommand: its help line, how it declares its arguments, and what it runs."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="'tiny', 'smollm2', a model directory or a hub id")
    _common_arguments(parser)
    parser.add_argument("--retain-results", default=None,
                        help="the retain model's per_item.json or open-unlearning TOFU_EVAL.json (or a directory "
                             "holding one): enables forget_quality, privleak")
    parser.add_argument("--out", required=True,
                        help="directory for summary.json, per_item.json and open-unlearning's TOFU_EVAL.json, "
                             "TOFU_SUMMARY.json")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the profile's")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the profile's eval_batch_size")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="bf16 autocast (default: off on the CPU, where it moves the metrics; see evaluation.py)")

def _run_evaluate(args: argparse.Namespace) -> int:
    from .artifacts import check_output_dir
    from .config import get_profile
    from .data import load_benchmark
    from .evaluation import DEFAULT_BF16, evaluate, summary_lines
    from .models import load_model

    overrides: dict[str, Any] = {"forget_split": args.forget_split} if args.forget_split else {}
    profile = get_profile(args.profile, **overrides)
    check_output_dir(args.out)  # before the model is loaded and evaluated
    benchmark = load_benchmark(profile, args.data, group_by=args.group_by)
    if benchmark.info.get("grouping"):
        print(benchmark.info["grouping"])  # how the records were grouped, what was kept
    model, tokenizer = load_model(args.model)
    result = evaluate(
        model,
        tokenizer,
        benchmark,
        args.retain_results,
        max_new_tokens=args.max_new_tokens or profile.max_new_tokens,
        batch_size=args.batch_size or profile.eval_batch_size,
        out_dir=args.out,
        bf16=DEFAULT_BF16 if args.bf16 is None else args.bf16,
        progress=not args.no_progress,
    )
    result.pop("per_item")
    meta = result.pop("meta")
    for line in summary_lines(result):  # a metric that cannot be computed says why (e.g. no holdout: no MIA)
        print(line)
    print(json.dumps(meta))
    print(f"wrote summary.json, per_item.json, TOFU_EVAL.json and TOFU_SUMMARY.json in {args.out}")
    return 0


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default=None, help="smoke | cpu | paper (default: $PALU_PERTA_PROFILE or cpu)")
    parser.add_argument("--data", default=None,
                        help="'synthetic', 'tofu' or a directory of TOFU-format JSON (default: the profile's). A "
                             "directory of your own is used whole (the profile's author counts shape only the "
                             "synthetic data and TOFU itself)")
    parser.add_argument("--group-by", default=None, metavar="FIELD",
                        help="the field of your records that groups them into authors, organisations... (default: "
                             "'author'; TOFU itself comes in blocks of 20 QA pairs)")
    parser.add_argument("--forget-split", default=None, choices=["forget01", "forget05", "forget10"],
                        help="default: the profile's")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _profile_and_benchmark(args: argparse.Namespace) -> tuple[Any, Any]:
    from .config import get_profile
    from .data import load_benchmark
    from .training import is_main_process

    overrides: dict[str, Any] = {"forget_split": args.forget_split} if args.forget_split else {}
    if args.data:
        overrides["data"] = args.data
    profile = get_profile(args.profile, **overrides)
    lora = _lora_settings(args)
    if lora is not None:  # every fine-tune this command runs trains LoRA adapters
        profile = profile.replace(finetune={"lora": lora})
    bench = load_benchmark(profile, group_by=args.group_by)
    if bench.info.get("grouping") and is_main_process():
        print(bench.info["grouping"])  # how the records were grouped, what was kept: once per run
    return profile, bench


def _lora_arguments(parser: argparse.ArgumentParser, trains: str) -> None:
    parser.add_argument("--lora-rank", type=int, default=None, metavar="R",
                        help=f"train LoRA adapters of rank R instead of every weight ({trains}); they are merged into "
                             "the saved weights. Methods with a reference model take it from the model with its "
                             "adapters disabled (no second copy). Default: off")
    parser.add_argument("--lora-alpha", type=float, default=None,
                        help="LoRA's alpha; the update is scaled by alpha / R (default 32, TOFU's LoRA recipe)")
    parser.add_argument("--lora-dropout", type=float, default=None,
                        help="dropout on the adapters' input (default 0.05, TOFU's LoRA recipe)")
    parser.add_argument("--lora-targets", default=None, metavar="NAMES",
                        help="comma-separated linear layers to adapt, e.g. q_proj,v_proj (default: every linear "
                             "layer but the output layer, as TOFU)")


def _lora_settings(args: argparse.Namespace) -> Any:
    """The :class:`~palu_perta.lora.LoraSettings` of ``--lora-*``, or None without ``--lora-rank``."""
    from .lora import LoraSettings

    rank = getattr(args, "lora_rank", None)
    extra = {"--lora-alpha": getattr(args, "lora_alpha", None), "--lora-dropout": getattr(args, "lora_dropout", None),
             "--lora-targets": getattr(args, "lora_targets", None)}
    if rank is None:
        given = [name for name, value in extra.items() if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} set(s) LoRA up, but LoRA is off: add --lora-rank R (e.g. 8)")
        return None
    settings: dict[str, Any] = {"rank": rank}
    if args.lora_alpha is not None:
        settings["alpha"] = args.lora_alpha
    if args.lora_dropout is not None:
        settings["dropout"] = args.lora_dropout
    if args.lora_targets is not None:
        targets = tuple(t.strip() for t in args.lora_targets.split(",") if t.strip())
        if not targets:
            raise ValueError("--lora-targets names no layer; give e.g. q_proj,v_proj or leave it out (all linear layers)")
        settings["target_modules"] = targets
    try:
        return LoraSettings(**settings)
    except ValueError as err:
        raise ValueError(f"--lora-*: {err}") from None


def _finetune_arguments(parser: argparse.ArgumentParser) -> None:
    _common_arguments(parser)
    _lora_arguments(parser, "the target and retain models")
    parser.add_argument("--role", default="both", choices=["target", "retain", "both"],
                        help="target (all authors), retain (retain authors only) or both")


def _run_finetune(args: argparse.Namespace) -> int:
    from .training import finetuned_model, is_main_process, records_info

    profile, bench = _profile_and_benchmark(args)
    roles = ["target", "retain"] if args.role == "both" else [args.role]
    for role in roles:
        records = bench.full if role == "target" else bench.retain
        path = finetuned_model(profile, role, records, records_info(bench.source, records), progress=not args.no_progress)
        if is_main_process():
            print(f"{role}: {path}")
    return 0


def _json_object(text: str, option: str, example: str) -> dict[str, Any]:
    """The JSON object given to ``option``; anything else is a one-line ``ValueError`` showing ``example``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{option} must be a JSON object such as {example}, but {text!r} is not JSON ({err.msg} "
                         f"at column {err.colno}); JSON puts keys and strings in double quotes") from None
    if not isinstance(value, dict):
        raise ValueError(f"{option} must be a JSON object such as {example}, not the {type(value).__name__} {text!r}")
    return value


def _unlearn_arguments(parser: argparse.ArgumentParser) -> None:
    _common_arguments(parser)
    _lora_arguments(parser, "the unlearning run, and the target when it is fine-tuned here")
    parser.add_argument("--method", default="palu", help="palu, ga, graddiff, npo, simnpo, me_gd, pdu, undial, idk_dpo, ...")
    parser.add_argument("--hyper", default="{}",
                        help='the loss\'s hyperparameters as JSON, e.g. \'{"top_k": 1000, "temporal": "onset", '
                             '"first_n": 1}\' (PALU: on top of config.PALU_HYPER, the authors\' released configuration)')
    parser.add_argument("--budget", default="{}",
                        help="changes to the profile's unlearning budget as JSON, e.g. '{\"learning_rate\": 2e-5}'")
    parser.add_argument("--target", default=None, help="the model to unlearn from (default: the profile's target, "
                                                        "fine-tuned first if it is not cached)")
    parser.add_argument("--spans", default=None, metavar="auto|labels|FILE",
                        help="PALU's sensitive spans: 'labels' (the data's target_words, required on every forget "
                             "record), 'auto' (estimated: answer tokens the target finds --span-margin nats likelier "
                             "than the profile's base model), or a JSON file of {question, target_words} per forget "
                             "question (as TOFU's forgetXX_spans.json). Default: the labels where the records have "
                             "them, estimates elsewhere. Methods that read no spans ignore it")
    parser.add_argument("--span-margin", type=float, default=None,
                        help="the margin (nats) of estimated spans (default 2)")


def _run_unlearn(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .config import PALU_HYPER, unlearn_budget
    from .models import local_model_dir
    from .training import finetuned_model, is_main_process, records_info
    from .spans import DEFAULT_MARGIN
    from .unlearn import BUDGET_FIELDS, UnlearnConfig, needs_spans, plan_spans, unlearned_model

    # everything is checked before the target model is fine-tuned (minutes to hours)
    hyper = _json_object(args.hyper, "--hyper", '\'{"top_k": 1000, "temporal": "onset", "first_n": 1}\'')
    if args.method == "palu":  # the authors' released configuration, as the notebooks and the study run PALU
        hyper = {**PALU_HYPER, **hyper}
    budget = _json_object(args.budget, "--budget", '\'{"learning_rate": 2e-5}\'')
    unknown = sorted(set(budget) - set(BUDGET_FIELDS))
    if unknown:
        raise ValueError(f"--budget has no key(s) {unknown}; the valid keys are {list(BUDGET_FIELDS)}")
    profile, bench = _profile_and_benchmark(args)
    cfg = UnlearnConfig(method=args.method, hyper=hyper, seed=profile.seed, lora=profile.finetune.lora,
                        **{**unlearn_budget(profile), **budget})
    margin = DEFAULT_MARGIN if args.span_margin is None else args.span_margin
    if needs_spans(cfg):
        plan_spans(bench.forget, args.spans, margin=margin)  # a bad --spans file or missing labels: now, not later
    elif (args.spans is not None or args.span_margin is not None) and is_main_process():
        print(f"note: --spans and --span-margin are ignored: {args.method} reads no sensitive spans")
    if args.target:
        # absolute, so the cache key does not depend on how the path was typed
        target = Path(args.target).expanduser().resolve()
        if not target.is_dir():
            raise FileNotFoundError(f"--target {args.target} is not a model directory (no {target}); pass a folder "
                                    "written by save_pretrained, or leave --target out to use the profile's target")
        local_model_dir(str(target))  # a model directory with whole weights
    else:
        target = finetuned_model(profile, "target", bench.full, records_info(bench.source, bench.full),
                                 progress=not args.no_progress)
    path = unlearned_model(profile, target, bench, cfg, progress=not args.no_progress, spans=args.spans, margin=margin)
    if is_main_process():
        print(f"unlearned ({args.method}): {path}")
    return 0


def _lambda(text: str) -> float | str:
    """``--lambda``: a finite number >= 0, or ``auto`` (calibrated as the notebooks do)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--lambda must be a number >= 0 or 'auto', not {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"--lambda must be a finite number >= 0 or 'auto', not {text!r}")
    return value


def _arithmetic_arguments(parser: argparse.ArgumentParser, variant: bool) -> None:
    _common_arguments(parser)
    _lora_arguments(parser, "the reinforcement fine-tune, so the task vector is the merged update, and the target "
                            "and retain models when they are fine-tuned here")
    if variant:
        parser.add_argument("--variant", default="grad", choices=["grad", "fisher"],
                            help="the importance: squared gradients (grad) or the diagonal Fisher (fisher)")
    parser.add_argument("--lambda", dest="lam", default="auto",
                        help="how far to subtract the task vector: a number, or 'auto' (default): lambda*, the "
                             "smallest lambda at which TV forgets as far as the retain model (palu_perta.perta."
                             "calibrate_lambda, as notebooks 03-05)")
    parser.add_argument("--out", required=True,
                        help="directory for the evaluation (summary.json, per_item.json, TOFU_EVAL.json, "
                             "TOFU_SUMMARY.json), run.json and, with --save-model, the edited model in model/")
    parser.add_argument("--save-model", action="store_true",
                        help="also write the edited model (safetensors) to OUT/model")
    parser.add_argument("--target", default=None, help="the model to edit (default: the profile's target, "
                                                        "fine-tuned first if it is not cached)")


def _run_arithmetic(args: argparse.Namespace, method: str) -> int:
    from pathlib import Path

    from . import perta, pipeline
    from .artifacts import atomic_dir, atomic_write_json, check_output_dir
    from .config import lambda_grid_points
    from .evaluation import DEFAULT_BF16, evaluate
    from .models import load_model, local_model_dir
    from .training import finetuned_model, records_info

    # everything is checked before anything is fine-tuned (minutes to hours)
    lam = _lambda(args.lam)
    out = check_output_dir(args.out)
    if args.save_model and (out / "model").exists():
        raise ValueError(f"{out / 'model'} exists; pass another --out or delete it")
    profile, bench = _profile_and_benchmark(args)
    progress = not args.no_progress
    if args.target:
        target = Path(args.target).expanduser().resolve()
        if not target.is_dir():
            raise FileNotFoundError(f"--target {args.target} is not a model directory (no {target}); pass a folder "
                                    "written by save_pretrained, or leave --target out to use the profile's target")
        local_model_dir(str(target))
    else:
        target = finetuned_model(profile, "target", bench.full, records_info(bench.source, bench.full),
                                 progress=progress)
    retain = finetuned_model(profile, "retain", bench.retain, records_info(bench.source, bench.retain),
                             progress=progress)
    run: dict[str, Any] = {"method": method, "profile": profile.name, "target": str(target), "retain": str(retain)}
    if lam == "auto":
        calibration = perta.calibrate_lambda(profile, bench, target, retain, points=lambda_grid_points(profile),
                                             progress=progress)
        lam = float(calibration["lam_star"])
        run["calibration"] = {k: calibration[k] for k in ("lam_star", "target_rouge", "retain_rouge", "probes", "note")}
        print(f"lambda* = {lam:g} (TV's forget ROUGE-L reaches the retain model's {calibration['retain_rouge']:.3f}; "
              f"{len(calibration['probes'])} probes){'; ' + calibration['note'] if calibration.get('note') else ''}")
    run["lambda"] = lam
    tau, weights = perta.task_vector_and_weights(profile, bench, target, method, progress=progress)
    original, tokenizer = load_model(str(target), seed=profile.seed)
    edited = perta.perta_unlearn(original, tau, weights, lam)
    del original
    reference = pipeline.evaluation(profile, retain, bench, progress=progress)  # cached: forget quality's reference
    result = evaluate(edited, tokenizer, bench, reference.path / "per_item.json",
                      max_new_tokens=profile.max_new_tokens, batch_size=profile.eval_batch_size, out_dir=out,
                      bf16=DEFAULT_BF16, progress=progress)
    if args.save_model:
        with atomic_dir(out / "model") as tmp:
            edited.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
        run["model"] = str(out / "model")
    atomic_write_json(out / "run.json", run)
    print(f"{method} at lambda {lam:g}: forget ROUGE-L {result['forget_Q_A_ROUGE']:.3f}, model utility "
          f"{result['model_utility']:.3f}, forget quality {result['forget_quality']:.3g}")
    print(f"wrote run.json, summary.json, per_item.json, TOFU_EVAL.json, TOFU_SUMMARY.json"
          f"{' and model/' if args.save_model else ''} in {out}")
    return 0


def _study_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default=None, help="smoke | cpu (default: $PALU_PERTA_PROFILE or cpu); "
                                                        "picks the grid of the same name")
    parser.add_argument("--grid", default=None, help="a grid of palu_perta.study.GRIDS (default: the profile's)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds to run, e.g. 0,1 (default: the grid's)")
    parser.add_argument("--methods", default=None, help="comma-separated methods to run (default: the grid's)")
    parser.add_argument("--results", default=None, help="results directory (default: $PALU_PERTA_RESULTS or "
                                                        "<repo>/results)")
    parser.add_argument("--dry-run", action="store_true", help="list the cells, what is done and the time left; "
                                                               "run nothing")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _run_study(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from . import study

    grid = study.get_grid(args.grid or args.profile or os.environ.get("PALU_PERTA_PROFILE", "cpu"))
    if args.profile and args.profile != grid.profile:
        raise ValueError(f"grid {grid.name!r} runs on profile {grid.profile!r}, not {args.profile!r}; "
                         "drop --profile or pick a grid of that profile")

    def listed(text: str | None, kind: Callable[[str], Any]) -> list[Any] | None:
        try:
            return None if text is None else [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"{text!r} is not a comma-separated list (e.g. 0,1,2)") from None

    methods, seeds = listed(args.methods, str.strip), listed(args.seeds, int)
    declared = {c.method for c in grid.cells()}
    if methods and set(methods) - declared:
        raise ValueError(f"grid {grid.name!r} has no method(s) {sorted(set(methods) - declared)}; "
                         f"it runs {sorted(declared)}")
    if seeds and set(seeds) - set(grid.seeds):
        extra = tuple(s for s in seeds if s not in grid.seeds)
        grid = study.dataclasses.replace(grid, seeds=grid.seeds + extra)
    cells = study.select(grid.cells(), methods, seeds)
    root = Path(args.results).resolve() if args.results else None
    if args.dry_run:
        print(study.plan(grid, root, cells).table())
        return 0
    study.run_study(grid, root, cells, progress=not args.no_progress)
    print(f"results in {study.study_dir(grid, root)}")
    return 0


COMMANDS: dict[str, Command] = {
    "evaluate": Command("run the TOFU metric suite on a model", _evaluate_arguments, _run_evaluate),
    "finetune": Command("fine-tune (or find in the cache) the target and retain models of a profile",
                        _finetune_arguments, _run_finetune),
    "unlearn": Command("unlearn the forget split from the profile's target model with one method",
                       _unlearn_arguments, _run_unlearn),
    "tv": Command("task arithmetic: subtract lambda x the task vector of the forget set from the target, evaluate",
                  lambda parser: _arithmetic_arguments(parser, variant=False),
                  lambda args: _run_arithmetic(args, "tv")),
    "perta": Command("PerTA: subtract lambda x (w * task vector), w from forget-vs-retain importance, evaluate",
                     lambda parser: _arithmetic_arguments(parser, variant=True),
                     lambda args: _run_arithmetic(args, f"perta-{args.variant}")),
    "study": Command("run (or resume) a declared grid of unlearning runs and append their results",
                     _study_arguments, _run_study),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per entry of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog="python -m palu_perta", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        command.add_arguments(sub.add_parser(name, help=command.help, description=command.help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run the chosen command; returns its exit code.

    Errors the user can fix (bad paths, mismatched retain results...) print one line, exit 2.
    """
    args = build_parser().parse_args(argv)
    from transformers.utils import logging as transformers_logging

    hide = getattr(args, "no_progress", False) and transformers_logging.is_progress_bar_enabled()
    if hide:  # the weight-loading and download bars of transformers too
        transformers_logging.disable_progress_bar()
    try:
        return COMMANDS[args.command].run(args)
    except (ValueError, FileNotFoundError, PermissionError, ModuleNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        if hide:
            transformers_logging.enable_progress_bar()
