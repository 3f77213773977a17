"""The model-running part of the suite on the tiny model: batching, evaluate(), the CLI, errors."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from palu_perta import cli
from palu_perta.data import synthetic_benchmark
from palu_perta.evaluation import (
    MIA_KEYS,
    evaluate,
    generate_token_ids,
    load_retain_reference,
    score_sequences,
    summarise,
)
from palu_perta.metrics import UTILITY_KEYS
from palu_perta.models import load_model
from palu_perta.tokenization import encode_qa, pad_id

SUMMARY_KEYS = {
    "forget_quality", "model_utility", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_truth_ratio",
    "exact_memorization", "extraction_strength", *MIA_KEYS, "privleak", *UTILITY_KEYS, "wf_accuracy",
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's matrices are too small for threads to help; on a loaded CI machine
    (other jobs on the cores) extra threads only wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny", device="cpu")


@pytest.fixture(scope="module")
def bench():
    return synthetic_benchmark(n_authors=4, qa_per_author=3, forget_split="forget10", n_holdout_authors=1,
                               n_world_facts=4)


@pytest.fixture(scope="module")
def result(tiny, bench, tmp_path_factory):
    model, tokenizer = tiny
    out = tmp_path_factory.mktemp("eval")
    res = evaluate(model, tokenizer, bench, max_new_tokens=6, batch_size=16, out_dir=out, progress=False)
    return res, out


def _examples(tokenizer, bench):
    recs = bench.forget + bench.world_facts
    return [encode_qa(tokenizer, r["question"], a) for r in recs for a in [r["answer"], *r["perturbed_answer"][:2]]]


@pytest.mark.parametrize("share_prompts", [True, False])
def test_batched_scoring_equals_one_at_a_time(tiny, bench, share_prompts):
    model, tokenizer = tiny
    examples = _examples(tokenizer, bench)
    batched = score_sequences(model, examples, pad_id(tokenizer), batch_size=8, share_prompts=share_prompts,
                              progress=False)
    single = score_sequences(model, examples, pad_id(tokenizer), batch_size=1, share_prompts=False, progress=False)
    for a, b, e in zip(batched, single, examples):
        assert len(a.logprobs) == sum(label != -100 for label in e["labels"])
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)
        np.testing.assert_allclose(a.mu, b.mu, atol=1e-5)
        np.testing.assert_allclose(a.var, b.var, atol=1e-5)
        np.testing.assert_array_equal(a.hits, b.hits)


class _PlainLM(torch.nn.Module):
    """A causal LM whose forward takes neither a cache nor ``logits_to_keep``."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids, attention_mask=None, use_cache=False):
        return self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)


def test_scoring_falls_back_for_models_without_cache_arguments(tiny, bench):
    model, tokenizer = tiny
    examples = _examples(tokenizer, bench)[:6]
    with pytest.warns(UserWarning, match="cannot share"):
        plain = score_sequences(_PlainLM(model), examples, pad_id(tokenizer), batch_size=4, progress=False)
    shared = score_sequences(model, examples, pad_id(tokenizer), batch_size=4, progress=False)
    for a, b in zip(plain, shared):
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)


def test_shared_scoring_passes_the_cache_without_a_deprecation(tiny, bench, monkeypatch):
    """transformers 5.x renamed the forward's ``past_key_values`` to ``cache`` (the old name warns, and is
    to be removed in 5.40): prompt sharing passes and reads the cache by the supported name, with no
    warning from the keyword's decorator nor from transformers' logger, and without the fallback."""
    import warnings

    import transformers.utils.generic as generic

    from palu_perta.evaluation import _cache_keyword

    model, tokenizer = tiny
    assert _cache_keyword(model) == "cache"
    logged = []
    monkeypatch.setattr(generic.logger, "warning_once", lambda message, *a, **k: logged.append(message))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*past_key_values.*")
        warnings.filterwarnings("error", message=".*cannot share.*")
        scores = score_sequences(model, _examples(tokenizer, bench)[:6], pad_id(tokenizer), batch_size=4,
                                 progress=False)
    assert len(scores) == 6 and not [m for m in logged if "past_key_values" in str(m)]


