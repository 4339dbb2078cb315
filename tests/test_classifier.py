"""The runtime on the shipped model files, and one clear error per kind of bad file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgefer import LABELS
from edgefer.classifier import Classifier, ModelError, read_labels
from edgefer.datasets import load_fer2013
from edgefer.models import shipped_models
from tests.conftest import MODELS

SHIPPED = shipped_models()


@pytest.fixture(scope="module")
def sample(fer2013: Path):
    return load_fer2013(fer2013, "test", limit_per_class=40)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_models_give_probabilities_in_label_order(path: Path, sample) -> None:
    clf = Classifier(path, read_labels(MODELS / "labels.txt"), threads=2)
    assert clf.labels == LABELS
    p = clf.predict(sample.images)
    assert p.shape == (len(sample), 4)
    assert np.allclose(p.sum(axis=1), 1.0, atol=0.02)
    # batch size does not change the answer
    one = np.concatenate([clf.predict(sample.images[i]) for i in range(8)])
    assert np.allclose(one, p[:8], atol=1e-5)
    assert clf.describe()["runtime"].split()[0] in ("ai-edge-litert", "tflite-runtime", "tensorflow")


def test_shipped_int8_files_are_quantized_and_small() -> None:
    for name in ("edgefer", "edgefer-dense", "paper"):
        f32, i8 = MODELS / f"{name}-float32.tflite", MODELS / f"{name}-int8.tflite"
        if not f32.exists():
            continue
        q = Classifier(i8)
        assert q.quantized and q.input.dtype == np.int8
        assert i8.stat().st_size * 3 <= f32.stat().st_size


def test_int8_input_is_quantized_with_the_models_parameters() -> None:
    q = Classifier(MODELS / "edgefer-int8.tflite")
    x = q.prepare(np.array([[[0, 255] * 24] * 48], np.uint8))
    lo, hi = x[0, 0, 0, 0], x[0, 0, 1, 0]
    assert lo == np.clip(round(0 / q.input.scale) + q.input.zero_point, -128, 127)
    assert hi == np.clip(round(1 / q.input.scale) + q.input.zero_point, -128, 127)


@pytest.mark.parametrize("name", ["edgefer-int8.tflite", "edgefer-float32.tflite"])
def test_uint8_faces_are_converted_by_table_as_any_other_pixels_are(name: str, sample) -> None:
    """uint8 faces take a 256-entry table; other integer pixels the arithmetic it was built with."""
    clf = Classifier(MODELS / name)
    faces = sample.images[:8]
    assert np.array_equal(clf.prepare(faces), clf.prepare(faces.astype(np.int64)))
    assert clf.prepare(faces).dtype == clf.input.dtype


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda p: None, "model file not found"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(b"TFL"), "truncated"),
        (lambda p: p.write_bytes(b"<html>not a model</html>"), "not a TFLite flatbuffer"),
        (lambda p: p.write_bytes((MODELS / "edgefer-int8.tflite").read_bytes()[:5000]), "not a usable TFLite model"),
    ],
)
def test_bad_model_files(tmp_path: Path, make, problem: str) -> None:
    path = tmp_path / "model.tflite"
    make(path)
    with pytest.raises(ModelError) as exc:
        Classifier(path)
    assert str(exc.value).startswith(f"{path}: ") and problem in str(exc.value)


def test_labels_must_match_the_output(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("angry\nhappy\nsad\n")
    with pytest.raises(ModelError, match="4 outputs but 3 labels"):
        Classifier(MODELS / "edgefer-int8.tflite", read_labels(labels))
    labels.write_text("angry\nhappy\nsad\ncontempt\n")
    with pytest.raises(ModelError, match="labels must be distinct names"):
        read_labels(labels)


def test_wrong_input_shape_is_refused(tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    import keras

    m = keras.Sequential(
        [keras.Input((64, 64, 1)), keras.layers.Flatten(), keras.layers.Dense(4, activation="softmax")]
    )
    from edgefer.train.export import to_tflite

    path = to_tflite(m, tmp_path / "wide.tflite")
    del tf
    with pytest.raises(ModelError, match=r"input shape \[1, 64, 64, 1\] is not \[N, 48, 48, 1\]"):
        Classifier(path)


def test_flip_average_is_the_mean_of_face_and_mirror(sample) -> None:
    plain = Classifier(MODELS / "paper-float32.tflite")
    flip = Classifier(MODELS / "paper-float32.tflite", flip_average=True)
    faces = sample.images[:10]
    expected = (plain.predict(faces) + plain.predict(faces[:, :, ::-1])) / 2
    assert np.allclose(flip.predict(faces), expected, atol=1e-5)


def test_flip_margin_mirrors_only_the_faces_the_model_is_unsure_of(sample) -> None:
    """Between no mirror and every face's mirror: a face whose two likeliest emotions lie at
    least ``flip_margin`` apart keeps its one-view answer; the others get the mean of both
    views, exactly as full flip averaging gives it. The status counts what was mirrored."""
    faces = sample.images
    path = MODELS / "edgefer-int8.tflite"
    one = Classifier(path).predict(faces)
    both = Classifier(path, flip_average=True).predict(faces)
    margin = np.sort(one, 1)[:, -1] - np.sort(one, 1)[:, -2]
    t = float(np.median(margin))  # half the faces are unsure, whatever the model
    clf = Classifier(path, flip_average=True, flip_margin=t)
    assert clf.passes == 2 and clf.inferences_per_face == 2  # before any face: at most two
    got = clf.predict(faces)
    unsure = margin < t
    assert 0 < unsure.sum() < len(faces)
    assert np.allclose(got[unsure], both[unsure], atol=1e-6)
    assert np.array_equal(got[~unsure], one[~unsure])
    assert clf.faces_seen == len(faces) and clf.faces_mirrored == unsure.sum()
    assert clf.inferences_per_face == pytest.approx(1 + unsure.mean())
    assert clf.describe()["flip_margin"] == t and clf.mirroring == f"faces whose top-two margin is under {t:g}"
    # the ends: 0 mirrors no face, 1 every face
    assert np.array_equal(Classifier(path, flip_average=True, flip_margin=0).predict(faces), one)
    assert np.allclose(Classifier(path, flip_average=True, flip_margin=1).predict(faces), both, atol=1e-6)
    with pytest.raises(ValueError, match="flip_margin must lie in"):
        Classifier(path, flip_average=True, flip_margin=-0.1)
