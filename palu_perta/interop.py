"""open-unlearning's result files, both ways: its ``TOFU_EVAL.json`` / ``TOFU_SUMMARY.json`` from
our ``per_item`` and summary (:func:`to_open_unlearning`, :func:`open_unlearning_summary`), and our
per-item shape from its ``TOFU_EVAL.json`` (:func:`from_open_unlearning`), e.g. to use a retain
model that open-unlearning evaluated as the forget-quality reference.

open-unlearning's ``TOFU_EVAL.json`` maps each metric name to ``{"agg_value": x, "value_by_index":
{"<i>": {...}}}``, ``<i>`` the item's index in its split as a string; the nested names depend on
the metric's handler:

- ``probability`` (``*_Q_A_Prob``, ``*_Q_A_PARA_Prob``, ``*_Q_A_PERT_Prob``): ``{"prob", "avg_loss"}``
  (lists, one value per perturbed answer, for ``PERT``); ``probability_w_options``
  (``*_Q_A_Prob_normalised``): ``{"prob"}``;
- ``rouge`` (``*_Q_A_ROUGE``): ``{"rouge1_recall", "rougeL_f1", "rougeL_recall", "input",
  "ground_truth", "generation"}``;
- ``truth_ratio`` (``forget_truth_ratio``, ``*_Truth_Ratio``; the raw ratio ``p_wrong / p_correct``),
  ``exact_memorization``, ``extraction_strength``: ``{"score"}``;
- an MIA attack (``mia_*``): ``{"forget": {"agg_value", "value_by_index": {i: {"score"}}},
  "holdout": {...}, "auc", "agg_value"}`` with ``agg_value == auc``;
- ``forget_quality``, ``model_utility``, ``privleak``: ``{"agg_value"}`` only (None when not computed).

``TOFU_SUMMARY.json`` maps each metric to its ``agg_value``, None values left out. Nothing here
runs a model or touches files: plain dicts in, plain dicts out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

# our split names -> open-unlearning's key prefixes (the same table as palu_perta.evaluation.PREFIX)
PREFIX = {"forget": "forget", "retain": "retain", "real_authors": "ra", "world_facts": "wf"}
QA_SPLITS = ("forget", "retain")  # with a paraphrase; real_authors / world_facts have options
TRUTH_RATIO_KEYS = {"forget": "forget_truth_ratio", "retain": "retain_Truth_Ratio",
                    "real_authors": "ra_Truth_Ratio", "world_facts": "wf_Truth_Ratio"}
# older open-unlearning configs named the forget truth ratio like the file that declares it
FORGET_TRUTH_RATIO_KEYS = ("forget_truth_ratio", "forget_Truth_Ratio")
MIA_ATTACKS = {"mia_loss": "loss", "mia_zlib": "zlib", "mia_min_k": "min_k",
               "mia_min_k_plus_plus": "min_k_plus_plus"}  # open-unlearning key -> our per-item name
SCALAR_KEYS = ("forget_quality", "model_utility", "privleak")
ROUGE_FIELDS = ("rouge1_recall", "rougeL_f1", "rougeL_recall")


def item_metrics(split: str) -> list[tuple[str, str, str]]:
    """The per-item metrics of one of our splits: (open-unlearning key, our per-item field, nesting).

    Nesting: ``"prob"`` -> ``{"prob", "avg_loss"}``, ``"prob_only"`` -> ``{"prob"}``, ``"score"`` ->
    ``{"score"}``, ``"rouge"`` -> the ROUGE dict (our field is then the row's ROUGE fields).
    """
    p = PREFIX[split]
    metrics = [(f"{p}_Q_A_Prob", "prob", "prob")]
    if split in QA_SPLITS:
        metrics.append((f"{p}_Q_A_PARA_Prob", "paraphrase_prob", "prob"))
    else:
        metrics.append((f"{p}_Q_A_Prob_normalised", "prob_normalised", "prob_only"))
    metrics += [(f"{p}_Q_A_PERT_Prob", "perturbed_probs", "prob"),
                (f"{p}_Q_A_ROUGE", "rouge", "rouge"),
                (TRUTH_RATIO_KEYS[split], "truth_ratio", "score")]
    if split == "forget":
        metrics += [("extraction_strength", "extraction_strength", "score"),
                    ("exact_memorization", "exact_memorization", "score")]
    return metrics


def open_unlearning_keys() -> list[str]:
    """Every open-unlearning key that :func:`to_open_unlearning` writes, sorted."""
    keys = [key for split in PREFIX for key, _, _ in item_metrics(split)]
    return sorted([*keys, *MIA_ATTACKS, *SCALAR_KEYS])


# ---------------------------------------------------------------------------------------
# writing: our results -> open-unlearning's files


def _avg_loss(prob: float | Sequence[float] | None) -> float | list | None:
    """``-log(prob)`` (element-wise for a list); None where the probability is None or 0."""
    if isinstance(prob, Sequence):
        return [_avg_loss(p) for p in prob]
    return -math.log(prob) if prob is not None and prob > 0 else None


def _nest(row: Mapping[str, Any], field: str, nesting: str) -> dict[str, Any]:
    """One item's value of one metric, nested as open-unlearning nests it."""
    if nesting == "rouge":  # open-unlearning's "input" (the chat-templated prompt) is not written
        return {**{k: row[k] for k in ROUGE_FIELDS}, "ground_truth": row["answer"], "generation": row["generation"]}
    value = row[field]
    if nesting == "score":
        return {"score": value}
    if nesting == "prob_only":
        return {"prob": value}
    return {"prob": value, "avg_loss": _avg_loss(value)}


def _attack_scores(rows: Sequence[Mapping[str, Any]], attack: str) -> dict[str, Any]:
    scores = [float(r["mia"][attack]) for r in rows]
    return {"agg_value": sum(scores) / len(scores),
            "value_by_index": {str(i): {"score": s} for i, s in enumerate(scores)}}


def to_open_unlearning(per_item: Mapping[str, Any], summary: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The content of open-unlearning's ``TOFU_EVAL.json`` for one evaluation.

    ``per_item``: :func:`~palu_perta.evaluation.evaluate`'s ``per_item`` (``{"splits": {split: [row]}}``,
    or a result holding it); ``summary``: its aggregates. Every key of :func:`open_unlearning_keys`,
    sorted: per-item metrics with ``agg_value`` (ours) and ``value_by_index`` (``"0"``, ``"1"``, ... in
    split order); MIA keys as ``{"agg_value": None}`` without holdout items; ``forget_quality`` /
    ``privleak`` as ``{"agg_value": None}`` when we have none.
    """
    splits = per_item.get("per_item", per_item)["splits"]
    log: dict[str, dict[str, Any]] = {}
    for split in PREFIX:
        for key, field, nesting in item_metrics(split):
            log[key] = {"agg_value": summary[key],
                        "value_by_index": {str(i): _nest(row, field, nesting) for i, row in enumerate(splits[split])}}
    for key, attack in MIA_ATTACKS.items():
        auc = summary.get(key)
        log[key] = {"agg_value": None} if auc is None else {
            "forget": _attack_scores(splits["forget"], attack),
            "holdout": _attack_scores(splits["holdout"], attack),
            "auc": auc,
            "agg_value": auc,
        }
    for key in SCALAR_KEYS:
        log[key] = {"agg_value": summary.get(key)}
    return dict(sorted(log.items()))


def open_unlearning_summary(log: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The content of ``TOFU_SUMMARY.json``: each metric's ``agg_value``, None values left out."""
    return {key: entry["agg_value"] for key, entry in sorted(log.items()) if entry.get("agg_value") is not None}


# ---------------------------------------------------------------------------------------
# reading: open-unlearning's TOFU_EVAL.json -> our per-item shape


def is_open_unlearning_log(obj: Any) -> bool:
    """True for something shaped like ``TOFU_EVAL.json``: a mapping with entries that hold an
    ``agg_value`` (``TOFU_SUMMARY.json`` maps keys to bare numbers and is not one)."""
    return isinstance(obj, Mapping) and any(isinstance(v, Mapping) and "agg_value" in v for v in obj.values())


def _by_index(entry: Any) -> dict[int, Any]:
    """``value_by_index`` of a log entry with integer keys (empty when the entry has none)."""
    values = entry.get("value_by_index") if isinstance(entry, Mapping) else None
    return {int(i): v for i, v in (values or {}).items() if v is not None}


def _unnest(value: Mapping[str, Any], field: str, nesting: str) -> dict[str, Any]:
    """Our per-item fields from one item's value of one open-unlearning metric."""
    if nesting == "rouge":
        names = {**{k: k for k in ROUGE_FIELDS}, "ground_truth": "answer", "generation": "generation"}
        return {ours: value[theirs] for theirs, ours in names.items() if theirs in value}
    return {field: value["score" if nesting == "score" else "prob"]}


def from_open_unlearning(log: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Our per-item payload from open-unlearning's ``TOFU_EVAL.json`` content.

    Returns ``{"splits": {split: [row]}, "mia_auc": {key: auc}, "forget_split": None,
    "forget_hash": None, "source": "open-unlearning"}``: rows in index order, each with the fields
    of the metrics the log holds (``truth_ratio``, ``prob``, ``paraphrase_prob``, ``perturbed_probs``,
    ``prob_normalised``, ROUGE fields, ``answer``, ``generation``, ``extraction_strength``,
    ``exact_memorization``, ``mia``; ``correct_is_top`` on ra / wf when both probabilities are
    there); ``holdout`` rows from the MIA attacks' holdout scores. The logs carry no questions, hence
    no ``forget_hash``. A complete log (every metric of :func:`open_unlearning_keys` but
    ``forget_quality`` / ``privleak``) gives a payload that :func:`~palu_perta.evaluation.summarise`
    accepts; for a retain reference only the forget truth ratios (and ``mia_min_k``'s AUC, for
    privleak) are needed.
    """
    rows: dict[str, dict[int, dict[str, Any]]] = {split: {} for split in (*PREFIX, "holdout")}
    for split in PREFIX:
        for key, field, nesting in item_metrics(split):
            if split == "forget" and key == "forget_truth_ratio" and key not in log:
                key = next((k for k in FORGET_TRUTH_RATIO_KEYS if k in log), key)
            for i, value in _by_index(log.get(key)).items():
                rows[split].setdefault(i, {}).update(_unnest(value, field, nesting))
    mia_auc = {}
    for key, attack in MIA_ATTACKS.items():
        entry = log.get(key) or {}
        for split in ("forget", "holdout"):
            for i, value in _by_index(entry.get(split)).items():
                rows[split].setdefault(i, {}).setdefault("mia", {})[attack] = value["score"]
        auc = entry.get("auc", entry.get("agg_value"))
        if auc is not None:
            mia_auc[key] = auc
    for split in ("real_authors", "world_facts"):
        for row in rows[split].values():
            if row.get("prob") is not None and row.get("perturbed_probs"):
                row["correct_is_top"] = row["prob"] > max(row["perturbed_probs"])
    return {"splits": {split: [by_index[i] for i in sorted(by_index)] for split, by_index in rows.items()},
            "mia_auc": mia_auc, "forget_split": None, "forget_hash": None, "source": "open-unlearning"}


def retain_reference_from_open_unlearning(log: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """:func:`from_open_unlearning`, checked for what a retain reference needs: a finite forget truth
    ratio for every forget item. Raises ValueError otherwise."""
    ref = from_open_unlearning(log)
    forget = ref["splits"]["forget"]
    ratios = [row.get("truth_ratio") for row in forget]
    if not forget or not all(isinstance(r, (int, float)) and math.isfinite(r) for r in ratios):
        raise ValueError(
            f"the open-unlearning log has no usable per-item forget truth ratios ({' / '.join(FORGET_TRUTH_RATIO_KEYS)}"
            " with a finite 'score' in every 'value_by_index' entry), which forget_quality needs")
    return ref
