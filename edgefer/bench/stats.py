"""The small statistics every mode reports: latency summaries, mean and spread, box overlap,
and emotion shares against a known mix (the daemon's with intervals, or counted labels)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgefer import LABELS
from edgefer.mood import share_intervals

K = len(LABELS)


def latency_stats(ms: Sequence[float]) -> dict[str, float]:
    """mean, sample std, median, p95, min, max (ms) and n."""
    a = np.asarray(ms, dtype=np.float64)
    if a.size == 0:
        return {"n": 0}
    return {
        **mean_std(a),
        "median": float(np.median(a)),
        "p95": float(np.percentile(a, 95)),
        "min": float(a.min()),
        "max": float(a.max()),
    }


def mean_std(values: Sequence[float] | np.ndarray) -> dict[str, float]:
    """n, mean and sample standard deviation (0 for a single value)."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"n": 0}
    return {"n": int(a.size), "mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0}


def rate(mean_ms: float | None) -> float | None:
    """Items per second from a mean time per item in ms (the paper's FPS = 1000 / mean)."""
    return 1000.0 / mean_ms if mean_ms else None


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def per_class(hit: np.ndarray, truth: np.ndarray) -> dict[str, float | None]:
    """The share of ``hit`` among the items of each true class (None for a class not shown)."""
    return {lab: float(hit[truth == j].mean()) if (truth == j).any() else None for j, lab in enumerate(LABELS)}


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a is not None and b else None


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
