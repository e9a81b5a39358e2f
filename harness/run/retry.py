"""The one retry policy: exponential backoff with full jitter, honouring `Retry-After`.

Adapters only classify failures (`AdapterError.retryable`); this module decides what to do with them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Awaitable, Callable, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from harness import config
from harness.adapters.base import AdapterError, ChatResponse

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """The one retry policy: which failures are retried, how often and how long to wait."""
    max_attempts: int = config.MAX_ATTEMPTS
    initial_wait_s: float = 1.0
    max_wait_s: float = 60.0

    async def call(self, attempt: Callable[[], Awaitable[T]],
                   on_retry: Callable[[AdapterError], None] | None = None) -> T:
        """Run `attempt` until it succeeds, fails for good, or attempts run out.

        Raises the last `AdapterError` with `.attempts` set to how many were made.
        """
        try:  # fast path: most calls succeed at once and need none of tenacity's machinery
            response = await attempt()
        except AdapterError as exc:
            if not exc.retryable or self.max_attempts <= 1:
                exc.attempts = 1
                raise
            replay: list[AdapterError] = [exc]
        else:
            _count(response, 1)
            return response

        async def replay_then_attempt() -> T:
            if replay:  # tenacity's first attempt is the failure already seen
                raise replay.pop()
            return await attempt()

        jitter = wait_random_exponential(multiplier=self.initial_wait_s, max=self.max_wait_s)

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            floor = getattr(exc, "retry_after", None) or 0.0
            return max(min(floor, self.max_wait_s), jitter(state))

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            if on_retry is not None and isinstance(exc, AdapterError):  # only they are retried
                on_retry(exc)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=wait,
            retry=retry_if_exception(lambda e: isinstance(e, AdapterError) and e.retryable),
            before_sleep=before_sleep,
            reraise=True,
        )
        number = 0
        try:
            async for attempt_ctx in retrying:
                number = attempt_ctx.retry_state.attempt_number
                with attempt_ctx:
                    response = await replay_then_attempt()
        except AdapterError as exc:
            exc.attempts = number
            raise
        _count(response, number)
        return response


def _count(response: object, attempts: int) -> None:
    """Chat responses carry their attempt count (other API results, e.g. a batch's, do not)."""
    if isinstance(response, ChatResponse):
        response.attempts = attempts


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A `Retry-After` header in seconds: delay-seconds or an HTTP-date (RFC 9110 §10.2.3);
    None when absent or unreadable."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP-date is always GMT
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
