"""A token-bucket rate limiter with an injectable clock (tests use a fake one)."""

from __future__ import annotations

import threading
import time
from typing import Callable


class TokenBucket:
    """At most `capacity + rate * t` acquisitions in any span of t seconds.

    To stay under a vendor's "N requests per rolling minute", choose
    `rate = N_client / 60` with `capacity + N_client <= N`: a burst can never
    push a rolling window over the vendor's limit.
    """

    def __init__(
        self,
        rate_per_second: float,
        capacity: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate_per_second <= 0 or capacity < 1:
            raise ValueError("rate must be positive and capacity at least 1")
        self.rate = float(rate_per_second)
        self.capacity = float(capacity)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.capacity
        self._updated = clock()
        self._lock = threading.Lock()
        self.waited_seconds = 0.0

    @classmethod
    def per_minute(cls, requests_per_minute: float, **kwargs) -> TokenBucket:
        return cls(requests_per_minute / 60.0, **kwargs)

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)
        self._updated = now

    def acquire(self) -> float:
        """Take one token, sleeping until one is there; returns the time slept."""
        with self._lock:
            self._refill(self._clock())
            self._tokens -= 1.0
            wait = 0.0 if self._tokens >= 0 else -self._tokens / self.rate
        if wait:
            self._sleep(wait)
            self.waited_seconds += wait
        return wait
