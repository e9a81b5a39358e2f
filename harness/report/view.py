"""samples.jsonl read for the end of a run in two streaming passes, never holding every whole record.

Pass 1 (`read_view`) keeps the latest record of each item without its bulky fields (prompt,
response, image, ...): what the summary, the plots and the browser's choice need, plus each
field's value types (the schema of samples.parquet). In these slim records `options` holds only
the option letters (`"ABCD"`: the summary needs how many there are, not their text).
Pass 2 (`iter_latest`) reads the same latest records again, whole, one at a time:
samples.parquet is written in batches from them, and only the few the browser shows are kept.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import orjson

from harness.report.results import SAMPLES, read_numbered, supersedes

# Fields the summary, plots and browser choice never read; all of them stay in samples.parquet.
BULKY = frozenset({"prompt", "response", "image", "request_sha256", "template_sha256",
                   "rule_before_judge"})
# what judge_summary and judge_usage read of a record's `judge`
JUDGE_KEPT = ("model", "error", "cached", "usage")
# Values repeated across records, kept once each (a run has a few dozen of them).
SHARED = ("dataset", "question_type", "template", "rule", "gold", "extracted")


@dataclass
class RunView:
    """The latest record of each item, slimmed (`records`), and where the whole ones are."""

    path: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    lines: set[int] = field(default_factory=set)  # line numbers of the latest records
    types: dict[str, set[type]] = field(default_factory=dict)  # every field's value types


def read_view(run_dir: Path) -> RunView:
    """Pass 1 over `run_dir`/samples.jsonl."""
    view = RunView(Path(run_dir) / SAMPLES)
    latest: dict[str, tuple[int, dict[str, Any]]] = {}
    types = view.types
    for lineno, record in read_numbered(view.path):
        for key, value in record.items():
            seen = types.get(key)
            if seen is None:
                types[key] = {type(value)}
            elif type(value) not in seen:
                seen.add(type(value))
        previous = latest.get(record["item_id"])
        if supersedes(record, previous[1] if previous else None):
            latest[record["item_id"]] = (lineno, _slim(record))
    for lineno, record in latest.values():
        view.lines.add(lineno)
        view.records.append(record)
    return view


def iter_latest(view: RunView) -> Iterator[dict[str, Any]]:
    """Pass 2: the whole latest records, in file order."""
    lines = view.lines
    with open(view.path, "rb") as f:  # only the chosen lines are parsed (pass 1 checked them)
        for lineno, line in enumerate(f, 1):
            if lineno in lines:
                yield orjson.loads(line)


def _slim(record: dict[str, Any]) -> dict[str, Any]:
    slim = {k: v for k, v in record.items() if k not in BULKY}
    if isinstance(slim.get("options"), dict):
        slim["options"] = sys.intern("".join(slim["options"]))
    for key in SHARED:
        if isinstance(slim.get(key), str):
            slim[key] = sys.intern(slim[key])
    if isinstance(slim.get("judge"), dict):
        slim["judge"] = {k: v for k, v in slim["judge"].items() if k in JUDGE_KEPT}
    return slim
