"""The Raspberry Pi camera through picamera2 (libcamera)."""

from __future__ import annotations

import concurrent.futures
import logging
from typing import Any

import numpy as np

from edgefer.sources.base import CameraConfigError, SourceError

log = logging.getLogger("edgefer.sources")


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
