"""Summaries and the report of a run folder, (re)computed from samples.jsonl alone."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.report.results import (
    ESTIMATE_JSON,
    MANIFEST,
    SUMMARY_JSON,
    SUMMARY_MD,
    read_json,
    write_json,
    write_text,
)
from harness.report.run_report import write_report
from harness.report.tables import summary_markdown
from harness.report.view import read_view
from harness.score.calibration import answer_mode_summary, calibration_summary
from harness.score.judge import judge_summary
from harness.score.pricing import manifest_judge_price, manifest_price
from harness.score.scoring import summarize
from harness.score.usage import estimate_check, judge_usage, usage_summary


def finalize(out: Path) -> dict[str, Any]:
    """(Re)compute summary.json, summary.md and the report from samples.jsonl alone."""
    out = Path(out)
    manifest = read_json(out / MANIFEST) if (out / MANIFEST).exists() else None
    seed = manifest["seed"] if manifest else 0
    view = read_view(out)  # the latest records without their bulky fields; no dataset read
    summary = summarize(view.records, seed=seed)
    if judged := judge_summary(view.records):
        summary["judge"] = judged
    summary.update(usage_summary(view.records, manifest_price(manifest)))
    if judged := judge_usage(view.records, manifest_judge_price(manifest)):
        summary["judge_usage"] = judged
    if (out / ESTIMATE_JSON).exists():
        try:
            estimate = read_json(out / ESTIMATE_JSON)
        except ValueError:
            estimate = None
        summary["estimate_check"] = estimate_check(estimate, summary["usage"])
    if modes := answer_mode_summary(view.records):
        summary["answer_mode"] = modes
    if calibration := calibration_summary(view.records, seed=seed):
        summary["calibration"] = calibration
    write_json(out / SUMMARY_JSON, summary)
    write_text(out / SUMMARY_MD, summary_markdown(summary, manifest))
    write_report(out, summary=summary, view=view)
    return summary

