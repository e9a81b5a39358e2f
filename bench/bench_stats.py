"""Speed of the statistics on a uBench-sized run: 96k questions on 17k images.

Prints seconds for the clustered bootstrap of one group, for the exact paired test, and for a
whole summary (every group, both scorers, both CIs), each with its ratio to a one-second budget.
"""
from __future__ import annotations

import time

import numpy as np

from harness.report.schema import SampleRecord
from harness.score.scoring import summarize
from harness.score.stats import cluster_bootstrap, paired_test

N_IMAGES = 17_315
QTYPES = ("classification", "domain", "subdomain", "modality", "submodality", "stain")


def synthetic_run(seed: int = 0) -> list[SampleRecord]:
    """Records shaped like a full run: 5-6 questions per image, 22 datasets, ~60% correct."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(N_IMAGES):
        ds = f"dataset_{i % 22:02d}"
        for qt in QTYPES[: 5 + (i % 2)]:
            correct = bool(rng.random() < 0.6)
            records.append(SampleRecord(
                item_id=f"{i}:{qt}", image_id=f"img-{i:06d}", dataset=ds, question_type=qt,
                options={"A": "", "B": "", "C": "", "D": ""}, gold="A",
                extracted="A" if correct else "B", rule="lone_letter", correct=correct,
                correct_official=correct))
    return records


def timed(label: str, fn, budget_s: float = 1.0) -> None:
    start = time.perf_counter()
    fn()
    took = time.perf_counter() - start
    print(f"{label:<58} {took:7.3f} s   {took / budget_s:5.2f} × budget ({budget_s:g} s)")


def main() -> None:
    records = synthetic_run()
    correct = np.array([r.correct for r in records], dtype=float)
    images = np.array([r.image_id for r in records])
    other = np.random.default_rng(1).random(correct.size) < 0.62
    print(f"{len(records):,} items on {N_IMAGES:,} images")
    timed("cluster bootstrap, 1,000 resamples", lambda: cluster_bootstrap(correct, images))
    timed("cluster bootstrap, 10,000 resamples",
          lambda: cluster_bootstrap(correct, images, n_resamples=10_000))
    timed("exact paired test by image (two runs)", lambda: paired_test(correct, other, images))
    timed("summarize: every group, both scorers, both CIs", lambda: summarize(records), 5.0)


if __name__ == "__main__":
    main()
