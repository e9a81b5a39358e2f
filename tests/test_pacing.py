"""--max-rpm, --max-tpm and --max-cost: pacing on an injected clock, the budget through the CLI."""
from __future__ import annotations

import asyncio
import json

import pytest

from harness.run.pacing import RateLimiter, parse_duration
from harness.servers.testserver import TestServer
from tests.conftest import read_jsonl, ubench


class FakeTime:
    """A clock that only moves when the limiter sleeps: waits are exact and take no time."""

    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _starts(limiter: RateLimiter, fake: FakeTime, tokens: list[int]) -> list[float]:
    async def go():
        starts = []
        for n in tokens:
            await limiter.acquire(n)
            starts.append(fake.now)
        return starts
    return asyncio.run(go())


def test_requests_per_minute_space_requests_evenly():
    fake = FakeTime()
    starts = _starts(RateLimiter(60, None, fake.clock, fake.sleep), fake, [0] * 5)
    assert starts == pytest.approx([0, 1, 2, 3, 4])  # 60 per minute: one a second


def test_tokens_per_minute_pace_by_the_estimated_tokens_and_give_back_the_rest():
    fake = FakeTime()
    limiter = RateLimiter(None, 6000, fake.clock, fake.sleep)  # 100 tokens a second
    # a request larger than one second's worth waits for a full bucket and leaves a debt
    assert _starts(limiter, fake, [100, 100, 300]) == pytest.approx([0, 1, 2])
    limiter.settle(estimated=300, actual=100)  # the server counted less: 200 back
    assert _starts(limiter, fake, [200]) == pytest.approx([3])  # without it: 5


def test_the_servers_remaining_and_reset_headers_are_followed():
    fake = FakeTime()
    limiter = RateLimiter(600, None, fake.clock, fake.sleep)
    limiter.observe({"remaining-requests": "0", "reset-requests": "6m0s"})
    assert _starts(limiter, fake, [0]) == pytest.approx([360])


@pytest.mark.parametrize("text, seconds", [("1s", 1), ("6m0s", 360), ("20ms", 0.02),
                                           ("1h2m3.5s", 3723.5), ("soon", None), ("", None)])
def test_reset_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_rpm_limited_run_answers_everything_and_records_its_limits(tmp_path):
    out = tmp_path / "run"
    with TestServer("random") as server:
        ubench("run", "--model", "vllm/m", "--base-url", server.base_url, "--output", str(out),
               "--limit", "8", "--max-rpm", "6000", "--max-tpm", "1000000")
        assert server.stats.requests == 8
    assert len(read_jsonl(out / "samples.jsonl")) == 8
    runtime = json.loads((out / "manifest.json").read_text())["runtime"]
    assert runtime["max_rpm"] == 6000 and runtime["max_tpm"] == 1000000


def test_max_cost_stops_before_the_budget_and_a_rerun_resumes(tmp_path):
    prices = tmp_path / "prices.yaml"  # $0.001 per output token, input free
    prices.write_text(json.dumps({"models": {"vllm/m": {"input": 0, "output": 1000}}}))
    out = tmp_path / "run"
    args = ["run", "--model", "vllm/m", "--output", str(out), "--price-file", str(prices),
            "--max-tokens", "4", "--concurrency", "1"]
    with TestServer("letter:A") as server:  # each answer: 1 completion token = $0.001
        # a request may cost up to 4 tokens ($0.004): sent while spent + 0.004 <= 0.0095
        proc = ubench(*args, "--base-url", server.base_url, "--max-cost", "0.0095", check=False)
        assert proc.returncode == 1
        assert server.stats.requests == 6
        assert "stopped before exceeding --max-cost $0.0095: spent $0.0060" in proc.stderr
        assert len(read_jsonl(out / "samples.jsonl")) == 6

        ubench(*args, "--base-url", server.base_url, "--max-cost", "1")
        records = read_jsonl(out / "samples.jsonl")
    assert len(records) == len({r["item_id"] for r in records}) == server.stats.requests == 136
    assert json.loads((out / "summary.json").read_text())["cost_usd"] == pytest.approx(0.136)


def test_max_cost_needs_a_price(tmp_path):
    proc = ubench("run", "--model", "vllm/unpriced", "--output", str(tmp_path / "r"),
                  "--max-cost", "5", check=False)
    assert proc.returncode == 1 and "no price for vllm/unpriced" in proc.stderr


