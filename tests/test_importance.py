"""Tests of palu_perta.importance against a plain autograd loop, on a tiny random Llama and hand-made
right-padded batches."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from transformers import LlamaConfig, LlamaForCausalLM

from palu_perta import importance
from palu_perta.importance import parameter_importance

# Two examples: (input_ids, number of prompt tokens). Labels: -100 on the prompt, the ids on the answer.
EXAMPLES = [([5, 9, 14, 3, 7, 22, 1], 3), ([8, 2, 40, 17, 6], 2)]


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    return LlamaForCausalLM(config)


def make_batch(examples: list[tuple[list[int], int]], pad: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded batch of the batch contract (token_classes included, as the collator adds it)."""
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad)
    attention_mask = torch.zeros_like(input_ids)
    labels = torch.full_like(input_ids, -100)
    for row, (ids, prompt) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
        labels[row, prompt : len(ids)] = torch.tensor(ids[prompt:])
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "token_classes": (labels != -100).long(),
    }


def reference(model: LlamaForCausalLM, examples: list[tuple[list[int], int]], method: str) -> dict[str, torch.Tensor]:
    """The definitions written plainly: one example at a time, .backward(), sums over examples."""
    sums = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    model.eval()
    for ids, prompt in examples:
        model.zero_grad()
        logits = model(torch.tensor([ids])).logits[0]
        logprobs = torch.log_softmax(logits, dim=-1)
        answer = [logprobs[t - 1, ids[t]] for t in range(prompt, len(ids))]  # position t-1 predicts token t
        loss = -sum(answer) / len(answer) if method == "grad" else sum(answer)
        loss.backward()
        for name, p in model.named_parameters():
            sums[name] += p.grad if method == "grad" else p.grad**2
    model.zero_grad(set_to_none=True)
    n = len(examples)
    return {name: (s / n).abs() if method == "grad" else s / n for name, s in sums.items()}


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to float32 rounding, absolute tolerance relative to the tensor's scale (means cancel)."""
    return torch.allclose(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))