def test_scoring_matches_plain_log_softmax(tiny, bench):
    model, tokenizer = tiny
    e = _examples(tokenizer, bench)[0]
    (score,) = score_sequences(model, [e], pad_id(tokenizer), share_prompts=False, progress=False)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([e["input_ids"]])).logits[0, :-1].double(), -1)
    labels = torch.tensor(e["labels"][1:])
    positions = (labels != -100).nonzero().squeeze(1)
    expected = logp[positions, labels[positions]].numpy()
    np.testing.assert_array_equal(score.labels, labels[positions].numpy())
    np.testing.assert_allclose(score.logprobs, expected, atol=1e-5)
    np.testing.assert_array_equal(score.hits, (logp[positions].argmax(-1) == labels[positions]).numpy())
    probs = logp[positions].exp()
    np.testing.assert_allclose(score.mu, (probs * logp[positions]).sum(-1).numpy(), atol=1e-4)


def test_batched_generation_equals_one_at_a_time(tiny, bench):
    model, tokenizer = tiny
    questions = [r["question"] for r in bench.forget + bench.world_facts]
    batched = generate_token_ids(model, tokenizer, questions, max_new_tokens=5, batch_size=8, progress=False)
    single = generate_token_ids(model, tokenizer, questions, max_new_tokens=5, batch_size=1, progress=False)
    assert batched == single
    assert all(1 <= len(ids) <= 5 for ids in batched)


def test_evaluate_returns_every_key_and_writes_files(result, bench):
    res, out = result
    assert SUMMARY_KEYS <= res.keys()
    assert res["forget_quality"] is None  # no retain reference
    for key in SUMMARY_KEYS - {"forget_quality"}:
        assert isinstance(res[key], float) and np.isfinite(res[key]), key
    summary = json.loads((out / "summary.json").read_text())
    per_item = json.loads((out / "per_item.json").read_text())
    assert summary["model_utility"] == pytest.approx(res["model_utility"])
    assert "per_item" not in summary
    assert per_item["forget_split"] == "forget10" and len(per_item["forget_hash"]) == 16
    forget = per_item["splits"]["forget"]
    assert len(forget) == len(bench.forget)
    assert {"generation", "truth_ratio", "prob", "paraphrase_prob", "perturbed_probs", "mia",
            "extraction_strength", "rougeL_recall"} <= forget[0].keys()
    assert set(per_item["mia_auc"]) == set(MIA_KEYS)
    assert summary["meta"]["privleak_reference_auc"] == 0.5


def test_forget_quality_is_one_against_itself(tiny, bench, result):
    model, tokenizer = tiny
    res, out = result
    again = evaluate(model, tokenizer, bench, res, max_new_tokens=6, progress=False)
    assert again["forget_quality"] == 1.0
    assert again["privleak"] == pytest.approx(0.0)
    # from the saved file (or its directory), without running the model
    assert summarise(res["per_item"], out / "per_item.json")["forget_quality"] == 1.0
    assert summarise(res, out)["forget_quality"] == 1.0


def test_retain_results_of_another_forget_split_are_refused(result, tmp_path):
    res, _ = result
    other = copy.deepcopy(res["per_item"])
    other["splits"]["forget"] = other["splits"]["forget"][:1]
    other["forget_split"] = "forget05"
    other["forget_hash"] = "0123456789abcdef"
    path = tmp_path / "per_item.json"
    path.write_text(json.dumps(other))
    with pytest.raises(ValueError, match="another forget set"):
        summarise(res["per_item"], path)
    with pytest.raises(ValueError, match="not an evaluation result"):
        load_retain_reference({"model_utility": 0.5})


def test_one_item_splits_without_holdout(tiny, bench):
    model, tokenizer = tiny
    splits = {name: records[:1] for name, records in bench.splits().items()}
    splits["holdout"] = []
    splits["world_facts"] = [{"question": "What is 1+1?", "answer": "2", "perturbed_answer": ["3"]}]  # 1-token answer
    res = evaluate(model, tokenizer, splits, max_new_tokens=3, progress=False)
    assert all(res[k] is None for k in MIA_KEYS) and res["privleak"] is None
    assert res["forget_truth_ratio"] <= 1.0 and 0.0 <= res["model_utility"] <= 1.0
    assert res["per_item"]["splits"]["world_facts"][0]["prob_normalised"] > 0


def test_misaligned_perturbed_answers_are_refused(tiny, bench):
    model, tokenizer = tiny
    splits = copy.deepcopy(bench.splits())
    splits["retain"][1]["perturbed_answer"] = splits["retain"][1]["perturbed_answer"][:2]
    with pytest.raises(ValueError, match=r"retain\[1\] has 2 perturbed answers"):
        evaluate(model, tokenizer, splits, progress=False)
    splits = copy.deepcopy(bench.splits())
    del splits["forget"][0]["paraphrased_answer"]
    with pytest.raises(ValueError, match="paraphrased_answer"):
        evaluate(model, tokenizer, splits, progress=False)
    with pytest.raises(ValueError, match="world_facts"):
        evaluate(model, tokenizer, {**bench.splits(), "world_facts": []}, progress=False)


