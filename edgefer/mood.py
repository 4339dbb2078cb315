"""Rolling mood statistics: pure logic, no I/O, so every definition is tested directly.

Time is cut into buckets (the greatest common divisor of the windows and publish
intervals, so every window is a whole number of buckets). Each bucket holds counts; a
window's summary is the sum of its buckets. Windows are published at fixed boundaries
(multiples of their interval on the daemon's timeline), so a summary is identified by
(device, window, end) and a restart can tell exactly which ones it already published.

When the wall clock is stepped (NTP correcting a Pi that booted without a clock), the
counts recorded since the last step move with it (:meth:`MoodTracker.move`), so they stay
at the time they were really seen. Forward, the boundaries jumped over are treated as a gap
(the latest is published, once). Backward, boundaries that were already published under
the wrong time come round again: a window whose published boundaries lie at least one
interval ahead of the corrected clock publishes them again under the correct time, each
with a key of its own (``<device>/<window>/<end>/r<N>``, N counting such corrections), so
no key is ever published twice and the timeline is not silent until the clock catches up
(:meth:`MoodTracker.rewind`).

Definitions (also in docs/mqtt.md). A *face-frame* is one face classified in one frame; a
*track* is one face followed across frames (edgefer.tracks), the independent unit.

- ``shares``: the mean of the classifier's probabilities (averaged along each track, the
  training mix's lean taken out and sharpened: ``classifier.smoothing``, ``balance`` and
  ``temperature``; edgefer.framepath) over the window's face-frames: the fraction of face-time
  spent in each emotion. Every classified face counts, so no emotion is dropped more than
  another by a confidence cut; the last two steps keep a window's shares from leaning toward
  the mix the network was trained on (benchmarks/results/estimators.md and mixes.md).
- ``shares_ci95``: a 95 % interval per share that treats tracks, not frames, as independent
  (cluster-robust variance of a ratio, Student-t quantile); [0, 1] with fewer than 2 tracks.
  It covers sampling (which faces, which moments were seen), not a detector that misses one
  emotion more than another.
- ``counts``: face-frames per emotion whose top (sharpened) probability is >= min_confidence (raw
  labels, kept for subscribers that count); ``uncertain``: classified face-frames below it.
  ``faces`` = sum(counts) + uncertain = every classified face-frame; ``tracks``: distinct
  tracks among them. ``poor``: face-frames found but refused by the quality gate (too dark,
  flat or blurred to read, edgefer.quality): seen, in no other figure.
- ``positivity_ratio``: (happy + 1) / (angry + sad + 1) over expected face-frames (share x
  faces). Add-one smoothing keeps it defined and finite when no negative emotion was seen,
  and near 1 when little was seen at all; null when no face was classified.
  ``flourishing``: ratio >= 3 (the 3:1 line).
- ``neutral_share``: the neutral share (flattened affect when high).
- ``expressivity``: 1 - neutral_share, the share of face-time showing any emotion.
- ``emotion_entropy``: Shannon entropy of the four shares, divided by log(4), in [0, 1]:
  0 when one emotion is all that is seen, 1 when all four are equally frequent.
- ``dominant``: the emotion with the largest share.
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

SCHEMA_VERSION = 2
#: the layout of :meth:`MoodTracker.state` (2: buckets carry their tracks)
STATE_VERSION = 3
# Columns of a bucket row after the per-label counts (3 added POOR; a version-2 row is
# read with POOR = 0, so an upgrade keeps the counts it had saved).
UNCERTAIN, FRAMES, FRAMES_WITH_FACES, ACTIVE, POOR = range(5)


def iso(t: float) -> str:
    """ISO-8601 UTC with a Z, second precision, as every payload uses."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def window_name(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size and not (unit == "d" and seconds == 86400):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def positivity_ratio(counts: dict[str, float]) -> float | None:
    if sum(counts.values()) == 0:
        return None
    return (counts.get("happy", 0) + 1) / (counts.get("angry", 0) + counts.get("sad", 0) + 1)


def emotion_entropy(shares: Sequence[float]) -> float:
    h = -sum(p * math.log(p) for p in shares if p > 0)
    return max(0.0, h / math.log(len(shares))) if len(shares) > 1 else 0.0


# Student-t 0.975 quantiles for 1..30 degrees of freedom; 1.96 beyond.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)  # fmt: skip


