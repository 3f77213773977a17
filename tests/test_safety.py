"""Weights travel as safetensors only; nothing a user did not produce is unpickled; remote code
runs only when the caller asks for it."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest

from palu_perta import models
from palu_perta.models import load_model, save_model

PACKAGE = Path(models.__file__).resolve().parent


def test_package_source_never_unpickles_or_trusts_remote_code():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"\btorch\.load\(|\bpickle\.loads?\(|\bimport pickle\b|trust_remote_code\s*=\s*True", code):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert not offenders, offenders


class _Trap:
    """Unpickling this writes a file: proof that something was unpickled."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.write_text, (self.target, "unpickled"))


def test_a_pickled_checkpoint_is_refused_not_loaded(tmp_path, tiny):
    model, tokenizer = tiny
    save_model(model, tokenizer, tmp_path / "model")
    for weights in (tmp_path / "model").glob("*.safetensors"):
        weights.unlink()
    trap = tmp_path / "trap-fired"
    (tmp_path / "model" / "pytorch_model.bin").write_bytes(pickle.dumps(_Trap(trap)))
    with pytest.raises(FileNotFoundError, match=r"no safetensors weights \(found \['pytorch_model.bin'\]\)"):
        load_model(str(tmp_path / "model"))
    assert not trap.exists()


def test_remote_code_is_off_unless_asked_for(tmp_path, tiny, monkeypatch):
    model, tokenizer = tiny
    save_model(model, tokenizer, tmp_path / "model")
    seen = []
    real = models.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.append((kwargs.get("trust_remote_code"), kwargs.get("use_safetensors")))
        return real(*args, **kwargs)

    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained", spy)
    load_model(str(tmp_path / "model"))
    load_model(str(tmp_path / "model"), trust_remote_code=True)
    assert seen == [(False, True), (True, True)]
