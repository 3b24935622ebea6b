"""Statistics for comparing classifiers: paired tests on the same test images, intervals over seeds.

    mcnemar(correct_a, correct_b)              # exact McNemar test on per-image correctness
    seed_interval(accs)                        # mean, std and t-interval of the mean over seeds
    difference_interval(accs_a, accs_b, paired=True)
    bootstrap_difference(correct_a, correct_b)  # interval over test images and seeds together
    holm(p_values)                             # Holm-adjusted p-values of a family of tests
    row = compare("scratch", preds_a, "pretrained", preds_b, labels)
    format_difference(row)                     # "+3.21 points (95% CI 2.80 to 3.62, bootstrap; McNemar p < 0.001)"
    wilson_interval(8711, 10000)               # 95% interval of one model's test accuracy
    cm = confusion_matrix(pred, labels, 10); top_confusion_pairs(cm, classes, k=5)

McNemar asks whether two trained models differ on *these* test images (paired, per image); it runs
only on pairs of single models (seed-matched, or every seed pair where the seed counts differ), never
on majority votes (a vote over seeds is an ensemble, and ensembles of unequal size are not alike).
The interval of a difference resamples both sources of uncertainty at once: the seeds (training
randomness) and the test images (a finite sample of the distribution), by a paired bootstrap.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as st


def mcnemar_table(n01: int, n10: int) -> float:
    """Exact two-sided McNemar p-value from the two discordant counts.

    Conditional on n01 + n10 disagreements, under "equal accuracy" each disagreement favours
    either model with probability 1/2, so n01 ~ Binomial(n01 + n10, 1/2) (McNemar 1947; the
    exact form avoids the chi-square approximation, which is poor for small counts).
    """
    if min(n01, n10) < 0 or int(n01) != n01 or int(n10) != n10:
        raise ValueError(f"discordant counts must be non-negative integers, got n01={n01}, n10={n10}")
    n01, n10 = int(n01), int(n10)
    if n01 + n10 == 0:
        return 1.0  # the models never disagree: no evidence of a difference
    return float(min(1.0, st.binomtest(n01, n01 + n10, 0.5, alternative="two-sided").pvalue))


def mcnemar(correct_a: Sequence, correct_b: Sequence) -> dict:
    """Exact McNemar test on paired per-example correctness (bool or 0/1, one entry per test image).

    n01 = a wrong & b right, n10 = a right & b wrong; difference = acc_b - acc_a as a fraction.
    """
    a, b = np.asarray(correct_a), np.asarray(correct_b)
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError(f"correctness must be 1-D arrays, got shapes {a.shape} and {b.shape}")
    if len(a) != len(b):
        raise ValueError(f"correctness arrays differ in length: a has {len(a)}, b has {len(b)}")
    if len(a) == 0:
        raise ValueError("correctness arrays are empty: McNemar needs at least one test example")
    for name, x in (("a", a), ("b", b)):
        if not np.isin(x, (0, 1)).all():
            raise ValueError(f"correctness {name} must be boolean or 0/1")
    a, b = a.astype(bool), b.astype(bool)
    n01, n10 = int((~a & b).sum()), int((a & ~b).sum())
    return {"n": len(a), "n00": int((~a & ~b).sum()), "n01": n01, "n10": n10, "n11": int((a & b).sum()),
            "acc_a": float(a.mean()), "acc_b": float(b.mean()), "difference": float(b.mean() - a.mean()),
            "p_value": mcnemar_table(n01, n10)}


def _values(values: Sequence, what: str = "values") -> np.ndarray:
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"{what} must be a non-empty 1-D sequence, got shape {x.shape}")
    if np.isnan(x).any():
        raise ValueError(f"{what} contain NaN (a failed or missing seed?)")
    return x


def seed_interval(values: Sequence, confidence: float = 0.95) -> dict:
    """Mean over seeds with its two-sided t confidence interval (std with ddof=1).

    The interval is mean +- t_{(1+confidence)/2, n-1} * std / sqrt(n): Student t because the
    std is itself estimated from few seeds. With n == 1 there is no spread to estimate, so
    std, half_width, low and high are NaN (no interval from one seed). NaN input is an error.
    """
    x = _values(values)
    n, mean = len(x), float(x.mean())
    if n < 2:
        return {"mean": mean, "std": math.nan, "n": 1, "half_width": math.nan, "low": math.nan,
                "high": math.nan, "confidence": confidence}
    std = float(x.std(ddof=1))
    half = float(st.t.ppf((1 + confidence) / 2, n - 1) * std / math.sqrt(n))
    return {"mean": mean, "std": std, "n": n, "half_width": half, "low": mean - half, "high": mean + half,
            "confidence": confidence}


def difference_interval(a_values: Sequence, b_values: Sequence, paired: bool, confidence: float = 0.95) -> dict:
    """Confidence interval of mean(b) - mean(a) over seeds.

    paired: seed i of a and seed i of b share their seed (same split/order), so the t-interval of
    the per-seed differences removes the shared seed noise; needs equal lengths.
    unpaired: Welch t-interval with Welch-Satterthwaite degrees of freedom (no equal-variance
    assumption). With too few seeds (paired n < 2, or either side < 2 for Welch) low/high are NaN.
    """
    a, b = _values(a_values, "a values"), _values(b_values, "b values")
    out = {"difference": float(b.mean() - a.mean()), "n_a": len(a), "n_b": len(b)}
    if paired:
        if len(a) != len(b):
            raise ValueError(f"paired interval needs equal seed counts: a has {len(a)}, b has {len(b)}")
        iv = seed_interval(b - a, confidence)
        return out | {"low": iv["low"], "high": iv["high"], "dof": len(a) - 1, "method": "paired t over seeds"}
    out["method"] = "Welch t over seeds"
    if len(a) < 2 or len(b) < 2:
        return out | {"low": math.nan, "high": math.nan, "dof": math.nan}
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)  # squared standard errors of each mean
    se = math.sqrt(va + vb)
    if se == 0:  # every seed identical on both sides: the interval collapses to the point
        return out | {"low": out["difference"], "high": out["difference"], "dof": math.inf}
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch-Satterthwaite
    half = float(st.t.ppf((1 + confidence) / 2, dof) * se)
    return out | {"low": out["difference"] - half, "high": out["difference"] + half, "dof": float(dof)}


def bootstrap_difference(correct_a: np.ndarray, correct_b: np.ndarray, *, paired_seeds: bool, resamples: int = 2000,
                         confidence: float = 0.95, seed: int = 0) -> dict:
    """Percentile interval of mean accuracy(b) - mean accuracy(a), resampling test images and seeds together.

    ``correct_a``: (seeds_a, images) per-image correctness of each of a's seeds; ``correct_b`` likewise, on the
    same images in the same order. Each resample draws the test images with replacement (the same draw for both
    sides: the comparison is paired over images) and the seeds of each side with replacement (with
    ``paired_seeds``, equal counts, seed i of a with seed i of b: one draw for both). One seed per side still
    gets an interval: the test-set part alone."""
    a, b = np.atleast_2d(np.asarray(correct_a, dtype=float)), np.atleast_2d(np.asarray(correct_b, dtype=float))
    if a.shape[1] != b.shape[1] or a.shape[1] == 0:
        raise ValueError(f"both sides need the same, non-empty test images: {a.shape[1]} vs {b.shape[1]}")
    if paired_seeds and len(a) != len(b):
        raise ValueError(f"paired seeds need equal seed counts: a has {len(a)}, b has {len(b)}")
    rng = np.random.default_rng(seed)
    n = a.shape[1]
    diffs = np.empty(resamples)
    for i in range(resamples):
        weights = np.bincount(rng.integers(0, n, n), minlength=n) / n    # images drawn, as weights
        sa = rng.integers(0, len(a), len(a))
        sb = sa if paired_seeds else rng.integers(0, len(b), len(b))
        diffs[i] = (b[sb] @ weights).mean() - (a[sa] @ weights).mean()
    tail = (1 - confidence) / 2
    return {"difference": float(b.mean() - a.mean()), "low": float(np.quantile(diffs, tail)),
            "high": float(np.quantile(diffs, 1 - tail)), "confidence": confidence, "resamples": resamples,
            "method": f"paired bootstrap over test images and {'matched ' if paired_seeds else ''}seeds "
                      f"({resamples:,} resamples, percentile)"}


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment (Holm 1979) of a family of p-values: controls the chance of any false
    rejection at the nominal level; adjusted p_(i) = max over j <= i of min(1, (m - j + 1) p_(j)) in
    ascending order."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


def compare(name_a: str, preds_a: Sequence[np.ndarray], name_b: str, preds_b: Sequence[np.ndarray],
            labels: np.ndarray, confidence: float = 0.95) -> dict:
    """One comparison row (b vs a) on the same test images.

    McNemar on single models only: with equal seed counts, seed i of a against seed i of b; otherwise every
    (seed of a, seed of b) pair. The row's p-value is the largest (the least significant pair: a claim
    holds for every pair), and the range of p over the pairs is kept. The interval resamples test images and
    seeds together (``bootstrap_difference``); the t interval over seeds alone is kept beside it."""
    y = np.asarray(labels)
    for name, preds in ((name_a, preds_a), (name_b, preds_b)):
        if len(preds) == 0:
            raise ValueError(f"{name}: no seeds given")
        for i, p in enumerate(preds):
            if np.shape(p) != y.shape:
                raise ValueError(f"{name} seed {i}: {len(np.ravel(p))} predictions but {len(y)} labels")
    correct_a = np.stack([np.asarray(p) == y for p in preds_a])
    correct_b = np.stack([np.asarray(p) == y for p in preds_b])
    acc_a, acc_b = correct_a.mean(1).tolist(), correct_b.mean(1).tolist()
    paired = len(preds_a) == len(preds_b)
    seeds_only = difference_interval(acc_a, acc_b, paired=paired, confidence=confidence)
    iv = bootstrap_difference(correct_a, correct_b, paired_seeds=paired, confidence=confidence)
    pairs = (list(zip(range(len(preds_a)), range(len(preds_b)))) if paired
             else [(i, j) for i in range(len(preds_a)) for j in range(len(preds_b))])
    tests = [mcnemar(correct_a[i], correct_b[j]) for i, j in pairs]
    chosen = max(tests, key=lambda t: t["p_value"])  # least significant pair
    method = (f"seed-matched pairs (largest p of {len(tests)})" if paired
              else f"every seed pair, {len(preds_a)} x {len(preds_b)} (largest p of {len(tests)})")
    return {"comparison": f"{name_b} vs {name_a}", "a": name_a, "b": name_b,
            "seeds_a": len(preds_a), "seeds_b": len(preds_b), "acc_a": acc_a, "acc_b": acc_b,
            "acc_a_mean": float(np.mean(acc_a)), "acc_b_mean": float(np.mean(acc_b)),
            "difference": iv["difference"], "low": iv["low"], "high": iv["high"], "confidence": confidence,
            "interval_method": iv["method"], "seed_low": seeds_only["low"], "seed_high": seeds_only["high"],
            "seed_interval_method": seeds_only["method"], "n01": chosen["n01"], "n10": chosen["n10"],
            "p_value": chosen["p_value"], "p_min": min(t["p_value"] for t in tests),
            "pair_p_values": [t["p_value"] for t in tests], "mcnemar_method": method, "test_n": len(y)}


def _p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:#.3g}"  # 3 significant digits, e.g. 0.0215, 1.00


def format_difference(row: dict, unit_points: bool = True) -> str:
    """Human-readable difference, e.g. "+3.21 points (95% CI 2.80 to 3.62, bootstrap; McNemar p < 0.001)".

    Points are percentage points (fraction x 100); with unit_points=False the fractions are shown. Where
    McNemar ran on several seed pairs, the largest p is given, with the range when the pairs disagree."""
    scale, fmt, unit = (100.0, "{:.2f}", " points") if unit_points else (1.0, "{:.4f}", "")
    sign = lambda v: ("+" if v >= 0 else "") + fmt.format(v * scale)  # noqa: E731
    diff = sign(row["difference"])
    p = _p_text(row["p_value"])
    pairs = row.get("pair_p_values") or []
    if len(pairs) > 1:
        low_p = row.get("p_min", min(pairs))
        p = (f"{p} on each of {len(pairs)} seed pairs" if row["p_value"] < 0.001 else
             f"{p}, the largest over {len(pairs)} seed pairs (smallest {_p_text(low_p)})")
    if math.isnan(row["low"]) or math.isnan(row["high"]):
        return f"{diff}{unit} (no interval; McNemar {p})"
    level = round(100 * row.get("confidence", 0.95))
    low, high = fmt.format(row["low"] * scale), fmt.format(row["high"] * scale)
    how = ", bootstrap" if "bootstrap" in str(row.get("interval_method", "")) else ""
    return f"{diff}{unit} ({level}% CI {low} to {high}{how}; McNemar {p})"


# ---------------------------------------------------------------------------------------
# One model's accuracy and its confusions (numpy only: the report reads them from predictions)
# ---------------------------------------------------------------------------------------
Z95 = 1.959963984540054  # two-sided 95% standard-normal quantile


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (``correct`` successes of ``n``).

    Chosen over the normal approximation because it stays inside [0, 1] and keeps its coverage
    for small test subsets and accuracies near 0 or 1 (Brown, Cai & DasGupta 2001).
    """
    if n <= 0:
        raise ValueError(f"wilson_interval needs n > 0 test images, got n={n}")
    if not 0 <= correct <= n:
        raise ValueError(f"correct must be in [0, n={n}], got {correct}")
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def confusion_matrix(pred, labels, num_classes: int) -> np.ndarray:
    """``cm[t, p]`` = images of true class t predicted as p."""
    pred, labels = np.asarray(pred, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    if pred.shape != labels.shape:
        raise ValueError(f"pred {pred.shape} and labels {labels.shape} differ in shape")
    return np.bincount(labels * num_classes + pred, minlength=num_classes * num_classes).reshape(num_classes,
                                                                                                 num_classes)


def top_confusion_pairs(cm: np.ndarray, classes, k: int = 5) -> pd.DataFrame:
    """The ``k`` class pairs most often confused, counting both directions (A->B plus B->A)."""
    n = len(classes)
    rows = [{"pair": f"{classes[a]} ↔ {classes[b]}", "a": classes[a], "b": classes[b],
             "a_to_b": int(cm[a, b]), "b_to_a": int(cm[b, a]), "total": int(cm[a, b] + cm[b, a])}
            for a in range(n) for b in range(a + 1, n)]
    rows.sort(key=lambda r: (-r["total"], r["pair"]))  # ties broken by name: a stable ranking
    return pd.DataFrame(rows[:k])


def pair_counts(cm: np.ndarray, classes, a: str, b: str) -> int:
    i, j = list(classes).index(a), list(classes).index(b)
    return int(cm[i, j] + cm[j, i])


def compare_pairs(cm_base: np.ndarray, cm_other: np.ndarray, classes, k: int = 5) -> pd.DataFrame:
    """Top-``k`` pairs ranked on ``cm_base`` (the scratch model) beside ``cm_other``'s counts
    for the same pairs, and the reduction in percent (positive = fewer confusions)."""
    top = top_confusion_pairs(cm_base, classes, k)
    other = [pair_counts(cm_other, classes, a, b) for a, b in zip(top.a, top.b)]
    out = top[["pair", "total"]].rename(columns={"total": "base"})
    out["other"] = other
    out["reduction_pct"] = [100.0 * (1 - o / s) if s else float("nan") for s, o in zip(out.base, other)]
    return out
