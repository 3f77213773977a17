"""Where PALU's sensitive spans come from (issue 22): labels, estimates, a file, or a clear error; never a
silent run that forgets nothing. On the smoke benchmark with its span labels removed."""

from __future__ import annotations

import dataclasses
import json

import pytest

from palu_perta import cli, pipeline, spans
from palu_perta.config import get_profile
from palu_perta.data import synthetic_benchmark, write_tofu_dir
from palu_perta.models import load_model
from palu_perta.unlearn import (
    BaseModel,
    UnlearnConfig,
    needs_spans,
    plan_spans,
    resolve_spans,
    spans_provenance,
    unlearn,
)

FAST = dict(epochs=1, learning_rate=2e-3, batch_size=4, per_device_batch_size=4, bf16=False, warmup_ratio=0.0)


def _unlabelled(records):
    return [{k: v for k, v in r.items() if k != "target_words"} for r in records]


@pytest.fixture(scope="module")
def smoke():
    """The smoke benchmark (labelled), the same data without labels, the smoke target and its base."""
    profile = get_profile("smoke")
    bench = pipeline.benchmark(profile)
    refs = pipeline.reference_models(profile, bench, progress=False)
    target, tokenizer = load_model(str(refs.target), seed=profile.seed)
    unlabelled = dataclasses.replace(bench, forget=_unlabelled(bench.forget))
    return bench, unlabelled, target, tokenizer, BaseModel(refs.base, profile.seed)


def _spans_file(path, entries):
    path.write_text("\n".join(json.dumps(e) for e in entries) + "\n")
    return path


# ------------------------------------------------------------------------------------ (a) default


def test_default_estimates_spans_when_no_record_is_labelled_and_says_so(smoke):
    bench, unlabelled, target, tokenizer, base = smoke
    logs = []
    records, prov = resolve_spans(unlabelled.forget, tokenizer, target=target, base=base, log=logs.append)
    assert prov["source"] == "auto" and prov["estimated_records"] == prov["records"] == len(bench.forget)
    assert 0 < prov["marked_tokens"] <= prov["answer_tokens"]
    assert prov["margin"] == spans.DEFAULT_MARGIN and prov["base"] == "tiny"
    assert all(r["target_words"] for r in records)
    assert len(logs) == 1
    line = logs[0]
    for words in ("no span labels", "estimated", "2 nats", "'tiny'",
                  f"{prov['marked_tokens']} of {prov['answer_tokens']} answer tokens", f"{len(records)} forget records"):
        assert words in line, (words, line)
    # the same estimate as palu_perta.spans computes
    expected = spans.automatic_spans(target, base.load(), tokenizer, unlabelled.forget)
    assert [r["target_words"] for r in records] == [r["target_words"] for r in expected]


def test_default_keeps_labels_quietly_and_estimates_only_the_unlabelled_records(smoke):
    bench, unlabelled, target, tokenizer, base = smoke
    logs = []
    records, prov = resolve_spans(bench.forget, tokenizer, target=target, base=base, log=logs.append)
    assert prov["source"] == "labels" and records == bench.forget and logs == []
    mixed = [*bench.forget[:2], {**bench.forget[2], "target_words": []}, *bench.forget[3:]]
    records, prov = resolve_spans(mixed, tokenizer, target=target, base=base, log=logs.append)
    assert prov["source"] == "labels+auto" and prov["estimated_records"] == 1
    assert [r["target_words"] for i, r in enumerate(records) if i != 2] == \
        [r["target_words"] for i, r in enumerate(bench.forget) if i != 2]
    assert records[2]["target_words"] and "1 of 6 forget records have no span labels" in logs[0]


def test_estimates_need_the_base_model(smoke):
    _, unlabelled, target, tokenizer, _ = smoke
    with pytest.raises(ValueError, match="pass base="):
        resolve_spans(unlabelled.forget, tokenizer, target=target, log=None)


# ------------------------------------------------------------------------------------ (b) labels


@pytest.mark.parametrize("strip", [_unlabelled, lambda recs: [{**r, "target_words": []} for r in recs]])
def test_labels_are_required_on_every_record_with_the_fix_named(smoke, strip):
    bench, *_ = smoke
    with pytest.raises(ValueError) as err:
        plan_spans(strip(bench.forget), "labels")
    message = str(err.value)
    assert f"{len(bench.forget)} of {len(bench.forget)} forget records have no span labels" in message
    assert "--spans auto" in message and "record 0" in message
    one = [*bench.forget[:3], _unlabelled(bench.forget[3:4])[0], *bench.forget[4:]]
    with pytest.raises(ValueError, match=r"1 of 6 forget records .*record 3"):
        plan_spans(one, "labels")
    assert plan_spans(bench.forget, "labels").source == "labels"


# ------------------------------------------------------------------------------------ (c) a file


