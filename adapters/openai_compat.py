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
import re
import time
import uuid
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from harness import config

from .answer_modes import request_fields
from .base import Adapter, AdapterError, ChatRequest, ChatResponse, ExampleImage
from .redact import redact_text, redact_url
from .reply import MAX_RESPONSE_BYTES, ReplyError, parse_reply, reply_of

OPENAI_BASE_URL = "https://api.openai.com/v1"
NON_RETRYABLE_STATUS = {400, 401, 403, 404, 413, 422}
AUTH_STATUS = {401, 403}
# A server that has never answered is taken as absent after this many failed connections, or this
# long unreachable, whichever comes first: the run stops instead of backing off for minutes.
UNREACHABLE_ATTEMPTS = 8
UNREACHABLE_BOUND_S = 10.0
_READ_CHUNK = 1 << 16
_IMAGE_SLOT = f"ubench-image-{uuid.uuid4().hex}"  # where the image's JSON string goes
# The slots in a serialized body: the evaluated image's, and `:N` for the Nth few-shot example's.
_SLOTS = re.compile(b'"' + re.escape(_IMAGE_SLOT.encode()) + rb'(?::(\d+))?"')


@lru_cache(maxsize=16)
def _json_string(text: str) -> bytes:
    """A string as JSON, once per image: its questions share one string object, so the lookup
    costs no rehash, and they are in flight together, so a few entries suffice."""
    return orjson.dumps(text)


