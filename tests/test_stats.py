"""Uncertainty helpers: bootstrap and Student-t intervals, the KS lattice, paired tests (no model)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from palu_perta import stats as S


def on_lattice(value: float, lattice) -> bool:
    return bool(np.any(np.isclose(value, np.asarray(lattice), rtol=1e-9, atol=1e-12)))


# --- Interval ---------------------------------------------------------------------------


def test_interval_prints_and_serialises():
    iv = S.Interval(0.5123, 0.48, 0.5449, n=10)
    assert str(iv) == "0.512 [0.480, 0.545]"
    assert str(S.Interval(1.3e-6, 0.0, 2e-5)) == "1.3e-06 [0.000, 2e-05]"
    assert iv.to_dict() == {"estimate": 0.5123, "low": 0.48, "high": 0.5449, "level": 0.95, "n": 10}
    with pytest.raises(AttributeError):
        iv.low = 0.0  # frozen


# --- bootstrap over items ---------------------------------------------------------------


def test_bootstrap_of_constant_values_and_of_one_item_has_zero_width():
    iv = S.bootstrap_ci([0.3] * 25)
    assert iv.estimate == pytest.approx(0.3) and iv.low == iv.high == iv.estimate and iv.n == 25
    one = S.bootstrap_ci([0.7])
    assert (one.estimate, one.low, one.high, one.n) == (0.7, 0.7, 0.7, 1)


def test_bootstrap_drops_missing_values_and_refuses_nothing():
    iv = S.bootstrap_ci([1.0, None, float("nan"), 3.0])
    assert iv.estimate == 2.0 and iv.n == 2 and 1.0 <= iv.low < iv.high <= 3.0
    with pytest.raises(ValueError, match="no values left"):
        S.bootstrap_ci([None, float("nan")])
    with pytest.raises(ValueError, match="1-D"):
        S.bootstrap_ci(np.ones((3, 2)))
    with pytest.raises(ValueError, match="level"):
        S.bootstrap_ci([1.0, 2.0], level=95)


def test_bootstrap_is_seeded_and_matches_scipy_and_the_normal_approximation():
    x = np.random.default_rng(1).normal(size=400)
    iv = S.bootstrap_ci(x, seed=3)
    assert iv == S.bootstrap_ci(x, seed=3) and iv != S.bootstrap_ci(x, seed=4)
    assert iv.estimate == pytest.approx(x.mean()) and iv.low < iv.estimate < iv.high
    ref = stats.bootstrap((x,), np.mean, method="percentile", n_resamples=2000, rng=0).confidence_interval
    assert iv.low == pytest.approx(ref.low, abs=0.02) and iv.high == pytest.approx(ref.high, abs=0.02)
    half = 1.96 * x.std(ddof=1) / math.sqrt(x.size)
    assert (iv.high - iv.low) / 2 == pytest.approx(half, rel=0.1)


def test_bootstrap_takes_statistics_with_and_without_an_axis_argument():
    x = np.random.default_rng(2).exponential(size=30)
    vectorised = S.bootstrap_ci(x, np.median, seed=5)
    looped = S.bootstrap_ci(x, lambda v: float(np.median(v)), seed=5)
    assert vectorised == looped and vectorised.estimate == np.median(x)
    assert S.bootstrap_ci(x, np.max, level=0.9).high == x.max()


def test_bootstrap_ci_of_one_group_resamples_items_jointly():
    x = np.random.default_rng(3).normal(size=50)
    same = S.bootstrap_ci_of({"x": x}, lambda c: c["x"].mean(), seed=7)
    assert same == S.bootstrap_ci(x, seed=7)  # same draws, same interval
    # x and its copy keep their alignment: the difference of means is 0 in every resample
    joint = S.bootstrap_ci_of({"x": x, "y": x.copy()}, lambda c: c["x"].mean() - c["y"].mean())
    assert joint.low == joint.high == 0.0


def test_bootstrap_ci_of_resamples_groups_independently():
    x = np.random.default_rng(4).normal(size=40)
    diff = lambda c: c["x"].mean() - c["y"].mean()
    apart = S.bootstrap_ci_of(None, diff, groups={"forget": {"x": x}, "retain": {"y": x}})
    assert apart.estimate == 0.0 and apart.low < -0.1 and apart.high > 0.1 and apart.n == 80
    # a model-utility-like harmonic mean over splits of different lengths
    rng = np.random.default_rng(5)
    groups = {"retain": {"p": rng.uniform(0.5, 1, 60), "r": rng.uniform(0.2, 0.6, 60)},
              "ra": {"q": rng.uniform(0.3, 0.8, 25)}}
    hm = lambda c: stats.hmean([c["p"].mean(), c["r"].mean(), c["q"].mean()])
    iv = S.bootstrap_ci_of({}, hm, groups=groups)
    flat = {k: v for g in groups.values() for k, v in g.items()}
    assert iv.estimate == pytest.approx(hm(flat)) and iv.low < iv.estimate < iv.high and iv.n == 85


def test_bootstrap_ci_of_rejects_misaligned_or_clashing_columns():
    with pytest.raises(ValueError, match="one length"):
        S.bootstrap_ci_of({"x": [1, 2, 3], "y": [1, 2]}, lambda c: 0.0)
    with pytest.raises(ValueError, match="unique"):
        S.bootstrap_ci_of({"x": [1, 2]}, lambda c: 0.0, groups={"g": {"x": [1, 2, 3]}})
    with pytest.raises(ValueError, match="needs"):
        S.bootstrap_ci_of(None, lambda c: 0.0)
    with pytest.raises(ValueError, match="non-empty"):
        S.bootstrap_ci_of({"x": []}, lambda c: 0.0)


# --- seeds ------------------------------------------------------------------------------


def test_seed_interval_is_student_t_by_hand():
    iv = S.seed_interval([1.0, 2.0, 3.0])
    # with 2 degrees of freedom the t CDF is 1/2 + t / (2 sqrt(2 + t^2)), so t_{0.975,2} solves
    # t / sqrt(2 + t^2) = 0.95: t = sqrt(2 * 0.95^2 / (1 - 0.95^2)) = 4.3026527297...; s = 1
    t = math.sqrt(2 * 0.95**2 / (1 - 0.95**2))
    assert t == pytest.approx(4.30265273, abs=1e-8)
    half = t / math.sqrt(3)
    assert iv.estimate == 2.0 and iv.n == 3
    assert iv.low == pytest.approx(2 - half, rel=1e-12) and iv.high == pytest.approx(2 + half, rel=1e-12)
    assert S.seed_interval([5.0, 5.0]).low == S.seed_interval([5.0, 5.0]).high == 5.0


def test_one_seed_gives_no_interval():
    iv = S.seed_interval([0.4, None])
    assert iv.estimate == 0.4 and iv.n == 1 and math.isnan(iv.low) and math.isnan(iv.high)


# --- the KS lattice ---------------------------------------------------------------------


def test_ks_lattice_small_sizes_by_hand():
    assert S.ks_lattice(2, 2).tolist() == [0.0, 0.5, 1.0]
    assert S.ks_lattice(2, 2, ties=False).tolist() == [0.5, 1.0]  # without ties D >= 1/2
    np.testing.assert_allclose(S.ks_lattice(2, 3), [0, 1 / 6, 1 / 3, 1 / 2, 2 / 3, 1])
    np.testing.assert_allclose(S.ks_lattice(2, 3, ties=False), [1 / 3, 1 / 2, 2 / 3, 1])
    # 1/6 and 0 need ties (5/6 is never attainable)
    assert stats.ks_2samp([0, 1], [0, 0, 1]).statistic == pytest.approx(1 / 6)
    assert stats.ks_2samp([0, 0], [0, 0, 0]).statistic == 0.0


@pytest.mark.parametrize("n,m", [(2, 3), (3, 4), (4, 4), (3, 5), (5, 4)])
def test_tie_free_lattice_is_what_every_ordering_reaches(n, m):
    reached = set()
    for pos in itertools.combinations(range(n + m), n):  # every interleaving of distinct values
        other = sorted(set(range(n + m)) - set(pos))
        reached.add(round(stats.ks_2samp(pos, other).statistic * n * m))
    assert sorted(reached) == np.rint(S.ks_lattice(n, m, ties=False) * n * m).astype(int).tolist()


@pytest.mark.parametrize("n,m", [(10, 10), (20, 40), (7, 13)])
def test_ks_2samp_of_random_samples_lands_on_the_lattice(n, m):
    free = S.ks_pvalue_lattice(n, m, ties=False)
    tied = S.ks_pvalue_lattice(n, m)
    for seed in range(200):
        rng = np.random.default_rng(seed)
        r = stats.ks_2samp(rng.normal(size=n), rng.normal(0.5, 1.5, size=m))
        assert any(np.isclose(r.statistic, d) and np.isclose(r.pvalue, p, rtol=1e-9) for d, p in free)
        r = stats.ks_2samp(rng.integers(0, 3, size=n), rng.integers(0, 4, size=m))  # ties
        assert any(np.isclose(r.statistic, d) and np.isclose(r.pvalue, p, rtol=1e-9) for d, p in tied)


def test_forget_quality_steps_for_ten_answers():
    lattice = S.ks_pvalue_lattice(10, 10, ties=False)
    assert [d for d, _ in lattice] == pytest.approx([k / 10 for k in range(1, 11)])
    ps = [p for _, p in lattice]
    for step in (1.0, 0.9944575548290717, 0.7869297884777761, 0.4175236528177704, 0.1678213427439433,
                 0.05244755244755244):
        assert on_lattice(step, ps)
    assert ps == sorted(ps, reverse=True) and not on_lattice(0.5, ps)
    assert S.next_attainable(0.5, 10, 10) == pytest.approx((0.4175236528177704, 0.7869297884777761))
    assert S.next_attainable(ps[3], 10, 10) == pytest.approx((ps[4], ps[2]))  # an attainable p is not its own neighbour
    assert S.next_attainable(1.0, 10, 10) == pytest.approx((ps[1], None))
    assert S.next_attainable(0.0, 10, 10) == pytest.approx((None, ps[-1]))


def test_ks_statistics_helper_matches_ks_2samp_row_by_row():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(20, 9)), rng.normal(size=(20, 14))
    a[:, :3] = b[:, :3]  # values shared between the samples
    expected = [stats.ks_2samp(x, y).statistic for x, y in zip(a, b)]
    np.testing.assert_allclose(S._ks_statistics(a, b), expected, rtol=0, atol=1e-12)


def test_ks_statistic_bootstrap():
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=30), rng.normal(0.8, 1, size=40)
    iv = S.ks_statistic_bootstrap(a, b)
    assert iv.estimate == stats.ks_2samp(a, b).statistic and iv.n == 30
    assert 0 <= iv.low < iv.estimate < iv.high <= 1 and iv == S.ks_statistic_bootstrap(a, b)
    same = S.ks_statistic_bootstrap([1.0, 1.0], [1.0, 1.0, 1.0])
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)


def test_forget_quality_interval_is_the_bootstrap_of_ks_2samp():
    rng = np.random.default_rng(8)
    a, b = rng.lognormal(0.3, 1, size=20), rng.lognormal(size=25)
    iv = S.forget_quality_interval(a, b, n_resamples=300, seed=2)
    assert iv.estimate == stats.ks_2samp(a, b).pvalue and iv.n == 20
    idx = np.random.default_rng(2).integers(0, 20, size=(300, 20))
    ref = np.quantile([stats.ks_2samp(a[i], b).pvalue for i in idx], [0.025, 0.975])
    assert (iv.low, iv.high) == pytest.approx(tuple(ref), rel=1e-12)
    ps = [p for _, p in S.ks_pvalue_lattice(20, 25)]
    assert iv.low < iv.high and on_lattice(iv.estimate, ps)


# --- paired comparisons -----------------------------------------------------------------


def test_paired_difference_of_a_constant_shift():
    b = np.random.default_rng(9).uniform(size=30)
    iv = S.paired_difference(b + 0.25, b)
    assert iv.estimate == pytest.approx(0.25) and iv.low == pytest.approx(0.25) and iv.high == pytest.approx(0.25)
    assert iv.high - iv.low < 1e-12
    with pytest.raises(ValueError, match=r"\(5,\) and \(4,\)"):
        S.paired_difference(np.ones(5), np.ones(4))
    assert S.paired_difference([1.0, None, 3.0], [0.0, 0.0, float("nan")]).n == 1  # NaN pairs dropped


def test_paired_test_exact_sign_flips():
    r = S.paired_test([1, 1, 1, 1], [0, 0, 0, 0])
    assert r["permutation_p"] == 2 / 16 and r["mean_difference"] == 1.0 and r["n"] == 4
    assert r["wilcoxon_p"] == pytest.approx(0.125)  # all four ranks positive: 2 / 2^4
    zero = S.paired_test([0.3, 0.5], [0.3, 0.5])
    assert zero["permutation_p"] == 1.0 and zero["wilcoxon_p"] == 1.0
    rng = np.random.default_rng(10)
    a, b = rng.normal(0.4, 1, size=12), rng.normal(size=12)
    ref = stats.permutation_test((a, b), lambda x, y, axis: np.mean(x - y, axis=axis),
                                 permutation_type="samples", n_resamples=np.inf).pvalue
    assert S.paired_test(a, b)["permutation_p"] == pytest.approx(ref, rel=1e-9)
    assert S.paired_test(a, b)["wilcoxon_p"] == pytest.approx(stats.wilcoxon(a - b).pvalue)


def test_paired_test_monte_carlo_above_sixteen_items():
    rng = np.random.default_rng(11)
    d = rng.normal(0.3, 1, size=17)
    r = S.paired_test(d, np.zeros(17), seed=1)
    ref = stats.permutation_test((d, np.zeros(17)), lambda x, y, axis: np.mean(x - y, axis=axis),
                                 permutation_type="samples", n_resamples=np.inf).pvalue
    assert r["permutation_p"] == pytest.approx(ref, abs=0.02) and r == S.paired_test(d, np.zeros(17), seed=1)
    assert S.paired_test(np.ones(20), np.zeros(20))["permutation_p"] == 1 / 10001


# --- verdicts ---------------------------------------------------------------------------


def test_verdict_reads_intervals_of_differences():
    above, below, across = S.Interval(0.2, 0.1, 0.3), S.Interval(-0.2, -0.3, -0.1), S.Interval(0.0, -0.1, 0.1)
    assert [S.verdict(i) for i in (above, below, across)] == ["holds", "fails", "cannot tell"]
    assert [S.verdict(i, better="lower") for i in (above, below, across)] == ["fails", "holds", "cannot tell"]
    assert S.verdict(above, margin=0.15) == "cannot tell" and S.verdict(above, margin=0.05) == "holds"
    assert S.verdict(below, margin=0.15) == "cannot tell" and S.verdict(below, margin=0.05) == "fails"
    assert S.verdict(S.Interval(1.0, float("nan"), float("nan"))) == "cannot tell"
    with pytest.raises(ValueError):
        S.verdict(above, better="up")


def _mean_of(column):
    return lambda c: float(np.mean(c[column]))


def test_two_level_difference_of_a_constant_shift_with_one_seed():
    a = np.array([[0.9, 0.4, 0.7, 0.2]])
    got = S.two_level_difference({"x": a}, {"x": a - 0.25}, _mean_of("x"), n_resamples=200)
    assert got.estimate == pytest.approx(0.25) and got.low == pytest.approx(0.25) and got.high == pytest.approx(0.25)
    assert got.n == 4


def test_two_level_difference_resamples_seeds_by_hand():
    # every item equal: only the seed draw moves the mean. Two seeds of a (0 and 1), one of b (0): the drawn
    # seed mean of a is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4, so the 95 % interval is [0, 1]
    a = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    b = np.zeros((1, 3))
    got = S.two_level_difference({"x": a}, {"x": b}, _mean_of("x"), n_resamples=4000, seed=1)
    assert got.estimate == pytest.approx(0.5)
    assert (got.low, got.high) == (0.0, 1.0)
    reps_share = S.two_level_difference({"x": a}, {"x": b}, _mean_of("x"), level=0.4, n_resamples=4000, seed=1)
    assert (reps_share.low, reps_share.high) == (0.5, 0.5)  # the middle 40 % is all 0.5 (half the draws)


def test_two_level_difference_pairs_items_between_methods():
    # b is a shifted by 0.1 on every item: whatever items are drawn, the difference is 0.1 (paired), although
    # the items themselves vary widely; unpaired resampling would give a wide interval. Three seeds that agree
    # item by item: drawing seeds changes nothing
    rng = np.random.default_rng(0)
    a = np.repeat(rng.uniform(0, 1, size=(1, 50)), 3, axis=0)
    got = S.two_level_difference({"x": a}, {"x": a - 0.1}, _mean_of("x"), n_resamples=300)
    assert got.low == pytest.approx(0.1) and got.high == pytest.approx(0.1)
    unpaired = S.two_level_difference({"x": a}, {"x": a[:, ::-1] - 0.1}, _mean_of("x"), n_resamples=300)
    assert unpaired.high - unpaired.low > 0.1  # the same values, items not aligned: the item spread shows


def test_two_level_difference_more_seed_spread_gives_a_wider_interval():
    rng = np.random.default_rng(0)
    items = rng.uniform(0, 1, size=40)
    narrow = np.stack([items + s for s in (-0.01, 0.0, 0.01)])
    wide = np.stack([items + s for s in (-0.2, 0.0, 0.2)])
    base = items[None, :]
    got_narrow = S.two_level_difference({"x": narrow}, {"x": base}, _mean_of("x"), n_resamples=500)
    got_wide = S.two_level_difference({"x": wide}, {"x": base}, _mean_of("x"), n_resamples=500)
    assert got_narrow.estimate == pytest.approx(0.0, abs=1e-12) and got_wide.estimate == pytest.approx(0.0, abs=1e-12)
    assert got_wide.high - got_wide.low > 5 * (got_narrow.high - got_narrow.low)


def test_two_level_difference_groups_draw_their_own_items():
    # a harmonic mean of two groups' means, as model utility is; the estimate is the statistic of seed means
    a = {"p": np.array([[0.5, 0.7], [0.7, 0.9]]), "q": np.array([[0.2, 0.4, 0.6], [0.4, 0.6, 0.8]])}
    b = {"p": np.array([[0.5, 0.7]]), "q": np.array([[0.2, 0.4, 0.6]])}

    def utility(c):
        return 2 / (1 / c["p"].mean() + 1 / c["q"].mean())

    got = S.two_level_difference(a, b, utility, groups={"g1": ("p",), "g2": ("q",)}, n_resamples=300)
    assert got.estimate == pytest.approx(2 / (1 / 0.7 + 1 / 0.5) - 2 / (1 / 0.6 + 1 / 0.4))
    assert got.n == 5 and got.low <= got.estimate <= got.high


def test_two_level_difference_refuses_mismatched_columns_and_groups():
    a = {"x": np.zeros((2, 3))}
    with pytest.raises(ValueError, match="same columns"):
        S.two_level_difference(a, {"y": np.zeros((1, 3))}, _mean_of("x"))
    with pytest.raises(ValueError, match="groups must name every column"):
        S.two_level_difference(a, {"x": np.zeros((1, 3))}, _mean_of("x"), groups={"g": ("x", "y")})
    with pytest.raises(ValueError, match="share their"):
        S.two_level_difference(a, {"x": np.zeros((1, 4))}, _mean_of("x"))


def test_format_interval_by_hand():
    from palu_perta.stats import format_interval

    assert format_interval(0.12345, 0.1, 0.15) == "0.123 [0.100, 0.150]"
    assert format_interval(1.5, -0.25, 2.0, digits=2) == "1.50 [-0.25, 2.00]"
    assert format_interval(0.5, float("nan"), float("nan")) == "0.500"  # one seed: no interval
    assert format_interval(None, 0.0, 1.0) == "-"
    assert format_interval(float("nan"), 0.0, 1.0) == "-"
