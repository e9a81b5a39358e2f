"""Adaptive concurrency (`--adaptive-concurrency`): grow while latency stays flat, back off on overload.

`ConcurrencyController` is a pure state machine fed one completed request at a time (no clock, no I/O),
so it is trivial to test. It judges the requests in windows of `limit` completions:
- any 429 or timeout in the window: multiply the limit by `backoff` (and stop doubling);
- otherwise, median latency within `tolerance` × the best window median seen: grow (double until
  the first overload, then +1 per window);
- otherwise (latency rising: the server is queueing): hold.
`AdaptiveConcurrency` wraps any adapter and keeps at most `limit` requests in flight.
"""
from __future__ import annotations

import asyncio
import statistics

from harness.adapters.base import Adapter, AdapterError, ChatRequest, ChatResponse, WrappedAdapter

OVERLOAD_KINDS = ("rate_limit", "timeout")


class ConcurrencyController:
    """Requests in flight, adjusted to latency: more while it holds, fewer when the server slows."""
    def __init__(self, maximum: int, *, minimum: int = 1, initial: int | None = None,
                 tolerance: float = 1.5, backoff: float = 0.5):
        if not 1 <= minimum <= maximum:
            raise ValueError("need 1 <= minimum <= maximum")
        self.minimum, self.maximum = minimum, maximum
        self.limit = max(minimum, min(maximum, initial if initial is not None else 4))
        self.tolerance, self.backoff = tolerance, backoff
        self.baseline_s: float | None = None
        self.slow_start = True
        self._latencies: list[float] = []
        self._seen = 0
        self._overloads = 0

    def observe(self, latency_s: float | None, *, overloaded: bool = False) -> int:
        """Record one finished request (latency None when it failed); returns the limit."""
        self._seen += 1
        self._overloads += overloaded
        if latency_s is not None:
            self._latencies.append(latency_s)
        if self._seen >= self.limit:
            self._decide()
        return self.limit

    def _decide(self) -> None:
        if self._overloads:
            self.slow_start = False
            self.limit = max(self.minimum, int(self.limit * self.backoff))
        elif self._latencies:
            median = statistics.median(self._latencies)
            if self.baseline_s is None or median < self.baseline_s:
                self.baseline_s = median
            if median <= self.baseline_s * self.tolerance:
                grown = self.limit * 2 if self.slow_start else self.limit + 1
                self.limit = min(self.maximum, grown)
        self._latencies, self._seen, self._overloads = [], 0, 0


class AdaptiveConcurrency(WrappedAdapter):
    """Keeps at most `controller.limit` requests of the wrapped adapter in flight."""

    def __init__(self, inner: Adapter, controller: ConcurrencyController):
        super().__init__(inner)
        self.controller = controller
        self.in_flight = 0
        self.peak_limit = controller.limit
        self._changed = asyncio.Condition()

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Wait for a free slot, then send; the latency adjusts the limit."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_flight < self.controller.limit)
            self.in_flight += 1
        latency, overloaded = None, False
        try:
            response = await self.inner.complete(request)
            latency = response.latency_s
            return response
        except AdapterError as exc:
            overloaded = exc.kind in OVERLOAD_KINDS
            raise
        finally:
            async with self._changed:
                self.in_flight -= 1
                self.controller.observe(latency, overloaded=overloaded)
                self.peak_limit = max(self.peak_limit, self.controller.limit)
                self._changed.notify_all()
