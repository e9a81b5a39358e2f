"""The project's own OpenAI-compatible chat-completions server, for tests and benchmarks.

A real HTTP server (aiohttp) on 127.0.0.1 that answers in configurable styles, with injectable
latency and faults (429 with Retry-After, 500/503, closed connections, non-JSON 200 bodies, hangs,
401s) and the misbehaving replies of `harness.servers.hostile`. Run it in-process
(`TestServer(...)` as a context manager, in a background thread) or as
`python -m harness.servers.testserver --style random --latency 0.2 --fault-rate 0.25`.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import orjson
from aiohttp import web

from harness.score.parsing import OPTION_LINE
from harness.servers.hostile import HOSTILE, hostile_reply

Responder = Callable[[dict[str, Any]], str]
# Token → probability at each generated position (one dict: a one-token answer).
Distribution = Callable[[dict[str, Any]], "dict[str, float] | list[dict[str, float]]"]
# How chat VLMs actually answer (each read by the parser): `mixed` picks one per request.
MIXED_FORMATS = (
    "{letter}",
    "{letter}) {text}",
    "**{letter}**",
    "The answer is ({letter}).",
    "Answer: {letter}",
    "Looking at the morphology and the staining pattern, this is most consistent with {text}.\n\n"
    "ANSWER: {letter}",
    "<think>The image shows {text}-like features.</think>\n{letter}",
    "It is {text}.",
    "{letter}. {text} - the features visible in the micrograph match this option best.",
    "I cannot determine this from the image alone.",
)


def request_key(text: str, image_url: str | None) -> str:
    """Identifies what was asked: the prompt text plus the image it was asked about."""
    image = hashlib.sha256((image_url or "").encode()).hexdigest()
    return hashlib.sha256(f"{text}\0{image}".encode()).hexdigest()


def prompt_parts(body: dict[str, Any]) -> tuple[str, str | None]:
    """All text of the request's messages, and the (last) image URL."""
    texts, image = [], None
    for msg in body.get("messages", []):
        content = msg.get("content")
        if isinstance(content, str):
            texts.append(content)
            continue
        for part in content or []:
            if part.get("type") == "text":
                texts.append(part.get("text", ""))
            elif part.get("type") == "image_url":
                image = part["image_url"]["url"]
    return "\n".join(texts), image


def last_user_text(body: dict[str, Any]) -> str:
    """The text of the last user turn: the question asked now (few-shot turns come before)."""
    for msg in reversed(body.get("messages", [])):
        if msg.get("role") == "user":
            content = msg.get("content")
            return content if isinstance(content, str) else "\n".join(
                p.get("text", "") for p in content or [] if p.get("type") == "text")
    return ""


def by_model(styles: dict[str, str], default: Responder) -> Responder:
    """Answer each served model name in its own style (one server standing in for several)."""
    responders = {name: make_responder(style) for name, style in styles.items()}
    return lambda body: responders.get(str(body.get("model")), default)(body)


def option_lines(text: str) -> list[tuple[str, str]]:
    """(letter, text) of each option line in a prompt (the parser's pattern for one)."""
    return [(m.group(1), m.group(2)) for m in map(OPTION_LINE.match, text.splitlines()) if m]


def option_letters(text: str) -> list[str]:
    """The letters of the options in a prompt; 'A' when none are found, so a responder can answer."""
    return [letter for letter, _ in option_lines(text)] or ["A"]


