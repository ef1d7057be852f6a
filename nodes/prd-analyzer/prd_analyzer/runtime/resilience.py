"""Retry backoff and a circuit breaker, shared by the publisher and the consumer."""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable


def backoff_delay(attempt: int, base_s: float, max_s: float) -> float:
    """Exponential backoff with full jitter: attempt 1 waits up to ``base_s``, then doubles."""
    ceiling = min(max_s, base_s * (2 ** max(0, attempt - 1)))
    return random.uniform(ceiling / 2, ceiling)  # jitter, not cryptography


class BreakerState(enum.IntEnum):
    """Numeric values are what ``/metrics`` shows."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitOpenError(RuntimeError):
    """The breaker is open: the broker failed repeatedly, calls fail fast until the cool-down ends."""


class CircuitBreaker:
    """Opens after ``failure_threshold`` consecutive failures; after ``reset_s`` one probe
    call is let through (half-open): success closes the breaker, failure re-opens it."""

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_s = reset_s
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self._state = BreakerState.CLOSED
        self._probe_in_flight = False

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.reset_s:
            return BreakerState.HALF_OPEN
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    @property
    def retry_after_s(self) -> float:
        """Seconds until the next call may go ahead (0 unless open)."""
        if self._state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self.reset_s - (self._clock() - self._opened_at))

    def before_call(self) -> None:
        """Raise ``CircuitOpenError`` unless a call may go ahead now."""
        state = self.state
        if state is BreakerState.CLOSED:
            return
        if state is BreakerState.HALF_OPEN and not self._probe_in_flight:
            self._state = BreakerState.HALF_OPEN
            self._probe_in_flight = True
            return
        raise CircuitOpenError(
            f"circuit breaker open after {self._failures} consecutive failures; "
            f"next probe in {self.retry_after_s:.1f}s. Check that the Kafka broker is reachable."
        )

    def record_success(self) -> None:
        self._failures = 0
        self._probe_in_flight = False
        self._state = BreakerState.CLOSED

    def record_failure(self) -> None:
        self._failures += 1
        self._probe_in_flight = False
        if self._state is BreakerState.HALF_OPEN or self._failures >= self.failure_threshold:
            self._state = BreakerState.OPEN
            self._opened_at = self._clock()
