"""Calibration of the letter probabilities (`--answer-mode logprobs`) and selective accuracy.

Per item, with p the renormalised letter distribution, g the gold letter and the prediction the
argmax (ties: the letter listed first); confidence = p(prediction):
- `mean_gold_prob`: mean p(g).
- `brier`: Σ over the item's options of (p_k − [k = g])², averaged (multi-class, 0 best, 2 worst).
- `nll`: mean −ln p(g), with p(g) clipped at 1e-12 (a letter absent from the top-k has p = 0).
- `ece`: Σ_b (n_b / n) · |accuracy_b − mean confidence_b| over `n_bins` equal-width confidence bins.
- `letter_mass`: mean probability on the item's letters before renormalising.
- `selective_accuracy`: accuracy on the most confident x% of items (x = 100, 90, 80, 50); items
  are ranked by confidence, ties by item id.
- `aurc`: area under the risk–coverage curve: the mean, over k = 1..n, of the error rate of the
  k most confident items (0 best).
CIs are percentile bootstrap intervals that resample whole images (questions about one micrograph
are not independent), as for the clustered accuracy CI, so they stay in each metric's range: each
resample gives every item the weight of its image's draw count, and every metric is computed from
weighted sums, so one code path gives both the estimate (all weights 1) and the resamples.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from harness.report.schema import SampleRecord
from harness.score.scoring import group_order, paper_groups
from harness.score.stats import N_RESAMPLES, _percentile_interval, cluster_codes, image_resamples

N_BINS = 15
COVERAGES = (1.0, 0.9, 0.8, 0.5)
PROB_FLOOR = 1e-12
GROUP_HEADS = ("coarse", "fine", "question_type")


def has_letter_probs(record: SampleRecord) -> bool:
    """Whether a record can be scored for calibration (answered, with letter probabilities)."""
    return record.error is None and record.letter_probs is not None


class ItemArrays:
    """The per-item quantities every metric is a weighted mean or sum of."""

    def __init__(self, records: list[SampleRecord], n_bins: int = N_BINS):
        n = len(records)
        width = max((len(r.options) for r in records), default=1)
        probs = np.full((n, width), -1.0)  # -1 pads: never the argmax, never a probability
        gold = np.empty(n, dtype=int)
        for i, r in enumerate(records):
            letters, letter_probs = list(r.options), r.letter_probs or {}
            probs[i, :len(letters)] = [float(letter_probs.get(k, 0.0)) for k in letters]
            gold[i] = letters.index(str(r.gold))
        real = np.where(probs < 0, 0.0, probs)
        rows = np.arange(n)
        predicted = probs.argmax(axis=1)  # first maximum: ties go to the letter listed first
        self.n = n
        self.confidence = real[rows, predicted]
        self.correct = (predicted == gold).astype(float)
        self.gold_prob = real[rows, gold]
        onehot = np.zeros_like(real)
        onehot[rows, gold] = 1.0
        self.brier = ((real - onehot) ** 2).sum(axis=1)
        self.nll = -np.log(np.maximum(self.gold_prob, PROB_FLOOR))
        self.letter_mass = np.array([float(r.letter_mass or 0.0) for r in records])
        self.n_bins = n_bins
        self.bin = np.minimum((self.confidence * n_bins).astype(int), n_bins - 1)
        self.order = np.argsort(-self.confidence, kind="stable")  # records come sorted by id


def _metrics(a: ItemArrays, w: np.ndarray, coverages: tuple[float, ...]) -> dict[str, np.ndarray]:
    """Every metric for each row of item weights `w` (resamples × items)."""
    total = w.sum(axis=1)
    out = {"accuracy": w @ a.correct / total, "mean_gold_prob": w @ a.gold_prob / total,
           "brier": w @ a.brier / total, "nll": w @ a.nll / total,
           "letter_mass": w @ a.letter_mass / total}
    bins = np.zeros((a.n, a.n_bins))
    bins[np.arange(a.n), a.bin] = 1.0
    gap = w @ (bins * a.correct[:, None]) - w @ (bins * a.confidence[:, None])
    out["ece"] = np.abs(gap).sum(axis=1) / total
    ranked = w[:, a.order]
    covered = np.cumsum(ranked, axis=1)
    right = np.cumsum(ranked * a.correct[a.order], axis=1)
    for c in coverages:
        last = np.argmax(covered >= c * total[:, None] - 1e-9, axis=1)
        rows = np.arange(len(w))
        out[f"selective_accuracy_{round(100 * c)}"] = right[rows, last] / covered[rows, last]
    risk = np.divide(covered - right, covered, out=np.zeros_like(covered), where=covered > 0)
    out["aurc"] = (ranked * risk).sum(axis=1) / total
    return out


def point_metrics(a: ItemArrays, coverages: tuple[float, ...] = COVERAGES) -> dict[str, float]:
    """Every metric of the items as they are (no resampling)."""
    return {k: float(v[0]) for k, v in _metrics(a, np.ones((1, a.n)), coverages).items()}


def _with_cis(a: ItemArrays, images: np.ndarray, seed: int,
              coverages: tuple[float, ...]) -> dict[str, dict[str, float]]:
    point = point_metrics(a, coverages)
    codes = cluster_codes(images)
    k = int(codes.max()) + 1
    draws: dict[str, list[np.ndarray]] = {name: [] for name in point}
    for counts in image_resamples(np.random.default_rng(seed), np.ones(k, dtype=int),
                                  N_RESAMPLES, row_cells=a.n):
        for name, values in _metrics(a, counts[:, codes].astype(float), coverages).items():
            draws[name].append(values)
    out = {}
    for name, value in point.items():
        low, high = _percentile_interval(np.concatenate(draws[name]), 0.05)
        out[name] = {"value": value, "ci_low": low, "ci_high": high}
    return out


def reliability_bins(a: ItemArrays) -> list[dict[str, Any]]:
    """Per confidence bin: its edges, item count, mean confidence and accuracy (None if empty)."""
    out = []
    for b in range(a.n_bins):
        mask = a.bin == b
        n = int(mask.sum())
        out.append({"low": b / a.n_bins, "high": (b + 1) / a.n_bins, "n": n,
                    "confidence": float(a.confidence[mask].mean()) if n else None,
                    "accuracy": float(a.correct[mask].mean()) if n else None})
    return out


def risk_coverage(a: ItemArrays) -> dict[str, list[float]]:
    """The risk–coverage curve: error rate of the k most confident items, k = 1..n."""
    correct = a.correct[a.order]
    k = np.arange(1, a.n + 1)
    return {"coverage": (k / a.n).tolist(), "risk": (1 - np.cumsum(correct) / k).tolist()}


def calibration_summary(records: list[SampleRecord], *, seed: int = 0, n_bins: int = N_BINS,
                        coverages: tuple[float, ...] = COVERAGES) -> dict[str, Any] | None:
    """summary.json's `calibration`: pooled and per question type, with clustered CIs; None when
    no record has letter probabilities."""
    scored = [r for r in records if r.error is None]
    items = sorted((r for r in scored if has_letter_probs(r)), key=lambda r: r.item_id)
    if not items:
        return None
    groups = {"all": list(range(len(items)))}
    groups.update({name: idx for name, idx in sorted(paper_groups(items).items(),
                                                     key=lambda kv: group_order(kv[0]))
                   if name.split("/")[0] in GROUP_HEADS})
    images = np.array([r.image_id for r in items])
    pooled = ItemArrays(items, n_bins)
    out: dict[str, Any] = {
        "n_items": len(items),
        "n_without_letter_probs": len(scored) - len(items),
        "n_bins": n_bins,
        "coverages": list(coverages),
        "ci": {"method": "percentile bootstrap over images", "n_resamples": N_RESAMPLES,
               "seed": seed, "alpha": 0.05},
        "groups": {},
        "reliability": reliability_bins(pooled),
    }
    for name, idx in groups.items():
        subset = [items[i] for i in idx]
        arrays = pooled if name == "all" else ItemArrays(subset, n_bins)
        out["groups"][name] = {"n": len(subset),
                               "n_images": int(np.unique(images[idx]).size),
                               **_with_cis(arrays, images[idx], seed, coverages)}
    return out


def answer_mode_summary(records: list[SampleRecord]) -> dict[str, Any] | None:
    """How the answer mode held up: replies outside the letters in `choice` mode (a server that
    ignores the constraint), items without letter probabilities and agreement of the argmax with
    the text in `logprobs` mode. None for a free-mode run."""
    scored = [r for r in records if r.error is None]
    modes = {r.answer_mode for r in scored if r.answer_mode}
    if not modes:
        return None
    out: dict[str, Any] = {"mode": ", ".join(sorted(modes)), "n_scored": len(scored)}
    choice = [r for r in scored if r.answer_mode == "choice"]
    if choice:
        broken = sum(1 for r in choice if not r.constraint_followed)
        out.update(n_constraint_violations=broken, constraint_violation_rate=broken / len(choice))
    with_probs = [r for r in scored if has_letter_probs(r)]
    if any(r.answer_mode == "logprobs" for r in scored):
        problems: dict[str, int] = {}
        for r in scored:
            if r.answer_mode == "logprobs" and not has_letter_probs(r):
                reason = str(r.letter_probs_problem or "unknown").split(": ")[-1]
                problems[reason] = problems.get(reason, 0) + 1
        agree = [r.parsed.get("letter") == r.extracted for r in with_probs
                 if r.parsed is not None]
        out.update(n_with_letter_probs=len(with_probs),
                   n_without_letter_probs=len(scored) - len(with_probs),
                   without_letter_probs=problems,
                   argmax_agrees_with_text=float(np.mean(agree)) if agree else None)
    return out
