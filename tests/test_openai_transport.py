"""The direct OpenAI-protocol client against the test server: what it sends, what errors mean."""
from __future__ import annotations

import asyncio
import base64
import json
import socket

import pytest

from harness.adapters import AdapterError, ChatRequest, GenerationParams
from harness.adapters.openai_compat import OpenAICompatAdapter, _status_error
from harness.servers.testserver import TestServer

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
    assert response.usage == {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}
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


@pytest.mark.parametrize("fault, kind, code, retry_after, message", [
    ("429", "rate_limit", 429, 0.1, "HTTP 429: Rate limit reached"),
    ("500", "server", 500, None, "HTTP 500: injected 500"),
    ("503", "server", 503, None, "HTTP 503: injected 503"),
    ("badjson", "bad_response", None, None, "the body is not JSON (body: '<html>upstream"),
    ("close", "connection", None, None, "connection failed: ServerDisconnectedError"),
    ("hang", "timeout", None, None, "no response within 0.3 s"),
])
def test_server_faults_are_classified_retryable(fault, kind, code, retry_after, message):
    with TestServer("first", fault_rate=1.0, faults=(fault,), hang_s=2.0) as server:
        # only the hang needs a short timeout; on a busy machine 0.3 s can pass before a 500
        adapter = OpenAICompatAdapter("vllm/m", "m", base_url=server.base_url, api_key=None,
                                      timeout=0.3 if fault == "hang" else 30)
        with pytest.raises(AdapterError) as info:
            complete(adapter, request())
    err = info.value
    assert (err.kind, err.retryable, err.status, err.retry_after) == (kind, True, code,
                                                                       retry_after)
    assert err.message.startswith(message)


def test_a_wrong_key_is_final_and_never_echoed():
    with TestServer("first", require_key="sk-right") as server:
        adapter = OpenAICompatAdapter("vllm/m", "m", base_url=server.base_url,
                                      api_key="sk-wrong-secret")
        with pytest.raises(AdapterError) as info:
            complete(adapter, request())
        good = OpenAICompatAdapter("vllm/m", "m", base_url=server.base_url, api_key="sk-right")
        assert complete(good, request()).text == "A"
    err = info.value
    assert (err.kind, err.retryable, err.status, err.fatal) == ("auth", False, 401, True)
    assert "sk-wrong-secret" not in str(err) and "[REDACTED]" in err.message
    assert "sk-wrong-secret" not in repr(adapter) + json.dumps(adapter.describe())


@pytest.mark.parametrize("code, body, retryable, message", [
    (400, b'{"error": {"message": "bad image"}}', False, "HTTP 400: bad image"),
    (404, b'{"detail": "no such model"}', False, "HTTP 404: no such model"),
    (409, b'{"error": "conflict"}', True, "HTTP 409: conflict"),
    (413, b'{"error": {"message": "too large"}}', False, "HTTP 413: too large"),
    (422, b"<html>nope</html>", False, "HTTP 422: <html>nope</html>"),
])
def test_client_errors_are_classified_by_status(code, body, retryable, message):
    err = _status_error(code, {}, body.decode(), None)
    assert (err.kind, err.retryable, err.status, err.message) == ("client", retryable, code,
                                                                  message)


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


def test_few_shot_images_are_spliced_in_once_each_and_the_body_is_plain_json(monkeypatch):
    import orjson

    import adapters.openai_compat as compat
    from harness.adapters.base import ExampleImage

    shots = {name: ExampleImage(f"data:image/png;base64,{name * 5000}", name * 64, (8, 8))
             for name in ("a", "b")}
    image = IMAGE + "few-shot"  # an image no other test has sent (the module caches strings)
    messages = [{"role": "user", "content": [{"type": "image", "image_id": "a"},
                                             {"type": "image", "image_id": "b"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "A"}]}, *MESSAGES]
    made = []
    real = compat.orjson.dumps
    monkeypatch.setattr(compat.orjson, "dumps",
                        lambda value, *a: made.append(value) or real(value, *a))
    adapter = OpenAICompatAdapter("vllm/m", "m", base_url="http://x/v1", api_key=None,
                                  image_detail=None)
    bodies = [adapter.request_body(ChatRequest(f"i{n}", messages, image, GenerationParams(),
                                               "AB", example_images=shots))
              for n in range(3)]
    for raw in bodies:
        body = orjson.loads(raw)
        assert orjson.dumps(body) == raw  # the splices leave the bytes plain serialization makes
        urls = [p["image_url"]["url"] for m in body["messages"] for p in m["content"]
                if p["type"] == "image_url"]
        assert urls == [shots["a"].data_url, shots["b"].data_url, image]
    # each example's URL is serialized once for the three requests; the main image's once
    assert sorted(v for v in made if isinstance(v, str) and v.startswith("data:")) == \
        sorted([shots["a"].data_url, shots["b"].data_url, image])
