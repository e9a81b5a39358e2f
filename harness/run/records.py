"""The answer half of a per-sample record, shared by online and batch runs (one records format)."""
from __future__ import annotations

from harness.adapters import ChatResponse
from harness.report.schema import SampleRecord
from harness.run.answering import read_answer
from harness.score.parsing import Extraction


def answered(record: SampleRecord, response: ChatResponse, extraction: Extraction | None = None,
             answer_mode: str = "free") -> SampleRecord:
    """Fill `record` (made by runner.base_record) with the response, its reading (`extraction`,
    when already parsed; as `answer_mode` asks, harness.run.answering) and its usage."""
    record.response = response.text
    record.finish_reason = response.finish_reason
    read_answer(record, response, answer_mode, extraction)
    record.usage = response.usage
    record.latency_s = None if response.latency_s is None else round(response.latency_s, 4)
    hit = response.meta.get("cache") == "hit"
    record.attempts = 0 if hit else response.attempts
    record.cached = hit
    record.request_sha256 = response.meta.get("cache_key")
    record.redacted = response.redacted  # the raw response, but for the secret the server echoed
    return record
