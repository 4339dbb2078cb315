"""A stand-in for the Pi camera's ``picamera2`` package, for machines without the hardware.

It reproduces the part of the real API (picamera2 0.3.x) that edgefer uses, with the
behaviour recovery depends on:

* ``Picamera2(num)`` acquires the camera: a second instance for a camera that an open one
  holds raises ``RuntimeError`` (the real one's acquire fails, and its ``__init__`` raises
  "Camera __init__ sequence did not complete."); ``close()`` releases it. There is no
  ``__del__`` here, so an instance the code forgets to close keeps the camera, as it would
  until the garbage collector happened to run.
* ``global_camera_info()``, ``create_video_configuration(main=, lores=, controls=,
  buffer_count=)``, ``configure``, ``start``, ``stop``.
* ``capture_array(name, wait=None)`` and ``capture_request(wait=None)``: ``wait=None`` waits
  as long as it takes, a number of seconds raises ``TimeoutError`` when no frame comes in
  time (the real ones wait on a ``concurrent.futures.Future``), and a capture cancelled by
  ``cancel_all_and_flush()`` raises ``concurrent.futures.CancelledError``. Captures complete
  in order, one frame each, as jobs in the real camera event loop do.
* The real lores format: YUV420 planar with the rows padded to a stride, luminance first.

Frames come from a folder of images (``EDGEFER_FAKE_CAMERA_FRAMES``). A control file
(``EDGEFER_FAKE_CAMERA_CONTROL``) makes the camera misbehave; it is read on every call:

``stall``
    no frames: captures wait (and time out) until the word changes.
``hang``
    a capture issued now never completes, even after the word changes, until
    ``cancel_all_and_flush()``; captures behind it wait too, and ``close()`` blocks while
    one is pending. Cancel, stop, close is the only order that frees the camera.
``wedge``
    as ``hang``, and ``close()`` blocks even after a cancel, until the word changes: a
    camera wedged in the kernel, which only a process restart frees on real hardware.
``unplug``
    nothing listed, opening fails, captures fail: the ribbon cable pulled.
``usb``
    the camera listed is a USB webcam: libcamera's UVC pipeline delivers one stream, so a
    configuration with a lores stream fails.

Anything else is a working camera.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import CancelledError
from pathlib import Path

import cv2
import numpy as np

#: cameras held by an open instance, by number: one instance per camera, process-wide
_held: dict[int, Picamera2] = {}
_held_lock = threading.Lock()


def _control() -> str:
    path = os.environ.get("EDGEFER_FAKE_CAMERA_CONTROL")
    try:
        return Path(path).read_text().strip() if path else ""
    except OSError:
        return ""


def held() -> dict[int, Picamera2]:
    """The cameras open instances hold (for tests: what is still open)."""
    with _held_lock:
        return dict(_held)


def release_all() -> None:
    """Forget every holder (for tests: a wedged instance never closes by itself)."""
    with _held_lock:
        _held.clear()


class _Job:
    """One pending capture in the camera's queue."""

    def __init__(self) -> None:
        self.hung = False
        self.cancelled = False


class _Request:
    """A completed request: its arrays until released."""

    def __init__(self, cam: Picamera2) -> None:
        self._cam = cam
        self._index = cam._frame_index()

    def make_array(self, name: str) -> np.ndarray:
        return self._cam._make_array(name, self._index)

    def get_metadata(self) -> dict:
        return {"SensorTimestamp": time.monotonic_ns(), "ExposureTime": 10000}

    def release(self) -> None:
        pass


