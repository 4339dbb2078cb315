"""What every frame source shares: the frame, the source protocol, its errors, and the
conversion of whatever a backend returns to the 8-bit grayscale the face path reads."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

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
