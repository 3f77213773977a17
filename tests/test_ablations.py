"""The ablation helpers of notebook 07: PALU's variants, the lambda ladder, equal-forgetting lambdas, controls."""

from __future__ import annotations

import json
import math

import pytest
import torch

from palu_perta import ablations, perta, study
from palu_perta.config import PALU_HYPER, get_profile, unlearn_budget
from palu_perta.losses import LOSSES, onset_mask, palu_forget_mask, palu_loss
from palu_perta.models import load_model
from palu_perta.unlearn import UnlearnConfig
from tests.test_perta import setup  # noqa: F401 - the fixture: tiny target / retain, fresh artifacts


def test_palu_default_point_is_notebook_06s_run_and_equal_losses_share_a_run():
    profile = get_profile("cpu")
    assert PALU_HYPER == {"top_k": 1, "temporal": "sensitive", "alpha": 1.0}, "the authors' released configuration"
    assert study.PALU_AUTHORS is PALU_HYPER, "one definition: the study's PALU is the notebooks'"
    # every axis but target and form holds the default point (PALU_HYPER with notebook 06's budget) exactly once
    for axis, values in ablations.PALU_AXES.items():
        defaults = [value for value in values if ablations.palu_hyper(axis, value) == PALU_HYPER
                    and ablations.palu_budget(profile, axis, value) == unlearn_budget(profile)]
        if axis in ablations.AXES_AT_TARGET_FORM_K:
            assert defaults == [], axis
            with pytest.raises(ValueError, match="holds no default point"):
                ablations.default_value(axis)
        else:
            assert defaults == [ablations.default_value(axis)], axis
    assert {axis: ablations.default_value(axis) for axis in ablations.PALU_AXES
            if axis not in ablations.AXES_AT_TARGET_FORM_K} == {
        "lr_scale": 1.0, "alpha": 1.0, "top_k": 1, "first_n": -1, "scope": ("sensitive", "topk")}
    # target and form run at K = 50: their full-mean, squared point is the top_k axis' K = 50 run
    assert ablations.AXES_AT_TARGET_FORM_K == ("target", "form") and ablations.TARGET_FORM_TOP_K == 50
    k50 = ablations.palu_hyper("top_k", ablations.TARGET_FORM_TOP_K)
    assert ablations.palu_hyper("target", "full_mean") == ablations.palu_hyper("form", "squared") == k50
    assert ablations.palu_budget(profile, "lr_scale", 0.2)["learning_rate"] == pytest.approx(1e-5)

    # N: "all" IS the default dict; N >= 1 is onset with N tokens, N = 3 (the loss's default) left to the loss
    assert ablations.palu_hyper("first_n", -1) == PALU_HYPER and ablations.value_label("first_n", -1) == "all"
    for n in (1, 2, 5):
        assert ablations.palu_hyper("first_n", n) == {**PALU_HYPER, "temporal": "onset", "first_n": n}
    assert ablations.palu_hyper("first_n", 3) == {**PALU_HYPER, "temporal": "onset"}
    assert LOSSES["palu"].defaults["first_n"] == 3
    assert ablations.palu_hyper("first_n", 3) == ablations.palu_hyper("scope", ("onset", "topk"))
    with pytest.raises(ValueError, match="first_n must be a positive integer or -1"):
        ablations.palu_hyper("first_n", 0)
    # K: 1 is the default, V the full vocabulary, which is the "sensitive x full" cell
    assert ablations.palu_hyper("top_k", 1) == PALU_HYPER
    assert ablations.palu_hyper("top_k", 50) == {**PALU_HYPER, "top_k": 50}
    assert ablations.palu_hyper("top_k", "V") == {**PALU_HYPER, "vocab": "full"}
    assert ablations.palu_hyper("top_k", "V") == ablations.palu_hyper("scope", ("sensitive", "full"))
    # the scope axis: the paper's 2 x 2 with "onset" explicit, and the default's row beside it
    assert set(ablations.PALU_SCOPE_2X2) < set(ablations.PALU_AXES["scope"])
    assert ablations.palu_hyper("scope", ("onset", "full")) == {**PALU_HYPER, "temporal": "onset", "vocab": "full"}
    assert ablations.palu_hyper("scope", ("answer", "full")) == {**PALU_HYPER, "temporal": "answer", "vocab": "full"}
    assert ablations.palu_hyper("scope", ("answer", "topk")) == {**PALU_HYPER, "temporal": "answer"}
    assert ablations.palu_hyper("scope", ("sensitive", "topk")) == PALU_HYPER
    assert ablations.palu_hyper("target", "fixed") == {**PALU_HYPER, "top_k": 50, "target": "fixed"}
    assert ablations.palu_hyper("target", "topk_mean") == {**PALU_HYPER, "top_k": 50, "target": "topk_mean"}
    assert ablations.palu_hyper("form", "entropy") == {**PALU_HYPER, "top_k": 50, "form": "entropy"}

    # every other point is a different loss, and a valid one
    points = {json.dumps(ablations.palu_hyper(a, v), sort_keys=True)
              for a, values in ablations.PALU_AXES.items() for v in values}
    # 27 points: the default is one of each of 5 axes, K = 50 is the full-mean / squared point of target and form,
    # N = 3 is onset x topk, K = |V| is sensitive x full, and lr_scale changes the budget (two more runs)
    assert sum(len(values) for values in ablations.PALU_AXES.values()) == 27
    assert len(points) == 17
    runs = {(json.dumps(ablations.palu_hyper(a, v), sort_keys=True), ablations.palu_budget(profile, a, v)["learning_rate"])
            for a, values in ablations.PALU_AXES.items() for v in values}
    assert len(runs) == 19
    for point in points:
        UnlearnConfig(method="palu", hyper=json.loads(point))  # known hyperparameter names
    assert set(LOSSES["palu"].defaults) >= {"temporal", "vocab", "target", "form"}
    with pytest.raises(ValueError, match="unknown PALU axis"):
        ablations.palu_hyper("learning_rate", 1e-5)
    with pytest.raises(ValueError, match="unknown PALU axis"):
        ablations.default_value("learning_rate")


