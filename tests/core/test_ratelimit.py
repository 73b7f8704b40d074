"""The token bucket holds its rate over a burst, counted against a fake clock."""

from __future__ import annotations

import pytest

from mailsec.core.ratelimit import TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


def max_in_any_window(times: list[float], span: float) -> int:
    best, start = 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] >= span:
            start += 1
        best = max(best, end - start + 1)
    return best


@pytest.mark.parametrize(("per_minute", "capacity"), [(900, 1), (1000, 1), (60, 5)])
def test_a_burst_never_exceeds_the_rate_in_any_rolling_minute(per_minute, capacity):
    clock = FakeClock()
    bucket = TokenBucket.per_minute(per_minute, capacity=capacity, clock=clock, sleep=clock.sleep)
    times = []
    for _ in range(per_minute * 3):
        bucket.acquire()
        times.append(clock.now)
    assert max_in_any_window(times, 60.0) <= per_minute + capacity
    # and it does not go slower than the rate either
    elapsed = times[-1] - times[0]
    assert elapsed == pytest.approx((len(times) - capacity) * 60.0 / per_minute, rel=1e-6)


def test_idle_time_refills_only_up_to_capacity():
    clock = FakeClock()
    bucket = TokenBucket(1.0, capacity=3, clock=clock, sleep=clock.sleep)
    clock.now += 3600  # an hour idle
    waits = [bucket.acquire() for _ in range(5)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3:] == [pytest.approx(1.0), pytest.approx(1.0)]


def test_refuses_nonsense_settings():
    with pytest.raises(ValueError):
        TokenBucket(0)
    with pytest.raises(ValueError):
        TokenBucket(1.0, capacity=0.5)