def assert_close(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(expected)
    for name in expected:
        assert got[name].dtype == torch.float32
        assert close(got[name], expected[name]), name


@pytest.mark.parametrize(
    ("method", "per_example"), [("grad", "auto"), ("fisher", "loop"), ("fisher", "vmap"), ("fisher", "auto")]
)
def test_matches_a_plain_autograd_loop(method, per_example):
    model = tiny_llama()
    expected = reference(model, EXAMPLES, method)
    batches = [make_batch(EXAMPLES)]
    got = parameter_importance(model, batches, method, per_example=per_example, progress=False)
    assert_close(got, expected)
    assert any(t.abs().sum() > 0 for t in got.values())


@pytest.mark.parametrize(
    ("over_limit", "unused"), [(0, "_add_squared_gradients_loop"), (1, "_add_squared_gradients_vmap")]
)
def test_auto_takes_vmap_up_to_the_size_limit_and_the_loop_beyond(monkeypatch, over_limit, unused):
    def fail(*args):
        raise AssertionError(f"{unused} was called")

    model = tiny_llama()
    entries = len(EXAMPLES) * sum(p.numel() for p in model.parameters())  # batch size x parameters
    monkeypatch.setattr(importance, "AUTO_VMAP_MAX_ENTRIES", entries - over_limit)
    monkeypatch.setattr(importance, unused, fail)
    got = parameter_importance(model, [make_batch(EXAMPLES)], "fisher", per_example="auto", progress=False)
    assert_close(got, reference(model, EXAMPLES, "fisher"))


@pytest.mark.parametrize("method", ["grad", "fisher"])
def test_independent_of_batching(method):
    model = tiny_llama()
    together = parameter_importance(model, [make_batch(EXAMPLES)], method, progress=False)
    apart = parameter_importance(model, [make_batch([e]) for e in EXAMPLES], method, progress=False)
    assert_close(apart, together)


def test_fisher_of_one_example_is_its_squared_gradient():
    """For one example the Fisher is (d log p(y|x))^2 and the grad importance |d NLL| = |d log p(y|x)| / |y|."""
    model = tiny_llama()
    example, prompt = EXAMPLES[0]
    batch = [make_batch([(example, prompt)])]
    fisher = parameter_importance(model, batch, "fisher", progress=False)
    grad = parameter_importance(model, batch, "grad", progress=False)
    answer_tokens = len(example) - prompt
    assert_close(fisher, {name: (answer_tokens * g) ** 2 for name, g in grad.items()})


def test_examples_without_answer_tokens_do_not_count():
    model = tiny_llama()
    no_answer = ([4, 4, 4], 3)
    got = parameter_importance(model, [make_batch([*EXAMPLES, no_answer])], "grad", progress=False)
    assert_close(got, reference(model, EXAMPLES, "grad"))


def test_model_state_is_restored_and_no_grad_is_left():
    model = tiny_llama()
    model.train()
    model.model.norm.weight.requires_grad_(False)
    parameter_importance(model, [make_batch(EXAMPLES)], "fisher", per_example="loop", progress=False)
    assert model.training
    assert not model.model.norm.weight.requires_grad
    assert all(p.grad is None for p in model.parameters())


def test_fraction_subset_is_deterministic_and_exact_in_size():
    model = tiny_llama()
    examples = [*EXAMPLES, ([3, 30, 31, 32], 1), ([12, 13, 50, 51, 52, 53], 4)]
    batches = [make_batch(examples[:2]), make_batch(examples[2:])]
    singles = [parameter_importance(model, [make_batch([e])], "grad", progress=False) for e in examples]

    def which(importance: dict[str, torch.Tensor]) -> int:
        """Index of the single example whose importance this is (fraction 0.1 of 4 keeps 1 example)."""
        matches = [i for i, single in enumerate(singles) if all(close(importance[n], single[n]) for n in single)]
        assert len(matches) == 1
        return matches[0]

    chosen = [
        which(parameter_importance(model, batches, "grad", fraction=0.1, seed=seed, progress=False))
        for seed in range(4)
    ]
    assert len(set(chosen)) > 1
    assert which(parameter_importance(model, batches, "grad", fraction=0.1, seed=0, progress=False)) == chosen[0]
    half = parameter_importance(model, iter(batches), "grad", fraction=0.5, seed=3, progress=False)
    assert_close(half, parameter_importance(model, batches, "grad", fraction=0.5, seed=3, progress=False))


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5, math.nan])
def test_fraction_outside_the_unit_interval_raises(fraction):
    with pytest.raises(ValueError, match="fraction"):
        parameter_importance(tiny_llama(), [make_batch(EXAMPLES)], fraction=fraction, progress=False)


@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_empty_data_set_raises(fraction):
    with pytest.raises(ValueError, match="empty"):
        parameter_importance(tiny_llama(), [], fraction=fraction, progress=False)


def test_argument_errors():
    model, batches = tiny_llama(), [make_batch(EXAMPLES)]
    with pytest.raises(ValueError, match="method"):
        parameter_importance(model, batches, "hessian", progress=False)
    with pytest.raises(ValueError, match="per_example"):
        parameter_importance(model, batches, "fisher", per_example="jit", progress=False)
    left_padded = make_batch(EXAMPLES)
    left_padded["attention_mask"] = left_padded["attention_mask"].flip(1)
    with pytest.raises(ValueError, match="right-padded"):
        parameter_importance(model, [left_padded], progress=False)


def test_distributed_reduction_with_one_process(tmp_path):
    """The all_reduce path (gloo, world size 1) gives the single-process result."""
    model = tiny_llama()
    expected = parameter_importance(model, [make_batch(EXAMPLES)], "fisher", progress=False)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        got = parameter_importance(model, [make_batch(EXAMPLES)], "fisher", progress=False)
    finally:
        dist.destroy_process_group()
    assert_close(got, expected)


# ------------------------------------------------------------------ group_size: the size-matched gradient importance

