"""One model served by several replicas (e.g. vLLM servers): spread requests, route around failures.

Each request goes to the replica with the fewest requests in flight (ties rotate). A replica whose
request fails with a connection error or a 5xx is taken out for a cool-down that doubles with each
consecutive failure; after it, the replica gets requests again and one success restores it fully.
The pool makes one attempt per call like any adapter: the failure is raised (naming the replica) and
`harness.run.retry` decides whether to try again, which then lands on another replica.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from .base import Adapter, AdapterError, ChatRequest, ChatResponse

# Failures that say "this replica is unwell" rather than "this request is bad" or "slow down".
REPLICA_FAILURES = ("connection", "server")


@dataclass
class Replica:
    """One replica's bookkeeping: load for least-outstanding choice, failures for its cool-down."""
    adapter: Adapter
    name: str
    outstanding: int = 0
    failures: int = 0  # consecutive
    down_until: float = 0.0
    requests: int = 0


class PooledAdapter(Adapter):
    """Several servers of one model as one adapter: requests go to the least busy healthy replica."""
    def __init__(self, replicas: list[Adapter], names: list[str], *, cooldown_s: float = 2.0,
                 max_cooldown_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        if not replicas or len(replicas) != len(names):
            raise ValueError("a pool needs at least one replica, each with a name")
        self.spec = replicas[0].spec
        self.replicas = [Replica(a, n) for a, n in zip(replicas, names)]
        self.cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self._clock = clock
        self._turn = 0

    def describe(self) -> dict[str, Any]:
        """The first replica's description with every replica's URL, for the manifest."""
        first = dict(self.replicas[0].adapter.describe())
        first.pop("base_url", None)
        return {**first, "base_urls": [r.name for r in self.replicas]}

    def cache_identity(self) -> dict[str, Any] | None:
        """Any replica may answer, so the identity is the model and the whole set of servers."""
        if self.replicas[0].adapter.cache_identity() is None:
            return None
        return {"spec": self.spec, "base_urls": sorted(r.name for r in self.replicas)}

    def pick(self) -> Replica:
        """The healthy replica with the fewest requests in flight; if none is healthy, the one
        whose cool-down ends first (better to try than to stall the run)."""
        now = self._clock()
        n = len(self.replicas)
        order = [self.replicas[(self._turn + i) % n] for i in range(n)]
        self._turn = (self._turn + 1) % n
        healthy = [r for r in order if r.down_until <= now]
        if not healthy:
            return min(order, key=lambda r: r.down_until)
        return min(healthy, key=lambda r: r.outstanding)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Send to the least busy replica that is not cooling down; a failure cools it down."""
        replica = self.pick()
        replica.outstanding += 1
        replica.requests += 1
        try:
            response = await replica.adapter.complete(request)
        except AdapterError as exc:
            if exc.kind in REPLICA_FAILURES:
                self._take_out(replica)
            raise _naming(exc, replica.name) from None
        finally:
            replica.outstanding -= 1
        replica.failures = 0
        replica.down_until = 0.0
        response.meta["replica"] = replica.name
        return response

    def _take_out(self, replica: Replica) -> None:
        replica.failures += 1
        pause = min(self.cooldown_s * 2 ** (replica.failures - 1), self.max_cooldown_s)
        replica.down_until = max(replica.down_until, self._clock() + pause)

    async def aclose(self) -> None:
        """Close every replica."""
        for replica in self.replicas:
            await replica.adapter.aclose()


def _naming(exc: AdapterError, name: str) -> AdapterError:
    """The same classified failure, its message prefixed with the replica it came from."""
    named = AdapterError(exc.kind, f"{name}: {exc.message}", retryable=exc.retryable,
                         status=exc.status, retry_after=exc.retry_after, reason=exc.reason,
                         fatal=exc.fatal and exc.kind == "auth")  # one dead replica is not fatal
    named.attempts = exc.attempts
    return named
