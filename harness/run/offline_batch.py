"""vLLM's offline batch runner with a run folder: export the requests, import the results.

`ubench run --export-batch` writes the run's request files (harness.run.batch: the Batch API's
line format, which `python -m vllm.entrypoints.openai.run_batch` reads) without sending anything;
`ubench import-batch RUN_DIR RESULTS.jsonl…` joins result lines by custom_id into samples.jsonl,
exactly as a --batch run does, and a failed line becomes an error record (a later online re-run of
the same command asks it again).
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from harness.adapters.reply import MAX_RESPONSE_BYTES
from harness.report.results import MANIFEST, SAMPLES, SampleWriter, answered_ids, read_json
from harness.run.batch import (
    BATCH_DIR,
    DOWNLOAD_CHUNK,
    STATE_JSON,
    BatchError,
    BatchOptions,
    BatchRun,
    ResultJoiner,
    ResultLines,
    pending_records,
    write_failures,
)

VLLM_RUN_BATCH = "python -m vllm.entrypoints.openai.run_batch"


def vllm_commands(files: list[Path], model: str) -> list[str]:
    """One run_batch command per request file; each writes results-<file> beside it."""
    return [f"{VLLM_RUN_BATCH} -i {shlex.quote(str(f))} -o "
            f"{shlex.quote(str(f.with_name('results-' + f.name)))} --model {shlex.quote(model)}"
            for f in files]


def import_results(out: Path, paths: list[Path]) -> dict[str, Any]:
    """Join results files into `out`'s samples.jsonl; returns counts of what was imported."""
    out = Path(out)
    run = BatchRun(out, None, BatchOptions(max_response_bytes=_max_response_bytes(out)))
    run.load()
    if not run.state.get("prepared"):
        raise BatchError(f"{out}: no {BATCH_DIR}/{STATE_JSON}; write the requests first with "
                         "`ubench run … --export-batch --output " + str(out) + "`")
    pending = pending_records(out)
    sent = set(pending)
    done = answered_ids(out / SAMPLES)
    try:
        with SampleWriter(out / SAMPLES) as writer:
            joiner = ResultJoiner(sent, pending, writer, done, "", 1)
            for path in paths:
                joiner.batch_id = path.name
                _join_file(joiner, path, len(sent), run.options.max_line_bytes)
            failed = sorted(joiner.failures.keys() - joiner.answered - done)
            write_failures(failed, joiner.failures, pending, writer, "import", 1)
    finally:
        pending.close()
    missing = len(sent - joiner.answered - done - set(failed))
    return {"answered": len(joiner.answered), "failed": len(failed), "missing": missing,
            "already_done": len(done & sent)}


def _join_file(joiner: ResultJoiner, path: Path, requests: int, line_cap: int) -> None:
    """One results file, read a chunk at a time within the bounds a downloaded one has."""
    lines = ResultLines(str(path), requests, line_cap)
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(DOWNLOAD_CHUNK), b""):
                for n, line in lines.feed(chunk):
                    joiner.add(line, n, str(path))
            for n, line in lines.finish():
                joiner.add(line, n, str(path))
    except OSError as exc:
        raise BatchError(f"{path}: cannot read the results file ({exc.strerror})") from None


def _max_response_bytes(out: Path) -> int:
    """The --max-response-bytes the requests were exported with (the manifest's), so a reply the
    run allowed is imported; the default for a manifest without it."""
    try:
        value = read_json(out / MANIFEST)["runtime"]["max_response_bytes"]
    except (OSError, ValueError, KeyError, TypeError):
        return MAX_RESPONSE_BYTES
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 \
        else MAX_RESPONSE_BYTES
