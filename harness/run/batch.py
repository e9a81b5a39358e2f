"""`ubench run --batch`: the run's requests through OpenAI's Batch API, at half the price.

The run folder's `batch/` holds everything, written before the step that depends on it:
  requests-NNN.jsonl   request lines {custom_id, method, url, body}, ≤ 50,000 lines and ≤ 200 MB
                       each (the same files vLLM's `run_batch` reads; see harness.run.offline_batch)
  pending.jsonl        the record of every request without its answer (custom_id = item id)
  state.json           per file: its input file id, batch id, status and counts, saved the moment
                       each exists; a re-run reads it and never uploads or submits a file twice
  results-*.jsonl      the output and error files as the server sent them (raw, but for an echoed
                       API key: answers and copies are redacted as online answers are), streamed:
                       a line is at most --max-response-bytes plus its envelope, a file at most
                       two such lines per request of its batch (ResultLines)
A batch created but not yet saved (the process killed in between) is found again by its metadata
(`ubench_run`, `ubench_file`) in the server's batch list. Results are joined on custom_id (the
server's order is not the input order) into the same samples.jsonl records as an online run.
Lines that fail, and lines an expired or failed batch never answered, go once more in a new batch;
what fails again gets an error record (--batch-online-fallback, or a re-run without --batch, then
asks those online).
"""
from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, BinaryIO, Callable, Iterable, Iterator

import orjson

from harness.adapters import AdapterError, ChatRequest
from harness.adapters.openai_compat import chat_response
from harness.adapters.reply import MAX_RESPONSE_BYTES
from harness.report.results import SampleWriter, answered_ids, read_json, write_json
from harness.report.schema import ErrorInfo, SampleRecord, SamplesError
from harness.run.records import answered
from harness.run.retry import RetryPolicy

BATCH_DIR = "batch"
STATE_JSON = "state.json"
PENDING = "pending.jsonl"
ENDPOINT = "/v1/chat/completions"
MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1000 * 1000
TERMINAL = ("completed", "failed", "expired", "cancelled")
ROUNDS = 2  # the first submission and one resubmission of what failed
RESULT_LINE_ENVELOPE = 64 * 1024  # a result line's fields around the reply body (ids, status)
DOWNLOAD_CHUNK = 1 << 20
# A results file has a line per request; as many again (a retried request's failed attempt, a
# stray line) is tolerated, more is not a results file of this batch.
LINES_PER_REQUEST = 2
_HEAD = 4096  # of a line over the limit, the bytes kept to name its request
_CUSTOM_ID = re.compile(rb'"custom_id"\s*:\s*("(?:[^"\\]|\\.){1,1024}")')

log = logging.getLogger("ubench")


