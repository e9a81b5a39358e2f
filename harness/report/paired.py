"""Paired comparisons of runs on the items they share, as `compare`, its calibration part and a
study make them: match the runs' items, per group difference each run against the reference with
a 95% CI that resamples images and a paired test by image, then Holm-adjust the whole family."""
from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np

from harness.score.stats import ALPHA, cluster_bootstrap, holm

PairedTest = Callable[[np.ndarray, np.ndarray, np.ndarray], float]  # (run, reference, images) → p


def shared_items(scored: Iterable[dict[str, Any]]) -> list[str]:
    """The item ids every run scored (each given as its item id → record map), sorted."""
    return sorted(set.intersection(*(set(s) for s in scored)))


def differences(values: np.ndarray, images: np.ndarray, idx: np.ndarray, labels: list[str],
                test: PairedTest, seed: int) -> list[dict[str, Any]]:
    """Each later run against the first (rows of `values`, per item) on the items `idx`: the mean
    difference with its by-image CI and the paired test's p-value."""
    base = values[0, idx]
    out = []
    for label, other in zip(labels[1:], values[1:, idx]):
        ci = cluster_bootstrap(other - base, images[idx], seed=seed)
        out.append({"run": label, "difference": ci["mean"], "ci_low": ci["ci_low"],
                    "ci_high": ci["ci_high"], "p": test(other, base, images[idx])})
    return out


def holm_adjust(tests: list[dict[str, Any]], key: str = "p_holm") -> None:
    """Add the Holm-adjusted p-value (as `key`) and `significant` to every test of one family."""
    for test, adjusted in zip(tests, holm([t["p"] for t in tests])):
        test[key] = adjusted
        test["significant"] = adjusted < ALPHA
