"""What counts as an answer in a chat-completions reply, checked before it is cached or parsed.

Servers that claim OpenAI compatibility send content as a string, as a list of parts, as `null`
(with or without a `refusal`), or send no choices at all; only a string, or the text parts of a
list, is an answer. Anything else is a failed attempt of kind `bad_response` with a `reason`,
retried like a server fault and never cached.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

MAX_RESPONSE_BYTES = 8 * 1024 * 1024  # a reply body larger than this is an error (OpenAI's: < 1 MB)


class ReplyError(ValueError):
    """The reply is not a usable chat completion; `reason` names what is wrong with it."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Reply:
    """The parts of a chat completion the harness reads, after the reply was checked field by field."""
    text: str
    finish_reason: str | None
    usage: dict[str, Any] | None
    logprobs: Any = None  # choices[0].logprobs.content as sent; checked where it is read


def parse_reply(raw: bytes) -> Reply:
    """The answer text, finish reason and token usage of a chat completion body."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ReplyError("not_json", "the body is not JSON") from None
    return reply_of(body)


def reply_of(body: Any) -> Reply:
    """`parse_reply` for a body already decoded (a line of a batch's output)."""
    if not isinstance(body, dict) or "choices" not in body:
        raise ReplyError("not_a_completion", "the body is not a chat completion (no 'choices')")
    choices = body["choices"]
    if not isinstance(choices, list) or not choices:
        raise ReplyError("no_choices", "the completion has no choices")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise ReplyError("no_message", "choices[0] has no 'message' object")
    finish = choice.get("finish_reason")
    logprobs = choice.get("logprobs")  # read by adapters.answer_modes, which checks it
    return Reply(content_text(message), finish if isinstance(finish, str) else None,
                 _usage(body.get("usage")),
                 logprobs.get("content") if isinstance(logprobs, dict) else None)


def content_text(message: dict[str, Any]) -> str:
    """`content` as a string, or its text parts joined; a refusal stands in for null content."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [part.get("text") for part in content
                 if isinstance(part, dict) and part.get("type") in ("text", "output_text")]
        strings = [t for t in texts if isinstance(t, str)]
        if texts and len(strings) == len(texts):
            return "".join(strings)
        raise ReplyError("bad_content", "message.content is a list without text parts")
    if content is None:
        refusal = message.get("refusal")
        if isinstance(refusal, str) and refusal:
            return refusal
        raise ReplyError("null_content", "message.content is null (and no refusal)")
    raise ReplyError("bad_content", f"message.content is a {type(content).__name__}, not text")


def _usage(usage: Any) -> dict[str, Any] | None:
    """`usage` as the server sent it (token details included); sums read only its integers."""
    return usage if isinstance(usage, dict) else None


def valid_cached(entry: Any) -> bool:
    """Whether a cached answer has the shape the adapter stores; anything else is asked again."""
    return (isinstance(entry, dict) and isinstance(entry.get("text"), str)
            and isinstance(entry.get("finish_reason"), (str, type(None)))
            and isinstance(entry.get("usage"), (dict, type(None)))
            and isinstance(entry.get("latency_s"), (int, float)))
