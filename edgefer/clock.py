"""The daemon's timeline: wall-clock time that advances with the monotonic clock, re-anchored
when the wall clock is stepped, and a gate that holds publishing while the clock is wrong.

A Raspberry Pi 4 has no real-time clock. It boots with the time fake-hwclock saved at the
last shutdown (or 1970, or the date the image was built), and NTP steps it seconds or
minutes later. Summaries are identified by their wall-clock ``end``, so the timeline must
follow such a correction at once; between corrections it advances with the monotonic clock,
so buckets keep their length whatever small adjustments the wall clock receives.

Two things here exist for tests only and say so: ``Clock`` takes its time sources as
arguments, and ``$EDGEFER_CLOCK_OFFSET_FILE`` shifts the daemon's wall clock by the number
of seconds in a file, so that a real daemon can be shown a clock that is corrected while it
runs without root and without touching the machine's clock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

#: A wall clock before this instant is certainly wrong (1970 after a boot without a clock,
#: or an image's build date): no edgefer release is older. Raised with each release.
EARLIEST = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
#: systemd-timesyncd creates this file once it has synchronised the clock with NTP.
SYNCED_FLAG = Path("/run/systemd/timesync/synchronized")
#: A difference between the wall clock and the timeline larger than this is a step.
STEP_TOLERANCE = 2.0
#: The longest wait for a clock that reads earlier than the last summary published.
BEHIND_WAIT = 600.0
#: TEST ONLY: names a file holding a number of seconds (may be negative, a fraction) that the
#: daemon adds to the system's wall clock; re-read on every look at the clock. Never set it in
#: production: it exists so that tests can step a real daemon's clock without root.
OFFSET_ENV = "EDGEFER_CLOCK_OFFSET_FILE"


def iso(t: float) -> str:
    """UTC, second precision, as the summaries write it."""
    try:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"{t:.0f} (Unix time)"


def offset_wall(path: str | os.PathLike[str], base: Callable[[], float] = time.time) -> Callable[[], float]:
    """TEST ONLY: a wall clock that reads ``base()`` plus the seconds written in ``path``.

    A missing, empty or unreadable file keeps the last offset read (0 at first), so a file
    caught while it is rewritten is never taken for a step."""
    offset = 0.0
    file = Path(path)

    def wall() -> float:
        nonlocal offset
        with contextlib.suppress(OSError, ValueError):
            text = file.read_text().strip()
            offset = float(text) if text else offset
        return base() + offset

    return wall


def system_wall() -> Callable[[], float]:
    """The wall clock the daemon uses: the system's, or the test hook's when it is set."""
    path = os.environ.get(OFFSET_ENV)
    if path:
        log.warning("%s is set (%s): the wall clock is offset for testing", OFFSET_ENV, path)
        return offset_wall(path)
    return time.time


@dataclass(frozen=True)
class Step:
    """One step of the wall clock: the timeline read ``before`` and the wall clock ``after``,
    at one moment; ``since`` is the timeline's time when it was last anchored."""

    before: float
    after: float
    since: float

    @property
    def seconds(self) -> float:
        return self.after - self.before


class Clock:
    """Wall-clock time advanced by the monotonic clock between steps of the wall clock.

    :meth:`now` and :meth:`at` never look at the wall clock, so a timeline read twice in one
    loop iteration agrees with itself; :meth:`check`, called once per iteration, compares
    the wall clock with the timeline and re-anchors when they differ by more than
    ``tolerance`` seconds (NTP's step at boot, an operator's ``date -s``, a resume)."""

    def __init__(
        self,
        wall: Callable[[], float] | None = None,
        mono: Callable[[], float] | None = None,
        *,
        tolerance: float = STEP_TOLERANCE,
    ) -> None:
        self.wall = wall or time.time
        self.mono = mono or time.monotonic
        self.tolerance = tolerance
        self.steps = 0
        self.last_step: Step | None = None
        self.mono0 = self.mono()
        self.wall0 = self.wall()

    def at(self, mono: float) -> float:
        """The timeline's time at monotonic time ``mono``."""
        return self.wall0 + (mono - self.mono0)

    def now(self) -> float:
        return self.at(self.mono())

    def check(self) -> Step | None:
        """Re-anchor when the wall clock has stepped; the step, or None."""
        mono = self.mono()
        wall = self.wall()
        before = self.at(mono)
        if abs(wall - before) <= self.tolerance:
            return None
        step = Step(before=before, after=wall, since=self.wall0)
        self.wall0, self.mono0 = wall, mono
        self.steps += 1
        self.last_step = step
        return step


class ClockGate:
    """Whether summaries may be published on the current clock, and if not, why.

    The daemon waits for the clock (counting nothing, publishing nothing) while

    - the clock reads earlier than :data:`EARLIEST`: it is certainly wrong, and summaries
      stamped 1970 would be useless and would take keys of their own; or
    - at start, the clock reads earlier than the last summary this state directory
      published: a Pi that booted with fake-hwclock's saved time, before NTP. This wait ends
      when the clock passes that summary (NTP stepped it forward, or time went by), when
      systemd-timesyncd reports the clock synchronised, or after ``behind_wait`` seconds;
      in the last two cases the clock is taken as right and the earlier run's as wrong.

    A clock that was once trusted is not doubted again for running behind: a step back
    during a run is a correction, handled by the mood tracker (``MoodTracker.rewind``)."""

    def __init__(
        self,
        last_published: float | None,
        *,
        earliest: float = EARLIEST,
        synced: Callable[[], bool] = SYNCED_FLAG.exists,
        behind_wait: float = BEHIND_WAIT,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self.last_published = last_published
        self.earliest = earliest
        self.synced = synced
        self.mono = mono
        self.deadline = mono() + behind_wait
        self.trusted = False

    def reason(self, now: float) -> str | None:
        """Why publishing must wait at timeline time ``now``, or None when it need not."""
        if now < self.earliest:
            return f"the clock reads {iso(now)}, before this release ({iso(self.earliest)[:10]})"
        if self.trusted or self.last_published is None or now >= self.last_published:
            self.trusted = True
            return None
        if self.synced() or self.mono() >= self.deadline:
            self.trusted = True
            return None
        return (
            f"the clock reads {iso(now)}, {self.last_published - now:.0f} s before the last summary "
            f"published ({iso(self.last_published)})"
        )
