"""The face-quality gate: crops the classifier has no business reading.

A face found in a dark room, against a window, or smeared by motion gives a 48x48 crop unlike
any the classifier was trained on, and the classifier still answers, often confidently.
Counting that answer biases the published mood towards whatever the model says of a grey
smudge. The gate marks such crops *poor*: they are counted as seen but not read (``poor`` in
each summary), never in the shares.

A crop is poor when it lies below FER2013's training faces on any of three measures: below
the :data:`PERCENTILE` percentile of the training crops themselves *and* of the same faces as
the daemon's frame path crops them once composited into frames and detected (a detector's box
reframes, resamples and softens a face a little; such a crop is still one the model reads
well). ``python -m benchmarks.quality`` measures both and takes the lower bound of each:

- brightness: the mean pixel (a face in the dark);
- contrast: the standard deviation of the pixels (flat light, fog, a washed-out backlit face);
- sharpness: the mean absolute Laplacian over the contrast (blur, at any exposure).

Pure functions of the crops: no I/O, tested directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: the share of FER2013's training faces each bound leaves below it, in percent
PERCENTILE = 0.5


@dataclass(frozen=True)
class QualityBounds:
    """Per-measure lower bounds; a crop below any of them is poor."""

    brightness: float = 42.8
    contrast: float = 20.6
    sharpness: float = 0.123


def measures(crops: np.ndarray) -> np.ndarray:
    """(N, 3) brightness, contrast and sharpness of uint8 crops (N, H, W)."""
    x = crops.astype(np.float32)
    if len(x) == 0:
        return np.zeros((0, 3), np.float32)
    mean = x.mean(axis=(1, 2))
    std = x.std(axis=(1, 2))
    # 4-neighbour Laplacian on the interior, no border handling needed
    lap = 4 * x[:, 1:-1, 1:-1] - x[:, :-2, 1:-1] - x[:, 2:, 1:-1] - x[:, 1:-1, :-2] - x[:, 1:-1, 2:]
    sharp = np.abs(lap).mean(axis=(1, 2)) / np.maximum(std, 1.0)
    return np.stack([mean, std, sharp], axis=1)


def poor(crops: np.ndarray, bounds: QualityBounds | None = None) -> np.ndarray:
    """A boolean per crop: True where the crop is too dark, flat or blurred to be read."""
    b = bounds or QualityBounds()
    m = measures(crops)
    return (m[:, 0] < b.brightness) | (m[:, 1] < b.contrast) | (m[:, 2] < b.sharpness)


#: the bounds measured on FER2013's training faces (the defaults above)
FER2013_BOUNDS = QualityBounds()
