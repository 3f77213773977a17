"""The plain metric functions, pinned on hand-computed inputs (no model); and answer_perplexity, the one
that runs a model, on the tiny model against a plain forward pass."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from palu_perta import metrics as M


# --- probabilities and truth ratios ------------------------------------------------------


def test_answer_probability_is_length_normalised():
    # exp(mean(log .5, log .125)) = sqrt(.5 * .125) = .25
    assert M.answer_probability([math.log(0.5), math.log(0.125)]) == pytest.approx(0.25)
    assert M.mean_logprob([-1.0, -3.0]) == pytest.approx(-2.0)
    with pytest.raises(ValueError):
        M.mean_logprob([])


def test_perplexity_is_the_inverse_of_the_answer_probability():
    assert M.perplexity([math.log(0.5), math.log(0.125)]) == pytest.approx(4.0)  # 1 / sqrt(.5 * .125)
    assert M.perplexity([math.log(1 / 7)] * 3) == pytest.approx(7.0)  # a uniform guess among 7 tokens
    assert M.perplexity([0.0, 0.0]) == 1.0  # certain of every token
    with pytest.raises(ValueError):
        M.perplexity([])


def test_answer_perplexity_matches_a_plain_forward_on_the_tiny_model(tiny):
    import torch

    from palu_perta.evaluation import answer_perplexity
    from palu_perta.tokenization import prompt_text

    model, tokenizer = tiny
    model.train()  # answer_perplexity scores in eval mode and gives the mode back
    prompts = ["Where was Ann Lee born?", "What does a plumber do?", "Which award did she get?"]
    answers = ["She was born in Porto, Portugal.", "A plumber fixes pipes, taps and", "  "]
    got = answer_perplexity(model, tokenizer, prompts, answers, batch_size=2)
    assert model.training
    model.eval()
    for prompt, answer, value in zip(prompts[:2], answers[:2], got):
        prompt_ids = tokenizer(prompt_text(tokenizer, prompt), add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]  # no EOS: it is not scored
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([prompt_ids + answer_ids])).logits[0].double(), -1)
        start = len(prompt_ids) - 1  # the prompt's last position predicts the answer's first token
        token_logp = logp[start:start + len(answer_ids)].gather(1, torch.tensor(answer_ids)[:, None])
        assert value == pytest.approx(math.exp(-token_logp.mean().item()), rel=1e-4)
    assert math.isnan(got[2])  # an empty answer has nothing to score
    one_by_one = answer_perplexity(model, tokenizer, prompts[::-1], answers[::-1], batch_size=1)[::-1]
    assert one_by_one == pytest.approx(got, rel=1e-4, nan_ok=True)
    with pytest.raises(ValueError, match="one answer per prompt"):
        answer_perplexity(model, tokenizer, prompts, answers[:2])


def test_option_normalised_probability():
    lc = math.log(0.6)
    wrong = [math.log(0.2), math.log(0.1), math.log(0.1)]
    assert M.option_normalised_probability(lc, wrong) == pytest.approx(0.6 / (1.0 + 1e-10), rel=1e-12)
    assert M.option_normalised_probability(lc, wrong, eps=0) == pytest.approx(0.6, rel=1e-12)


def test_truth_ratio_from_known_logprobs():
    # geometric mean of .2 and .05 is .1; over a paraphrase probability of .5: tr = .2
    tr = M.truth_ratio(math.log(0.5), [math.log(0.2), math.log(0.05)])
    assert tr == pytest.approx(0.1 / (0.5 + 1e-10), rel=1e-12)
    assert M.truth_ratio(math.log(0.5), [math.log(0.2), math.log(0.05)], eps=0) == pytest.approx(0.2, rel=1e-12)


def test_truth_ratio_does_not_underflow():
    # probabilities far below float64's range: exact ratio e^-1 without the epsilon;
    # with open-unlearning's epsilon the denominator is 1e-10, as in their code
    assert M.truth_ratio(-2000.0, [-2001.0], eps=0) == pytest.approx(math.exp(-1))
    assert M.truth_ratio(-2000.0, [-2001.0]) == 0.0
    assert M.truth_ratio(-20.0, [-21.0]) == pytest.approx(math.exp(-21) / (math.exp(-20) + 1e-10))


def test_truth_ratio_aggregates():
    # forget: min(tr, 1/tr) -> .5, .5, 1
    assert M.truth_ratio_closer_to_1([0.5, 2.0, 1.0]) == pytest.approx(2 / 3, rel=1e-9)
    # retain/ra/wf: max(0, 1 - tr) -> .8, 0, 1
    assert M.truth_ratio_true_better([0.2, 1.5, 0.0]) == pytest.approx(0.6)
    # a split with one item
    assert M.truth_ratio_closer_to_1([4.0]) == pytest.approx(0.25)
    assert M.truth_ratio_true_better([0.25]) == pytest.approx(0.75)


def test_correct_option_is_top():
    assert M.correct_option_is_top(-1.0, [-2.0, -3.0])
    assert not M.correct_option_is_top(-1.0, [-0.5, -3.0])
    assert not M.correct_option_is_top(-1.0, [-1.0])  # a tie is not a win


# --- ROUGE -------------------------------------------------------------------------------


def test_rouge_recall_and_f1_with_stemmer():
    scores = M.rouge_scores("The cat sat", "the cats sat on the mat")
    # stemming maps cats -> cat: 3 of the reference's 6 unigrams are recalled, LCS = 3
    assert scores["rouge1_recall"] == pytest.approx(0.5)
    assert scores["rougeL_recall"] == pytest.approx(0.5)
    assert scores["rougeL_f1"] == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    assert M.rouge_scores("", "anything")["rougeL_recall"] == 0.0


# --- forget quality, model utility -------------------------------------------------------


def test_forget_quality_ks_pvalue():
    # fully separated samples of 3 and 3: D = 1, exact two-sided p = 2 / C(6, 3) = 0.1
    assert M.forget_quality([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == pytest.approx(0.1)
    same = np.array([0.3, 0.7, 1.2, 0.9])
    assert M.forget_quality(same, same.copy()) == 1.0
    assert M.forget_quality([0.5], [0.5]) == 1.0  # one item each
    with pytest.raises(ValueError):
        M.forget_quality([], [1.0])


def test_model_utility_harmonic_mean():
    assert M.model_utility([0.5] * 9) == pytest.approx(0.5)
    # 9 / (8 * 1 + 1 / 0.5) = 0.9
    assert M.model_utility([1.0] * 8 + [0.5]) == pytest.approx(0.9)
    values = dict(zip(M.UTILITY_KEYS, [0.2, 0.4, 0.5, 0.8, 1.0, 0.25, 0.5, 0.4, 0.2]))
    expected = 9 / sum(1 / v for v in values.values())
    assert M.model_utility(values) == pytest.approx(expected)


def test_model_utility_zero_component_and_errors():
    assert M.model_utility([0.5] * 8 + [0.0]) == 0.0
    with pytest.raises(ValueError, match="9"):
        M.model_utility([0.5] * 8)
    with pytest.raises(ValueError, match="missing"):
        M.model_utility({"retain_Q_A_Prob": 0.5})
    with pytest.raises(ValueError):
        M.model_utility([0.5] * 8 + [-0.1])


def test_item_level_utility_is_model_utility_bit_for_bit():
    """The study's bootstrap computes model utility item by item (report._utility, without scipy's per-call
    checks): it must give exactly what metrics.model_utility gives on the same nine means."""
    from palu_perta import report

    rng = np.random.default_rng(0)
    for _ in range(200):
        columns = {f"{split}:{name}": rng.uniform(0.0, 1.5 if name == "truth_ratio" else 1.0, size=rng.integers(1, 40))
                   for split, names in report.UTILITY_COLUMNS.items() for name in names}
        means = [np.mean(np.maximum(0.0, 1.0 - v)) if key.endswith("truth_ratio") else np.mean(v)
                 for key, v in columns.items()]
        assert report._utility(columns) == M.model_utility(means)
    columns["retain:prob"] = np.zeros(3)  # a zero component: 0, as scipy.stats.hmean gives
    assert report._utility(columns) == 0.0


# --- memorisation ------------------------------------------------------------------------


def test_exact_memorization():
    assert M.exact_memorization([True, False, True, True]) == pytest.approx(0.75)
    assert M.exact_memorization([]) is None


def test_extraction_strength_follows_open_unlearning_loop():
    assert M.extraction_strength([True, True, True]) == 1.0  # k = 0
    assert M.extraction_strength([False, True, True]) == pytest.approx(2 / 3)  # k = 1
    assert M.extraction_strength([False, False, True, True]) == pytest.approx(0.5)  # k = 2
    # no suffix matches: their loop ends at k = n - 1, giving 1 / n
    assert M.extraction_strength([True, True, False]) == pytest.approx(1 / 3)
    # one-token answer: 1 whatever the prediction; empty answer: 0
    assert M.extraction_strength([False]) == 1.0
    assert M.extraction_strength([True]) == 1.0
    assert M.extraction_strength([]) == 0.0


# --- membership inference ----------------------------------------------------------------


def test_min_k_on_known_logprobs():
    lp = [-1.0, -2.0, -3.0, -4.0, -5.0]
    assert M.min_k_score(lp, k=0.4) == pytest.approx(4.5)  # lowest 2 of 5
    assert M.min_k_score([-1.0, -3.0], k=0.4) == pytest.approx(3.0)  # max(1, int(0.8)) = 1
    assert M.min_k_score([-2.5]) == pytest.approx(2.5)  # a one-token answer
    assert M.min_k_score([]) == 0.0


def test_min_k_plus_plus_on_known_statistics():
    # z = (lp - mu) / sqrt(var) = [1, 2]; k = 0.4 of 2 tokens keeps the lowest one
    assert M.min_k_plus_plus_score([-1.0, -2.0], [-3.0, -3.0], [4.0, 0.25]) == pytest.approx(-1.0)
    # variance clamped at 1e-6: z = 1 / 1e-3
    assert M.min_k_plus_plus_score([-1.0], [-2.0], [0.0]) == pytest.approx(-1000.0)


def test_loss_and_zlib_scores():
    lp = [math.log(0.5)] * 4
    assert M.loss_score(lp) == pytest.approx(math.log(2))
    assert len(zlib.compress(b"hello")) == 13
    assert M.zlib_score(lp, "hello") == pytest.approx(math.log(2) / 13)


def test_mia_auc_orientation_and_ties():
    # forget (members) with lower losses than holdout: AUC 1 (open-unlearning: forget still "seen")
    assert M.mia_auc([0.1, 0.2], [1.0, 2.0]) == 1.0
    assert M.mia_auc([1.0, 2.0], [0.1, 0.2]) == 0.0
    # pairs (holdout > forget): h=2: 1 + 0.5 (tie) + 0; h=4: 3 -> 4.5 / 6
    assert M.mia_auc([1.0, 2.0, 3.0], [2.0, 4.0]) == pytest.approx(0.75)
    assert M.mia_auc([1.0, 1.0], [1.0, 1.0, 1.0]) == pytest.approx(0.5)  # all tied
    with pytest.raises(ValueError):
        M.mia_auc([], [1.0])


def test_mia_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    f, h = rng.integers(0, 5, 17).astype(float), rng.integers(0, 5, 11).astype(float)
    pairwise = np.mean([(b > a) + 0.5 * (b == a) for a in f for b in h])
    assert M.mia_auc(f, h) == pytest.approx(pairwise)


def test_privleak_sign():
    assert M.privleak(0.5, 0.5) == pytest.approx(0.0)
    assert M.privleak(0.9, 0.5) == pytest.approx(-80.0)  # forget set still looks seen
    assert M.privleak(0.3, 0.5) == pytest.approx(40.0)
    assert M.privleak(0.6) == pytest.approx(-20.0)  # default reference AUC 0.5
