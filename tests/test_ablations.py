"""The ablation helpers of notebook 07: PALU's variants, the lambda ladder, equal-forgetting lambdas, controls."""

from __future__ import annotations

import json
import math

import pytest
import torch

from palu_perta import ablations, perta
from palu_perta.config import PALU_HYPER, get_profile, unlearn_budget
from palu_perta.losses import LOSSES
from palu_perta.models import load_model
from palu_perta.unlearn import UnlearnConfig
from tests.test_perta import setup  # noqa: F401 - the fixture: tiny target / retain, fresh artifacts


def test_palu_default_point_is_notebook_06s_run_and_equal_losses_share_a_run():
    profile = get_profile("cpu")
    defaults = {axis for axis, values in ablations.PALU_AXES.items() for value in values
                if ablations.palu_hyper(axis, value) == PALU_HYPER
                and ablations.palu_budget(profile, axis, value) == unlearn_budget(profile)}
    assert defaults == set(ablations.PALU_AXES), "every axis contains notebook 06's setting"
    assert ablations.palu_budget(profile, "lr_scale", 0.2)["learning_rate"] == pytest.approx(1e-5)
    assert ablations.palu_hyper("top_k", "V") == ablations.palu_hyper("scope", ("onset", "full"))
    # every other point is a different loss, and a valid one
    points = {json.dumps(ablations.palu_hyper(a, v), sort_keys=True)
              for a, values in ablations.PALU_AXES.items() for v in values}
    # 25 points: the default is one of each of the 7 axes, K = |V| is onset x full, and lr_scale changes the budget
    assert len(points) == 16
    runs = {(json.dumps(ablations.palu_hyper(a, v), sort_keys=True), ablations.palu_budget(profile, a, v)["learning_rate"])
            for a, values in ablations.PALU_AXES.items() for v in values}
    assert len(runs) == 18
    for point in points:
        UnlearnConfig(method="palu", hyper=json.loads(point))  # known hyperparameter names
    assert ablations.palu_hyper("first_n", -1)["first_n"] == -1
    assert ablations.palu_hyper("scope", ("answer", "full")) == {**PALU_HYPER, "temporal": "answer", "vocab": "full"}
    assert set(LOSSES["palu"].defaults) >= {"temporal", "vocab", "target", "form"}
    with pytest.raises(ValueError, match="unknown PALU axis"):
        ablations.palu_hyper("learning_rate", 1e-5)


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
