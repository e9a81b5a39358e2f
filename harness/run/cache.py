"""A response cache, so that asking the same thing twice costs nothing.

The key is a SHA-256 of the exact request: the adapter's identity (model, endpoint), the wire
messages with the image replaced by the SHA-256 of its data URL (made once per image, when it is
encoded), and the generation parameters (seed included). SQLite in WAL mode. Answers are committed
in one transaction at most `commit_every_s` apart (a commit per answer cost more CPU than the rest
of the harness's work on it) and on close; a crash loses at most that last second of the cache,
never a record: the run's samples.jsonl has them.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from harness.adapters.base import Adapter, ChatRequest, ChatResponse


def default_cache_dir() -> Path:
    """`$UBENCH_CACHE_DIR`, else `$XDG_CACHE_HOME/ubench`, else `~/.cache/ubench`."""
    if os.environ.get("UBENCH_CACHE_DIR"):
        return Path(os.environ["UBENCH_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ubench"


def request_key(identity: dict[str, Any], request: ChatRequest) -> str:
    """The cache key of a request; printed in each record so a miss can be debugged."""
    url = request.image_data_url
    image = (request.image_url_sha256 or hashlib.sha256(url.encode()).hexdigest()) if url else None
    payload = {"adapter": identity, "messages": request.messages, "image_sha256": image,
               "params": request.params.as_dict()}
    if request.example_images:  # few-shot: the examples' images by content, not only by id
        payload["example_images"] = {k: v.url_sha256 for k, v in request.example_images.items()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class ResponseCache:
    def __init__(self, path: Path | None = None, commit_every_s: float = 1.0):
        self.path = Path(path) if path else default_cache_dir() / "responses.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._pending: dict[str, str] = {}  # answers not committed yet
        self._commit_every_s = commit_every_s
        self._last_commit = time.monotonic()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, "
                         "response TEXT NOT NULL, created REAL NOT NULL)")

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            text = self._pending.get(key)
            if text is None:
                row = self._db.execute("SELECT response FROM responses WHERE key = ?",
                                       (key,)).fetchone()
                text = row[0] if row else None
        return json.loads(text) if text is not None else None

    def put(self, key: str, response: dict[str, Any]) -> None:
        with self._lock:
            self._pending[key] = json.dumps(response)
        if time.monotonic() - self._last_commit >= self._commit_every_s:
            self.commit()

    def commit(self) -> None:
        """Write the pending answers in one transaction."""
        with self._lock:
            rows, self._pending = self._pending, {}
            self._last_commit = time.monotonic()
            if rows:
                now = time.time()
                self._db.execute("BEGIN")
                self._db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)",
                                     [(k, v, now) for k, v in rows.items()])
                self._db.execute("COMMIT")

    def info(self) -> dict[str, Any]:
        self.commit()
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM responses").fetchone()
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*"))
        return {"path": str(self.path), "entries": n, "bytes": size}

    def clear(self) -> int:
        self.commit()
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM responses").fetchone()
            self._db.execute("DELETE FROM responses")
            self._db.execute("VACUUM")
        return n

    def close(self) -> None:
        self.commit()
        self._db.close()


class CachedAdapter(Adapter):
    """Answers from the cache when it can, else asks the wrapped adapter and stores the answer."""

    def __init__(self, inner: Adapter, cache: ResponseCache, identity: dict[str, Any]):
        self.inner = inner
        self.cache = cache
        self.identity = identity
        self.spec = inner.spec
        self.hits = 0

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    async def complete(self, request: ChatRequest) -> ChatResponse:
        key = request_key(self.identity, request)
        hit = self.cache.get(key)
        if hit is not None:
            self.hits += 1
            return ChatResponse(text=hit["text"], finish_reason=hit["finish_reason"],
                                usage=hit["usage"], latency_s=hit["latency_s"], attempts=0,
                                meta={"cache": "hit", "cache_key": key})
        response = await self.inner.complete(request)
        self.cache.put(key, {"text": response.text, "finish_reason": response.finish_reason,
                             "usage": response.usage, "latency_s": response.latency_s})
        response.meta.update({"cache": "miss", "cache_key": key})
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()
