"""Rolling mood statistics: pure logic, no I/O, so every definition is tested directly.

Time is cut into buckets (the greatest common divisor of the windows and publish
intervals, so every window is a whole number of buckets). Each bucket holds counts; a
window's summary is the sum of its buckets. Windows are published at fixed boundaries
(multiples of their interval on the daemon's timeline), so a summary is identified by
(device, window, end) and a restart can tell exactly which ones it already published.

Definitions (also in docs/mqtt.md):

- ``counts``: confident classifications per emotion (top probability >= min_confidence);
  ``uncertain``: classified faces below it. ``faces`` = sum(counts) + uncertain.
- ``shares``: counts / sum(counts).
- ``positivity_ratio``: (happy + 1) / (angry + sad + 1). Add-one smoothing keeps it defined
  and finite when no negative emotion was seen, and near 1 when little was seen at all;
  null when no confident face was counted. ``flourishing``: ratio >= 3 (the 3:1 line).
- ``neutral_share``: neutral / sum(counts) (flattened affect when high).
- ``expressivity``: 1 - neutral_share, the share of faces showing any emotion.
- ``emotion_entropy``: Shannon entropy of the four shares, divided by log(4), in [0, 1]:
  0 when one emotion is all that is seen, 1 when all four are equally frequent.
- ``coverage``: the share of the window's buckets in which frames were processed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import reduce

import numpy as np

from edgefer import LABELS

SCHEMA_VERSION = 1
# Columns of a bucket row after the per-label counts.
UNCERTAIN, FRAMES, FRAMES_WITH_FACES, ACTIVE = range(4)


def iso(t: float) -> str:
    """ISO-8601 UTC with a Z, second precision, as every payload uses."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def window_name(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size and not (unit == "d" and seconds == 86400):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def positivity_ratio(counts: dict[str, int]) -> float | None:
    if sum(counts.values()) == 0:
        return None
    return (counts.get("happy", 0) + 1) / (counts.get("angry", 0) + counts.get("sad", 0) + 1)


def emotion_entropy(shares: Sequence[float]) -> float:
    h = -sum(p * math.log(p) for p in shares if p > 0)
    return max(0.0, h / math.log(len(shares))) if len(shares) > 1 else 0.0


def window_stats(row: np.ndarray, labels: Sequence[str], coverage: float) -> dict:
    """Every derived figure of one window from its summed bucket row."""
    n = len(labels)
    counts = {lab: int(row[i]) for i, lab in enumerate(labels)}
    total = sum(counts.values())
    shares = {lab: (c / total if total else 0.0) for lab, c in counts.items()}
    ratio = positivity_ratio(counts)
    neutral = shares.get("neutral", 0.0) if total else None
    return {
        "counts": counts,
        "shares": {k: round(v, 4) for k, v in shares.items()},
        "faces": total + int(row[n + UNCERTAIN]),
        "uncertain": int(row[n + UNCERTAIN]),
        "frames": int(row[n + FRAMES]),
        "frames_with_faces": int(row[n + FRAMES_WITH_FACES]),
        "positivity_ratio": None if ratio is None else round(ratio, 4),
        "flourishing": None if ratio is None else ratio >= 3.0,
        "neutral_share": None if neutral is None else round(neutral, 4),
        "expressivity": None if neutral is None else round(1 - neutral, 4),
        "emotion_entropy": round(emotion_entropy(list(shares.values())), 4) if total else None,
        "dominant": max(counts, key=lambda k: counts[k]) if total else None,
        "coverage": round(coverage, 4),
    }


@dataclass(frozen=True)
class Summary:
    """One published window: its identity and its payload."""

    window_seconds: int
    end: int
    payload: dict

    @property
    def key(self) -> str:
        return self.payload["key"]