def make_responder(style: str, answers: dict[str, str] | None = None) -> Responder:
    """Named answering styles: `letter:X`, `first`, `random[:SEED]`, `cot`, `mixed[:SEED]` (a
    seeded choice in a realistic format drawn from MIXED_FORMATS), `answers` (by key)."""
    name, _, arg = style.partition(":")
    if name == "letter":
        return lambda body: arg or "A"
    if name == "first":
        return lambda body: option_letters(prompt_parts(body)[0])[0]
    if name == "random":
        seed = int(arg or 0)

        def pick(body: dict[str, Any]) -> str:
            text, image = prompt_parts(body)
            rng = random.Random(f"{seed}:{request_key(text, image)}")
            return rng.choice(option_letters(text))
        return pick
    if name == "cot":
        def think(body: dict[str, Any]) -> str:
            letters = option_letters(prompt_parts(body)[0])
            return (f"Looking at the image, option {letters[0]} seems unlikely. "
                    f"The morphology fits best with the last listed choice.\n"
                    f"The answer is ({letters[-1]}).")
        return think
    if name == "mixed":  # varied realistic formats around a seeded random choice
        seed = int(arg or 0)

        def varied(body: dict[str, Any]) -> str:
            text, image = prompt_parts(body)
            last = last_user_text(body)
            options = dict(option_lines(last)) or {"A": "the first option"}
            rng = random.Random(f"{seed}:{request_key(text, image)}")
            letter = rng.choice(sorted(options))
            return rng.choice(MIXED_FORMATS).format(letter=letter, text=options[letter].strip())
        return varied
    if name == "answers":
        table = answers or {}
        return lambda body: table.get(request_key(*prompt_parts(body)), "I am not sure.")
    raise ValueError(f"unknown style {style!r}")


FAULTS = ("429", "500", "503", "close", "badjson", "hang")


@dataclass
class Behaviour:
    """How the server answers; tests may change fields while it runs."""

    responder: Responder
    latency_s: float = 0.0
    usage: bool = True
    usage_details: bool = False  # varied usage with cached and reasoning tokens (see `usage_for`)
    # An image-token rule (harness/data/pricing.yaml): prompt_tokens are then counted from the
    # request as a provider counts them (`counted_prompt_tokens`), not the fixed 10.
    prompt_rule: dict[str, Any] | None = None
    fault_rate: float = 0.0  # share of requests that get one of `faults`, drawn with `fault_seed`
    faults: tuple[str, ...] = FAULTS
    fault_seed: int = 0
    hang_s: float = 30.0  # how long a "hang" fault stalls (set past the client's timeout)
    retry_after_s: float = 0.1
    retry_after: str | None = None  # the Retry-After header as given (e.g. an HTTP-date)
    require_key: str | None = None  # answer 401 unless `Authorization: Bearer <key>`
    headers: dict[str, str] | None = None  # sent with every answer (e.g. x-ratelimit-*)
    # Answer modes (adapters.answer_modes): the token distribution that `logprobs` requests get
    # (the answer is then its most probable tokens), and whether to ignore a choice constraint.
    distribution: Distribution | None = None
    ignore_constraints: bool = False
    _rng: random.Random | None = None

    def draw_fault(self) -> str | None:
        """The fault for this request, drawn at the configured rate (seeded: reproducible)."""
        if self._rng is None:
            self._rng = random.Random(self.fault_seed)
        if self.fault_rate and self._rng.random() < self.fault_rate:
            return self._rng.choice(self.faults)
        return None


@dataclass
class Stats:
    """What the test server saw, for tests to assert on."""
    requests: int = 0
    by_key: Counter = field(default_factory=Counter)
    models: Counter = field(default_factory=Counter)
    bodies: list = field(default_factory=list)
    requests_seen: list = field(default_factory=list)  # path and auth headers, with keep_bodies
    keep_bodies: bool = False
    answered: Counter = field(default_factory=Counter)  # keys that got a real answer
    faults: Counter = field(default_factory=Counter)
    usage: Counter = field(default_factory=Counter)  # sums of the usage the server reported


