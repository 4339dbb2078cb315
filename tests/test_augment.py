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


def test_framed_faces_are_the_daemons_own_crops_of_each_face(fer2013: Path, tmp_path: Path) -> None:
    """Each face is put into a frame, found by the daemon's face stage at its defaults and cropped
    as the daemon crops it: most are found, a found face's crop differs from the dataset crop
    (another box, resampled) but shows the same face, a missed face comes back unchanged, and
    the cache returns the same faces without redoing them."""
    from edgefer.train.framed import cached_framed_faces, framed_faces

    faces = load_fer2013(fer2013, "test", limit_per_class=10)
    framed, found = framed_faces(faces.images, seed=3)
    assert framed.shape == faces.images.shape and framed.dtype == np.uint8
    assert found.mean() >= 0.6
    assert np.array_equal(framed[~found], faces.images[~found])
    a, b = faces.images[found].astype(np.float32), framed[found].astype(np.float32)
    assert (np.abs(a - b).reshape(len(a), -1).mean(axis=1) > 1).all()
    # the same face, not another one: a crop correlates with its own source far more than with others
    za = (a - a.mean(axis=(1, 2), keepdims=True)).reshape(len(a), -1)
    zb = (b - b.mean(axis=(1, 2), keepdims=True)).reshape(len(b), -1)
    corr = (zb / np.linalg.norm(zb, axis=1, keepdims=True)) @ (za / np.linalg.norm(za, axis=1, keepdims=True)).T
    own, others = np.diag(corr).mean(), corr[~np.eye(len(a), dtype=bool)].mean()
    assert own > others + 0.2, (own, others)
    cache = tmp_path / "framed.npz"
    first = cached_framed_faces(faces.images, cache, seed=3, log=lambda _: None)
    assert np.array_equal(first[0], framed) and cache.is_file()
    again = cached_framed_faces(faces.images, cache, seed=99, log=lambda _: None)  # read, not redone
    assert np.array_equal(again[0], framed)


def test_the_student_reads_the_framed_channel_for_its_share_and_teachers_the_clean_one() -> None:
    tf = pytest.importorskip("tensorflow")
    from edgefer.train.data import student_view
    from edgefer.train.recipe import Recipe, TrainError

    x = np.stack([np.zeros((400, 48, 48)), np.ones((400, 48, 48))], axis=-1).astype(np.float32)
    tf.random.set_seed(0)
    assert np.asarray(student_view(tf.constant(x), 0.0)).max() == 0.0
    assert np.asarray(student_view(tf.constant(x), 1.0)).min() == 1.0
    half = np.asarray(student_view(tf.constant(x), 0.5))
    assert half.shape == (400, 48, 48, 1) and 0.4 < half[:, 0, 0, 0].mean() < 0.6
    with pytest.raises(TrainError, match="--framed"):
        Recipe(framed=1.5).check()
