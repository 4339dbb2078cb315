"""The two pipelines the user-facing benchmarks put side by side, and the figures they share.

``edgefer-bench --mode faces`` and ``--mode clip`` ask what a user of each pipeline ends up
with: which faces are found, what is counted, what shares come out. So edgefer is built
exactly as the daemon builds it from an empty configuration (its frame path, its detector,
its classifier and temperature), and its shares are the daemon's (:func:`share_intervals`
over tracks), while fer's are what fer users count: the share of argmax labels over the
faces it returns.

CPU cost is process CPU time (``time.process_time``: every thread of the process) around each
pipeline's call, the two called alternately on the same frame, so a slower or busier machine
moves both alike and the ratio holds.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefer import LABELS
from edgefer.mood import share_intervals

K = len(LABELS)


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
    cpu_ms: float

    def largest(self) -> int | None:
        """Index of the largest box (the subject of a portrait), or None without a face."""
        if not self.boxes:
            return None
        return int(np.argmax([w * h for _, _, w, h in self.boxes]))


class DaemonLane:
    """edgefer's frame path built as ``edgefer run`` builds it from an empty configuration."""

    name = "edgefer"

    def __init__(self, *, stills: bool) -> None:
        from edgefer.config import parse
        from edgefer.faces import build_face_stage
        from edgefer.framepath import FramePath
        from edgefer.service import build_classifier

        cfg = parse("")
        self.cfg = cfg
        self.classifier = build_classifier(cfg)
        self.path = FramePath(
            build_face_stage(cfg.faces), self.classifier, temperature=cfg.classifier.temperature, stills=stills
        )
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
            "temperature": c.temperature,
            "flip_average": c.flip_average,
            "flip_margin": c.flip_margin,
            "runtime": self.classifier.runtime,
            "stills": self.path.stills,
        }

    def reset(self) -> None:
        self.path.reset()

    def step(self, gray: np.ndarray) -> Seen:
        t0 = time.process_time()
        reading = self.path.process(gray, True)
        cpu = (time.process_time() - t0) * 1000
        probs = np.zeros((0, K), np.float32) if reading.probs is None else reading.probs[:, self._order]
        boxes = [(f.x, f.y, f.w, f.h) for f in reading.faces][: len(probs)]
        return Seen(boxes, probs, probs.argmax(axis=1), list(reading.tracks[: len(probs)]), cpu)


class FerLane:
    """fer 25.10.3's per-frame pipeline (:class:`edgefer.peer_fer.FerPipeline`)."""

    name = "fer"

    def __init__(self, model: Path, source: str) -> None:
        from edgefer.peer_fer import FerPipeline

        self.pipe = FerPipeline(model)
        self.source = source

    def describe(self) -> dict[str, Any]:
        return {**self.pipe.describe(), "model_from": self.source}

    def reset(self) -> None:
        pass

    def step(self, gray: np.ndarray) -> Seen:
        t0 = time.process_time()
        r = self.pipe.process(gray)
        cpu = (time.process_time() - t0) * 1000
        return Seen(r.boxes, r.probs, r.labels, None, cpu)


def make_lanes(args: argparse.Namespace, *, stills: bool) -> tuple[list[Any], str | None]:
    """edgefer's lane, and fer's when ``--peer fer`` asks for it and its model can be had;
    otherwise the reason it is not measured (None when it was not asked for)."""
    from edgefer.peer_fer import FerModelUnavailable, find_fer_model

    lanes: list[Any] = [DaemonLane(stills=stills)]
    if "fer" not in (args.peer or []):
        return lanes, None
    try:
        model, source = find_fer_model(getattr(args, "fer_model", None))
    except FerModelUnavailable as exc:
        return lanes, f"fer not measured: {exc}"
    lanes.append(FerLane(model, source))
    return lanes, None


def run_both(lanes: list[Any], gray: np.ndarray, i: int) -> list[Seen]:
    """Every lane on one frame, the first to run alternating with ``i`` so neither always
    runs on a cache the other has just warmed (or cooled)."""
    order = range(len(lanes)) if i % 2 == 0 else reversed(range(len(lanes)))
    out: dict[int, Seen] = {j: lanes[j].step(gray) for j in order}
    return [out[j] for j in range(len(lanes))]


# -- shares ----------------------------------------------------------------------------------


def label_shares(labels: np.ndarray) -> np.ndarray:
    """Share of each label among counted faces (fer users' count); zeros without faces."""
    labels = np.asarray(labels, np.int64)
    return np.bincount(labels, minlength=K) / len(labels) if len(labels) else np.zeros(K)


def track_rows(per_frame: list[tuple[list[int], np.ndarray]]) -> np.ndarray:
    """Per-track rows ``[face-frames, sum p_angry .. sum p_neutral]`` over frames, merged by
    track id as the daemon merges a window's buckets."""
    acc: dict[int, np.ndarray] = {}
    for tracks, probs in per_frame:
        for tid, p in zip(tracks, probs, strict=True):
            row = acc.setdefault(int(tid), np.zeros(K + 1))
            row[0] += 1
            row[1:] += p
    return np.array(list(acc.values())) if acc else np.zeros((0, K + 1))


def daemon_shares(rows: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """The shares the daemon would publish for these track rows, their 95 % intervals, and
    how they compare with the true mix."""
    shares, lo, hi = share_intervals(rows)
    covered = [bool(lo[j] <= truth[j] <= hi[j]) for j in range(K)]
    return {
        "tracks": len(rows),
        "faces": int(rows[:, 0].sum()) if len(rows) else 0,
        "shares": by_label(shares),
        "ci95": {lab: [round(float(lo[j]), 6), round(float(hi[j]), 6)] for j, lab in enumerate(LABELS)},
        "covered": dict(zip(LABELS, covered, strict=True)),
        "covered_count": sum(covered),
        "l1": l1(shares, truth),
    }


def counted_shares(labels: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    shares = label_shares(labels)
    return {"faces": len(labels), "shares": by_label(shares), "l1": l1(shares, truth)}


def by_label(values: np.ndarray) -> dict[str, float]:
    return {lab: round(float(values[j]), 6) for j, lab in enumerate(LABELS)}


def l1(shares: np.ndarray, truth: np.ndarray) -> float:
    """Sum of absolute differences between two mixes (0 = identical, 2 = disjoint)."""
    return round(float(np.abs(np.asarray(shares) - np.asarray(truth)).sum()), 6)


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a is not None and b else None


# -- output ----------------------------------------------------------------------------------


def write_result(out: Path, stem: str, result: dict[str, Any], markdown: str, quiet: bool) -> None:
    """``<out>/<stem>.json`` and ``<out>/<stem>.md``; the Markdown is printed too."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"{stem}.md").write_text(markdown)
    print(markdown)
    if not quiet:
        print(f"edgefer-bench: wrote {out / stem}.json and .md", flush=True)


def share_cells(b: dict[str, Any]) -> str:
    """A Markdown row's share cells: each class's share, with its interval where there is one."""
    cells = [
        f"{b['shares'][lab]:.3f}" + (f" [{b['ci95'][lab][0]:.3f}, {b['ci95'][lab][1]:.3f}]" if "ci95" in b else "")
        for lab in LABELS
    ]
    return " | ".join(cells)


def truth_cells(mix: dict[str, float]) -> str:
    return " | ".join(f"{mix[lab]:.3f}" for lab in LABELS)


def pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def num(v: float | None, fmt: str = "{:.2f}") -> str:
    return "–" if v is None else fmt.format(v)