class OpenAICompatAdapter(Adapter):
    """Any OpenAI-compatible chat endpoint (vLLM, hosted APIs, the test server), over aiohttp."""
    def __init__(self, spec: str, model: str, *, base_url: str | None, api_key: str | None,
                 timeout: float = config.TIMEOUT_S, image_detail: str | None = "high",
                 concurrency: int = config.CONCURRENCY, query: str = "", auth: str = "bearer",
                 reasoning: bool = False, reasoning_effort: str | None = None,
                 extra_body: dict[str, Any] | None = None, key_env: str | None = None,
                 max_response_bytes: int = MAX_RESPONSE_BYTES):
        self.spec = spec
        self.provider = spec.partition("/")[0]  # openai | vllm: how answer modes are asked
        self.model = model
        self.base_url = (base_url or OPENAI_BASE_URL).rstrip("/")
        self.image_detail = image_detail
        self.timeout = timeout
        self.reasoning = reasoning  # max_completion_tokens, no sampling parameters
        self.reasoning_effort = reasoning_effort
        self.extra_body = extra_body or {}
        self._secret = api_key
        if api_key and "@" in urlsplit(self.base_url).netloc:
            raise ValueError(f"--base-url {redact_url(self.base_url)} carries credentials and an "
                             f"API key is set (${key_env}); use one of them")
        self.key_env = key_env  # named (never the key itself) when the server rejects the key
        self.max_response_bytes = max_response_bytes
        self._answered_once = False  # any HTTP reply at all: the server exists
        self._unreachable_since: float | None = None
        self._unreachable_attempts = 0
        self._endpoint = f"{self.base_url}/chat/completions" + (f"?{query}" if query else "")
        self._headers = {"Content-Type": "application/json"}
        if api_key and auth == "api-key":  # Azure OpenAI
            self._headers["api-key"] = api_key
        elif api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._pool_size = max(concurrency, 1) + 4
        self._session: aiohttp.ClientSession | None = None
        self._example_strings: dict[str, bytes] = {}  # example image's url sha256 → its JSON

    def describe(self) -> dict[str, Any]:
        """Endpoint and request options for the manifest, the URL's credentials redacted."""
        described = {"spec": self.spec, "model": self.model, "base_url": redact_url(self.base_url),
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
        """What makes a cached answer reusable: the endpoint and every request option."""
        return {"spec": self.spec, "base_url": f"{redact_url(self.base_url)}/",  # as the SDK had it
                **self._request_options()}

    def redact(self, text: str) -> str:
        """Servers may echo the key or an auth header, in errors or answers; they never leave the
        adapter. Always applied to whole texts, before any truncation."""
        return redact_text(text, self._secret)[0]

    def wire_messages(self, messages: list[dict[str, Any]], image_url: str | None,
                      example_urls: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Provider-neutral messages → OpenAI content parts with the image as a URL (a few-shot
        example's image part names its image, whose URL is in `example_urls`)."""
        out = []
        for msg in messages:
            parts = []
            for part in msg["content"]:
                if part["type"] == "image":
                    url = (example_urls or {})[part["image_id"]] if "image_id" in part \
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
        """The JSON body. Each image's JSON string is made once per image and spliced in: an
        image has ~6 questions, and serializing its ~300 KB string again for each one was the
        largest CPU cost of a request after the kernel's; a few-shot example's image is shown
        with many items, and its string is made once for all of them."""
        p = request.params
        url = request.image_data_url
        examples = request.example_images or {}
        slots = {image_id: f"{_IMAGE_SLOT}:{i}" for i, image_id in enumerate(examples)}
        messages = self.wire_messages(request.messages, url and _IMAGE_SLOT, slots)
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
        if p.answer_mode != "free":
            body.update(request_fields(self.provider, p.answer_mode, request.option_letters,
                                       p.top_logprobs))
        body.update(self.extra_body)  # verbatim, last: the user's word wins
        encoded = orjson.dumps(body)
        if url is None and not examples:
            return encoded
        main = _json_string(url) if url is not None else b""  # no slot for an absent image
        strings = [main, *(self._example_json(e) for e in examples.values())]
        # one pass over the small body, copying each image's string once into the result
        return _SLOTS.sub(lambda m: strings[int(m.group(1)) + 1 if m.group(1) else 0], encoded)

    def _example_json(self, example: ExampleImage) -> bytes:
        """A few-shot example image's URL as JSON, made once per image for this adapter (a
        template's bank holds a few dozen images, each shown with many items)."""
        if example.url_sha256 not in self._example_strings:
            self._example_strings[example.url_sha256] = orjson.dumps(example.data_url)
        return self._example_strings[example.url_sha256]

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
        """One chat completion; the server's error text is redacted of the key before it is raised."""
        try:
            response = await self._complete(request)
        except AdapterError as exc:
            exc.message = self.redact(exc.message)
            exc.args = (exc.message,)
            raise
        response.text, response.redacted = redact_text(response.text, self._secret)
        return response

    async def _complete(self, request: ChatRequest) -> ChatResponse:
        body = self.request_body(request)
        start = time.perf_counter()
        try:
            async with self._client().post(self._endpoint, data=body) as resp:
                self._answered_once = True
                status, headers = resp.status, resp.headers
                raw = await self._read_bounded(resp)
        except asyncio.TimeoutError:  # also aiohttp's ServerTimeoutError
            raise AdapterError("timeout", f"no response within {self.timeout:g} s",
                               retryable=True) from None
        except aiohttp.ClientConnectorError as exc:
            raise self._unreachable(exc) from None
        except aiohttp.ClientError as exc:
            raise AdapterError("connection", f"connection failed: {type(exc).__name__}: {exc}",
                               retryable=True) from None
        latency = time.perf_counter() - start
        if status != 200:
            raise _status_error(status, headers, self.redact(raw.decode("utf-8", "replace")),
                                self.key_env)
        try:
            reply = parse_reply(raw)
        except ReplyError as exc:
            head = self.redact(raw.decode("utf-8", "replace"))[:200]
            raise AdapterError("bad_response", f"{exc} (body: {head!r})", retryable=True,
                               reason=exc.reason) from None
        response = ChatResponse(text=reply.text, finish_reason=reply.finish_reason,
                                usage=reply.usage, latency_s=latency, logprobs=reply.logprobs)
        limits = {k.lower()[12:]: v for k, v in headers.items()
                  if k.lower().startswith("x-ratelimit-")}
        if limits:  # for --max-rpm/--max-tpm pacing (harness.run.pacing)
            response.meta["ratelimit"] = limits
        return response

    async def _read_bounded(self, resp: aiohttp.ClientResponse) -> bytes:
        """The body, read a chunk at a time and cut at `max_response_bytes`: an endless or huge
        body is that request's error, never the whole process's memory."""
        limit = self.max_response_bytes
        if resp.content_length is not None:  # aiohttp reads no more than the announced length
            if resp.content_length > limit:
                raise _too_large(limit, f"announced {resp.content_length} bytes")
            return await resp.read()
        chunks, size = [], 0
        async for chunk in resp.content.iter_chunked(_READ_CHUNK):
            size += len(chunk)
            if size > limit:
                raise _too_large(limit, "cut off there")
            chunks.append(chunk)
        return b"".join(chunks)

    def _unreachable(self, exc: aiohttp.ClientConnectorError) -> AdapterError:
        """A connection that cannot be made. Retried, unless the server has never answered and
        UNREACHABLE_ATTEMPTS connections failed, or it has been unreachable for
        UNREACHABLE_BOUND_S: then nothing is listening there."""
        now = time.monotonic()
        if self._unreachable_since is None:
            self._unreachable_since = now
        self._unreachable_attempts += 1
        absent = not self._answered_once and (
            self._unreachable_attempts >= UNREACHABLE_ATTEMPTS
            or now - self._unreachable_since >= UNREACHABLE_BOUND_S)
        message = f"connection failed: {type(exc).__name__}: {exc}"
        if absent:
            message = (f"nothing answers at {redact_url(self.base_url)} "
                       f"({self._unreachable_attempts} connections failed over "
                       f"{now - self._unreachable_since:.1f} s, none ever answered: "
                       f"{exc.os_error}); start the server or check --base-url")
        return AdapterError("connection", message, retryable=not absent, fatal=absent)

    async def aclose(self) -> None:
        """Close the HTTP session, if one was opened."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def chat_response(result: Any, raw: bytes | str = b"") -> ChatResponse:
    """A decoded chat-completion object (a batch output line's body) as a ChatResponse, checked
    as a reply read from the wire is."""
    try:
        reply = reply_of(result)
    except ReplyError as exc:
        raise AdapterError("bad_response", f"{exc} (body: {raw[:200]!r})", retryable=True,
                           reason=exc.reason) from None
    return ChatResponse(text=reply.text, finish_reason=reply.finish_reason, usage=reply.usage,
                        logprobs=reply.logprobs)


def _too_large(limit: int, what: str) -> AdapterError:
    return AdapterError("too_large", f"response body larger than --max-response-bytes "
                        f"{limit} ({what})", retryable=True)


def _status_error(status: int, headers, raw: str, key_env: str | None) -> AdapterError:
    message = _server_message(status, raw)
    if status in AUTH_STATUS:
        where = f"the key in ${key_env}" if key_env else "the API key (--api-key-env)"
        return AdapterError("auth", f"{message} (check {where})", retryable=False,
                            status=status, fatal=True)
    if status == 429:
        return AdapterError("rate_limit", message, retryable=True, status=status,
                            retry_after=_retry_after(headers))
    if status >= 500:
        return AdapterError("server", message, retryable=True, status=status,
                            retry_after=_retry_after(headers))
    return AdapterError("client", message, retryable=status not in NON_RETRYABLE_STATUS,
                        status=status)


def _server_message(status: int, raw: str) -> str:
    """The server's own message from an error body (already redacted), at most 300 characters."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):  # OpenAI and vLLM: {"error": {...}}; FastAPI: {"detail": ...}
        err = body.get("error") or body.get("detail") or body
        if isinstance(err, dict) and err.get("message"):
            return f"HTTP {status}: {str(err['message'])[:300]}"
        if isinstance(err, str):
            return f"HTTP {status}: {err[:300]}"
    return f"HTTP {status}: {raw[:300]}"


def _retry_after(headers) -> float | None:
    from harness.run.retry import retry_after_seconds  # the retry policy reads the header

    return retry_after_seconds(headers.get("retry-after") if headers is not None else None)
