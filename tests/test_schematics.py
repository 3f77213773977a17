"""The pictures of the two methods (notebook 00, the README) draw what the package computes: PALU's
outlined tokens are the loss's onset positions and its red tokens the record's spans; PerTA's panels
are tau, w and -lambda (w ⊙ tau) of the block they name."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

from palu_perta import plots  # noqa: E402
from palu_perta.data import synthetic_benchmark  # noqa: E402
from palu_perta.losses import onset_mask  # noqa: E402
from palu_perta.spans import sensitive_tokens  # noqa: E402
from palu_perta.tokenization import SENSITIVE, Collator, encode_qa, pad_id  # noqa: E402


@pytest.fixture(scope="module")
def record():
    bench = synthetic_benchmark(n_authors=4, qa_per_author=4, forget_split="forget01", n_holdout_authors=0,
                                n_world_facts=4, seed=0)
    return bench.forget[0]


@pytest.mark.parametrize("first_n", [1, 3])
def test_palu_example_is_the_loss_onset_mask_and_the_record_spans(tiny, record, first_n):
    model, tokenizer = tiny
    example = plots.palu_example(model, tokenizer, record, first_n=first_n, top_k=20)
    encoded = encode_qa(tokenizer, record["question"], record["answer"], record["target_words"])
    onset = onset_mask(Collator(pad_id(tokenizer))([encoded])["token_classes"][:, 1:], first_n)[0]
    start = encoded["prompt_length"]
    # answer token i is an onset token when position start + i - 1 (which predicts it) is in the mask
    assert example["onset"] == [bool(onset[start + i - 1]) for i in range(len(example["tokens"]))]
    assert sum(example["onset"]) > 0
    # the red tokens are the spans of spans.py (EOS, the last token, is never sensitive)
    sensitive = [c == SENSITIVE for c in example["classes"]]
    assert sensitive[:-1] == sensitive_tokens(tokenizer, record["answer"], record["target_words"]).tolist()
    assert not sensitive[-1]
    assert example["onset"][example["position"]] and example["position"] == example["onset"].index(True)
    # the logits at that onset: the model's top-K, decreasing, and the vocabulary mean below them
    assert len(example["logits"]) == len(example["candidates"]) == 20
    assert example["logits"] == sorted(example["logits"], reverse=True)
    assert example["vocab_mean"] < example["logits"][-1]
    with torch.no_grad():
        z = model(input_ids=torch.tensor([encoded["input_ids"]])).logits[0, start + example["position"] - 1]
    assert example["logits"] == pytest.approx(z.topk(20).values.tolist(), abs=1e-5)
    assert example["vocab_mean"] == pytest.approx(z.mean().item(), abs=1e-5)


def test_palu_example_at_the_authors_configuration_outlines_every_sensitive_token(tiny, record):
    """With config.PALU_HYPER (temporal "sensitive", K = 1) the outlined tokens are the red ones, N is "all" (-1) and
    one candidate is drawn; first_n = -1 draws the same tokens; a scope that is not sensitive tokens is refused."""
    from palu_perta.config import PALU_HYPER

    model, tokenizer = tiny
    example = plots.palu_example(model, tokenizer, record, hyper=PALU_HYPER)
    assert example["onset"] == [c == SENSITIVE for c in example["classes"]] and sum(example["onset"]) > 3
    assert example["first_n"] == -1 and len(example["logits"]) == PALU_HYPER["top_k"] == 1
    assert plots.palu_example(model, tokenizer, record, first_n=-1, top_k=1) == example
    fig = plots.palu_schematic(**example)
    try:
        assert "every sensitive token" in fig.axes[0].get_title(loc="left")
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match="temporal='answer'"):
        plots.palu_example(model, tokenizer, record, hyper={"temporal": "answer"})


def test_palu_schematic_outlines_exactly_the_onset_tokens(tiny, record):
    model, tokenizer = tiny
    example = plots.palu_example(model, tokenizer, record, which=1)
    fig = plots.palu_schematic(**example, shown=10)
    try:
        ax_tokens, ax_logits = fig.axes
        boxes = [p for p in ax_tokens.patches if isinstance(p, plt.Rectangle)]
        assert len(boxes) == len(example["tokens"])
        outlined = [to_hex(b.get_edgecolor()) == plots.ONSET_COLOUR for b in boxes]
        assert outlined == example["onset"]
        red = [to_hex(b.get_facecolor()) == plots.CLASS_COLOURS[SENSITIVE] for b in boxes]
        assert red == [c == SENSITIVE for c in example["classes"]]
        bars = ax_logits.patches
        assert len(bars) == 10
        assert [b.get_y() + b.get_height() for b in bars] == pytest.approx(example["logits"][:10])
        assert all(b.get_y() == pytest.approx(example["vocab_mean"]) for b in bars)
        assert "L_" in fig._suptitle.get_text()
        assert repr(example["tokens"][example["position"]]) in ax_logits.get_title(loc="left")
    finally:
        plt.close(fig)


def test_palu_example_refuses_an_answer_without_spans(tiny, record):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="no sensitive token"):
        plots.palu_example(model, tokenizer, {**record, "target_words": []})


def test_perta_schematic_draws_tau_w_and_the_update():
    generator = torch.Generator().manual_seed(0)
    tau = {"model.embed_tokens.weight": torch.randn(30, 8, generator=generator),
           "model.layers.0.input_layernorm.weight": torch.randn(8, generator=generator),
           "model.layers.0.mlp.up_proj.weight": torch.randn(20, 24, generator=generator)}
    weights = {name: torch.rand(t.shape, generator=generator) for name, t in tau.items()}
    block = plots.perta_slice(tau, weights, rows=6, cols=9)
    assert block["name"] == "model.layers.0.mlp.up_proj.weight[:6, :9]"
    np.testing.assert_array_equal(block["tau"], tau["model.layers.0.mlp.up_proj.weight"][:6, :9].numpy())
    fig = plots.perta_schematic(block["tau"], block["weights"], 2.5, name=block["name"])
    try:
        assert len(fig.axes) == 8  # four heatmaps and their colour bars
        heatmaps = [ax for ax in fig.axes if ax.get_title()]
        assert len(heatmaps) == 4
        shown = [ax.collections[0].get_array().reshape(6, 9) for ax in heatmaps]
        expected = [block["tau"], block["weights"], -2.5 * block["weights"] * block["tau"], -2.5 * block["tau"]]
        for values, wanted in zip(shown, expected):
            np.testing.assert_allclose(values, wanted, rtol=1e-6)
        assert "lambda" in heatmaps[2].get_title() and "2.5" in heatmaps[2].get_title()
        assert r"\theta_o - \lambda" in fig._suptitle.get_text()
    finally:
        plt.close(fig)
