"""Composited clips: dataset faces on a textured background, with the truth of every frame,
and the files they are written to."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FRAME_SIZE = (640, 480)


@dataclass
class Clip:
    """Frames with the ground truth of each face placed: label, box (x, y, w, h) and which
    of the given images it is (so a benchmark can also read the faces' own dataset crops)."""

    frames: list[np.ndarray]
    labels: np.ndarray  # (n_frames, faces_per_frame) indices into LABELS
    boxes: np.ndarray  # (n_frames, faces_per_frame, 4)
    images: np.ndarray  # (n_frames, faces_per_frame) indices into the images composited


def background(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A smooth grayscale texture of ``size`` (w, h): a gradient with a soft seeded ripple."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a, b = rng.uniform(25, 60, 2)
    g = 70 + 70 * xx / w + 30 * yy / h + 18 * np.sin(xx / a) * np.cos(yy / b)
    return np.clip(g, 0, 255).astype(np.uint8)


def composite_frames(
    images: np.ndarray,
    labels: np.ndarray,
    n_frames: int,
    size: tuple[int, int] = FRAME_SIZE,
    faces_per_frame: int = 1,
    seed: int = 0,
    hold: int = 8,
) -> Clip:
    """A synthetic video of dataset faces on a textured background, with its ground truth.

    Each face slot drifts smoothly (so a detector run every few frames still finds the
    face near its held box, as with a person in front of a camera) and shows one face,
    upscaled to 100-160 px, for ``hold`` frames before the next. Pure and seeded: the
    same arguments give the same frames, which tests rely on.
    """
    import cv2

    if len(images) == 0:
        raise ValueError("composite_frames needs at least one face image")
    w, h = size
    k = max(1, int(faces_per_frame))
    rng = np.random.default_rng(seed)
    bg = background(size, rng)
    order = rng.permutation(len(images))
    col = w / k
    max_side = int(min(160, col - 8, h - 8))
    if max_side < 48:
        raise ValueError(f"{k} faces do not fit in a {w}x{h} frame")
    min_side = min(100, max_side)
    phase = rng.uniform(0, 2 * math.pi, (k, 2))
    speed = rng.uniform(0.6, 1.2, (k, 2))
    segments = math.ceil(n_frames / max(1, hold))
    sides = rng.integers(min_side, max_side + 1, (segments, k))
    frames: list[np.ndarray] = []
    out_labels = np.zeros((n_frames, k), np.int64)
    out_boxes = np.zeros((n_frames, k, 4), np.int64)
    out_images = np.zeros((n_frames, k), np.int64)
    cache: dict[tuple[int, int], np.ndarray] = {}
    for i in range(n_frames):
        seg = i // max(1, hold)
        frame = bg.copy()
        for j in range(k):
            idx = int(order[(seg * k + j) % len(order)])
            side = int(sides[seg, j])
            face = cache.get((idx, side))
            if face is None:
                face = cv2.resize(images[idx], (side, side), interpolation=cv2.INTER_CUBIC)
                cache = {(idx, side): face} if len(cache) > 64 else {**cache, (idx, side): face}
            t = i / 15.0
            cx = (j + 0.5) * col + (col - side) / 2 * 0.8 * math.sin(speed[j, 0] * t + phase[j, 0])
            cy = h / 2 + (h - side) / 2 * 0.6 * math.sin(speed[j, 1] * t + phase[j, 1])
            x = int(np.clip(cx - side / 2, j * col, (j + 1) * col - side))
            y = int(np.clip(cy - side / 2, 0, h - side))
            frame[y : y + side, x : x + side] = face
            out_labels[i, j] = int(labels[idx])
            out_images[i, j] = idx
            out_boxes[i, j] = (x, y, side, side)
        frames.append(frame)
    return Clip(frames, out_labels, out_boxes, out_images)


def write_clip(frames: Sequence[np.ndarray], path: Path, fps: float) -> Path:
    """A video file (.avi MJPG, .mp4 mp4v, .mkv) or, for a path without suffix, a PNG folder."""
    import cv2

    if path.suffix.lower() in (".avi", ".mp4", ".mkv"):
        fourcc = cv2.VideoWriter_fourcc(*("mp4v" if path.suffix.lower() == ".mp4" else "MJPG"))
        h, w = frames[0].shape
        writer = cv2.VideoWriter(str(path), fourcc, fps, (w, h), isColor=True)
        if not writer.isOpened():
            raise OSError(f"{path}: cannot open a video writer")
        for f in frames:
            writer.write(cv2.cvtColor(f, cv2.COLOR_GRAY2BGR))
        writer.release()
        return path
    path.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        if not cv2.imwrite(str(path / f"frame_{i:05d}.png"), f):
            raise OSError(f"{path}: cannot write frame {i}")
    return path