def test_at_k_1_the_topk_mean_target_and_the_entropy_form_have_no_forget_term_so_those_axes_run_at_k_50():
    """Why TARGET_FORM_TOP_K exists: with K = 1, c_t = the top-K mean is the top logit itself and the entropy of one
    logit is 0, so those two variants would have a forget term of 0 (and no gradient from it); at the axes' K = 50
    both have one."""
    from tests.test_losses import RANDOM_CLASSES, random_io

    for change in ({"target": "topk_mean"}, {"form": "entropy"}):
        io = random_io(RANDOM_CLASSES)
        out = palu_loss(io, None, **{**PALU_HYPER, **change, "ns_constraint": "none", "alpha": 0.0})
        out.loss.backward()
        assert out.terms["forget"] == 0.0 and not io.logits.grad.any(), change
    for axis, value in (("target", "topk_mean"), ("form", "entropy")):
        io = random_io(RANDOM_CLASSES, vocab=2 * ablations.TARGET_FORM_TOP_K)
        out = palu_loss(io, None, **{**ablations.palu_hyper(axis, value), "ns_constraint": "none", "alpha": 0.0})
        out.loss.backward()
        assert out.terms["forget"] > 0 and io.logits.grad.abs().sum() > 0, (axis, value)
    io = random_io(RANDOM_CLASSES)  # the default itself does have one
    assert palu_loss(io, None, **{**PALU_HYPER, "ns_constraint": "none", "alpha": 0.0}).terms["forget"] > 0


