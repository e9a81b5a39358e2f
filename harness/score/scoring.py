"""Score records and pool them into the paper's groups, for the official and the robust scorer.

Records whose request failed (`error`) are counted apart and never scored as answers; items the
robust parser finds invalid count as wrong, and their rate is reported.
"""
from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from typing import Any, Callable, Iterable, Sequence, cast

import numpy as np

from harness.data.items import (
    COARSE_TYPES,
    FINE_TOTAL_EXCLUDED,
    FINE_TYPE,
    PATHOLOGY_DATASETS,
    QUESTION_TYPES,
)
from harness.data.options_order import ROTATION_SEP
from harness.report.schema import (
    SCHEMA_VERSION,
    Circular,
    LetterBias,
    LetterCounts,
    RuleStat,
    SampleRecord,
    Scorers,
    Stat,
    Summary,
)
from harness.score.parsing import INVALID_PREFIX
from harness.score.stats import cluster_bootstrap, cluster_codes, item_bootstrap, wilson_interval

# Below this many images a bootstrap sees too few distinct resamples; Wilson's interval, counting
# images as the sample size (conservative when images carry several questions), is used instead.
WILSON_BELOW_IMAGES = 20
CLUSTER_CI_METHOD = (f"percentile bootstrap over images; Wilson score interval (n = images) for "
                     f"groups of fewer than {WILSON_BELOW_IMAGES} images")

# Each scorer's verdict on a record: the paper's check_prediction, or the robust parser's letter.
SCORERS: dict[str, Callable[[SampleRecord], bool]] = {
    "official": lambda r: bool(r.correct_official), "robust": lambda r: bool(r.correct)}


def official_correct(response: str, gold_letter: str, gold_text: str) -> bool:
    """The paper's `check_prediction`: the lettered gold option as a case-sensitive substring,
    or the response's first character equal to the gold letter; only whitespace is stripped."""
    response = response.strip()
    return f"{gold_letter}) {gold_text}" in response or response[:1] == gold_letter


def _stat(correct: np.ndarray, images: np.ndarray, chances: np.ndarray, seed: int) -> Stat:
    out: dict[str, Any] = item_bootstrap(correct, seed=seed)
    out.update(clustered_interval(correct, images, seed))
    out["chance"] = float(chances.mean()) if chances.size else None
    return cast(Stat, out)


def clustered_interval(correct: np.ndarray, images: np.ndarray, seed: int) -> dict[str, Any]:
    """The accuracy's 95% CI respecting images, inside [0, 1] (see CLUSTER_CI_METHOD)."""
    clustered = cluster_bootstrap(correct, images, seed=seed)
    k = clustered["n_clusters"]
    if 0 < k < WILSON_BELOW_IMAGES:
        low, high = wilson_interval(float(np.sum(correct)) * k / correct.size, k)
        return {"cluster_ci_low": low, "cluster_ci_high": high, "cluster_ci_method": "wilson"}
    return {"cluster_ci_low": clustered["ci_low"], "cluster_ci_high": clustered["ci_high"],
            "cluster_ci_method": "percentile" if k else None}


def chance(record: SampleRecord) -> float:
    """Expected accuracy of uniform guessing on this item."""
    return 1 / len(record.options)


def paper_groups(scored: Sequence[SampleRecord]) -> dict[str, list[int]]:
    """The paper's pooled groups, keyed by a stable name: positions of their records in `scored`."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(scored):
        qt, ds = r.question_type, r.dataset
        fine = qt == FINE_TYPE
        if fine and ds not in FINE_TOTAL_EXCLUDED:
            groups["fine"].append(i)
        if qt in COARSE_TYPES:
            groups["coarse"].append(i)
        groups[f"question_type/{qt}"].append(i)
        groups[f"dataset/{ds}/{'fine' if fine else 'coarse'}"].append(i)
        if ds in PATHOLOGY_DATASETS:
            groups[f"pathology/{'fine' if fine else 'coarse'}"].append(i)
    return groups


def group_order(name: str) -> tuple:
    """Sort key that lists summary groups in the paper's order (coarse, fine, question type, ...)."""
    head = name.split("/")[0]
    rank = {"coarse": 0, "fine": 1, "question_type": 2, "pathology": 3, "dataset": 4}[head]
    sub = name.split("/", 1)[1] if "/" in name else ""
    qt_rank = QUESTION_TYPES.index(sub) if head == "question_type" else 0
    return rank, qt_rank, sub