def test_model_without_tokenizer_is_refused(tiny, bench):
    model, _ = tiny
    with pytest.raises(ValueError, match="no tokenizer"):
        evaluate(model, None, bench, progress=False)


def test_cli_evaluate(tmp_path, capsys, monkeypatch, bench, result):
    import palu_perta.data

    asked = []
    monkeypatch.setattr(palu_perta.data, "load_benchmark", lambda profile, data, group_by=None: asked.append((profile, data)) or bench)
    out = tmp_path / "cli"
    code = cli.main(["evaluate", "--model", "tiny", "--data", "synthetic", "--profile", "smoke",
                     "--forget-split", "forget05", "--max-new-tokens", "2", "--out", str(out), "--no-progress"])
    assert code == 0
    assert asked[0][0].name == "smoke" and asked[0][0].forget_split == "forget05" and asked[0][1] == "synthetic"
    assert (out / "summary.json").is_file() and (out / "per_item.json").is_file()
    assert "model_utility" in capsys.readouterr().out
    # retain results for other forget questions: a one-line error, exit code 2
    res, _ = result
    other = {**res["per_item"], "forget_hash": "0123456789abcdef"}
    (tmp_path / "other.json").write_text(json.dumps(other))
    code = cli.main(["evaluate", "--model", "tiny", "--retain-results", str(tmp_path / "other.json"),
                     "--out", str(tmp_path / "x"), "--no-progress"])
    assert code == 2
    assert "another forget set" in capsys.readouterr().err


def test_cli_finetune_and_unlearn_errors_before_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PALU_PERTA_ARTIFACTS", str(tmp_path))
    for argv, message in [
        (["unlearn", "--profile", "smoke", "--method", "forgetful"], "method='forgetful' is not known"),
        (["unlearn", "--profile", "smoke", "--hyper", "{top_k: 3}"], "--hyper must be a JSON object"),
        (["unlearn", "--profile", "smoke", "--method", "palu", "--hyper", '{"topk": 3}'], r"palu has no hyperparameter"),
        (["unlearn", "--profile", "smoke", "--budget", '{"learning_rate": -1}'], "learning_rate=-1 is out of range"),
        (["finetune", "--profile", "laptop"], "unknown profile 'laptop'"),
        (["finetune", "--profile", "smoke", "--data", str(tmp_path / "nowhere")], "does not exist"),
    ]:
        assert cli.main(argv + ["--no-progress"]) == 2, argv
        assert message in capsys.readouterr().err, argv
    assert not list(tmp_path.glob("*/*"))  # nothing trained or written


def test_cli_finetune_trains_or_reads_the_cache(capsys):
    from pathlib import Path

    from palu_perta.config import artifacts_root

    assert cli.main(["finetune", "--profile", "smoke", "--role", "retain", "--no-progress"]) == 0
    path = capsys.readouterr().out.split("retain: ")[1].strip()
    assert Path(path).parent == artifacts_root() / "models" and (Path(path) / "model.safetensors").is_file()
    assert cli.main(["finetune", "--profile", "smoke", "--role", "retain", "--no-progress"]) == 0
    assert f"retain: {path}" in capsys.readouterr().out


def test_eval_mode_restores_the_training_flag_even_on_error():
    from palu_perta.evaluation import eval_mode

    model = torch.nn.Sequential(torch.nn.Dropout(0.5))
    model.train()
    with eval_mode(model):
        assert not model.training and not model[0].training
    assert model.training and model[0].training
    with pytest.raises(RuntimeError), eval_mode(model):
        raise RuntimeError("boom")
    assert model.training
    model.eval()
    with eval_mode(model):
        pass
    assert not model.training


def test_requiring_grad_restores_each_parameters_flag_even_on_error():
    from palu_perta.modes import requiring_grad

    layer = torch.nn.Linear(2, 2)
    layer.bias.requires_grad_(False)  # a frozen parameter: its gradient is needed for its importance
    params = dict(layer.named_parameters())
    with requiring_grad(params):
        assert layer.weight.requires_grad and layer.bias.requires_grad
    assert layer.weight.requires_grad and not layer.bias.requires_grad
    with pytest.raises(RuntimeError), requiring_grad(params):
        raise RuntimeError("boom")
    assert layer.weight.requires_grad and not layer.bias.requires_grad
