"""Camera degradation: what the student sees of a face, and what it must not change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgefer.datasets import load_fer2013

pytestmark = pytest.mark.train


def _detail(x: np.ndarray) -> np.ndarray:
    """Per face, the mean absolute difference between neighbouring pixels (fine detail)."""
    return np.abs(np.diff(x[..., 0], axis=2)).mean(axis=(1, 2))


def test_camera_degradation_leaves_the_share_it_is_not_given_and_softens_the_rest(fer2013: Path) -> None:
    """p = 0 returns every face bit for bit; p = 1 changes every face, keeps pixels in
    [0, 1], and on average removes fine detail (resolution loss and blur) as a camera does."""
    tf = pytest.importorskip("tensorflow")
    from edgefer.train.augment import camera_degrade

    faces = load_fer2013(fer2013, "test", limit_per_class=16)
    x = faces.images.astype(np.float32)[..., None] / 255.0
    tf.random.set_seed(0)
    assert np.array_equal(np.asarray(camera_degrade(tf.constant(x), 0.0)), x)
    y = np.asarray(camera_degrade(tf.constant(x), 1.0))
    assert y.shape == x.shape and y.min() >= 0.0 and y.max() <= 1.0
    assert (np.abs(y - x).reshape(len(x), -1).max(axis=1) > 0.01).all()
    assert _detail(y).mean() < 0.8 * _detail(x).mean()
