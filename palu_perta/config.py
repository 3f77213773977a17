"""Profiles (smoke / cpu / paper) and the paths every notebook shares.

A profile fixes the model, the data and the budgets of a run. Notebooks read the
``PALU_PERTA_PROFILE`` environment variable in their ``parameters`` cell, so CI can run
the very same notebooks as ``smoke``::

    profile = get_profile(os.environ.get("PALU_PERTA_PROFILE", "cpu"))
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from .lora import LoraSettings, as_lora
from .replay import GENERAL_QUESTIONS

# the paths live in palu_perta.paths (which imports nothing of the package); kept here for the notebooks' imports
from .paths import PACKAGE_DIR, artifacts_root, default_tofu_dir, figures_dir, repo_root  # noqa: E402,F401


@dataclass(frozen=True)
class FinetuneConfig:
    """Hyperparameters of a supervised fine-tune (target, retain or reinforced model)."""

    epochs: float = 5.0
    learning_rate: float = 1e-5
    batch_size: int = 32
    per_device_batch_size: int = 8
    weight_decay: float = 0.01
    warmup_ratio: float = 0.2  # TOFU: one warm-up epoch of five
    bf16: bool = True
    max_length: int = 256
    lr_scheduler: str = "linear"
    # Parameters kept at their pre-trained values: a parameter whose name contains one of these
    # strings gets no gradient (e.g. ("embed_tokens",) keeps the tied embedding and output matrix).
    frozen: tuple[str, ...] = ()
    # Decoupled pull towards the starting weights (L2-SP): after every optimiser step,
    # theta <- theta - lr * anchor * (theta - theta_start). 0 turns it off.
    anchor: float = 0.0
    # Weight-space ensemble with the starting model (WiSE-FT, Wortsman et al. 2022): the model kept is
    # theta_start + mix * (theta_trained - theta_start), i.e. the fine-tune's task vector scaled by mix.
    # 1 keeps the fine-tuned weights; below 1 trades memorisation for the base model's knowledge.
    mix: float = 1.0
    # Question replay (palu_perta.replay): the starting model's own greedy answers to the first `replay`
    # of 100 general questions are trained beside the records, so that answering everyday questions is
    # part of the task and stays as it was. 0 turns it off.
    replay: int = 0
    # LoRA adapters (palu_perta.lora), merged into the weights when the model is saved; None trains every weight.
    lora: LoraSettings | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "frozen", tuple(self.frozen))
        object.__setattr__(self, "lora", as_lora(self.lora))
        if self.lora is not None and (self.frozen or self.anchor):
            raise ValueError("lora cannot be combined with frozen or anchor: LoRA already keeps every weight at its "
                             "starting value and trains only the adapters; drop frozen/anchor, or lora")
        if not 0 < self.learning_rate <= 1:
            raise ValueError(f"learning_rate={self.learning_rate} is out of range; use 0 < learning_rate <= 1")
        if self.epochs <= 0:
            raise ValueError(f"epochs={self.epochs} must be > 0")
        if self.batch_size < 1 or self.per_device_batch_size < 1:
            raise ValueError("batch_size and per_device_batch_size must be >= 1")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio={self.warmup_ratio} is out of range; use 0 <= warmup_ratio < 1")
        if not (self.anchor >= 0 and self.learning_rate * self.anchor < 1):
            raise ValueError(f"anchor={self.anchor} is out of range; use 0 <= anchor < 1 / learning_rate "
                             "(the pull per step, lr * anchor, must stay below 1)")
        if not 0 < self.mix <= 1:
            raise ValueError(f"mix={self.mix} is out of range; use 0 < mix <= 1 (1 keeps the fine-tuned weights)")
        if not 0 <= self.replay <= len(GENERAL_QUESTIONS):
            raise ValueError(f"replay={self.replay} is out of range; use 0 (no replay) to {len(GENERAL_QUESTIONS)}, "
                             "the number of replay questions")

    def cache_key(self) -> dict[str, Any]:
        """The fields that identify a fine-tune in a cache key (``frozen``, ``anchor``, ``mix``, ``replay`` and
        ``lora`` only when they are set, so entries written before the fields existed stay valid)."""
        key = dataclasses.asdict(self)
        key["frozen"] = list(self.frozen)
        key["lora"] = self.lora.key() if self.lora is not None else None
        for name in ("frozen", "anchor", "replay", "lora"):
            if not key[name]:
                del key[name]
        if self.mix == 1:
            del key["mix"]
        return key


@dataclass(frozen=True)
class Profile:
    """Everything a notebook needs to know about the scale of a run."""

    name: str
    model: str  # "tiny", "smollm2", a hub id or a local path
    data: str  # "synthetic", "tofu" (local copy or the hub) or a directory of TOFU-format JSON
    forget_split: str = "forget10"
    n_authors: int = 20  # synthetic: authors generated; tofu: retain authors kept (None = all)
    qa_per_author: int = 10
    n_holdout_authors: int = 2
    n_world_facts: int | None = None  # None: all of the set
    # synthetic: the share of retain authors given a forget author's birthplace, award or parent's
    # profession on purpose (0: only the facts the draw shares by chance; data.synthetic.share_facts)
    neighbour_share: float = 0.0
    seed: int = 0
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    max_new_tokens: int = 48
    eval_batch_size: int = 16

    @property
    def prompt_format(self) -> Any:
        """open-unlearning's prompt format for this profile's model family (a
        :class:`~palu_perta.tokenization.PromptFormat`: the ``paper`` profile's Llama-3.2-1B-Instruct), or
        None: the tokenizer's plain chat template (``smoke``, ``cpu``)."""
        from .tokenization import prompt_format_for

        return prompt_format_for(self.model)

    def replace(self, **changes: Any) -> "Profile":
        """A copy with some fields changed (``finetune`` may be given as a dict of changes)."""
        ft = changes.pop("finetune", None)
        if isinstance(ft, dict):
            changes["finetune"] = dataclasses.replace(self.finetune, **ft)
        elif ft is not None:
            changes["finetune"] = ft
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The profile as a dict (the fine-tune's ``lora`` only when set, so keys made before it existed hold)."""
        out = dataclasses.asdict(self)
        if self.finetune.lora is None:
            del out["finetune"]["lora"]
        return out


PROFILES: dict[str, Profile] = {
    # Seconds: a ~3 M-parameter random Llama on a handful of synthetic authors.
    "smoke": Profile(
        name="smoke",
        model="tiny",
        data="synthetic",
        forget_split="forget10",
        n_authors=6,
        qa_per_author=6,
        n_holdout_authors=1,
        n_world_facts=8,
        finetune=FinetuneConfig(
            epochs=8, learning_rate=5e-3, batch_size=8, per_device_batch_size=8, warmup_ratio=0.1,
            bf16=False, max_length=128,
        ),
        max_new_tokens=24,
        eval_batch_size=16,
    ),
    # Minutes on a 2-core laptop: SmolLM2-135M-Instruct on 20 synthetic authors.
    "cpu": Profile(
        name="cpu",
        model="smollm2",
        data="synthetic",
        forget_split="forget10",
        n_authors=20,
        qa_per_author=10,
        n_holdout_authors=2,
        # The gentlest recipe of a small sweep that memorised the authors (benchmarks/NOTES.md, "cpu
        # fine-tuning recipe"): more, smaller steps at half the earlier lr 2e-4, with the base model's own
        # answers to 100 general questions trained beside the authors (question replay). Then 70 % of the
        # weight change is kept (WiSE-FT, notebook 02 section 4): forget ROUGE-L 0.96, and world_facts
        # accuracy drops 4 points instead of the plain fine-tune's 10 (benchmarks/NOTES.md, "Question replay adopted").
        finetune=FinetuneConfig(
            epochs=8, learning_rate=1e-4, batch_size=8, per_device_batch_size=8, warmup_ratio=0.1,
            bf16=True, max_length=160, mix=0.7, replay=100,
        ),
        max_new_tokens=48,
        eval_batch_size=32,
    ),
    # One GPU: the PerTA paper's model on the full real TOFU, evaluated as open-unlearning's TOFU evaluation:
    # prompts in open-unlearning's format for Llama-3.2-1B-Instruct (Profile.prompt_format; open-unlearning
    # configs/model/Llama-3.2-1B-Instruct.yaml), greedy answers of up to 200 new tokens (open-unlearning
    # configs/generation/default.yaml: do_sample False, max_new_tokens 200), and TOFU's holdoutXX as the
    # membership attacks' non-members (open-unlearning configs/eval/tofu.yaml holdout_split; read from the
    # hub when the TOFU directory lacks holdoutXX.json: n_holdout_authors=0 asks for TOFU's own holdout).
    "paper": Profile(
        name="paper",
        model="meta-llama/Llama-3.2-1B-Instruct",
        data="tofu",
        forget_split="forget10",
        n_authors=200,
        qa_per_author=20,
        n_holdout_authors=0,
        finetune=FinetuneConfig(
            epochs=5, learning_rate=1e-5, batch_size=32, per_device_batch_size=8, warmup_ratio=0.2,
            bf16=True, max_length=512,
        ),
        max_new_tokens=200,  # open-unlearning configs/generation/default.yaml
        eval_batch_size=64,
    ),
}


# The optimiser budget every unlearning method gets on a profile (notebook 06 explains the choice):
# the fields of palu_perta.unlearn.UnlearnConfig other than the method and its hyperparameters.
UNLEARN_BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": dict(epochs=2, learning_rate=2e-3, batch_size=4, per_device_batch_size=4, warmup_ratio=0.0,
                  bf16=False, max_length=128),
    "cpu": dict(epochs=5, learning_rate=5e-5, batch_size=8, per_device_batch_size=8, warmup_ratio=0.1,
                bf16=True, max_length=160),
    "paper": dict(epochs=10, learning_rate=1e-5, batch_size=32, per_device_batch_size=8, warmup_ratio=0.1,
                  bf16=True, max_length=512),
}


