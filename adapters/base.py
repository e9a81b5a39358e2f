"""The one small async interface every model backend implements.

An adapter makes exactly one attempt per call and *classifies* its failures (`AdapterError.retryable`);
retrying lives in one place, `harness.run.retry`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings sent with every request of a run (recorded in the manifest)."""
    temperature: float = 0.0
    max_tokens: int = 1024
    top_p: float | None = None
    seed: int | None = None
    answer_mode: str = "free"  # free | choice | logprobs (adapters.answer_modes)
    top_logprobs: int | None = None  # logprobs mode only

    def as_dict(self) -> dict[str, Any]:
        """The request's parameters; a free-mode request is keyed and recorded as it always was."""
        out: dict[str, Any] = {"temperature": self.temperature, "max_tokens": self.max_tokens,
                               "top_p": self.top_p, "seed": self.seed}
        if self.answer_mode != "free":
            out["answer_mode"] = self.answer_mode
            out["top_logprobs"] = self.top_logprobs
        return out


@dataclass
class ChatRequest:
    """Provider-neutral messages (image parts are `{"type": "image"}`) plus the one image."""

    item_id: str
    messages: list[dict[str, Any]]
    image_data_url: str | None
    params: GenerationParams
    option_letters: str = ""
    image_url_sha256: str | None = None  # of `image_data_url`, when known (see harness.run.cache)
    # Few-shot: image parts `{"type": "image", "image_id": ID}` show another image, by ID.
    example_images: dict[str, ExampleImage] | None = None
    image_size: tuple[int, int] | None = None  # (width, height) as sent, from the image's encoder


@dataclass(frozen=True)
class ExampleImage:
    """A few-shot example's image, encoded once and shared by every request that shows it."""

    data_url: str
    url_sha256: str
    size: tuple[int, int]  # (width, height) as sent


@dataclass
class ChatResponse:
    """One model reply as every adapter returns it, so the runner never sees a provider's format."""
    text: str
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None  # the server's `usage` object, untouched
    latency_s: float | None = 0.0  # None: no per-request latency (a batch reply)
    attempts: int = 1
    meta: dict[str, Any] = field(default_factory=dict)
    redacted: bool = False  # the API key (or credentials) in the answer were replaced by a marker
    logprobs: list[dict[str, Any]] | None = None  # choices[0].logprobs.content, when asked for


class AdapterError(Exception):
    """A failed attempt, typed so the retry policy can decide without knowing the provider."""

    def __init__(self, kind: str, message: str, *, retryable: bool, status: int | None = None,
                 retry_after: float | None = None, reason: str | None = None,
                 fatal: bool = False):
        super().__init__(message)
        # rate_limit | server | connection | timeout | bad_response | too_large | auth | client | config
        self.kind = kind
        self.message = message
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        self.reason = reason  # what exactly was wrong, e.g. a bad_response's `null_content`
        self.fatal = fatal  # no point going on with the run (a rejected key, nothing listening)
        self.attempts = 1


class Adapter(ABC):
    """A model backend: `complete` one request, `describe` itself for the manifest (no secrets)."""

    spec: str

    @abstractmethod
    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Answer one request; failures are raised as AdapterError, classified for retry."""

    def describe(self) -> dict[str, Any]:
        """What produced the answers, for the manifest; never the API key."""
        return {"spec": self.spec}

    def cache_identity(self) -> dict[str, Any] | None:
        """What, besides the request, decides the answer; None when caching makes no sense."""
        return None

    async def aclose(self) -> None:
        """Release connections; the runner calls it once at the end of a run."""
        return None

    def __repr__(self) -> str:  # never leak configuration such as keys through a repr
        return f"{type(self).__name__}({self.spec!r})"


class WrappedAdapter(Adapter):
    """An adapter around another that changes how requests are sent (the cache, pacing,
    concurrency), never what answers: it describes itself, keys the cache and closes as the
    wrapped adapter does."""

    def __init__(self, inner: Adapter):
        self.inner = inner
        self.spec = inner.spec

    def describe(self) -> dict[str, Any]:
        """The wrapped adapter's description."""
        return self.inner.describe()

    def cache_identity(self) -> dict[str, Any] | None:
        """The wrapped adapter's identity."""
        return self.inner.cache_identity()

    async def aclose(self) -> None:
        """Close the wrapped adapter."""
        await self.inner.aclose()
