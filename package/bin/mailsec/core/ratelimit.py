"""Token-bucket rate limiters with an injectable clock (tests use a fake one): one
kept in memory, and one kept in a file that several processes share."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import stat
import threading
import time
from typing import Any, Callable, Protocol

from mailsec.core.files import private_dir

# A link at the state file's path is not followed (the flag is absent on Windows).
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class _Bucket:
    """What both buckets share: the rate, the capacity, the refill and the wait."""

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
        self.waited_seconds = 0.0

    def _take(self, tokens: float, elapsed: float) -> tuple[float, float]:
        """The tokens left once refilled for `elapsed` seconds and one taken (below
        zero: a reserved later slot), and the wait for that slot."""
        left = min(self.capacity, tokens + max(0.0, elapsed) * self.rate) - 1.0
        return left, 0.0 if left >= 0 else -left / self.rate

    def _wait(self, wait: float) -> float:
        if wait:
            self._sleep(wait)
            self.waited_seconds += wait
        return wait


class TokenBucket(_Bucket):
    """At most `capacity + rate * t` acquisitions in any span of t seconds.

    To stay under a vendor's "N requests per rolling minute", choose
    `rate = N_client / 60` with `capacity + N_client <= N`: a burst can never
    push a rolling window over the vendor's limit.
    """

    def __init__(self, rate_per_second: float, capacity: float = 1.0, **clocks: Any) -> None:
        super().__init__(rate_per_second, capacity, **clocks)
        self._tokens = self.capacity
        self._updated = self._clock()
        self._lock = threading.Lock()

    @classmethod
    def per_minute(cls, requests_per_minute: float, **kwargs) -> TokenBucket:
        return cls(requests_per_minute / 60.0, **kwargs)

    def acquire(self) -> float:
        """Take one token, sleeping until one is there; returns the time slept."""
        with self._lock:
            now = self._clock()
            self._tokens, wait = self._take(self._tokens, now - self._updated)
            self._updated = now
        return self._wait(wait)


class RateLimiter(Protocol):
    """What an HTTP client needs of a limiter: one token per request."""

    waited_seconds: float

    def acquire(self) -> float: ...


class SharedTokenBucket(_Bucket):
    """A token bucket whose state is a small file, shared by every process that
    opens the same file: two inputs on one vendor account then share the account's
    limit instead of each spending all of it (docs/ser_report.md, "Rate limit").

    Each `acquire` takes an exclusive lock on the file, refills, takes a token (the
    count may go below zero: a reservation of a later slot), writes the state back
    and releases the lock; the wait for a reserved slot happens outside the lock.
    Processes on one host share the monotonic clock; a clock that went back (the
    host restarted) or a damaged file starts a full bucket, and a count below a
    minute's worth of reservations is read as that minute: a bad file never stalls
    the account's inputs for longer. Every process refills at its own rate: callers
    with different rates never pass the highest of them.
    """

    def __init__(
        self,
        path: str,
        rate_per_second: float,
        capacity: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(rate_per_second, capacity, clock=clock, sleep=sleep)
        self.path = path

    @classmethod
    def in_folder(cls, folder: str, key: str, rate_per_second: float, capacity: float = 1.0,
                  **kwargs) -> SharedTokenBucket:  # fmt: skip
        """The bucket of `key` (e.g. an account) in a private folder, made if needed
        (and closed to others if it was open)."""
        parent = os.path.dirname(folder)
        if parent:
            os.makedirs(parent, exist_ok=True)
        private_dir(folder)
        name = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32] + ".json"
        return cls(os.path.join(folder, name), rate_per_second, capacity, **kwargs)

    def _reserve(self, state: dict) -> float:
        now = self._clock()
        tokens, updated = state.get("tokens"), state.get("updated")
        readable = (
            isinstance(tokens, (int, float)) and isinstance(updated, (int, float))
            and math.isfinite(tokens) and math.isfinite(updated)
        )  # fmt: skip
        if not readable or now < updated:  # damaged, or written on another boot's clock
            tokens, updated = self.capacity, now
        # each waiting caller holds one reservation: a minute of them is more than
        # the inputs of one account ever queue, so a lower count is damage
        tokens = max(-self.capacity - self.rate * 60.0, tokens)
        tokens, wait = self._take(tokens, now - updated)
        state.update(tokens=tokens, updated=now)
        return wait

    def acquire(self) -> float:
        """Take one token, sleeping until its slot; returns the time slept."""
        fd = self._open_state()
        try:
            _lock(fd)
            try:
                raw = os.read(fd, 4096)
                try:
                    state = json.loads(raw.decode("utf-8")) if raw else {}
                except ValueError:
                    state = {}
                if not isinstance(state, dict):
                    state = {}
                wait = self._reserve(state)
                data = json.dumps(state).encode("utf-8")
                os.lseek(fd, 0, os.SEEK_SET)
                os.ftruncate(fd, 0)
                os.write(fd, data)
            finally:
                _unlock(fd)
        finally:
            os.close(fd)
        return self._wait(wait)

    def _open_state(self) -> int:
        """The state file opened for update: a plain file of this user's. Anything
        else at its path (a link, a pipe, another user's file) is removed and a new
        file made; what cannot be removed (a folder) is refused."""
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o600)
            except OSError as error:
                if error.errno not in (errno.ELOOP, errno.EMLINK):  # EMLINK: BSD's
                    raise
            else:
                info = os.fstat(fd)
                if stat.S_ISREG(info.st_mode) and _is_mine(info):
                    return fd
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):  # another process removed it
                os.unlink(self.path)
        raise PermissionError(f"{self.path} is not a plain file of this user's: refusing it")


def _is_mine(info: os.stat_result) -> bool:
    return not hasattr(os, "getuid") or info.st_uid == os.getuid()


try:
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX)

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

except ImportError:  # Windows
    import msvcrt

    def _lock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_LOCK, 1)  # retries for 10 s itself
                return
            except OSError:
                continue

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
