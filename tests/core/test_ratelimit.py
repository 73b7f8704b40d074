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


def test_buckets_on_one_file_share_the_rate(tmp_path):
    """Two inputs of one account (two processes: two objects here) take their tokens
    from one state file: together they stay within one bucket's rate."""
    from mailsec.core.ratelimit import SharedTokenBucket

    clock = FakeClock()
    first, second = (
        SharedTokenBucket.in_folder(
            str(tmp_path / "limits"), "ser_account:acme", 2.0, 3, clock=clock, sleep=clock.sleep
        )
        for _ in range(2)
    )
    assert first.path == second.path
    times = []
    for _ in range(30):
        for bucket in (first, second):
            bucket.acquire()
            times.append(clock.now)
    # 60 tokens at 2 a second with 3 in the bucket: 28.5 s at least
    assert times[-1] - times[0] >= (60 - 3) / 2.0
    assert max_in_any_window(times, 10.0) <= 3 + 2.0 * 10
    other = SharedTokenBucket.in_folder(str(tmp_path / "limits"), "ser_account:other", 2.0, 3)
    assert other.path != first.path  # another account has its own limit
    assert (tmp_path / "limits").stat().st_mode & 0o777 == 0o700


def test_a_damaged_or_older_boot_state_starts_a_full_bucket(tmp_path):
    from mailsec.core.ratelimit import SharedTokenBucket

    clock = FakeClock()
    bucket = SharedTokenBucket(str(tmp_path / "b.json"), 1.0, 2, clock=clock, sleep=clock.sleep)
    (tmp_path / "b.json").write_text("{not json")
    assert bucket.acquire() == 0 and bucket.acquire() == 0 and bucket.acquire() == 1.0
    (tmp_path / "b.json").write_text('{"tokens": -50, "updated": 999999}')  # clock went back
    assert bucket.acquire() == 0


_CHILD = """
import sys, time
sys.path.insert(0, sys.argv[1])
from mailsec.core.ratelimit import SharedTokenBucket
bucket = SharedTokenBucket(sys.argv[2], 20.0, 1)
for _ in range(15):
    bucket.acquire()
    print(time.monotonic(), flush=True)
"""


def test_processes_share_one_bucket(tmp_path):
    """Real processes, real file locks: 2 x 15 tokens at 20 a second take 1.45 s."""
    import subprocess
    import sys
    from pathlib import Path

    package_bin = str(Path(__file__).resolve().parents[2] / "package" / "bin")
    state = str(tmp_path / "bucket.json")
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, package_bin, state],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    times = sorted(float(line) for child in children for line in child.communicate()[0].split())
    assert all(child.returncode == 0 for child in children)
    assert len(times) == 30
    assert times[-1] - times[0] >= (30 - 1) / 20.0 * 0.95
    assert max_in_any_window(times, 0.5) <= 1 + 20.0 * 0.5 + 1


@pytest.mark.parametrize(
    ("state", "wait"),
    [
        # far below a minute of reservations: read as that minute (5 + 60 tokens),
        # the wait for the 66th slot at 1 a second
        ('{"tokens": -1e300, "updated": 1000.0}', 66.0),
        ('{"tokens": -Infinity, "updated": 1000.0}', 0.0),  # not a number: a full bucket
        ('{"tokens": NaN, "updated": 1000.0}', 0.0),
        ('{"tokens": -3, "updated": NaN}', 0.0),
        ('{"tokens": 1e300, "updated": 1000.0}', 0.0),
    ],
)
def test_a_hostile_count_never_stalls_the_account_past_a_minute(tmp_path, state, wait):
    """A state file holding -1e300 once meant a sleep of 1e299 s (and Event.wait
    raising OverflowError on infinity), kept for every later caller."""
    import json

    from mailsec.core.ratelimit import SharedTokenBucket

    clock = FakeClock()
    path = tmp_path / "b.json"
    path.write_text(state)
    bucket = SharedTokenBucket(str(path), 1.0, 5, clock=clock, sleep=clock.sleep)
    assert bucket.acquire() == pytest.approx(wait)
    written = json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(name))
    assert -65.0 - 1.0 <= written["tokens"] <= 5.0
    # and the next caller's wait follows on from a sane count
    assert bucket.acquire() <= 67.0


def test_a_link_or_pipe_at_the_state_path_is_replaced_never_followed(tmp_path):
    import os

    from mailsec.core.ratelimit import SharedTokenBucket

    clock = FakeClock()
    victim = tmp_path / "victim.txt"
    victim.write_text("someone else's file")
    path = tmp_path / "b.json"
    path.symlink_to(victim)
    bucket = SharedTokenBucket(str(path), 1.0, 2, clock=clock, sleep=clock.sleep)
    assert bucket.acquire() == 0
    assert victim.read_text() == "someone else's file"
    assert not path.is_symlink() and path.is_file()
    assert (path.stat().st_mode & 0o777) == 0o600
    assert bucket.acquire() == 0 and bucket.acquire() == 1.0  # the new file counts
    path.unlink()
    os.mkfifo(path)
    assert bucket.acquire() == 0  # a pipe is no state: a new, full bucket
    assert path.is_file()


def test_a_state_file_of_another_user_is_replaced(tmp_path):
    import os

    from mailsec.core.ratelimit import SharedTokenBucket

    if os.getuid() != 0:
        pytest.skip("making a file of another user's needs root")
    clock = FakeClock()
    path = tmp_path / "b.json"
    path.write_text('{"tokens": -60, "updated": 1000.0}')  # a minute's wait, planted
    os.chown(path, 65534, 65534)
    bucket = SharedTokenBucket(str(path), 1.0, 2, clock=clock, sleep=clock.sleep)
    assert bucket.acquire() == 0
    assert path.stat().st_uid == os.getuid()


def test_a_folder_at_the_state_path_is_refused(tmp_path):
    from mailsec.core.ratelimit import SharedTokenBucket

    (tmp_path / "b.json").mkdir()
    bucket = SharedTokenBucket(str(tmp_path / "b.json"), 1.0, 2)
    with pytest.raises(OSError):
        bucket.acquire()


def test_the_folder_is_closed_to_others_and_a_linked_folder_refused(tmp_path):
    import os

    from mailsec.core.ratelimit import SharedTokenBucket

    folder = tmp_path / "state" / "limits"
    folder.mkdir(parents=True)
    os.chmod(folder, 0o755)  # noqa: S103  (the state a umask of 022 leaves)
    SharedTokenBucket.in_folder(str(folder), "ser_account:acme", 1.0, 2).acquire()
    assert folder.stat().st_mode & 0o777 == 0o700
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    linked = tmp_path / "state" / "linked"
    linked.symlink_to(elsewhere)
    with pytest.raises(PermissionError):
        SharedTokenBucket.in_folder(str(linked), "ser_account:acme", 1.0, 2)
    assert list(elsewhere.iterdir()) == []
