"""The frame path: a grayscale frame in, its faces, their tracks and probabilities out.

detect (on a downscaled copy, every few frames) -> frame (the detector's measured crop
geometry) -> align (eyes levelled when the detector gives them) -> gate (crops too dark,
flat or blurred to read: edgefer.quality) -> classify (LiteRT) -> remember (each face's
reading averaged along its track: :class:`TrackMemory`) -> calibrate (the training mix's lean
partly taken out, then sharpened: :class:`Calibration`); tracks follow faces by box overlap.
The daemon and every ``edgefer-bench`` mode that times or scores faces run this one class, so
what is measured is what runs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import KW_ONLY, InitVar, dataclass, field
from functools import cached_property

import numpy as np

from edgefer.classifier import Classifier
from edgefer.configschema import ClassifierConfig
from edgefer.faces import Face, FaceStage
from edgefer.quality import FER2013_BOUNDS, QualityBounds, poor
from edgefer.tracks import Tracker

#: FER2013's training split in the four classes: the mix every shipped model was trained on
#: (Goodfellow et al., 2013; 3,995 angry, 7,215 happy, 4,830 sad, 4,965 neutral faces)
FER2013_TRAIN_MIX = {"angry": 3995, "happy": 7215, "sad": 4830, "neutral": 4965}


def calibrate(probs: np.ndarray, temperature: float, mix: np.ndarray | None = None, balance: float = 0.0) -> np.ndarray:
    """Softmax((log p - balance * log mix) / T).

    T < 1 sharpens, T > 1 softens. ``balance`` takes that share of the training ``mix``'s lean
    out of the probabilities first (1: as if the network had been trained on equal numbers of
    each emotion; Menon et al.'s logit adjustment, 2021). With T = 1 and no balance ``probs``
    come back as they are."""
    balanced = mix is not None and balance > 0
    if (temperature == 1.0 and not balanced) or len(probs) == 0:
        return probs
    logits = np.log(np.clip(probs, 1e-7, 1.0))
    if balanced:
        logits = logits - balance * np.log(np.asarray(mix, float) / np.sum(mix))
    logits = logits / temperature
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


@dataclass(frozen=True)
class Calibration:
    """What is done to each face's probabilities before they are counted (``classifier.balance``
    and ``classifier.temperature``; docs/mqtt.md, "How shares are estimated")."""

    temperature: float = 1.0
    balance: float = 0.0
    #: the training mix in the classifier's label order
    mix: tuple[float, ...] | None = None

    @classmethod
    def of(cls, cfg: ClassifierConfig, labels: Sequence[str]) -> Calibration:
        """The configured calibration of a classifier with these output labels."""
        return cls(cfg.temperature, cfg.balance, tuple(float(FER2013_TRAIN_MIX[lab]) for lab in labels))

    @cached_property
    def _mix(self) -> np.ndarray | None:
        """The mix as an array, made once rather than on every frame."""
        return np.array(self.mix) if self.mix else None

    def __call__(self, probs: np.ndarray) -> np.ndarray:
        return calibrate(probs, self.temperature, self._mix, self.balance)


class TrackMemory:
    """Each track's probabilities as a moving average over the frames it was classified in.

    A face in front of a camera is seen many times a second, and one frame's reading is noisy
    (the box drifts between detections, the face turns, the light flickers); its expression
    changes more slowly than that. So the probabilities counted for a face in a frame are
    ``(1 - weight) * this frame's + weight * what they were in its previous frame``, restarted
    for every new track. Poor crops (``keep`` False) pass through without touching the memory.
    ``weight`` 0 counts every frame alone. Pure logic, no I/O.
    """

    def __init__(self, weight: float = 0.0) -> None:
        self.weight = weight
        self._last: dict[int, np.ndarray] = {}

    def update(self, probs: np.ndarray, tracks: Sequence[int], keep: np.ndarray | None = None) -> np.ndarray:
        """This frame's rows for ``probs`` (one per face, in ``tracks``' order), remembered."""
        if self.weight == 0 or len(probs) == 0:
            return probs
        out = probs.astype(np.float32, copy=True)
        for i, track in enumerate(tracks):
            if keep is not None and not keep[i]:
                continue
            last = self._last.get(track)
            if last is not None:
                out[i] = (1 - self.weight) * probs[i] + self.weight * last
            self._last[track] = out[i]
        return out

    def forget(self, live: set[int]) -> None:
        """Drop the tracks that ended, so the memory holds only faces still in view."""
        for track in [t for t in self._last if t not in live]:
            del self._last[track]


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


@dataclass(eq=False)  # a running path is itself, not equal to another with its settings
class FramePath:
    """Faces and emotion probabilities of each frame, in the classifier's label order.

    ``stills``: frames are unrelated photographs (a folder): nothing is held or tracked from
    one to the next, every image is detected afresh and each face is its own track.
    ``quality``: the gate's bounds (edgefer.quality), or None to count every face.
    ``first_track``: the first track id given (the daemon starts from the clock, so ids never
    repeat across restarts). ``smoothing``: the weight of a face's previous reading
    (:class:`TrackMemory`); stills have none.
    """

    stage: FaceStage
    classifier: Classifier
    _: KW_ONLY
    calibration: Calibration = field(default_factory=Calibration)
    stills: bool = False
    quality: QualityBounds | None = FER2013_BOUNDS
    first_track: InitVar[int] = 0
    smoothing: InitVar[float] = 0.0

    def __post_init__(self, first_track: int, smoothing: float) -> None:
        self.tracker = Tracker(first_id=first_track)
        self.memory = TrackMemory(0.0 if self.stills else smoothing)

    @classmethod
    def of(cls, stage: FaceStage, classifier: Classifier, cfg: ClassifierConfig, **kwargs: object) -> FramePath:
        """The frame path as ``cfg`` (the ``[classifier]`` table) sets it up: what the daemon runs."""
        calibration = Calibration.of(cfg, classifier.labels)
        return cls(stage, classifier, calibration=calibration, smoothing=cfg.smoothing, **kwargs)  # type: ignore[arg-type]

    def counting(self) -> dict[str, float]:
        """How a face's probabilities become what is counted: the settings in effect (a folder's
        photos are never averaged, whatever ``classifier.smoothing`` says)."""
        c = self.calibration
        return {"smoothing": self.memory.weight, "balance": c.balance, "temperature": c.temperature}

    def process(self, gray: np.ndarray, classify: bool = True) -> Reading:
        t0 = time.perf_counter()
        if self.stills:
            self.stage.reset()
        faces, detected = self.stage.faces(gray)
        t1 = time.perf_counter()
        tracks = self.tracker.new_ids(len(faces)) if self.stills else self.tracker.assign(faces)
        self.memory.forget(self.tracker.live_ids())
        ms = {"detect": (t1 - t0) * 1000}
        probs = bad = None
        if faces and classify:
            crops = self.stage.crops(gray, faces)
            bad = poor(crops, self.quality) if self.quality is not None else None
            t2 = time.perf_counter()
            raw = self.classifier.predict(crops)
            probs = self.calibration(self.memory.update(raw, tracks, None if bad is None else ~bad))
            del crops
            ms["crop"], ms["classify"] = (t2 - t1) * 1000, (time.perf_counter() - t2) * 1000
        ms["total"] = (time.perf_counter() - t0) * 1000
        return Reading(faces, tracks, probs, detected, ms, bad)

    def reset(self) -> None:
        self.stage.reset()
        self.tracker.reset()
        self.memory.forget(set())
