"""The answer half of a per-sample record, shared by online and batch runs (one records format)."""
from __future__ import annotations

from typing import Any

from harness.adapters import ChatResponse
from harness.run.answering import answer_fields
from harness.score.parsing import Extraction


def answered(record: dict[str, Any], response: ChatResponse, extraction: Extraction | None = None,
             answer_mode: str = "free") -> dict[str, Any]:
    """Fill `record` (made by runner.base_record) with the response, its reading (`extraction`,
    when already parsed; as `answer_mode` asks, harness.run.answering) and its usage."""
    record.update({
        "response": response.text,
        "finish_reason": response.finish_reason,
        **answer_fields(response, record, answer_mode, extraction),
        "usage": response.usage,
        "latency_s": None if response.latency_s is None else round(response.latency_s, 4),
        "attempts": 0 if response.meta.get("cache") == "hit" else response.attempts,
        "cached": response.meta.get("cache") == "hit",
        "request_sha256": response.meta.get("cache_key"),
    })
    if response.redacted:  # the raw response, but for the secret the server echoed
        record["redacted"] = True
    return record
