"""The feed: a source run in a reader thread the daemon's loop cannot be stalled by.

Each reader thread owns its source: it opens, reads and closes it itself, because releasing
a capture from another thread while a read is blocked inside it crashes the process
(OpenCV's FFmpeg backend dies with SIGSEGV; picamera2 cannot open a camera a stuck instance
still holds). A reader whose read does not return is abandoned, never closed under it, and
a new reader opens a new source.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from edgefer.sources.base import Frame, Source, to_gray

log = logging.getLogger("edgefer.sources")

#: a read that has not returned this long past ``stall_seconds`` is abandoned. The margin
#: lets a source that times out by itself (picamera2, OpenCV's network streams) give up and
#: close its own camera first, which is the cleaner recovery.
ABANDON_MARGIN = 1.0
#: abandoned readers still blocked in a driver call at which the feed stops opening new
#: ones: each holds a thread and a device handle, and a camera that wedges this often needs
#: the process restarted (the watchdog policy, ``source.watchdog_grace_seconds``).
MAX_STUCK_READERS = 3


class _Reader:
    """One reader thread and the source it owns. Only its own thread writes ``source`` and
    ``phase``; the feed reads them to tell a stuck reader, and whether it still holds an
    exclusive camera."""

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.source: Source | None = None
        self.phase = "opening"  # opening | reading | closing | waiting
        self.since = time.monotonic()
        self.thread: threading.Thread | None = None

    def enter(self, phase: str) -> None:
        self.phase, self.since = phase, time.monotonic()

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def holds_exclusive(self) -> bool:
        return self.alive() and self.source is not None and bool(getattr(self.source, "exclusive", False))


class Feed:
    """Runs a source in a reader thread; the newest frame wins for live sources (older ones
    are counted as dropped), while finite sources hand over every frame, paced or not.

    Recovery: a read error closes the source in its reader thread, which opens it again
    after a delay that doubles up to ``retry_max``. A read that does not return within
    ``stall_seconds`` (plus :data:`ABANDON_MARGIN`) is abandoned and a new reader starts.

    One owner for the feed's state: :attr:`state`, the counters and the frame slot are
    written under the lock by the current reader only, checked against a generation token.
    An abandoned reader closes its own source if and when its call returns and exits
    without writing anything, so it can never report "retrying" over a running camera.
    """

    def __init__(
        self,
        factory: Callable[[], Source],
        *,
        pace: bool = True,
        loop: bool = False,
        stall_seconds: float = 5.0,
        retry_initial: float = 1.0,
        retry_max: float = 60.0,
    ) -> None:
        self.factory = factory
        self.pace, self.loop = pace, loop
        self.stall_seconds = stall_seconds
        self.retry_initial, self.retry_max = retry_initial, retry_max
        self.state = "starting"
        self.error: str | None = None
        #: the most recent error, kept after recovery so status shows what happened
        self.last_error: str | None = None
        self.name = "?"
        self.dropped = 0
        self.frames = 0
        #: times a running source was reopened (a stall, or a read error)
        self.restarts = 0
        self.ended = False
        self._cond = threading.Condition()
        self._slot: Frame | None = None
        self._stop = threading.Event()
        self._generation = 0
        self._reader: _Reader | None = None
        #: abandoned readers whose thread may still be blocked in a driver call
        self._stuck: list[_Reader] = []
        self._last_frame = time.monotonic()  # stall detection: since the reader started or its last frame
        self._last_delivery = time.monotonic()  # the watchdog policy: since start or the last frame

    # -- the consumer's side -----------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            self._last_delivery = time.monotonic()
            self._start_reader()

    def get(self, timeout: float) -> Frame | None:
        """The next frame, or None after ``timeout`` (or at the end: see :attr:`ended`).

        Also the stall watchdog: a reader stuck past ``stall_seconds`` is abandoned and a new
        one starts, and a feed held back by stuck readers starts one once they let go.
        """
        with self._cond:
            if self._slot is None and not self.ended:
                self._cond.wait(timeout)
            frame, self._slot = self._slot, None
            self._cond.notify_all()
            if frame is None and not self._stop.is_set() and not self.ended:
                self._watch()
        return frame

    def seconds_without_frames(self) -> float:
        """Since the last frame, or since the feed started when none came: what the
        watchdog policy measures against ``source.watchdog_grace_seconds``."""
        return time.monotonic() - self._last_delivery

    def report(self) -> dict[str, Any]:
        """The source's part of the stats and the status file."""
        return {
            "name": self.name,
            "state": self.state,
            "error": self.error,
            "last_error": self.last_error,
            "restarts": self.restarts,
        }

    def stuck_readers(self) -> int:
        with self._cond:
            return sum(r.alive() for r in self._stuck)

    def queue_depth(self) -> int:
        return 0 if self._slot is None else 1

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
            reader = self._reader
        if reader is not None and reader.thread is not None:
            reader.thread.join(timeout=2)

    # -- readers: started, watched and abandoned under the lock ----------------------------

    def _start_reader(self) -> None:
        """Under the lock: a new reader with a new generation, unless stuck readers forbid
        it (too many of them, or one still holding a camera that admits one instance)."""
        self._stuck = [r for r in self._stuck if r.alive()]
        blocked = self._blocked()
        if blocked is not None:
            state, error = blocked
            if self.state != state:
                log.error("source %s: %s", self.name, error)
            self._reader = None
            self.state, self.error, self.last_error = state, error, error
            return
        self._generation += 1
        reader = _Reader(self._generation)
        reader.thread = threading.Thread(
            target=self._run, args=(reader,), name=f"edgefer-source-{reader.generation}", daemon=True
        )
        self._reader = reader
        self._last_frame = time.monotonic()
        reader.thread.start()

    def _blocked(self) -> tuple[str, str] | None:
        if len(self._stuck) >= MAX_STUCK_READERS:
            return (
                "wedged, restart needed",
                f"{len(self._stuck)} readers stuck in the camera driver; no new one is started "
                "(a process restart frees the camera: see source.watchdog_grace_seconds)",
            )
        held = next((r for r in self._stuck if r.holds_exclusive()), None)
        if held is not None:
            return (
                "held by a stuck reader",
                f"{held.source.name if held.source else self.name} did not close (stuck in the driver); "
                "no second instance is opened while it holds the camera (a process restart frees it)",
            )
        return None

    def _watch(self) -> None:
        """Under the lock, when no frame came: abandon a stuck reader, or start one that
        stuck readers held back once they have let go."""
        reader, now = self._reader, time.monotonic()
        if reader is None:
            self._start_reader()
        elif self.state == "running" and now - self._last_frame > self.stall_seconds + ABANDON_MARGIN:
            self._abandon(reader, f"no frame for {now - self._last_frame:.0f}s; the read did not return")
        elif reader.phase == "closing" and now - reader.since > self.stall_seconds + ABANDON_MARGIN:
            self._abandon(reader, f"{self.name}: close did not return within {now - reader.since:.0f}s")

    def _abandon(self, reader: _Reader, why: str) -> None:
        """Under the lock: the reader keeps its source (closing it under a blocked call
        crashes), loses its right to write, and a new reader takes over."""
        self._generation += 1
        self._stuck.append(reader)
        self._reader = None
        self.restarts += 1
        self.error = self.last_error = why
        self.state = "stalled, reopening"
        log.warning("source %s: %s; reader abandoned (it closes its own source if the call returns)", self.name, why)
        self._start_reader()

    def _current(self, reader: _Reader) -> bool:
        return reader.generation == self._generation and not self._stop.is_set()

    def _update(self, reader: _Reader, **fields: Any) -> bool:
        """Write feed state as ``reader``: only the current reader may; returns whether it is."""
        with self._cond:
            if reader.generation != self._generation:
                return False
            for key, value in fields.items():
                setattr(self, key, value)
            self._cond.notify_all()
            return True

    def _fail(self, reader: _Reader, msg: str, delay: float, *, restart: bool = False) -> None:
        with self._cond:
            if reader.generation != self._generation:
                log.info("source %s (abandoned reader): %s", self.name, msg)
                return
            self.error = self.last_error = msg
            self.state = f"retrying in {delay:g}s"
            self.restarts += restart
        log.warning("source %s: %s; retrying in %g s", self.name, msg, delay)

    # -- the reader thread ---------------------------------------------------------------

    def _run(self, reader: _Reader) -> None:
        """Open, read and close this reader's own source until stopped, ended or abandoned."""
        delay = self.retry_initial
        while self._current(reader):
            src = self._open(reader, delay)
            if src is not None:
                delay = self.retry_initial
                try:
                    finished = self._pump(src, reader)
                except Exception as exc:
                    finished = False
                    self._fail(reader, str(exc), delay, restart=True)
                finally:
                    self._close(reader, src)
                if finished and self.loop:
                    continue
                if finished:
                    self._update(reader, ended=True, state="ended")
                    return
            if not self._current(reader) or self._stop.wait(delay):
                return
            delay = min(delay * 2, self.retry_max)

    def _open(self, reader: _Reader, delay: float) -> Source | None:
        """A new source opened in this thread, or None after reporting why not."""
        reader.enter("opening")
        src: Source | None = None
        try:
            src = self.factory()
            reader.source = src
            self._update(reader, name=src.name)
            src.open()
        except Exception as exc:
            if src is not None:
                self._close(reader, src)  # an open that failed halfway may hold what it took
            self._fail(reader, str(exc), delay)
            return None
        note = getattr(src, "note", None)
        fields: dict[str, Any] = {"state": "running", "error": None, "name": src.name, "_last_frame": time.monotonic()}
        if note:
            fields["last_error"] = note
        if not self._update(reader, **fields):
            self._close(reader, src)  # abandoned or stopped while opening
            return None
        reader.enter("reading")
        return src

    def _close(self, reader: _Reader, src: Source) -> None:
        """Close in the thread that opened it, the only one that ever touches it."""
        reader.enter("closing")
        try:
            src.close()
        except Exception as exc:
            log.debug("closing %s: %s", src.name, exc)
        reader.source = None
        reader.enter("waiting")
        if reader.generation != self._generation:
            log.info("source %s: an abandoned reader's call returned; it closed its source and exits", src.name)

    def _pump(self, src: Source, reader: _Reader) -> bool:
        """Read until the end (True), an error (raises) or a stop/abandonment (False)."""
        period = 1.0 / src.fps if src.finite and self.pace and src.fps > 0 else 0.0
        next_t = time.monotonic()
        while self._current(reader):
            img = src.read()
            if img is None:
                return True
            if period:
                next_t += period
                wait = next_t - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    return False
            frame = Frame(to_gray(img), time.monotonic(), src.position() if src.finite else None)
            with self._cond:
                if src.finite and not self.pace:
                    while self._slot is not None and self._current(reader):
                        self._cond.wait(0.1)
                if not self._current(reader):
                    return False  # abandoned while blocked: this frame is not ours to hand over
                if self._slot is not None:
                    self.dropped += 1
                self._slot = frame
                self.frames += 1
                self._last_frame = self._last_delivery = frame.t
                self._cond.notify_all()
        return False
