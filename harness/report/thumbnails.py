"""The report's image thumbnails, made during the run from bytes already in hand (thumbnails.jsonl).

Which images the sample browser shows is fixed by a stable hash of the image id: records in order of
(hash of image id, item id), the first `limit` of them. While the run streams, a thumbnail is made
for every image that is among those shown *for the images seen so far*; more images only push the
cut lower, so the final choice is always among them, whatever the order: on a resume, in every
shard of a sharded run, and after `ubench merge` (which concatenates the shards' files). Where the
run counts its items up front (a local copy, the sample), that count settles the exact choice
within a second, and only those images get one. The end of a run and `ubench report` therefore
never open the dataset, and a run folder reports the same wherever it is moved.
"""
from __future__ import annotations

import base64
import hashlib
import heapq
import io
import logging
import threading
from pathlib import Path
from typing import Iterable, Mapping

from harness.config import BROWSER_LIMIT
from harness.report.results import JsonLinesWriter, read_json_lines

THUMBNAILS = "thumbnails.jsonl"
THUMB_PX = 128
MAX_PENDING = 64  # images held back while the count that settles the choice is under way

log = logging.getLogger("ubench")


def image_rank(image_id: str) -> bytes:
    """The stable pseudo-random order in which images enter the browser."""
    return hashlib.sha256(image_id.encode("utf-8")).digest()


def browser_images(counts: Mapping[str, int], limit: int) -> set[str]:
    """The images with a record among the first `limit` records in (image hash, item id) order;
    every image when `limit` is 0 or the run has no more records than that."""
    if limit <= 0 or sum(counts.values()) <= limit:
        return set(counts)
    chosen, before = set(), 0
    for image_id in sorted(counts, key=image_rank):
        if before >= limit:
            break
        chosen.add(image_id)
        before += counts[image_id]
    return chosen


class ThumbnailSketch:
    """The images `browser_images` would choose among those offered so far (thread-safe)."""

    def __init__(self, limit: int):
        self.limit = limit
        self._heap: list[tuple[bytes, str, int]] = []  # (inverted rank, image id, records)
        self._members: set[str] = set()
        self._total = 0
        self._lock = threading.Lock()

    def offer(self, image_id: str, n_records: int) -> bool:
        """Count the image in; whether it is shown among the images offered so far."""
        if self.limit <= 0:
            return True
        inverted = bytes(255 - b for b in image_rank(image_id))  # heapq is a min-heap
        with self._lock:
            if image_id in self._members:
                return True
            heapq.heappush(self._heap, (inverted, image_id, n_records))
            self._members.add(image_id)
            self._total += n_records
            # Drop the highest-ranked image while the others alone already fill the browser.
            while self._total - self._heap[0][2] >= self.limit:
                _, dropped, n = heapq.heappop(self._heap)
                self._members.discard(dropped)
                self._total -= n
            return image_id in self._members


def make_thumbnail(raw: bytes) -> str:
    """A small JPEG data URI; JPEGs are decoded at 1/2..1/8 scale (draft mode), far cheaper."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(raw)) as opened:
        opened.draft("RGB", (THUMB_PX, THUMB_PX))
        img = opened
        if img.mode in ("I", "I;16", "I;16B", "F"):  # 16-bit / float microscopy: stretch to 8 bits
            a = np.asarray(img, dtype=float)
            span = float(a.max() - a.min()) or 1.0
            img = Image.fromarray(((a - a.min()) / span * 255).astype("uint8"))
        if img.mode in ("P", "1"):  # resized only by nearest neighbour: convert first
            img = img.convert("RGB")
        img.thumbnail((THUMB_PX, THUMB_PX))  # before convert: converting the full image cost more
        img = img.convert("RGB")
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class ThumbnailRecorder:
    """Called from the encode threads: thumbnails of the browser's images into each run folder.

    With `counted`, the images the sketch accepts are held back (at most MAX_PENDING) until
    `settle` brings the exact choice from the run's count of its items.
    """

    def __init__(self, folders: Iterable[Path], limit: int = BROWSER_LIMIT, counted: bool = False):
        self.writers = [JsonLinesWriter(Path(f) / THUMBNAILS) for f in folders]
        done = [set(thumbnail_ids(w.path)) for w in self.writers]
        self.have = set.intersection(*done) if done else set()  # already made on an earlier run
        self.sketch = ThumbnailSketch(limit)
        self._chosen: set[str] | None = None
        self._pending: list[tuple[str, bytes]] | None = [] if counted else None
        self._lock = threading.Lock()
        self._settling = threading.Lock()  # a late count must not write into closed files
        self._closed = False

    def offer(self, image_id: str, n_records: int, raw: bytes | None) -> None:
        """Make and store the image's thumbnail if the browser may show it; a bad image is logged
        and left out (its card shows a placeholder), never losing another's thumbnail."""
        shown = self.sketch.offer(image_id, n_records)
        if image_id in self.have or not raw:
            return
        with self._lock:
            if self._chosen is not None:
                shown = image_id in self._chosen
            elif shown and self._pending is not None and len(self._pending) < MAX_PENDING:
                self._pending.append((image_id, raw))
                return
        if shown:
            self._make(image_id, raw)

    def settle(self, counts: Mapping[str, int]) -> None:
        """The exact choice, from the number of records of every image in the run."""
        chosen = browser_images(counts, self.sketch.limit)
        with self._settling:
            if self._closed:  # the run ended first: close() made what the sketch accepted
                return
            with self._lock:
                self._chosen = chosen
                pending, self._pending = self._pending or [], None
            for image_id, raw in pending:
                if image_id in chosen:
                    self._make(image_id, raw)

    def _make(self, image_id: str, raw: bytes) -> None:
        try:
            thumb = make_thumbnail(raw)
        except Exception as exc:  # Pillow raises many types (bombs included) for bad data
            log.warning("no thumbnail for image %s: %s", image_id, exc)
            return
        line = {"image_id": image_id, "thumbnail": thumb}
        for writer in self.writers:
            writer.write(line)
        self.have.add(image_id)  # offered again (a batch run's online fallback): made once

    def sync(self) -> None:
        """Flush every writer to disk (called where the run checkpoints)."""
        for writer in self.writers:
            writer.sync()

    def close(self) -> None:
        """Wait for the thumbnails in progress and close their files."""
        with self._settling:
            self._closed = True
            with self._lock:  # no count came (it failed, or is still going): what the sketch took
                pending, self._pending = self._pending or [], None
            for image_id, raw in pending:
                self._make(image_id, raw)
            for writer in self.writers:
                writer.close()


def thumbnail_ids(path: Path) -> list[str]:
    """The image ids a thumbnails file holds."""
    if not Path(path).exists():
        return []
    return [entry["image_id"] for _, entry in read_json_lines(path) if "image_id" in entry]


def read_thumbnails(run_dir: Path, image_ids: set[str]) -> dict[str, str]:
    """The stored thumbnails of `image_ids` (those the run made)."""
    path = Path(run_dir) / THUMBNAILS
    if not path.exists() or not image_ids:
        return {}
    found: dict[str, str] = {}
    for _, entry in read_json_lines(path):
        if entry.get("image_id") in image_ids and isinstance(entry.get("thumbnail"), str):
            found[entry["image_id"]] = entry["thumbnail"]
    return found