def test_palu_first_n_all_is_the_defaults_forget_positions():
    """N = "all" and the default act on the same positions (every sensitive token), and N = 3 on the onsets."""
    classes = torch.tensor([[0, 0, 1, 2, 2, 2, 2, 1, 2, 2, 1]])
    sensitive = classes == 2
    assert torch.equal(palu_forget_mask(classes, PALU_HYPER), sensitive)
    assert torch.equal(palu_forget_mask(classes, ablations.palu_hyper("first_n", -1)), sensitive)
    assert torch.equal(palu_forget_mask(classes, {**PALU_HYPER, "temporal": "onset", "first_n": -1}), sensitive)
    assert torch.equal(palu_forget_mask(classes, ablations.palu_hyper("first_n", 3)), onset_mask(classes, 3))
    assert not torch.equal(onset_mask(classes, 3), sensitive)  # the run of four: the fourth is not an onset


def test_on_front():
    assert ablations.on_front([0.5, 0.4, 0.9, 0.9], [0.3, 0.2, 0.1, 0.1]) == [True, False, True, True]
    assert ablations.on_front([0.1], [0.1]) == [True]


def test_lambda_ladder_walks_up_down_and_bisects():
    calls = []

    def forgets_from(threshold):
        def forgets(lam):
            calls.append(lam)
            return lam >= threshold
        return forgets

    lam, note = perta.lambda_ladder(forgets_from(2.5), start=1.0)
    assert calls == pytest.approx([1, 2, 4, 4 / math.sqrt(2)]) and lam == pytest.approx(2 * math.sqrt(2))
    assert note == ""
    calls.clear()
    lam, note = perta.lambda_ladder(forgets_from(0.3), start=1.0)
    assert calls == pytest.approx([1, 0.5, 0.25, 0.5 / math.sqrt(2)]) and lam == pytest.approx(0.5 / math.sqrt(2))
    calls.clear()
    lam, note = perta.lambda_ladder(forgets_from(1e9), start=1.0, max_steps=4)
    assert len(calls) == 4 and lam == 8.0 and "no rung up to lambda = 8" in note


def test_perta_variants_and_controls(setup, tmp_path):  # noqa: F811
    profile, bench, target, _, cfg = setup
    assert ablations.perta_variant("p", 2.0, cfg) == (cfg.replace(p=2.0), None)
    assert ablations.perta_variant("weights", "perta", cfg) == (cfg, None)
    assert ablations.perta_variant("weights", "random", cfg) == (cfg, "random")
    with pytest.raises(ValueError, match="unknown PerTA axis"):
        ablations.perta_variant("lam", 1.0, cfg)

    plain = perta.unlearned(profile, bench, target, "perta-grad", 1.0, cfg)
    constant = perta.unlearned(profile, bench, target, "perta-grad", 1.0, cfg, control="constant")
    random = perta.unlearned(profile, bench, target, "perta-grad", 1.0, cfg, control="random")
    assert len({json.dumps(m.key, sort_keys=True) for m in (plain, constant, random)}) == 3
    assert constant.name == "perta-grad-constant-lam1"
    with pytest.raises(ValueError, match="control"):
        perta.unlearned(profile, bench, target, "perta-grad", 1.0, cfg, control="uniform")
    with pytest.raises(ValueError, match="not 'tv'"):
        perta.unlearned(profile, bench, target, "tv", 1.0, cfg, control="constant")

    # the constant control is TV at lambda * mean(w), exactly
    weights = perta.perta_weights_for(profile, bench, target, "grad", cfg, progress=False)
    mean = perta.global_mean(weights)
    model, _ = constant.factory()
    tv, _ = perta.unlearned(profile, bench, target, "tv", mean, cfg).factory()
    expected = dict(tv.named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, expected[name], rtol=1e-5, atol=1e-6)
    # the random control moves the model as far on average, but not like PerTA
    original, _ = load_model(str(target))
    start = dict(original.named_parameters())
    moved_random = dict(random.factory()[0].named_parameters())
    moved_perta = dict(plain.factory()[0].named_parameters())
    assert any(not torch.equal(moved_random[n], moved_perta[n]) for n in start)


