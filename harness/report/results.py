"""The one results format: a run folder with samples.jsonl, manifest.json, summary.json, summary.md.

The types of a samples.jsonl line and of summary.json live in harness.report.schema.
`samples.jsonl` is append-only: each record is one whole line handed to the OS at once (a killed
process loses only the requests in flight) and fsync'd by the runner every second and on close (a
power cut loses at most that second); a torn last line is detected and dropped when read back.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

import orjson

from harness.atomic import replaced_atomically
from harness.report.schema import SampleRecord, Summary, summary_from_json

SAMPLES = "samples.jsonl"
MANIFEST = "manifest.json"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
ESTIMATE_JSON = "estimate.json"  # what `--dry-run` estimated (harness.run.estimate)
# Fields of the manifest that must match for a run folder to be resumed.
RESUME_KEYS = ("model", "template", "generation", "dataset", "selection", "image", "judge",
               "options_order", "server")
# Where the model is served from may change between a run and its resumption; what it is may not.
MODEL_KEYS_FREE_ON_RESUME = ("base_url", "base_urls", "timeout_s", "openai_sdk", "transport",
                             "server")
_LINE = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS


class JsonLinesWriter:
    """Append whole JSON lines, each in one write(); `sync()` forces them to disk, as does close.

    Each line written is also handed, as bytes, to every callable in `listeners` (what the run
    keeps of its records for the end of the run: harness.report.view.LiveView).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _drop_torn_tail(self.path)
        self._file = open(self.path, "ab", buffering=0)  # unbuffered: nothing waits in Python
        self.listeners: list[Callable[[bytes], None]] = []

    def write(self, line: dict[str, Any]) -> None:
        """Append one object as a line; a short write is finished or fails with its reason."""
        encoded = orjson.dumps(line, option=_LINE)
        data = memoryview(encoded)
        try:
            while data:  # a short write (a disk filling up) is finished, or fails with the reason
                data = data[self._file.write(data):]
        except OSError as exc:  # a full disk, a size limit: say which file
            raise OSError(exc.errno, exc.strerror, str(self.path)) from None
        for listener in self.listeners:
            listener(encoded)

    def sync(self) -> None:
        """Force what was written to disk (the runner calls it every second, off its event loop)."""
        try:
            os.fsync(self._file.fileno())
        except ValueError:  # closed meanwhile (the timer runs in a thread); close() synced it
            pass
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(self.path)) from None

    def close(self) -> None:
        """Flush, sync and close, so a finished run's lines are on disk."""
        if not self._file.closed:
            self.sync()
            self._file.close()

    def __enter__(self) -> "JsonLinesWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SampleWriter(JsonLinesWriter):
    """samples.jsonl: records go in through their type (harness.report.schema)."""

    def append(self, record: SampleRecord) -> None:
        """Append one record as its line."""
        self.write(record.to_json())

    def __enter__(self) -> "SampleWriter":
        return self


def whole_lines_end(f: BinaryIO) -> int:
    """The offset just past the last newline of an open file (0 if it has none): what follows it
    is a line a crash left torn. Read backwards a block at a time, never the whole file."""
    end = f.seek(0, os.SEEK_END)
    while end > 0:
        start = max(0, end - 65536)
        f.seek(start)
        cut = f.read(end - start).rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        end = start
    return 0


def _drop_torn_tail(path: Path) -> None:
    """Truncate a last line that a crash left without its newline (it cannot be trusted)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.truncate(whole_lines_end(f))


def read_samples(path: Path) -> Iterator[SampleRecord]:
    """Records from a samples.jsonl (or a run folder's), skipping a torn or corrupt line (reported
    on stderr); a line that is not a valid record of a known version is a SamplesError naming the
    line and the field."""
    path = Path(path)
    if path.is_dir():
        path = path / SAMPLES
    for lineno, data in read_json_lines(path):
        yield SampleRecord.from_json(data, f"{path}:{lineno}")


def read_json_lines(path: Path, end: int | None = None) -> Iterator[tuple[int, Any]]:
    """(line number, value) of each line of a JSON Lines file the writer finished; a torn or
    corrupt line is skipped (and reported on stderr). With `end`, only the lines within its
    first `end` bytes."""
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if end is not None:
                end -= len(line)
                if end < 0:
                    return
            if not line.endswith(b"\n") or not line.strip():
                continue  # torn tail of a crashed run, or blank
            try:
                data = orjson.loads(line)
            except orjson.JSONDecodeError:
                import sys

                print(f"warning: {path}:{lineno}: unreadable record skipped", file=sys.stderr)
                continue
            yield lineno, data


def write_json(path: Path, data: Any) -> None:
    """Write atomically (temp file + rename), so a reader never sees half a file."""
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path) -> Any:
    """A JSON file's content; callers decide what a missing or broken file means."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_text(path: Path, text: str) -> None:
    """Write atomically, as `write_json`."""
    with replaced_atomically(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def answered_ids(samples: Path) -> set[str]:
    """The items answered (not failed) in a samples.jsonl: a resumed run skips them. Empty when
    the file does not exist."""
    samples = Path(samples)
    return {r.item_id for r in read_samples(samples) if r.error is None} \
        if samples.exists() else set()


def latest_records(out: Path) -> list[SampleRecord]:
    """One record per item: the last one written (a retried error is superseded)."""
    latest: dict[str, SampleRecord] = {}
    for record in read_samples(out / SAMPLES):
        if record.supersedes(latest.get(record.item_id)):
            latest[record.item_id] = record
    return list(latest.values())


def read_summary(path: Path) -> Summary:
    """A run folder's summary.json (or the file itself), of a version this harness reads."""
    path = Path(path)
    if path.is_dir():
        path = path / SUMMARY_JSON
    return summary_from_json(read_json(path), str(path))


def resume_view(manifest: dict[str, Any]) -> dict[str, Any]:
    """The parts of a manifest that must match for a run folder to be resumed."""
    view = {k: manifest.get(k) for k in RESUME_KEYS}
    view["model"] = {k: v for k, v in (view["model"] or {}).items()
                     if k not in MODEL_KEYS_FREE_ON_RESUME}
    return view


def config_fingerprint(manifest: dict[str, Any]) -> str:
    """Hash of what must match for a resume to append to a run (its `resume_view`)."""
    return hashlib.sha256(json.dumps(resume_view(manifest), sort_keys=True).encode()).hexdigest()
