"""OpenAI's Files and Batches endpoints for the test server, so `ubench run --batch` is tested whole.

Upload (`POST /v1/files`, multipart, purpose=batch), create (`POST /v1/batches`), retrieve
(`GET /v1/batches/{id}`), list (`GET /v1/batches`, newest first) and file content
(`GET /v1/files/{id}/content`). A batch moves one state forward each time it is retrieved
(validating → in_progress → finalizing → completed) unless `hold` is set, so tests control time
by polling, never by sleeping. Knobs: every `error_every`-th line fails (into the error file; only
the first time a custom_id is seen, so a resubmission succeeds), and
the first `expire_first` batches expire with only their first half answered; with `key_echo`,
answers and failure messages quote the API key the batch was created with (as the online hostile
mode does). Hostile output files: `pad_first` pads the first answer of every batch with that many
bytes (a line over the client's limit), `repeat_output` sends every output line that many times
(a file longer than the batch can answer), `cut_downloads` closes the connection halfway through
that many downloads of a result file. Output lines come in reverse input order: clients must
join on custom_id.
"""
from __future__ import annotations

import itertools
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import orjson
from aiohttp import web

PROGRESSION = ("validating", "in_progress", "finalizing", "completed")
# answer(body) → the chat-completion object the server would have returned for that body
Answer = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class BatchService:
    """The OpenAI Batch API emulated on the test server, with the faults a client must survive."""
    answer: Answer
    hold: bool = False  # batches stay where they are while set
    error_every: int = 0
    error_repeat: bool = False  # a line drawn to fail fails in every batch, not only the first
    expire_first: int = 0
    key_echo: bool = False  # answers and failures quote the key the batch was created with
    pad_first: int = 0  # bytes of padding in each batch's first answer (a huge line)
    repeat_output: int = 1  # times each output line is sent (a file past its requests)
    cut_downloads: int = 0  # result-file downloads broken off halfway (then whole again)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)  # uploads, creates, retrieves, lists
    _seen: set = field(default_factory=set)  # custom ids of finished batches
    _failing: set = field(default_factory=set)  # custom ids drawn to fail
    _ids: Any = field(default_factory=itertools.count)

    def _id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids):06d}"

    def register(self, app: web.Application) -> None:
        """Add the Batch API routes to the test server's application."""
        app.router.add_post("/v1/files", self.upload)
        app.router.add_get("/v1/files/{file_id}/content", self.content)
        app.router.add_post("/v1/batches", self.create)
        app.router.add_get("/v1/batches", self.list)
        app.router.add_get("/v1/batches/{batch_id}", self.retrieve)

    async def upload(self, request: web.Request) -> web.Response:
        """POST /v1/files: store a batch input file."""
        form = await request.post()
        upload, purpose = form.get("file"), form.get("purpose")
        if purpose != "batch" or not isinstance(upload, web.FileField):
            return _error(400, "multipart fields 'file' and purpose='batch' are required")
        data = upload.file.read()
        file_id = self._id("file")
        self.files[file_id] = {"id": file_id, "object": "file", "bytes": len(data),
                               "created_at": int(time.time()), "filename": upload.filename,
                               "purpose": "batch", "status": "processed", "data": data}
        self.counts["uploads"] += 1
        return web.json_response({k: v for k, v in self.files[file_id].items() if k != "data"})

    async def content(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/files/{id}/content: an input or output file."""
        entry = self.files.get(request.match_info["file_id"])
        if entry is None:
            return _error(404, "no such file")
        self.counts["downloads"] += 1
        if entry.get("results") and self.cut_downloads > 0:
            self.cut_downloads -= 1
            data = entry["data"]
            response = web.StreamResponse(headers={"Content-Length": str(len(data))})
            await response.prepare(request)
            await response.write(data[: len(data) // 2])
            assert request.transport is not None
            request.transport.close()  # the client reads a body that stops short
            return response
        return web.Response(body=entry["data"], content_type="application/octet-stream")

    async def create(self, request: web.Request) -> web.Response:
        """POST /v1/batches: start a batch over an uploaded file."""
        body = orjson.loads(await request.read())
        if body.get("input_file_id") not in self.files:
            return _error(400, "input_file_id: no such file")
        if body.get("endpoint") != "/v1/chat/completions" or body.get("completion_window") != "24h":
            return _error(400, "endpoint must be /v1/chat/completions, completion_window 24h")
        self.counts["creates"] += 1
        batch_id = self._id("batch")
        n = len(self.files[body["input_file_id"]]["data"].splitlines())
        self.batches[batch_id] = {
            "id": batch_id, "object": "batch", "endpoint": body["endpoint"],
            "input_file_id": body["input_file_id"], "completion_window": "24h",
            "status": "validating", "created_at": int(time.time()) + self.counts["creates"],
            "output_file_id": None, "error_file_id": None, "metadata": body.get("metadata"),
            "request_counts": {"total": n, "completed": 0, "failed": 0},
            "expire": self.counts["creates"] <= self.expire_first,
            "key": request.headers.get("Authorization", "").removeprefix("Bearer "),
        }
        return web.json_response(_public(self.batches[batch_id]))

    async def list(self, request: web.Request) -> web.Response:
        """GET /v1/batches: every batch, newest first."""
        self.counts["lists"] += 1
        data = sorted(self.batches.values(), key=lambda b: -b["created_at"])
        return web.json_response({"object": "list", "data": [_public(b) for b in data],
                                  "has_more": False})

    async def retrieve(self, request: web.Request) -> web.Response:
        """GET /v1/batches/{id}: a batch, advanced one step unless held."""
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return _error(404, "no such batch")
        self.counts["retrieves"] += 1
        if not self.hold and batch["status"] in PROGRESSION[:-1]:
            following = PROGRESSION[PROGRESSION.index(batch["status"]) + 1]
            if following == "completed":
                self._finish(batch)
            else:
                batch["status"] = following
        return web.json_response(_public(batch))

    def _finish(self, batch: dict[str, Any]) -> None:
        """Answer the batch's lines; an expired batch delivers only its first half."""
        lines = [orjson.loads(line) for line in
                 self.files[batch["input_file_id"]]["data"].splitlines() if line.strip()]
        seen = set(self._seen)
        self._seen.update(line["custom_id"] for line in lines)
        if batch["expire"]:
            lines = lines[: len(lines) // 2]
        done, failed = [], []
        echo = f" (key {batch['key']})" if self.key_echo else ""
        for i, line in enumerate(lines, 1):
            if self.error_every and i % self.error_every == 0 and line["custom_id"] not in seen:
                self._failing.add(line["custom_id"])
            if line["custom_id"] in self._failing and (
                    self.error_repeat or line["custom_id"] not in seen):
                failed.append({"id": f"batch_req_{i}", "custom_id": line["custom_id"],
                               "response": {"status_code": 500, "request_id": f"req_{i}",
                                            "body": {"error": {
                                                "message": "injected failure" + echo}}},
                               "error": None})
            else:
                body = self.answer(line["body"])
                if echo:
                    body["choices"][0]["message"]["content"] += echo
                if self.pad_first and i == 1:
                    body["padding"] = "x" * self.pad_first
                done.append({"id": f"batch_req_{i}", "custom_id": line["custom_id"],
                             "response": {"status_code": 200, "request_id": f"req_{i}",
                                          "body": body},
                             "error": None})
        done = [row for row in done for _ in range(self.repeat_output)]
        for key, rows in (("output_file_id", done[::-1]), ("error_file_id", failed[::-1])):
            if rows:
                file_id = self._id("file")
                data = b"".join(orjson.dumps(r) + b"\n" for r in rows)
                self.files[file_id] = {"id": file_id, "data": data, "results": True}
                batch[key] = file_id
        batch["request_counts"].update(completed=len(done), failed=len(failed))
        batch["status"] = "expired" if batch["expire"] else "completed"


BATCHES = web.AppKey("batches", BatchService)


def _public(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if k not in ("expire", "key")}


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message}}, status=status)
