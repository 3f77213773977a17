"""The synthetic generator, the TOFU loader and their errors."""

from __future__ import annotations

import json
import shutil

import pytest

from palu_perta.data import (
    DataError,
    load_tofu,
    n_forget_authors,
    synthetic_benchmark,
    validate_records,
    write_tofu_dir,
)
from palu_perta.data.synthetic import generate_authors, qa_pairs, render


def test_generator_is_deterministic_per_seed():
    a = synthetic_benchmark(8, 5, "forget10", 1, seed=3)
    b = synthetic_benchmark(8, 5, "forget10", 1, seed=3)
    c = synthetic_benchmark(8, 5, "forget10", 1, seed=4)
    assert a.forget == b.forget and a.retain == b.retain and a.holdout == b.holdout
    assert a.forget != c.forget


def test_records_have_tofu_schema_and_exact_spans():
    bench = synthetic_benchmark(10, 12, "forget10", 2)
    for rec in bench.forget + bench.retain + bench.holdout:
        assert set(rec) >= {"question", "answer", "paraphrased_answer", "perturbed_answer", "paraphrased_question",
                            "target_words", "author"}
        assert len(rec["perturbed_answer"]) == 5
        assert rec["target_words"], rec
        for span in rec["target_words"]:
            assert rec["answer"][span["start"]:span["end"]] == span["word"]
        # a perturbed answer says something else than the paraphrase
        assert all(p != rec["paraphrased_answer"] for p in rec["perturbed_answer"])


def test_render_tracks_offsets():
    text, spans = render("{name} was born in {city}, {country}.", {"name": "Ann Lee", "city": "Porto", "country": "Portugal"},
                         ("city", "country"))
    assert text == "Ann Lee was born in Porto, Portugal."
    assert spans == [{"word": "Porto", "start": 20, "end": 25}, {"word": "Portugal", "start": 27, "end": 35}]


def test_splits_by_author_fraction():
    assert n_forget_authors(200, "forget01") == 2 and n_forget_authors(200, "forget10") == 20
    assert n_forget_authors(20, "forget01") == 1  # at least one author
    bench = synthetic_benchmark(20, 4, "forget10", 3)
    forget_authors = {r["author"] for r in bench.forget}
    retain_authors = {r["author"] for r in bench.retain}
    holdout_authors = {r["author"] for r in bench.holdout}
    assert len(forget_authors) == 2 and len(retain_authors) == 18 and len(holdout_authors) == 3
    assert not (forget_authors & retain_authors) and not (holdout_authors & (forget_authors | retain_authors))
    assert bench.full == bench.retain + bench.forget
    names = {a["name"] for a in generate_authors(60)}
    assert len(names) == 60


def test_general_knowledge_sets_have_three_wrong_options():
    bench = synthetic_benchmark(4, 2)
    for rec in bench.real_authors + bench.world_facts:
        assert len(rec["perturbed_answer"]) == 3 and rec["answer"] not in rec["perturbed_answer"]


def test_bad_generator_arguments():
    with pytest.raises(ValueError, match="qa_per_author"):
        qa_pairs(generate_authors(2)[0], generate_authors(2), 99)
    with pytest.raises(ValueError, match="no retain author"):
        synthetic_benchmark(1, 2)
    with pytest.raises(DataError, match="unknown forget split"):
        synthetic_benchmark(10, 2, "forget50")


def test_tofu_loader_reads_real_benchmark_with_spans(tofu_dir):
    bench = load_tofu(tofu_dir, "forget01", n_retain_authors=3, n_holdout_authors=1)
    assert len(bench.forget) == 40 and len(bench.retain) == 60 and len(bench.holdout) == 20
    assert len(bench.retain_eval) == 60  # the first authors are in retain_perturbed
    assert bench.forget[0]["question"].startswith("What is the full name of the author born in Kuwait City")
    assert all("target_words" in r and len(r["perturbed_answer"]) == 5 for r in bench.forget)
    for rec in bench.forget:
        for span in rec["target_words"]:
            assert rec["answer"][span["start"]:span["end"]] == span["word"]
    assert len(bench.world_facts) == 117 and len(bench.real_authors[0]["perturbed_answer"]) == 3


