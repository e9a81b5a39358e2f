"""OpenAI chat-completions backend (OpenAI itself, vLLM, or any compatible server).

Uses the official async SDK with its own retries switched off (`harness.retry` is the one policy)
and, when `aiohttp` is importable, the SDK's aiohttp transport, which costs far less CPU per call.
"""
from __future__ import annotations

import time
from typing import Any

import openai

from .base import Adapter, AdapterError, ChatRequest, ChatResponse

NON_RETRYABLE_STATUS = {400, 401, 403, 404, 422}


class OpenAICompatAdapter(Adapter):
    def __init__(self, spec: str, model: str, *, base_url: str | None, api_key: str | None,
                 timeout: float = 120.0, image_detail: str | None = "high",
                 concurrency: int = 32):
        self.spec = spec
        self.model = model
        self.base_url = base_url
        self.image_detail = image_detail
        self.timeout = timeout
        self._secret = api_key
        self._client = openai.AsyncOpenAI(
            api_key=api_key or "EMPTY",
            base_url=base_url,
            timeout=timeout,
            max_retries=0,
            http_client=_http_client(concurrency),
        )

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "model": self.model, "base_url": str(self._client.base_url),
                "image_detail": self.image_detail, "timeout_s": self.timeout,
                "openai_sdk": openai.__version__}

    def cache_identity(self) -> dict[str, Any]:
        return {"spec": self.spec, "base_url": str(self._client.base_url)}

    def redact(self, text: str) -> str:
        """Servers may echo the key in an error message; it never leaves the adapter."""
        return text.replace(self._secret, "***") if self._secret else text

    def wire_messages(self, request: ChatRequest) -> list[dict[str, Any]]:
        """Provider-neutral messages → OpenAI content parts with the image as a data URL."""
        out = []
        for msg in request.messages:
            parts = []
            for part in msg["content"]:
                if part["type"] == "image":
                    image_url: dict[str, Any] = {"url": request.image_data_url}
                    if self.image_detail:
                        image_url["detail"] = self.image_detail
                    parts.append({"type": "image_url", "image_url": image_url})
                else:
                    parts.append(part)
            out.append({"role": msg["role"], "content": parts})
        return out

    async def complete(self, request: ChatRequest) -> ChatResponse:
        try:
            return await self._complete(request)
        except AdapterError as exc:
            exc.message = self.redact(exc.message)
            exc.args = (exc.message,)
            raise

    async def _complete(self, request: ChatRequest) -> ChatResponse:
        p = request.params
        kwargs: dict[str, Any] = {"temperature": p.temperature, "max_tokens": p.max_tokens}
        if p.top_p is not None:
            kwargs["top_p"] = p.top_p
        if p.seed is not None:
            kwargs["seed"] = p.seed
        start = time.perf_counter()
        try:
            result = await self._client.chat.completions.create(
                model=self.model, messages=self.wire_messages(request), **kwargs)
        except openai.APIStatusError as exc:
            raise _status_error(exc) from None
        except openai.APITimeoutError:
            raise AdapterError("timeout", f"no response within {self.timeout:g} s",
                               retryable=True) from None
        except openai.APIConnectionError as exc:
            raise AdapterError("connection", f"connection failed: {_cause(exc)}",
                               retryable=True) from None
        except (openai.APIResponseValidationError, ValueError) as exc:
            raise AdapterError("bad_response", f"unparseable response body: {exc}",
                               retryable=True) from None
        latency = time.perf_counter() - start
        choices = getattr(result, "choices", None)
        if not choices:
            raise AdapterError("bad_response", f"response has no choices: {str(result)[:200]!r}",
                               retryable=True)
        choice = choices[0]
        usage = getattr(result, "usage", None)
        return ChatResponse(
            text=choice.message.content or "",
            finish_reason=choice.finish_reason,
            usage=None if usage is None else {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
            },
            latency_s=latency,
        )

    async def aclose(self) -> None:
        await self._client.close()


def _http_client(concurrency: int):
    """The SDK's aiohttp transport with a pool sized to the concurrency, when available."""
    try:
        import aiohttp

        return openai.DefaultAioHttpClient(
            connector=aiohttp.TCPConnector(limit=max(concurrency, 1) + 4))
    except Exception:  # aiohttp missing or the SDK's extra unavailable: default transport
        return None


def _status_error(exc: openai.APIStatusError) -> AdapterError:
    status = exc.status_code
    message = _server_message(exc)
    if status == 429:
        return AdapterError("rate_limit", message, retryable=True, status=status,
                            retry_after=_retry_after(exc))
    if status >= 500:
        return AdapterError("server", message, retryable=True, status=status,
                            retry_after=_retry_after(exc))
    return AdapterError("client", message, retryable=status not in NON_RETRYABLE_STATUS,
                        status=status)


def _server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return f"HTTP {exc.status_code}: {err['message']}"
    return f"HTTP {exc.status_code}: {str(exc.message)[:300]}"


def _retry_after(exc: openai.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after") if exc.response is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _cause(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    return f"{type(cause).__name__}: {cause}" if cause else str(exc)