class MoodTracker:
    """Counts per time bucket in a ring; summaries of each window at fixed boundaries."""

    def __init__(
        self,
        device: str,
        windows: Sequence[int],
        publish_every: int,
        *,
        labels: Sequence[str] = LABELS,
        min_confidence: float = 0.4,
    ) -> None:
        self.device = device
        self.labels = tuple(labels)
        self.windows = sorted(int(w) for w in windows)
        self.intervals = {w: min(w, int(publish_every)) for w in self.windows}
        self.bucket = reduce(math.gcd, [*self.windows, *self.intervals.values()])
        self.min_confidence = min_confidence
        self.width = len(self.labels) + 4
        self.slots = self.windows[-1] // self.bucket + 1
        self.rows = np.zeros((self.slots, self.width), np.int64)
        self.ids = np.full(self.slots, -1, np.int64)
        self.last_end: dict[int, int] = {}
        self.seq = 0

    # -- counting ---------------------------------------------------------------------

    def _row(self, t: float) -> np.ndarray:
        b = int(t // self.bucket)
        slot = b % self.slots
        if self.ids[slot] != b:
            self.ids[slot] = b
            self.rows[slot] = 0
        return self.rows[slot]

    def add_frame(self, t: float, probs: np.ndarray | None = None) -> None:
        """One processed frame at time ``t``; ``probs`` (N, labels) of the faces classified in it."""
        row = self._row(t)
        n = len(self.labels)
        row[n + FRAMES] += 1
        row[n + ACTIVE] = 1
        if probs is None or len(probs) == 0:
            return
        row[n + FRAMES_WITH_FACES] += 1
        top = probs.max(axis=1)
        confident = top >= self.min_confidence
        np.add.at(row, probs[confident].argmax(axis=1), 1)
        row[n + UNCERTAIN] += int((~confident).sum())

    def window_row(self, start: int, end: int) -> tuple[np.ndarray, float]:
        """Summed counts of the buckets covering [start, end) and the share of them that were
        active. Boundaries are bucket-aligned except for final summaries, whose partial last
        bucket is included."""
        first, last = start // self.bucket, (end - 1) // self.bucket + 1
        mask = (self.ids >= first) & (self.ids < last)
        row = self.rows[mask].sum(axis=0) if mask.any() else np.zeros(self.width, np.int64)
        coverage = float(row[len(self.labels) + ACTIVE]) / max(last - first, 1)
        return row, coverage

    # -- publishing -------------------------------------------------------------------

    def start(self, t: float) -> None:
        """Begin at ``t``: windows whose boundary has not been published yet wait for the next."""
        for w in self.windows:
            every = self.intervals[w]
            self.last_end.setdefault(w, int(t // every) * every)

    def due(self, t: float) -> list[Summary]:
        """Summaries whose boundary has passed since the last call (at most one per window:
        after a long gap only the latest boundary is published, not a flood of empty ones)."""
        out = []
        for w in self.windows:
            every = self.intervals[w]
            end = int(t // every) * every
            if end <= self.last_end.get(w, end):
                self.last_end.setdefault(w, end)
                continue
            self.last_end[w] = end
            out.append(self.summary(w, end))
        return out

    def final(self, t: float) -> list[Summary]:
        """At the end of a finite source: one last summary per window, ending now."""
        end = math.ceil(t)
        out = []
        for w in self.windows:
            if end > self.last_end.get(w, 0):
                self.last_end[w] = end
                out.append(self.summary(w, end))
        return out

    def summary(self, window: int, end: int) -> Summary:
        row, coverage = self.window_row(end - window, end)
        self.seq += 1
        payload = {
            "schema": SCHEMA_VERSION,
            "device": self.device,
            "window": window_name(window),
            "window_seconds": window,
            "start": iso(end - window),
            "end": iso(end),
            "key": f"{self.device}/{window}/{end}",
            "seq": self.seq,
            **window_stats(row, self.labels, coverage),
        }
        return Summary(window, end, payload)

    # -- persistence ------------------------------------------------------------------

    def state(self) -> dict:
        """JSON-able state: non-empty buckets, published boundaries, sequence number."""
        live = np.flatnonzero(self.ids >= 0)
        return {
            "version": 1,
            "bucket": self.bucket,
            "labels": list(self.labels),
            "buckets": {str(int(self.ids[i])): self.rows[i].tolist() for i in live if self.rows[i].any()},
            "last_end": {str(w): e for w, e in self.last_end.items()},
            "seq": self.seq,
        }

    def restore(self, state: dict) -> None:
        """Resume from :meth:`state`. Published boundaries are always kept (no summary is
        published twice); counts only when the bucket size and labels are unchanged."""
        self.seq = int(state.get("seq", 0))
        for w, e in (state.get("last_end") or {}).items():
            if int(w) in self.intervals:
                self.last_end[int(w)] = int(e)
        if state.get("bucket") != self.bucket or state.get("labels") != list(self.labels):
            return
        newest = max((int(b) for b in state.get("buckets", {})), default=None)
        for b_str, values in (state.get("buckets") or {}).items():
            b = int(b_str)
            if (newest is not None and newest - b >= self.slots) or len(values) != self.width:
                continue
            slot = b % self.slots
            self.ids[slot] = b
            self.rows[slot] = np.asarray(values, np.int64)
