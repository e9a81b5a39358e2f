"""samples.jsonl read for the end of a run in two streaming passes, never holding every whole record.

Pass 1 (`read_view`) keeps the latest record of each item without its bulky fields (prompt,
response, image, ...): what the summary, the plots and the browser's choice need, plus the keys
the run's lines carry (the columns of samples.parquet). In these slim records `options` maps the
option letters to "" (one shared dict per set of letters: the summary needs how many options there
are, not their text); they are for reading, never written back.
Pass 2 (harness.report.samples_table) reads the same latest records again, whole, one at a time:
samples.parquet is written in batches from them, and only the few the browser shows are kept.
A run does pass 1 as it writes (`LiveView`) and most of pass 2's work too (a `TableSpool`), so
its end reads back only what an earlier invocation wrote (a resume) and the records the browser
shows; `ubench report` reads the same from the file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from sys import intern
from typing import Any

import orjson

from harness.report.results import SAMPLES, JsonLinesWriter, read_json_lines
from harness.report.samples_table import SPOOL, TableSpool
from harness.report.schema import SampleRecord

# What judge_summary and judge_usage read of a record's `judge`.
JUDGE_KEPT = ("model", "error", "cached", "usage")


@dataclass
class RunView:
    """The latest record of each item, slimmed (`records`), and where the whole ones are."""

    path: Path
    records: list[SampleRecord] = field(default_factory=list)
    lines: set[int] = field(default_factory=set)  # line numbers of the latest records
    keys: dict[str, None] = field(default_factory=dict)  # every key of the lines, first seen first
    latest: dict[str, tuple[int, SampleRecord]] = field(default_factory=dict, repr=False)
    spool: TableSpool | None = None  # the table of the lines after `spooled_after`, if made
    spooled_after: int = 0
    _letters: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)

    def add(self, lineno: int, data: dict[str, Any]) -> SampleRecord:
        """Count in the line `lineno` (lines come in file order), read as `data`; returns its
        record (SamplesError names a line that cannot be read)."""
        record = SampleRecord.from_json(data, f"{self.path}:{lineno}")
        if not data.keys() <= self.keys.keys():
            self.keys.update(dict.fromkeys(data))
        previous = self.latest.get(record.item_id)
        if record.supersedes(previous[1] if previous else None):
            self.latest[record.item_id] = (lineno, _slim(record, self._letters))
        return record

    def extend(self, later: RunView, lines_before: int) -> None:
        """Count in `later`, the view of the lines that follow this view's `lines_before` lines:
        the same view as adding its lines one by one (`supersedes` reads only `error`, which
        slim records keep)."""
        self.keys.update(later.keys)
        for item_id, (lineno, record) in later.latest.items():
            previous = self.latest.get(item_id)
            if record.supersedes(previous[1] if previous else None):
                self.latest[item_id] = (lines_before + lineno, record)

    def seal(self) -> RunView:
        """Fill `records` and `lines` from the latest records counted in."""
        self.records = [record for _, record in self.latest.values()]
        self.lines = {lineno for lineno, _ in self.latest.values()}
        return self


def read_view(run_dir: Path) -> RunView:
    """Pass 1 over `run_dir`/samples.jsonl (SamplesError names a line that cannot be read)."""
    view = RunView(Path(run_dir) / SAMPLES)
    for lineno, data in read_json_lines(view.path):
        view.add(lineno, data)
    return view.seal()


class LiveView:
    """Pass 1 done while the run writes: every line the writer appends is counted in as it goes
    (read back from its bytes, so the view is the one the file gives), and its whole record
    goes to the spool of samples.parquet's table."""

    def __init__(self, writer: JsonLinesWriter):
        self.path = writer.path
        self.start = self.path.stat().st_size  # where this invocation's lines begin
        self.size = self.start
        self.fresh = RunView(self.path)  # line numbers counted from `start`
        self.written = 0
        self.spool = TableSpool(self.path.parent / SPOOL)
        writer.listeners.append(self.add_line)

    def add_line(self, line: bytes) -> None:
        """A line the writer has just appended."""
        self.size += len(line)
        self.written += 1
        data = orjson.loads(line)
        self.fresh.add(self.written, data)  # a record of its own: the view slims it
        self.spool.add(SampleRecord.from_json(data, f"{self.path}:+{self.written}"), data)

    def view(self) -> RunView:
        """What `read_view` would read from the file now, with the spooled table: the earlier
        lines (if any) read back, this run's taken as kept; the whole file read, and no spool,
        if anything else has written to it."""
        self.spool.finish()
        if self.path.stat().st_size != self.size:
            return read_view(self.path.parent)
        if not self.start:
            view, before = self.fresh, 0
        else:
            view = RunView(self.path)
            for lineno, data in read_json_lines(self.path, end=self.start):
                view.add(lineno, data)
            before = _count_lines(self.path, self.start)
            view.extend(self.fresh, before)
        if not self.spool.broken:
            view.spool, view.spooled_after = self.spool, before
        return view.seal()

    def close(self) -> None:
        """Remove the spool (after the end of the run, or when it fails)."""
        self.spool.discard()


def _count_lines(path: Path, end: int) -> int:
    with open(path, "rb") as f:
        count = 0
        while end > 0:
            block = f.read(min(end, 1 << 20))
            if not block:
                break
            count += block.count(b"\n")
            end -= len(block)
        return count


def _slim(record: SampleRecord, letters: dict[str, dict[str, str]]) -> SampleRecord:
    """`record` without what the end of a run never reads (all of it stays in samples.parquet:
    prompt, response, image, request_sha256, template_sha256, the judge's raw reply and the
    parser's verdict before it, answer_token, unknown keys), its repeated strings shared."""
    record.prompt = record.response = record.image = record.request_sha256 = None
    record.template_sha256 = record.rule_before_judge = record.judge_raw = None
    record.answer_token = record.extra = None
    key = "".join(record.options)
    shared = letters.get(key)
    if shared is None:
        shared = letters[key] = dict.fromkeys(key, "")
    record.options = shared
    record.dataset, record.question_type = intern(record.dataset), intern(record.question_type)
    if record.template is not None:
        record.template = intern(record.template)
    if record.rule is not None:
        record.rule = intern(record.rule)
    if record.gold is not None:
        record.gold = intern(record.gold)
    if record.extracted is not None:
        record.extracted = intern(record.extracted)
    if record.judge is not None:
        record.judge = {k: v for k, v in record.judge.items() if k in JUDGE_KEPT}
    return record