def _scorers(scored: Sequence[SampleRecord], seed: int,
             chances: np.ndarray | None = None) -> Scorers:
    """Accuracy, both CIs and chance for every group, for each scorer (arrays built once);
    `chances`: each record's chance, when not 1/(number of options)."""
    groups = paper_groups(scored)
    images = cluster_codes(np.array([r.image_id for r in scored]))
    if chances is None:
        chances = np.array([chance(r) for r in scored], dtype=float)
    out: Scorers = {}
    for scorer, verdict in SCORERS.items():
        correct = np.array([verdict(r) for r in scored], dtype=float)
        out[scorer] = {name: _stat(correct[idx], images[idx], chances[idx], seed)
                       for name, idx in ((n, np.array(groups[n], dtype=int))
                                         for n in sorted(groups, key=group_order))}
    return out


def summarize(records: Iterable[SampleRecord], *, seed: int = 0) -> Summary:
    """What summary.json holds about the answers, computed from per-sample records alone (the
    sections `report.finalize` adds come from the same records)."""
    records = sorted(records, key=lambda r: r.item_id)  # order-free: same items, same numbers
    scored = [r for r in records if r.error is None]
    failed = [r.error for r in records if r.error is not None]
    errors = Counter(e.type for e in failed)
    skipped = Counter(e.field or "unknown" for e in failed if e.type == "bad_input")
    warnings = sum(1 for r in scored if r.data_warning)
    scorers = _scorers(scored, seed)
    rules: dict[str, RuleStat] = {}
    by_rule: dict[str, list[bool]] = defaultdict(list)
    for r in scored:
        by_rule[str(r.rule)].append(bool(r.correct))
    for rule, values in sorted(by_rule.items(), key=lambda kv: -len(kv[1])):
        rules[rule] = {"n": len(values), "accuracy": float(np.mean(values))}
    invalid = sum(1 for r in scored if str(r.rule).startswith(INVALID_PREFIX))
    summary: Summary = {
        "schema_version": SCHEMA_VERSION,
        "n_records": len(records),
        "n_scored": len(scored),
        "n_errors": sum(errors.values()),
        "errors_by_type": dict(errors),
        "bad_input_by_field": dict(skipped),
        "n_data_warnings": warnings,
        "invalid_rate": invalid / len(scored) if scored else None,
        "n_invalid": invalid,
        "rules": rules,
        "scorers": scorers,
        "letter_bias": letter_bias(scored),
        "bootstrap": {"method": "basic", "n_resamples": 1000, "seed": seed, "alpha": 0.05,
                      "clustered_method": CLUSTER_CI_METHOD},
        # Answers cut short (length) or filtered by the provider (content_filter) are scored as
        # they are, and counted here; so are answers from which the API key was removed.
        "finish_reasons": dict(Counter(str(r.finish_reason) for r in scored
                                       if r.finish_reason not in (None, "stop"))),
        "n_redacted": sum(1 for r in scored if r.redacted),
    }
    if any(r.rotation is not None for r in records):
        summary["circular"] = circular(records, seed)
    return summary


def letter_bias(scored: Sequence[SampleRecord]) -> LetterBias:
    """How often each letter is the gold answer, is predicted, and is predicted rightly.

    A model that favours a position predicts its letter far more often than it is gold.
    """
    letters: dict[str, LetterCounts] = defaultdict(lambda: {"gold": 0, "predicted": 0,
                                                             "correct": 0})
    for r in scored:
        if r.gold:
            letters[r.gold]["gold"] += 1
        if r.extracted:
            letters[r.extracted]["predicted"] += 1
            letters[r.extracted]["correct"] += bool(r.correct)
    return {"letters": dict(sorted(letters.items())),
            "invalid": sum(1 for r in scored if not r.extracted)}


def circular(records: list[SampleRecord], seed: int) -> Circular:
    """CircularEval: an item is right only if every rotation of its options is.

    Items with a failed rotation are left out (counted as incomplete). Chance is the probability
    that uniform guessing gets all n rotations of an n-option item right, (1/n)^n.
    """
    rotations: dict[str, list[SampleRecord]] = defaultdict(list)
    for r in records:
        rotations[r.item_id.split(ROTATION_SEP)[0]].append(r)
    whole, chances, incomplete = [], [], 0
    for rows in rotations.values():
        n = len(rows[0].options)
        if len(rows) < n or any(r.error is not None for r in rows):
            incomplete += 1
            continue
        whole.append(dataclasses.replace(rows[0], correct=all(r.correct for r in rows),
                                         correct_official=all(r.correct_official for r in rows)))
        chances.append((1 / n) ** n)
    per_rotation: dict[int, list[bool]] = defaultdict(list)
    for r in records:
        if r.error is None:
            per_rotation[r.rotation or 0].append(bool(r.correct))
    return {
        "n_items": len(whole),
        "n_incomplete": incomplete,
        "scorers": _scorers(whole, seed, np.array(chances, dtype=float)),
        "per_rotation": {str(k): {"n": len(v), "accuracy": float(np.mean(v))}
                         for k, v in sorted(per_rotation.items())},
    }
