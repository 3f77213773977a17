"""open-unlearning's result files, both ways: the published Llama-3.2-1B logs (forget_quality, privleak and
the other aggregates recomputed from their per-item values; the retain log as our reference), and a round
trip of the tiny model's evaluation through TOFU_EVAL.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from palu_perta import evaluation, interop
from palu_perta.data import synthetic_benchmark
from palu_perta.evaluation import evaluate, load_retain_reference, summarise
from palu_perta.interop import from_open_unlearning, open_unlearning_keys
from palu_perta.metrics import forget_quality
from palu_perta.models import load_model

OU_LOGS = Path(__file__).resolve().parents[2] / "shared" / "ou_logs"  # beside the checkout, like ../shared/tofu
RETAIN = "tofu_Llama-3.2-1B-Instruct_retain99"
FULL = "tofu_Llama-3.2-1B-Instruct_full_evals_forget01"
PUBLISHED_FQ = 0.006760732303569208  # the full model on forget01 vs retain99, as published


@pytest.fixture(scope="module")
def ou_logs() -> Path:
    """The published open-unlearning logs beside the checkout; tests that need them are skipped without."""
    if not all((OU_LOGS / name / "TOFU_EVAL.json").is_file() for name in (RETAIN, FULL)):
        pytest.skip(f"open-unlearning logs not found at {OU_LOGS} (set up ../shared/ou_logs to run these tests)")
    return OU_LOGS


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------------------
# the published logs


def test_published_forget_quality_is_the_ks_test_of_the_logged_truth_ratios(ou_logs):
    def ratios(name: str) -> list[float]:
        by_index = _read(ou_logs / name / "TOFU_EVAL.json")["forget_truth_ratio"]["value_by_index"]
        return [value["score"] for value in by_index.values()]

    full, retain = ratios(FULL), ratios(RETAIN)
    assert len(full) == len(retain) == 40  # forget01
    fq = forget_quality(full, retain)
    assert fq == pytest.approx(_read(ou_logs / FULL / "TOFU_SUMMARY.json")["forget_quality"], rel=1e-6)
    assert fq == pytest.approx(_read(ou_logs / FULL / "TOFU_EVAL.json")["forget_quality"]["agg_value"], rel=1e-6)
    assert fq == pytest.approx(PUBLISHED_FQ, rel=1e-6)


def test_retain_log_is_a_reference_and_summarise_reproduces_the_published_summary(ou_logs):
    retain_file = ou_logs / RETAIN / "TOFU_EVAL.json"
    for reference in (retain_file, ou_logs / RETAIN, _read(retain_file)):  # file, directory, content
        ref = load_retain_reference(reference, "0123456789abcdef", "forget01", expected_n=40)
        assert len(ref["splits"]["forget"]) == 40
        assert ref["mia_auc"]["mia_min_k"] == pytest.approx(0.470625)
    # the full model's per-item values from its log, scored against the retain log
    per_item = from_open_unlearning(_read(ou_logs / FULL / "TOFU_EVAL.json"))
    summary = summarise(per_item, retain_file)
    assert summary["forget_quality"] == pytest.approx(PUBLISHED_FQ, rel=1e-6)
    assert summary["meta"]["privleak_reference_auc"] == pytest.approx(0.470625)
    published = _read(ou_logs / FULL / "TOFU_SUMMARY.json")
    shared = published.keys() & set(open_unlearning_keys())
    assert shared >= {"model_utility", "privleak", "mia_min_k", "extraction_strength", "forget_Q_A_ROUGE"}
    for key in shared:  # every aggregate we compute, recomputed from open-unlearning's per-item values
        assert summary[key] == pytest.approx(published[key], rel=1e-9), key
    log = _read(ou_logs / FULL / "TOFU_EVAL.json")  # and those of the metrics computed on the way
    for key in open_unlearning_keys():
        assert summary[key] == pytest.approx(log[key]["agg_value"], rel=1e-9), key
    # a forget set of another size is refused, saying what could be checked
    with pytest.raises(ValueError, match="only the number of forget items is checked"):
        load_retain_reference(retain_file, "0123456789abcdef", "forget05", expected_n=200)


# ---------------------------------------------------------------------------------------
# the tiny model, through open-unlearning's files and back


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model's matrices are too small for threads to help
    try:
        model, tokenizer = load_model("tiny", device="cpu")
        bench = synthetic_benchmark(n_authors=4, qa_per_author=3, forget_split="forget10", n_holdout_authors=1,
                                    n_world_facts=4)
        out = tmp_path_factory.mktemp("eval")
        res = evaluate(model, tokenizer, bench, max_new_tokens=6, batch_size=16, out_dir=out, progress=False)
    finally:
        torch.set_num_threads(threads)
    return res, out


def test_evaluate_writes_open_unlearning_files_that_read_back(result):
    res, out = result
    log, ou_summary = _read(out / "TOFU_EVAL.json"), _read(out / "TOFU_SUMMARY.json")
    assert sorted(log) == open_unlearning_keys()
    for key in log:  # the aggregates are ours, under open-unlearning's names
        assert log[key]["agg_value"] == res[key], key
        assert ou_summary.get(key) == res[key], key
    splits = res["per_item"]["splits"]
    # the nesting of the published logs
    first = splits["forget"][0]
    assert log["forget_Q_A_Prob"]["value_by_index"]["0"] == {"prob": first["prob"],
                                                            "avg_loss": pytest.approx(-np.log(first["prob"]))}
    perturbed = log["retain_Q_A_PERT_Prob"]["value_by_index"]["1"]
    assert perturbed["prob"] == splits["retain"][1]["perturbed_probs"]
    assert len(perturbed["avg_loss"]) == len(perturbed["prob"])
    assert log["wf_Q_A_Prob_normalised"]["value_by_index"]["0"] == {"prob": splits["world_facts"][0]["prob_normalised"]}
    assert log["ra_Truth_Ratio"]["value_by_index"]["2"] == {"score": splits["real_authors"][2]["truth_ratio"]}
    assert log["forget_Q_A_ROUGE"]["value_by_index"]["0"]["generation"] == splits["forget"][0]["generation"]
    assert log["mia_min_k"]["auc"] == res["mia_min_k"]
    assert len(log["mia_min_k"]["holdout"]["value_by_index"]) == len(splits["holdout"])
    assert log["forget_quality"] == {"agg_value": None} and "forget_quality" not in ou_summary
    # each agg_value is the aggregate of the per-item values written beside it
    for key in ("forget_Q_A_Prob", "retain_Q_A_PARA_Prob", "ra_Q_A_Prob_normalised", "exact_memorization"):
        values = [v.get("prob", v.get("score")) for v in log[key]["value_by_index"].values()]
        assert log[key]["agg_value"] == pytest.approx(np.mean(values)), key
    # read back as a retain reference: our forget truth ratios, checked by count only
    ref = load_retain_reference(out / "TOFU_EVAL.json", res["per_item"]["forget_hash"], "forget10",
                                expected_n=len(splits["forget"]))
    assert [r["truth_ratio"] for r in ref["splits"]["forget"]] == [r["truth_ratio"] for r in splits["forget"]]
    assert ref["mia_auc"]["mia_min_k"] == res["mia_min_k"]
    again = summarise(res["per_item"], out / "TOFU_EVAL.json")
    assert again["forget_quality"] == 1.0 and again["privleak"] == pytest.approx(0.0)
    # the whole log back into our per-item shape gives our summary again
    back = summarise(from_open_unlearning(log))
    assert back["forget_quality"] is None  # no reference given
    for key in set(open_unlearning_keys()) - {"forget_quality"} | {"wf_accuracy"}:
        assert back[key] == pytest.approx(res[key], rel=1e-12, abs=1e-15), key
    # a directory holding both formats: ours is read (it carries the forget hash)
    assert load_retain_reference(out)["forget_hash"] == res["per_item"]["forget_hash"]


def test_files_of_neither_format_are_refused(tmp_path):
    for content in ({"model_utility": 0.5, "forget_quality": 0.1},  # a TOFU_SUMMARY.json: no per-item values
                    {"something": {"else": 1}}, [1, 2]):
        path = tmp_path / "x.json"
        path.write_text(json.dumps(content))
        with pytest.raises(ValueError, match="not an evaluation result.*TOFU_EVAL.json"):
            load_retain_reference(path)
    with pytest.raises(ValueError, match="no usable per-item forget truth ratios"):
        load_retain_reference({"model_utility": {"agg_value": 0.5}, "forget_quality": {"agg_value": None}})
    with pytest.raises(FileNotFoundError, match="neither per_item.json nor"):
        load_retain_reference(tmp_path)


def test_key_tables_agree_with_the_evaluation():
    # open-unlearning has no neighbour split: its files carry every other split of ours
    assert interop.PREFIX == {k: v for k, v in evaluation.PREFIX.items() if k != evaluation.NEIGHBOUR}
    assert set(interop.MIA_ATTACKS) == set(evaluation.MIA_KEYS)
    assert interop.QA_SPLITS == evaluation.QA_SPLITS
