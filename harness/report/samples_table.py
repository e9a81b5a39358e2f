"""samples.parquet's table: its columns from the keys of the run's lines, its rows from records.

A run makes most of the table while it writes samples.jsonl (`TableSpool`): every SPOOL_RECORDS
records are converted to Arrow in a worker thread, with the columns their lines have, and appended
to a spool file in the run folder. At the end `latest_batches` gives them the final columns (a
column's type depends on its name only, so a batch differs only by the columns none of its lines
had: nulls there), drops the records a later one superseded, and reads from samples.jsonl only
the lines the spool does not hold (an earlier invocation's, on a resume) and those the report's
browser shows. `ubench report` reads every latest line instead; both give the same table, in row
groups of PARQUET_BATCH rows.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import orjson
import pyarrow as pa

from harness.report.schema import ErrorInfo, SampleRecord, record_field_types
from harness.score.parsing import INVALID_PREFIX

PARQUET_BATCH = 4096  # records per samples.parquet row group
SPOOL_RECORDS = 1024  # records per spooled batch: what is left at the end is converted then
SPOOL = ".samples-table.spool"  # made in the run folder and unlinked at once: held open only

log = logging.getLogger("ubench")


def outcome(record: SampleRecord) -> str:
    """correct / wrong / invalid (the robust parser found no answer) / error (request failed)."""
    if record.error is not None:
        return "error"
    if str(record.rule).startswith(INVALID_PREFIX):
        return "invalid"
    return "correct" if record.correct else "wrong"


def parquet_schema(keys: Iterable[str]) -> pa.Schema:
    """samples.parquet's columns: the fields of SampleRecord among the run's `keys`, each with the
    type the record declares (strings, true/false, integers, numbers; nested fields such as prompt,
    options, usage, error as JSON text), so that runs' tables agree; then the keys outside the
    schema (JSON text) and `outcome`."""
    def arrow_type(allowed: frozenset[type]) -> pa.DataType:
        allowed = allowed - {type(None)}
        if allowed == {bool}:
            return pa.bool_()
        if allowed == {int}:
            return pa.int64()
        if allowed == {int, float}:
            return pa.float64()
        return pa.string()
    keys = dict.fromkeys(keys)
    known = record_field_types()
    return pa.schema([(k, arrow_type(v)) for k, v in known.items() if k in keys]
                     + [(k, pa.string()) for k in keys if k not in known and k != "outcome"]
                     + [("outcome", pa.string())])


def samples_batch(records: list[SampleRecord], schema: pa.Schema) -> pa.RecordBatch:
    """The records as one Arrow batch of `schema`, built a column at a time."""
    def as_text(v: Any) -> str | None:
        if isinstance(v, ErrorInfo):
            v = v.to_json()
        return v if v is None or isinstance(v, str) else \
            orjson.dumps(v, option=orjson.OPT_NON_STR_KEYS).decode()
    known = record_field_types()
    columns = []
    for f in schema:
        if f.name == "outcome":
            values: list[Any] = [outcome(r) for r in records]
        elif f.name in known:
            values = [getattr(r, f.name) for r in records]
        else:
            values = [r.extra.get(f.name) if r.extra else None for r in records]
        if f.type == pa.string():
            values = [as_text(v) for v in values]
        columns.append(pa.array(values, f.type))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


class TableSpool:
    """samples.parquet's batches made during the run from the records it writes, in write order
    (line numbers counted from the first line this run wrote). The spool file is unlinked as soon
    as it is made and read back through the open file, so a killed run leaves nothing behind."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file = open(self.path, "w+b")
        self.path.unlink()
        # (first line, rows, offset, length) of each spooled Arrow IPC stream
        self.chunks: list[tuple[int, int, int, int]] = []
        self.broken = False  # a batch failed to convert: the end reads samples.jsonl instead
        self._records: list[SampleRecord] = []
        self._keys: dict[str, None] = {}
        self._next_line = 1
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ubench-table")
        self._futures: list[Future] = []

    def add(self, record: SampleRecord, line: dict[str, Any]) -> None:
        """The record of the next line (`line`, as read back)."""
        self._records.append(record)
        if not line.keys() <= self._keys.keys():
            self._keys.update(dict.fromkeys(line))
        if len(self._records) >= SPOOL_RECORDS:
            self._submit()

    def _submit(self) -> None:
        records, keys, first = self._records, self._keys, self._next_line
        self._records, self._keys, self._next_line = [], {}, first + len(records)
        self._futures.append(self._pool.submit(self._spool, records, keys, first))

    def _spool(self, records: list[SampleRecord], keys: dict[str, None], first: int) -> None:
        if self.broken:
            return
        try:
            batch = samples_batch(records, parquet_schema(keys))
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, batch.schema) as stream:
                stream.write_batch(batch)
            data = sink.getvalue()
            offset = self._file.tell()
            self._file.write(data)
        except Exception as exc:  # the table is then made from samples.jsonl, as `report` does
            log.warning("samples.parquet will be made from samples.jsonl at the end: %s", exc)
            self.broken = True
            return
        self.chunks.append((first, batch.num_rows, offset, len(data)))

    def finish(self) -> None:
        """Convert what is left and wait for the worker."""
        if self._records:
            self._submit()
        for future in self._futures:
            future.result()
        self._pool.shutdown()
        self._file.flush()

    def discard(self) -> None:
        """Stop and close the spool (the run is over, or failed): its space is freed."""
        self._pool.shutdown(cancel_futures=True)
        self._file.close()

    def batches(self, schema: pa.Schema, line_offset: int,
                lines: set[int]) -> Iterator[pa.RecordBatch]:
        """Each spooled batch with the columns of `schema`, only the rows at `lines` kept (lines
        numbered in the file: `line_offset` lines precede this run's)."""
        for first, rows, offset, length in self.chunks:
            data = os.pread(self._file.fileno(), length, offset)
            batch = conform(pa.ipc.open_stream(data).read_next_batch(), schema)
            keep = [line_offset + first + i in lines for i in range(rows)]
            yield batch if all(keep) else batch.filter(pa.array(keep))


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """`batch` with the columns of `schema`, those none of its lines had as nulls."""
    columns = [batch.column(field.name) if field.name in batch.schema.names
               else pa.nulls(batch.num_rows, field.type) for field in schema]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def latest_batches(path: Path, keys: Iterable[str], lines: set[int], wanted: set[int],
                   seen: Callable[[SampleRecord], None], spool: TableSpool | None = None,
                   line_offset: int = 0) -> Iterator[pa.RecordBatch]:
    """The rows of samples.parquet, in batches of PARQUET_BATCH rows: the latest records (at
    `lines` of the samples.jsonl at `path`, in file order). `seen` gets each whole latest record
    read; those at `wanted` lines are always read. With a `spool`, the lines after `line_offset`
    come from it."""
    schema = parquet_schema(keys)
    until = line_offset + 1 if spool is not None else None  # lines from here on are spooled
    rows = _Rebatch(PARQUET_BATCH)
    records: list[SampleRecord] = []
    with open(path, "rb") as f:  # only the chosen lines are parsed (pass 1 checked them)
        for lineno, line in enumerate(f, 1):
            spooled = until is not None and lineno >= until
            if lineno not in (wanted if spooled else lines):
                continue
            record = SampleRecord.from_json(orjson.loads(line), f"{path}:{lineno}")
            seen(record)
            if not spooled:
                records.append(record)
                if len(records) >= PARQUET_BATCH:
                    yield from rows.add(samples_batch(records, schema))
                    records = []
    if records:
        yield from rows.add(samples_batch(records, schema))
    if spool is not None:
        for batch in spool.batches(schema, line_offset, lines):
            yield from rows.add(batch)
    yield from rows.rest()


class _Rebatch:
    """Batches of any sizes in, batches of exactly `size` rows out (the last one shorter)."""

    def __init__(self, size: int):
        self.size = size
        self.held: list[pa.RecordBatch] = []
        self.count = 0

    def add(self, batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
        self.held.append(batch)
        self.count += batch.num_rows
        while self.count >= self.size:
            table = pa.Table.from_batches(self.held)
            yield from table.slice(0, self.size).combine_chunks().to_batches()
            rest = table.slice(self.size)
            self.held, self.count = rest.combine_chunks().to_batches(), rest.num_rows

    def rest(self) -> Iterator[pa.RecordBatch]:
        if self.count:
            yield from pa.Table.from_batches(self.held).combine_chunks().to_batches()
            self.held, self.count = [], 0
