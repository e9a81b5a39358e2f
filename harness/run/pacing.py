"""Rate and budget limits for paid APIs: `--max-rpm`, `--max-tpm`, `--max-cost`.

Requests wait for a token bucket (requests and tokens refilled continuously at the per-minute
rates; a request's tokens are estimated before it is sent, as OpenAI's limiter counts them: prompt
estimate plus max_tokens, and the difference to the reported usage is given back). When the server
sends `x-ratelimit-remaining-requests/-tokens`, the buckets never hold more than it says remain,
and at zero they wait for its `x-ratelimit-reset-*` time. The budget reserves each request's
worst-case cost (prompt estimate plus max_tokens of output) before sending it, and refuses the
request that could take spending past the limit: the run then stops cleanly, keeping everything
answered, and a re-run resumes. The clock and the sleep are injectable, so tests need no timing.
"""
from __future__ import annotations

import asyncio
import re
import time
from typing import Any, Awaitable, Callable

from harness.adapters import Adapter, ChatRequest, ChatResponse
from harness.adapters.base import WrappedAdapter
from harness.score.judge import PARAMS as JUDGE_PARAMS
from harness.score.judge import RESPONSE_TAIL, judge_prompt
from harness.score.pricing import Price
from harness.score.tokens import message_tokens, request_image_tokens, text_counter
from harness.score.usage import usage_counts

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class BudgetExceeded(Exception):
    """The next request could take the run past --max-cost; the message says what was spent."""


def parse_duration(text: str | None) -> float | None:
    """OpenAI's reset durations: `1s`, `6m0s`, `20ms`, `1h2m3.5s`."""
    if not text:
        return None
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


class Bucket:
    """A token bucket: `rate_per_min` refilled continuously, holding at most `capacity`."""

    def __init__(self, rate_per_min: float, capacity: float, now: float):
        self.rate = rate_per_min / 60.0
        self.capacity = capacity
        self.level = capacity
        self.stamp = now
        self.blocked_until = 0.0

    def refill(self, now: float) -> None:
        """Add the tokens earned since the last refill, up to the bucket's capacity."""
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until `amount` can be taken (a request larger than the bucket needs it full)."""
        self.refill(now)
        need = min(amount, self.capacity)
        return max(self.blocked_until - now, (need - self.level) / self.rate, 0.0)


class RateLimiter:
    """Paces requests by --max-rpm and --max-tpm (either may be None), FIFO."""

    def __init__(self, rpm: float | None, tpm: float | None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep):
        now = clock()
        # Burst of at most one second's worth (at least one request), as providers enforce
        # per-minute limits over shorter windows.
        self.requests = Bucket(rpm, max(1.0, rpm / 60), now) if rpm else None
        self.tokens = Bucket(tpm, max(1.0, tpm / 60), now) if tpm else None
        self.clock = clock
        self.sleep = sleep
        self._lock = asyncio.Lock()

    async def acquire(self, tokens: int) -> None:
        """Wait until `tokens` are in the bucket, then take them."""
        async with self._lock:
            while True:
                now = self.clock()
                waits = [b.wait_for(n, now) for b, n in ((self.requests, 1), (self.tokens, tokens))
                         if b is not None]
                wait = max(waits, default=0.0)
                if wait <= 0:
                    break
                await self.sleep(wait)
            for bucket, n in ((self.requests, 1), (self.tokens, tokens)):
                if bucket is not None:
                    bucket.level -= n

    def settle(self, estimated: int, actual: int | None) -> None:
        """Give back what the estimate took beyond what the server counted."""
        if self.tokens is not None and actual is not None:
            self.tokens.level = min(self.tokens.capacity, self.tokens.level + estimated - actual)

    def observe(self, limits: dict[str, str] | None) -> None:
        """Follow the server's x-ratelimit-remaining-* and x-ratelimit-reset-* headers."""
        if not limits:
            return
        now = self.clock()
        for bucket, kind in ((self.requests, "requests"), (self.tokens, "tokens")):
            remaining = _number(limits.get(f"remaining-{kind}"))
            if bucket is None or remaining is None:
                continue
            bucket.refill(now)
            bucket.level = min(bucket.level, remaining)
            if remaining <= 0:
                reset = parse_duration(limits.get(f"reset-{kind}")) or 1.0
                bucket.blocked_until = max(bucket.blocked_until, now + reset)


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


