"""The frame path: a grayscale frame in, its faces, their tracks and probabilities out.

detect (on a downscaled copy, every few frames) -> frame (the detector's measured crop
geometry) -> align (eyes levelled when the detector gives them) -> gate (crops too dark,
flat or blurred to read: edgefer.quality) -> classify (LiteRT) -> calibrate (temperature)
-> track (box overlap across frames). The daemon and every
``edgefer-bench`` mode that times or scores faces run this one class, so what is measured is
what runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from edgefer.classifier import Classifier
from edgefer.faces import Face, FaceStage
from edgefer.quality import FER2013_BOUNDS, QualityBounds, poor
from edgefer.tracks import Tracker


def calibrate(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax(log p / T): T < 1 sharpens, T > 1 softens, T = 1 leaves ``probs`` as they are."""
    if temperature == 1.0 or len(probs) == 0:
        return probs
    logits = np.log(np.clip(probs, 1e-7, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


@dataclass
class Reading:
    """One frame's result. ``probs`` is None when the frame was not classified; otherwise it
    has a row per face, and ``poor`` marks the faces whose crops the gate refused (their rows
    are what the classifier said, kept for diagnosis, never counted)."""

    faces: list[Face]
    tracks: list[int]
    probs: np.ndarray | None
    detected: bool
    ms: dict[str, float] = field(default_factory=dict)
    poor: np.ndarray | None = None

    def counted(self) -> tuple[np.ndarray, list[int]]:
        """The probabilities and track ids of the faces that count (classified, not poor)."""
        if self.probs is None:
            return np.zeros((0, 0), np.float32), []
        keep = np.ones(len(self.probs), bool) if self.poor is None else ~self.poor
        return self.probs[keep], [t for t, k in zip(self.tracks, keep, strict=True) if k]

    @property
    def poor_count(self) -> int:
        return 0 if self.poor is None or self.probs is None else int(self.poor.sum())


class FramePath:
    """Faces and emotion probabilities of each frame, in the classifier's label order.

    ``stills``: frames are unrelated photographs (a folder): nothing is held or tracked from
    one to the next, every image is detected afresh and each face is its own track.
    ``quality``: the gate's bounds (edgefer.quality), or None to count every face.
    """

    def __init__(
        self,
        stage: FaceStage,
        classifier: Classifier,
        *,
        temperature: float = 1.0,
        stills: bool = False,
        first_track: int = 0,
        quality: QualityBounds | None = FER2013_BOUNDS,
    ) -> None:
        self.stage = stage
        self.classifier = classifier
        self.temperature = temperature
        self.stills = stills
        self.quality = quality
        self.tracker = Tracker(first_id=first_track)

    def process(self, gray: np.ndarray, classify: bool = True) -> Reading:
        t0 = time.perf_counter()
        if self.stills:
            self.stage.reset()
        faces, detected = self.stage.faces(gray)
        t1 = time.perf_counter()
        tracks = self.tracker.new_ids(len(faces)) if self.stills else self.tracker.assign(faces)
        ms = {"detect": (t1 - t0) * 1000}
        probs = bad = None
        if faces and classify:
            crops = self.stage.crops(gray, faces)
            bad = poor(crops, self.quality) if self.quality is not None else None
            t2 = time.perf_counter()
            probs = calibrate(self.classifier.predict(crops), self.temperature)
            del crops
            ms["crop"], ms["classify"] = (t2 - t1) * 1000, (time.perf_counter() - t2) * 1000
        ms["total"] = (time.perf_counter() - t0) * 1000
        return Reading(faces, tracks, probs, detected, ms, bad)

    def reset(self) -> None:
        self.stage.reset()
        self.tracker.reset()
