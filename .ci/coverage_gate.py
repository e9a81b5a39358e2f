"""`make test`'s coverage gate: line and branch coverage of `harness`, each on its own line, and a
non-zero exit below FLOOR % of lines. pytest-cov's --cov-fail-under would count lines and branches
together; the project's target is lines, with branches shown beside them."""

import json
import sys
import tempfile
from pathlib import Path

import coverage

FLOOR = 90.0


def main() -> int:
    """Read the .coverage file pytest-cov wrote and print the two percentages."""
    cov = coverage.Coverage()
    cov.load()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "coverage.json"
        cov.json_report(outfile=str(out))
        totals = json.loads(out.read_text())["totals"]
    lines = 100 * totals["covered_lines"] / max(1, totals["num_statements"])
    branches = 100 * totals["covered_branches"] / max(1, totals["num_branches"])
    print(f"coverage of harness: lines {lines:.1f}% ({totals['covered_lines']}/{totals['num_statements']}), "
          f"branches {branches:.1f}% ({totals['covered_branches']}/{totals['num_branches']})")
    if lines < FLOOR:
        print(f"FAIL: line coverage {lines:.1f}% is below {FLOOR:.0f}%", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