class Picamera2:
    @staticmethod
    def global_camera_info() -> list[dict]:
        mode = _control()
        if mode == "unplug":
            return []
        if mode == "usb":
            return [{"Model": "fake-uvc-webcam", "Id": "/base/fake/usb@1/uvc", "Num": 0}]
        return [{"Model": "fake-imx708", "Location": 2, "Rotation": 180, "Id": "/base/fake", "Num": 0}]

    def __init__(self, camera_num: int = 0) -> None:
        if _control() == "unplug" or camera_num != 0:
            raise IndexError("list index out of range")  # what the real one raises with no camera
        with _held_lock:
            if camera_num in _held:
                # libcamera: "Failed to acquire camera: Device or resource busy"
                raise RuntimeError("Camera __init__ sequence did not complete.")
            _held[camera_num] = self
        self.camera_num = camera_num
        self.is_open = True
        folder = Path(os.environ["EDGEFER_FAKE_CAMERA_FRAMES"])
        self._frames = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sorted(folder.glob("*.png"))]
        self._i = 0
        self._config: dict | None = None
        self.started = False
        self._fps = 30.0
        self._next = 0.0
        self._cond = threading.Condition()
        self._jobs: list[_Job] = []

    def create_video_configuration(self, main=None, lores=None, controls=None, buffer_count=6, **_):
        config = {"main": dict(main or {}), "lores": None, "controls": dict(controls or {})}
        config["buffer_count"] = buffer_count
        if lores is not None:
            lores = dict(lores)
            w, _ = lores.get("size", (640, 480))
            lores.setdefault("format", "YUV420")
            lores["stride"] = (w + 63) // 64 * 64
            config["lores"] = lores
        return config

    def configure(self, config: dict) -> None:
        if not self.is_open:
            raise RuntimeError("Camera not opened")
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        if config["lores"] is not None and _control() == "usb":
            raise RuntimeError("Invalid camera configuration: the UVC pipeline delivers a single stream")
        if config["lores"] is not None and config["lores"]["format"] != "YUV420":
            raise RuntimeError("lores stream must be YUV")
        self._config = config
        self._fps = float(config["controls"].get("FrameRate", 30.0))

    def start(self) -> None:
        if self._config is None:
            raise RuntimeError("Camera has not been configured")
        self.started = True
        self._next = time.monotonic()

    # -- captures --------------------------------------------------------------------------

    def _await_frame(self, wait: float | bool | None) -> None:
        """Queue a capture and wait for its frame, as the real event loop's job would."""
        if not self.started or self._config is None:
            raise RuntimeError("Camera is not running")
        timeout = None if wait is None or wait is True else float(wait)
        deadline = None if timeout is None else time.monotonic() + timeout
        job = _Job()
        with self._cond:
            self._jobs.append(job)
            while True:
                mode = _control()
                if job.cancelled:
                    raise CancelledError()
                if mode == "unplug":
                    self._jobs.remove(job)
                    raise RuntimeError("Device or resource busy")
                first = self._jobs[0] is job
                if first and mode in ("hang", "wedge"):
                    job.hung = True  # stuck in the camera system: no frame will ever complete it
                if first and not job.hung and mode != "stall":
                    self._jobs.remove(job)
                    self._cond.notify_all()
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    if not job.hung:
                        self._jobs.remove(job)
                    raise TimeoutError()  # a hung job stays queued, as in the real camera
                self._cond.wait(0.02 if left is None else min(0.02, left))
        self._next = max(self._next + 1.0 / self._fps, time.monotonic() - 1.0)
        time.sleep(max(0.0, self._next - time.monotonic()))

    def capture_array(self, name: str = "main", wait: float | bool | None = None) -> np.ndarray:
        self._await_frame(wait)
        return self._make_array(name, self._frame_index())

    def capture_request(self, wait: float | bool | None = None) -> _Request:
        self._await_frame(wait)
        return _Request(self)

    def cancel_all_and_flush(self) -> None:
        with self._cond:
            for job in self._jobs:
                job.cancelled = True
            self._jobs = []
            self._cond.notify_all()

    def _frame_index(self) -> int:
        self._i += 1
        return self._i - 1

    def _make_array(self, name: str, index: int) -> np.ndarray:
        assert self._config is not None and self._config[name] is not None, f"no {name} stream"
        w, h = self._config[name]["size"]
        stride = self._config[name].get("stride", w)
        y = cv2.resize(self._frames[index % len(self._frames)], (w, h))
        out = np.full((h * 3 // 2, stride), 128, np.uint8)  # chroma planes: neutral grey
        out[:h, :w] = y
        out[:h, w:] = 16  # padding beyond the width must never reach the classifier
        return out

    # -- stopping ----------------------------------------------------------------------------

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        """Release the camera; blocks while a hung capture is queued (and, wedged, until
        the control word changes)."""
        if not self.is_open:
            return
        with self._cond:
            while any(job.hung for job in self._jobs) or _control() == "wedge":
                self._cond.wait(0.05)
        self.started = False
        self.is_open = False
        self._frames = []
        with _held_lock:
            if _held.get(self.camera_num) is self:
                del _held[self.camera_num]