MORE = [([5, 9, 14, 3, 7, 22, 1], 3), ([8, 2, 40, 17, 6], 2), ([11, 4, 4, 30, 2, 9], 4), ([3, 33, 12, 7], 1),
        ([21, 6, 19, 2, 50, 8, 13, 1], 5), ([7, 7, 25, 3, 44], 2), ([2, 18, 5, 60], 3)]


def test_example_groups_split_every_example_once_into_near_equal_groups():
    groups = importance.example_groups(7, 3, seed=4)
    assert len(groups) == 2 and sorted(len(g) for g in groups) == [3, 4]
    assert sorted(torch.cat(groups).tolist()) == list(range(7))
    again = importance.example_groups(7, 3, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(groups, again))  # seeded
    assert [len(g) for g in importance.example_groups(180, 20)] == [20] * 9  # the cpu profile's retain set
    with pytest.raises(ValueError, match="cannot make one group"):
        importance.example_groups(2, 3)


@pytest.mark.parametrize("group_size", [1, 2, 3, 7])
def test_grouped_importance_is_the_mean_of_each_groups_absolute_mean_gradient(group_size):
    """Written plainly: for each group of example_groups, the reference |mean gradient| of its examples;
    then the mean over groups. group_size 1 is the mean of |per-example gradient|, 7 (one group) the plain formula."""
    model = tiny_llama()
    batches = [make_batch(MORE[:4]), make_batch(MORE[4:])]  # batching differs from the groups'
    got = parameter_importance(model, batches, "grad", seed=3, progress=False, group_size=group_size)
    groups = importance.example_groups(len(MORE), group_size, seed=3)
    per_group = [reference(model, [MORE[i] for i in g.tolist()], "grad") for g in groups]
    for name, value in got.items():
        expected = sum(p[name] for p in per_group) / len(groups)
        torch.testing.assert_close(value, expected, rtol=1e-4, atol=1e-7)
    if group_size == len(MORE):
        plain = parameter_importance(model, batches, "grad", progress=False)
        for name in got:
            torch.testing.assert_close(got[name], plain[name], rtol=1e-4, atol=1e-7)


def test_grouped_importance_is_above_the_plain_one():
    """With equal groups, the mean of |group means| is at least |mean of all| (triangle inequality), strictly
    where the groups disagree in sign."""
    model = tiny_llama()
    batches = [make_batch(MORE[:6])]  # three groups of two
    plain = parameter_importance(model, batches, "grad", progress=False)
    grouped = parameter_importance(model, batches, "grad", progress=False, group_size=2)
    assert all((grouped[n] >= plain[n] - 1e-7).all() for n in plain)
    assert sum(float((grouped[n] - plain[n]).sum()) for n in plain) > 0


def test_group_size_errors():
    model, batches = tiny_llama(), [make_batch(EXAMPLES)]
    with pytest.raises(ValueError, match="Fisher"):
        parameter_importance(model, batches, "fisher", progress=False, group_size=1)
    with pytest.raises(ValueError, match="group_size must be"):
        parameter_importance(model, batches, "grad", progress=False, group_size=0)
    with pytest.raises(ValueError, match="cannot make one group"):
        parameter_importance(model, batches, "grad", progress=False, group_size=3)


