"""Report windows: where the walk starts, the next window, and the revisit schedule.

Times are epoch seconds (ints): windows are aligned to the epoch, so a `1d` window is
a UTC day, and every boundary is a whole second.
"""

from __future__ import annotations

from typing import Optional

from mailsec.core.timeutil import align_down

HOUR = 3600
DAY = 86400
# Ages (since a window ended) at which a window is polled again while SER may still
# reclassify its temporary failures; the last age is always `revisit_days`.
REVISIT_AGES = (HOUR, DAY, 3 * DAY, 7 * DAY)


def window_after(start: int, size: int) -> tuple[int, int]:
    """The window that starts at `start` and ends on the next aligned boundary.

    Normally `start` is aligned and the window is `size` long; after `window` was
    changed on an existing input, the first window is shorter so that the walk goes
    on from the checkpoint with no gap and no overlap.
    """
    return start, align_down(start, size) + size


def count_windows(start: int, until: float, size: int) -> int:
    if until < start:
        return 0
    first_end = align_down(start, size) + size
    if first_end > until:
        return 0
    return 1 + int((until - first_end) // size)


def revisit_schedule(revisit_days: int) -> tuple[int, ...]:
    """The ages (seconds after a window's end) of its scheduled polls after the first."""
    if revisit_days <= 0:
        return ()
    limit = revisit_days * DAY
    return (*(age for age in REVISIT_AGES if age < limit), limit)


def next_revisit_age(schedule: tuple[int, ...], polled_age: float) -> Optional[int]:
    """The next scheduled age after a poll made at `polled_age`; None when that poll
    was the window's last one (its events are final)."""
    for age in schedule:
        if age > polled_age:
            return age
    return None
