"""The embedded demo source: real faces, made at run time, with no camera attached.

It composites the astronaut portrait that scikit-image ships (a public-domain NASA photo)
onto a moving background, drifting and changing scale frame by frame, so a newcomer sees
detection, classification and summaries working within a minute of installing.
"""

from __future__ import annotations

import math
import time
from importlib import resources

import cv2
import numpy as np

from edgefer.sources.base import SourceError


def astronaut_gray() -> np.ndarray:
    """The astronaut portrait as grayscale, read straight from scikit-image's data files."""
    try:
        ref = resources.files("skimage") / "data" / "astronaut.png"
        data = ref.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise SourceError(f"the demo source needs scikit-image: pip install 'edgefer[demo]' ({exc})") from None
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise SourceError("scikit-image's astronaut.png could not be decoded")
    return img


class DemoSource:
    """A looping, finite-length clip: 20 s of motion, replayed as long as the daemon runs."""

    finite = False  # it never ends on its own: the demo runs until stopped
    stills = False

    def __init__(self, width: int = 640, height: int = 480, fps: float = 15.0, seconds: float = 20.0) -> None:
        self.width, self.height, self.fps = width, height, fps
        self.length = max(1, int(seconds * fps))
        self.name = "demo:astronaut"
        self._portrait: np.ndarray | None = None
        self._i = 0
        self._next = 0.0

    def open(self) -> None:
        img = astronaut_gray()
        # The head and shoulders (the photo is 512x512, the face in its upper centre-left).
        self._portrait = img[0:300, 100:360]
        self._i = 0
        self._next = time.monotonic()

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` of the clip (pure, so tests can call it directly)."""
        assert self._portrait is not None
        h, w = self.height, self.width
        phase = 2 * math.pi * (i % self.length) / self.length
        yy, xx = np.mgrid[0:h, 0:w]
        bg = (96 + 40 * np.sin(xx / 37.0 + phase) * np.cos(yy / 53.0)).astype(np.uint8)
        scale = (0.55 + 0.2 * math.sin(phase)) * h / self._portrait.shape[0]
        face = cv2.resize(self._portrait, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        fh, fw = face.shape
        x = int((w - fw) / 2 + (w - fw) / 3 * math.sin(phase * 2))
        y = int((h - fh) / 2 + (h - fh) / 4 * math.cos(phase))
        x, y = max(0, min(w - fw, x)), max(0, min(h - fh, y))
        bg[y : y + fh, x : x + fw] = face
        return bg

    def read(self) -> np.ndarray | None:
        self._next += 1.0 / self.fps
        wait = self._next - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        else:
            self._next = time.monotonic()
        out = self.frame(self._i)
        self._i += 1
        return out

    def position(self) -> float | None:
        return None

    def close(self) -> None:
        self._portrait = None