def test_a_spans_file_is_merged_by_question(smoke, tmp_path):
    bench, unlabelled, target, tokenizer, _ = smoke
    entries = [{"question": r["question"], "target_words": r["target_words"]} for r in reversed(bench.forget)]
    entries.append({"question": "a question of another split", "target_words": []})  # extra entries are fine
    logs = []
    records, prov = resolve_spans(unlabelled.forget, tokenizer, str(_spans_file(tmp_path / "s.jsonl", entries)),
                                  log=logs.append)
    assert [r["target_words"] for r in records] == [r["target_words"] for r in bench.forget]
    assert prov["source"] == "file" and prov["file"].endswith("s.jsonl") and prov["estimated_records"] == 0
    assert "from " in logs[0] and "s.jsonl" in logs[0]
    # one JSON array (TOFU's format) works too
    array = tmp_path / "s.json"
    array.write_text(json.dumps(entries))
    assert resolve_spans(unlabelled.forget, tokenizer, array, log=None)[0] == records


def test_a_forget_question_missing_from_the_file_is_an_error(smoke, tmp_path):
    bench, unlabelled, *_ = smoke
    entries = [{"question": r["question"], "target_words": r["target_words"]} for i, r in enumerate(bench.forget) if i != 3]
    with pytest.raises(ValueError) as err:
        plan_spans(unlabelled.forget, _spans_file(tmp_path / "s.jsonl", entries))
    assert "no entry for forget record 3" in str(err.value) and bench.forget[3]["question"] in str(err.value)
    bad_offsets = [{**e, "target_words": [{"word": "nope", "start": 0, "end": 4}]} for e in entries[:1]] + entries[1:]
    bad_offsets.append({"question": bench.forget[3]["question"], "target_words": []})
    with pytest.raises(ValueError, match="not the word 'nope'"):
        plan_spans(unlabelled.forget, _spans_file(tmp_path / "t.jsonl", bad_offsets))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plan_spans(unlabelled.forget, tmp_path / "missing.json")


# ------------------------------------------------------------------------------------ (d) empty spans


def test_a_record_left_without_a_sensitive_token_is_refused_with_its_index(smoke, tmp_path):
    bench, unlabelled, target, tokenizer, base = smoke
    entries = [{"question": r["question"], "target_words": [] if i == 2 else r["target_words"]}
               for i, r in enumerate(bench.forget)]
    with pytest.raises(ValueError) as err:
        resolve_spans(unlabelled.forget, tokenizer, _spans_file(tmp_path / "s.jsonl", entries), log=None)
    message = str(err.value)
    assert "forget record 2" in message and bench.forget[2]["question"] in message
    assert "no sensitive token" in message and "--spans FILE" in message
    # estimates that mark nothing: the first record is named, with the margin to lower
    with pytest.raises(ValueError, match=r"forget record 0 .*lower the margin"):
        resolve_spans(unlabelled.forget, tokenizer, "auto", target=target, base=base, margin=1e9, log=None)


# ------------------------------------------------------------------------------------ which methods, cache keys


def test_only_span_reading_losses_resolve_spans():
    assert needs_spans(UnlearnConfig(method="palu"))
    assert needs_spans(UnlearnConfig(method="palu", hyper={"temporal": "sensitive"}))
    assert not needs_spans(UnlearnConfig(method="palu", hyper={"temporal": "answer"}))
    for method in ("ga", "graddiff", "npo", "simnpo", "me_gd", "pdu", "undial", "idk_nll", "idk_dpo"):
        assert not needs_spans(UnlearnConfig(method=method)), method


def test_labels_estimates_and_files_never_share_a_cache_key(smoke, tmp_path):
    bench, unlabelled, *_ = smoke
    entries = [{"question": r["question"], "target_words": r["target_words"]} for r in bench.forget]
    labels = plan_spans(bench.forget).key(base="tiny")
    keys = [plan_spans(bench.forget, "auto").key(base="tiny"),
            plan_spans(bench.forget, "auto", margin=3.0).key(base="tiny"),
            plan_spans(unlabelled.forget).key(base="tiny"),  # estimated because unlabelled: the same estimate
            plan_spans(unlabelled.forget, _spans_file(tmp_path / "s.jsonl", entries)).key()]
    assert labels == {}  # entries made with labels keep the keys they had before spans could be chosen
    assert keys[0] != keys[1] and keys[0] == keys[2] and keys[3]["source"] == "file"
    assert len({json.dumps(k, sort_keys=True) for k in [labels, *keys]}) == 4


# ------------------------------------------------------------------------------------ (e) unlearning


