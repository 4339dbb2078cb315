"""A stand-in for the Pi camera's ``picamera2`` package, for machines without the hardware.

It reproduces the part of the real API edgefer uses (``Picamera2(num)``,
``global_camera_info()``, ``create_video_configuration(main=, lores=, controls=,
buffer_count=)``, ``configure``, ``start``, ``capture_array("lores")``, ``stop``,
``close``) and the real lores format: YUV420 planar with the rows padded to a stride,
luminance first. Frames come from a folder of images (``EDGEFER_FAKE_CAMERA_FRAMES``).
A control file (``EDGEFER_FAKE_CAMERA_CONTROL``) lets a test misbehave the camera:
``stall`` blocks inside ``capture_array`` like a wedged driver, ``unplug`` makes opening
and capturing fail as when the ribbon cable is pulled; anything else is normal.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np


def _control() -> str:
    path = os.environ.get("EDGEFER_FAKE_CAMERA_CONTROL")
    try:
        return Path(path).read_text().strip() if path else ""
    except OSError:
        return ""


class Picamera2:
    @staticmethod
    def global_camera_info() -> list[dict]:
        if _control() == "unplug":
            return []
        return [{"Model": "fake-imx708", "Location": 2, "Rotation": 180, "Id": "/base/fake", "Num": 0}]

    def __init__(self, camera_num: int = 0) -> None:
        if _control() == "unplug" or camera_num != 0:
            raise IndexError("list index out of range")  # what the real one raises with no camera
        folder = Path(os.environ["EDGEFER_FAKE_CAMERA_FRAMES"])
        self._frames = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sorted(folder.glob("*.png"))]
        self._i = 0
        self._config: dict | None = None
        self._started = False
        self._fps = 30.0
        self._next = 0.0

    def create_video_configuration(self, main=None, lores=None, controls=None, buffer_count=6, **_):
        lores = dict(lores or {})
        w, _ = lores.get("size", (640, 480))
        lores.setdefault("format", "YUV420")
        lores["stride"] = (w + 63) // 64 * 64
        return {
            "main": dict(main or {}),
            "lores": lores,
            "controls": dict(controls or {}),
            "buffer_count": buffer_count,
        }

    def configure(self, config: dict) -> None:
        if config["lores"]["format"] != "YUV420":
            raise RuntimeError("lores stream must be YUV420")
        self._config = config
        self._fps = float(config["controls"].get("FrameRate", 30.0))

    def start(self) -> None:
        if self._config is None:
            raise RuntimeError("Camera has not been configured")
        self._started = True
        self._next = time.monotonic()

    def capture_array(self, name: str = "main") -> np.ndarray:
        if not self._started or self._config is None:
            raise RuntimeError("Camera is not running")
        while _control() == "stall":
            time.sleep(0.1)
        if _control() == "unplug":
            raise RuntimeError("Device or resource busy")
        self._next += 1.0 / self._fps
        time.sleep(max(0.0, self._next - time.monotonic()))
        w, h = self._config[name]["size"]
        stride = self._config[name]["stride"]
        y = cv2.resize(self._frames[self._i % len(self._frames)], (w, h))
        self._i += 1
        out = np.full((h * 3 // 2, stride), 128, np.uint8)  # chroma planes: neutral grey
        out[:h, :w] = y
        out[:h, w:] = 16  # padding beyond the width must never reach the classifier
        return out

    def stop(self) -> None:
        self._started = False

    def close(self) -> None:
        self._frames = []
