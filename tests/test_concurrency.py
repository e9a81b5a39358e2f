"""Adaptive concurrency: the pure controller, the gate that enforces it, and the CLI flag."""
from __future__ import annotations

import asyncio
import json

import pytest

from harness.adapters import AdapterError, ChatRequest, ChatResponse, GenerationParams
from harness.adapters.base import Adapter
from harness.run.concurrency import AdaptiveConcurrency, ConcurrencyController
from harness.servers.testserver import TestServer
from tests.conftest import read_jsonl, ubench


def feed(controller: ConcurrencyController, latency: float | None, windows: int = 1,
         overloaded: bool = False) -> list[int]:
    """Complete `windows` full windows of requests; the limit after each."""
    limits = []
    for _ in range(windows):
        for _ in range(controller.limit):
            controller.observe(latency, overloaded=overloaded)
        limits.append(controller.limit)
    return limits


def test_grows_fast_while_latency_stays_flat_up_to_the_ceiling():
    c = ConcurrencyController(64, initial=4)
    assert feed(c, 0.2, windows=6) == [8, 16, 32, 64, 64, 64]


def test_backs_off_on_429s_and_timeouts_then_grows_slowly():
    c = ConcurrencyController(64, initial=32)
    c.observe(0.2)
    for _ in range(31):
        c.observe(None, overloaded=True) if _ == 0 else c.observe(0.2)
    assert c.limit == 16 and not c.slow_start
    assert feed(c, 0.2, windows=3) == [17, 18, 19]  # additive after the first overload
    assert feed(c, None, overloaded=True) == [9]


def test_holds_when_latency_rises_and_never_leaves_its_bounds():
    c = ConcurrencyController(64, initial=8, tolerance=1.5)
    feed(c, 0.2)  # baseline 0.2 s, limit 16
    assert feed(c, 0.5, windows=3) == [16, 16, 16]  # queueing in the server: hold
    assert feed(c, 0.25) == [32]  # back within tolerance: grow again
    low = ConcurrencyController(8, minimum=2, initial=2)
    assert feed(low, None, overloaded=True, windows=3) == [2, 2, 2]
    with pytest.raises(ValueError):
        ConcurrencyController(4, minimum=5)


class Counting(Adapter):
    def __init__(self, fail_every: int = 0):
        self.spec = "vllm/test"
        self.in_flight = self.peak = self.calls = 0
        self.fail_every = fail_every

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.calls += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(0.002)
            if self.fail_every and self.calls % self.fail_every == 0:
                raise AdapterError("rate_limit", "slow down", retryable=True, status=429)
            return ChatResponse("A", latency_s=0.002)
        finally:
            self.in_flight -= 1


def test_the_gate_keeps_in_flight_requests_within_the_limit():
    inner = Counting()
    gate = AdaptiveConcurrency(inner, ConcurrencyController(16, initial=2))
    request = ChatRequest("x", [], None, GenerationParams())

    async def burst(n):
        return await asyncio.gather(*(gate.complete(request) for _ in range(n)),
                                    return_exceptions=True)

    async def scenario():
        await burst(4)
        assert inner.peak <= 2  # the first window runs at the initial limit
        assert not [r for r in await burst(200) if isinstance(r, Exception)]
        assert inner.peak <= 16 and gate.peak_limit == 16
        inner.fail_every = 3
        results = await burst(100)
        assert all(isinstance(r, AdapterError) for r in results if isinstance(r, Exception))
        assert any(isinstance(r, AdapterError) for r in results)

    asyncio.run(scenario())
    assert gate.controller.limit < 16 and gate.in_flight == 0


def test_cli_adaptive_concurrency_completes_and_is_recorded(tmp_path):
    with TestServer("first", latency_s=0.01) as server:
        out = tmp_path / "run"
        ubench("run", "--model", "vllm/test", "--base-url", server.base_url, "--output", str(out),
               "--no-progress", "--concurrency", "16", "--adaptive-concurrency")
    records = read_jsonl(out / "samples.jsonl")
    assert len(records) == 136 and not any(r["error"] for r in records)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["runtime"]["adaptive_concurrency"] is True
    assert server.stats.requests == 136  # and the responses went into the cache as usual
    ubench("run", "--model", "vllm/test", "--base-url", server.base_url, "--output",
           str(tmp_path / "again"), "--no-progress", "--adaptive-concurrency")
    assert all(r["cached"] for r in read_jsonl(tmp_path / "again" / "samples.jsonl"))
