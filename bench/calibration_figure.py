"""Regenerate docs/reliability.png and docs/risk_coverage.png: the bundled sample in
`--answer-mode logprobs` against the loopback server, which answers every question with a known
token distribution (`tests.responders.letter_distribution`: random weights, the gold letter
boosted). Run from the repository root: `python bench/calibration_figure.py`."""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.servers.testserver import TestServer  # noqa: E402
from tests.conftest import ubench  # noqa: E402
from tests.responders import letter_distribution  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        with TestServer("first") as server:
            server.behaviour.distribution = letter_distribution(preamble_every=5)
            ubench("run", "--model", "vllm/known-distribution", "--base-url", server.base_url,
                   "--dataset", "sample", "--answer-mode", "logprobs", "--output", str(out),
                   "--no-progress", "--no-cache", env={})
        for name in ("reliability.png", "risk_coverage.png"):
            shutil.copy(out / "plots" / name, ROOT / "docs" / name)
        print((out / "summary.md").read_text().split("## Calibration")[1].split("##")[0])


if __name__ == "__main__":
    main()
