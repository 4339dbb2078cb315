"""A folder of images, analysed as independent stills on the folder's own clock."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from edgefer.sources.base import IMAGE_SUFFIXES, SourceError

log = logging.getLogger("edgefer.sources")


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
