"""Combine the run folders of a sharded run (`--shard K/N` on N machines) into one run folder.

Refuses anything that would make the merged results a lie: shards of different configurations, a
shard given twice or an item answered in two shards, and missing shards.
"""
from __future__ import annotations

import copy
import os
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

from harness.data.items import parse_shard
from harness.report.finalize import finalize
from harness.report.results import (
    MANIFEST,
    RESUME_KEYS,
    SAMPLES,
    read_json,
    read_samples,
    resume_view,
    whole_lines_end,
    write_json,
)
from harness.report.schema import Summary
from harness.report.thumbnails import THUMBNAILS
from harness.run.lock import LOCK_NAME


class MergeError(Exception):
    """The shard folders cannot be merged; the message says which and why."""


def comparable(manifest: dict[str, Any]) -> dict[str, Any]:
    """The configuration of a shard run, without what may differ between machines: the shard, where
    the model is served from (as for a resume), and where the local dataset copy lives."""
    view = copy.deepcopy(resume_view(manifest))
    (view.get("selection") or {}).pop("shard", None)
    if isinstance(view.get("dataset"), dict):
        view["dataset"].pop("location", None)
    return view


def merge_runs(dirs: list[Path], output: Path) -> Summary:
    """Merge shard run folders into `output` (new or empty) and return its summary."""
    dirs = [Path(d) for d in dirs]
    output = Path(output)
    if output.exists() and any(p.name != LOCK_NAME for p in output.iterdir()):
        raise MergeError(f"{output} is not empty; choose a new --output")
    manifests = [_manifest(d) for d in dirs]
    shards = _check_shards(dirs, manifests)
    _check_same_config(dirs, manifests)
    _check_no_duplicate_items(dirs)

    order = sorted(range(len(dirs)), key=lambda i: shards[i][0])
    output.mkdir(parents=True, exist_ok=True)
    for name in (SAMPLES, THUMBNAILS):  # copied verbatim: the raw responses stay untouched
        sources = [dirs[i] / name for i in order if (dirs[i] / name).exists()]
        if not sources:
            continue
        with open(output / name, "wb") as out:
            for src in sources:
                _copy_whole_lines(src, out)
    merged = copy.deepcopy(manifests[order[0]])
    merged["selection"]["shard"] = None
    merged["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    merged["merged_from"] = [
        {"dir": str(dirs[i]), "shard": manifests[i]["selection"]["shard"],
         "created": manifests[i].get("created"), "command_line": manifests[i].get("command_line"),
         "model": manifests[i].get("model")}
        for i in order
    ]
    write_json(output / MANIFEST, merged)
    return finalize(output)


def _copy_whole_lines(src: Path, out: BinaryIO) -> None:
    """Append `src` up to its last newline: the torn tail of a shard that crashed (dropped when
    that shard resumes) must not glue itself onto the next shard's first record."""
    with open(src, "rb") as f:
        size, end = f.seek(0, os.SEEK_END), whole_lines_end(f)
        if end < size:
            print(f"warning: {src}: dropped a torn last line ({size - end} bytes)", file=sys.stderr)
        f.seek(0)
        remaining = end
        while remaining:
            chunk = f.read(min(remaining, 1 << 20))
            out.write(chunk)
            remaining -= len(chunk)


def _manifest(run_dir: Path) -> dict[str, Any]:
    if not (run_dir / MANIFEST).exists() or not (run_dir / SAMPLES).exists():
        raise MergeError(f"{run_dir}: not a run folder (needs {MANIFEST} and {SAMPLES})")
    return read_json(run_dir / MANIFEST)


def _check_shards(dirs: list[Path], manifests: list[dict[str, Any]]) -> list[tuple[int, int]]:
    shards = []
    for d, m in zip(dirs, manifests):
        text = (m.get("selection") or {}).get("shard")
        if not text:
            raise MergeError(f"{d}: not a shard run (it was not run with --shard K/N)")
        shards.append(parse_shard(text))
    counts = {n for _, n in shards}
    if len(counts) > 1:
        raise MergeError(f"shards of different splits: {', '.join(f'{k}/{n}' for k, n in shards)}")
    n = counts.pop()
    seen: dict[int, Path] = {}
    for d, (k, _) in zip(dirs, shards):
        if k in seen:
            raise MergeError(f"shard {k}/{n} given twice: {seen[k]} and {d}")
        seen[k] = d
    missing = [f"{k}/{n}" for k in range(1, n + 1) if k not in seen]
    if missing:
        raise MergeError(f"shards missing: {', '.join(missing)} (all {n} are needed)")
    return shards


def _check_same_config(dirs: list[Path], manifests: list[dict[str, Any]]) -> None:
    reference = comparable(manifests[0])
    for d, m in zip(dirs[1:], manifests[1:]):
        view = comparable(m)
        changed = [k for k in RESUME_KEYS if view.get(k) != reference.get(k)]
        if changed:
            raise MergeError(f"{d} was run with a different configuration than {dirs[0]} "
                             f"({', '.join(changed)} differ)")


def _check_no_duplicate_items(dirs: list[Path]) -> None:
    owner: dict[str, Path] = {}
    for d in dirs:
        for record in read_samples(d / SAMPLES):
            item = record.item_id
            if owner.setdefault(item, d) != d:
                raise MergeError(f"item {item} appears in both {owner[item]} and {d}")
