"""Several servers for one model: least-outstanding routing, failover and recovery."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest

from harness.adapters import (
    AdapterError,
    ChatRequest,
    ChatResponse,
    GenerationParams,
    create_adapter,
)
from harness.adapters.base import Adapter
from harness.adapters.pool import PooledAdapter
from harness.servers.testserver import TestServer
from tests.conftest import ROOT, read_jsonl, ubench


class Scripted(Adapter):
    """Answers after `delay` s, or fails with `fail` (an AdapterError kind) while it is set."""

    def __init__(self, name: str, delay: float = 0.0):
        self.spec = "vllm/test"
        self.name = name
        self.delay = delay
        self.fail: str | None = None
        self.calls = 0

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.fail:
            raise AdapterError(self.fail, "boom", retryable=True, status=503)
        return ChatResponse(text=self.name)


def request(i: int = 0) -> ChatRequest:
    return ChatRequest(f"item-{i}", [], None, GenerationParams())


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_requests_go_to_the_replica_with_fewest_in_flight():
    slow, fast = Scripted("slow", delay=0.05), Scripted("fast", delay=0.001)
    pool = PooledAdapter([slow, fast], ["slow", "fast"])

    async def staggered():
        tasks = []
        for i in range(40):
            tasks.append(asyncio.create_task(pool.complete(request(i))))
            await asyncio.sleep(0.002)
        return await asyncio.gather(*tasks)

    # The fast replica keeps freeing its slot, so it takes nearly everything while the slow one
    # has a request in flight.
    answers = [r.text for r in asyncio.run(staggered())]
    assert answers.count("fast") > 30
    assert 1 <= answers.count("slow") < 10
    assert all(r.outstanding == 0 for r in pool.replicas)


def test_ties_rotate_between_equal_replicas():
    pool = PooledAdapter([Scripted("a"), Scripted("b")], ["a", "b"])

    async def burst():
        return await asyncio.gather(*(pool.complete(request(i)) for i in range(40)))

    texts = [r.text for r in asyncio.run(burst())]
    assert texts.count("a") == texts.count("b") == 20


def test_a_failing_replica_is_rested_then_tried_again():
    clock = Clock()
    a, b = Scripted("a"), Scripted("b")
    pool = PooledAdapter([a, b], ["http://a/v1", "http://b/v1"], cooldown_s=2.0, clock=clock)
    a.fail = "connection"

    async def one():
        return await pool.complete(request())

    with pytest.raises(AdapterError) as info:
        asyncio.run(one())
    assert info.value.message == "http://a/v1: boom"  # the failure names the replica
    assert info.value.kind == "connection" and info.value.retryable
    # While a rests, everything goes to b.
    assert {asyncio.run(one()).text for _ in range(5)} == {"b"}
    assert a.calls == 1
    # After the cool-down a gets requests again; another failure rests it twice as long.
    clock.now += 2.1
    texts = []
    for _ in range(2):
        try:
            texts.append(asyncio.run(one()).text)
        except AdapterError:
            texts.append("failed")
    assert "failed" in texts and a.calls == 2
    assert pool.replicas[0].down_until == pytest.approx(clock.now + 4.0)
    # Once healthy, one success restores it fully.
    a.fail = None
    clock.now += 4.1
    assert {asyncio.run(one()).text for _ in range(4)} == {"a", "b"}
    assert pool.replicas[0].failures == 0


def test_bad_requests_and_rate_limits_do_not_rest_a_replica():
    a, b = Scripted("a"), Scripted("b")
    pool = PooledAdapter([a, b], ["a", "b"])
    for kind in ("client", "rate_limit", "timeout"):
        a.fail = kind
        with pytest.raises(AdapterError):
            asyncio.run(pool.complete(request()))
        assert pool.replicas[0].down_until == 0.0
        pool._turn = 0  # next pick starts at a again


def test_all_replicas_down_still_tries_the_one_back_soonest():
    clock = Clock()
    a, b = Scripted("a"), Scripted("b")
    pool = PooledAdapter([a, b], ["a", "b"], clock=clock)
    pool.replicas[0].down_until = clock.now + 5
    pool.replicas[1].down_until = clock.now + 1
    assert pool.pick().name == "b"


def test_create_adapter_pools_several_base_urls_and_describes_them():
    one = create_adapter("vllm/m", base_url=["http://h1:8000/v1"])
    assert not isinstance(one, PooledAdapter)
    assert one.describe()["base_url"] == "http://h1:8000/v1"
    pool = create_adapter("vllm/m", base_url=["http://h1:8000/v1", "http://h2:8000/v1"])
    assert isinstance(pool, PooledAdapter)
    assert pool.describe()["base_urls"] == ["http://h1:8000/v1", "http://h2:8000/v1"]
    assert "base_url" not in pool.describe()
    with pytest.raises(ValueError, match="random"):
        create_adapter("random", base_url=["http://h1/v1", "http://h2/v1"])


def test_cli_spreads_a_run_over_two_servers(tmp_path):
    with TestServer("first") as s1, TestServer("first") as s2:
        out = tmp_path / "run"
        ubench("run", "--model", "vllm/test", "--base-url", s1.base_url, "--base-url",
               s2.base_url, "--output", str(out), "--no-progress", "--concurrency", "8")
        records = read_jsonl(out / "samples.jsonl")
        assert len(records) == 136 and not any(r["error"] for r in records)
        assert s1.stats.requests + s2.stats.requests == 136
        assert min(s1.stats.requests, s2.stats.requests) >= 40  # both did a fair share
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["model"]["base_urls"] == [s1.base_url, s2.base_url]
        # The response cache works with a pool too: the same run again asks no server.
        again = tmp_path / "again"
        ubench("run", "--model", "vllm/test", "--base-url", s2.base_url, "--base-url",
               s1.base_url, "--output", str(again), "--no-progress")
        assert all(r["cached"] for r in read_jsonl(again / "samples.jsonl"))
        assert s1.stats.requests + s2.stats.requests == 136


def test_cli_run_survives_a_server_stopped_mid_run(tmp_path):
    with TestServer("first", latency_s=0.05) as steady:
        doomed = TestServer("first", latency_s=0.05).start()
        out = tmp_path / "run"
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness.cli", "run", "--model", "vllm/test",
             "--base-url", doomed.base_url, "--base-url", steady.base_url, "--output", str(out),
             "--no-progress", "--concurrency", "8"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while doomed.stats.requests < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert doomed.stats.requests >= 10, "the run never reached the doomed replica"
        doomed.stop()
        stopped_at = doomed.stats.requests
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr[-2000:]
    records = read_jsonl(out / "samples.jsonl")
    assert len({r["item_id"] for r in records}) == 136
    assert not any(r["error"] for r in records)  # every item answered, none lost
    assert steady.stats.requests >= 136 - stopped_at
    assert any(r["attempts"] > 1 for r in records)  # the ones cut off were retried elsewhere
