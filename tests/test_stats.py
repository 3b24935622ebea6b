"""Known-answer tests for studylib.report.stats (exact binomial tables, hand-computed t intervals)."""

import math

import numpy as np
import pytest

from studylib.report import stats

# Two-sided 97.5% Student t quantiles, typed as constants (tables / closed forms:
# df=1: tan(0.475*pi); df=2: 0.95*sqrt(2/0.0975)).
T975 = {1: 12.706204736174696, 2: 4.302652729749461, 4: 2.7764451051977934,
        5: 2.5705818356363146, 6: 2.4469118511449786}


# ---------------------------------------------------------------- McNemar

@pytest.mark.parametrize("n01, n10, expected", [
    (0, 0, 1.0),                 # no disagreements
    (1, 9, 0.021484375),         # 2 * (C(10,0) + C(10,1)) / 2**10 = 22/1024
    (5, 5, 1.0),                 # perfectly balanced
    (2, 12, 0.012939453125),     # 2 * (1 + 14 + 91) / 2**14 = 212/16384
    (0, 5, 0.0625),              # 2 / 2**5
    (4, 1, 0.375),               # 2 * (1 + 5) / 2**5
])
def test_mcnemar_table_known(n01, n10, expected):
    assert stats.mcnemar_table(n01, n10) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("n01, n10", [(1, 9), (2, 12), (0, 7), (30, 45)])
def test_mcnemar_table_symmetric(n01, n10):
    assert stats.mcnemar_table(n01, n10) == pytest.approx(stats.mcnemar_table(n10, n01), rel=1e-12)


def test_mcnemar_table_rejects_negative():
    with pytest.raises(ValueError, match="non-negative"):
        stats.mcnemar_table(-1, 3)


def _correctness(n00, n01, n10, n11):
    a = [0] * n00 + [0] * n01 + [1] * n10 + [1] * n11
    b = [0] * n00 + [1] * n01 + [0] * n10 + [1] * n11
    return np.array(a), np.array(b)


def test_mcnemar_counts_from_arrays():
    a, b = _correctness(n00=3, n01=4, n10=1, n11=2)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(a))  # pairing survives a shared shuffle
    r = stats.mcnemar(a[order].astype(bool), b[order])
    assert (r["n"], r["n00"], r["n01"], r["n10"], r["n11"]) == (10, 3, 4, 1, 2)
    assert r["acc_a"] == pytest.approx(0.3) and r["acc_b"] == pytest.approx(0.6)
    assert r["difference"] == pytest.approx(0.3)
    assert r["p_value"] == pytest.approx(0.375)


def test_mcnemar_errors():
    with pytest.raises(ValueError, match=r"5.*4"):
        stats.mcnemar(np.ones(5), np.ones(4))
    with pytest.raises(ValueError, match="empty"):
        stats.mcnemar([], [])
    with pytest.raises(ValueError, match="0/1"):
        stats.mcnemar([0, 2], [1, 1])


# ---------------------------------------------------------------- seed intervals

def test_seed_interval_known():
    r = stats.seed_interval([1.0, 2.0, 3.0])
    half = T975[2] / math.sqrt(3)  # = 2.48413771...
    assert r["n"] == 3 and r["mean"] == pytest.approx(2.0) and r["std"] == pytest.approx(1.0)
    assert r["half_width"] == pytest.approx(2.4841377, abs=1e-7)
    assert (r["low"], r["high"]) == pytest.approx((2 - half, 2 + half), rel=1e-9)


def test_seed_interval_one_seed_and_nan():
    r = stats.seed_interval([0.9])
    assert r["mean"] == 0.9 and r["n"] == 1
    assert math.isnan(r["low"]) and math.isnan(r["high"]) and math.isnan(r["std"])
    with pytest.raises(ValueError, match="NaN"):
        stats.seed_interval([0.9, float("nan")])
    with pytest.raises(ValueError):
        stats.seed_interval([])


def test_difference_interval_paired_known():
    # per-seed differences are [1, 2, 3]: mean 2, std 1
    r = stats.difference_interval([10, 20, 30], [11, 22, 33], paired=True)
    half = T975[2] / math.sqrt(3)
    assert r["method"] == "paired t over seeds" and (r["n_a"], r["n_b"]) == (3, 3)
    assert r["difference"] == pytest.approx(2.0)
    assert (r["low"], r["high"]) == pytest.approx((2 - half, 2 + half), rel=1e-9)
    # the same numbers unpaired: the large seed-to-seed spread is no longer cancelled
    w = stats.difference_interval([10, 20, 30], [11, 22, 33], paired=False)
    assert w["difference"] == pytest.approx(2.0)
    assert w["high"] - w["low"] > 5 * (r["high"] - r["low"])  # 47.8 vs 4.97


