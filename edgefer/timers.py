"""The service loop's clocks of things to do: periodic duties and a frame-rate meter.

Both take the current time as an argument instead of reading a clock, so the loop passes
``time.monotonic()`` once per iteration and tests pass plain numbers: what is due when is
plain arithmetic, checked without waiting.
"""

from __future__ import annotations

from edgefer.config import Config

#: how often the status file and systemd's status line are refreshed, and the window the
#: frame rate is measured over (seconds)
STATUS_EVERY = 2.0


class Periodic:
    """A duty due once every ``period`` seconds, counted from the last time it ran.

    A loop that falls behind runs a late duty once, not once per missed period: the next
    one is due a full period after it actually ran (what saving state or publishing stats
    want: catching up would only repeat the same work back to back).
    """

    def __init__(self, period: float, start: float) -> None:
        if not period > 0:
            raise ValueError(f"a periodic duty needs a positive period, got {period!r}")
        self.period = period
        self.last = start

    def due(self, now: float) -> bool:
        """Whether the duty is due at ``now``; when it is, it counts as run at ``now``."""
        if now - self.last < self.period:
            return False
        self.last = now
        return True


class RateMeter:
    """Events per second, measured over consecutive windows of at least ``window`` seconds.

    :attr:`value` holds the rate of the last complete window (0 before the first), so the
    figure reported is steady between updates rather than jumping with every frame.
    """

    def __init__(self, window: float, start: float) -> None:
        self.window = window
        self.start = start
        self.count = 0
        self.value = 0.0

    def add(self, n: int = 1) -> None:
        self.count += n

    def update(self, now: float) -> float:
        """Close the window if it has lasted long enough; returns the current rate."""
        elapsed = now - self.start
        if elapsed >= self.window:
            self.value = self.count / elapsed
            self.count, self.start = 0, now
        return self.value


class LoopTimers:
    """The service loop's periodic duties, with periods from the configuration (parsed once,
    when it was loaded) and the frame-rate meter."""

    def __init__(self, cfg: Config, now: float) -> None:
        self.persist = Periodic(cfg.mood.persist_seconds, now)
        self.stats = Periodic(cfg.mqtt.stats_seconds, now)
        self.status = Periodic(STATUS_EVERY, now)
        self.fps = RateMeter(STATUS_EVERY, now)

    def configure(self, cfg: Config) -> None:
        """New periods after a reload; each keeps counting from the last time it ran."""
        self.persist.period = cfg.mood.persist_seconds
        self.stats.period = cfg.mqtt.stats_seconds
