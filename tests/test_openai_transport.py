"""The direct OpenAI-protocol client: what it sends, and how it classifies every kind of failure."""
from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading

import pytest
from aiohttp import web

from adapters import AdapterError, ChatRequest, GenerationParams
from adapters.openai_compat import OpenAICompatAdapter
from harness.testserver import TestServer

IMAGE = "data:image/png;base64," + base64.b64encode(bytes(range(256)) * 40).decode()
MESSAGES = [{"role": "user", "content": [
    {"type": "image"}, {"type": "text", "text": "Question:Which \u2013 one?\nA) x\nB) y"}]}]


def request(image: str | None = IMAGE, **params) -> ChatRequest:
    return ChatRequest("img:domain", MESSAGES, image, GenerationParams(**params), "AB")


def complete(adapter: OpenAICompatAdapter, req: ChatRequest):
    async def go():
        try:
            return await adapter.complete(req)
        finally:
            await adapter.aclose()
    return asyncio.run(go())


def test_sends_the_openai_wire_format_to_the_test_server():
    with TestServer("first") as server:
        server.stats.keep_bodies = True
        adapter = OpenAICompatAdapter("vllm/m", "m", base_url=server.base_url, api_key=None,
                                      image_detail="high")
        response = complete(adapter, request(temperature=0.5, max_tokens=7, top_p=0.9, seed=3))
    assert response.text == "A" and response.finish_reason == "stop"
    assert response.usage == {"prompt_tokens": 10, "completion_tokens": 1}
    (body,) = server.stats.bodies
    assert body == {
        "model": "m", "temperature": 0.5, "max_tokens": 7, "top_p": 0.9, "seed": 3,
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": IMAGE, "detail": "high"}},
            {"type": "text", "text": "Question:Which \u2013 one?\nA) x\nB) y"}]}],
    }


def test_body_is_valid_json_for_any_image_url():
    adapter = OpenAICompatAdapter("vllm/m", "m", base_url="http://x/v1", api_key=None,
                                  image_detail=None)
    odd = 'data:image/png;base64,"quoted"\\and\nnewline'
    for url in (IMAGE, odd, None):
        body = json.loads(adapter.request_body(request(url)))
        assert body["messages"][0]["content"][0]["image_url"] == {"url": url}


class Faulty:
    """A loopback server that answers with whatever `reply` says; counts what it saw."""

    def __init__(self, reply):
        self.reply = reply
        self.auth: list[str | None] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()

    async def handle(self, req: web.Request) -> web.StreamResponse:
        self.auth.append(req.headers.get("Authorization"))
        await req.read()
        return await self.reply(req)

    def __enter__(self) -> "Faulty":
        def serve():
            asyncio.set_event_loop(self._loop)
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self.handle)
            self._runner = web.AppRunner(app)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
            self.base_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1"
            self._ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())
        threading.Thread(target=serve, daemon=True).start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)


def status(code: int, body, headers=None):
    async def reply(req):
        if isinstance(body, str):
            return web.Response(status=code, text=body, headers=headers)
        return web.json_response(body, status=code, headers=headers)
    return reply


@pytest.mark.parametrize("reply, kind, retryable, code, retry_after, message", [
    (status(429, {"error": {"message": "slow down"}}, {"Retry-After": "3"}),
     "rate_limit", True, 429, 3.0, "HTTP 429: slow down"),
    (status(503, {"error": {"message": "overloaded"}}), "server", True, 503, None,
     "HTTP 503: overloaded"),
    (status(500, "<html>oops</html>"), "server", True, 500, None, "HTTP 500: <html>oops</html>"),
    (status(400, {"error": {"message": "bad image"}}), "client", False, 400, None,
     "HTTP 400: bad image"),
    (status(401, {"error": {"message": "no key"}}), "client", False, 401, None, "HTTP 401: no key"),
    (status(404, {"detail": "no such model"}), "client", False, 404, None,
     "HTTP 404: no such model"),
    (status(409, {"error": "conflict"}), "client", True, 409, None, "HTTP 409: conflict"),
    (status(200, "not json"), "bad_response", True, None, None, "unparseable response body"),
    (status(200, {"choices": []}), "bad_response", True, None, None, "unparseable"),
])
def test_failures_are_classified(reply, kind, retryable, code, retry_after, message):
    with Faulty(reply) as server:
        adapter = OpenAICompatAdapter("vllm/m", "m", base_url=server.base_url, api_key="sk-secret")
        with pytest.raises(AdapterError) as info:
            complete(adapter, request())
    err = info.value
    assert (err.kind, err.retryable, err.status, err.retry_after) == (kind, retryable, code,
                                                                       retry_after)
    assert err.message.startswith(message)
    assert server.auth == ["Bearer sk-secret"]
    assert "sk-secret" not in err.message and "sk-secret" not in repr(adapter)
    assert "sk-secret" not in json.dumps(adapter.describe())


def test_a_slow_server_is_a_timeout():
    async def slow(req):
        await asyncio.sleep(2)
        return web.json_response({})
    with Faulty(slow) as server:
        adapter = OpenAICompatAdapter("vllm/m", "m", base_url=server.base_url, api_key=None,
                                      timeout=0.2)
        with pytest.raises(AdapterError) as info:
            complete(adapter, request())
    assert info.value.kind == "timeout" and info.value.retryable
    assert server.auth == [None]  # no key configured: no Authorization header


def test_no_server_is_a_connection_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    adapter = OpenAICompatAdapter("vllm/m", "m", base_url=f"http://127.0.0.1:{port}/v1",
                                  api_key=None)
    with pytest.raises(AdapterError) as info:
        complete(adapter, request())
    assert info.value.kind == "connection" and info.value.retryable
    assert "connection failed" in info.value.message
