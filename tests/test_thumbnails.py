"""Thumbnails are made during the run; the report never opens the dataset."""
from __future__ import annotations

import io
import json
import logging
import math
import random
import re
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from harness.data.sources import SAMPLE_PATH
from harness.report.thumbnails import MAX_PENDING, THUMBNAILS, ThumbnailSketch, browser_images, image_rank
from tests.conftest import read_jsonl, synthetic_rows, ubench, write_dataset


def page_thumbs(run_dir: Path) -> dict[str, str]:
    page = (run_dir / "report.html").read_text()
    return json.loads(re.search(r'id="thumbs-data">(.*?)</script>', page).group(1))


def test_a_run_folder_moved_away_from_its_deleted_dataset_reports_the_same(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(SAMPLE_PATH, data / "part.parquet")
    out = tmp_path / "run"
    ubench("run", "--model", "random", "--dataset", str(data), "--output", str(out),
           "--no-progress")
    images = {r["image_id"] for r in read_jsonl(out / "samples.jsonl")}
    made = page_thumbs(out)
    assert set(made) == images and "Thumbnails unavailable" not in (out / "report.html").read_text()

    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(out, moved)
    shutil.rmtree(data)
    shutil.rmtree(out)
    ubench("score", str(moved))
    ubench("report", str(moved))
    assert page_thumbs(moved) == made
    assert "Thumbnails unavailable" not in (moved / "report.html").read_text()


def _jpeg(size: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def test_bad_images_lose_only_their_own_thumbnail(tmp_path, monkeypatch):
    rows = synthetic_rows(3, 5)
    torn = _jpeg(64, 1)
    rows[1]["image"] = {"bytes": torn[:len(torn) // 2], "path": "torn.jpg"}  # sent, undecodable
    rows[3]["image"] = {"bytes": _jpeg(600, 2), "path": "bomb.jpg"}  # over 2x the pixel limit
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 150_000)
    data = write_dataset(rows, tmp_path / "data")
    out = tmp_path / "run"
    proc = ubench("run", "--model", "random", "--dataset", str(data), "--output", str(out),
                  "--no-progress", check=False)
    assert proc.returncode == 1  # the run ended; the bomb's items are errors
    thumbs = page_thumbs(out)
    good = {rows[i]["image_id"] for i in (0, 2, 4)}
    assert set(thumbs) == good
    assert "2 of 5 images have none" in (out / "report.html").read_text()
    assert "no thumbnail for image " + rows[1]["image_id"] in (out / "run.log").read_text()


def test_a_warning_logged_in_an_encode_thread_reaches_run_log(tmp_path):
    # Met after MAX_PENDING images were held back (or the count settled), the torn image's
    # thumbnail is tried at once in the encode thread: its warning must still reach run.log.
    rows = synthetic_rows(4, MAX_PENDING + 2)
    torn = _jpeg(64, 3)
    rows[-1]["image"] = {"bytes": torn[:len(torn) // 2], "path": "torn.jpg"}
    data = write_dataset(rows, tmp_path / "data")
    out = tmp_path / "run"
    seen: list[logging.LogRecord] = []
    catch = logging.Handler()
    catch.emit = seen.append  # type: ignore[method-assign]
    logging.getLogger("ubench").addHandler(catch)
    try:
        ubench("run", "--model", "random", "--dataset", str(data), "--output", str(out),
               "--no-progress", "--concurrency", "1")
    finally:
        logging.getLogger("ubench").removeHandler(catch)
    warning = "no thumbnail for image " + rows[-1]["image_id"]
    threads = [r.threadName for r in seen if r.getMessage().startswith(warning)]
    assert len(threads) == 1 and threads[0].startswith("ubench-encode")
    assert warning in (out / "run.log").read_text()


def test_shards_merged_give_the_thumbnails_of_one_run(tmp_path):
    whole, a, b, merged = (tmp_path / n for n in ("whole", "a", "b", "merged"))
    ubench("run", "--model", "random", "--output", str(whole), "--no-progress")
    ubench("run", "--model", "random", "--output", str(a), "--shard", "1/2", "--no-progress")
    ubench("run", "--model", "random", "--output", str(b), "--shard", "2/2", "--no-progress")
    ubench("merge", str(a), str(b), "--output", str(merged))
    assert page_thumbs(merged) == page_thumbs(whole) and page_thumbs(whole)
    shard_lines = [len(read_jsonl(d / THUMBNAILS)) for d in (a, b)]
    assert len(read_jsonl(merged / THUMBNAILS)) == sum(shard_lines) > 0


def test_the_sketch_keeps_the_browser_images_in_any_order_and_any_split():
    rng = random.Random(0)
    counts = {f"img-{i}": rng.randint(1, 9) for i in range(3000)}
    limit = 1000
    chosen = browser_images(counts, limit)
    assert 0 < len(chosen) < len(counts)
    assert sum(counts[i] for i in chosen) >= limit  # the image at the cut is shown in part
    for trial in range(4):
        ids = list(counts)
        rng.shuffle(ids)
        shards = [ids[k::trial + 1] for k in range(trial + 1)]  # a sharded run, or a resume
        made: set[str] = set()
        for shard in shards:
            sketch = ThumbnailSketch(limit)
            made |= {i for i in shard if sketch.offer(i, counts[i])}
        assert chosen <= made
        k = len(chosen)  # bounded: about k·(1 + ln(n/k)) per shard, far fewer than every image
        assert len(made) < len(shards) * k * (2 + math.log(len(counts) / k)) < 3 * len(counts)
    # the report's choice is the first `limit` records by (image hash, item id)
    records = [(i, n) for i, c in counts.items() for n in range(c)]
    first = sorted(records, key=lambda r: (image_rank(r[0]), r[1]))[:limit]
    assert {i for i, _ in first} == chosen


def test_a_resumed_run_keeps_its_thumbnails_and_makes_none_twice(tmp_path):
    out = tmp_path / "run"
    ubench("run", "--model", "random", "--output", str(out), "--no-progress")
    first = page_thumbs(out)
    lines = (out / "samples.jsonl").read_text().splitlines(keepends=True)
    (out / "samples.jsonl").write_text("".join(lines[:50]))  # as if stopped after 50 answers
    started = {json.loads(line)["image_id"] for line in lines[:50]}  # their thumbnails came first
    kept = [t for t in read_jsonl(out / THUMBNAILS) if t["image_id"] in started]
    (out / THUMBNAILS).write_text("".join(json.dumps(t) + "\n" for t in kept))
    ubench("run", "--model", "random", "--output", str(out), "--no-progress")
    ids = [t["image_id"] for t in read_jsonl(out / THUMBNAILS)]
    assert len(ids) == len(set(ids)) and set(ids) == set(first)
    assert page_thumbs(out) == first


def test_the_count_settles_exactly_the_browser_images(tmp_path):
    from harness.report.thumbnails import ThumbnailRecorder, read_thumbnails

    rng = random.Random(1)
    counts = {f"img-{i}": rng.randint(1, 9) for i in range(400)}
    jpeg = _jpeg(16, 0)
    recorder = ThumbnailRecorder([tmp_path], limit=300, counted=True)
    items = list(counts.items())
    for image_id, n in items[:50]:  # offered while the count is under way: held back
        recorder.offer(image_id, n, jpeg)
    recorder.settle(counts)
    for image_id, n in items[50:]:
        recorder.offer(image_id, n, jpeg)
    recorder.close()
    made = [t["image_id"] for t in read_jsonl(tmp_path / THUMBNAILS)]
    assert sorted(made) == sorted(browser_images(counts, 300))
    assert set(read_thumbnails(tmp_path, set(counts))) == set(made)
