"""Speed and size of the run report: on the bundled sample, and on a uBench-sized synthetic run.

Prints seconds for `write_report` (after one warm-up call, so imports are not counted; the first
call in a fresh process adds the matplotlib/datasets imports), with its ratio to a budget, and the
size of report.html.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from harness.report.finalize import finalize
from harness.report.results import MANIFEST, SAMPLES, SampleWriter, write_json
from harness.report.run_report import write_report
from harness.run.runner import RunConfig, run
from harness.score.scoring import summarize

sys.path.insert(0, str(Path(__file__).parent))
from bench_stats import synthetic_run  # noqa: E402


def timed(label: str, fn, budget_s: float) -> None:
    start = time.perf_counter()
    path = fn()
    took = time.perf_counter() - start
    size = path.stat().st_size / 1e6
    print(f"{label:<52} {took:7.2f} s   {took / budget_s:5.2f} × budget ({budget_s:g} s)   "
          f"report.html {size:6.1f} MB")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sample = Path(tmp) / "sample"
        start = time.perf_counter()
        run(RunConfig(model="random", output=sample, progress=False))
        print(f"{'sample run incl. first report (imports, cold)':<52} "
              f"{time.perf_counter() - start:7.2f} s")
        timed("report of the 136-item sample", lambda: write_report(sample), 2.0)

        big = Path(tmp) / "big"
        big.mkdir()
        records = synthetic_run()
        with SampleWriter(big / SAMPLES) as writer:
            for r in records:
                r.response = r.extracted
                writer.append(r)
        manifest = json.loads((sample / MANIFEST).read_text())
        write_json(big / MANIFEST, manifest)
        start = time.perf_counter()
        finalize(big)
        print(f"{'finalize of 95k items (summaries + report)':<52} "
              f"{time.perf_counter() - start:7.2f} s")
        timed(f"report of {len(records):,} items (10,000 in the browser)",
              lambda: write_report(big, summary=summarize(records), with_thumbnails=False), 20.0)


if __name__ == "__main__":
    main()
