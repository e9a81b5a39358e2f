"""Accuracy with bootstrap confidence intervals, paired tests and multiple-comparison correction.

`item_bootstrap` is the paper's method (items resampled independently, basic interval, ± as
|CI_high − mean|), kept exactly for the paper's column. The basic interval (2·mean − quantile) can
leave [0, 1] on small groups (6 questions at 16.7% give −16.7% to 33.3%), so everything else uses
intervals that cannot: several questions share one micrograph, so `cluster_bootstrap` resamples
whole images and takes the percentile interval (honest, wider), and `wilson_interval` serves groups
too small for a bootstrap to mean much. Every by-image bootstrap (this one, the spread across
templates, the calibration metrics) draws its resamples from `image_resamples`. `paired_test`
compares two runs on the same items by swapping their answers image by image (exact; McNemar's
exact test when every image has one question), and `holm` adjusts a family of p-values.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np

N_RESAMPLES = 1000
ALPHA = 0.05  # significance level of every paired comparison, after Holm
CHUNK_CELLS = 2_000_000  # numbers a chunk of bootstrap resamples may hold at once


def _basic_interval(mean: float, resampled: np.ndarray, alpha: float) -> tuple[float, float]:
    lo_q, hi_q = np.quantile(resampled, [alpha / 2, 1 - alpha / 2])
    return 2 * mean - hi_q, 2 * mean - lo_q


def _percentile_interval(resampled: np.ndarray, alpha: float) -> tuple[float, float]:
    lo_q, hi_q = np.quantile(resampled, [alpha / 2, 1 - alpha / 2])
    return float(lo_q), float(hi_q)


def wilson_interval(successes: float, n: float, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson's score interval for a proportion: inside [0, 1], and not empty at 0% or 100%."""
    if n <= 0:
        return 0.0, 1.0
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1 - alpha / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # exact at the ends: at p = 0 the lower bound is 0, not a rounding error away from it
    return float(min(p, max(0.0, centre - half))), float(max(p, min(1.0, centre + half)))


def item_bootstrap(correct: np.ndarray, *, n_resamples: int = N_RESAMPLES, seed: int = 0,
                   alpha: float = 0.05) -> dict[str, Any]:
    """Pooled accuracy and its basic bootstrap CI over items.

    Resampling n Bernoulli outcomes with replacement gives a Binomial(n, p̂) count of correct ones,
    so the resamples are drawn directly from that distribution: exact and O(n_resamples).
    """
    correct = np.asarray(correct, dtype=float)
    n = correct.size
    if n == 0:
        return {"n": 0, "accuracy": None, "ci_low": None, "ci_high": None, "pm": None}
    mean = float(correct.mean())
    rng = np.random.default_rng(seed)
    resampled = rng.binomial(n, mean, size=n_resamples) / n
    low, high = _basic_interval(mean, resampled, alpha)
    return {"n": n, "accuracy": mean, "ci_low": float(low), "ci_high": float(high),
            "pm": float(abs(high - mean))}


def cluster_codes(clusters: np.ndarray) -> np.ndarray:
    """Integer codes 0..k-1 for cluster labels (image ids), so callers can encode once."""
    return np.unique(np.asarray(clusters), return_inverse=True)[1].reshape(-1)


