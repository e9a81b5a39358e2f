"""Score records and pool them into the paper's groups, for the official and the robust scorer.

Records whose request failed (`error`) are counted apart and never scored as answers; items the
robust parser finds invalid count as wrong, and their rate is reported.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Iterable

import numpy as np

from .data import COARSE_TYPES, FINE_TOTAL_EXCLUDED, FINE_TYPE, PATHOLOGY_DATASETS, QUESTION_TYPES
from .parsing import INVALID_PREFIX
from .stats import cluster_bootstrap, item_bootstrap

SCORERS = {"official": "correct_official", "robust": "correct"}


def official_correct(response: str, gold_letter: str, gold_text: str) -> bool:
    """The paper's `check_prediction`: the lettered gold option as a case-sensitive substring,
    or the response's first character equal to the gold letter; only whitespace is stripped."""
    response = response.strip()
    return f"{gold_letter}) {gold_text}" in response or response[:1] == gold_letter


def _stat(rows: list[dict[str, Any]], key: str, seed: int) -> dict[str, Any]:
    correct = np.array([bool(r[key]) for r in rows], dtype=float)
    out = item_bootstrap(correct, seed=seed)
    clustered = cluster_bootstrap(correct, np.array([r["image_id"] for r in rows]), seed=seed)
    out.update({"cluster_ci_low": clustered["ci_low"], "cluster_ci_high": clustered["ci_high"],
                "cluster_pm": clustered["pm"]})
    out["chance"] = (float(np.mean([1 / len(r["options"]) for r in rows])) if rows else None)
    return out


def _groups(scored: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The paper's pooled groups, keyed by a stable name."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in scored:
        qt, ds = r["question_type"], r["dataset"]
        fine = qt == FINE_TYPE
        if fine and ds not in FINE_TOTAL_EXCLUDED:
            groups["fine"].append(r)
        if qt in COARSE_TYPES:
            groups["coarse"].append(r)
        groups[f"question_type/{qt}"].append(r)
        groups[f"dataset/{ds}/{'fine' if fine else 'coarse'}"].append(r)
        if ds in PATHOLOGY_DATASETS:
            groups[f"pathology/{'fine' if fine else 'coarse'}"].append(r)
    return groups


def summarize(records: Iterable[dict[str, Any]], *, seed: int = 0) -> dict[str, Any]:
    """Everything summary.json holds, computed from per-sample records alone."""
    records = sorted(records, key=lambda r: r["item_id"])  # order-free: same items, same numbers
    scored = [r for r in records if not r.get("error")]
    errors = Counter(r["error"]["type"] for r in records if r.get("error"))
    skipped = Counter(r["error"].get("field") or "unknown" for r in records
                      if r.get("error") and r["error"]["type"] == "bad_input")
    warnings = sum(1 for r in scored if r.get("data_warning"))
    groups = _groups(scored)

    def order(name: str) -> tuple:
        head = name.split("/")[0]
        rank = {"coarse": 0, "fine": 1, "question_type": 2, "pathology": 3, "dataset": 4}[head]
        sub = name.split("/", 1)[1] if "/" in name else ""
        qt_rank = QUESTION_TYPES.index(sub) if head == "question_type" else 0
        return rank, qt_rank, sub

    names = sorted(groups, key=order)
    scorers = {scorer: {name: _stat(groups[name], key, seed) for name in names}
               for scorer, key in SCORERS.items()}
    rules: dict[str, dict[str, Any]] = {}
    by_rule: dict[str, list[bool]] = defaultdict(list)
    for r in scored:
        by_rule[r["rule"]].append(bool(r["correct"]))
    for rule, values in sorted(by_rule.items(), key=lambda kv: -len(kv[1])):
        rules[rule] = {"n": len(values), "accuracy": float(np.mean(values))}
    invalid = sum(1 for r in scored if str(r["rule"]).startswith(INVALID_PREFIX))
    return {
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
        "bootstrap": {"method": "basic", "n_resamples": 1000, "seed": seed, "alpha": 0.05},
    }