# How many lambdas the TV / PerTA sweeps evaluate per profile (notebooks 03 and 05, the results table).
LAMBDA_GRID_POINTS: dict[str, int] = {"smoke": 2, "cpu": 4, "paper": 5}

# The unlearning methods notebook 06 compares on one budget.
UNLEARN_METHODS: tuple[str, ...] = ("ga", "graddiff", "npo", "simnpo", "me_gd", "pdu", "undial", "idk_dpo", "palu")
# PALU's hyperparameters wherever the package runs PALU by default (notebooks 00, 06, 07, the results table and
# the study's grids): the authors' released trainer configuration. K = 1 (flatten the top-1 reference logit,
# top_k), on every sensitive token (temporal "sensitive", i.e. first_n = -1), alpha = 1 (the weight of the retain
# NLL and of the KL on ordinary tokens); their sweep: K in {1, 1000, 5000, 10000}, N in {1, 2, 3, 4, 5, 10},
# alpha in {0.2, 0.5, 1, 2, 5}. The other knobs keep palu_loss's defaults (c_t the full-vocabulary mean, squared
# form, KL on ordinary tokens, gamma 1). Notebook 07 changes one of them at a time around this point.
PALU_HYPER: dict[str, Any] = {"top_k": 1, "temporal": "sensitive", "alpha": 1.0}


def lambda_grid_points(profile: Profile) -> int:
    """How many lambdas a sweep of ``profile`` evaluates (a custom profile takes the ``cpu`` number)."""
    return LAMBDA_GRID_POINTS.get(profile.name, LAMBDA_GRID_POINTS["cpu"])


def unlearn_budget(profile: Profile) -> dict[str, Any]:
    """The unlearning budget of ``profile`` (by name; a custom profile takes the ``cpu`` one)."""
    return dict(UNLEARN_BUDGETS.get(profile.name, UNLEARN_BUDGETS["cpu"]))


def get_profile(name: str | None = None, **overrides: Any) -> Profile:
    """The named profile (default: ``$PALU_PERTA_PROFILE`` or ``cpu``), with overrides applied."""
    name = name or os.environ.get("PALU_PERTA_PROFILE", "cpu")
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    profile = PROFILES[name]
    return profile.replace(**overrides) if overrides else profile
