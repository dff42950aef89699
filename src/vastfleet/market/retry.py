"""The retry policy of marketplace calls: exponential backoff with jitter, bounded in attempts and time.

Owns: when to try a failed call again and how long to wait (honouring a server's Retry-After, capped).
Never decides what a failure means to the caller (that is `errors.translate`) and never calls vast.

The `vastai` client has a retry loop of its own (429/502/503/504, three tries, 0.15 s then x1.5). The
adapter builds its client with one try so that this policy is the only one: one place to bound the time a
call may take, and no hidden repeats of a non-idempotent create on a 502.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, stop_before_delay
from tenacity.wait import wait_base

from vastfleet.market.errors import retry_after

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. The defaults suit the real vast.ai (rate limits of 1-5.5 s per endpoint)."""

    attempts: int = 5  # total tries, the first included
    initial_s: float = 0.5  # first backoff; doubles each time
    max_wait_s: float = 8.0  # longest single wait, Retry-After included
    jitter_s: float = 0.5  # uniform random extra per wait, spreads out a fleet of callers
    max_total_s: float = 30.0  # no new try starts after this long (waits included)
    honour_retry_after: bool = True
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")
        if min(self.initial_s, self.max_wait_s, self.jitter_s, self.max_total_s) < 0:
            raise ValueError("RetryPolicy durations must not be negative")

    @classmethod
    def fast(cls, attempts: int = 3, sleep: Callable[[float], None] = time.sleep) -> RetryPolicy:
        """Millisecond waits, for tests."""
        return cls(
            attempts=attempts, initial_s=0.005, max_wait_s=0.02, jitter_s=0.005, max_total_s=5.0, sleep=sleep
        )

    @classmethod
    def none(cls) -> RetryPolicy:
        return cls(attempts=1)

    def run(self, fn: Callable[[], T], retryable: Callable[[BaseException], bool]) -> T:
        """`fn()`, tried again while it raises an exception `retryable` accepts; the last one is re-raised."""
        retrying = Retrying(
            stop=stop_after_attempt(self.attempts) | stop_before_delay(self.max_total_s),
            wait=_Wait(self),
            retry=retry_if_exception(retryable),
            sleep=self.sleep,
            reraise=True,
        )
        return retrying(fn)


class _Wait(wait_base):
    """Retry-After when the server gave one, else exponential with jitter; never above `max_wait_s`."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if self.policy.honour_retry_after and exc is not None:
            hint = retry_after(exc)
            if hint is not None:
                return min(hint, self.policy.max_wait_s)
        # written out rather than tenacity's wait_exponential_jitter, whose arguments changed across versions
        exponent = max(0, retry_state.attempt_number - 1)
        backoff = min(self.policy.initial_s * 2.0**exponent, self.policy.max_wait_s)
        return min(backoff + random.uniform(0.0, self.policy.jitter_s), self.policy.max_wait_s)
