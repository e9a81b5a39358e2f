"""samples.jsonl read for the end of a run in two streaming passes, never holding every whole record.

Pass 1 (`read_view`) keeps the latest record of each item without its bulky fields (prompt,
response, image, ...): what the summary, the plots and the browser's choice need, plus the keys
the run's lines carry (the columns of samples.parquet). In these slim records `options` maps the
option letters to "" (one shared dict per set of letters: the summary needs how many options there
are, not their text); they are for reading, never written back.
Pass 2 (`iter_latest`) reads the same latest records again, whole, one at a time:
samples.parquet is written in batches from them, and only the few the browser shows are kept.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from sys import intern
from typing import Iterator

import orjson

from harness.report.results import SAMPLES, read_json_lines
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


def read_view(run_dir: Path) -> RunView:
    """Pass 1 over `run_dir`/samples.jsonl (SamplesError names a line that cannot be read)."""
    view = RunView(Path(run_dir) / SAMPLES)
    latest: dict[str, tuple[int, SampleRecord]] = {}
    letters: dict[str, dict[str, str]] = {}
    keys = view.keys
    for lineno, data in read_json_lines(view.path):
        record = SampleRecord.from_json(data, f"{view.path}:{lineno}")
        if not data.keys() <= keys.keys():
            keys.update(dict.fromkeys(data))
        previous = latest.get(record.item_id)
        if record.supersedes(previous[1] if previous else None):
            latest[record.item_id] = (lineno, _slim(record, letters))
    for lineno, record in latest.values():
        view.lines.add(lineno)
        view.records.append(record)
    return view


def iter_latest(view: RunView) -> Iterator[SampleRecord]:
    """Pass 2: the whole latest records, in file order."""
    lines = view.lines
    with open(view.path, "rb") as f:  # only the chosen lines are parsed (pass 1 checked them)
        for lineno, line in enumerate(f, 1):
            if lineno in lines:
                yield SampleRecord.from_json(orjson.loads(line), f"{view.path}:{lineno}")


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
