"""Face tracks: the same face followed from frame to frame, by box overlap.

A person in front of a camera is seen in many consecutive frames, and those frames are not
independent evidence: a misread face stays misread while it sits still. Tracks make that
structure visible to the mood statistics, which count every classified face-frame but treat
a track as the independent unit when they say how sure a share is (docs/mqtt.md, "Intervals").

Association is greedy by intersection-over-union, largest overlap first; a track that finds no
box for ``max_missed`` frames ends. Pure logic, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edgefer.faces import Face


def iou(a: Face, b: Face) -> float:
    """Intersection over union of two boxes (0 when they do not touch)."""
    x0, y0 = max(a.x, b.x), max(a.y, b.y)
    x1, y1 = min(a.x + a.w, b.x + b.w), min(a.y + a.h, b.y + b.h)
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    union = a.w * a.h + b.w * b.h - inter
    return inter / union if union > 0 else 0.0


@dataclass
class _Track:
    id: int
    box: Face
    missed: int = 0


class Tracker:
    """Gives each box of a frame a track id; ids are never reused within one tracker."""

    def __init__(self, min_iou: float = 0.3, max_missed: int = 15, first_id: int = 0) -> None:
        self.min_iou = min_iou
        self.max_missed = max_missed
        self._live: list[_Track] = []
        self._next = first_id

    def assign(self, boxes: Sequence[Face]) -> list[int]:
        """Track ids for ``boxes``, in their order; unmatched boxes start new tracks."""
        pairs = sorted(
            ((iou(t.box, b), ti, bi) for ti, t in enumerate(self._live) for bi, b in enumerate(boxes)),
            reverse=True,
        )
        ids: list[int | None] = [None] * len(boxes)
        used: set[int] = set()
        for overlap, ti, bi in pairs:
            if overlap < self.min_iou:
                break
            if ti in used or ids[bi] is not None:
                continue
            used.add(ti)
            ids[bi] = self._live[ti].id
            self._live[ti].box, self._live[ti].missed = boxes[bi], 0
        for ti, t in enumerate(self._live):
            if ti not in used:
                t.missed += 1
        self._live = [t for t in self._live if t.missed <= self.max_missed]
        for bi, box in enumerate(boxes):
            if ids[bi] is None:
                ids[bi] = self._next
                self._live.append(_Track(self._next, box))
                self._next += 1
        return [int(i) for i in ids]  # type: ignore[arg-type]

    def live_ids(self) -> set[int]:
        """The tracks still followed (seen within the last ``max_missed`` frames)."""
        return {t.id for t in self._live}

    def new_ids(self, n: int) -> list[int]:
        """Fresh ids with no association: each face of a still photograph is its own unit."""
        ids = list(range(self._next, self._next + n))
        self._next += n
        self._live = []
        return ids

    def reset(self) -> None:
        self._live = []
