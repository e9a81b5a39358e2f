"""The answer half of a per-sample record, shared by online and batch runs (one records format)."""
from __future__ import annotations

from typing import Any

from harness.adapters import ChatResponse
from harness.score.parsing import Extraction, parse_answer
from harness.score.scoring import official_correct


def answered(record: dict[str, Any], response: ChatResponse,
             extraction: Extraction | None = None) -> dict[str, Any]:
    """Fill `record` (made by runner.base_record) with the response, its reading (`extraction`,
    when already parsed) and its usage."""
    options, gold = record["options"], record["gold"]
    if extraction is None:
        extraction = parse_answer(response.text, options)
    record.update({
        "response": response.text,
        "finish_reason": response.finish_reason,
        "extracted": extraction.letter,
        "rule": extraction.rule,
        "correct": extraction.letter == gold,
        "correct_official": official_correct(response.text, gold, options[gold]),
        "usage": response.usage,
        "latency_s": None if response.latency_s is None else round(response.latency_s, 4),
        "attempts": 0 if response.meta.get("cache") == "hit" else response.attempts,
        "cached": response.meta.get("cache") == "hit",
        "request_sha256": response.meta.get("cache_key"),
    })
    if response.redacted:  # the raw response, but for the secret the server echoed
        record["redacted"] = True
    return record
