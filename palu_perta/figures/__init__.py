"""Every figure of notebooks 03-07 as a function of its data, and that data kept as a result.

A notebook computes what a figure shows (norms, a lambda sweep, histogram counts: small tables, never a
model), then calls :func:`draw`::

    fig = figures.draw("03_tau_norms", {"norms": norms}, profile)

which draws it with the function registered under that name, saves the PNG where
:func:`palu_perta.plots.savefig` puts it, and writes the data beside the study's results:
``results/figures/<name>.json`` for the ``cpu`` profile (committed, like the PNG) and
``results/figures/<profile>/<name>.json`` for the others. The file records the profile, the
notebook parameters the figure depends on, the package version and their configuration hash, so a
committed figure whose configuration the current code no longer produces is visible
(:func:`stale_figures`, tested), as a study cell is.

``python -m palu_perta.figures`` (``make figures``) draws every figure again from those files: no model,
no cache, seconds. The data goes through JSON and back before drawing, in the notebook too, so the
notebook's PNG and the rebuilt one are drawn from identical values, in the project's style
(:func:`palu_perta.plots.setup`) whoever calls.

The drawing functions live in one module per notebook (:mod:`.arithmetic` for 03 and 05, ...); each takes its
data as keyword arguments and returns a :class:`matplotlib.figure.Figure`.
"""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

import numpy as np
import pandas as pd

from .. import __version__
from ..artifacts import atomic_write_text, config_hash
from ..config import Profile, get_profile
from ..paths import profile_folder
from ..store import results_root

DrawFunction = Callable[..., "matplotlib.figure.Figure"]
FIGURES: dict[str, DrawFunction] = {}
# the modules that register figures, one per notebook, imported by :func:`drawer` on first use
MODULES = ("arithmetic", "importance", "palu", "ablations")


def register(name: str) -> Callable[[DrawFunction], DrawFunction]:
    """Register a drawing function under the figure's name (the PNG's stem: ``"03_tau_norms"``)."""

    def add(function: DrawFunction) -> DrawFunction:
        if name in FIGURES and FIGURES[name] is not function:
            raise ValueError(f"figure {name!r} is registered twice")
        FIGURES[name] = function
        return function

    return add


def drawer(name: str) -> DrawFunction:
    """The function that draws figure ``name``."""
    for module in MODULES:
        importlib.import_module(f"{__name__}.{module}")
    if name not in FIGURES:
        raise KeyError(f"no figure {name!r}; registered: {', '.join(sorted(FIGURES))}")
    return FIGURES[name]


# ------------------------------------------------------------------------------------------ the data as JSON


def encode(value: Any) -> Any:
    """``value`` as plain JSON: a DataFrame as ``{"__frame__": split orientation}``, a Series as
    ``{"__series__": ...}``, an array as ``{"__array__": nested lists, "dtype": ...}``, tuples as lists,
    numpy scalars as Python numbers. Floats keep every digit (JSON's repr round-trips them exactly)."""
    if isinstance(value, pd.DataFrame):
        frame = value.to_dict(orient="split")
        return {"__frame__": {k: encode(v) for k, v in frame.items()}, "index_name": value.index.name}
    if isinstance(value, pd.Series):
        return {"__series__": {"index": encode(list(value.index)), "data": encode(list(value.to_numpy())),
                               "name": value.name}}
    if isinstance(value, np.ndarray):
        return {"__array__": encode(value.tolist()), "dtype": str(value.dtype)}
    if isinstance(value, Mapping):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"figure data must be tables, arrays, lists, numbers or strings; got {type(value).__name__}")


def decode(value: Any) -> Any:
    """The inverse of :func:`encode`."""
    if isinstance(value, dict):
        if "__frame__" in value:
            parts = value["__frame__"]
            frame = pd.DataFrame(decode(parts["data"]), index=decode(parts["index"]), columns=decode(parts["columns"]))
            frame.index.name = value.get("index_name")
            return frame
        if "__series__" in value:
            parts = value["__series__"]
            return pd.Series(decode(parts["data"]), index=decode(parts["index"]), name=parts["name"])
        if "__array__" in value:
            return np.asarray(value["__array__"], dtype=value["dtype"])
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


# ------------------------------------------------------------------------------------------ where and which


