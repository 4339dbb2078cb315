"""OpenCV's ``VideoCapture``: a USB camera, a video file, a stream URL (RTSP, HTTP/MJPEG) or a
named pipe."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from edgefer.sources.base import SourceError, redact, to_gray


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