def build_app(behaviour: Behaviour, stats: Stats) -> web.Application:
    """The aiohttp application: chat completions, models and health, with the configured faults."""
    async def chat(request: web.Request) -> web.StreamResponse:
        try:  # orjson: the server's CPU must not be what a benchmark measures
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return web.json_response({"error": {"message": "body is not JSON"}}, status=400)
        if not body.get("messages"):
            return web.json_response({"error": {"message": "'messages' is required"}}, status=400)
        stats.requests += 1
        text, image = prompt_parts(body)
        key = request_key(text, image)
        stats.by_key[key] += 1
        stats.models[body.get("model")] += 1
        if stats.keep_bodies:
            stats.bodies.append(body)
            stats.requests_seen.append({"path": request.path_qs,
                                        "api-key": request.headers.get("api-key"),
                                        "authorization": request.headers.get("Authorization")})
        if behaviour.require_key is not None and (
                request.headers.get("Authorization") != f"Bearer {behaviour.require_key}"):
            stats.faults["401"] += 1
            # Echo what was sent, as some providers do: the client must redact it.
            sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
            return web.json_response({"error": {"message": f"Incorrect API key provided: {sent}",
                                                "type": "invalid_request_error"}}, status=401)
        if behaviour.latency_s:
            await asyncio.sleep(behaviour.latency_s)
        fault = behaviour.draw_fault()
        if fault in HOSTILE:  # a misbehaving reply (harness.servers.hostile)
            stats.faults[fault] += 1
            return await hostile_reply(fault, request, behaviour.responder(body),
                                       completion(body.get("model", "test"), "", None))
        if fault:
            stats.faults[fault] += 1
            return await _fault(fault, request, behaviour)
        try:
            answer, logprobs = answer_in_mode(body, behaviour)
        except ValueError as exc:  # as vLLM and OpenAI refuse a malformed constraint
            return web.json_response({"error": {"message": str(exc)}}, status=400)
        stats.answered[key] += 1
        usage = reported_usage(body, key, answer, behaviour) if behaviour.usage else None
        tally_usage(stats, usage)
        reply = completion(body.get("model", "test"), answer, usage)
        if logprobs is not None:
            reply["choices"][0]["logprobs"] = {"content": logprobs}
        return web.json_response(reply, headers=behaviour.headers)

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "test", "object": "model"}]})

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    def answer(body: dict[str, Any]) -> dict[str, Any]:  # one line of a batch
        text = behaviour.responder(body)
        usage = reported_usage(body, request_key(*prompt_parts(body)), text, behaviour)
        tally_usage(stats, usage)
        return completion(body.get("model", "test"), text, usage)

    from harness.servers.batch_api import BATCHES, BatchService

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app[BATCHES] = BatchService(answer)
    app[BATCHES].register(app)
    return app


async def _fault(kind: str, request: web.Request, behaviour: Behaviour) -> web.StreamResponse:
    if kind == "429":
        return web.json_response({"error": {"message": "Rate limit reached"}}, status=429,
                                 headers={"Retry-After": behaviour.retry_after
                                          or f"{behaviour.retry_after_s:g}"})
    if kind in ("500", "503"):
        return web.json_response({"error": {"message": f"injected {kind}"}}, status=int(kind))
    if kind == "badjson":
        return web.Response(text="<html>upstream proxy error</html>", status=200,
                            content_type="application/json")
    if kind == "hang":
        await asyncio.sleep(behaviour.hang_s)
        return web.json_response({"error": {"message": "hung"}}, status=504)
    # "close": drop the connection without any response
    if request.transport is not None:  # None once the client has gone already
        request.transport.close()
    raise asyncio.CancelledError


def usage_for(key: str, text: str, details: bool = False) -> dict[str, Any]:
    """The usage the server reports: fixed counts, or with `details` counts that vary by request
    (drawn from its key) and OpenAI's nested cached and reasoning tokens."""
    completion_tokens = max(1, len(text) // 4)
    if not details:
        return {"prompt_tokens": 10, "completion_tokens": completion_tokens,
                "total_tokens": 10 + completion_tokens}
    n = int(key[:8], 16)
    prompt, cached, reasoning = 300 + n % 500, (n >> 10) % 3 * 128, (n >> 14) % 50
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens + reasoning,
            "total_tokens": prompt + completion_tokens + reasoning,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0}}


