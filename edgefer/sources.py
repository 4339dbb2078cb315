"""Frame sources: picamera2, OpenCV (USB camera, file, stream), a folder, the demo.

Every source yields 8-bit grayscale frames; colour is never needed (the classifier is
grayscale) so sources that can deliver luminance directly do (picamera2's YUV420 Y plane).

:class:`Feed` runs a source in its own thread so a camera that stalls inside a blocking
read cannot stall the daemon: the service waits on the feed with a timeout, notices a
stall, and the feed reopens the source with paced backoff while the daemon keeps going.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

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
    """cv2.VideoCapture: a camera index, a /dev/video path, a file or a stream URL."""

    def __init__(self, device: str, width: int = 640, height: int = 480, fps: float = 15.0) -> None:
        self.device = device
        self.width, self.height, self.fps = width, height, fps
        self.is_camera = device.isdigit() or device.startswith("/dev/")
        self.finite = not self.is_camera and not device.startswith(("rtsp://", "http://", "https://"))
        self.stills = False
        self.name = f"opencv:{redact(device)}"
        self._cap: cv2.VideoCapture | None = None
        self._read = 0
        self._last_pos = -1.0

    def open(self) -> None:
        if self.finite and not Path(self.device).exists():
            raise SourceError(f"{redact(self.device)}: no such file")
        target: int | str = int(self.device) if self.device.isdigit() else self.device
        cap = cv2.VideoCapture(target)
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
        ok, img = self._cap.read()
        if not ok:
            if self.finite:
                return None
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
    grayscale frame, so no colour conversion runs on the Pi."""

    finite = False
    stills = False

    def __init__(self, width: int = 640, height: int = 480, fps: float = 15.0, camera: int = 0) -> None:
        self.width, self.height, self.fps = width, height, fps
        self.camera = camera
        self.name = f"picamera2:{camera}"
        self._cam = None

    def open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise SourceError(f"picamera2 not importable ({exc}); on a Pi install python3-picamera2") from None
        try:
            cam = Picamera2(self.camera)
            config = cam.create_video_configuration(
                main={"size": (self.width * 2, self.height * 2)},
                lores={"size": (self.width, self.height), "format": "YUV420"},
                controls={"FrameRate": float(self.fps)},
                buffer_count=4,
            )
            cam.configure(config)
            cam.start()
        except Exception as exc:  # libcamera raises a variety of types
            raise SourceError(f"camera {self.camera}: cannot start ({exc})") from None
        self._cam = cam
        size = config["lores"]["size"]
        self._w, self._h = int(size[0]), int(size[1])

    def read(self) -> np.ndarray | None:
        if self._cam is None:
            raise SourceError(f"camera {self.camera}: not open")
        try:
            yuv = self._cam.capture_array("lores")
        except Exception as exc:
            raise SourceError(f"camera {self.camera}: capture failed ({exc})") from None
        # YUV420 planar: the first `height` rows are luminance (the row stride may be padded).
        return np.ascontiguousarray(yuv[: self._h, : self._w])

    def position(self) -> float | None:
        return None

    def close(self) -> None:
        if self._cam is not None:
            try:
                self._cam.stop()
                self._cam.close()
            except Exception as exc:
                log.debug("picamera2 close: %s", exc)
            self._cam = None


def picamera2_present() -> bool:
    try:
        from picamera2 import Picamera2

        return bool(Picamera2.global_camera_info())
    except Exception:  # not a Pi, or no camera attached
        return False


def make_source(cfg: SourceConfig) -> Source:
    kind = cfg.kind
    if kind == "auto":
        if picamera2_present():
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
        return Picamera2Source(cfg.width, cfg.height, cfg.fps, int(cfg.device) if cfg.device.isdigit() else 0)
    if kind == "opencv":
        return OpenCVSource(cfg.device, cfg.width, cfg.height, cfg.fps)
    if kind == "folder":
        return FolderSource(cfg.device, cfg.fps)
    if kind == "demo":
        from edgefer.demo import DemoSource

        return DemoSource(cfg.width, cfg.height, cfg.fps)
    raise ValueError(f"unknown source kind {kind!r}")


