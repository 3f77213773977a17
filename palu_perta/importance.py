"""Per-parameter importance for PerTA (docs/design.md, "Importance"): gradient magnitude or diagonal Fisher.

``parameter_importance(model, batches, method)`` returns one float32 tensor per floating parameter of
``model``, keyed by the names of ``model.named_parameters()`` (the keys of a
:class:`~palu_perta.task_vectors.TaskVector`). The importance is evaluated at ``model`` itself: pass the
original model theta_o, or the base model for the "importance at the base model" ablation.

Definitions, over the N examples of the data set that have at least one answer token:

- ``"grad"``: I = | (1/N) sum_n dNLL_n/dtheta |, with NLL_n the mean cross-entropy over the answer
  tokens of example n (the answer NLL of the batch contract, one example at a time). Every example
  weighs the same whatever its answer length or the batch it falls in, so the result does not depend
  on the batching. One backward pass per batch (of the summed per-example NLLs) gives the sum.
- ``"fisher"`` (empirical diagonal Fisher): I = (1/N) sum_n (d log p(y_n|x_n)/dtheta)^2, with
  log p(y|x) the *summed* answer log-probability (answer tokens and final EOS) as docs/design.md writes it,
  not its per-token mean: the Fisher of the sequence distribution. It needs one gradient per example:
  ``per_example="loop"`` runs forward/backward on batch-size-1 slices (trimmed to their length);
  ``"vmap"`` computes a whole batch at once with ``torch.func`` (``vmap(grad(...))`` over
  ``functional_call``), holding batch-size gradients; ``"auto"`` takes vmap when a batch's
  per-example gradients have at most :data:`AUTO_VMAP_MAX_ENTRIES` entries (batch size x parameters),
  the loop otherwise.

Measured for ``"auto"`` (Fisher, one batch of 8 full-length examples, float32, 1 CPU thread, median of 9;
project CPU shared with other jobs, hence 1 thread for stable timings):

=============================================  ==========  ======  ======  ========
model (Llama, tied embeddings)                 parameters  tokens  loop    vmap
=============================================  ==========  ======  ======  ========
vocab 64, hidden 32, 2 layers (tests)          23 k        16      41 ms   19 ms
vocab 4096, hidden 64, 2 layers                361 k       64      105 ms  106 ms
vocab 49152, hidden 64, 2 layers (smoke tiny)  3.2 M       64      0.81 s  1.58 s
vocab 49152, hidden 256, 4 layers              16.8 M      64      3.03 s  4.61 s
=============================================  ==========  ======  ======  ========

vmap wins where Python overhead dominates, the loop beyond ~3 M per-example gradient entries per batch
(vmap materialises them all, and SDPA has no vmap batching rule, so attention falls back to a loop
inside vmap anyway). vmap works on HF Llama only without an attention mask: transformers builds the
mask with data-dependent branches (``.item()``), which vmap rejects. Without a mask the result is
exact for right-padded batches: under causal attention a real token never attends to the padding that
follows it (batches are checked to be right-padded).

The size bias of ``"grad"``. If a parameter's per-example gradients have mean mu and standard deviation
sigma, the mean over N examples is about normal with sd s = sigma / sqrt(N), and E|mean| = mu where
|mu| >> s but s * sqrt(2 / pi) where mu = 0: a noise floor that falls as 1 / sqrt(N). PerTA compares a
forget importance over N_f examples with a retain importance over N_r; with N_f = 20 and N_r = 180 (the cpu
profile) a parameter that matters to neither set gets I_f about 3 I_r, so w = I_f / (I_f + I_r) about 0.75
where it should be 0.5. ``group_size=N_f`` on the retain side gives I_r the same floor: the mean of
|mean gradient| over disjoint groups of N_f retain examples (the noise of each group's mean is that of the
forget set's). The Fisher has no such bias: E[g^2] = mu^2 + sigma^2 whatever N. What the bias does to the
weights and to PerTA's results is measured in ``benchmarks/importance_bias.py``.

Gradients are taken with ``torch.autograd.grad`` / ``torch.func``: the pass never writes ``.grad``.
The model is in eval mode (no dropout) during the pass; its mode and ``requires_grad`` flags are
restored afterwards. Memory: the fp32 sums (one model copy) and one gradient (batch-size gradients
with vmap).

Under ``accelerate launch`` (``torch.distributed`` initialised) each process sums over its shard, then
the sums and the example counts are all-reduced before dividing, so the result equals the
single-process one on the union of the shards.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from tqdm.auto import tqdm

from palu_perta.losses import IGNORE_INDEX
from palu_perta.modes import eval_mode, requiring_grad

Batch = Mapping[str, Tensor]
METHODS = ("grad", "fisher")
PER_EXAMPLE = ("vmap", "loop", "auto")
AUTO_VMAP_MAX_ENTRIES = 2**21  # batch size x parameters; measured crossover ~3 M (module docstring)


def parameter_importance(
    model: nn.Module,
    batches: Iterable[Batch],
    method: Literal["grad", "fisher"] = "grad",
    fraction: float = 1.0,
    seed: int = 0,
    progress: bool = True,
    per_example: Literal["vmap", "loop", "auto"] = "auto",
    group_size: int | None = None,
) -> dict[str, Tensor]:
    """Importance of every floating parameter of ``model`` on ``batches`` (see the module docstring).

    ``batches``: right-padded batches with ``input_ids``, ``attention_mask`` and ``labels`` [B, T].
    ``fraction`` in (0, 1]: use round(fraction * n) examples (at least one) chosen at random with
    ``seed`` among the n examples, by position in iteration order (the batches are then held in memory;
    with a shuffled loader the subset follows its shuffle; under distributed each process draws from
    its own shard). ``per_example``: how ``"fisher"`` gets per-example gradients (``"grad"`` needs none).
    ``group_size`` (``"grad"`` only; None: the plain formula): split the n answered examples at random
    (``seed``) into n // group_size disjoint groups of near-equal size (every example used) and return the
    mean over groups of each group's |mean gradient|, so that a large set's importance carries the same
    sampling-noise floor as a set of ``group_size`` examples (see "The size bias" in the module docstring).
    Returns name -> float32 tensor of the parameter's shape, on the parameter's device.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if per_example not in PER_EXAMPLE:
        raise ValueError(f"per_example must be one of {PER_EXAMPLE}, got {per_example!r}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction < 1:
        batches = _subset(list(batches), fraction, seed)
    if group_size is not None:
        if method != "grad":
            raise ValueError("group_size applies to method='grad' only: the Fisher's mean of squared gradients has "
                             "no sample-size bias in expectation (E[g^2] does not depend on N)")
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            raise ValueError("group_size is not supported under torch.distributed (each process would group its own "
                             "shard): compute grouped importances in one process")
        return plain_and_grouped_gradient_importance(model, list(batches), group_size, seed, progress)[1]

    params = {name: p for name, p in model.named_parameters() if p.is_floating_point()}
    sums, count = _importance_sums(model, params, batches, method, per_example, progress, f"importance ({method})")
    count = _all_reduce(sums, count, next(iter(params.values())).device)
    if count == 0:
        raise ValueError("empty data set: no example with answer tokens (labels != -100)")
    if method == "grad":
        return {name: (s / count).abs_() for name, s in sums.items()}
    return {name: s / count for name, s in sums.items()}


def _importance_sums(
    model: nn.Module,
    params: dict[str, Tensor],
    batches: Iterable[Batch],
    method: str,
    per_example: str,
    progress: bool,
    desc: str,
) -> tuple[dict[str, Tensor], int]:
    """The per-parameter sums over ``batches`` (of gradients for "grad", of squared per-example gradients for
    "fisher") and the number of answered examples, in this process only. Eval mode and ``requires_grad``
    are set for the pass and restored afterwards."""
    sums = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
    n_params = sum(p.numel() for p in params.values())
    count = 0
    device = next(iter(params.values())).device
    with eval_mode(model), requiring_grad(params):
        for batch in tqdm(batches, desc=desc, disable=not progress):
            input_ids, attention_mask, labels = _check_batch(batch, device)
            count += int(_has_answer(labels).sum())
            if method == "grad":
                _add_batch_gradient(model, params, sums, input_ids, attention_mask, labels)
            elif _use_vmap(per_example, len(input_ids) * n_params):
                _add_squared_gradients_vmap(model, params, sums, input_ids, labels)
            else:
                _add_squared_gradients_loop(model, params, sums, input_ids, attention_mask, labels)
    return sums, count


def example_groups(n: int, group_size: int, seed: int = 0) -> list[Tensor]:
    """A seeded random split of examples 0..n-1 into n // group_size disjoint groups of near-equal size
    (sizes group_size .. 2 * group_size - 1, every example in one group): a list of int64 index tensors."""
    if n < group_size:
        raise ValueError(f"{n} examples cannot make one group of {group_size}: lower group_size or add examples")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return list(torch.tensor_split(order, n // group_size))


def _answered_rows(batches: list[Batch]) -> list[dict[str, Tensor]]:
    """Every answered example of the (right-padded) batches as a dict of 1-D tensors trimmed to its length."""
    rows = []
    for batch in batches:
        mask = batch["attention_mask"]
        for i in _has_answer(batch["labels"]).nonzero().squeeze(1).tolist():
            length = int(mask[i].sum())
            rows.append({key: batch[key][i, :length] for key in ("input_ids", "attention_mask", "labels")})
    return rows


def _rebatch(rows: list[dict[str, Tensor]], batch_size: int) -> list[Batch]:
    """Right-padded batches of ``rows`` (padding: input id 0, attention 0, label -100; under causal attention
    a real token never sees the padding after it, so the pad id does not matter)."""
    out = []
    fill = {"input_ids": 0, "attention_mask": 0, "labels": IGNORE_INDEX}
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        width = max(len(r["input_ids"]) for r in chunk)
        out.append({key: torch.stack([torch.nn.functional.pad(r[key], (0, width - len(r[key])), value=value)
                                      for r in chunk]) for key, value in fill.items()})
    return out


def plain_and_grouped_gradient_importance(
    model: nn.Module, batches: list[Batch], group_size: int, seed: int = 0, progress: bool = True
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The plain gradient importance |mean gradient| and the size-matched one (the mean over the groups of
    :func:`example_groups` of |mean gradient of the group|) of ``batches``, from one pass: each group's gradient
    sum serves both. Equal to ``parameter_importance(..., "grad")`` and ``(..., group_size=group_size)``.
    Returns (plain, grouped): name -> float32 tensor of the parameter's shape."""
    rows = _answered_rows(batches)
    if not rows:
        raise ValueError("empty data set: no example with answer tokens (labels != -100)")
    batch_size = max(len(b["input_ids"]) for b in batches)
    groups = example_groups(len(rows), group_size, seed)
    params = {name: p for name, p in model.named_parameters() if p.is_floating_point()}
    total = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
    grouped = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
    n_total = 0
    for k, group in enumerate(tqdm(groups, desc=f"importance (grad, {len(groups)} groups)", disable=not progress)):
        sums, count = _importance_sums(model, params, _rebatch([rows[i] for i in group.tolist()], batch_size),
                                       "grad", "auto", False, f"group {k}")
        n_total += count
        for name, s in sums.items():
            total[name].add_(s)
            grouped[name].add_((s / count).abs_())
    return ({name: (t / n_total).abs_() for name, t in total.items()},
            {name: g / len(groups) for name, g in grouped.items()})


def _answer_logprobs(logits: Tensor, labels: Tensor) -> Tensor:
    """Log-probability of each answer token, 0 elsewhere: [..., T-1] from logits [..., T, V], labels [..., T].

    Shifted as in HF causal LMs (position t predicts token t + 1); written with masks rather than
    boolean indexing so that it runs under ``torch.func.vmap``.
    """
    targets = labels[..., 1:]
    mask = targets != IGNORE_INDEX
    logp = torch.log_softmax(logits[..., :-1, :].float(), dim=-1)
    token = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(mask, token, torch.zeros_like(token))


def _use_vmap(per_example: str, entries: int) -> bool:
    """Whether a batch's per-example gradients (``entries`` = batch size x parameters) go through vmap."""
    return per_example == "vmap" or (per_example == "auto" and entries <= AUTO_VMAP_MAX_ENTRIES)


def _has_answer(labels: Tensor) -> Tensor:
    """Whether each example has at least one (shifted) answer token: bool [B]."""
    return (labels[:, 1:] != IGNORE_INDEX).any(dim=-1)


def _check_batch(batch: Batch, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """The batch's input_ids, attention_mask and labels on ``device``; ValueError unless right-padded."""
    input_ids, attention_mask, labels = (batch[key].to(device) for key in ("input_ids", "attention_mask", "labels"))
    if (attention_mask[:, 1:] > attention_mask[:, :-1]).any():
        raise ValueError("batches must be right-padded (attention_mask of the form 1...1 0...0)")
    return input_ids, attention_mask, labels


def _subset(batches: list[Batch], fraction: float, seed: int) -> list[Batch]:
    """The batches restricted to a seeded random subset of round(fraction * n) of their n examples."""
    sizes = [len(batch["input_ids"]) for batch in batches]
    n = sum(sizes)
    if n == 0:
        raise ValueError("empty data set: no batches")
    keep = torch.zeros(n, dtype=torch.bool)
    chosen = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: max(1, round(fraction * n))]
    keep[chosen] = True
    out = []
    for batch, rows in zip(batches, keep.split(sizes), strict=True):
        if rows.any():
            index = rows.nonzero().squeeze(1)
            out.append({key: value[index.to(value.device)] for key, value in batch.items()})
    return out


def _add_batch_gradient(
    model: nn.Module,
    params: dict[str, Tensor],
    sums: dict[str, Tensor],
    input_ids: Tensor,
    attention_mask: Tensor,
    labels: Tensor,
) -> None:
    """sums += gradient of the batch's summed per-example answer NLL."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    token = _answer_logprobs(logits, labels)
    lengths = (labels[:, 1:] != IGNORE_INDEX).sum(dim=-1).clamp(min=1)
    loss = -(token.sum(dim=-1) / lengths).sum()
    _accumulate(sums, params, torch.autograd.grad(loss, list(params.values()), allow_unused=True), square=False)


def _add_squared_gradients_loop(
    model: nn.Module,
    params: dict[str, Tensor],
    sums: dict[str, Tensor],
    input_ids: Tensor,
    attention_mask: Tensor,
    labels: Tensor,
) -> None:
    """sums += squared gradient of log p(y|x), one example at a time (slices trimmed to their length)."""
    for i in _has_answer(labels).nonzero().squeeze(1).tolist():
        length = int(attention_mask[i].sum())
        logits = model(input_ids=input_ids[i : i + 1, :length], use_cache=False).logits
        logprob = _answer_logprobs(logits, labels[i : i + 1, :length]).sum()
        _accumulate(sums, params, torch.autograd.grad(logprob, list(params.values()), allow_unused=True), square=True)


def _add_squared_gradients_vmap(
    model: nn.Module, params: dict[str, Tensor], sums: dict[str, Tensor], input_ids: Tensor, labels: Tensor
) -> None:
    """sums += squared gradients of log p(y|x), all examples of the batch at once with torch.func.

    No attention mask is passed: the batch is right-padded, so causal attention already keeps each
    answer token away from the padding; transformers' mask construction is not traceable by vmap.
    """

    def logprob(weights: dict[str, Tensor], ids: Tensor, lab: Tensor) -> Tensor:
        logits = functional_call(model, weights, (ids.unsqueeze(0),), {"use_cache": False}).logits
        return _answer_logprobs(logits, lab.unsqueeze(0)).sum()

    detached = {name: p.detach() for name, p in params.items()}
    with warnings.catch_warnings():  # SDPA's missing batching rule: known, see the module docstring
        warnings.filterwarnings("ignore", message="There is a performance drop because we have not yet implemented")
        per_example = vmap(grad(logprob), in_dims=(None, 0, 0))(detached, input_ids, labels)
    for name, g in per_example.items():
        sums[name].add_(g.float().square().sum(dim=0))


def _accumulate(
    sums: dict[str, Tensor], params: dict[str, Tensor], grads: tuple[Tensor | None, ...], square: bool
) -> None:
    """sums[name] += grad (or grad squared) in float32; parameters without a gradient add nothing."""
    for name, g in zip(params, grads, strict=True):
        if g is not None:
            g = g.float()
            sums[name].add_(g.square() if square else g)


def _all_reduce(sums: dict[str, Tensor], count: int, device: torch.device) -> int:
    """Sum ``sums`` (in place) and ``count`` over processes when torch.distributed is initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return count
    for s in sums.values():
        dist.all_reduce(s, op=dist.ReduceOp.SUM)
    total = torch.tensor(count, dtype=torch.int64, device=device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return int(total.item())
