"""Frame sources: picamera2, OpenCV (USB camera, file, stream, pipe), a folder, the demo.

Every source yields 8-bit grayscale frames; colour is never needed (the classifier is
grayscale) so sources that can deliver luminance directly do (picamera2's YUV420 Y plane).
One module per source, and the parts they share:

- ``base``: the frame, the source protocol, errors, grayscale conversion;
- ``opencv``, ``folder``, ``picamera``: the sources (the demo lives in ``edgefer.demo``);
- ``registry``: which source a ``[source]`` configuration means;
- ``feed``: the reader thread that runs a source so a stalled camera cannot stall the daemon.

Everything is importable from here (``from edgefer.sources import Feed``).
"""

from __future__ import annotations

from edgefer.sources.base import (
    IMAGE_SUFFIXES,
    CameraConfigError,
    Frame,
    Source,
    SourceError,
    redact,
    to_gray,
)
from edgefer.sources.feed import ABANDON_MARGIN, MAX_STUCK_READERS, Feed
from edgefer.sources.folder import FolderSource
from edgefer.sources.opencv import OpenCVSource
from edgefer.sources.picamera import Picamera2Source, picamera2_present
from edgefer.sources.registry import SourceFactory, is_recording, make_source

__all__ = [
    "ABANDON_MARGIN",
    "IMAGE_SUFFIXES",
    "MAX_STUCK_READERS",
    "CameraConfigError",
    "Feed",
    "FolderSource",
    "Frame",
    "OpenCVSource",
    "Picamera2Source",
    "Source",
    "SourceError",
    "SourceFactory",
    "is_recording",
    "make_source",
    "picamera2_present",
    "redact",
    "to_gray",
]
