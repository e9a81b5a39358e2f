"""Input tokens of a request before it is sent: text by an offline tokenizer or a stated
approximation, images by the model's published rule (harness.score.pricing.image_tokens).

Used by `--dry-run` (harness.run.estimate) and by the rate and budget limits (harness.run.pacing).
"""
from __future__ import annotations

import base64
import math
from typing import Any, Callable

from harness.data.images import ImageError, image_size
from harness.score.pricing import image_tokens

# OpenAI's chat format adds a few tokens around each message and to prime the reply.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_REPLY = 3
DEFAULT_IMAGE_TOKENS = 765  # a GPT-4o high-detail image of up to 1024 px, when no rule is known


def text_counter(model: str) -> tuple[str, Callable[[str], int]]:
    """The most exact offline text-token counter available, and its name for the estimate."""
    try:
        import bpe_openai

        try:
            encoding = bpe_openai.encoding_for_model(model)
        except Exception:  # a model it does not know: GPT-4o's encoding is the closest
            encoding = bpe_openai.get_encoding("o200k_base")
        return (f"bpe-openai {getattr(encoding, 'name', 'o200k_base')} (exact for OpenAI models)",
                lambda text: len(encoding.encode(text)))
    except ImportError:
        return ("approximation: ceil(characters / 4) (pip install bpe-openai for OpenAI's "
                "exact tokenizer, offline)", lambda text: math.ceil(len(text) / 4))


def message_tokens(messages: list[dict[str, Any]], count: Callable[[str], int]) -> int:
    """Text tokens of provider-neutral chat messages (image parts not included)."""
    return TOKENS_PER_REPLY + sum(
        TOKENS_PER_MESSAGE + sum(count(p["text"]) for p in m["content"] if p["type"] == "text")
        for m in messages)


def data_url_size(data_url: str) -> tuple[int, int] | None:
    """An image's size from the header at the start of its data URL (nothing else decoded), for
    a reader of request bodies that has no encoder to ask (the test server); None if unreadable."""
    payload = data_url.split(",", 1)[-1]
    for chars in (8192, len(payload)):  # PNG and most JPEG headers are in the first bytes
        try:
            return image_size(base64.b64decode(payload[: chars - chars % 4]))
        except (ImageError, ValueError):
            continue
    return None


def request_image_tokens(size: tuple[int, int] | None, rule: dict[str, Any] | None,
                         detail: str | None) -> int:
    """Image tokens a provider charges for one image of `size` (width, height, as sent), by its
    rule; a default where there is no rule or the size is unknown."""
    if rule is None or size is None:
        return DEFAULT_IMAGE_TOKENS
    return image_tokens(rule, *size, detail)