def test_forgetting_lambda_probes_the_variant_and_is_cached(setup, monkeypatch):  # noqa: F811
    profile, bench, target, _, cfg = setup
    seen, parts = [], []
    real_unlearn, real_parts = perta.perta_unlearn, perta.task_vector_and_weights

    def tagged(original, tau, weights, lam):
        seen.append(lam)
        return real_unlearn(original, tau, weights, lam)

    def counted(*args):
        parts.append(args[-1])  # the control
        return real_parts(*args)

    def probe(model, tokenizer, records, profile_):
        return 1 / (1 + seen[-1])  # forgets (<= 0.25) from lambda = 3 on

    monkeypatch.setattr(perta, "forget_rouge", probe)
    monkeypatch.setattr(perta, "perta_unlearn", tagged)
    monkeypatch.setattr(perta, "task_vector_and_weights", counted)
    found = ablations.forgetting_lambda(profile, bench, target, 0.25, "perta-grad", cfg, "constant", start=1.0)
    # 1 and 2 do not forget, 4 does, and the bisection 4 / sqrt 2 = 2.83 does not
    assert [lam for lam, _ in found["probes"]] == pytest.approx([1.0, 2.0, 4.0, 4 / math.sqrt(2)])
    assert found["lam"] == 4.0 and found["rouge"] == pytest.approx(0.2) and found["note"] == ""
    assert parts == ["constant"], "tau and the weights are built once for all the probes"
    n = len(seen)
    again = ablations.forgetting_lambda(profile, bench, target, 0.25, "perta-grad", cfg, "constant", start=1.0)
    assert again == found and len(seen) == n and parts == ["constant"], "cached: no probe, nothing built"
    other = ablations.forgetting_lambda(profile, bench, target, 0.25, "perta-grad", cfg, None, start=1.0)
    assert len(seen) > n and parts == ["constant", None] and other["lam"] == found["lam"], \
        "another control is another entry"


def test_scope_figure_draws_the_defaults_row_between_the_2x2s_and_outlines_the_default():
    """The scope heatmaps: rows onset / sensitive (the default's scope) / answer, the default cell outlined in red;
    older data with the four cells of the 2 x 2 alone still draws, without an outline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    from matplotlib.colors import to_hex

    from palu_perta.figures.ablations import DEFAULT_COLOUR, palu_k_and_n, palu_scope

    rows = [dict(zip(("temporal", "vocabulary"), value)) | {
        "default": ablations.palu_hyper("scope", value) == PALU_HYPER, "forget_quality": 0.01 * (i + 1),
        "model_utility": 0.4 + 0.01 * i} for i, value in enumerate(ablations.PALU_AXES["scope"])]
    for cells, temporal, outlined in ((pd.DataFrame(rows), ["onset", "sensitive", "answer"], [(0, 1)]),
                                      (pd.DataFrame(rows).drop(columns="default").iloc[[0, 1, 4, 5]],
                                       ["onset", "answer"], [])):
        fig = palu_scope(cells, "smoke")
        try:
            for ax in fig.axes[:2]:
                assert [t.get_text() for t in ax.get_yticklabels()] == temporal
                assert [t.get_text() for t in ax.get_xticklabels()] == ["topk", "full"]
                red = [p.get_xy() for p in ax.patches if isinstance(p, plt.Rectangle)
                       and to_hex(p.get_edgecolor()) == DEFAULT_COLOUR]
                assert red == outlined
        finally:
            plt.close(fig)
    axis_rows = pd.DataFrame({"value": ["1", "V"], "default": [True, False], "forget_quality": [0.1, 0.2],
                              "forget_quality_low": [0.05, 0.1], "forget_quality_high": [0.2, 0.3],
                              "model_utility": [0.4, 0.3], "model_utility_low": [0.35, 0.25],
                              "model_utility_high": [0.45, 0.35]})
    fig = palu_k_and_n({"top_k": axis_rows, "first_n": axis_rows.assign(value=["all", "3"])},
                       ablations.default_value("top_k"), ablations.default_value("first_n"), (20, 20), 0.45, 0.44,
                       "smoke")
    try:
        assert "K = 1, N = all" in fig._suptitle.get_text()
    finally:
        plt.close(fig)
