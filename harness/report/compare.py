"""Compare runs (models, templates) on the items they share, with paired significance tests.

The first run is the reference. For every group of the paper's layout: each run's accuracy on the
shared items, each other run's difference to the reference with a 95% CI that resamples images,
and the exact paired test of `stats.paired_test`; p-values are Holm-adjusted across every test in
the table, so a difference marked significant survives the multiple comparisons.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.report.compare_calibration import (
    calibration_comparison,
    calibration_html,
    calibration_markdown,
)
from harness.report.markdown import md_table
from harness.report.paired import differences, holm_adjust, shared_items
from harness.report.results import (
    MANIFEST,
    SAMPLES,
    latest_records,
    read_json,
    write_json,
    write_text,
)
from harness.report.run_report import group_label, html_page, order_text, table
from harness.report.schema import NewerSchemaError, SampleRecord
from harness.report.tables import pct
from harness.score.pricing import manifest_price
from harness.score.scoring import SCORERS, chance, group_order, paper_groups
from harness.score.stats import ALPHA, cluster_codes, paired_test
from harness.score.usage import usage_summary

COMPARE_MD = "compare.md"
COMPARE_HTML = "compare.html"
COMPARE_JSON = "compare.json"


class CompareError(Exception):
    """Runs that cannot be compared; the message says why and what to do."""


@dataclass
class Run:
    """One run folder as a comparison reads it: its manifest and its scored records by item."""
    label: str
    path: Path
    manifest: dict[str, Any]
    scored: dict[str, SampleRecord]  # item id → record, failed requests left out


def load_run(path: Path, label: str) -> Run:
    """Read a run folder for `compare`; a folder without samples or manifest is a CompareError
    (one written by a newer harness, a NewerSchemaError)."""
    path = Path(path)
    if not (path / SAMPLES).exists() or not (path / MANIFEST).exists():
        raise CompareError(f"{path}: not a run folder (needs {SAMPLES} and {MANIFEST})")
    try:
        manifest = read_json(path / MANIFEST)
        manifest["dataset"]["revision"]  # compared runs must name their dataset revision
        scored = {r.item_id: r for r in latest_records(path) if r.error is None}
    except NewerSchemaError:
        raise
    except (ValueError, KeyError, TypeError) as exc:  # SamplesError and JSONDecodeError included
        raise CompareError(f"{path}: not a readable run folder ({type(exc).__name__}: {exc})") \
            from None
    return Run(label, path, manifest, scored)


def comparable(runs: list[Run], *, allow_mixed: bool = False) -> list[str]:
    """The items every run scored; a CompareError when the runs used different dataset revisions
    (unless `allow_mixed`) or share no scored item."""
    revisions = {run.label: run.manifest["dataset"]["revision"] for run in runs}
    if len(set(revisions.values())) > 1 and not allow_mixed:
        raise CompareError("the runs used different dataset revisions ("
                           + ", ".join(f"{k}: {v}" for k, v in revisions.items())
                           + "); pass --allow-mixed to compare them anyway")
    shared = shared_items(run.scored for run in runs)
    if not shared:
        raise CompareError("the runs share no scored items")
    return shared


def outcome_matrix(runs: list[Run], items: list[str], scorer: str) -> np.ndarray:
    """Whether each run (row) got each item (column) right by `scorer`, as 0/1."""
    verdict = SCORERS[scorer]
    return np.array([[verdict(run.scored[i]) for i in items] for run in runs], dtype=int)


def _labels(paths: list[Path]) -> list[str]:
    """Folder names, or the paths as given where two runs share a folder name."""
    names = [Path(p).name for p in paths]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]


def compare(paths: list[Path], *, scorer: str = "robust", allow_mixed: bool = False,
            seed: int = 0) -> dict[str, Any]:
    """The comparison of the runs in `paths` (the first is the reference), as plain data."""
    if len(paths) < 2:
        raise CompareError("compare needs at least two run folders")
    runs = [load_run(p, label) for p, label in zip(paths, _labels(paths))]
    shared = comparable(runs, allow_mixed=allow_mixed)
    outcomes = outcome_matrix(runs, shared, scorer)
    reference = [runs[0].scored[i] for i in shared]
    images = cluster_codes(np.array([r.image_id for r in reference]))
    chances = np.array([chance(r) for r in reference])

    groups = paper_groups(reference)
    labels = [run.label for run in runs]
    rows = []
    for name in sorted(groups, key=group_order):
        idx = np.array(groups[name], dtype=int)
        rows.append({"group": name, "n": int(idx.size),
                     "n_images": int(np.unique(images[idx]).size),
                     "accuracy": outcomes[:, idx].mean(axis=1).tolist(),
                     "chance": float(chances[idx].mean()),
                     "differences": differences(outcomes, images, idx, labels, paired_test,
                                                seed)})
    tests = [d for row in rows for d in row["differences"]]
    holm_adjust(tests)
    calibration = calibration_comparison(runs, shared, seed)
    return {
        "scorer": scorer,
        "alpha": ALPHA,
        "seed": seed,
        "n_shared": len(shared),
        "n_tests": len(tests),
        "runs": [{"label": run.label, "path": str(run.path), "model": run.manifest["model"]["spec"],
                  "template": run.manifest["template"]["name"],
                  "revision": run.manifest["dataset"]["revision"],
                  "options_order": run.manifest.get("options_order"),
                  "n_scored": len(run.scored), "cost_usd": _cost(run)} for run in runs],
        "groups": rows,
        **({"calibration": calibration} if calibration else {}),
    }


def _cost(run: Run) -> float | None:
    """What the run's answered requests cost (None: no price for its model)."""
    return usage_summary(run.scored.values(), manifest_price(run.manifest))["cost_usd"]


