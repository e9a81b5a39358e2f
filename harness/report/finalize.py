"""Summaries and the report of a run folder, (re)computed from samples.jsonl alone."""
from __future__ import annotations

from pathlib import Path

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
from harness.report.schema import SampleRecord, Summary
from harness.report.tables import summary_markdown
from harness.report.view import RunView, read_view
from harness.score.calibration import answer_mode_summary, calibration_summary
from harness.score.judge import judge_summary
from harness.score.pricing import Price, manifest_judge_price, manifest_price
from harness.score.scoring import summarize
from harness.score.usage import estimate_check, judge_usage, usage_summary


def finalize(out: Path, view: RunView | None = None) -> Summary:
    """(Re)compute summary.json, summary.md and the report from samples.jsonl alone; `view` is
    its pass 1 (harness.report.view) when the caller already has it."""
    out = Path(out)
    manifest = read_json(out / MANIFEST) if (out / MANIFEST).exists() else None
    if view is None:  # the latest records without their bulky fields; no dataset read
        view = read_view(out)
    summary = build_summary(view.records, seed=manifest["seed"] if manifest else 0,
                            price=manifest_price(manifest),
                            judge_price=manifest_judge_price(manifest),
                            estimate=out / ESTIMATE_JSON)
    write_json(out / SUMMARY_JSON, summary)
    write_text(out / SUMMARY_MD, summary_markdown(summary, manifest))
    write_report(out, summary=summary, view=view)
    return summary


def build_summary(records: list[SampleRecord], *, seed: int, price: Price | None,
                  judge_price: Price | None = None, estimate: Path | None = None) -> Summary:
    """summary.json, in one place: `summarize`'s numbers, then the judge, usage and cost (the
    model's at `price`, the judge's apart at `judge_price`), the --dry-run `estimate` (when that
    file exists) beside what the server reported, the answer mode and calibration sections."""
    summary = summarize(records, seed=seed)
    if judged := judge_summary(records):
        summary["judge"] = judged
    summary.update(usage_summary(records, price))
    if judge_spent := judge_usage([r.judge for r in records if r.judge is not None], judge_price):
        summary["judge_usage"] = judge_spent
    if estimate is not None and estimate.exists():
        try:
            estimated = read_json(estimate)
        except ValueError:
            estimated = None
        summary["estimate_check"] = estimate_check(estimated, summary["usage"])
    if modes := answer_mode_summary(records):
        summary["answer_mode"] = modes
    if calibration := calibration_summary(records, seed=seed):
        summary["calibration"] = calibration
    return summary