class Feed:
    """Runs a source in a thread; the newest frame wins for live sources (older ones are
    counted as dropped), while finite sources hand over every frame, paced or not.

    The feed owns recovery: a read error or a stall closes the source and reopens it after
    a delay that doubles up to ``retry_max``, and :attr:`state` says what is going on.
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
        self.restarts = 0
        self.ended = False
        self._cond = threading.Condition()
        self._slot: Frame | None = None
        self._stop = threading.Event()
        self._generation = 0
        self._last_frame = time.monotonic()
        self.last_attempt = time.monotonic()
        self._thread: threading.Thread | None = None
        self._source: Source | None = None

    def start(self) -> None:
        self._spawn()

    def _spawn(self) -> None:
        self._generation += 1
        self._last_frame = time.monotonic()
        self._thread = threading.Thread(target=self._run, args=(self._generation,), name="edgefer-source", daemon=True)
        self._thread.start()

    def _run(self, generation: int) -> None:
        delay = self.retry_initial
        while not self._stop.is_set() and generation == self._generation:
            self.last_attempt = time.monotonic()
            try:
                src = self.factory()
                self.name = src.name
                src.open()
            except Exception as exc:
                self._fail(f"{exc}", delay)
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, self.retry_max)
                continue
            self._source = src
            self.state, self.error = "running", None
            delay = self.retry_initial
            try:
                finished = self._pump(src, generation)
            except Exception as exc:
                finished = False
                self._fail(str(exc), delay)
            finally:
                src.close()
            if finished:
                if self.loop and not self._stop.is_set():
                    continue
                with self._cond:
                    self.ended = True
                    self.state = "ended"
                    self._cond.notify_all()
                return
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, self.retry_max)

    def _fail(self, msg: str, delay: float) -> None:
        self.error = self.last_error = msg
        self.state = f"retrying in {delay:.0f}s"
        log.warning("source %s: %s; retrying in %.0f s", self.name, msg, delay)

    def _pump(self, src: Source, generation: int) -> bool:
        """Read until the end (True), an error (raises) or a stop/stall (False)."""
        period = 1.0 / src.fps if src.finite and self.pace and src.fps > 0 else 0.0
        next_t = time.monotonic()
        while not self._stop.is_set() and generation == self._generation:
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
                    while self._slot is not None and not self._stop.is_set() and generation == self._generation:
                        self._cond.wait(0.1)
                elif self._slot is not None:
                    self.dropped += 1
                self._slot = frame
                self.frames += 1
                self._last_frame = frame.t
                self._cond.notify_all()
        return False

    def get(self, timeout: float) -> Frame | None:
        """The next frame, or None after ``timeout`` (or at the end: see :attr:`ended`).

        Also the stall watchdog: no frame for ``stall_seconds`` from a running source
        abandons its thread (it may be stuck in a driver call) and starts a new one.
        """
        with self._cond:
            if self._slot is None and not self.ended:
                self._cond.wait(timeout)
            frame, self._slot = self._slot, None
            self._cond.notify_all()
        if frame is None and self.state == "running" and time.monotonic() - self._last_frame > self.stall_seconds:
            self.restarts += 1
            self.error = self.last_error = f"no frame for {self.stall_seconds:g}s"
            self.state = "stalled, reopening"
            log.warning("source %s stalled (%s); reopening", self.name, self.error)
            src = self._source
            self._spawn()  # the old thread sees a stale generation and exits after its read
            if src is not None:
                threading.Thread(target=_quiet_close, args=(src,), daemon=True).start()
        return frame

    def retrying_alive(self) -> bool:
        """True while the source is failing but its retries still happen on schedule: a
        retry stuck inside a driver call stops this, so the systemd watchdog can act."""
        return (
            self.state != "running" and time.monotonic() - self.last_attempt < 2 * self.retry_max + self.stall_seconds
        )

    def queue_depth(self) -> int:
        return 0 if self._slot is None else 1

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=2)


def _quiet_close(src: Source) -> None:
    try:
        src.close()
    except Exception as exc:
        log.debug("closing a stalled source: %s", exc)
