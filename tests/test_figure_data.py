"""The figures of notebooks 03-07 as data (palu_perta.figures): recorded by the notebook, redrawn by
`make figures` from the JSON alone, byte for byte; stale data visible."""

import hashlib
import json
import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from palu_perta import figures, plots  # noqa: E402
from palu_perta.config import get_profile  # noqa: E402
from palu_perta.figures.arithmetic import summary_point, sweep_columns  # noqa: E402
from palu_perta.paths import repo_root  # noqa: E402
from tests.test_notebooks import AWAITING_CPU_RERUN  # noqa: E402

NORMS = pd.DataFrame({"||tau||": [1.5e-2, 2.25e-2, 3.1e-3], "relative": [1.1e-3, 2.2e-3, 5.0e-4]},
                     index=["embed_tokens", "layers.0", "layers.1"])
SWEEP = pd.DataFrame({"lam": [0.5, 1.0, 2.0], "model_utility": [0.41, 0.36, 0.21],
                      "forget_Q_A_ROUGE": [0.61, 0.42, 0.18], "forget_quality": [1.2e-3, 0.013, 0.1], "eval_s": [9, 8, 7]})
TARGET = {"model_utility": 0.45, "forget_Q_A_ROUGE": 0.93, "forget_quality": 2.1e-5, "meta": "unused"}
RETAIN = {"model_utility": 0.44, "forget_Q_A_ROUGE": 0.35, "forget_quality": 1.0}


@pytest.fixture
def places(tmp_path, monkeypatch):
    monkeypatch.setenv("PALU_PERTA_FIGURES", str(tmp_path / "figures"))
    monkeypatch.setenv("PALU_PERTA_RESULTS", str(tmp_path / "results"))
    return tmp_path


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_encode_decode_round_trips_tables_arrays_and_numbers():
    frame = pd.DataFrame({"a": [1.0, float("nan"), 1 / 3], "b": ["x", "y", "z"]}, index=pd.Index(["p", "q", "r"], name="k"))
    value = {"frame": frame, "series": pd.Series([0.1, 0.2], index=["u", "v"], name="s"),
             "array": np.arange(6, dtype=np.int64).reshape(2, 3), "pair": (3, 4), "scalar": np.float32(0.5),
             "nested": {"x": [1, 2.5, None, "t"]}}
    back = figures.decode(json.loads(json.dumps(figures.encode(value))))
    pd.testing.assert_frame_equal(back["frame"], frame)
    pd.testing.assert_series_equal(back["series"], value["series"])
    np.testing.assert_array_equal(back["array"], value["array"])
    assert back["array"].dtype == np.int64
    assert back["pair"] == [3, 4] and back["scalar"] == 0.5 and back["nested"] == {"x": [1, 2.5, None, "t"]}


def test_a_tensor_or_a_model_is_refused_with_the_reason():
    with pytest.raises(TypeError, match="figure data must be tables, arrays.*got Tensor"):
        figures.encode({"weights": torch.zeros(3)})


def test_draw_records_the_data_and_rebuild_redraws_the_same_png(places):
    profile = get_profile("smoke")
    figures.draw("03_tau_norms", {"norms": NORMS}, profile)
    figures.draw("03_tv_tradeoff", {"tv": sweep_columns(SWEEP), "target": summary_point(TARGET),
                                    "retain": summary_point(RETAIN), "fq_items": (20, 20)}, profile)
    plt.close("all")
    pngs = sorted((places / "figures" / "smoke").glob("*.png"))
    assert [p.name for p in pngs] == ["03_tau_norms.png", "03_tv_tradeoff.png"]
    data = places / "results" / "figures" / "smoke" / "03_tv_tradeoff.json"
    payload = json.loads(data.read_text())
    assert payload["figure"] == "03_tv_tradeoff" and payload["profile"] == "smoke"
    assert set(payload["data"]["tv"]["__frame__"]["columns"]) == {"lam", "model_utility", "forget_Q_A_ROUGE",
                                                                  "forget_quality"}  # the drawn columns only
    before = {p.name: _md5(p) for p in pngs}
    for p in pngs:
        p.unlink()
    plt.rcdefaults()  # `make figures` runs in a fresh process: no notebook set the style
    rebuilt = figures.rebuild("smoke")
    assert sorted(p.name for p in rebuilt) == sorted(before)
    assert {p.name: _md5(p) for p in rebuilt} == before
    assert figures.rebuild("smoke", ["03_tau_norms"])[0].name == "03_tau_norms.png"