def test_the_bias_benchmark_computes_both_importances_in_one_pass(monkeypatch):
    """benchmarks/importance_bias.py derives the plain and the size-matched importance from one pass over the
    groups: both must equal parameter_importance's."""
    import importlib.util
    from pathlib import Path
    from types import SimpleNamespace

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "importance_bias.py"
    spec = importlib.util.spec_from_file_location("importance_bias", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    batches = [make_batch(MORE)]
    monkeypatch.setattr(bench.perta, "importance_batches", lambda *args, **kwargs: batches)
    profile = SimpleNamespace(seed=5, finetune=SimpleNamespace(max_length=64, per_device_batch_size=3))
    model = tiny_llama()
    plain, grouped = bench.plain_and_grouped(model, None, MORE, profile, group_size=2)
    direct_plain, direct_grouped = importance.plain_and_grouped_gradient_importance(model, batches, 2, seed=5,
                                                                                    progress=False)
    expected_plain = parameter_importance(model, batches, "grad", progress=False)
    expected_grouped = parameter_importance(model, batches, "grad", seed=5, progress=False, group_size=2)
    for name in plain:
        torch.testing.assert_close(plain[name], expected_plain[name], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(grouped[name], expected_grouped[name], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(direct_plain[name], plain[name])
        torch.testing.assert_close(direct_grouped[name], grouped[name])


ROOT = Path(__file__).resolve().parents[1]


def _bias_record_and_notes(at: str) -> tuple[dict, str]:
    """The committed record of ``benchmarks/importance_bias.py --profile cpu --at AT`` and benchmarks/NOTES.md,
    after checking that NOTES.md holds the table the script prints from that record (skips without a record)."""
    record = ROOT / "benchmarks" / "results" / f"importance_bias_cpu_{at}.json"
    if not record.is_file():
        pytest.skip(f"no committed bias record at the {at} model")
    spec = importlib.util.spec_from_file_location("importance_bias", ROOT / "benchmarks" / "importance_bias.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = json.loads(record.read_text())
    notes = (ROOT / "benchmarks" / "NOTES.md").read_text()
    assert bench.table(result) in notes, f"benchmarks/NOTES.md's bias table at the {at} model differs from the " \
        "record: paste the new one"
    return result, notes


def test_the_bias_notes_quote_the_committed_measurement():
    """benchmarks/NOTES.md quotes the table benchmarks/importance_bias.py prints from its committed record, and
    the numbers of its prose (a rerun that moves them fails here, naming the file to rewrite)."""
    result, notes = _bias_record_and_notes("base")
    null, real = result["null"][0], result["real"]
    quoted = {"w's global mean is": null["plain"]["mean_w"], "I_f / I_r": null["plain"]["median_ratio"],
              "mean w": null["size_matched"]["mean_w"], "median ratio": null["size_matched"]["median_ratio"]}
    section = notes[notes.index("## PerTA's gradient importance and the sizes"):]
    for before, value in quoted.items():
        assert f"{before} {value:.3f}" in section or f"{before} {value:.2f}" in section, before
    percent = lambda share: f"{100 * share:.0f} %"  # noqa: E731 - the notes' way of writing a share
    assert f"(median ratio {real['plain']['median_ratio']:.2f}, {percent(real['plain']['share_w_above_half'])}" in section
    assert f"({real['size_matched']['median_ratio']:.2f}, {percent(real['size_matched']['share_w_above_half'])})" in section
    assert f"overlap by only {percent(real['top1_overlap'])}" in section


def test_the_bias_notes_quote_the_measurement_at_the_target():
    """The target's section of benchmarks/NOTES.md quotes the table of its committed record and the numbers of its
    prose; notebook 04 checks the same numbers and that the record's weights are its own."""
    result, notes = _bias_record_and_notes("target")
    section = " ".join(notes[notes.index("### At the target model"):notes.index("## The cpu study's time")].split())
    null, real = result["null"][0], result["real"]
    quoted = {f"median ratio of {null['plain']['median_ratio']:.2f} and mean w {null['plain']['mean_w']:.3f}",
              f"median ratio {null['size_matched']['median_ratio']:.2f}, mean w {null['size_matched']['mean_w']:.3f}",
              f"the two give {real['plain']['median_ratio']:.2f} and {real['size_matched']['median_ratio']:.2f}",
              f"{real['plain']['median_ratio'] / null['plain']['median_ratio']:.2f} and "
              f"{real['size_matched']['median_ratio'] / null['size_matched']['median_ratio']:.2f} times their own nulls",
              f"overlap by only {real['top1_overlap'] * 100:.0f} %"}
    base = ROOT / "benchmarks" / "results" / "importance_bias_cpu_base.json"
    if base.is_file():  # the comparison with the base model's null split
        quoted.add(f"than at the base model ({json.loads(base.read_text())['null'][0]['plain']['median_ratio']:.2f} there)")
    for phrase in quoted:
        assert phrase in section, phrase
