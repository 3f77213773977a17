"""Uncertainty for every number a verdict uses: bootstrap and Student-t intervals, the KS lattice.

Plain functions on numbers (numpy and scipy.stats only). Every interval is an :class:`Interval`.

- *Items*: :func:`bootstrap_ci` (one per-item column), :func:`bootstrap_ci_of` (an aggregate of
  several columns, e.g. model utility), :func:`paired_difference` / :func:`paired_test` (two methods
  on the same items), :func:`two_level_difference` (two methods, several seeds each, on the same items:
  seeds and items resampled). Bootstraps are percentile bootstraps, seeded and deterministic.
- *Seeds*: :func:`seed_interval` (mean and Student-t interval over training seeds).
- *Forget quality* is ``ks_2samp(unlearned_tr, retain_tr).pvalue``. Its statistic D only takes the
  values ``|i/n - j/m|`` (the *lattice*), so forget quality moves in steps: with 10 items per model
  1.0, 0.994, 0.787, 0.418, 0.168, 0.052, ... and nothing in between (:func:`ks_pvalue_lattice`,
  :func:`next_attainable`). :func:`forget_quality_interval` bootstraps it over the unlearned items.
- :func:`verdict` turns the interval of a difference into "holds", "fails" or "cannot tell".
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats


@dataclass(frozen=True)
class Interval:
    """An estimate with a ``level`` confidence interval [low, high] from ``n`` items (or seeds)."""

    estimate: float
    low: float
    high: float
    level: float = 0.95
    n: int = 0

    def __str__(self) -> str:
        return f"{_fmt(self.estimate)} [{_fmt(self.low)}, {_fmt(self.high)}]"

    def to_dict(self) -> dict:
        return asdict(self)


def _fmt(x: float) -> str:
    return f"{x:.3f}" if x == 0 or 1e-3 <= abs(x) < 1e4 or np.isnan(x) else f"{x:.3g}"


def format_interval(estimate: float | None, low: float, high: float, digits: int = 3) -> str:
    """``"0.123 [0.100, 0.150]"`` with ``digits`` decimals: ``"-"`` for a missing estimate (None or NaN), the
    estimate alone where the interval is NaN (one seed, say)."""
    if estimate is None or estimate != estimate:
        return "-"
    if low != low or high != high:
        return f"{estimate:.{digits}f}"
    return f"{estimate:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _clean(values: ArrayLike, name: str = "values") -> np.ndarray:
    """1-D float array with NaN/None dropped; ValueError when nothing is left."""
    x = np.asarray(values, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per item), got shape {x.shape}")
    x = x[~np.isnan(x)]
    if x.size == 0:
        raise ValueError(f"{name}: no values left after dropping NaN/None")
    return x


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")


def _percentile(estimate: float, replicates: np.ndarray, level: float, n: int) -> Interval:
    alpha = (1 - level) / 2
    low, high = np.quantile(replicates, [alpha, 1 - alpha])
    return Interval(float(estimate), float(low), float(high), level, n)


def _apply(statistic: Callable, samples: np.ndarray) -> np.ndarray:
    """statistic over the last axis of (R, n) samples: vectorised (``axis=-1``) when it accepts that."""
    try:
        out = np.asarray(statistic(samples, axis=-1), dtype=float)
        if out.shape == samples.shape[:-1]:
            return out
    except TypeError:
        pass
    return np.array([statistic(s) for s in samples], dtype=float)


# ---------------------------------------------------------------------------------------
# items and seeds


def bootstrap_ci(values: ArrayLike, statistic: Callable = np.mean, *, level: float = 0.95,
                 n_resamples: int = 2000, seed: int = 0) -> Interval:
    """Percentile bootstrap over items of ``statistic`` (1-D per-item values, NaN/None dropped).

    One item, or all values equal, gives a zero-width interval at the estimate.
    """
    _check_level(level)
    x = _clean(values)
    idx = np.random.default_rng(seed).integers(0, x.size, size=(n_resamples, x.size))
    return _percentile(statistic(x), _apply(statistic, x[idx]), level, x.size)


def bootstrap_ci_of(per_item_columns: Mapping[str, ArrayLike] | None,
                    aggregate: Callable[[dict[str, np.ndarray]], float], *,
                    groups: Mapping[str, Mapping[str, ArrayLike]] | None = None, level: float = 0.95,
                    n_resamples: int = 2000, seed: int = 0) -> Interval:
    """Percentile bootstrap of ``aggregate`` over several per-item columns.

    ``per_item_columns`` are columns over the *same* items (equal lengths): each resample draws one
    set of item indices and applies it to all of them, so the items stay aligned. Columns over
    different items (e.g. model utility's retain, real-authors and world-facts splits) go in
    ``groups``, ``{group: {column: values}}``: each group is resampled independently, by its own item
    index. ``aggregate`` gets one flat ``{column: array}`` dict of every column (names must be unique)
    and returns a float, e.g. ``lambda c: hmean([c["retain_prob"].mean(), c["ra_prob"].mean()])``.
    Values are used as given (no NaN dropping). ``n`` of the result is the total number of items.
    """
    _check_level(level)
    parts = [{k: np.asarray(v, dtype=float) for k, v in part.items()}
             for part in ([per_item_columns] if per_item_columns else []) + list((groups or {}).values())]
    names = [k for cols in parts for k in cols]
    if not parts or len(set(names)) != len(names):
        raise ValueError(f"bootstrap_ci_of needs columns with names unique across groups, got {names}")
    for cols in parts:
        shapes = {k: v.shape for k, v in cols.items()}
        if len(set(shapes.values())) != 1 or len(shape := next(iter(shapes.values()))) != 1 or shape[0] == 0:
            raise ValueError(f"columns resampled together must be 1-D, non-empty, of one length; got {shapes}")
    rng = np.random.default_rng(seed)
    sizes = [next(iter(cols.values())).size for cols in parts]
    idx = [rng.integers(0, size, size=(n_resamples, size)) for size in sizes]
    flat = {k: v for cols in parts for k, v in cols.items()}
    reps = np.array([aggregate({k: v[ix[r]] for cols, ix in zip(parts, idx) for k, v in cols.items()})
                     for r in range(n_resamples)], dtype=float)
    return _percentile(aggregate(flat), reps, level, sum(sizes))


def seed_interval(values: ArrayLike, *, level: float = 0.95) -> Interval:
    """Mean over per-seed values with a Student-t interval: mean +- t_{(1+level)/2, k-1} * s / sqrt(k).

    One seed gives no interval: low and high are NaN (a spread needs two seeds).
    """
    _check_level(level)
    x = _clean(values)
    mean = float(x.mean())
    if x.size == 1:
        return Interval(mean, float("nan"), float("nan"), level, 1)
    half = stats.t.ppf((1 + level) / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return Interval(mean, float(mean - half), float(mean + half), level, x.size)


# ---------------------------------------------------------------------------------------
# the KS lattice and forget quality


def _lattice_points(n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct k = |i*m - j*n| (D = k / (n*m)), ascending, with one (i, j) realising each."""
    if n < 1 or m < 1:
        raise ValueError(f"sample sizes must be positive, got {n} and {m}")
    k = np.abs(np.arange(n + 1)[:, None] * m - np.arange(m + 1)[None, :] * n)
    ks, first = np.unique(k, return_index=True)
    return ks, first // (m + 1), first % (m + 1)


def _tie_free_path(n: int, m: int, k: int) -> bool:
    """Whether some tie-free ordering of the pooled items keeps every |i*m - j*n| <= k.

    Without ties the empirical CDFs walk a monotone lattice path (0, 0) -> (n, m); column i allows
    j in [lo(i), hi(i)], both non-decreasing in i, so a path exists iff lo(i+1) <= hi(i) for all i.
    """
    i = np.arange(n + 1)
    lo, hi = np.maximum(-((k - i * m) // n), 0), np.minimum((i * m + k) // n, m)
    return bool(np.all(lo <= hi) and np.all(lo[1:] <= hi[:-1]))


def ks_lattice(n: int, m: int, *, ties: bool = True) -> np.ndarray:
    """Every attainable two-sample KS statistic D for sizes n and m, ascending.

    With ties allowed that is exactly {|i/n - j/m| : 0 <= i <= n, 0 <= j <= m} (each is realised by
    i zeros and n - i ones against j zeros and m - j ones). ``ties=False`` (continuous data, e.g. truth
    ratios) keeps the values from the smallest D a tie-free ordering can reach upwards: any larger
    lattice value is then reached too (n=m=10: 0.1, 0.2, ..., 1; n=2, m=3: 1/3, 1/2, 2/3, 1).
    """
    ks = _lattice_points(n, m)[0]
    if not ties:
        ks = ks[next(t for t, k in enumerate(ks) if _tie_free_path(n, m, int(k))):]
    return ks / (n * m)


def ks_pvalue_lattice(n: int, m: int, *, ties: bool = True) -> list[tuple[float, float]]:
    """(D, p-value) for every D of :func:`ks_lattice`, the p-value exactly as ``ks_2samp`` gives it.

    ks_2samp's p-value depends only on D, n and m, so each is computed by calling ``ks_2samp`` on
    two constructed samples realising D (zeros and ones, see :func:`ks_lattice`); scipy's choice of
    method ('exact' up to 10000 items, else asymptotic, also where exact fails) is followed as is.
    """
    ks, ii, jj = _lattice_points(n, m)
    keep = np.isin(ks / (n * m), ks_lattice(n, m, ties=ties))
    with warnings.catch_warnings():  # scipy's "exact failed, switching to asymp" is part of the result
        warnings.simplefilter("ignore", RuntimeWarning)
        return [(float(k / (n * m)), float(stats.ks_2samp(np.repeat([0.0, 1.0], [i, n - i]),
                                                          np.repeat([0.0, 1.0], [j, m - j])).pvalue))
                for k, i, j in zip(ks[keep], ii[keep], jj[keep])]


def next_attainable(p: float, n: int, m: int, *, ties: bool = True) -> tuple[float | None, float | None]:
    """The attainable forget-quality p-values just below and just above ``p`` (None past the ends).

    Attainable values within a relative 1e-9 of ``p`` count as ``p`` itself, not as neighbours.
    """
    ps = np.array([q for _, q in ks_pvalue_lattice(n, m, ties=ties)])
    other = ~np.isclose(ps, p, rtol=1e-9, atol=0)
    below, above = ps[other & (ps < p)], ps[other & (ps > p)]
    return (float(below.max()) if below.size else None, float(above.min()) if above.size else None)


def _ks_statistics(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """KS statistics of row pairs, a (R, n) against b (R, m) -> (R,), as ``ks_2samp`` computes D."""
    (r, n), m = a.shape, b.shape[1]
    values, ranks = np.unique(np.concatenate([a, b], axis=1).ravel(), return_inverse=True)
    ranks = ranks.reshape(r, n + m) + np.arange(r)[:, None] * values.size
    count = lambda x: np.bincount(x.ravel(), minlength=r * values.size).reshape(r, values.size)
    cdf_a, cdf_b = count(ranks[:, :n]).cumsum(1) / n, count(ranks[:, n:]).cumsum(1) / m
    return np.abs(cdf_a - cdf_b).max(axis=1)


def ks_statistic_bootstrap(a: ArrayLike, b: ArrayLike, *, level: float = 0.95, n_resamples: int = 2000,
                           seed: int = 0) -> Interval:
    """Percentile bootstrap of the KS statistic D, a and b resampled independently; estimate: observed D."""
    _check_level(level)
    a, b = _clean(a, "a"), _clean(b, "b")
    rng = np.random.default_rng(seed)
    ra = a[rng.integers(0, a.size, size=(n_resamples, a.size))]
    rb = b[rng.integers(0, b.size, size=(n_resamples, b.size))]
    return _percentile(stats.ks_2samp(a, b).statistic, _ks_statistics(ra, rb), level, a.size)


def forget_quality_interval(unlearned_tr: ArrayLike, retain_tr: ArrayLike, *, level: float = 0.95,
                            n_resamples: int = 2000, seed: int = 0) -> Interval:
    """Forget quality (KS p-value) with a percentile bootstrap over the unlearned model's items.

    The retain model's truth ratios are the fixed reference. The interval is *descriptive*: it shows
    how far the p-value moves when the forget items are resampled (it lives on the KS lattice, is
    skewed and need not contain the estimate); it is not a confidence interval for a true parameter.
    """
    _check_level(level)
    a, b = _clean(unlearned_tr, "unlearned_tr"), _clean(retain_tr, "retain_tr")
    rows = a[np.random.default_rng(seed).integers(0, a.size, size=(n_resamples, a.size))]
    d = _ks_statistics(rows, np.broadcast_to(b, (n_resamples, b.size)))
    k = np.rint(d * a.size * b.size).astype(np.int64)  # D on the lattice, as an integer
    uniq, first, inverse = np.unique(k, return_index=True, return_inverse=True)
    p = np.array([stats.ks_2samp(rows[r], b).pvalue for r in first])  # one ks_2samp per distinct D
    return _percentile(stats.ks_2samp(a, b).pvalue, p[inverse.ravel()], level, a.size)


# ---------------------------------------------------------------------------------------
# two methods on the same items


def _paired(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values must be 1-D and aligned per item, got lengths {a.shape} and {b.shape}")
    return _clean(a - b, "a - b")  # a pair with a NaN on either side is dropped


def paired_difference(a: ArrayLike, b: ArrayLike, *, level: float = 0.95, n_resamples: int = 2000,
                      seed: int = 0) -> Interval:
    """Percentile bootstrap over items of mean(a - b); a[i] and b[i] are the same item's values."""
    return bootstrap_ci(_paired(a, b), np.mean, level=level, n_resamples=n_resamples, seed=seed)


def paired_test(a: ArrayLike, b: ArrayLike, *, n_permutations: int = 10000, seed: int = 0) -> dict:
    """Two-sided tests of mean(a - b) = 0 on aligned items.

    Returns ``{"n", "mean_difference", "permutation_p", "wilcoxon_p"}``. The sign-flip permutation
    p-value is exact (all 2^n sign patterns) for n <= 16, else Monte Carlo over ``n_permutations``
    seeded patterns, (count + 1) / (n_permutations + 1). All-zero differences give p = 1.0 for both.
    """
    d = _paired(a, b)
    n, observed = d.size, abs(d.sum())
    tol = 1e-12 * max(1.0, float(np.abs(d).sum()))
    if n <= 16:
        signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
        perm_p = float(np.mean(np.abs(signs @ d) >= observed - tol))
    else:
        rng, count = np.random.default_rng(seed), 0
        for start in range(0, n_permutations, 1000):
            signs = rng.choice([-1.0, 1.0], size=(min(1000, n_permutations - start), n))
            count += int(np.sum(np.abs(signs @ d) >= observed - tol))
        perm_p = (count + 1) / (n_permutations + 1)
    wilcoxon_p = 1.0 if np.all(d == 0) else float(stats.wilcoxon(d).pvalue)
    return {"n": n, "mean_difference": float(d.mean()), "permutation_p": perm_p, "wilcoxon_p": wilcoxon_p}


def _apply_columns(statistic: Callable[[dict[str, np.ndarray]], float], columns: dict[str, np.ndarray],
                   n_resamples: int) -> np.ndarray:
    """``statistic`` of every resample of (resamples, items) ``columns``: vectorised when it returns one
    value per resample for 2-D input, else row by row."""
    try:
        out = np.asarray(statistic(columns), dtype=float)
        if out.shape == (n_resamples,):
            return out
    except (TypeError, ValueError):
        pass
    return np.array([statistic({k: v[r] for k, v in columns.items()}) for r in range(n_resamples)], dtype=float)


def two_level_difference(a: Mapping[str, ArrayLike], b: Mapping[str, ArrayLike],
                         statistic: Callable[[dict[str, np.ndarray]], float], *,
                         groups: Mapping[str, tuple[str, ...]] | None = None, level: float = 0.95,
                         n_resamples: int = 2000, seed: int = 0) -> Interval:
    """Bootstrap over seeds *and* items of ``statistic(a) - statistic(b)``: two methods, several seeds each,
    scored on the same items.

    ``a`` and ``b`` map each column name to an array of shape (seeds, items): one row per seed of that
    method, the columns aligned item by item between the two methods (a method may have a different
    number of seeds). Each replicate draws, with replacement, the seeds of ``a`` and, independently, the
    seeds of ``b`` (the seed-to-seed spread), and one set of item indices applied to both methods (the
    items are paired); the drawn seeds are averaged item by item and ``statistic`` gets ``{column: 1-D
    per-item array}``. Columns over different items (model utility's retain, real-authors and world-facts
    questions) go in ``groups``, ``{group: (column, ...)}``: each group draws its own item indices; without
    ``groups`` all columns share one. The estimate is ``statistic`` of the seed means, the interval the
    percentile bootstrap; ``n`` the number of items. ``statistic`` may take (resamples, items) arrays and
    return one value per resample (reducing over the last axis, as ``np.mean(x, axis=-1)``): then all
    resamples are computed at once; otherwise it is called once per resample on 1-D arrays.

    With one seed per method this is the paired item bootstrap (:func:`paired_difference` for a mean).
    With few seeds the seed draw understates the spread (three seeds give a bootstrap variance 2/3 of the
    sample variance): an interval from three seeds is a floor on the uncertainty, not a ceiling.
    """
    _check_level(level)
    a = {k: np.atleast_2d(np.asarray(v, dtype=float)) for k, v in a.items()}
    b = {k: np.atleast_2d(np.asarray(v, dtype=float)) for k, v in b.items()}
    if set(a) != set(b) or not a:
        raise ValueError(f"both methods need the same columns, got {sorted(a)} and {sorted(b)}")
    groups = dict(groups) if groups else {"items": tuple(a)}
    grouped = [c for cols in groups.values() for c in cols]
    if sorted(grouped) != sorted(a):
        raise ValueError(f"groups must name every column exactly once, got {groups} for columns {sorted(a)}")
    for cols in groups.values():
        items = {a[c].shape[1] for c in cols} | {b[c].shape[1] for c in cols}
        seeds = ({a[c].shape[0] for c in cols}, {b[c].shape[0] for c in cols})
        if len(items) != 1 or len(seeds[0]) != 1 or len(seeds[1]) != 1 or 0 in items:
            raise ValueError(f"columns of a group must share their (seeds, items) shape per method, got "
                             f"{ {c: (a[c].shape, b[c].shape) for c in cols} }")
    n_a, n_b = next(iter(a.values())).shape[0], next(iter(b.values())).shape[0]
    estimate = statistic({k: v.mean(axis=0) for k, v in a.items()}) - statistic({k: v.mean(axis=0)
                                                                                 for k, v in b.items()})
    rng = np.random.default_rng(seed)
    seeds_a, seeds_b = rng.integers(0, n_a, (n_resamples, n_a)), rng.integers(0, n_b, (n_resamples, n_b))
    drawn_a, drawn_b = {}, {}
    for cols in groups.values():
        n_items = a[cols[0]].shape[1]
        ix = rng.integers(0, n_items, (n_resamples, n_items))
        for c in cols:  # (resamples, items): the drawn seeds' mean per item, at the drawn items
            drawn_a[c] = np.take_along_axis(a[c][seeds_a].mean(axis=1), ix, axis=1)
            drawn_b[c] = np.take_along_axis(b[c][seeds_b].mean(axis=1), ix, axis=1)
    reps = _apply_columns(statistic, drawn_a, n_resamples) - _apply_columns(statistic, drawn_b, n_resamples)
    n_items = sum(a[cols[0]].shape[1] for cols in groups.values())
    return _percentile(estimate, reps, level, n_items)


def verdict(interval: Interval, *, better: str = "higher", margin: float = 0.0) -> str:
    """Read the interval of a difference (method minus baseline) as a claim "the method is better".

    better="higher": "holds" if low > margin, "fails" if high < -margin (surely worse by more than
    the margin). better="lower" mirrors it: "holds" if high < -margin, "fails" if low > margin.
    Anything else (the interval touches [-margin, margin], or a NaN bound) is "cannot tell".
    """
    if better not in ("higher", "lower"):
        raise ValueError(f"better must be 'higher' or 'lower', got {better!r}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    low, high = (interval.low, interval.high) if better == "higher" else (-interval.high, -interval.low)
    if low > margin:
        return "holds"
    if high < -margin:
        return "fails"
    return "cannot tell"