def reported_usage(body: dict[str, Any], key: str, text: str,
                   behaviour: Behaviour) -> dict[str, Any]:
    """`usage_for`, with the prompt counted from the request when the behaviour has a rule."""
    usage = usage_for(key, text, behaviour.usage_details)
    if behaviour.prompt_rule is not None:
        usage["prompt_tokens"] = counted_prompt_tokens(body, behaviour.prompt_rule)
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return usage


def counted_prompt_tokens(body: dict[str, Any], rule: dict[str, Any]) -> int:
    """The prompt tokens of a chat request as sent, every image in it included (few-shot
    examples too): text by harness.score.tokens' counter, each image by `rule` at its detail."""
    from harness.score.tokens import data_url_size, message_tokens, request_image_tokens, text_counter

    messages = [{"content": [{"type": "text", "text": m["content"]}]}
                if isinstance(m.get("content"), str) else m for m in body["messages"]]
    images = [p["image_url"] for m in messages for p in m["content"]
              if p.get("type") == "image_url"]
    return message_tokens(messages, text_counter(body.get("model", ""))[1]) + sum(
        request_image_tokens(data_url_size(image["url"]), rule, image.get("detail"))
        for image in images if image.get("url"))


def tally_usage(stats: Stats, usage: dict[str, Any] | None) -> None:
    """Add one reply's usage to the server's totals (tests compare them with the run's)."""
    if usage is None:
        return
    stats.usage["requests"] += 1
    stats.usage["prompt_tokens"] += usage["prompt_tokens"]
    stats.usage["completion_tokens"] += usage["completion_tokens"]
    stats.usage["cached_tokens"] += usage.get("prompt_tokens_details", {}).get("cached_tokens", 0)
    stats.usage["reasoning_tokens"] += usage.get("completion_tokens_details", {}).get(
        "reasoning_tokens", 0)


def _choice_list(body: dict[str, Any]) -> tuple[list[str] | None, bool]:
    """The letters a request constrains its answer to, and whether the reply is JSON: vLLM's
    `structured_outputs.choice` or OpenAI's `response_format` JSON schema with an enum."""
    structured = body.get("structured_outputs")
    if structured is not None:
        choice = structured.get("choice") if isinstance(structured, dict) else None
        if not (isinstance(choice, list) and choice and all(isinstance(c, str) for c in choice)):
            raise ValueError("structured_outputs.choice must be a non-empty list of strings")
        return choice, False
    fmt = body.get("response_format")
    if fmt is None:
        return None, False
    try:
        assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
        schema = fmt["json_schema"]["schema"]
        assert schema["required"] == ["answer"] and schema["additionalProperties"] is False
        enum = schema["properties"]["answer"]["enum"]
        assert isinstance(enum, list) and enum and all(isinstance(c, str) for c in enum)
    except (AssertionError, KeyError, TypeError):
        raise ValueError("response_format: expected a strict json_schema with an 'answer' enum"
                         ) from None
    return enum, True


def _logprobs_content(positions: list[dict[str, float]], top: int) -> list[dict[str, Any]]:
    """OpenAI's `logprobs.content`: per position the chosen (most probable) token and the top
    `top` alternatives, most probable first."""
    content = []
    for dist in positions:
        ranked = sorted(dist.items(), key=lambda kv: -kv[1])
        content.append({"token": ranked[0][0], "logprob": math.log(ranked[0][1]),
                        "bytes": list(ranked[0][0].encode()),
                        "top_logprobs": [{"token": t, "logprob": math.log(p),
                                          "bytes": list(t.encode())} for t, p in ranked[:top]]})
    return content