def share_intervals(tracks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shares and their 95 % intervals from per-track rows ``[n, sum p_1 .. sum p_k]``.

    The share of emotion j is sum(s_j) / sum(n) over tracks; its variance is the
    cluster-robust one of a ratio, m/(m-1) * sum((s_j - share_j * n)^2) / N^2, so that a
    track seen in 500 frames weighs as one observation of its own kind, not 500. The
    interval is Wilson's at the effective sample size share(1 - share) / variance, with a
    Student-t quantile for m - 1 degrees of freedom.
    """
    k = tracks.shape[1] - 1
    n_total = float(tracks[:, 0].sum()) if len(tracks) else 0.0
    if n_total <= 0:
        zeros = np.zeros(k)
        return zeros, zeros, np.ones(k)
    shares = tracks[:, 1:].sum(axis=0) / n_total
    m = len(tracks)
    if m < 2:
        return shares, np.zeros(k), np.ones(k)
    resid = tracks[:, 1:] - np.outer(tracks[:, 0], shares)
    var = m / (m - 1) * (resid**2).sum(axis=0) / n_total**2
    # Wilson's score interval at the effective sample size those variances imply: it stays
    # inside [0, 1] and does not collapse for shares near 0 or 1, where a plain
    # share +/- t * se undercovers. A share with no spread at all counts each track once.
    bern = shares * (1 - shares)
    n_eff = np.where(var > 0, bern / np.maximum(var, 1e-12), m)
    n_eff = np.clip(n_eff, 1, n_total)
    z = _T975[m - 2] if m - 1 <= len(_T975) else 1.96
    centre = (shares + z**2 / (2 * n_eff)) / (1 + z**2 / n_eff)
    half = z / (1 + z**2 / n_eff) * np.sqrt(bern / n_eff + z**2 / (4 * n_eff**2))
    return shares, np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def window_stats(row: np.ndarray, tracks: np.ndarray, labels: Sequence[str], coverage: float) -> dict:
    """Every derived figure of one window from its summed bucket row and its track rows."""
    n = len(labels)
    counts = {lab: int(row[i]) for i, lab in enumerate(labels)}
    faces = sum(counts.values()) + int(row[n + UNCERTAIN])
    share, lo, hi = share_intervals(tracks)
    seen = faces > 0 and len(tracks) > 0
    shares = {lab: float(share[i]) if seen else 0.0 for i, lab in enumerate(labels)}
    expected = {lab: v * faces for lab, v in shares.items()}
    ratio = positivity_ratio(expected) if seen else None
    neutral = shares.get("neutral", 0.0) if seen else None
    return {
        "counts": counts,
        "shares": {k: round(v, 4) for k, v in shares.items()},
        "shares_ci95": {lab: [round(float(lo[i]), 4), round(float(hi[i]), 4)] for i, lab in enumerate(labels)}
        if seen
        else None,
        "faces": faces,
        "tracks": len(tracks),
        "uncertain": int(row[n + UNCERTAIN]),
        "poor": int(row[n + POOR]),
        "frames": int(row[n + FRAMES]),
        "frames_with_faces": int(row[n + FRAMES_WITH_FACES]),
        "positivity_ratio": None if ratio is None else round(ratio, 4),
        "flourishing": None if ratio is None else ratio >= 3.0,
        "neutral_share": None if neutral is None else round(neutral, 4),
        "expressivity": None if neutral is None else round(1 - neutral, 4),
        "emotion_entropy": round(emotion_entropy(list(shares.values())), 4) if seen else None,
        "dominant": max(shares, key=lambda k: shares[k]) if seen else None,
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
        recording_start: float | None = None,
    ) -> None:
        self.device = device
        #: set for a recording analysed on its own clock: when its second 0 is placed
        self.recording_start = recording_start
        self.labels = tuple(labels)
        self.windows = sorted(int(w) for w in windows)
        self.intervals = {w: min(w, int(publish_every)) for w in self.windows}
        self.bucket = reduce(math.gcd, [*self.windows, *self.intervals.values()])
        self.min_confidence = min_confidence
        self.width = len(self.labels) + 5
        self.slots = self.windows[-1] // self.bucket + 1
        self.rows = np.zeros((self.slots, self.width), np.int64)
        #: per slot: track id -> [face-frames, sum of probabilities per label]
        self.tracks: list[dict[int, np.ndarray]] = [{} for _ in range(self.slots)]
        self.ids = np.full(self.slots, -1, np.int64)
        self._untracked = -1
        self.last_end: dict[int, int] = {}
        #: per window: the latest boundary published with a plain key on any timeline; up to
        #: it, boundaries published again after a backward clock step get a suffixed key
        self.high: dict[int, int] = {}
        #: how many backward clock steps made windows publish boundaries again
        self.era = 0
        self.seq = 0

    # -- counting ---------------------------------------------------------------------

    def _row(self, t: float) -> np.ndarray:
        b = int(t // self.bucket)
        slot = b % self.slots
        if self.ids[slot] != b:
            self.ids[slot] = b
            self.rows[slot] = 0
            self.tracks[slot] = {}
        return self.rows[slot]

    def add_frame(
        self, t: float, probs: np.ndarray | None = None, tracks: Sequence[int] | None = None, poor: int = 0
    ) -> None:
        """One processed frame at time ``t``; ``probs`` (N, labels) of the faces classified in it
        and their track ids (without ids, each face is a track of its own); ``poor`` faces were
        found in it but refused by the quality gate."""
        row = self._row(t)
        n = len(self.labels)
        row[n + FRAMES] += 1
        row[n + ACTIVE] = 1
        row[n + POOR] += poor
        if probs is None or len(probs) == 0:
            return
        row[n + FRAMES_WITH_FACES] += 1
        top = probs.max(axis=1)
        confident = top >= self.min_confidence
        np.add.at(row, probs[confident].argmax(axis=1), 1)
        row[n + UNCERTAIN] += int((~confident).sum())
        per_track = self.tracks[int(t // self.bucket) % self.slots]
        for i, p in enumerate(probs):
            if tracks is None:
                tid, self._untracked = self._untracked, self._untracked - 1
            else:
                tid = int(tracks[i])
            acc = per_track.get(tid)
            if acc is None:
                acc = per_track[tid] = np.zeros(n + 1)
            acc[0] += 1
            acc[1:] += p

    def window_row(self, start: int, end: int) -> tuple[np.ndarray, np.ndarray, float]:
        """Summed counts of the buckets covering [start, end), one row per track seen in them
        (``[face-frames, sum p_1 .. sum p_k]``), and the share of buckets that were active.
        Boundaries are bucket-aligned except for final summaries, whose partial last bucket
        is included."""
        first, last = start // self.bucket, (end - 1) // self.bucket + 1
        mask = (self.ids >= first) & (self.ids < last)
        row = self.rows[mask].sum(axis=0) if mask.any() else np.zeros(self.width, np.int64)
        merged: dict[int, np.ndarray] = {}
        for slot in np.flatnonzero(mask):
            for tid, acc in self.tracks[slot].items():
                merged[tid] = merged[tid] + acc if tid in merged else acc.copy()
        tracks = np.array(list(merged.values())) if merged else np.zeros((0, len(self.labels) + 1))
        coverage = float(row[len(self.labels) + ACTIVE]) / max(last - first, 1)
        return row, tracks, coverage

    # -- clock steps ------------------------------------------------------------------

    def move(self, since: float, until: float, seconds: float, now: float) -> int:
        """The clock was stepped by ``seconds``: counts recorded at [since, until] on the old
        timeline move by that much (in whole buckets), where they were really seen. Buckets
        that end up after ``now`` or older than the ring are dropped; two that land on one
        bucket are added up. Returns the number of buckets moved."""
        shift = round(seconds / self.bucket)
        first, last = int(since // self.bucket), int(until // self.bucket)
        live = [int(s) for s in np.flatnonzero(self.ids >= 0)]
        entries = []
        moved = 0
        for slot in live:
            b = int(self.ids[slot])
            if first <= b <= last and shift:
                b += shift
                moved += 1
            entries.append((b, self.rows[slot].copy(), self.tracks[slot]))
        if not moved:
            return 0
        newest = int(now // self.bucket)
        self.ids[:] = -1
        self.rows[:] = 0
        self.tracks = [{} for _ in range(self.slots)]
        n = len(self.labels)
        for b, row, tracks in entries:
            if b > newest or newest - b >= self.slots:
                continue
            slot = b % self.slots
            if self.ids[slot] != b:
                self.ids[slot], self.rows[slot], self.tracks[slot] = b, row, dict(tracks)
                continue
            active = max(self.rows[slot][n + ACTIVE], row[n + ACTIVE])
            self.rows[slot] += row
            self.rows[slot][n + ACTIVE] = active
            for tid, acc in tracks.items():
                have = self.tracks[slot].get(tid)
                self.tracks[slot][tid] = acc.copy() if have is None else have + acc
        return moved

    def rewind(self, now: float) -> list[int]:
        """The clock now reads ``now``, earlier than boundaries already published (a backward
        step, or a start behind the last run's clock that was then trusted). A window whose
        last published boundary lies at least one interval ahead publishes its boundaries
        again from ``now`` on, with keys of a new era; a window less than an interval ahead
        just waits for it (less than one interval). Returns the windows that rewound."""
        rewound = []
        for w in self.windows:
            every = self.intervals[w]
            last = self.last_end.get(w)
            if last is None or last - now < every:
                continue
            self.high[w] = max(self.high.get(w, last), last)
            self.last_end[w] = int(now // every) * every
            rewound.append(w)
        if rewound:
            self.era += 1
        return rewound

    def key(self, window: int, end: int) -> str:
        """A summary's identity: ``device/window/end``, and for a boundary that was already
        published under a clock that was later stepped back, ``/r<era>`` after it."""
        base = f"{self.device}/{window}/{end}"
        return base if end > self.high.get(window, end - 1) else f"{base}/r{self.era}"

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
        row, tracks, coverage = self.window_row(end - window, end)
        self.seq += 1
        payload = {
            "schema": SCHEMA_VERSION,
            "device": self.device,
            "window": window_name(window),
            "window_seconds": window,
            "start": iso(end - window),
            "end": iso(end),
            "key": self.key(window, end),
            "seq": self.seq,
            "timeline": "live" if self.recording_start is None else "recording",
            "recording_start": None if self.recording_start is None else iso(self.recording_start),
            **window_stats(row, tracks, self.labels, coverage),
        }
        return Summary(window, end, payload)

    # -- persistence ------------------------------------------------------------------

    def state(self) -> dict:
        """JSON-able state: non-empty buckets with their tracks, published boundaries, sequence."""
        live = np.flatnonzero(self.ids >= 0)
        return {
            "version": STATE_VERSION,
            "bucket": self.bucket,
            "labels": list(self.labels),
            "buckets": {
                str(int(self.ids[i])): {
                    "row": self.rows[i].tolist(),
                    "tracks": {str(t): [round(float(v), 6) for v in acc] for t, acc in self.tracks[i].items()},
                }
                for i in live
                if self.rows[i].any()
            },
            "last_end": {str(w): e for w, e in self.last_end.items()},
            "high": {str(w): e for w, e in self.high.items()},
            "era": self.era,
            "seq": self.seq,
        }

    def restore(self, state: dict) -> None:
        """Resume from :meth:`state`. Published boundaries are always kept (no summary is
        published twice); counts only when the bucket size, labels and state version match."""
        self.seq = int(state.get("seq", 0))
        self.era = int(state.get("era", 0))
        for name, into in (("last_end", self.last_end), ("high", self.high)):
            for w, e in (state.get(name) or {}).items():
                if int(w) in self.intervals:
                    into[int(w)] = int(e)
        same = (state.get("bucket"), state.get("labels"))
        version = state.get("version")
        if same != (self.bucket, list(self.labels)) or version not in (2, STATE_VERSION):
            return
        pad = self.width - (len(self.labels) + 4) if version == 2 else 0
        buckets = state.get("buckets") or {}
        newest = max((int(b) for b in buckets), default=None)
        for b_str, saved in buckets.items():
            b = int(b_str)
            values = list(saved.get("row", [])) + [0] * pad if isinstance(saved, dict) else []
            if (newest is not None and newest - b >= self.slots) or len(values) != self.width:
                continue
            slot = b % self.slots
            self.ids[slot] = b
            self.rows[slot] = np.asarray(values, np.int64)
            self.tracks[slot] = {
                int(t): np.asarray(acc, float)
                for t, acc in (saved.get("tracks") or {}).items()
                if len(acc) == len(self.labels) + 1
            }
