"""Which source a configuration means: the ``source.kind`` names, ``auto``'s choice, and
whether a source is a recording analysed on its own clock."""

from __future__ import annotations

import logging
from pathlib import Path

from edgefer.config import SourceConfig
from edgefer.sources.base import Source
from edgefer.sources.folder import FolderSource
from edgefer.sources.opencv import OpenCVSource
from edgefer.sources.picamera import Picamera2Source, picamera2_present

log = logging.getLogger("edgefer.sources")


def is_recording(cfg: SourceConfig) -> bool:
    """A file or folder analysed once: it runs on its own clock and starts from nothing
    (a looping file stands in for a live camera and is not one)."""
    if cfg.loop or cfg.kind in ("picamera2", "demo"):
        return False
    if cfg.kind == "folder" or (cfg.kind == "auto" and not cfg.device.isdigit() and Path(cfg.device).is_dir()):
        return True
    camera = cfg.device.isdigit() or cfg.device.startswith(("/dev/", "rtsp://", "http://", "https://"))
    return cfg.kind in ("opencv", "auto") and not camera and Path(cfg.device).is_file()


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
