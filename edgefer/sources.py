"""Frame sources: picamera2, OpenCV (USB camera, file, stream, pipe), a folder, the demo.

Every source yields 8-bit grayscale frames; colour is never needed (the classifier is
grayscale) so sources that can deliver luminance directly do (picamera2's YUV420 Y plane).

:class:`Feed` runs a source in a reader thread so a camera that stalls inside a blocking
read cannot stall the daemon. Each reader thread owns its source: it opens, reads and
closes it itself, because releasing a capture from another thread while a read is blocked
inside it crashes the process (OpenCV's FFmpeg backend dies with SIGSEGV; picamera2 cannot
open a camera a stuck instance still holds). A reader whose read does not return is
abandoned, never closed under it, and a new reader opens a new source.
"""

from __future__ import annotations

import concurrent.futures
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from edgefer.config import SourceConfig

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".webp", ".tif", ".tiff"}


def redact(device: str) -> str:
    """A stream URL without its user:password, for logs, status and stats."""
    return re.sub(r"://.*@", "://***@", device)  # greedy: a stray '@' or '/' in a password


class SourceError(RuntimeError):
    """A source that cannot open or read; the message names the device or path."""


class CameraConfigError(SourceError):
    """picamera2 opened the camera but cannot configure or start the stream edgefer needs
    (a USB webcam behind libcamera's single-stream UVC pipeline has no lores stream)."""


@dataclass
class Frame:
    gray: np.ndarray
    t: float  # time.monotonic() at capture
    #: seconds into a recording or folder (its own clock); None for a live source
    media_t: float | None = None


class Source(Protocol):
    name: str
    #: a finite source ends (file, folder); a live one is retried when it fails.
    finite: bool
    #: native frame rate, for pacing finite sources.
    fps: float
    #: frames are unrelated photographs (a folder): nothing carries over between them.
    stills: bool

    # Optional, read with getattr by the feed:
    #   exclusive: bool: the device admits one open instance (picamera2), so no new reader
    #     opens it while an abandoned reader still holds it.
    #   note: str | None: said in the status (last_error) once the source runs.

    def open(self) -> None: ...
    def read(self) -> np.ndarray | None: ...  # None: the end of a finite source
    def position(self) -> float | None: ...  # seconds into a finite source of the frame just read
    def close(self) -> None: ...


def is_recording(cfg: SourceConfig) -> bool:
    """A file or folder analysed once: it runs on its own clock and starts from nothing
    (a looping file stands in for a live camera and is not one)."""
    if cfg.loop or cfg.kind in ("picamera2", "demo"):
        return False
    if cfg.kind == "folder" or (cfg.kind == "auto" and not cfg.device.isdigit() and Path(cfg.device).is_dir()):
        return True
    camera = cfg.device.isdigit() or cfg.device.startswith(("/dev/", "rtsp://", "http://", "https://"))
    return cfg.kind in ("opencv", "auto") and not camera and Path(cfg.device).is_file()


