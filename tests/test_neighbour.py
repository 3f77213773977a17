"""The neighbour split: retain answers that share a fact with a forget answer (what forgetting one
author must not take from another), found in the data and scored as its own metric group."""

from __future__ import annotations

import numpy as np
import pytest

from palu_perta.config import get_profile
from palu_perta.data import load_benchmark, load_tofu, neighbour_records, shared_facts, synthetic_benchmark
from palu_perta.data.synthetic import SHARED_FACT_GROUPS, generate_authors, share_facts
from palu_perta.evaluation import NEIGHBOUR_KEYS, evaluate
from palu_perta.models import load_model
from palu_perta.training import records_info


def test_facts_are_the_forget_spans_without_generic_words_and_numbers():
    forget = [{"question": "q", "answer": "a", "target_words": [
        {"word": "Porto"}, {"word": "male"}, {"word": "1961"}, {"word": "5th of May, 1950"}, {"word": "ab"},
        {"word": "Golden Quill Award"}, {"word": " Porto "}]}]
    assert shared_facts(forget) == ["Golden Quill Award", "Porto"]


def test_a_neighbour_shares_a_whole_word_fact_with_the_same_case():
    forget = [{"question": "Where?", "answer": "In Porto.", "target_words": [{"word": "Porto"}, {"word": "baker"}]}]
    candidates = [{"question": "a", "answer": "She was born in Porto, Portugal."},
                  {"question": "b", "answer": "She lives in Portofino."},  # not a whole word
                  {"question": "c", "answer": "Her father was a Baker."},  # another case: a name, not the job
                  {"question": "d", "answer": "A baker and a porto."},
                  {"question": "Where?", "answer": "In Porto."}]  # the forget question itself
    found = neighbour_records(forget, candidates)
    assert [(r["question"], r["shared_facts"]) for r in found] == [("a", ["Porto"]), ("d", ["baker"])]


def test_a_population_drops_facts_most_authors_state():
    forget = [{"question": "q", "answer": "a", "target_words": [{"word": "narratives"}, {"word": "Porto"}]}]
    population = [[{"answer": "rich narratives"}]] * 3 + [[{"answer": "born in Porto"}], [{"answer": "x"}]]
    assert shared_facts(forget, population, max_author_share=0.5) == ["Porto"]
    assert shared_facts(forget, population, max_author_share=0.6) == ["narratives", "Porto"]


def test_cpu_profile_has_neighbours_among_all_retain_authors():
    bench = load_benchmark(get_profile("cpu"))
    retain_questions = {r["question"] for r in bench.retain}
    forget_facts = set(shared_facts(bench.forget))
    assert len(bench.neighbour) == 30  # the natural draw shares 30 of the 180 retain answers' facts
    for rec in bench.neighbour:
        assert rec["question"] in retain_questions
        assert rec["shared_facts"] and set(rec["shared_facts"]) <= forget_facts
        assert all(f in rec["answer"] for f in rec["shared_facts"])
        assert {"paraphrased_answer", "perturbed_answer"} <= rec.keys()
    assert bench.splits()["neighbour"] is bench.neighbour
    assert bench.summary()["neighbour"] == 30


def test_no_neighbour_no_split():
    bench = synthetic_benchmark(n_authors=4, qa_per_author=1, n_holdout_authors=0, n_world_facts=2)
    bench.neighbour = []
    assert "neighbour" not in bench.splits()


def test_neighbour_share_copies_facts_deterministically_and_only_when_asked():
    authors = generate_authors(20)
    assert share_facts(authors, range(18), range(18, 20), 0.0) == authors
    shared = share_facts(authors, range(18), range(18, 20), 0.5, seed=0)
    assert shared == share_facts(authors, range(18), range(18, 20), 0.5, seed=0)
    changed = [i for i in range(20) if shared[i] != authors[i]]
    assert len(changed) == 9 and all(i < 18 for i in changed)
    for i in changed:  # now shares a whole fact group with a forget author
        assert any(all(shared[i][f] == authors[j][f] for f in g) for j in (18, 19) for g in SHARED_FACT_GROUPS)
        assert shared[i]["father_job"] != shared[i]["mother_job"]
    with pytest.raises(ValueError, match="between 0 and 1"):
        share_facts(authors, range(18), range(18, 20), 1.5)

    natural = load_benchmark(get_profile("cpu"))
    more = load_benchmark(get_profile("cpu").replace(neighbour_share=0.5))
    assert len(more.neighbour) > len(natural.neighbour)
    qa = lambda records: [(r["question"], r["answer"]) for r in records]  # noqa: E731
    assert qa(more.forget) == qa(natural.forget) and qa(more.retain) != qa(natural.retain)  # new data: new fine-tunes
    assert records_info("synthetic", more.full) != records_info("synthetic", natural.full)


def test_real_tofu_neighbours(tofu_dir):
    bench = load_tofu(tofu_dir, "forget01", 20, 0)
    assert len(bench.forget) == 40
    facts = {f for r in bench.neighbour for f in r["shared_facts"]}
    assert bench.neighbour and "narratives" not in facts and "florist" in facts
    assert {r["question"] for r in bench.neighbour} <= {r["question"] for r in bench.retain_eval}


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny", device="cpu")


def test_neighbour_split_is_scored_apart_and_leaves_the_suite_unchanged(tiny):
    model, tokenizer = tiny
    bench = synthetic_benchmark(n_authors=6, qa_per_author=6, forget_split="forget10", n_holdout_authors=1,
                                n_world_facts=4)
    assert bench.neighbour
    splits = bench.splits()
    without = {k: v for k, v in splits.items() if k != "neighbour"}
    with_n = evaluate(model, tokenizer, splits, max_new_tokens=4, batch_size=8, progress=False)
    alone = evaluate(model, tokenizer, without, max_new_tokens=4, batch_size=8, progress=False)
    for key in NEIGHBOUR_KEYS:
        assert alone[key] is None
        assert isinstance(with_n[key], float) and np.isfinite(with_n[key]), key
    for key, value in alone.items():
        if key not in ("per_item", "meta") and key not in NEIGHBOUR_KEYS:
            assert with_n[key] == value, key  # bit-identical: the neighbour split runs in calls of its own
    assert with_n["per_item"]["splits"]["forget"] == alone["per_item"]["splits"]["forget"]
    rows = with_n["per_item"]["splits"]["neighbour"]
    assert len(rows) == len(bench.neighbour) and {"truth_ratio", "paraphrase_prob", "generation"} <= rows[0].keys()
    assert with_n["meta"]["n_items"]["neighbour"] == len(bench.neighbour)
    assert with_n["neighbour_Q_A_ROUGE"] == pytest.approx(np.mean([r["rougeL_recall"] for r in rows]))
