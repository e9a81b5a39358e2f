"""Run defaults, defined once: the CLI's options, RunConfig, the adapters and the report use these."""
from __future__ import annotations

TIMEOUT_S = 120.0  # per request
MAX_ATTEMPTS = 6  # per request, the first included (harness.run.retry)
CONCURRENCY = 32
MAX_TOKENS = 1024
BROWSER_LIMIT = 10_000  # records in the report's sample browser; all are in samples.parquet
