"""Calibration in `ubench compare`: for runs that all have letter probabilities (`--answer-mode
logprobs`), each run's accuracy, Brier score and ECE side by side, and each run's Brier score paired
with the reference's on the same items, as accuracies are: the difference with a 95% CI that
resamples images and a sign-flip test by image, Holm-adjusted over the Brier tests."""
from __future__ import annotations

import html
from functools import partial
from typing import Any

import numpy as np

from harness.report.markdown import md_table
from harness.report.paired import differences, holm_adjust
from harness.score.calibration import (
    GROUP_HEADS,
    N_BINS,
    ItemArrays,
    has_letter_probs,
    point_metrics,
)
from harness.score.scoring import group_order, paper_groups
from harness.score.stats import cluster_codes, paired_sign_flip_test


def calibration_comparison(runs: list, shared: list[str], seed: int = 0) -> dict[str, Any] | None:
    """The calibration part of a comparison; None unless every run has letter probabilities on
    some of the shared items (only items with them in every run are used)."""
    items = [i for i in shared if all(has_letter_probs(run.scored[i]) for run in runs)]
    if not items:
        return None
    arrays = [ItemArrays([run.scored[i] for i in items], N_BINS) for run in runs]
    reference = [runs[0].scored[i] for i in items]
    images = cluster_codes(np.array([r.image_id for r in reference]))
    groups: dict[str, list[int]] = {"all": list(range(len(items)))}
    groups.update({n: idx for n, idx in sorted(paper_groups(reference).items(),
                                                key=lambda kv: group_order(kv[0]))
                   if n.split("/")[0] in GROUP_HEADS})
    brier = np.array([a.brier for a in arrays])
    sign_flip = partial(paired_sign_flip_test, seed=seed)
    labels = [run.label for run in runs]
    rows: list[dict[str, Any]] = []
    for name, members in groups.items():
        idx = np.array(members, dtype=int)
        metrics = [point_metrics(ItemArrays([run.scored[items[i]] for i in idx], N_BINS))
                   for run in runs]
        rows.append({"group": name, "n": int(idx.size),
                     **{key: [m[key] for m in metrics] for key in ("accuracy", "brier", "ece")},
                     "differences": differences(brier, images, idx, labels, sign_flip, seed)})
    tests = [d for row in rows for d in row["differences"]]
    holm_adjust(tests)
    return {"n_items": len(items), "n_tests": len(tests), "groups": rows}


def _headers(labels: list[str]) -> list[str]:
    head = ["group", "n"]
    for label in labels:
        head += [f"{label} acc %", f"{label} Brier", f"{label} ECE %"]
    for label in labels[1:]:
        head += [f"Brier {label} − {labels[0]} [95% CI]", "p", "p Holm"]
    return head


def _cells(row: dict[str, Any]) -> list[str]:
    cells = [row["group"], str(row["n"])]
    for acc, brier, ece in zip(row["accuracy"], row["brier"], row["ece"]):
        cells += [f"{100 * acc:.2f}", f"{brier:.4f}", f"{100 * ece:.2f}"]
    for d in row["differences"]:
        mark = "**" if d["significant"] else ""
        cells += [f"{mark}{d['difference']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]{mark}",
                  f"{d['p']:.3g}", f"{mark}{d['p_holm']:.3g}{mark}"]
    return cells


def _explanation(part: dict[str, Any], reference: str) -> str:
    return (f"Calibration on the {part['n_items']} shared items with letter probabilities in every "
            "run (prediction = argmax; Brier summed over options, lower is better; ECE with "
            f"{N_BINS} bins). Brier differences are run − {reference}, with a 95% CI that "
            "resamples images; p is a sign-flip test by image (10,000 seeded draws), "
            f"Holm-adjusted over the {part['n_tests']} Brier tests.")


def calibration_markdown(result: dict[str, Any]) -> list[str]:
    """The calibration part of compare.md; empty when no two runs have letter probabilities."""
    part = result.get("calibration")
    if not part:
        return []
    labels = [r["label"] for r in result["runs"]]
    return ["", "## Calibration", "", _explanation(part, labels[0]), "",
            *md_table(_headers(labels), (_cells(row) for row in part["groups"]))]


def calibration_html(result: dict[str, Any], table) -> str:
    """The calibration part of compare.html; empty when no two runs have letter probabilities."""
    part = result.get("calibration")
    if not part:
        return ""
    labels = [r["label"] for r in result["runs"]]
    rows = [[html.escape(c.replace("**", "")) for c in _cells(row)] for row in part["groups"]]
    classes = ["significant" if any(d["significant"] for d in row["differences"]) else ""
               for row in part["groups"]]
    return (f"<h2>Calibration</h2><p>{html.escape(_explanation(part, labels[0]))}</p>"
            + table(_headers(labels), rows, "compare", classes))
