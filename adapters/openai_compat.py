"""OpenAI chat-completions backend (OpenAI itself, vLLM, or any compatible server).

Speaks the protocol directly: one aiohttp connection pool per endpoint, sized to the concurrency, and
orjson for the bodies. Measured against the project's test server (README, Performance), the openai
SDK costs ~5 ms of CPU per call here, with either of its transports (httpx or aiohttp); this client
costs a few tenths of a millisecond. The SDK's cost is its request/response models and its JSON
encoding of the ~200 KB image string for every question (~1 ms with `json`); here it is encoded
once per image.
Retrying lives in `harness.run.retry`; this module only classifies failures.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from functools import lru_cache
from typing import Any

import aiohttp
import orjson

from .base import Adapter, AdapterError, ChatRequest, ChatResponse

OPENAI_BASE_URL = "https://api.openai.com/v1"
NON_RETRYABLE_STATUS = {400, 401, 403, 404, 422}
_IMAGE_SLOT = f"ubench-image-{uuid.uuid4().hex}"  # where the image's JSON string goes
_IMAGE_SLOT_JSON = orjson.dumps(_IMAGE_SLOT)


@lru_cache(maxsize=16)
def _json_string(text: str) -> bytes:
    """A string as JSON, once per image: its questions share one string object, so the lookup
    costs no rehash, and they are in flight together, so a few entries suffice."""
    return orjson.dumps(text)


class OpenAICompatAdapter(Adapter):
    def __init__(self, spec: str, model: str, *, base_url: str | None, api_key: str | None,
                 timeout: float = 120.0, image_detail: str | None = "high",
                 concurrency: int = 32, query: str = "", auth: str = "bearer",
                 reasoning: bool = False, reasoning_effort: str | None = None,
                 extra_body: dict[str, Any] | None = None):
        self.spec = spec
        self.model = model
        self.base_url = (base_url or OPENAI_BASE_URL).rstrip("/")
        self.image_detail = image_detail
        self.timeout = timeout
        self.reasoning = reasoning  # max_completion_tokens, no sampling parameters
        self.reasoning_effort = reasoning_effort
        self.extra_body = extra_body or {}
        self._secret = api_key
        self._endpoint = f"{self.base_url}/chat/completions" + (f"?{query}" if query else "")
        self._headers = {"Content-Type": "application/json"}
        if api_key and auth == "api-key":  # Azure OpenAI
            self._headers["api-key"] = api_key
        elif api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._pool_size = max(concurrency, 1) + 4
        self._session: aiohttp.ClientSession | None = None

    def describe(self) -> dict[str, Any]:
        described = {"spec": self.spec, "model": self.model, "base_url": self.base_url,
                     "image_detail": self.image_detail, "timeout_s": self.timeout,
                     "transport": f"aiohttp {aiohttp.__version__}"}
        return {**described, **self._request_options()}

    def _request_options(self) -> dict[str, Any]:
        """What, besides the request, goes into the body (only when set: older runs' manifests
        and cache keys stay as they were)."""
        options: dict[str, Any] = {}
        if self.reasoning:
            options["reasoning_model"] = True
        if self.reasoning_effort:
            options["reasoning_effort"] = self.reasoning_effort
        if self.extra_body:
            options["extra_body"] = self.extra_body
        return options

    def cache_identity(self) -> dict[str, Any]:
        return {"spec": self.spec, "base_url": f"{self.base_url}/",  # as the SDK spelled it
                **self._request_options()}

    def redact(self, text: str) -> str:
        """Servers may echo the key in an error message; it never leaves the adapter."""
        return text.replace(self._secret, "***") if self._secret else text

    def wire_messages(self, messages: list[dict[str, Any]], image_url: str | None,
                      example_images: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Provider-neutral messages → OpenAI content parts with the image as a URL (a few-shot
        example's image part names its image, found in `example_images`)."""
        out = []
        for msg in messages:
            parts = []
            for part in msg["content"]:
                if part["type"] == "image":
                    url = example_images[part["image_id"]].data_url if "image_id" in part \
                        else image_url
                    image: dict[str, Any] = {"url": url}
                    if self.image_detail:
                        image["detail"] = self.image_detail
                    parts.append({"type": "image_url", "image_url": image})
                else:
                    parts.append(part)
            out.append({"role": msg["role"], "content": parts})
        return out

    def request_body(self, request: ChatRequest) -> bytes:
        """The JSON body. The image's JSON string is made once per image and spliced in: an
        image has ~6 questions, and serializing its ~300 KB string again for each one was the
        largest CPU cost of a request after the kernel's."""
        p = request.params
        url = request.image_data_url
        messages = self.wire_messages(request.messages, url and _IMAGE_SLOT,
                                      request.example_images)
        body: dict[str, Any] = {"model": self.model, "messages": messages,
                                "temperature": p.temperature, "max_tokens": p.max_tokens}
        if p.top_p is not None:
            body["top_p"] = p.top_p
        if p.seed is not None:
            body["seed"] = p.seed
        if self.reasoning:  # o-series, GPT-5: only the default sampling is accepted
            body["max_completion_tokens"] = body.pop("max_tokens")
            body.pop("temperature")
            body.pop("top_p", None)
        if self.reasoning_effort:
            body["reasoning_effort"] = self.reasoning_effort
        body.update(self.extra_body)  # verbatim, last: the user's word wins
        encoded = orjson.dumps(body)
        return encoded if url is None else encoded.replace(_IMAGE_SLOT_JSON, _json_string(url), 1)

    def files_client(self):
        """The openai SDK's client for the Files and Batches endpoints of the same server, with
        the same key, making one attempt per call (retries: harness.run.retry)."""
        import openai

        return openai.AsyncOpenAI(base_url=self.base_url, api_key=self._secret or "unused",
                                  max_retries=0, timeout=self.timeout)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:  # made inside the running event loop, as aiohttp requires
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool_size),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers=self._headers)
        return self._session

    async def complete(self, request: ChatRequest) -> ChatResponse:
        try:
            return await self._complete(request)
        except AdapterError as exc:
            exc.message = self.redact(exc.message)
            exc.args = (exc.message,)
            raise

    async def _complete(self, request: ChatRequest) -> ChatResponse:
        body = self.request_body(request)
        start = time.perf_counter()
        try:
            async with self._client().post(self._endpoint, data=body) as resp:
                raw = await resp.read()
                status, headers = resp.status, resp.headers
        except asyncio.TimeoutError:  # also aiohttp's ServerTimeoutError
            raise AdapterError("timeout", f"no response within {self.timeout:g} s",
                               retryable=True) from None
        except aiohttp.ClientError as exc:
            raise AdapterError("connection", f"connection failed: {type(exc).__name__}: {exc}",
                               retryable=True) from None
        latency = time.perf_counter() - start
        if status != 200:
            raise _status_error(status, headers, raw)
        try:
            result = orjson.loads(raw)
        except orjson.JSONDecodeError:
            result = None
        response = chat_response(result, raw)
        response.latency_s = latency
        limits = {k.lower()[12:]: v for k, v in headers.items()
                  if k.lower().startswith("x-ratelimit-")}
        if limits:  # for --max-rpm/--max-tpm pacing (harness.run.pacing)
            response.meta["ratelimit"] = limits
        return response

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def chat_response(result: Any, raw: bytes | str = b"") -> ChatResponse:
    """A chat-completion object (one reply, or one line of a batch's output) as a ChatResponse."""
    try:
        choice = result["choices"][0]
        text = choice["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        raise AdapterError("bad_response", f"unparseable response body: {raw[:200]!r}",
                           retryable=True) from None
    usage = result.get("usage")
    return ChatResponse(text=text, finish_reason=choice.get("finish_reason"),
                        usage=usage if isinstance(usage, dict) else None)  # as the server sent it


def _status_error(status: int, headers, raw: bytes) -> AdapterError:
    message = _server_message(status, raw)
    if status == 429:
        return AdapterError("rate_limit", message, retryable=True, status=status,
                            retry_after=_retry_after(headers))
    if status >= 500:
        return AdapterError("server", message, retryable=True, status=status,
                            retry_after=_retry_after(headers))
    return AdapterError("client", message, retryable=status not in NON_RETRYABLE_STATUS,
                        status=status)


def _server_message(status: int, raw: bytes) -> str:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):  # OpenAI and vLLM: {"error": {...}}; FastAPI: {"detail": ...}
        err = body.get("error") or body.get("detail") or body
        if isinstance(err, dict) and err.get("message"):
            return f"HTTP {status}: {err['message']}"
        if isinstance(err, str):
            return f"HTTP {status}: {err}"
    return f"HTTP {status}: {raw[:300].decode('utf-8', 'replace')}"


def _retry_after(headers) -> float | None:
    value = headers.get("retry-after") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
