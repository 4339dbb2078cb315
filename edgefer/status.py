"""What the running daemon knows about itself: counters, stage timings, the process's cost,
and whether systemd has been told it is up.

The service loop only feeds these; the stats dict (status file, stats topic) reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgefer.sdnotify import Notifier

STAGES = ("detect", "classify", "total")


class Ewma:
    """Exponential moving average, the smoothing Frigate-style stats use: a stage time that
    settles instead of jumping with every frame."""

    def __init__(self, alpha: float = 0.1) -> None:
        self.alpha = alpha
        self.value: float | None = None

    def add(self, x: float) -> None:
        self.value = x if self.value is None else self.value + self.alpha * (x - self.value)


@dataclass
class Counters:
    """Frames and faces since the start, and each stage's smoothed time in ms."""

    frames: int = 0
    faces: int = 0
    classified: int = 0
    #: faces the quality gate refused (too dark, flat or blurred to read; edgefer.quality)
    poor: int = 0
    bad_frames: int = 0
    ms: dict[str, Ewma] = field(default_factory=lambda: {k: Ewma() for k in STAGES})

    def add_timings(self, ms: dict[str, float]) -> None:
        for stage in STAGES:
            if stage in ms:
                self.ms[stage].add(ms[stage])

    def ms_report(self) -> dict[str, float | None]:
        return {k: None if v.value is None else round(v.value, 2) for k, v in self.ms.items()}


def read_temperature() -> float | None:
    """The SoC temperature in degrees C (a throttling Pi explains a falling frame rate);
    None where the kernel does not expose it."""
    try:
        return round(int(Path("/sys/class/thermal/thermal_zone0/temp").read_text()) / 1000, 1)
    except (OSError, ValueError):
        return None


class ProcessCost:
    """CPU, memory and threads of this process. psutil is imported on first use, so commands
    that never report (``edgefer status``) stay quick to start."""

    def __init__(self) -> None:
        self._proc: Any = None

    def report(self) -> dict[str, Any]:
        if self._proc is None:
            import psutil

            self._proc = psutil.Process()
            self._proc.cpu_percent(None)  # cpu_percent() measures since the previous call
        proc = self._proc
        return {
            "cpu_percent": proc.cpu_percent(None),
            "rss_mb": round(proc.memory_info().rss / 2**20, 1),
            "threads": proc.num_threads(),
        }


class Readiness:
    """systemd is told READY=1 once, with the first reason the daemon counts as up: a frame
    came, or the source is being retried within the watchdog's grace (so systemd does not
    time the start out while a camera is still missing)."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self.ready = False

    def announce(self, status: str) -> None:
        if not self.ready:
            self.ready = True
            self.notifier.ready(status)
