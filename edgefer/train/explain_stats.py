"""Sampling faces, and bootstrap intervals for the perturbation metrics, paired across maps.

A metric's mean over a few hundred faces moves by a few hundredths from one draw of faces to
the next, which is the size of most differences between Grad-CAM++ and its baselines. Every
metric is a mean of per-image values (``explain_metrics.per_image_metrics``), so the bootstrap
resamples faces with replacement and recomputes the means. The resamples are drawn within each
true emotion (the faces were drawn per emotion) and the same resamples serve every map: the
difference of two maps' means on one resample is the mean of their per-face differences, so a
difference gets its own interval, narrower than the two maps' intervals suggest when the maps
err on the same faces (Efron & Tibshirani, An Introduction to the Bootstrap, 1993, ch. 13).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Metrics judged win / tie / loss, with True where higher is better. The active pixel ratio is
#: matched between baselines and the block they are compared with, and the accuracy after masking
#: is the accuracy minus ADA on the same faces, so neither gets a verdict of its own.
JUDGED: dict[str, bool] = {"IAUC": True, "DAUC": False, "AD": True, "IC": True, "ADA": True}
#: Metrics that get an interval per map.
INTERVALS: tuple[str, ...] = ("IAUC", "DAUC", "AD", "IC", "ADA", "active_pixels", "masked_accuracy")


def stratified_sample(labels: np.ndarray, per_class: int | None, seed: int) -> np.ndarray:
    """Sorted indices of up to ``per_class`` random images of each class (all if None)."""
    if per_class is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(keep))


def bootstrap_means(values: np.ndarray, groups: np.ndarray, n_boot: int, seed: int, chunk: int = 100) -> np.ndarray:
    """(n_boot, K) column means of ``values`` (N, K) over resamples of its rows.

    Each resample draws, within every group, as many rows as the group has, with replacement;
    all K columns see the same rows, which is what pairs them. Resamples are drawn ``chunk`` at
    a time so that 10,000 resamples of 2,622 faces need tens of megabytes, not gigabytes.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    g = np.asarray(groups)
    if len(g) != len(v) or len(v) == 0:
        raise ValueError(f"bootstrap: {len(v)} rows of values against {len(g)} group labels")
    if n_boot < 1:
        raise ValueError(f"bootstrap: n_boot must be >= 1, got {n_boot}")
    members = [np.flatnonzero(g == u) for u in np.unique(g)]
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, v.shape[1]))
    for s in range(0, n_boot, chunk):
        b = min(chunk, n_boot - s)
        idx = np.concatenate([m[rng.integers(0, len(m), (b, len(m)))] for m in members], axis=1)
        out[s : s + b] = v[idx].mean(axis=1)
    return out


def percentile_interval(means: np.ndarray, level: float = 0.95) -> np.ndarray:
    """(2, K) lower and upper ends of the percentile interval of bootstrap means (B, K)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"bootstrap: level must be in (0, 1), got {level}")
    tail = (1.0 - level) / 2.0
    return np.quantile(np.asarray(means), [tail, 1.0 - tail], axis=0)


def verdict(low: float, high: float, higher_is_better: bool) -> str:
    """ "win" if the interval of (explanation - baseline) lies wholly on the better side of 0,
    "loss" if wholly on the worse side, else "tie" (the faces cannot tell the two maps apart)."""
    if low > 0.0 or high < 0.0:
        better = low > 0.0 if higher_is_better else high < 0.0
        return "win" if better else "loss"
    return "tie"


def paired_bootstrap(
    per_image: dict[str, dict[str, np.ndarray]],
    groups: np.ndarray,
    pairs: Sequence[tuple[str, str]],
    *,
    n_boot: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, dict]:
    """Intervals for every map's metrics and for each paired difference ``a - b`` in ``pairs``.

    ``per_image[map][metric]`` holds the metric's value per face, the faces in the same order
    for every map. Returns ``{"maps": {map: {metric: [low, high]}}, "differences": {"a - b":
    {metric: {"estimate", "ci", "verdict"}}}}``; verdicts for the metrics in :data:`JUDGED`.
    """
    maps = list(per_image)
    cols = [(m, k) for m in maps for k in INTERVALS]
    values = np.stack([per_image[m][k] for m, k in cols], axis=1)
    means = bootstrap_means(values, groups, n_boot, seed)
    col = {c: i for i, c in enumerate(cols)}
    lo, hi = percentile_interval(means, level)
    out: dict[str, dict] = {
        "maps": {m: {k: [float(lo[col[m, k]]), float(hi[col[m, k]])] for k in INTERVALS} for m in maps},
        "differences": {},
    }
    for a, b in pairs:
        row = {}
        for k, up in JUDGED.items():
            diff = means[:, col[a, k]] - means[:, col[b, k]]
            low, high = (float(x) for x in percentile_interval(diff[:, None], level)[:, 0])
            estimate = float(per_image[a][k].mean() - per_image[b][k].mean())
            row[k] = {"estimate": estimate, "ci": [low, high], "verdict": verdict(low, high, up)}
        out["differences"][f"{a} - {b}"] = row
    return out