class BatchError(Exception):
    """The batch workflow cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class BatchOptions:
    """How a batch run polls and splits its requests (the providers' per-batch limits)."""
    poll_s: float = 30.0
    max_requests: int = MAX_REQUESTS
    max_bytes: int = MAX_BYTES
    max_response_bytes: int = MAX_RESPONSE_BYTES  # per reply, as online (--max-response-bytes)
    progress: bool = True

    @property
    def max_line_bytes(self) -> int:
        """The longest result line read: one reply body and the fields around it."""
        return self.max_response_bytes + RESULT_LINE_ENVELOPE


def request_line(custom_id: str, body: bytes) -> bytes:
    """One line of a batch input file; `body` is the exact JSON the online run would POST."""
    return (b'{"custom_id":' + orjson.dumps(custom_id) + b',"method":"POST","url":'
            + orjson.dumps(ENDPOINT) + b',"body":' + body + b"}\n")


class RequestFiles:
    """The request files of one round, written in order: a new file (and its entry in `files`)
    when the next line would pass the per-batch limits, each file opened once."""

    def __init__(self, folder: Path, options: BatchOptions, files: list[dict[str, Any]],
                 round_: int):
        self.folder, self.options, self.files, self.round = folder, options, files, round_
        self.entry: dict[str, Any] | None = None
        self._file: BinaryIO | None = None

    def write(self, line: bytes) -> None:
        """Append one request line, starting the next file at the limits."""
        entry = self.entry
        if entry is None or entry["requests"] >= self.options.max_requests \
                or entry["bytes"] + len(line) > self.options.max_bytes:
            entry = self._next()
        assert self._file is not None  # opened by _next
        self._file.write(line)
        entry["requests"] += 1
        entry["bytes"] += len(line)

    def _next(self) -> dict[str, Any]:
        self.close()
        prefix = "requests" if self.round == 1 else f"requests-r{self.round}"
        number = len([f for f in self.files if f["round"] == self.round]) + 1
        name = f"{prefix}-{number:03d}.jsonl"
        self._file = open(self.folder / name, "wb")  # a file an interrupted round left starts again
        self.entry = {"name": name, "round": self.round, "requests": 0, "bytes": 0,
                      "input_file_id": None, "batch_id": None, "status": "written",
                      "request_counts": None, "output_file_id": None, "error_file_id": None,
                      "collected": False, "failed_ids": []}
        self.files.append(self.entry)
        return self.entry

    def close(self) -> None:
        """Close the file being written."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "RequestFiles":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BatchRun:
    """One run folder's batches: prepare, submit, poll, collect, resubmit."""

    def __init__(self, out: Path, client: Any, options: BatchOptions,
                 redact: Callable[[str], str] = lambda s: s, policy: RetryPolicy | None = None):
        self.folder = Path(out) / BATCH_DIR
        self.client = client
        self.options = options
        self.redact = redact
        self.policy = policy or RetryPolicy()
        self.state: dict[str, Any] = {}
        self._shown: dict[str, str] = {}

    # -- state --------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        """batch/state.json of the run folder."""
        return self.folder / STATE_JSON

    def load(self) -> None:
        """Read the saved state; a damaged file is an error naming it, never a silent restart."""
        try:
            self.state = read_json(self.state_path) if self.state_path.exists() else {}
        except (OSError, ValueError) as exc:
            raise BatchError(f"{self.state_path}: unreadable ({exc}); it holds the ids of batches "
                             "already submitted: restore it, or start over in a new --output")
        if self.state and not isinstance(self.state.get("files"), list):
            raise BatchError(f"{self.state_path}: field 'files' is missing or not a list")

    def save(self) -> None:
        """Write the state atomically, so an interrupted run resumes where it was."""
        write_json(self.state_path, self.state)

    # -- preparing ----------------------------------------------------------------------------
    def prepare(self, requests: Iterable[tuple[SampleRecord, ChatRequest | None]],
                body: Callable[[ChatRequest], bytes], writer: SampleWriter) -> None:
        """Write the request files and pending records, once. Items that cannot be asked (bad
        input) get their error record at once. A preparation cut short is started over: nothing
        was submitted before it finished."""
        if self.state.get("prepared"):
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.glob("requests-*.jsonl"):
            old.unlink()
        files: list[dict[str, Any]] = []
        with open(self.folder / PENDING, "wb") as pending, \
                RequestFiles(self.folder, self.options, files, 1) as out:
            for record, request in requests:
                if request is None:
                    writer.append(record)
                    continue
                out.write(request_line(record.item_id, body(request)))
                pending.write(orjson.dumps(record.to_json()) + b"\n")
        self.state = {"run_token": uuid.uuid4().hex, "created": time.time(), "prepared": True,
                      "files": files}
        self.save()

    # -- talking to the server ----------------------------------------------------------------
    async def _api(self, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """One API call through the one retry policy, its failures classified like a chat's."""
        import openai

        async def attempt() -> Any:
            try:
                return await call()
            except openai.APIStatusError as exc:
                status = exc.status_code
                raise AdapterError("rate_limit" if status == 429 else
                                   "server" if status >= 500 else "client",
                                   self.redact(f"{what}: HTTP {status}: {exc.message}"),
                                   retryable=status in (408, 409, 429) or status >= 500,
                                   status=status) from None
            except openai.APITimeoutError:
                raise AdapterError("timeout", f"{what}: no response", retryable=True) from None
            except openai.APIConnectionError as exc:
                raise AdapterError("connection", self.redact(f"{what}: {exc}"),
                                   retryable=True) from None

        try:
            return await self.policy.call(attempt)
        except AdapterError as exc:
            raise BatchError(f"{exc.message} (after {exc.attempts} attempt(s)); everything so "
                             "far is saved in batch/state.json: run the same command again to "
                             "go on") from None

    async def submit(self, entry: dict[str, Any]) -> None:
        """Upload and create one file's batch; each id is saved the moment it exists."""
        if entry["batch_id"]:
            return
        if not entry["input_file_id"]:
            path = self.folder / entry["name"]
            uploaded = await self._api(f"uploading {entry['name']}", lambda: self.client.files.create(
                file=(entry["name"], path.read_bytes()), purpose="batch"))
            entry.update(input_file_id=uploaded.id, status="uploaded")
            self.save()
        metadata = {"ubench_run": self.state["run_token"], "ubench_file": entry["name"]}
        found = await self._find(metadata)
        if found is None:
            found = await self._api(f"creating the batch of {entry['name']}",
                                    lambda: self.client.batches.create(
                                        input_file_id=entry["input_file_id"], endpoint=ENDPOINT,
                                        completion_window="24h", metadata=metadata))
        entry.update(batch_id=found.id, status=found.status)
        self.save()
        log.info("batch %s submitted as %s", entry["name"], found.id)

    async def _find(self, metadata: dict[str, str]) -> Any:
        """A batch this run created but did not get to save (newest first, back to the run's
        start)."""
        async def search() -> Any:
            async for batch in self.client.batches.list(limit=100):
                if (batch.metadata or {}) == metadata:
                    return batch
                if batch.created_at and batch.created_at < self.state["created"] - 3600:
                    return None
            return None
        return await self._api("listing batches", search)

    async def poll(self) -> None:
        """Retrieve every unfinished batch until all are finished, showing progress."""
        while True:
            waiting = [e for e in self.state["files"] if e["batch_id"] and
                       e["status"] not in TERMINAL]
            if not waiting:
                return
            for entry in waiting:
                batch = await self._api(f"retrieving batch {entry['batch_id']}",
                                        lambda: self.client.batches.retrieve(entry["batch_id"]))
                counts = batch.request_counts
                entry.update(status=batch.status, output_file_id=batch.output_file_id,
                             error_file_id=batch.error_file_id,
                             request_counts=counts.model_dump() if counts else None)
                self.save()
                self._show(entry)
            if any(e["status"] not in TERMINAL for e in waiting):
                await asyncio.sleep(self.options.poll_s)

    def _show(self, entry: dict[str, Any]) -> None:
        counts = entry["request_counts"] or {}
        line = (f"batch {entry['name']} ({entry['batch_id']}): {entry['status']}, "
                f"{counts.get('completed', 0)}/{counts.get('total', entry['requests'])} done, "
                f"{counts.get('failed', 0)} failed")
        if self._shown.get(entry["name"]) != line:
            self._shown[entry["name"]] = line
            log.info(line)
            if self.options.progress:
                print(line, file=sys.stderr, flush=True)

    # -- results ------------------------------------------------------------------------------
    async def collect(self, entry: dict[str, Any], pending: Mapping[str, SampleRecord],
                      writer: SampleWriter, done: set[str]) -> None:
        """Join a finished batch's output and error lines to their pending records by custom_id."""
        sent = set(_custom_ids(self.folder / entry["name"]))
        joiner = ResultJoiner(sent, pending, writer, done, entry["batch_id"], entry["round"],
                              self.redact)
        for key in ("output_file_id", "error_file_id"):
            if entry[key]:
                await self._download(entry, key, joiner)
        failures = joiner.failures
        for custom_id in sent - joiner.answered - set(failures) - done:
            failures[custom_id] = f"batch {entry['batch_id']} {entry['status']} without answering it"
        failed = sorted(failures.keys() - joiner.answered - done)
        if entry["round"] >= ROUNDS:  # no more resubmissions: the failure is the record
            write_failures(failed, failures, pending, writer, entry["batch_id"], entry["round"])
        writer.sync()
        entry.update(collected=True, failed_ids=failed)
        self.save()

    async def _download(self, entry: dict[str, Any], key: str, joiner: "ResultJoiner") -> None:
        """Stream one results file into its copy in batch/ and the joiner, a line at a time,
        within the bounds of ResultLines (a retry starts the file over; joining is idempotent)."""
        file_id, kind = entry[key], key.removesuffix("_file_id")
        copy_path = self.folder / f"results-{entry['batch_id']}-{kind}.jsonl"
        name = f"batch {entry['batch_id']}'s {kind} file {file_id}"

        async def stream() -> None:
            lines = ResultLines(name, entry["requests"], self.options.max_line_bytes)
            async with self.client.files.with_streaming_response.content(file_id) as response:
                with open(copy_path, "wb") as copy:
                    async for chunk in self._chunks(response, f"downloading {file_id}"):
                        for n, line in lines.feed(chunk):
                            self._keep(copy, line)
                            joiner.add(line, n, file_id)
                    for n, line in lines.finish():
                        self._keep(copy, line)
                        joiner.add(line, n, file_id)

        await self._api(f"downloading {file_id}", stream)

    async def _chunks(self, response: Any, what: str) -> AsyncIterator[bytes]:
        """The body's chunks; the SDK's HTTP library (httpx, or its successor) raises its own
        transport errors while a body streams, unwrapped: they become retryable failures."""
        chunks = response.iter_bytes(DOWNLOAD_CHUNK).__aiter__()
        while True:
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                return
            except Exception as exc:  # only the network read is inside this try
                raise AdapterError("connection", self.redact(f"{what}: the download broke off "
                                                             f"({type(exc).__name__}: {exc})"),
                                   retryable=True) from None
            yield chunk

    def _keep(self, copy: BinaryIO, line: "bytes | OversizedLine") -> None:
        """A line's copy in batch/, redacted of an echoed key (a line over the limit is left
        out: its request's failure says why)."""
        if isinstance(line, OversizedLine):
            return
        text = line.decode("utf-8", "replace")
        clean = self.redact(text)
        copy.write((line if clean == text else clean.encode("utf-8")) + b"\n")

    def resubmission(self, round_: int) -> bool:
        """Whether there is a round `round_ + 1`: its files hold the lines round `round_` did not
        get answered (made once, from the request files already written)."""
        if round_ >= ROUNDS:
            return False
        if any(e["round"] == round_ + 1 for e in self.state["files"]):
            return True  # made by an earlier invocation
        retry = {i for e in self.state["files"] if e["round"] == round_ for i in e["failed_ids"]}
        if not retry:
            return False
        with RequestFiles(self.folder, self.options, self.state["files"], round_ + 1) as out:
            for entry in [e for e in self.state["files"] if e["round"] == round_]:
                with open(self.folder / entry["name"], "rb") as f:
                    for line in f:
                        if orjson.loads(line)["custom_id"] in retry:
                            out.write(line)
        self.save()
        log.info("resubmitting %d failed requests as a new batch", len(retry))
        return True


@dataclass(frozen=True)
class OversizedLine:
    """A result line longer than the limit, dropped as it streamed; `head` is its first bytes."""
    head: bytes

    def custom_id(self) -> str | None:
        """The custom_id the line opens with, if it does (OpenAI's and vLLM's lines do)."""
        found = _CUSTOM_ID.search(self.head)
        try:
            value = orjson.loads(found.group(1)) if found else None
        except orjson.JSONDecodeError:
            return None
        return value if isinstance(value, str) else None


class ResultLines:
    """A results file split into lines as its bytes arrive, bounded by what the batch can answer:
    a line longer than `line_cap` is not held (it comes out as an OversizedLine, a failure of its
    request), and a file with more than LINES_PER_REQUEST lines per request, or more bytes than
    that many lines of `line_cap`, stops with a BatchError naming it: neither memory, nor disk,
    nor the time spent reading grows past what the batch's requests can need."""

    def __init__(self, name: str, requests: int, line_cap: int):
        self.name, self.requests, self.line_cap = name, requests, line_cap
        self.max_lines = LINES_PER_REQUEST * requests
        self.max_bytes = self.max_lines * (line_cap + 1)
        self._line = bytearray()
        self._head: bytes | None = None  # set while the current line is over the cap
        self._lines = 0
        self._bytes = 0

    def feed(self, chunk: bytes) -> Iterator[tuple[int, "bytes | OversizedLine"]]:
        """The lines `chunk` completes, numbered from 1."""
        self._bytes += len(chunk)
        if self._bytes > self.max_bytes:
            raise BatchError(f"{self.name}: over {self.max_bytes} bytes, more than its "
                             f"{self.requests} request(s) can take ({LINES_PER_REQUEST} lines "
                             f"each, at most {self.line_cap} bytes a line: --max-response-bytes "
                             "and the line's fields); nothing more is read from it. What was "
                             "joined before is saved.")
        start = 0
        while True:
            newline = chunk.find(b"\n", start)
            self._add(chunk[start:] if newline < 0 else chunk[start:newline])
            if newline < 0:
                return
            yield self._end()
            start = newline + 1

    def finish(self) -> Iterator[tuple[int, "bytes | OversizedLine"]]:
        """The last line, when the file does not end with a newline."""
        if self._line or self._head is not None:
            yield self._end()

    def _add(self, piece: bytes) -> None:
        if self._head is not None:
            return  # the rest of a line over the cap: dropped as it comes
        self._line += piece
        if len(self._line) > self.line_cap:
            self._head = bytes(self._line[:_HEAD])
            self._line = bytearray()

    def _end(self) -> tuple[int, "bytes | OversizedLine"]:
        self._lines += 1
        if self._lines > self.max_lines:
            raise BatchError(f"{self.name}: more than {self.max_lines} lines for its "
                             f"{self.requests} request(s); nothing more is read from it. What "
                             "was joined before is saved.")
        line: bytes | OversizedLine
        if self._head is not None:
            line, self._head = OversizedLine(self._head), None
        else:
            line, self._line = bytes(self._line), bytearray()
        return self._lines, line


class ResultJoiner:
    """Joins results lines (`{custom_id, response, error}`, in any order) to their pending
    records by custom_id: a record for each answered line, a reason in `failures` for each failed
    one. Ids in `done`, or answered already, are skipped, so joining a file again adds nothing.
    Answers and failures pass through `redact` (the adapter's, as online answers do)."""

    def __init__(self, sent: set[str], pending: Mapping[str, SampleRecord],
                 writer: SampleWriter, done: set[str], batch_id: str, attempts: int,
                 redact: Callable[[str], str] = lambda s: s):
        self.sent, self.pending, self.writer, self.done = sent, pending, writer, done
        self.batch_id, self.attempts, self.redact = batch_id, attempts, redact
        self.answered: set[str] = set()
        self.failures: dict[str, str] = {}

    def add(self, line: "bytes | OversizedLine", n: int, name: str) -> None:
        """Join line `n` of results file `name`."""
        if isinstance(line, OversizedLine):
            custom_id: str | None = line.custom_id()
            outcome: Any = (f"result line {n} of {name} is over the limit of a line "
                            "(--max-response-bytes and the line's fields); not read")
            log.warning("%s line %d: over the limit of a line; dropped unread (its request: "
                        "%s)", name, n, custom_id or "not named")
        elif not line.strip():
            return
        else:
            custom_id, outcome = _read_result(line, n, name, self.redact)
        if custom_id not in self.sent:
            log.warning("%s line %d: custom_id %r is not a request of this run; ignored", name,
                        n, custom_id)
            return
        if isinstance(outcome, str):
            self.failures[custom_id] = outcome
            return
        if custom_id in self.done or custom_id in self.answered:
            return
        outcome.attempts = self.attempts
        record = answered(self.pending[custom_id], outcome)
        record.batch_id = self.batch_id
        self.writer.append(record)
        self.answered.add(custom_id)


def write_failures(failed: Iterable[str], failures: dict[str, str],
                   pending: Mapping[str, SampleRecord], writer: SampleWriter, batch_id: str,
                   attempts: int) -> None:
    """Error records for requests that will not be tried again in a batch."""
    for custom_id in failed:
        record = pending[custom_id]
        record.error = ErrorInfo("batch", f"item {custom_id}: {failures[custom_id]}",
                                 attempts=attempts)
        record.batch_id = batch_id
        writer.append(record)
        log.warning("failed %s in batch: %s", custom_id, failures[custom_id])


def _custom_ids(path: Path) -> Iterable[str]:
    with open(path, "rb") as f:
        for line in f:
            yield orjson.loads(line)["custom_id"]


def _read_result(line: bytes, n: int, file_id: str,
                 redact: Callable[[str], str]) -> tuple[str | None, Any]:
    """(custom_id, ChatResponse) for an answered line, (custom_id, reason) for a failed one."""
    try:
        row = orjson.loads(line)
        custom_id = row["custom_id"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        custom_id = None
    if not isinstance(custom_id, str):
        log.warning("%s line %d: not a batch result line; ignored", file_id, n)
        return None, "unreadable result line"
    response = row.get("response") or {}
    error = row.get("error")
    status = response.get("status_code") if isinstance(response, dict) else None
    if error or status != 200:
        detail = error or (response.get("body") if isinstance(response, dict) else None)
        return custom_id, f"HTTP {status}: {redact(str(detail))[:300]}"
    try:
        reply = chat_response(response.get("body"), redact(line.decode("utf-8", "replace"))[:200])
    except AdapterError as exc:
        return custom_id, redact(exc.message)
    text = redact(reply.text)
    reply.text, reply.redacted = text, text != reply.text  # as OpenAICompatAdapter.complete
    reply.latency_s = None  # a batch has no per-request latency
    return custom_id, reply


class PendingRecords(Mapping):
    """pending.jsonl by custom_id, read one record at a time: a full run's ~96k records with
    their prompts would take hundreds of MB as dicts; their offsets take a few MB."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._offsets: dict[str, int] = {}
        offset = 0
        with open(self.path, "rb") as f:
            for line in f:
                if line.endswith(b"\n"):  # a torn last line was never submitted
                    try:
                        self._offsets[orjson.loads(line)["item_id"]] = offset
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        log.warning("%s: unreadable line at byte %d skipped", self.path, offset)
                offset += len(line)
        self._file = open(self.path, "rb")

    def __getitem__(self, custom_id: str) -> SampleRecord:
        self._file.seek(self._offsets[custom_id])
        try:
            return SampleRecord.from_json(orjson.loads(self._file.readline()),
                                          f"{self.path} ({custom_id})", pending=True)
        except SamplesError as exc:
            raise BatchError(str(exc)) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._offsets)

    def __len__(self) -> int:
        return len(self._offsets)

    def close(self) -> None:
        """Close the pending-records file."""
        self._file.close()


def pending_records(out: Path) -> PendingRecords:
    """The requests submitted but not yet answered in a run folder's batch state."""
    return PendingRecords(Path(out) / BATCH_DIR / PENDING)


async def run_batches(out: Path, client: Any, options: BatchOptions,
                      requests: Iterable[tuple[SampleRecord, ChatRequest | None]],
                      body: Callable[[ChatRequest], bytes], writer: SampleWriter,
                      redact: Callable[[str], str] = lambda s: s,
                      policy: RetryPolicy | None = None, submit: bool = True) -> list[Path]:
    """The whole batch workflow for one run folder; re-running it picks up where it stopped.
    With `submit` false, only the request files are written; their paths are returned."""
    run = BatchRun(out, client, options, redact, policy)
    run.load()
    done = answered_ids(writer.path)
    run.prepare(requests, body, writer)
    files = [run.folder / e["name"] for e in run.state["files"] if e["round"] == 1]
    if not submit:
        return files
    pending = pending_records(out)
    try:
        for round_ in range(1, ROUNDS + 1):
            entries = [e for e in run.state["files"] if e["round"] == round_]
            for entry in entries:
                await run.submit(entry)
            await run.poll()
            for entry in entries:
                if not entry["collected"]:
                    await run.collect(entry, pending, writer, done)
            if not run.resubmission(round_):
                break
    finally:
        pending.close()
    return files