def test_draw_without_save_writes_nothing(places):
    fig = figures.draw("03_tau_norms", {"norms": NORMS}, get_profile("smoke"), save=False)
    assert len(fig.axes) == 2
    plt.close(fig)
    assert not (places / "figures").exists() and not (places / "results").exists()


def test_a_figure_whose_configuration_changed_is_stale(places):
    profile = get_profile("smoke")
    path = figures.record("03_tau_norms", {"norms": NORMS}, profile, parameters={"top_fraction": 0.01})
    assert figures.stale_figures("smoke") == []
    payload = json.loads(path.read_text())
    payload["parameters"]["top_fraction"] = 0.02  # the data no longer says what produced it
    path.write_text(json.dumps(payload))
    assert figures.stale_figures("smoke") == ["03_tau_norms"]
    figures.record("03_tau_norms", {"norms": NORMS}, profile.replace(n_authors=5))  # another profile's data
    assert figures.stale_figures("smoke") == ["03_tau_norms"]


def test_unknown_figure_names_the_registered_ones():
    with pytest.raises(KeyError, match="no figure '03_nope'; registered: .*03_tau_norms"):
        figures.drawer("03_nope")


def _committed_figures():
    names = sorted(p.stem for p in (repo_root() / "figures").glob("0[3-7]_*.png"))
    assert names, "no committed figures of notebooks 03-07"
    return names


def test_every_committed_figure_of_03_to_07_has_a_drawing_function():
    missing = []
    for name in _committed_figures():
        try:
            figures.drawer(name)
        except KeyError:
            missing.append(name)
    assert not missing, f"figures without a function in palu_perta/figures: {missing}"


def test_every_committed_figure_rebuilds_from_committed_data_or_awaits_its_notebook_rerun(tmp_path, monkeypatch):
    """`make figures` redraws a committed figure of 03-07 only from its committed data
    (results/figures/<name>.json, written by the notebook's cpu run); a notebook still awaiting its cpu
    rerun (tests/test_notebooks.py) may lack it. Committed data must be current, draw cleanly, and draw the
    committed PNG."""
    data = {p.stem for p in figures.recorded("cpu")}
    notebook_of = {p.stem[:2]: p.stem for p in (repo_root() / "notebooks").glob("0[3-7]_*.ipynb")}
    lacking = [n for n in _committed_figures() if n not in data and notebook_of[n[:2]] not in AWAITING_CPU_RERUN]
    assert not lacking, f"committed figures without committed data (rerun their notebook on cpu): {lacking}"
    assert figures.stale_figures("cpu") == [], "committed figure data from another configuration: rerun the notebook"
    redrawn = tmp_path / "figures"
    monkeypatch.setenv("PALU_PERTA_FIGURES", str(redrawn))  # `make figures`, into a scratch folder
    for png in figures.rebuild("cpu"):
        problem = plots.picture_difference(repo_root() / "figures" / png.name, png)
        assert problem is None, f"figures/{png.name} is not what its committed data draws: {problem}"
    for path in figures.recorded("cpu"):
        payload = figures.load(path)
        assert re.fullmatch(r"0[3-7]_\w+", payload["figure"]) and payload["profile"] == "cpu"
        assert path.stat().st_size < 400_000, f"{path.name}: figure data should be small"
        fig = figures.drawer(payload["figure"])(**payload["data"])
        plots.check_figure(fig)
        plt.close(fig)


def test_picture_difference_tells_same_pictures_from_different_ones(tmp_path):
    def png(name, values, width=4):
        fig, ax = plt.subplots(figsize=(width, 3))
        ax.plot(values)
        path = tmp_path / name
        fig.savefig(path, dpi=50)
        plt.close(fig)
        return path

    a, again = png("a.png", [1, 2, 3]), png("again.png", [1, 2, 3])
    assert plots.picture_difference(a, again) is None
    assert "RMS" in plots.picture_difference(a, png("b.png", [3, 1, 2]))
    assert "size" in plots.picture_difference(a, png("wide.png", [1, 2, 3], width=6))