class Budget:
    """--max-cost: what the run has spent (earlier invocations included) and has in flight. One
    budget is shared by every adapter that spends (the model's and the judge's), each charging
    at its own `price`."""

    def __init__(self, max_usd: float, spent_before: float = 0.0):
        self.max_usd = max_usd
        self.spent = spent_before
        self.reserved = 0.0

    def reserve(self, price: Price, prompt_tokens: int, max_tokens: int) -> float:
        """Set aside the worst-case cost of a request; refused when the budget would be exceeded."""
        worst = price.cost(prompt_tokens, max_tokens)
        if self.spent + self.reserved + worst > self.max_usd + 1e-12:
            raise BudgetExceeded(
                f"stopped before exceeding --max-cost ${self.max_usd:g}: spent "
                f"${self.spent:.4f} so far (the next request could cost up to ${worst:.4f}); "
                "everything answered is saved: run the same command with a higher --max-cost "
                "to go on")
        self.reserved += worst
        return worst

    def settle(self, price: Price, reserved: float, usage: Any, sent: bool) -> None:
        """Replace a reservation with what the request cost: the `usage` its reply reported,
        the worst case when a reply came without usage, nothing when nothing was `sent`."""
        self.reserved -= reserved
        counts = usage_counts(usage) if sent else None
        if counts is not None:
            self.spent += price.cost(counts["prompt_tokens"], counts["completion_tokens"],
                                     counts["cached_tokens"])
        elif sent:  # no usage reported: count the worst case, never nothing
            self.spent += reserved


class JudgeAllowance:
    """--max-cost with --judge: the judge's worst case for an item is set aside before the model
    is asked about it, so an answer is never paid for and then dropped for want of the money to
    judge it; what the judge then spent (its reply's usage) replaces the hold."""

    def __init__(self, budget: Budget, price: Price, model: str):
        self.budget, self.price = budget, price
        self.counter = text_counter(model)[1]

    def hold(self, question: str, options: dict[str, str]) -> float:
        """Reserve the judge's worst case for one item (BudgetExceeded when it does not fit):
        its prompt with the longest response tail it is shown, a token per character."""
        prompt = judge_prompt(question, options, "")
        tokens = message_tokens([{"role": "user", "content": [{"type": "text", "text": prompt}]}],
                                self.counter) + RESPONSE_TAIL
        return self.budget.reserve(self.price, tokens, JUDGE_PARAMS.max_tokens)

    def settle(self, held: float, judged: dict[str, Any] | None) -> None:
        """Replace the hold with what the judge spent on the item (`judged`: the record's
        `judge`; None or a cached or failed verdict: nothing)."""
        judged = judged or {}
        sent = "usage" in judged and not judged.get("cached")
        self.budget.settle(self.price, held, judged.get("usage"), sent)


class PacedAdapter(WrappedAdapter):
    """Wraps an adapter with the rate limiter and/or the budget (charged at `price`, the
    wrapped model's; required with a budget)."""

    def __init__(self, inner: Adapter, *, limiter: RateLimiter | None = None,
                 budget: Budget | None = None, price: Price | None = None,
                 image_rule: dict[str, Any] | None = None, image_detail: str | None = None,
                 model: str = ""):
        super().__init__(inner)
        if budget is not None and price is None:
            raise ValueError("a budget needs the price of the model it charges")
        self.limiter = limiter
        self.budget = budget
        self.price = price
        self.image_rule = image_rule
        self.image_detail = image_detail
        self.counter = text_counter(model)[1]

    def prompt_estimate(self, request: ChatRequest) -> int:
        """Text and image tokens of the request, few-shot examples' images included (each by
        the size its encoder recorded: no image is decoded again per request)."""
        sizes = [request.image_size] if request.image_data_url else []
        sizes += [e.size for e in (request.example_images or {}).values()]
        return message_tokens(request.messages, self.counter) + sum(
            request_image_tokens(size, self.image_rule, self.image_detail) for size in sizes)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Send within the rate limits and the budget, then charge what the reply used."""
        prompt = self.prompt_estimate(request)
        reserved = self.budget.reserve(self.price, prompt, request.params.max_tokens) \
            if self.budget and self.price else 0.0
        response = None
        try:
            if self.limiter:
                await self.limiter.acquire(prompt + request.params.max_tokens)
            response = await self.inner.complete(request)
        finally:
            if self.budget and self.price:
                self.budget.settle(self.price, reserved,
                                   response.usage if response is not None else None,
                                   response is not None)
        if self.limiter:
            counts = usage_counts(response.usage)
            self.limiter.settle(prompt + request.params.max_tokens, (
                counts["prompt_tokens"] + counts["completion_tokens"]) if counts else None)
            self.limiter.observe(response.meta.get("ratelimit"))
        return response