def test_palu_on_unlabelled_data_forgets_from_its_first_step(smoke, tmp_path):
    _, unlabelled, target, _, base = smoke
    target_dir = target.name_or_path
    model, tokenizer = load_model(str(target_dir))  # a fresh copy: unlearning changes it
    logs = []
    cfg = UnlearnConfig(method="palu", hyper={"top_k": 5, "first_n": 2}, **FAST)
    result = unlearn(model, tokenizer, unlabelled, cfg, tmp_path, progress=False, resume=False, base=base,
                     log=logs.append)
    logged = [h for h in result.history if "loss" in h]
    assert logged[0]["loss_forget"] > 0  # with no spans the onset mask is empty and this is exactly 0
    assert result.spans["source"] == "auto" and result.spans["marked_tokens"] > 0 and len(logs) == 1
    saved = json.loads((tmp_path / "spans.json").read_text())
    assert saved["message"] == logs[0] and len(saved["records"]) == len(unlabelled.forget)
    assert spans_provenance(tmp_path)["source"] == "auto" and "records" not in spans_provenance(tmp_path)
    # the run's own spans.json is a spans file: the same spans again, from the file
    again, prov = resolve_spans(unlabelled.forget, tokenizer, tmp_path / "spans.json", log=None)
    assert [r["target_words"] for r in again] == [r["target_words"] for r in saved["records"]]


def test_methods_that_read_no_spans_compute_none(tiny, smoke, tmp_path, monkeypatch):
    _, unlabelled, *_ = smoke
    model, tokenizer = tiny

    def forbidden(*args, **kwargs):
        raise AssertionError("spans were estimated for a loss that does not read them")

    monkeypatch.setattr(spans, "automatic_spans", forbidden)
    small = dataclasses.replace(unlabelled, forget=unlabelled.forget[:4])
    result = unlearn(model, tokenizer, small, UnlearnConfig(method="ga", **FAST), tmp_path, progress=False, resume=False)
    assert result.spans is None and not (tmp_path / "spans.json").exists()


# ------------------------------------------------------------------------------------ (f) command line


# the command line's error contract and its no-work fixture, as tests/test_cli_errors.py defines them
from .test_cli_errors import _error, no_work  # noqa: E402,F401 (no_work is a fixture)


def test_bad_spans_options_are_one_line_before_any_work(smoke, no_work, capsys):
    bench, *_ = smoke
    other = synthetic_benchmark(8, 3, "forget10")  # authors enough for the smoke profile's retain/holdout split
    data = write_tofu_dir(other, no_work / "data")
    (data / "forget10_spans.json").unlink()  # no labels
    n = len(other.forget)
    (no_work / "notjson.json").write_text("question: what?\n")
    (no_work / "short.jsonl").write_text(json.dumps({"question": bench.forget[0]["question"],
                                                     "target_words": bench.forget[0]["target_words"]}) + "\n")
    (no_work / "notspans.json").write_text(json.dumps([{"question": "q", "spans": []}]))
    cases = [
        (["--spans", "nope.json"], ["nope.json", "does not exist", "'auto', 'labels'"]),
        (["--spans", "notjson.json"], ["notjson.json", "line 1 is not valid JSON"]),
        (["--spans", "short.jsonl"], ["short.jsonl", "no entry for forget record 1", bench.forget[1]["question"]]),
        (["--spans", "notspans.json"], ["notspans.json", "entry 0", "'target_words' list"]),
        (["--spans", "labels", "--data", "data"], [f"{n} of {n} forget records have no span labels", "--spans auto"]),
        (["--spans", "auto", "--span-margin", "nan"], ["margin", "finite"]),
    ]
    for argv, words in cases:
        err = _error(["unlearn", *argv], capsys)
        for word in words:
            assert word in err, (word, err)


def test_unlearn_command_records_its_spans_and_keys_them(smoke, tmp_path, monkeypatch, capsys):
    _, _, target, _, _ = smoke
    monkeypatch.setenv("PALU_PERTA_ARTIFACTS", str(tmp_path / "artifacts"))
    argv = ["unlearn", "--profile", "smoke", "--no-progress", "--target", target.name_or_path]

    def run(*extra):
        assert cli.main([*argv, *extra]) == 0
        out = capsys.readouterr().out
        return out, next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("unlearned (palu)"))

    out, auto = run("--spans", "auto")
    assert "sensitive spans: estimated for every record" in out
    entry = json.loads((tmp_path / "artifacts" / "unlearned" / auto.rsplit("/", 1)[1] / "artifact.json").read_text())
    assert entry["config"]["spans"] == {"source": "auto", "margin": 2.0, "base": "tiny"}
    assert spans_provenance(auto)["source"] == "auto"
    out, again = run("--spans", "auto")
    assert again == auto and "(cached run)" in out  # cached: the spans line is repeated, nothing retrained
    out, labels = run()
    assert labels != auto and "sensitive spans" not in out  # the data's labels: the key of old entries, no notice
    assert spans_provenance(labels)["source"] == "labels"
