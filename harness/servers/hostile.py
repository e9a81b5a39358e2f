"""Misbehaviours of servers that claim to speak the OpenAI protocol, as test-server faults.

Each is a named mode of `harness.servers.testserver` (`faults=("list_content", ...)`, or
`--faults` on its command line), drawn per request like the ordinary faults (429, 500, ...):
a client must turn every one into that item's error or a correctly read answer, and never write
a secret it was sent.
"""
from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from aiohttp import web

HUGE_BYTES = 12 * 1024 * 1024  # above the client's default limit of 8 MB
LONG_ANSWER_CHARS = 5_000_000  # under it: a valid answer that a client must not choke on
HOSTILE = (
    "list_content",    # content as a list of text parts: a valid answer, joined
    "number_content",  # content 42
    "object_content",  # content {"text": ...}
    "null_content",    # content null, no refusal
    "refusal",         # content null with a refusal: a valid (invalid-answer) response
    "empty_choices",   # choices []
    "not_completion",  # a JSON body that is not a chat completion
    "endless",         # a 200 body that never ends
    "huge",            # a 200 completion above the client's size limit
    "long_answer",     # a 5 MB answer, under the limit
    "length",          # finish_reason "length"
    "content_filter",  # finish_reason "content_filter", empty content
    "key_echo",        # the answer quotes the API key it was sent
    "auth_echo",       # a 500 whose message echoes the Authorization header
    "key_cut",         # a 500 whose message puts the key where a 300-character cut splits it
    "401", "403", "400", "404", "413", "422",
)


def _sent_key(request: web.Request) -> str:
    value = request.headers.get("Authorization", "")
    return value.split(" ", 1)[1] if " " in value else value


async def hostile_reply(kind: str, request: web.Request, answer: str,
                        completion: dict[str, Any]) -> web.StreamResponse:
    """The misbehaving reply `kind` to a request whose honest answer is `answer`."""
    message = completion["choices"][0]["message"]
    choice = completion["choices"][0]
    if kind == "list_content":
        message["content"] = [{"type": "text", "text": answer[:1]},
                              {"type": "text", "text": answer[1:]}]
    elif kind == "number_content":
        message["content"] = 42
    elif kind == "object_content":
        message["content"] = {"text": answer}
    elif kind == "null_content":
        message["content"] = None
    elif kind == "refusal":
        message.update(content=None, refusal="I can't help with that request.")
    elif kind == "empty_choices":
        completion["choices"] = []
    elif kind == "not_completion":
        return web.json_response({"object": "list", "data": [{"id": "test"}]})
    elif kind == "endless":
        return await _endless(request)
    elif kind == "huge":
        message["content"] = "A" * HUGE_BYTES
    elif kind == "long_answer":
        message["content"] = ("The morphology is typical. " * (LONG_ANSWER_CHARS // 27)
                              + f"\nThe answer is ({answer}).")
    elif kind == "length":
        choice["finish_reason"] = "length"
        message["content"] = f"Looking at the nucleus and the granules, option {answer} and"
    elif kind == "content_filter":
        choice["finish_reason"] = "content_filter"
        message["content"] = ""
    elif kind == "key_echo":
        message["content"] = f"{answer}. (Request made with key {_sent_key(request)}.)"
    elif kind == "auth_echo":
        basic = base64.b64encode(f"user:{_sent_key(request)}".encode()).decode()
        return web.json_response({"error": {"message": "upstream rejected header Authorization: "
                                            f"{request.headers.get('Authorization', '')}, then "
                                            f"'Authorization': 'Basic {basic}'"}}, status=500)
    elif kind == "key_cut":
        pad = "x" * (300 - 10)  # the first 10 characters of the key fall inside the cut
        return web.json_response({"error": {"message": pad + _sent_key(request)}}, status=500)
    else:  # an HTTP status
        return web.json_response({"error": {"message": f"injected {kind}"}}, status=int(kind))
    return web.Response(body=json.dumps(completion), content_type="application/json")


async def _endless(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    chunk = b'{"choices": [' + b" " * 65_536
    try:
        while True:
            await response.write(chunk)
            await asyncio.sleep(0)
    except (ConnectionError, RuntimeError):  # the client hung up at its limit
        pass
    return response