def test_difference_interval_welch_equal_variances():
    # var 1 each, n 3 each: se^2 = 1/3 + 1/3, Welch dof = (2/3)^2 / (2 * (1/3)^2 / 2) = 4
    r = stats.difference_interval([1, 2, 3], [4, 5, 6], paired=False)
    half = T975[4] * math.sqrt(2 / 3)
    assert r["method"] == "Welch t over seeds"
    assert r["dof"] == pytest.approx(4.0)
    assert (r["low"], r["high"]) == pytest.approx((3 - half, 3 + half), rel=1e-9)


def test_difference_interval_welch_unequal():
    # a: var 1, n 3 -> 1/3; b = [2,4,6,8,10]: var 10, n 5 -> 2; se^2 = 7/3
    # dof = (7/3)^2 / ((1/3)^2/2 + 2^2/4) = (49/9) / (19/18) = 98/19 = 5.157...
    r = stats.difference_interval([1, 2, 3], [2, 4, 6, 8, 10], paired=False)
    se = math.sqrt(7 / 3)
    assert r["difference"] == pytest.approx(4.0) and (r["n_a"], r["n_b"]) == (3, 5)
    assert r["dof"] == pytest.approx(98 / 19)
    half = r["high"] - 4.0
    assert r["low"] == pytest.approx(4.0 - half)
    assert T975[6] * se < half < T975[5] * se  # 5 < dof < 6


def test_difference_interval_too_few_seeds_and_errors():
    r = stats.difference_interval([0.8], [0.9, 0.91], paired=False)
    assert math.isnan(r["low"]) and math.isnan(r["high"]) and r["difference"] == pytest.approx(0.105)
    r = stats.difference_interval([0.8], [0.9], paired=True)
    assert math.isnan(r["low"]) and r["difference"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match=r"3.*2"):
        stats.difference_interval([1, 2, 3], [1, 2], paired=True)


# ---------------------------------------------------------------- bootstrap / Holm

def test_bootstrap_recovers_the_binomial_interval_of_a_known_difference():
    """One seed per side, 2,000 images: a right on 1,000, b right on the same 1,000 plus 200 more. The
    difference is +0.10 and its paired standard error sqrt(p_disc / n) = sqrt(0.1 / 2000) = 0.00707; the
    bootstrap's 95% interval must match +-1.96 of it."""
    a = np.zeros(2000, bool)
    a[:1000] = True
    b = a.copy()
    b[1000:1200] = True
    iv = stats.bootstrap_difference(a[None], b[None], paired_seeds=True, resamples=4000, seed=1)
    se = math.sqrt(0.1 * 0.9 / 2000)
    assert iv["difference"] == pytest.approx(0.10)
    assert iv["low"] == pytest.approx(0.10 - 1.96 * se, abs=0.0015)
    assert iv["high"] == pytest.approx(0.10 + 1.96 * se, abs=0.0015)
    assert "bootstrap" in iv["method"]


def test_bootstrap_widens_with_seed_spread():
    """Seeds that disagree add their spread to the test-set part: the interval of sides whose seeds differ
    by 10 points is wider than that of identical seeds."""
    rng = np.random.default_rng(0)
    base = rng.random(4000) < 0.6
    same = np.stack([base, base, base])
    spread = np.stack([rng.random(4000) < p for p in (0.5, 0.6, 0.7)])
    narrow = stats.bootstrap_difference(same, same, paired_seeds=False, seed=0)
    wide = stats.bootstrap_difference(same, spread, paired_seeds=False, seed=0)
    assert wide["high"] - wide["low"] > 2 * (narrow["high"] - narrow["low"])
    with pytest.raises(ValueError, match="equal seed counts"):
        stats.bootstrap_difference(same, spread[:2], paired_seeds=True)


def test_holm_adjusts_a_family():
    # sorted p: 0.01 * 4, 0.02 * 3 = 0.06, 0.03 * 2 = 0.06, 0.5 * 1; order restored, monotone, capped at 1
    np.testing.assert_allclose(stats.holm([0.03, 0.01, 0.5, 0.02]), [0.06, 0.04, 0.5, 0.06])
    np.testing.assert_allclose(stats.holm([0.4, 0.5]), [0.8, 0.8])
    np.testing.assert_allclose(stats.holm([0.9, 0.6]), [1.0, 1.0])


# ---------------------------------------------------------------- compare / format

LABELS = np.arange(20) % 10


def _preds(correct):
    """Predictions that are right exactly where `correct` is 1."""
    correct = np.asarray(correct, dtype=bool)
    return np.where(correct, LABELS, (LABELS + 1) % 10)


def _pair(n00, n01, n10, n11):
    a, b = _correctness(n00, n01, n10, n11)
    return _preds(a), _preds(b)