def to_gray(img: np.ndarray) -> np.ndarray:
    """8-bit single-channel view of whatever a backend returned."""
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    elif img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY)
    if img.ndim != 2:
        raise SourceError(f"unsupported frame shape {img.shape}")
    if img.dtype != np.uint8:
        if np.issubdtype(img.dtype, np.floating):
            img = np.clip(img * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        else:
            img = np.clip(img, 0, 255).astype(np.uint8)
    return img


class OpenCVSource:
    """cv2.VideoCapture: a camera index, a /dev/video path, a file, a stream URL or a FIFO.

    ``timeout`` (seconds) bounds how long a read of a stream URL may block: OpenCV's FFmpeg
    backend then gives up by itself, so a reader of a stalled network camera returns and
    closes its own capture instead of being abandoned. A read from a FIFO or a V4L2 device
    blocks in the kernel, where no such timeout reaches; the feed abandons those readers.
    """

    def __init__(
        self, device: str, width: int = 640, height: int = 480, fps: float = 15.0, timeout: float | None = None
    ) -> None:
        self.device = device
        self.width, self.height, self.fps = width, height, fps
        self.timeout = timeout
        self.is_camera = device.isdigit() or device.startswith("/dev/")
        self.is_url = device.startswith(("rtsp://", "http://", "https://"))
        # a named pipe (an MJPEG stream written by another process) is live, like a camera
        self.finite = not self.is_camera and not self.is_url and not _is_fifo(device)
        self.stills = False
        self.name = f"opencv:{redact(device)}"
        #: said in the status once the source runs (why auto chose OpenCV)
        self.note: str | None = None
        self._cap: cv2.VideoCapture | None = None
        self._read = 0
        self._last_pos = -1.0

    def _capture(self, target: int | str) -> cv2.VideoCapture:
        """The capture, with FFmpeg's open and read timeouts for a stream URL (defaults:
        30 s each, far longer than a stall)."""
        if self.is_url and self.timeout:
            open_ms = int(max(10.0, 2 * self.timeout) * 1000)  # RTSP cameras can take seconds to answer
            read_ms = int(self.timeout * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, open_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, read_ms]
            return cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
        return cv2.VideoCapture(target)

    def open(self) -> None:
        if self.finite and not Path(self.device).exists():
            raise SourceError(f"{redact(self.device)}: no such file")
        target: int | str = int(self.device) if self.device.isdigit() else self.device
        cap = self._capture(target)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{redact(self.device)}: cannot open video source")
        if self.is_camera:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            cap.set(cv2.CAP_PROP_FPS, self.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        else:
            native = cap.get(cv2.CAP_PROP_FPS)
            self.fps = native if 0 < native <= 240 else self.fps
        self._cap = cap

    def read(self) -> np.ndarray | None:
        if self._cap is None:
            raise SourceError(f"{self.device}: not open")
        t0 = time.monotonic()
        ok, img = self._cap.read()
        if not ok:
            if self.finite:
                return None
            if self.is_url and self.timeout and time.monotonic() - t0 >= 0.9 * self.timeout:
                raise SourceError(f"{redact(self.device)}: no frame for {self.timeout:g}s (read timed out)")
            raise SourceError(f"{redact(self.device)}: camera returned no frame")
        self._read += 1
        return to_gray(img)

    def position(self) -> float | None:
        """The container's timestamp of the frame just read; the frame count over the
        native rate where the container gives none (or one that does not advance)."""
        if not self.finite or self._cap is None:
            return None
        pos = self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000
        if not (pos > self._last_pos) or pos != pos:
            pos = (self._read - 1) / self.fps
        self._last_pos = pos
        return pos

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def _is_fifo(path: str) -> bool:
    try:
        return Path(path).is_fifo()
    except OSError:
        return False


class FolderSource:
    """Images in a folder, in name order: independent stills, one ``1/fps`` apart on the
    folder's own clock."""

    finite = True
    stills = True

    def __init__(self, path: str, fps: float = 15.0) -> None:
        self.path = Path(path)
        self.fps = fps
        self.name = f"folder:{path}"
        self._files: list[Path] = []
        self._i = 0

    def open(self) -> None:
        if not self.path.is_dir():
            raise SourceError(f"{self.path}: no such folder")
        self._files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self._files:
            raise SourceError(f"{self.path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self._i = 0

    def read(self) -> np.ndarray | None:
        while self._i < len(self._files):
            f = self._files[self._i]
            self._i += 1
            img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
            if img is not None:
                return img
            log.warning("%s: unreadable image, skipped", f)
        return None

    def position(self) -> float | None:
        return (self._i - 1) / self.fps

    def close(self) -> None:
        self._files = []


class Picamera2Source:
    """The Pi camera through picamera2: a low-resolution YUV420 stream whose Y plane is the
    grayscale frame, so no colour conversion runs on the Pi.

    libcamera lets one instance hold a camera, and a second ``Picamera2(n)`` raises while the
    first is open, so recovery is cancel, stop, close, then open again, in the thread that
    owns the instance. Reads wait at most ``timeout`` seconds (``capture_array(wait=)``), so
    a stalled camera is noticed by its own reader, which then frees the camera itself.
    """

    finite = False
    stills = False
    exclusive = True

    def __init__(
        self, width: int = 640, height: int = 480, fps: float = 15.0, camera: int = 0, timeout: float = 5.0
    ) -> None:
        self.width, self.height, self.fps = width, height, fps
        self.camera = camera
        self.timeout = timeout
        self.name = f"picamera2:{camera}"
        #: why the camera could not be configured (the auto fallback reads it)
        self.config_error: str | None = None
        self._cam: Any = None

    def open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise SourceError(f"picamera2 not importable ({exc}); on a Pi install python3-picamera2") from None
        try:
            cam = Picamera2(self.camera)
        except Exception as exc:  # no such camera, or another instance (stuck or not) holds it
            raise SourceError(f"camera {self.camera}: cannot open ({exc})") from None
        self._cam = cam  # held from here on: a failure below must release it before any retry
        try:
            config = cam.create_video_configuration(
                main={"size": (self.width * 2, self.height * 2)},
                lores={"size": (self.width, self.height), "format": "YUV420"},
                controls={"FrameRate": float(self.fps)},
                buffer_count=4,
            )
            cam.configure(config)
            cam.start()
        except Exception as exc:  # libcamera raises a variety of types
            self.close()
            self.config_error = f"{type(exc).__name__}: {exc}"
            raise CameraConfigError(f"camera {self.camera}: cannot configure the lores YUV420 stream ({exc})") from None
        size = config["lores"]["size"]
        self._w, self._h = int(size[0]), int(size[1])

    def read(self) -> np.ndarray | None:
        if self._cam is None:
            raise SourceError(f"camera {self.camera}: not open")
        try:
            yuv = self._cam.capture_array("lores", wait=self.timeout)
        except (TimeoutError, concurrent.futures.TimeoutError):
            raise SourceError(f"camera {self.camera}: no frame for {self.timeout:g}s (capture timed out)") from None
        except Exception as exc:
            raise SourceError(f"camera {self.camera}: capture failed ({exc})") from None
        # YUV420 planar: the first `height` rows are luminance (the row stride may be padded).
        return np.ascontiguousarray(yuv[: self._h, : self._w])

    def position(self) -> float | None:
        return None

    def close(self) -> None:
        """Cancel the pending captures first: a capture hung in the camera system would
        otherwise keep ``close()`` from completing. A close that blocks anyway (a camera
        wedged in the kernel) blocks this reader thread only; the feed sees it and opens no
        second instance."""
        cam, self._cam = self._cam, None
        if cam is None:
            return
        for step in ("cancel_all_and_flush", "stop", "close"):
            try:
                getattr(cam, step)()
            except Exception as exc:
                log.warning("picamera2 camera %d: %s() failed: %s", self.camera, step, exc)


def picamera2_present() -> bool:
    try:
        from picamera2 import Picamera2

        return bool(Picamera2.global_camera_info())
    except Exception:  # not a Pi, or no camera attached
        return False


def make_source(cfg: SourceConfig, *, picamera2: bool = True) -> Source:
    """The source ``cfg`` names; ``picamera2=False`` keeps ``auto`` away from picamera2."""
    kind = cfg.kind
    if kind == "auto":
        if picamera2 and picamera2_present():
            kind = "picamera2"
        elif cfg.device.isdigit() and Path(f"/dev/video{cfg.device}").exists():
            kind = "opencv"
        elif not cfg.device.isdigit() and Path(cfg.device).is_dir():
            kind = "folder"
        else:
            # A camera index or path that is not there yet stays a camera: the feed retries
            # it. Falling back to the demo would publish a photograph's mood as if it were real.
            kind = "opencv"
    if kind == "picamera2":
        camera = int(cfg.device) if cfg.device.isdigit() else 0
        return Picamera2Source(cfg.width, cfg.height, cfg.fps, camera, timeout=cfg.stall_seconds)
    if kind == "opencv":
        return OpenCVSource(cfg.device, cfg.width, cfg.height, cfg.fps, timeout=cfg.stall_seconds)
    if kind == "folder":
        return FolderSource(cfg.device, cfg.fps)
    if kind == "demo":
        from edgefer.demo import DemoSource

        return DemoSource(cfg.width, cfg.height, cfg.fps)
    raise ValueError(f"unknown source kind {kind!r}")


class SourceFactory:
    """A fresh source for every (re)open of the feed.

    It remembers one thing between opens: that under ``kind = "auto"`` picamera2 listed a
    camera it could not configure. libcamera lists USB webcams too, and its UVC pipeline
    delivers one stream, never the lores stream edgefer asks for; retrying picamera2 would
    fail forever, so every later open goes to OpenCV on ``source.device`` instead.
    """

    def __init__(self, cfg: SourceConfig) -> None:
        self.cfg = cfg
        #: why picamera2 is no longer tried (auto only); None while it is
        self.picamera2_refused: str | None = None
        self._last: Source | None = None

    def __call__(self) -> Source:
        last, self._last = self._last, None
        error = getattr(last, "config_error", None) if isinstance(last, Picamera2Source) else None
        if self.cfg.kind == "auto" and error and self.picamera2_refused is None:
            target = "/dev/video" + self.cfg.device if self.cfg.device.isdigit() else self.cfg.device
            self.picamera2_refused = (
                f"auto: picamera2 cannot configure camera {last.camera} ({error}); using OpenCV on {target} instead"
            )
            log.warning("source %s", self.picamera2_refused)
        src = make_source(self.cfg, picamera2=self.picamera2_refused is None)
        if self.picamera2_refused and isinstance(src, OpenCVSource):
            src.note = self.picamera2_refused
        self._last = src
        return src


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
        self.last_attempt = time.monotonic()
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
        self._update(reader, last_attempt=time.monotonic())
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
