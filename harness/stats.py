"""Accuracy with bootstrap confidence intervals, vectorised.

`item_bootstrap` is the paper's method (items resampled independently, basic interval, ± as
|CI_high − mean|). Several questions share one micrograph, so `cluster_bootstrap` resamples whole
images, which gives honest (wider) intervals.
"""
from __future__ import annotations

import numpy as np

N_RESAMPLES = 1000
_CHUNK = 200


def _basic_interval(mean: float, resampled: np.ndarray, alpha: float) -> tuple[float, float]:
    lo_q, hi_q = np.quantile(resampled, [alpha / 2, 1 - alpha / 2])
    return 2 * mean - hi_q, 2 * mean - lo_q


def item_bootstrap(correct: np.ndarray, *, n_resamples: int = N_RESAMPLES, seed: int = 0,
                   alpha: float = 0.05) -> dict[str, float]:
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


def cluster_bootstrap(correct: np.ndarray, clusters: np.ndarray, *,
                      n_resamples: int = N_RESAMPLES, seed: int = 0,
                      alpha: float = 0.05) -> dict[str, float]:
    """Pooled accuracy with a basic bootstrap CI that resamples clusters (images) whole."""
    correct = np.asarray(correct, dtype=float)
    if correct.size == 0:
        return {"n_clusters": 0, "ci_low": None, "ci_high": None, "pm": None}
    _, codes = np.unique(np.asarray(clusters), return_inverse=True)
    k = int(codes.max()) + 1
    sums = np.bincount(codes, weights=correct, minlength=k)
    sizes = np.bincount(codes, minlength=k).astype(float)
    mean = float(sums.sum() / sizes.sum())
    rng = np.random.default_rng(seed)
    resampled = np.empty(n_resamples)
    uniform = np.full(k, 1.0 / k)
    for start in range(0, n_resamples, _CHUNK):
        stop = min(start + _CHUNK, n_resamples)
        weights = rng.multinomial(k, uniform, size=stop - start).astype(float)
        resampled[start:stop] = (weights @ sums) / (weights @ sizes)
    low, high = _basic_interval(mean, resampled, alpha)
    return {"n_clusters": k, "ci_low": float(low), "ci_high": float(high),
            "pm": float(abs(high - mean))}
