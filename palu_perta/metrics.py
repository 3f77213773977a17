"""The TOFU metric suite as plain functions on numbers, numerically faithful to open-unlearning.

Everything here works on per-token log-probabilities, token hits and texts that
:mod:`palu_perta.evaluation` computes with the model; nothing here runs a model. The
conventions follow open-unlearning (``src/evals/metrics/memorization.py``, ``utils.py``,
``privacy.py``, ``utility.py``, ``mia/*.py`` and ``configs/eval/tofu_metrics/*.yaml``):

- *Probability* of an answer is length-normalised: ``exp(-avg_loss)`` with ``avg_loss`` the
  mean NLL over every labelled token (answer tokens and the final EOS).
- *Option-normalised probability* (``ra_/wf_Q_A_Prob_normalised``, handler
  ``probability_w_options``) uses those length-normalised probabilities:
  ``p(a) / (p(a) + sum_j p(a~_j) + 1e-10)``.
- *Truth ratio* per item: ``tr = exp(-mean_j avg_loss(a~_j)) / (exp(-avg_loss(a_c)) + 1e-10)``,
  i.e. the geometric mean of the wrong answers' probabilities over the correct one's
  (paraphrase for forget/retain, answer for real_authors/world_facts). Aggregates:
  ``closer_to_1_better = mean(min(tr, 1 / (tr + 1e-10)))`` (forget) and
  ``true_better = mean(max(0, 1 - tr))`` (retain, ra, wf). TOFU's original
  ``aggregate_stat_eval.py`` computes the same numbers from ``1 / tr``.
- *Forget quality* (handler ``ks_test``): ``scipy.stats.ks_2samp`` p-value between the raw
  per-item forget truth ratios of the model and of the retain model (the KS statistic is
  invariant to the monotone map ``tr -> 1 / tr`` that TOFU's original code applies).
- *Extraction strength / exact memorisation / Min-k / Min-k++* use ``tokenwise_logprobs``,
  which drops the last labelled token (the EOS); *LOSS* and *zlib* use ``avg_loss`` over all
  labelled tokens.
- *MIA AUC*: ``roc_auc_score`` with forget = label 0, holdout = label 1 and scores where
  higher means "less likely a member" (loss-like). AUC near 1: the forget set still looks
  like training data; a retain model sits near 0.5.
- *PrivLeak* (handler ``privleak``, computed from ``mia_min_k``):
  ``((1 - AUC) - (1 - AUC_ref)) / ((1 - AUC_ref) + 1e-10) * 100``; ``AUC_ref`` is the retain
  model's, else open-unlearning's default 0.5.

All functions compute in float64 from log-probabilities, so nothing underflows; the 1e-10
epsilons are open-unlearning's and are kept (``eps=0`` gives the exact ratios).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np
from scipy import stats

EPS = 1e-10  # open-unlearning's epsilon in every ratio
MIN_K = 0.4  # open-unlearning's k for mia_min_k and mia_min_k_plus_plus on TOFU

UTILITY_KEYS = (
    "retain_Q_A_Prob",
    "retain_Q_A_ROUGE",
    "retain_Truth_Ratio",
    "ra_Q_A_Prob_normalised",
    "ra_Q_A_ROUGE",
    "ra_Truth_Ratio",
    "wf_Q_A_Prob_normalised",
    "wf_Q_A_ROUGE",
    "wf_Truth_Ratio",
)

ArrayLike = Sequence[float] | np.ndarray


def _as_array(values: ArrayLike) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(-1)


def _log_plus_eps(logp: float | np.ndarray, eps: float) -> np.ndarray:
    """``log(exp(logp) + eps)`` without underflow."""
    return np.logaddexp(logp, math.log(eps)) if eps > 0 else np.asarray(logp, dtype=np.float64)


# ---------------------------------------------------------------------------------------
# probabilities and truth ratios


def mean_logprob(token_logprobs: ArrayLike) -> float:
    """Length-normalised log-probability ``-avg_loss``: the mean of the token log-probs."""
    lp = _as_array(token_logprobs)
    if lp.size == 0:
        raise ValueError("an answer with no labelled token has no probability")
    return float(lp.mean())


def answer_probability(token_logprobs: ArrayLike) -> float:
    """Length-normalised probability ``exp(mean log p)`` of one answer (its ``Q_A_Prob``)."""
    return math.exp(mean_logprob(token_logprobs))


def perplexity(token_logprobs: ArrayLike) -> float:
    """Perplexity ``exp(-mean log p)`` of one text's tokens: 1 for a text the model is certain of, the
    vocabulary size for one it guesses uniformly; the inverse of :func:`answer_probability`."""
    return math.exp(-mean_logprob(token_logprobs))


def option_normalised_probability(correct_logprob: float, wrong_logprobs: ArrayLike, eps: float = EPS) -> float:
    """``p(a) / (p(a) + sum_j p(a~_j) + eps)`` from length-normalised log-probabilities."""
    wrong = _as_array(wrong_logprobs)
    terms = np.concatenate([[correct_logprob], wrong, [math.log(eps)] if eps > 0 else []])
    log_denominator = np.logaddexp.reduce(terms)
    return float(math.exp(correct_logprob - log_denominator))


def truth_ratio(correct_logprob: float, wrong_logprobs: ArrayLike, eps: float = EPS) -> float:
    """Per-item truth ratio ``p_wrong / (p_correct + eps)``.

    ``correct_logprob``: length-normalised log-prob of the paraphrase (forget, retain) or of
    the answer (ra, wf); ``wrong_logprobs``: those of the perturbed answers, whose mean is the
    log of their geometric-mean probability.
    """
    wrong = _as_array(wrong_logprobs)
    if wrong.size == 0:
        raise ValueError("the truth ratio needs at least one perturbed answer")
    return float(np.exp(wrong.mean() - _log_plus_eps(correct_logprob, eps)))


def truth_ratio_closer_to_1(ratios: ArrayLike, eps: float = EPS) -> float:
    """Forget aggregate ``mean(min(tr, 1 / (tr + eps)))``: 1 when wrong and right are alike."""
    tr = _as_array(ratios)
    return float(np.mean(np.minimum(tr, 1.0 / (tr + eps))))


def truth_ratio_true_better(ratios: ArrayLike) -> float:
    """Retain / ra / wf aggregate ``mean(max(0, 1 - tr))``: 1 when the truth is far likelier."""
    return float(np.mean(np.maximum(0.0, 1.0 - _as_array(ratios))))


def correct_option_is_top(correct_logprob: float, wrong_logprobs: ArrayLike) -> bool:
    """True when the correct answer is strictly the likeliest option (for ``wf_accuracy``)."""
    return bool(correct_logprob > _as_array(wrong_logprobs).max())


# ---------------------------------------------------------------------------------------
# ROUGE


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)


def rouge_scores(generation: str, reference: str) -> dict[str, float]:
    """ROUGE of a generation against the reference answer (``rouge_score``, stemmer on).

    Returns ``rouge1_recall``, ``rougeL_recall`` (TOFU's ``Q_A_ROUGE``) and ``rougeL_f1``.
    """
    scores = _rouge_scorer().score(reference, generation)
    return {
        "rouge1_recall": float(scores["rouge1"].recall),
        "rougeL_recall": float(scores["rougeL"].recall),
        "rougeL_f1": float(scores["rougeL"].fmeasure),
    }


# ---------------------------------------------------------------------------------------
# aggregates over models


def forget_quality(unlearned_truth_ratios: ArrayLike, retain_truth_ratios: ArrayLike) -> float:
    """KS two-sample p-value between two models' per-item forget truth ratios (raw ``tr``)."""
    a, b = _as_array(unlearned_truth_ratios), _as_array(retain_truth_ratios)
    if a.size == 0 or b.size == 0:
        raise ValueError("forget quality needs at least one truth ratio from each model")
    return float(stats.ks_2samp(a, b).pvalue)


def model_utility(values: Mapping[str, float] | ArrayLike) -> float:
    """Harmonic mean of the 9 utility numbers (a mapping with :data:`UTILITY_KEYS`, or 9 values).

    A zero component gives 0 (as ``scipy.stats.hmean`` does); a missing or negative one raises.
    """
    if isinstance(values, Mapping):
        missing = [k for k in UTILITY_KEYS if values.get(k) is None]
        if missing:
            raise ValueError(f"model utility needs all of {list(UTILITY_KEYS)}; missing {missing}")
        values = [values[k] for k in UTILITY_KEYS]
    arr = _as_array(values)
    if arr.size != len(UTILITY_KEYS):
        raise ValueError(f"model utility takes {len(UTILITY_KEYS)} numbers, got {arr.size}")
    if np.any(arr < 0) or not np.all(np.isfinite(arr)):
        raise ValueError(f"model utility components must be finite and >= 0, got {arr.tolist()}")
    if np.any(arr == 0):
        return 0.0
    return float(stats.hmean(arr))


# ---------------------------------------------------------------------------------------
# memorisation (on answer tokens without the final EOS, teacher-forced)


def exact_memorization(hits: Sequence[bool] | np.ndarray) -> float | None:
    """Share of answer tokens whose teacher-forced argmax is the label; None with no token."""
    h = np.asarray(hits, dtype=bool).reshape(-1)
    return float(h.mean()) if h.size else None


def extraction_strength(hits: Sequence[bool] | np.ndarray) -> float:
    """``1 - k / n`` for the smallest ``k`` whose suffix ``hits[k:]`` is all correct.

    Faithful to open-unlearning's loop ``for k in range(n): if preds[k:] == labels[k:]: break``:
    when no suffix matches, ``k`` stays ``n - 1`` and the score is ``1 / n`` (not 0); a
    one-token answer therefore always scores 1, and an empty one scores 0.
    """
    h = np.asarray(hits, dtype=bool).reshape(-1)
    n = h.size
    if n == 0:
        return 0.0
    # suffix_ok[k] = all(h[k:]); the first True is the smallest k (n - 1 when none is).
    suffix_ok = np.flip(np.logical_and.accumulate(np.flip(h)))
    k = int(np.argmax(suffix_ok)) if suffix_ok.any() else n - 1
    return 1.0 - k / n


# ---------------------------------------------------------------------------------------
# membership inference (scores: higher = less likely a member)


def loss_score(token_logprobs: ArrayLike) -> float:
    """LOSS attack: the average NLL over all labelled tokens (EOS included)."""
    return -mean_logprob(token_logprobs)


def zlib_score(token_logprobs: ArrayLike, text: str) -> float:
    """zlib attack: average NLL divided by the zlib-compressed length (bytes) of the answer text."""
    return loss_score(token_logprobs) / len(zlib.compress(text.encode("utf-8")))


def min_k_score(token_logprobs: ArrayLike, k: float = MIN_K) -> float:
    """Min-k% attack: minus the mean of the lowest ``max(1, int(n * k))`` token log-probs (0 if n = 0)."""
    lp = _as_array(token_logprobs)
    if lp.size == 0:
        return 0.0
    n_k = max(1, int(lp.size * k))
    return float(-np.mean(np.sort(lp)[:n_k]))


def min_k_plus_plus_score(token_logprobs: ArrayLike, mu: ArrayLike, var: ArrayLike, k: float = MIN_K) -> float:
    """Min-k%++ attack: Min-k% on ``(log p(y_t) - mu_t) / sqrt(var_t)``.

    ``mu_t = E_{v~p_t}[log p_t(v)]`` and ``var_t = E[log p_t(v)^2] - mu_t^2`` over the full
    next-token distribution at each position; ``var`` is clamped at 1e-6 as open-unlearning does.
    """
    lp, m, v = _as_array(token_logprobs), _as_array(mu), _as_array(var)
    if lp.size == 0:
        return 0.0
    z = (lp - m) / np.sqrt(np.maximum(v, 1e-6))
    return min_k_score(z, k)


def mia_auc(forget_scores: ArrayLike, holdout_scores: ArrayLike) -> float:
    """ROC-AUC of loss-like scores with holdout as the positive class (open-unlearning's orientation).

    Rank-based (Mann-Whitney): ``P(holdout score > forget score) + 0.5 P(tie)``; 1 means the
    forget items look like members, 0.5 that they look like unseen data.
    """
    f, h = _as_array(forget_scores), _as_array(holdout_scores)
    if f.size == 0 or h.size == 0:
        raise ValueError("the MIA AUC needs at least one forget and one holdout score")
    ranks = stats.rankdata(np.concatenate([f, h]))  # ties get their average rank
    rank_sum = ranks[f.size:].sum()
    return float((rank_sum - h.size * (h.size + 1) / 2) / (f.size * h.size))


def privleak(auc: float, reference_auc: float = 0.5, eps: float = EPS) -> float:
    """MUSE's PrivLeak in percent: ``((1 - auc) - (1 - ref)) / ((1 - ref) + eps) * 100``.

    0 matches the retain model; negative: the forget set still looks more like members than
    under the retain model (under-unlearning); positive: it looks less (over-unlearning).
    """
    score, ref = 1.0 - auc, 1.0 - reference_auc
    return float((score - ref) / (ref + eps) * 100.0)