def image_resamples(rng: np.random.Generator, group_sizes: np.ndarray, n_resamples: int, *,
                    row_cells: int) -> Iterator[np.ndarray]:
    """The by-image bootstrap: `n_resamples` draws of k images with replacement (k = the sum of
    `group_sizes`), yielded in chunks of rows, each row counting how often each group was drawn.

    Images that are interchangeable for a statistic may share a group (`group_sizes[j]` images):
    a multinomial over the groups draws as one over the images summed within groups, with far
    fewer cells; all ones resamples every image. `row_cells` is how many numbers the caller makes
    of one row, so a chunk holds at most CHUNK_CELLS of them. The draws do not depend on the
    chunking, so every caller with the same seed and images resamples the same images.
    """
    group_sizes = np.asarray(group_sizes)
    k = int(group_sizes.sum())
    chunk = max(1, CHUNK_CELLS // max(row_cells, 1))
    for start in range(0, n_resamples, chunk):
        yield rng.multinomial(k, group_sizes / k, size=min(chunk, n_resamples - start))


def cluster_bootstrap(values: np.ndarray, clusters: np.ndarray, *,
                      n_resamples: int = N_RESAMPLES, seed: int = 0,
                      alpha: float = 0.05) -> dict[str, Any]:
    """Pooled mean with a percentile bootstrap CI that resamples clusters (images) whole.

    The percentile interval lies inside the range of the resampled means, so an accuracy's stays
    in [0, 1] and a difference's in [−1, 1].

    A resample draws k of the k clusters with replacement. Clusters with the same (size, sum) are
    interchangeable, and with 0/1 outcomes there are only a few dozen such types, so a resample is
    a multinomial draw over the types: exact, and milliseconds even for 96k items.
    """
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return {"n_clusters": 0, "mean": None, "ci_low": None, "ci_high": None}
    codes = cluster_codes(clusters)
    k = int(codes.max()) + 1
    sums = np.bincount(codes, weights=values, minlength=k)
    sizes = np.bincount(codes, minlength=k).astype(float)
    types, counts = np.unique(np.stack([sums, sizes]), axis=1, return_counts=True)
    rng = np.random.default_rng(seed)
    resampled = np.concatenate([(draws @ types[0]) / (draws @ types[1]) for draws in (
        d.astype(float) for d in image_resamples(rng, counts, n_resamples,
                                                 row_cells=2 * counts.size))])
    mean = float(sums.sum() / sizes.sum())
    low, high = _percentile_interval(resampled, alpha)
    return {"n_clusters": k, "mean": mean, "ci_low": low, "ci_high": high}


def paired_test(a: np.ndarray, b: np.ndarray, clusters: np.ndarray) -> float:
    """Exact two-sided p-value that runs A and B are equally accurate on the same items.

    Under the null hypothesis the two runs are exchangeable within each image, so swapping their
    answers on an image flips the sign of that image's difference d_k = Σ(a − b). The p-value is
    P(|Σ ±d_k| ≥ |Σ d_k|) over all 2^k sign patterns, computed exactly: images with the same |d_k|
    contribute a scaled Binomial(m, ½), and these few distributions are convolved. With one
    question per image this is McNemar's exact test.
    """
    diff = np.asarray(a, dtype=np.int64) - np.asarray(b, dtype=np.int64)
    if diff.size == 0:
        return 1.0
    d = np.bincount(cluster_codes(clusters), weights=diff).round().astype(np.int64)
    observed = abs(int(d.sum()))
    if observed == 0:
        return 1.0
    magnitudes, counts = np.unique(np.abs(d[d != 0]), return_counts=True)
    span = int(magnitudes @ counts)  # |Σ ±d_k| never exceeds this
    if len(magnitudes) == 1:  # one binomial: sum its tail directly, no convolution
        v, m = int(magnitudes[0]), int(counts[0])
        totals = v * (2 * np.arange(m + 1) - m)
        return float(min(1.0, _binomial_pmf(m)[np.abs(totals) >= observed].sum()))
    size = 2 * span + 1  # every total in [-span, span] has its own slot modulo size
    spectrum = np.ones(size // 2 + 1, dtype=complex)
    for v, m in zip(magnitudes.tolist(), counts.tolist()):
        component = np.zeros(size)
        component[(v * (2 * np.arange(m + 1) - m)) % size] = _binomial_pmf(m)
        spectrum *= np.fft.rfft(component)
    pmf = np.clip(np.fft.irfft(spectrum, n=size), 0.0, None)  # FFT noise is ~1e-16 absolute
    totals = np.where(np.arange(size) <= span, np.arange(size), np.arange(size) - size)
    return float(min(1.0, pmf[np.abs(totals) >= observed].sum()))


def _binomial_pmf(m: int) -> np.ndarray:
    """Binomial(m, ½) probabilities, via log coefficients so large m does not overflow."""
    i = np.arange(1, m + 1)
    log_coef = np.concatenate([[0.0], np.cumsum(np.log((m - i + 1) / i))])
    return np.exp(log_coef - m * np.log(2.0))


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (controls the family-wise error rate), input order."""
    p = np.asarray(p_values, dtype=float)
    m = p.size
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    adjusted = np.empty(m)
    adjusted[order] = stepped
    return adjusted.tolist()


def kendall_tau(x: list[float], y: list[float]) -> float | None:
    """Kendall's τ-b between two rankings given as scores (ties allowed); None when either is all
    ties (a ranking of one model, or every model equal)."""
    n = len(x)
    concordant = discordant = tied_x = tied_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
            tied_x += dx == 0
            tied_y += dy == 0
            concordant += dx * dy > 0
            discordant += dx * dy < 0
    pairs = n * (n - 1) // 2
    denominator = np.sqrt(float((pairs - tied_x) * (pairs - tied_y)))
    return float((concordant - discordant) / denominator) if denominator else None


def spread_bootstrap(outcomes: np.ndarray, clusters: np.ndarray, *,
                     n_resamples: int = N_RESAMPLES, seed: int = 0,
                     alpha: float = 0.05) -> dict[str, Any]:
    """The spread (max − min) of the accuracies of several variants (rows of `outcomes`) on the
    same items, with a percentile CI that resamples images whole, jointly for every variant (the
    variants answered the same images, so their accuracies move together)."""
    outcomes = np.asarray(outcomes, dtype=float)
    if outcomes.ndim != 2 or outcomes.shape[1] == 0 or outcomes.shape[0] < 2:
        return {"spread": None, "ci_low": None, "ci_high": None, "p_no_template_effect": None,
                "n": 0}
    codes = cluster_codes(clusters)
    k = int(codes.max()) + 1
    sums = np.stack([np.bincount(codes, weights=row, minlength=k) for row in outcomes])
    sizes = np.bincount(codes, minlength=k).astype(float)
    accuracy = sums.sum(axis=1) / sizes.sum()
    rng = np.random.default_rng(seed)
    spreads = []
    for draws in image_resamples(rng, np.ones(k, dtype=int), n_resamples,
                                 row_cells=k + len(sums)):
        resampled = (draws @ sums.T) / (draws @ sizes)[:, None]
        spreads.append(resampled.max(axis=1) - resampled.min(axis=1))
    low, high = _percentile_interval(np.concatenate(spreads), alpha)
    observed = float(accuracy.max() - accuracy.min())
    # The spread of noisy accuracies is biased upwards (max − min of estimates exceeds that of the
    # truths), so its CI can exclude 0 when templates do not matter. The permutation p-value asks
    # the question directly: swap the templates' labels within each image (all its questions
    # together) and see how often a spread this large arises with no template effect at all.
    null = np.empty(n_resamples)
    for i in range(n_resamples):
        permuted = rng.permuted(sums, axis=0).sum(axis=1)
        null[i] = (permuted.max() - permuted.min()) / sizes.sum()
    p = float((1 + np.sum(null >= observed - 1e-12)) / (1 + n_resamples))
    return {"spread": observed, "ci_low": low, "ci_high": high, "p_no_template_effect": p,
            "n": int(outcomes.shape[1]), "n_images": k}


def paired_sign_flip_test(a: np.ndarray, b: np.ndarray, clusters: np.ndarray, *,
                          n_resamples: int = 10_000, seed: int = 0) -> float:
    """Two-sided p-value that continuous per-item scores (e.g. Brier) of runs A and B have equal
    means on the same items: as `paired_test`, swapping the runs image by image flips the sign of
    that image's difference, but the sign patterns are sampled (seeded), since real-valued
    differences have no small exact distribution. p = (1 + #{|Σ ±d_k| ≥ |Σ d_k|}) / (1 + R).
    """
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if diff.size == 0:
        return 1.0
    d = np.bincount(cluster_codes(clusters), weights=diff)
    observed = abs(d.sum())
    if observed == 0:
        return 1.0
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // d.size)
    extreme = 0
    for start in range(0, n_resamples, chunk):
        signs = rng.integers(0, 2, size=(min(chunk, n_resamples - start), d.size)) * 2 - 1
        extreme += int((np.abs(signs @ d) >= observed * (1 - 1e-12)).sum())
    return (1 + extreme) / (1 + n_resamples)
