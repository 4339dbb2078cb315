"""The two pipelines the user-facing modes (faces, clip) put side by side, and how they run.

``edgefer-bench --mode faces`` and ``--mode clip`` ask what a user of each pipeline ends up
with: which faces are found, what is counted, what shares come out. So edgefer is built
exactly as the daemon builds it from an empty configuration (its frame path, its detector,
its classifier and temperature), and its shares are the daemon's (:func:`share_intervals`
over tracks), while fer's are what fer users count: the share of argmax labels over the
faces it returns.

CPU cost is process CPU time (``time.process_time``: every thread of the process) around each
pipeline's call, the two called alternately on the same frame (:mod:`edgefer.bench.timing`),
so a slower or busier machine moves both alike and the ratio holds.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefer import LABELS
from edgefer.bench import timing
from edgefer.bench.stats import K, by_label, counted_shares, daemon_shares, track_rows


@dataclass
class Seen:
    """One pipeline's result on one frame, in :data:`edgefer.LABELS` order.

    ``labels`` is the argmax each face is counted under; ``tracks`` is None for a pipeline
    that has none (fer); ``cpu_ms`` is the process CPU time the call took.
    """

    boxes: list[tuple[int, int, int, int]]
    probs: np.ndarray
    labels: np.ndarray
    tracks: list[int] | None
    cpu_ms: float = 0.0

    def largest(self) -> int | None:
        """Index of the largest box (the subject of a portrait), or None without a face."""
        if not self.boxes:
            return None
        return int(np.argmax([w * h for _, _, w, h in self.boxes]))


class DaemonLane:
    """edgefer's frame path built as ``edgefer run`` builds it from an empty configuration
    (with ``model``, that classifier file instead of the shipped default: a candidate's check)."""

    name = "edgefer"

    def __init__(self, *, stills: bool, model: str | None = None) -> None:
        from edgefer.config import parse
        from edgefer.faces import build_face_stage
        from edgefer.framepath import FramePath
        from edgefer.service import build_classifier

        cfg = parse(f"[classifier]\nmodel = {json.dumps(str(model))}\n" if model else "")
        self.cfg = cfg
        self.classifier = build_classifier(cfg)
        self.path = FramePath.of(build_face_stage(cfg.faces), self.classifier, cfg.classifier, stills=stills)
        #: the classifier's columns in LABELS order
        self._order = np.array([self.classifier.labels.index(lab) for lab in LABELS])

    def describe(self) -> dict[str, Any]:
        f, c = self.cfg.faces, self.cfg.classifier
        return {
            "pipeline": "edgefer FramePath, the daemon's defaults (edgefer.config.parse(''))",
            "detector": self.path.stage.detector.name,
            "detect_every": 1 if self.path.stills else f.detect_every,
            "detect_scale": f.detect_scale,
            "min_face": f.min_face,
            "max_faces": f.max_faces,
            "model": self.classifier.path.name,
            "threads": c.threads,
            **self.path.counting(),
            "flip_average": c.flip_average,
            "flip_margin": c.flip_margin,
            "runtime": self.classifier.runtime,
            "stills": self.path.stills,
        }

    def reset(self) -> None:
        self.path.reset()

    def on_crops(self, faces: np.ndarray) -> np.ndarray:
        """What the daemon would count for each (48, 48) dataset crop were its face path
        perfect: the classifier's probabilities, calibrated as the path calibrates them."""
        return self.path.calibration(self.classifier.predict(faces))[:, self._order]

    def step(self, gray: np.ndarray) -> Seen:
        reading = self.path.process(gray, True)
        if reading.probs is None:
            return Seen([], np.zeros((0, K), np.float32), np.zeros(0, int), [])
        probs, tracks = reading.counted()  # what the daemon counts: the quality gate's poor faces left out
        keep = np.ones(len(reading.faces), bool) if reading.poor is None else ~reading.poor
        boxes = [(f.x, f.y, f.w, f.h) for f, k in zip(reading.faces, keep, strict=True) if k]
        probs = probs[:, self._order]
        return Seen(boxes, probs, probs.argmax(axis=1), tracks)


class FerLane:
    """fer 25.10.3's per-frame pipeline (:class:`edgefer.bench.peers.fer.FerPipeline`)."""

    name = "fer"

    def __init__(self, model: Path, source: str) -> None:
        from edgefer.bench.peers.fer import FerPipeline

        self.pipe = FerPipeline(model)
        self.source = source

    def describe(self) -> dict[str, Any]:
        return {**self.pipe.describe(), "model_from": self.source}

    def reset(self) -> None:
        pass

    def on_crops(self, faces: np.ndarray) -> np.ndarray:
        """What a fer user would count for each (48, 48) dataset crop were fer's face path
        perfect: its model's label (resized to 64x64 as fer resizes), one-hot."""
        m = self.pipe.model
        return np.eye(K, dtype=np.float32)[m.label(m.four_of_crops(faces))]

    def step(self, gray: np.ndarray) -> Seen:
        r = self.pipe.process(gray)
        return Seen(r.boxes, r.probs, r.labels, None)


def lane_shares(seen: list[Seen], truth: np.ndarray, daemon: bool) -> dict[str, Any]:
    """The true mix of ``truth`` (label indices) and what one lane's user reads over ``seen``:
    the daemon's shares with their intervals over tracks (``daemon``), else counted labels."""
    mix = np.bincount(truth, minlength=K) / len(truth)
    if daemon:
        out = daemon_shares(track_rows([(s.tracks or [], s.probs) for s in seen]), mix)
    else:
        out = counted_shares(np.concatenate([s.labels for s in seen]), mix)
    return {"truth_mix": by_label(mix), **out}


def make_lanes(args: argparse.Namespace, *, stills: bool) -> tuple[list[Any], str | None]:
    """edgefer's lane, and fer's when ``--peer fer`` asks for it and its model can be had;
    otherwise the reason it is not measured (None when it was not asked for)."""
    from edgefer.bench.peers.fer import FerModelUnavailable, find_fer_model

    models = getattr(args, "model", None) or []
    lanes: list[Any] = [DaemonLane(stills=stills, model=models[0] if models else None)]
    if "fer" not in (args.peer or []):
        return lanes, None
    try:
        model, source = find_fer_model(getattr(args, "fer_model", None))
    except FerModelUnavailable as exc:
        return lanes, f"fer not measured: {exc}"
    lanes.append(FerLane(model, source))
    return lanes, None


def warm_up(lanes: list[Any], frames: Sequence[np.ndarray], count: int) -> None:
    """Every lane on the first ``count`` frames, untimed: first calls allocate and page in."""
    timing.warm_up(len(lanes), min(count, len(frames)), lambda j, i: lanes[j].step(frames[i]))


def run_all(
    lanes: list[Any], frames: Sequence[np.ndarray], progress: Callable[[int], None] | None = None
) -> list[list[Seen]]:
    """Every lane on every frame, frame by frame, the first to run alternating so neither
    always runs on a cache the other has just warmed (or cooled); each result carries the
    process CPU time of its call. ``progress(i)`` after frame ``i``."""
    seen: list[list[Any]] = [[None] * len(lanes) for _ in frames]

    def work(j: int, i: int, _stop: int) -> None:
        seen[i][j] = lanes[j].step(frames[i])

    def done(i: int, _rounds: int, _stop: int) -> None:
        if progress is not None:
            progress(i)

    shares = timing.interleaved(len(lanes), len(frames), 1, work, done)
    for j, own in enumerate(shares):
        for i, share in enumerate(own):
            seen[i][j].cpu_ms = share.cpu_s * 1000
    return seen
