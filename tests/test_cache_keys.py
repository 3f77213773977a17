"""Cache keys of a user's own data come from its content, not its path; the keys of the built-in data
("synthetic") stay what they were, so existing cache entries stay valid."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from palu_perta import artifacts
from palu_perta.config import get_profile
from palu_perta.data import load_benchmark, synthetic_benchmark, write_tofu_dir
from palu_perta.training import finetune_config, records_info

# The keys of synthetic-data entries before user directories were keyed by content (palu_perta 0.1.0):
# the cpu target's mix=1 entry is the one the cpu study trains (artifacts/models/cpu-target-3c0735eda0ee).
PINNED = {
    "cpu": ({"source": "synthetic", "n": 200, "sha256": "888378c7f939172e"}, "3c0735eda0ee", "60eac282e6b5"),
    "smoke": ({"source": "synthetic", "n": 36, "sha256": "827bd3c972e0dee2"}, "c1e9428b104b", "c1e9428b104b"),
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_synthetic_keys_are_unchanged(name, monkeypatch):
    monkeypatch.setattr(artifacts, "__version__", "0.1.0")  # the hash covers the version; pin the one measured
    profile = get_profile(name)
    bench = load_benchmark(profile)
    info, trained, mixed = PINNED[name]
    assert records_info(bench.source, bench.full) == info
    plain = finetune_config(profile, "target", info, profile.model, dataclasses.replace(profile.finetune, mix=1.0))
    assert artifacts.config_hash(plain) == trained
    assert artifacts.config_hash(finetune_config(profile, "target", info, profile.model, profile.finetune)) == mixed


def _keys(profile, data: str) -> tuple[dict, str, dict]:
    """records_info of the training set, the target model's entry name, and the evaluation key's data part."""
    bench = load_benchmark(profile, data)
    info = records_info(bench.source, bench.full)
    config = finetune_config(profile, "target", info, "tiny", profile.finetune)
    entry = artifacts.entry_path("models", "smoke-target", config)
    return info, entry.name, {split: records_info(bench.source, records) for split, records in bench.splits().items()}


def test_a_user_directory_is_keyed_by_its_content(tmp_path, monkeypatch):
    profile = get_profile("smoke")
    (tmp_path / "a").mkdir()
    original = write_tofu_dir(synthetic_benchmark(8, 4, "forget10", n_holdout_authors=1, n_world_facts=8),
                              tmp_path / "a" / "data")
    copy = shutil.copytree(original, tmp_path / "elsewhere" / "copy")
    monkeypatch.chdir(tmp_path / "a")

    relative, absolute, copied = _keys(profile, "data"), _keys(profile, str(original)), _keys(profile, str(copy))
    assert relative == absolute == copied
    assert str(tmp_path) not in json.dumps(relative)  # no path in the key
    assert relative[0]["source"].startswith("directory:sha256=")

    # the content is what counts: one changed answer in the training set makes another key (the last retain
    # record: the first ones are in retain_perturbed too, whose answer would then differ, which is refused)
    lines = (copy / "retain90.json").read_text().splitlines()
    last = json.loads(lines[-1])
    lines[-1] = json.dumps({**last, "answer": last["answer"] + " Indeed."})
    (copy / "retain90.json").write_text("\n".join(lines) + "\n")
    changed = _keys(profile, str(copy))
    assert changed[0] != relative[0] and changed[1] != relative[1]
    # ...and one changed perturbed answer changes the evaluation key of its split only
    lines = (original / "forget10_perturbed.json").read_text().splitlines()
    first = json.loads(lines[0])
    lines[0] = json.dumps({**first, "perturbed_answer": ["Something else entirely.", *first["perturbed_answer"][1:]]})
    (original / "forget10_perturbed.json").write_text("\n".join(lines) + "\n")
    edited = _keys(profile, "data")[2]
    assert edited["forget"] != relative[2]["forget"] and edited["retain"] == relative[2]["retain"]


def test_names_and_relative_strings_are_not_taken_for_directories(tmp_path, monkeypatch):
    """"synthetic", a hub id or a label such as "records" keep their key even beside a folder of that name."""
    monkeypatch.chdir(tmp_path)
    records = synthetic_benchmark(2, 2, "forget10", 0).full
    for name in ("synthetic", "records", "locuslab/TOFU"):
        (tmp_path / name).mkdir(parents=True)
        assert records_info(name, records)["source"] == name
