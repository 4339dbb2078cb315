"""Training faces as the daemon's own face stage frames them.

FER2013's crops were cut by another detector. The daemon finds a face with its detector
(BlazeFace by default), maps the box to a crop of the training geometry (edgefer.faces'
framing) and aligns it on the eyes; the result is close to a FER2013 crop but never the same:
the box jitters with the face's size, pose and background, and the face has been resampled
twice (to the frame's scale, then to 48x48). :func:`framed_faces` puts each training face
into a frame at a random size and place, runs the daemon's face stage at its defaults on it
and keeps the crop the stage makes of it, so the student can be shown that crop while the
teachers label the clean face (``Recipe.framed``).

The frames are not the composited clips the benchmarks score on: sides of 72-240 px against
their 100-160, one still face per frame, the same kind of texture drawn afresh every 32 faces.
What the student is shown is the detector's framing over a wide range of sizes, not one clip's
look.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

FRAME = (640, 480)
SIDES = (72, 240)
#: faces per background: drawing a texture costs more than placing a face on it
PER_BACKGROUND = 32


def _frame_of(face: np.ndarray, side: int, x: int, y: int, bg: np.ndarray) -> np.ndarray:
    import cv2

    frame = bg.copy()
    frame[y : y + side, x : x + side] = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
    return frame


def framed_faces(
    images: np.ndarray, seed: int = 0, progress: Callable[[str], None] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each (48, 48) uint8 face as the daemon's face stage crops it from a frame, and whether
    the stage found it; a face it missed is returned unchanged (the student then sees the clean face)."""
    from edgefer.bench.clips import background
    from edgefer.config import parse
    from edgefer.faces import build_face_stage

    stage = build_face_stage(parse("").faces)
    rng = np.random.default_rng(seed)
    out = images.copy()
    found = np.zeros(len(images), bool)
    w, h = FRAME
    bg = background(FRAME, rng)
    for i, face in enumerate(images):
        if i % PER_BACKGROUND == 0:
            bg = background(FRAME, rng)
        side = int(rng.integers(SIDES[0], SIDES[1] + 1))
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        frame = _frame_of(face, side, x, y, bg)
        stage.reset()
        boxes, _ = stage.faces(frame)
        on = [b for b in boxes if x <= b.x + b.w / 2 <= x + side and y <= b.y + b.h / 2 <= y + side]
        if on:
            out[i] = stage.crops(frame, on[:1])[0]
            found[i] = True
        if progress and (i + 1) % 2000 == 0:
            progress(f"framed faces: {i + 1}/{len(images)}, found {found[: i + 1].mean():.1%}")
    return out, found


def cached_framed_faces(
    images: np.ndarray, cache: Path, seed: int = 0, log: Callable[[str], None] = print
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`framed_faces`, kept in ``cache`` (an .npz in the run folder) so a resumed run
    does not redo it; recomputed when the faces differ in number."""
    if cache.is_file():
        with np.load(cache) as z:
            if len(z["framed"]) == len(images):
                return z["framed"], z["found"]
    framed, found = framed_faces(images, seed, log)
    np.savez_compressed(cache, framed=framed, found=found)
    log(f"framed faces: the face stage found {found.mean():.1%} of {len(images)}")
    return framed, found
