"""Quantisation-aware fine-tuning: the simulated rounding sits where the int8 file rounds,
at the same step, and fine-tuning with it ships a plain network whose batch norm is untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgefer.datasets import load_fer2013

pytest.importorskip("tensorflow")
pytestmark = pytest.mark.train

MODEL = Path(__file__).resolve().parents[1] / "models" / "edgefer-plain.keras"


def test_rounding_is_simulated_where_and_as_the_int8_file_rounds(fer2013: Path, tmp_path: Path) -> None:
    import keras
    from ai_edge_litert.interpreter import Interpreter

    from edgefer.train import export, quant

    model = keras.models.load_model(MODEL, compile=False)
    faces = load_fer2013(fer2013, "test", limit_per_class=30).images
    points = quant.quant_points(model)
    # Fused away: convolutions and batch norms feeding one batch norm / activation, the adds
    # feeding their ReLU. Kept: every ReLU output, the residual branch before its add, pooling.
    assert "s2b_pwbn" in points and "s1a_relu" in points and "gap" in points
    assert not {"s1a_conv", "s1a_bn", "s2b_add", "s2b_dw", "s1_pool", "emotion"} & set(points)

    # The converter, calibrated on the same faces, gives each of those tensors the step
    # (max - min) / 255 that the simulation uses, and keeps no other new activation grid.
    ranges = quant.activation_ranges(model, points, faces)
    path = export.to_tflite(model, tmp_path / "m.tflite", int8=True, calibration=faces)
    interp = Interpreter(str(path))
    face = interp.get_input_details()[0]["index"]
    scales = sorted(  # per-tensor int8 activations (weights are per channel), less input and 4-class head
        {round(float(t["quantization_parameters"]["scales"][0]), 7) for t in interp.get_tensor_details()
         if t["dtype"] == np.int8 and t["quantization_parameters"]["scales"].size == 1
         and t["index"] != face and t["shape"][-1] != 4}
    )  # fmt: skip
    wanted = sorted({round((hi - lo) / 255.0, 7) for lo, hi in ranges.values()})
    assert len(scales) == len(wanted) == len(points)
    assert np.allclose(scales, wanted, rtol=1e-3)

    # The simulated model shares the weights, rounds each point onto its 256-level grid, and
    # stays close to the float model; saved and loaded it computes the same (resuming).
    qat = quant.fake_quantized(model, faces)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), qat.get_weights(), strict=True))
    x = faces.astype(np.float32)[..., None] / 255.0

    # Where no earlier rounding boundary has been crossed differently, the simulation computes
    # what the file computes: the first two layers' int8 outputs, rounded kernels and all,
    # match to within a hundredth of a step (the float network is about 0.15 steps off).
    # Deeper, float-level differences flip a few roundings and the two drift apart like
    # two int8 engines would; the noise is the same kind and size, not bit for bit.
    debug = Interpreter(str(path), experimental_preserve_all_tensors=True)
    debug.allocate_tensors()
    stored = {}
    for t in debug.get_tensor_details():  # the first tensor of each step (pooling repeats it)
        if t["quantization_parameters"]["scales"].size == 1:
            stored.setdefault(float(t["quantization_parameters"]["scales"][0]), t)
    first = ["s1a_relu", "fb1_relu"]
    sim = keras.Model(qat.inputs, [qat.get_layer(n).output for n in first]).predict(x[:8], verbose=0)
    flt = keras.Model(model.inputs, [model.get_layer(n).output for n in first]).predict(x[:8], verbose=0)
    for k in range(8):
        debug.set_tensor(face, (faces[k].astype(np.int16) - 128).astype(np.int8)[None, :, :, None])
        debug.invoke()
        for j, name in enumerate(first):
            lo, hi = ranges[name]
            t = stored[min(stored, key=lambda sc: abs(sc - (hi - lo) / 255.0))]
            step, zero = t["quantization"]
            got = (debug.get_tensor(t["index"])[0].astype(np.float32) - zero) * step
            assert np.abs(got - sim[j][k]).mean() / step < 0.01, name
            assert np.abs(got - flt[j][k]).mean() / step > 0.05, name
    lo, hi = ranges["s2b_pwbn"]
    grid = keras.Model(qat.inputs, qat.get_layer("s2b_pwbn").output).predict(x[:20], verbose=0)
    steps = grid / ((hi - lo) / 255.0)  # the grid holds zero exactly, as the int8 file's does
    assert np.abs(steps - np.round(steps)).max() < 1e-2 and len(np.unique(grid)) <= 256
    ref, got = model.predict(x, verbose=0), qat.predict(x, verbose=0)
    assert not np.allclose(ref, got) and (ref.argmax(1) == got.argmax(1)).mean() > 0.9
    qat.save(tmp_path / "qat.keras")
    assert np.array_equal(keras.models.load_model(tmp_path / "qat.keras").predict(x, verbose=0), got)


def test_quantisation_aware_fine_tuning_ships_a_plain_network(few_faces: Path, tmp_path: Path) -> None:
    import keras

    from edgefer.train.fit import train
    from edgefer.train.recipe import Recipe, TrainError

    with pytest.raises(TrainError, match="--init-from"):
        train(Recipe(quant_aware=True), str(few_faces), tmp_path / "none", log=lambda _: None)
    assert not (tmp_path / "none").exists()  # refused before any data is read or folder made

    lines: list[str] = []
    recipe = Recipe(epochs=1, batch_size=32, lr=1e-3, init_from=str(MODEL), quant_aware=True, patience=5)
    report = train(recipe, str(few_faces), tmp_path / "run", log=lines.append)
    assert any(line.startswith("simulating int8 rounding of 15 kernels and 20 activation tensors") for line in lines)
    assert report["precise_bn"]["skipped"] == "quantisation-aware"

    start = keras.models.load_model(MODEL, compile=False)
    tuned = keras.models.load_model(tmp_path / "run" / "best.keras", compile=False)
    assert {type(layer).__name__ for layer in tuned.layers} == {type(layer).__name__ for layer in start.layers}
    # Convolutions learned; batch-norm statistics and scales stayed as the converter will fold them.
    assert not np.allclose(start.get_layer("fb2_conv").get_weights()[0], tuned.get_layer("fb2_conv").get_weights()[0])
    for name in ("s1a_bn", "s3c_pwbn", "fb3_bn"):
        for a, b in zip(start.get_layer(name).get_weights(), tuned.get_layer(name).get_weights(), strict=True):
            assert np.array_equal(a, b), name
    int8 = report["files"]["int8"]["validation"]
    # 16 validation faces after one hot epoch: two flips are 0.875; a wrong scale or zero point
    # puts agreement near chance (0.25-0.5).
    assert int8["n"] == report["validation"]["n"] and int8["argmax_agreement_with_keras"] >= 0.75


def test_a_mirrored_network_is_rounded_in_its_trunk_on_both_views(
    few_faces: Path, fer2013: Path, tmp_path: Path
) -> None:
    """The shipped network runs the face and its mirror image as one batch, so its int8 file has
    one grid for both: the simulation calibrates the trunk on both, and fine-tuning with it
    ships the plain mirrored network again."""
    import keras

    import edgefer.train.models  # noqa: F401  (registers the mirrored layers the file holds)
    from edgefer.classifier import Classifier
    from edgefer.train import quant
    from edgefer.train.fit import train
    from edgefer.train.recipe import Recipe

    shipped = MODEL.with_name("edgefer.keras")
    model = keras.models.load_model(shipped, compile=False)
    faces = load_fer2013(fer2013, "test", limit_per_class=10).images
    qat = quant.fake_quantized(model, faces)
    trunk = qat.get_layer("trunk")
    points = quant.quant_points(model.get_layer("trunk"))
    assert "fb1_dwf" in points  # a factored conv's first half is stored before its 1x1 half reads it
    both = quant.activation_ranges(model.get_layer("trunk"), points, np.concatenate([faces, faces[:, :, ::-1]]))
    alone = quant.activation_ranges(model.get_layer("trunk"), points, faces)
    assert both != alone
    assert all((trunk.get_layer(n).low, trunk.get_layer(n).high) == pytest.approx(both[n]) for n in points)
    x = faces.astype(np.float32)[..., None] / 255.0
    got, ref = qat.predict(x, verbose=0), model.predict(x, verbose=0)
    assert np.allclose(got, qat.predict(x[:, :, ::-1], verbose=0), atol=1e-6)  # still mirror-invariant
    assert not np.allclose(got, ref) and (got.argmax(1) == ref.argmax(1)).mean() > 0.9

    lines: list[str] = []
    recipe = Recipe(arch="edgefer-mirror-full", epochs=1, batch_size=32, lr=1e-3, init_from=str(shipped),
                    quant_aware=True, patience=5)  # fmt: skip
    report = train(recipe, str(few_faces), tmp_path / "run", log=lines.append)
    assert any(line.endswith("in the trunk both views run through") for line in lines)
    assert "edgefer-mirror-full: 320,388 parameters, 99.1 MFLOPs" in lines  # what the wrapped layers cost
    tuned = keras.models.load_model(tmp_path / "run" / "best.keras", compile=False)
    start, after = model.get_layer("trunk"), tuned.get_layer("trunk")
    assert [type(la).__name__ for la in after.layers] == [type(la).__name__ for la in start.layers]
    assert not np.allclose(start.get_layer("fb2_pwf").get_weights()[0], after.get_layer("fb2_pwf").get_weights()[0])
    for a, b in zip(start.get_layer("fb2_bn").get_weights(), after.get_layer("fb2_bn").get_weights(), strict=True):
        assert np.array_equal(a, b)
    # it ships as one view, its trunk; mirrored for every face, the file is the tuned network
    f32 = Classifier(report["files"]["float32"]["path"], flip_average=True)
    assert report["exported"].startswith("the trunk")
    want = tuned.predict(faces.astype(np.float32)[..., None] / 255.0, verbose=0)
    assert np.allclose(f32.predict(faces), want, atol=1e-4)
    one_view = Classifier(report["files"]["float32"]["path"], flip_average=False).predict(faces)
    assert not np.allclose(one_view, want, atol=1e-4)  # one view alone is not the pair