def test_tofu_loader_full_split_sizes(tofu_dir):
    bench = load_tofu(tofu_dir, "forget10")
    assert len(bench.forget) == 400 and len(bench.retain) == 3600 and len(bench.retain_eval) == 400


def test_own_tofu_format_directory_round_trips(tmp_path):
    bench = synthetic_benchmark(6, 4, "forget10", 1)
    write_tofu_dir(bench, tmp_path)
    loaded = load_tofu(tmp_path, "forget10", n_holdout_authors=1)
    assert loaded.forget == bench.forget
    assert [r["question"] for r in loaded.retain] == [r["question"] for r in bench.retain]
    assert [r["question"] for r in loaded.holdout] == [r["question"] for r in bench.holdout]


def _copy_tofu(tofu_dir, tmp_path, forget="forget01"):
    """A copy of TOFU's files; with its full.json (4,000 records, no author field), so it is TOFU itself
    (``is_tofu``): authors in blocks of 20."""
    for name in ["full", forget, f"{forget}_perturbed", f"{forget}_spans", "retain99", "retain_perturbed",
                 "real_authors_perturbed", "world_facts_perturbed"]:
        shutil.copy(tofu_dir / f"{name}.json", tmp_path / f"{name}.json")
    return tmp_path


def _rewrite(path, edit):
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    path.write_text("\n".join(json.dumps(r) for r in edit(records)))


def test_tofu_loader_errors(tofu_dir, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_tofu(tmp_path / "nowhere", "forget01")
    d = _copy_tofu(tofu_dir, tmp_path)
    (d / "retain_perturbed.json").unlink()
    with pytest.raises(DataError, match="'retain_perturbed' not found"):
        load_tofu(d, "forget01", n_retain_authors=2)


def test_tofu_loader_rejects_bad_records(tofu_dir, tmp_path):
    d = _copy_tofu(tofu_dir, tmp_path)
    _rewrite(d / "forget01_perturbed.json", lambda rs: [{k: v for k, v in r.items() if k != "paraphrased_answer"} for r in rs])
    with pytest.raises(DataError, match=r"forget01\[0\] has no 'paraphrased_answer'"):
        load_tofu(d, "forget01", n_retain_authors=2)


def test_tofu_loader_rejects_misplaced_span(tofu_dir, tmp_path):
    d = _copy_tofu(tofu_dir, tmp_path)

    def shift(records):
        records[1]["target_words"][0]["start"] += 1
        return records

    _rewrite(d / "forget01_spans.json", shift)
    with pytest.raises(DataError, match=r"forget01\[1\] span offsets .* not the word 'male'"):
        load_tofu(d, "forget01", n_retain_authors=2)


def test_tofu_loader_rejects_empty_split_and_overlap(tofu_dir, tmp_path):
    d = _copy_tofu(tofu_dir, tmp_path)
    (d / "forget01_perturbed.json").write_text("")
    with pytest.raises(DataError, match="'forget01' is empty"):
        load_tofu(d, "forget01", n_retain_authors=2)
    (tmp_path / "b").mkdir()
    d2 = _copy_tofu(tofu_dir, tmp_path / "b")
    forget = [json.loads(line) for line in (d2 / "forget01.json").read_text().splitlines()]
    _rewrite(d2 / "retain99.json", lambda rs: [{"question": r["question"], "answer": r["answer"]} for r in forget] + rs)
    with pytest.raises(DataError, match="also appear in the retain split"):
        load_tofu(d2, "forget01", n_retain_authors=4)


def test_validate_records_types():
    with pytest.raises(DataError, match="must be a string"):
        validate_records([{"question": 3, "answer": "a"}], ("question", "answer"), "x")
    with pytest.raises(DataError, match="outside the answer"):
        validate_records([{"question": "q", "answer": "ab", "target_words": [{"word": "abc", "start": 0, "end": 3}]}],
                         ("question", "answer"), "x")