def write_comparison(result: dict[str, Any], folder: Path) -> list[Path]:
    """compare.md, compare.html and compare.json in `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / COMPARE_MD, compare_markdown(result))
    write_text(folder / COMPARE_HTML, compare_html(result))
    write_json(folder / COMPARE_JSON, result)
    return [folder / COMPARE_MD, folder / COMPARE_HTML, folder / COMPARE_JSON]


# ---------------------------------------------------------------------------------------------
# Rendering


def _p(p: float) -> str:
    return "1" if p >= 0.9995 else f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _diff(d: dict[str, Any]) -> str:
    return (f"{100 * d['difference']:+.2f} [{100 * d['ci_low']:+.2f}, {100 * d['ci_high']:+.2f}]")


def _explanation(result: dict[str, Any]) -> str:
    ref = result["runs"][0]["label"]
    return (f"{result['n_shared']} items scored in every run ({result['scorer']} scorer); "
            f"accuracy %. Differences are run − {ref} in percentage points, with a 95% CI that "
            "resamples whole images (percentile interval); p is the exact paired test that swaps "
            "the two runs' answers image by image (McNemar's exact test when each image has one question), "
            f"Holm-adjusted over all {result['n_tests']} tests; significant = adjusted p < "
            f"{result['alpha']}.")


def _headers(result: dict[str, Any]) -> list[str]:
    labels = [r["label"] for r in result["runs"]]
    head = ["group", "n", *labels, "chance"]
    for label in labels[1:]:
        head += [f"{label} − {labels[0]} [95% CI]", "p", "p Holm"]
    return head


def _usd(cost: float | None) -> str:
    return "–" if cost is None else f"{cost:,.4f}"


def _headline_accuracy(result: dict[str, Any]) -> list[tuple[str, str]]:
    """Each run's coarse and fine accuracy on the shared items, beside its cost."""
    rows = {row["group"]: row["accuracy"] for row in result["groups"]}
    none = [None] * len(result["runs"])
    return [(pct(c), pct(f)) for c, f in zip(rows.get("coarse", none), rows.get("fine", none))]


def compare_markdown(result: dict[str, Any]) -> str:
    """compare.md: the runs side by side, then per-group differences with their tests."""
    lines = [f"# uBench comparison ({len(result['runs'])} runs)", "", *md_table(
        ["run", "model", "template", "option order", "dataset revision", "items scored",
         "coarse %", "fine %", "cost USD"],
        ([r["label"], r["model"], r["template"], order_text(r["options_order"]), r["revision"],
          r["n_scored"], coarse, fine, _usd(r.get("cost_usd"))]
         for r, (coarse, fine) in zip(result["runs"], _headline_accuracy(result))))]
    rows = []
    for row in result["groups"]:
        cells = [group_label(row["group"]), str(row["n"]), *(pct(a) for a in row["accuracy"]),
                 pct(row["chance"])]
        for d in row["differences"]:
            mark = "**" if d["significant"] else ""
            cells += [f"{mark}{_diff(d)}{mark}", _p(d["p"]), f"{mark}{_p(d['p_holm'])}{mark}"]
        rows.append(cells)
    lines += ["", _explanation(result), "", *md_table(_headers(result), rows)]
    significant = [f"{group_label(row['group'])} ({d['run']})" for row in result["groups"]
                   for d in row["differences"] if d["significant"]]
    lines += ["", "Significant after Holm: " + (", ".join(significant) if significant else
                                                "none") + "."]
    lines += calibration_markdown(result)
    return "\n".join(lines) + "\n"


def compare_html(result: dict[str, Any]) -> str:
    """compare.html: the same tables as `compare_markdown`, self-contained."""
    runs = table(["run", "model", "template", "option order", "dataset revision", "items scored",
                  "coarse %", "fine %", "cost USD", "folder"],
                 [[html.escape(str(v)) for v in (r["label"], r["model"], r["template"],
                                                 order_text(r["options_order"]), r["revision"],
                                                 r["n_scored"], coarse, fine,
                                                 _usd(r.get("cost_usd")), r["path"])]
                  for r, (coarse, fine) in zip(result["runs"], _headline_accuracy(result))])
    rows, classes = [], []
    for row in result["groups"]:
        cells = [html.escape(group_label(row["group"])), str(row["n"]),
                 *(pct(a) for a in row["accuracy"]), pct(row["chance"])]
        for d in row["differences"]:
            cells += [_diff(d), _p(d["p"]), _p(d["p_holm"])]
        rows.append(cells)
        classes.append("significant" if any(d["significant"] for d in row["differences"])
                       else "")
    body = (runs + f"<p>{html.escape(_explanation(result))} Rows with a significant difference "
            "are highlighted.</p>" + table(_headers(result), rows, "compare", classes)
            + calibration_html(result, table))
    return html_page(f"uBench comparison: {', '.join(r['label'] for r in result['runs'])}", body)

