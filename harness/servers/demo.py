"""`make demo` and `make demo-study`: the main job end to end, with no GPU and no API key.

The project's test server stands in for a chat VLM (it answers in varied, realistic formats, but
does not look at the image: its scores are chance). The demo evaluates it over HTTP exactly as a
real server: adapter, parser, scorers, report and the comparison of two templates; the study demo
runs docs/demo-study.yaml against two model names served with different answer rules. The server
is stopped however the command ends.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from harness.servers.testserver import TestServer

ROOT = Path(__file__).resolve().parents[2]
DEMO_STUDY = ROOT / "docs" / "demo-study.yaml"
LATENCY_S = 0.02  # a little, so that requests overlap as they do against a real server


def _ubench(argv: list[str]) -> int:
    from harness.cli import main

    try:
        main(argv, prog_name="ubench", standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def demo(output: Path) -> int:
    """Two templates on the sample against a stand-in VLM, then the report and the comparison."""
    with TestServer("mixed", latency_s=LATENCY_S) as server:
        print(f"Test server standing in for a chat VLM at {server.base_url} (style: mixed)",
              flush=True)
        code = _ubench(["run", "--model", "openai/demo-vlm", "--base-url", server.base_url,
                        "--dataset", "sample", "--prompt", "official", "--prompt", "cot",
                        "--output", str(output), "--force", "--no-cache", "--no-progress"])
    if code == 0:
        print(f"\nReports: {output}/official/report.html, {output}/cot/report.html; "
              f"comparison: {output}/compare.html. The server is stopped.")
    return code


def demo_study(output: Path) -> int:
    """docs/demo-study.yaml: two model names with different answer rules × four templates."""
    with TestServer("random", latency_s=LATENCY_S,
                    model_styles={"vlm-mixed": "mixed", "vlm-first": "first"}) as server:
        os.environ["UBENCH_DEMO_URL"] = server.base_url
        print(f"Test server at {server.base_url}: model vlm-mixed answers in mixed formats, "
              "vlm-first picks the first option", flush=True)
        return _ubench(["study", str(DEMO_STUDY), "--output", str(output)])


def main(argv: list[str] | None = None) -> None:
    """`make demo`: a run or study against the bundled test server, which is stopped afterwards."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", action="store_true", help="run the demo study instead")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.study:
        code = demo_study(args.output or Path("results/demo-study"))
    else:
        code = demo(args.output or Path("results/demo"))
    print(f"({time.perf_counter() - start:.1f} s)")
    sys.exit(code)


if __name__ == "__main__":
    main()