def test_compare_seed_matched_reports_largest_p():
    a1, b1 = _pair(n00=5, n01=1, n10=9, n11=5)    # p = 0.021484375, acc a .70, b .30
    a2, b2 = _pair(n00=3, n01=2, n10=12, n11=3)   # p = 0.012939453125, acc a .75, b .25
    row = stats.compare("scratch", [a1, a2], "pretrained", [b1, b2], LABELS)
    assert row["comparison"] == "pretrained vs scratch"
    assert row["mcnemar_method"] == "seed-matched pairs (largest p of 2)"
    assert row["interval_method"].startswith("paired bootstrap over test images and matched seeds")
    assert row["seed_interval_method"] == "paired t over seeds"
    assert row["acc_a"] == pytest.approx([0.70, 0.75]) and row["acc_b"] == pytest.approx([0.30, 0.25])
    assert row["pair_p_values"] == pytest.approx([0.021484375, 0.012939453125])
    assert row["p_value"] == pytest.approx(0.021484375) and row["p_min"] == pytest.approx(0.012939453125)
    assert (row["n01"], row["n10"]) == (1, 9)  # counts of the pair that gave the p-value
    # per-seed differences -0.40, -0.50: mean -0.45, std 0.1/sqrt(2), half = t_{.975,1} * 0.05
    assert row["difference"] == pytest.approx(-0.45)
    assert (row["seed_low"], row["seed_high"]) == pytest.approx((-0.45 - T975[1] * 0.05, -0.45 + T975[1] * 0.05))
    assert row["low"] < -0.45 < row["high"] < 0  # 20 images: the test-set part dominates, still clearly negative
    assert (row["seeds_a"], row["seeds_b"], row["test_n"]) == (2, 2, 20)


def test_compare_unequal_seeds_tests_every_seed_pair_never_a_vote():
    a1, b1 = _pair(n00=3, n01=4, n10=1, n11=12)   # p = 0.375
    a2, _ = _pair(n00=7, n01=0, n10=0, n11=13)    # a2 right on 13 images; b1 right on 16 of 20
    row = stats.compare("A", [a1, a1, a2], "B", [b1], LABELS)
    assert row["mcnemar_method"] == "every seed pair, 3 x 1 (largest p of 3)"
    assert len(row["pair_p_values"]) == 3 and row["pair_p_values"][:2] == pytest.approx([0.375, 0.375])
    assert row["p_value"] == max(row["pair_p_values"]) and row["p_min"] == min(row["pair_p_values"])
    assert row["seed_interval_method"] == "Welch t over seeds"
    assert math.isnan(row["seed_low"])          # B has one seed: no t interval over seeds
    assert not math.isnan(row["low"])           # the bootstrap still has the test-set part
    text = stats.format_difference(row)
    assert "bootstrap" in text and "largest over 3 seed pairs" in text and "majority" not in text


def test_every_pair_p_range_on_a_toy_with_unequal_seed_counts():
    """2 seeds against 3: six McNemar tests, one per (a seed, b seed) pair, each on single models."""
    y = LABELS
    a = [_preds(np.arange(20) < k) for k in (10, 12)]
    b = [_preds(np.arange(20) < k) for k in (15, 18, 20)]
    row = stats.compare("a", a, "b", b, y)
    expected = [stats.mcnemar(np.arange(20) < i, np.arange(20) < j)["p_value"] for i in (10, 12) for j in (15, 18, 20)]
    assert row["pair_p_values"] == pytest.approx(expected)
    assert row["p_value"] == pytest.approx(max(expected)) and row["p_min"] == pytest.approx(min(expected))


def test_compare_rejects_length_mismatch():
    with pytest.raises(ValueError, match=r"19.*20"):
        stats.compare("A", [LABELS[:19]], "B", [LABELS], LABELS)


def test_format_difference():
    row = {"difference": 0.0321, "low": 0.028, "high": 0.0362, "p_value": 0.0004}
    assert stats.format_difference(row) == "+3.21 points (95% CI 2.80 to 3.62; McNemar p < 0.001)"
    row = {"difference": -0.005, "low": -0.012, "high": 0.002, "p_value": 0.021484375}
    assert stats.format_difference(row) == "-0.50 points (95% CI -1.20 to 0.20; McNemar p = 0.0215)"
    assert stats.format_difference(row, unit_points=False) == \
        "-0.0050 (95% CI -0.0120 to 0.0020; McNemar p = 0.0215)"
    row = {"difference": 0.0321, "low": math.nan, "high": math.nan, "p_value": 1.0}
    assert stats.format_difference(row) == "+3.21 points (no interval; McNemar p = 1.00)"
    row = {"difference": -0.0028, "low": -0.0078, "high": 0.0021, "p_value": 0.71, "p_min": 0.11,
           "pair_p_values": [0.11, 0.71, 0.3], "interval_method": "paired bootstrap over test images and seeds"}
    assert stats.format_difference(row) == ("-0.28 points (95% CI -0.78 to 0.21, bootstrap; McNemar p = 0.710, "
                                            "the largest over 3 seed pairs (smallest p = 0.110))")
    row |= {"p_value": 1e-5, "p_min": 1e-9}
    assert stats.format_difference(row).endswith("McNemar p < 0.001 on each of 3 seed pairs)")
