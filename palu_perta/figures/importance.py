"""The figures of notebook 04 (parameter importance and the PerTA weights), each drawn from its recorded data
(see :mod:`palu_perta.figures`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from . import register

IMPORTANCE_TITLES = {"grad": "gradient: |mean dNLL/dtheta|", "fisher": "diagonal Fisher: mean (dlog p/dtheta)^2"}


@register("04_importance_by_layer_type")
def importance_by_layer_type(samples: Mapping[str, Mapping[str, Mapping[str, Sequence[float]]]]) -> plt.Figure:
    """Letter-value (boxen) plots of log10 importance per layer type, forget against retain, one panel per
    estimator. ``samples``: method ("grad", "fisher") -> set ("forget", "retain") -> layer type
    ("embeddings", "attention", ...) -> 1-D log10 importance of a random sample of that type's nonzero
    entries. The layer types and sets are drawn in the order given."""
    long = pd.concat([pd.DataFrame({"method": method, "set": split, "layer type": kind,
                                    "log10 importance": np.asarray(values, dtype=float)})
                      for method, by_set in samples.items() for split, by_type in by_set.items()
                      for kind, values in by_type.items()], ignore_index=True)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    for ax, method in zip(axes, ("grad", "fisher")):
        sns.boxenplot(data=long[long["method"] == method], x="layer type", y="log10 importance", hue="set",
                      ax=ax, legend=ax is axes[-1], showfliers=False)
        ax.set(title=IMPORTANCE_TITLES[method], xlabel="")
    axes[-1].legend(title="set", loc="upper left", bbox_to_anchor=(1, 1))
    return fig


@register("04_weight_histograms")
def weight_histograms(histograms: Mapping[str, Mapping[str, Sequence[float]]]) -> plt.Figure:
    """The distribution of the PerTA weights, one step line per estimator, as the share of parameters per bin
    on a log axis. ``histograms``: method ("grad", "fisher") -> {"counts": the number of weights in each bin
    (length B), "edges": the bins' edges over [0, 1] (length B + 1)}."""
    fig, ax = plt.subplots(figsize=(8, 4))
    for method, histogram in histograms.items():
        counts, edges = np.asarray(histogram["counts"], dtype=float), np.asarray(histogram["edges"], dtype=float)
        ax.stairs(counts / counts.sum(), edges, label=f"PerTA-{method}", linewidth=2)
    ax.axvline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set(yscale="log", xlabel="weight w = I_f / (I_f + I_r)", ylabel="share of parameters",
           title="PerTA weights (our formula, p = 1)")
    ax.legend()
    return fig
