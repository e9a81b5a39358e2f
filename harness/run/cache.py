"""A response cache, so that asking the same thing twice costs nothing.

The key is a SHA-256 of the exact request: the adapter's identity (model, endpoint), the wire
messages with the image replaced by the SHA-256 of its data URL (made once per image, when it is
encoded), and the generation parameters (seed included). SQLite in WAL mode. Answers are committed
in one transaction at most `commit_every_s` apart (a commit per answer cost more CPU than the rest
of the harness's work on it) and on close; a crash loses at most that last second of the cache,
never a record: the run's samples.jsonl has them.

A damaged cache never stops a run: one that cannot be opened or read is moved aside
(`responses.sqlite.corrupt-<time>`) and a fresh one used; one that cannot be written (a full disk)
is switched off for the rest of the run. Each says so once, on stderr and in run.log.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

from harness.adapters.base import Adapter, ChatRequest, ChatResponse, WrappedAdapter
from harness.adapters.reply import valid_cached

log = logging.getLogger("ubench")


def warn(message: str) -> None:
    """One line on stderr and in run.log."""
    print(f"warning: {message}", file=sys.stderr)
    log.warning(message)


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
    """Answers keyed by request, in SQLite, so a rerun sends only what it has not seen."""
    def __init__(self, path: Path | None = None, commit_every_s: float = 1.0):
        self.path = Path(path) if path else default_cache_dir() / "responses.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._pending: dict[str, str] = {}  # answers not committed yet
        self._commit_every_s = commit_every_s
        self._last_commit = time.monotonic()
        self.disabled = False  # set when a write failed: the run goes on without the cache
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            self._move_aside(exc)
            self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, "
                       "response TEXT NOT NULL, created REAL NOT NULL)")
            db.execute("SELECT key, response FROM responses LIMIT 1").fetchall()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _move_aside(self, exc: Exception) -> None:
        """Keep an unreadable cache file for inspection and start a fresh one beside it."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        for suffix in ("", "-wal", "-shm"):
            part = self.path.with_name(self.path.name + suffix)
            if part.exists():
                os.replace(part, aside.with_name(aside.name + suffix))
        warn(f"the response cache {self.path} cannot be read ({exc}); moved it aside to "
             f"{aside} and started a fresh one")

    def get(self, key: str) -> dict[str, Any] | None:
        """The cached answer for `key`, or None (also when the cache is disabled)."""
        if self.disabled:
            return None
        with self._lock:
            text = self._pending.get(key)
            if text is None:
                try:
                    row = self._db.execute("SELECT response FROM responses WHERE key = ?",
                                           (key,)).fetchone()
                except sqlite3.DatabaseError as exc:
                    self._disable(f"cannot be read ({exc})")
                    return None
                text = row[0] if row else None
        try:
            return json.loads(text) if text is not None else None
        except ValueError:
            return None  # a damaged entry: asked again, and replaced

    def put(self, key: str, response: dict[str, Any]) -> None:
        """Store an answer; commits are batched in time to keep SQLite off the request path."""
        if self.disabled:
            return
        with self._lock:
            self._pending[key] = json.dumps(response)
        if time.monotonic() - self._last_commit >= self._commit_every_s:
            self.commit()

    def commit(self) -> None:
        """Write the pending answers in one transaction; a failure switches the cache off."""
        with self._lock:
            rows, self._pending = self._pending, {}
            self._last_commit = time.monotonic()
            if rows and not self.disabled:
                now = time.time()
                try:
                    self._db.execute("BEGIN")
                    self._db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)",
                                         [(k, v, now) for k, v in rows.items()])
                    self._db.execute("COMMIT")
                except (sqlite3.Error, OSError) as exc:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    self._disable(f"cannot be written ({exc})")

    def _disable(self, why: str) -> None:
        """Called with the lock held. Answers are in samples.jsonl either way."""
        if not self.disabled:
            self.disabled = True
            self._pending = {}
            warn(f"the response cache {self.path} {why}; going on without it for this run")

    def info(self) -> dict[str, Any]:
        """Where the cache is and how many answers it holds (`ubench cache info`)."""
        self.commit()
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM responses").fetchone()
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*"))
        return {"path": str(self.path), "entries": n, "bytes": size}

    def clear(self) -> int:
        """Delete every cached answer; returns how many there were."""
        self.commit()
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM responses").fetchone()
            self._db.execute("DELETE FROM responses")
            self._db.execute("VACUUM")
        return n

    def close(self) -> None:
        """Commit what is pending and close the database."""
        self.commit()
        try:
            self._db.close()
        except sqlite3.Error:
            pass


class CachedAdapter(WrappedAdapter):
    """Answers from the cache when it can, else asks the wrapped adapter and stores the answer."""

    def __init__(self, inner: Adapter, cache: ResponseCache, identity: dict[str, Any]):
        super().__init__(inner)
        self.cache = cache
        self.identity = identity

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """A valid cached answer if there is one, else the wrapped adapter's, then stored."""
        key = request_key(self.identity, request)
        hit = self.cache.get(key)
        if hit is not None and valid_cached(hit):
            return ChatResponse(text=hit["text"], finish_reason=hit["finish_reason"],
                                usage=hit["usage"], latency_s=hit["latency_s"], attempts=0,
                                meta={"cache": "hit", "cache_key": key},
                                redacted=bool(hit.get("redacted")), logprobs=hit.get("logprobs"))
        response = await self.inner.complete(request)
        self.cache.put(key, {"text": response.text, "finish_reason": response.finish_reason,
                             "usage": response.usage, "latency_s": response.latency_s,
                             "redacted": response.redacted,
                             **({"logprobs": response.logprobs} if response.logprobs else {})})
        response.meta.update({"cache": "miss", "cache_key": key})
        return response