def test_the_servers_rate_limit_headers_reach_the_limiter(tmp_path):
    from harness.adapters import ChatRequest, GenerationParams, create_adapter
    from harness.run.pacing import PacedAdapter

    fake = FakeTime()
    limiter = RateLimiter(6000, None, fake.clock, fake.sleep)
    headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s",
               "x-ratelimit-remaining-tokens": "9000", "x-ratelimit-reset-tokens": "6m0s"}
    with TestServer("letter:B", headers=headers) as server:
        adapter = PacedAdapter(create_adapter("vllm/m", base_url=server.base_url), limiter=limiter)

        async def two():
            request = ChatRequest("x", [{"role": "user", "content": [{"type": "text",
                                                                      "text": "A) a\nB) b"}]}],
                                  None, GenerationParams(max_tokens=4))
            first = await adapter.complete(request)
            start = fake.now
            await adapter.complete(request)
            await adapter.aclose()
            return first, start
        first, start = asyncio.run(two())
    assert first.meta["ratelimit"]["remaining-tokens"] == "9000"
    assert start == 0 and fake.sleeps == pytest.approx([2.0])  # waited for the reset, no more


def test_the_estimate_takes_each_images_size_from_its_encoder():
    # the sizes travel with the request (the runner's and the few-shot bank's encoders), so an
    # image is never decoded again per request: these URLs could not even be decoded
    from dataclasses import replace

    from harness.adapters import ChatRequest, GenerationParams, create_adapter
    from harness.adapters.base import ExampleImage
    from harness.run.pacing import PacedAdapter
    from harness.score.pricing import find_price, image_tokens, load_table
    from harness.score.tokens import DEFAULT_IMAGE_TOKENS

    rule = find_price("openai/gpt-4o", load_table()).image_rule
    inner = create_adapter("vllm/m", base_url="http://127.0.0.1:9/v1")
    paced = PacedAdapter(inner, image_rule=rule, image_detail="high", model="gpt-4o")
    text = ChatRequest("x", [{"role": "user", "content": [{"type": "text", "text": "Q?"}]}],
                       None, GenerationParams())
    shot = ExampleImage("data:image/png;base64,not-an-image", "0" * 64, (512, 512))
    request = replace(text, image_data_url="data:image/png;base64,not-an-image",
                      image_size=(2048, 1024), example_images={"e": shot})
    assert paced.prompt_estimate(request) - paced.prompt_estimate(text) == \
        image_tokens(rule, 2048, 1024, "high") + image_tokens(rule, 512, 512, "high") != \
        2 * DEFAULT_IMAGE_TOKENS
    unsized = replace(request, image_size=None, example_images=None)  # not made by the runner
    assert paced.prompt_estimate(unsized) - paced.prompt_estimate(text) == DEFAULT_IMAGE_TOKENS


def test_max_cost_counts_what_the_judge_spends(tmp_path):
    # Model and judge both priced, output only ($0.001 a token). The judge's worst case for an
    # item is held before the model is asked, so no answer is paid for and then dropped: what
    # the summaries record equals what the two servers billed, after each stop and resume, and
    # never exceeds --max-cost.
    from tests.test_judge import responder

    prices = tmp_path / "prices.yaml"
    prices.write_text(json.dumps({"models": {"openai/vlm": {"input": 0, "output": 1000},
                                             "openai/judge": {"input": 0, "output": 1000}}}))
    out = tmp_path / "run"
    args = ["run", "--model", "openai/vlm", "--judge", "openai/judge", "--limit", "40",
            "--output", str(out), "--price-file", str(prices), "--concurrency", "1",
            "--max-tokens", "50", "--no-progress"]

    def recorded_and_billed(model, judge) -> tuple[float, float]:
        summary = json.loads((out / "summary.json").read_text())
        recorded = summary["cost_usd"] + (summary.get("judge_usage") or {}).get("cost_usd", 0)
        billed = (model.stats.usage["completion_tokens"]
                  + judge.stats.usage["completion_tokens"]) / 1000
        return recorded, billed

    with TestServer(responder) as model, TestServer(responder, usage_details=True) as judge:
        urls = ["--base-url", model.base_url, "--judge-base-url", judge.base_url]
        proc = ubench(*args, *urls, "--max-cost", "0.5", check=False)
        assert proc.returncode == 1 and "stopped before exceeding --max-cost $0.5" in proc.stderr
        recorded, billed = recorded_and_billed(model, judge)
        assert recorded == pytest.approx(billed) and 0 < billed <= 0.5
        assert judge.stats.requests > 0 and len(read_jsonl(out / "samples.jsonl")) < 40

        proc = ubench(*args, *urls, "--max-cost", "0.7", check=False)  # resumed, still capped
        assert proc.returncode == 1
        recorded, billed = recorded_and_billed(model, judge)
        assert recorded == pytest.approx(billed) and billed <= 0.7

        ubench(*args, *urls, "--max-cost", "100")  # every item, each judged as needed
        recorded, billed = recorded_and_billed(model, judge)
        assert recorded == pytest.approx(billed)
        records = read_jsonl(out / "samples.jsonl")
    assert len({r["item_id"] for r in records}) == 40 and len(records) == 40
    assert model.stats.requests == 40  # no answer was asked for twice
    from harness.score.judge import needs_judge
    asked = [r for r in records if needs_judge(r.get("rule_before_judge") or r["rule"])]
    assert asked and all("judge" in r for r in asked)
