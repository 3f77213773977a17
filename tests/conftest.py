"""Shared fixtures. Tests run on the smoke profile. They share the checkout's artifacts directory
(or $PALU_PERTA_ARTIFACTS): its entries are keyed by configuration and named by profile, so smoke
entries never stand in for cpu ones, and the SmolLM2 conversion is done once. Tests that check what
gets written use their own temporary directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("PALU_PERTA_PROFILE", "smoke")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
TOFU_DIR = REPO.parent / "shared" / "tofu"


@pytest.fixture(scope="session")
def tofu_dir() -> Path:
    """The real TOFU copy beside the checkout; tests that need it are skipped without it."""
    if not (TOFU_DIR / "full.json").exists():
        pytest.skip(f"real TOFU not found at {TOFU_DIR} (set up ../shared/tofu to run these tests)")
    return TOFU_DIR


@pytest.fixture(scope="session")
def tokenizer():
    """SmolLM2's tokenizer (also the tiny model's)."""
    from palu_perta.models import smollm2_tokenizer

    return smollm2_tokenizer()


@pytest.fixture()
def tiny(tokenizer):
    """A fresh tiny random Llama and its tokenizer."""
    from palu_perta.models import tiny_model

    return tiny_model(tokenizer, seed=0), tokenizer