def answer_in_mode(body: dict[str, Any], behaviour: Behaviour
                   ) -> tuple[str, list[dict[str, Any]] | None]:
    """The answer text, constrained as the request asks unless told to ignore it, and the
    `logprobs.content` a `logprobs` request gets (from `behaviour.distribution` when set)."""
    choices, as_json = _choice_list(body)
    logprobs = None
    if body.get("logprobs"):
        top = body.get("top_logprobs", 0)
        if not isinstance(top, int) or isinstance(top, bool) or not 0 <= top <= 20:
            raise ValueError("top_logprobs must be an integer between 0 and 20")
        if behaviour.distribution is not None:
            dist = behaviour.distribution(body)
            positions = dist if isinstance(dist, list) else [dist]
            logprobs = _logprobs_content(positions, top)
            answer = "".join(entry["token"] for entry in logprobs)
        else:
            answer = behaviour.responder(body)
            logprobs = [{"token": answer, "logprob": 0.0, "bytes": list(answer.encode()),
                         "top_logprobs": [{"token": answer, "logprob": 0.0}][:top]}]
    else:
        answer = behaviour.responder(body)
    if choices is not None and not behaviour.ignore_constraints:
        # The constraint allows only a listed string: keep an answer that is one, else the
        # listed string the answer starts with, else the first listed one.
        stripped = answer.strip()
        answer = stripped if stripped in choices else next(
            (c for c in choices if stripped.startswith(c)), choices[0])
        if as_json:
            answer = orjson.dumps({"answer": answer}).decode()
    return answer, logprobs


def completion(model: str, text: str, usage: dict[str, Any] | None) -> dict[str, Any]:
    """A minimal valid chat completion, as OpenAI-compatible servers send it."""
    return {
        "id": f"chatcmpl-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": text}}],
        "usage": usage,
    }


class TestServer:
    """The server in a background thread: `with TestServer("random") as s: s.base_url`."""

    __test__ = False  # not a pytest test class

    def __init__(self, style: str | Responder = "random", *, latency_s: float = 0.0,
                 answers: dict[str, str] | None = None, port: int = 0,
                 model_styles: dict[str, str] | None = None, **faults: Any):
        responder = style if callable(style) else make_responder(style, answers)
        if model_styles:
            responder = by_model(model_styles, responder)
        self.behaviour = Behaviour(responder, latency_s, **faults)
        self.stats = Stats()
        self._port = port
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.port: int | None = None

    @property
    def base_url(self) -> str:
        """The URL a client passes as --base-url."""
        return f"http://127.0.0.1:{self.port}/v1"

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        from harness.servers.batch_api import BATCHES

        app = build_app(self.behaviour, self.stats)
        self.batches = app[BATCHES]  # the Files and Batches endpoints' state and knobs
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", self._port)
        self._loop.run_until_complete(site.start())
        self.port = runner.addresses[0][1]
        self._runner = runner
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def start(self) -> "TestServer":
        """Serve in a background thread; returns once the port is bound."""
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("test server did not start")
        return self

    def stop(self) -> None:
        """Stop the loop and join its thread."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> "TestServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """Command line: serve in the foreground, e.g. for a manual run against it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--style", default="random",
                        help="how it answers: random, first, letter:X, cot, mixed, ...")
    parser.add_argument("--model-style", action="append", default=[], metavar="NAME=STYLE",
                        help="answer requests for model NAME in STYLE (repeatable)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--fault-rate", type=float, default=0.0,
                        help="share of requests that get one of --faults")
    parser.add_argument("--faults", default=",".join(FAULTS),
                        help="comma list of " + ", ".join(FAULTS + HOSTILE))
    parser.add_argument("--hang", type=float, default=30.0, help="seconds a 'hang' fault stalls")
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.model_style):
        parser.error("--model-style takes NAME=STYLE, e.g. vlm-a=mixed")
    model_styles = dict(item.split("=", 1) for item in args.model_style)
    unknown = [f for f in args.faults.split(",") if f not in FAULTS + HOSTILE]
    if unknown:
        parser.error(f"--faults: unknown {', '.join(unknown)}; choose from "
                     f"{', '.join(FAULTS + HOSTILE)}")
    for style in (args.style, *model_styles.values()):
        try:
            make_responder(style)
        except ValueError as exc:
            parser.error(f"style {style!r}: {exc}")
    server = TestServer(args.style, latency_s=args.latency, port=args.port,
                        model_styles=model_styles,
                        fault_rate=args.fault_rate, faults=tuple(args.faults.split(",")),
                        hang_s=args.hang).start()
    print(server.base_url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