def data_dir(profile_name: str = "cpu", root: Path | None = None) -> Path:
    """Where the figure data of a profile lives (``results/figures`` for cpu, a subfolder for the others)."""
    return profile_folder((root or results_root()) / "figures", profile_name)


def data_path(name: str, profile_name: str = "cpu", root: Path | None = None) -> Path:
    return data_dir(profile_name, root) / f"{name}.json"


def figure_config(name: str, profile: Profile, parameters: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a figure's data depends on beyond the code: its name, the profile and the notebook parameters
    it was given."""
    return {"figure": name, "profile": profile.to_dict(), "parameters": encode(dict(parameters or {}))}


def record(name: str, data: Mapping[str, Any], profile: Profile, parameters: Mapping[str, Any] | None = None,
           root: Path | None = None) -> Path:
    """Write a figure's data (through a temporary file and a rename); returns the path."""
    config = figure_config(name, profile, parameters)
    payload = {"figure": name, "profile": profile.name, "config_hash": config_hash(config),
               "palu_perta": __version__, "parameters": config["parameters"], "data": encode(dict(data))}
    path = data_path(name, profile.name, root)
    atomic_write_text(path, json.dumps(payload, indent=1, allow_nan=True) + "\n")
    return path


def load(path: Path) -> dict[str, Any]:
    """A figure data file: its header fields and ``data`` decoded."""
    payload = json.loads(Path(path).read_text())
    payload["data"] = decode(payload["data"])
    return payload


def draw(name: str, data: Mapping[str, Any], profile: Profile, parameters: Mapping[str, Any] | None = None,
         save: bool = True, root: Path | None = None) -> Any:
    """Draw figure ``name`` from ``data``; with ``save``, record the data (:func:`record`) and write the PNG
    (:func:`palu_perta.plots.savefig`). The figure is drawn from the recorded values (after a JSON round
    trip), as :func:`rebuild` draws it. Returns the figure."""
    function = drawer(name)
    if save:
        data = load(record(name, data, profile, parameters, root))["data"]
    else:
        data = decode(json.loads(json.dumps(encode(dict(data)))))
    fig = _styled(function, data)
    if save:
        from ..plots import savefig

        savefig(fig, name, profile.name)
    return fig


def _styled(function: DrawFunction, data: Mapping[str, Any]) -> Any:
    """``function(**data)`` in the project's style (:func:`palu_perta.plots.setup`), as every notebook sets it."""
    from ..plots import setup

    setup()
    return function(**data)


def recorded(profile_name: str = "cpu", root: Path | None = None) -> list[Path]:
    """The figure data files of a profile, by name."""
    folder = data_dir(profile_name, root)
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def stale_figures(profile_name: str = "cpu", root: Path | None = None) -> list[str]:
    """The recorded figures whose configuration hash the current code and profile no longer give (the
    profile or the package version changed since they were drawn): rerun their notebook."""
    profile = get_profile(profile_name)
    stale = []
    for path in recorded(profile_name, root):
        payload = json.loads(path.read_text())
        config = figure_config(payload["figure"], profile, payload.get("parameters"))
        if payload.get("config_hash") != config_hash(config):
            stale.append(payload["figure"])
    return stale


def rebuild(profile_name: str = "cpu", names: Sequence[str] | None = None, root: Path | None = None) -> list[Path]:
    """Draw every recorded figure of a profile (or those in ``names``) again from its data and write its PNG;
    returns the PNG paths. Nothing is trained or loaded but the data files."""
    import matplotlib.pyplot as plt

    from ..plots import figure_path, write_png

    written = []
    for path in recorded(profile_name, root):
        payload = load(path)
        if names and payload["figure"] not in names:
            continue
        fig = _styled(drawer(payload["figure"]), payload["data"])
        # no overlap check here: the notebook's draw checked these very values (and the tests check the
        # committed data), and the check draws every figure a second time
        written.append(write_png(fig, figure_path(payload["figure"], profile_name), check=False))
        plt.close(fig)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m palu_perta.figures",
                                     description="Redraw the notebooks' figures from their recorded data (results/figures).")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("names", nargs="*", help="figure names (default: every recorded one)")
    args = parser.parse_args(argv)
    matplotlib.use("Agg")
    stale = stale_figures(args.profile)
    for path in rebuild(args.profile, args.names or None):
        print(path)
    if stale:
        print(f"stale (their notebooks changed configuration since): {', '.join(stale)}")
    return 0
