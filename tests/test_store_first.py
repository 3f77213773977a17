"""Notebooks read the results store first: a lambda sweep takes a point from the study's results when the
study holds that very model, evaluated by the same code, and the stored numbers are the ones the notebook
would compute itself."""

from __future__ import annotations

import json

import pytest

from palu_perta import perta, pipeline, study

SMOKE = study.GRIDS["smoke"]
COMPARED = ("forget_Q_A_ROUGE", "forget_Q_A_Prob", "forget_truth_ratio", "forget_quality", "model_utility",
            "retain_Q_A_ROUGE", "privleak")


@pytest.fixture(scope="module")
def tv_study(tmp_path_factory):
    """The smoke grid's TV cell of seed 0 (and its reference cells), in a results directory of its own."""
    root = tmp_path_factory.mktemp("store-first")
    study.run_study(SMOKE, root, cells=study.select(SMOKE.cells(), methods=["tv"], seeds=[0]), progress=False,
                    log=lambda _: None)
    cell = next(c for c in SMOKE.cells() if c.method == "tv" and c.seed == 0)
    profile = SMOKE.profile_for(cell)
    bench = pipeline.benchmark(profile)
    models = pipeline.reference_models(profile, bench, progress=False)
    retain_eval = pipeline.evaluation(profile, models.retain, bench, reference="self", name="retain", progress=False)
    return root, cell, profile, bench, models, retain_eval


def test_the_stored_points_are_the_ones_the_notebook_computes(tv_study):
    root, cell, profile, bench, models, retain_eval = tv_study
    stored = study.stored_points(profile, "tv", root=root)
    lams = [p["point"]["lambda"] for p in stored]
    assert len(lams) == len(cell.multiples)
    extra = float(f"{max(lams) * 3:.3g}")  # a lambda the study did not evaluate
    rows = pipeline.lambda_sweep(profile, bench, models.target, {"tv": lams + [extra]}, retain_eval, log=False, root=root)
    assert [r["source"] for r in rows] == ["results store"] * len(lams) + ["computed"]
    assert [r["lam"] for r in rows] == lams + [extra]
    recomputed = perta.sweep(profile, bench, models.target, ["tv"], lams, retain_eval, log=False)
    for from_store, computed in zip(rows, recomputed):
        for key in COMPARED:  # the store keeps 7 significant digits
            assert from_store[key] == pytest.approx(computed[key], rel=1e-6, abs=1e-12), (from_store["lam"], key)


def test_another_model_or_recipe_or_stale_results_are_not_taken_from_the_store(tv_study, tmp_path):
    root, cell, profile, bench, models, retain_eval = tv_study
    lam = study.stored_points(profile, "tv", root=root)[0]["point"]["lambda"]
    assert study.stored_points(profile.replace(seed=1), "tv", root=root) == []  # seed 1's cell is not run
    assert study.stored_points(profile.replace(n_authors=5), "tv", root=root) == []  # not a cell of the grid
    assert study.stored_points(profile, "tv", hyper={"p": 2.0}, root=root) == []
    other_recipe = perta.perta_config(profile).replace(p=2.0)
    rows = pipeline.lambda_sweep(profile, bench, models.target, {"tv": [lam]}, retain_eval, other_recipe, log=False,
                                 root=root)
    assert rows[0]["source"] == "computed"
    rows = pipeline.lambda_sweep(profile, bench, models.retain, {"tv": [lam]}, retain_eval, log=False, root=root)
    assert rows[0]["source"] == "computed"  # unlearning from another model than the profile's target
    path = study.cell_path(SMOKE, cell, root)
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    header["config_hash"] = "000000000000"  # results of another configuration
    stale_root = tmp_path / "stale"
    stale = study.cell_path(SMOKE, cell, stale_root)
    stale.parent.mkdir(parents=True)
    stale.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    assert study.stored_points(profile, "tv", root=stale_root) == []


def test_a_retain_reference_rebuilt_from_the_store_scores_privleak_as_the_saved_one(tv_study):
    """The study scores every cell against the retain cell's item rows; those carry no saved MIA AUCs, so
    privleak's reference AUC is computed from them (it fell back to 0.5 before)."""
    from palu_perta import store
    from palu_perta.evaluation import summarise

    root, cell, profile, bench, models, retain_eval = tv_study
    retain = retain_eval.per_item()
    rebuilt = store.per_item_payload(store.item_rows(retain, {}), retain["forget_split"], retain["forget_hash"])
    assert "mia_auc" not in rebuilt
    target = pipeline.evaluation(profile, models.target, bench, retain_eval, name="target", progress=False).per_item()
    saved, from_store = summarise(target, retain), summarise(target, rebuilt)
    assert from_store["meta"]["privleak_reference_auc"] == pytest.approx(saved["meta"]["privleak_reference_auc"])
    assert saved["meta"]["privleak_reference_auc"] != 0.5
    for key in COMPARED:
        assert from_store[key] == pytest.approx(saved[key], rel=1e-6), key


def test_resummarise_rewrites_only_summaries_that_the_items_no_longer_give(tv_study, tmp_path):
    import shutil

    root, cell, profile, bench, models, retain_eval = tv_study
    copy = tmp_path / "copy"
    shutil.copytree(study.study_dir(SMOKE, root), study.study_dir(SMOKE, copy))
    assert study.resummarise(SMOKE, copy) == []  # written by the current code: nothing to change
    path = study.cell_path(SMOKE, cell, copy)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    right = next(r for r in rows if r["row"] == "summary")["metrics"]["privleak"]
    wrong = [{**r, "metrics": {**r["metrics"], "privleak": -1234.0}} if r["row"] == "summary" else r for r in rows]
    path.write_text("\n".join(json.dumps(r, sort_keys=True) for r in wrong) + "\n")
    assert study.resummarise(SMOKE, copy) == [cell.id]
    fixed = [json.loads(line) for line in path.read_text().splitlines()]
    assert next(r for r in fixed if r["row"] == "summary")["metrics"]["privleak"] == right
    assert [r for r in fixed if r["row"] != "summary"] == [r for r in rows if r["row"] != "summary"]
