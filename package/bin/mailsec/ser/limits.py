"""What both SER inputs send under: the retry policy and the account's rate limit
(docs/ser_report.md "Rate limit", docs/ser_usage.md)."""

from __future__ import annotations

import math
import os
import time
from typing import Callable, Optional

from mailsec.core.http import RetryPolicy
from mailsec.core.ratelimit import RateLimiter, SharedTokenBucket, TokenBucket

__all__ = ["RATE_LIMIT_FOLDER", "SER_RETRY", "client_rate_limiter"]

RATE_LIMIT_FOLDER = "rate_limits"  # under InputRun.shared_state_dir
# 429s and 5xx bursts are ridden out: up to 8 tries a request, backoff up to a minute.
SER_RETRY = RetryPolicy(max_attempts=8, backoff_base=1.0, backoff_max=60.0, max_retry_after=300.0)


def client_rate_limiter(
    max_requests_per_minute: int,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    shared_state_dir: Optional[str] = None,
    account: str = "",
) -> RateLimiter:
    """A bucket that can never put more than `max_requests_per_minute` requests into
    any rolling minute: capacity + 60·rate stays under it, with 2 % left over for
    the jitter between when we send and when the server counts.

    With `shared_state_dir`, the bucket is the account's, shared by every input of
    this host that polls the account (ser_report's and ser_usage's): Proofpoint
    counts its limit per account, not per input (docs/ser_report.md, "Rate limit").
    That bucket runs on the monotonic clock, which the processes share."""
    limit = max_requests_per_minute
    capacity = max(1, limit // 60)
    margin = max(1, math.ceil(limit * 0.02))
    per_minute = max(limit - capacity - margin, limit / 2)
    if shared_state_dir:
        folder = os.path.join(shared_state_dir, RATE_LIMIT_FOLDER)
        return SharedTokenBucket.in_folder(
            folder, f"ser_account:{account}", per_minute / 60.0, capacity, sleep=sleep
        )
    return TokenBucket(per_minute / 60.0, capacity, clock=clock, sleep=sleep)
