"""benchmarks/forms.py: every export form of a mirrored network answers alike, the stage
prefixes end where the stages do, and the timing covers every file in every round."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgefer.classifier import Classifier
from edgefer.datasets import load_fer2013
from tests.conftest import KERAS, MODELS

pytest.importorskip("tensorflow")
pytestmark = pytest.mark.train
PAPER = KERAS / "paper.keras"


def test_forms_answer_alike_and_profile_each_stage(fer2013: Path, tmp_path: Path) -> None:
    import keras
    from ai_edge_litert.interpreter import Interpreter

    from benchmarks import forms
    from edgefer.train.models import edgefer_cnn, mirrored
    from edgefer.train.trainer import recalibrate_bn

    keras.utils.set_random_seed(3)
    net = mirrored(edgefer_cnn(width=8, blocks=(1, 1, 1), rank=3, name="trunk"), "edgefer-mirror-full")
    # batch norms that normalise real faces and a sharper head: answers that differ between faces
    recalibrate_bn(net, load_fer2013(fer2013, "train", limit_per_class=30).images, batches=4, batch=64)
    head = net.get_layer("trunk").get_layer("emotion")
    head.set_weights([head.get_weights()[0] * 10, head.get_weights()[1]])
    net.save(tmp_path / "m.keras")
    lines: list[str] = []
    paths = forms.files(tmp_path / "m.keras", str(fer2013), tmp_path, log=lines.append, paper_path=PAPER)
    assert len(paths) == len(lines) == 11 and lines[-1].startswith("forms: exporting 11/11")

    faces = load_fer2013(fer2013, "test", limit_per_class=20).images
    tiled = Classifier(paths["both views in one file, tiled"]).predict(faces)
    trained = Classifier(paths["both views, as trained (3 kernels per channel)"]).predict(faces)
    assert tiled.std(0).max() > 0.05 and np.abs(tiled - trained).max() < 0.02
    one = Classifier(paths["one view, tiled (the shipped file)"]).predict(faces)
    blocks = Classifier(paths["one view, tiled, space-to-depth stem"]).predict(faces)
    assert np.abs(blocks - one).max() < 0.02  # the same tensors rounded the same way
    for form in ("full convs", "full convs, space-to-depth stem"):  # no factored map to round: close, not equal
        got = Classifier(paths[f"one view, {form}"]).predict(faces)
        assert (got.argmax(1) == one.argmax(1)).mean() >= 0.9, form
    # the paper's network, its stem on blocks, against the shipped file: the same answers
    blocked = Classifier(paths["paper, space-to-depth stem"]).predict(faces).argmax(1)
    assert (blocked == Classifier(MODELS / "paper-int8.tflite").predict(faces).argmax(1)).mean() >= 0.95

    for label, (side, channels) in zip(forms.STAGE_ENDS, ((24, 8), (12, 16), (6, 32)), strict=True):
        interpreter = Interpreter(str(paths[f"one view, tiled, up to the end of {label}"]))
        assert tuple(interpreter.get_output_details()[0]["shape"][1:]) == (side, side, channels)

    two = {name: paths[name] for name in list(paths)[:2]}
    results = forms.time_files(two, rounds=2, calls=3, log=lines.append)
    assert [r["n"] for r in results.values()] == [2, 2] and lines[-1] == "forms: round 2/2"
    table = forms.markdown(results, next(iter(two)))
    assert table.count("\n") == 4 and "| 1.00 |" in table
    forms.plot(results, tmp_path / "forms.png", next(iter(two)))
    assert (tmp_path / "forms.png").read_bytes()[:4] == b"\x89PNG"


def test_a_stem_on_pixel_blocks_computes_the_same_function(fer2013: Path) -> None:
    """Both paddings, on real faces, to float precision; and stems it cannot take are refused."""
    import keras

    from benchmarks.forms import space_to_depth_stem, unfactored
    from edgefer.train.models import edgefer_cnn, paper_cnn
    from edgefer.train.trainer import recalibrate_bn

    keras.utils.set_random_seed(5)
    x = load_fer2013(fer2013, "test", limit_per_class=10).images.astype(np.float32)[..., None] / 255.0
    for net, conv, pool in (
        (edgefer_cnn(width=8, blocks=(1, 1, 1), rank=3, name="trunk"), "s1a_conv", "s1_pool"),  # 'same'
        (edgefer_cnn(width=8, blocks=(1, 1, 1), rank=3, crop=4, name="trunk"), "s1a_conv", "s1_pool"),
        (paper_cnn(), "fb1_conv", "fb1_pool"),  # 'valid', 48 -> 46 -> 23
    ):
        recalibrate_bn(net, (x[..., 0] * 255).astype(np.uint8), batches=1, batch=40)
        want = net.predict(x, verbose=0)
        assert want.std(0).max() > 1e-3
        assert np.allclose(space_to_depth_stem(net, conv, pool).predict(x, verbose=0), want, atol=1e-5)
        if net.name == "trunk":
            full = unfactored(net)
            assert not any(layer.name.endswith("_dwf") for layer in full.layers)
            assert np.allclose(full.predict(x, verbose=0), want, atol=1e-5)
    with pytest.raises(ValueError, match="fb2_conv: needs a 3x3 conv, stride 1, on one input channel"):
        space_to_depth_stem(net, "fb2_conv", "fb2_pool")
    with pytest.raises(ValueError, match="fb1_relu: needs a 2x2 max pool"):
        space_to_depth_stem(net, "fb1_conv", "fb1_relu")


def test_shapes_are_built_exported_and_timed_with_their_costs(fer2013: Path, tmp_path: Path) -> None:
    """benchmarks/shapes.py: each shape's file holds the operations its arguments promise, its
    cost is counted, and the table names every file timed."""
    from benchmarks import shapes
    from benchmarks.forms import time_files
    from edgefer.train.models import build, dense_cnn

    assert [layer.name for layer in dense_cnn().layers] == [layer.name for layer in build("edgefer-dense").layers]
    small = {
        "plain": {"widths": (8, 16, 32), "convs": (1, 2, 1), "residual": False},
        "residual, pooled stem": {"widths": (8, 16, 32), "convs": (1, 2, 1), "stem": (3, 1), "stem_width": 4},
    }
    lines: list[str] = []
    made = shapes.files(str(fer2013), tmp_path, small, log=lines.append)
    assert len(lines) == 2 and set(made) == set(small)
    # 5 convs (the stem and 1 + 2 + 1), 2 pools, mean, dense, softmax; the second adds the
    # stem's pool and one addition (s3b, the only conv that keeps its input's channels)
    assert made["plain"]["ops"] == 5 + 2 + 3 and made["residual, pooled stem"]["ops"] == 5 + 3 + 3 + 1
    faces = load_fer2013(fer2013, "test", limit_per_class=3).images
    assert Classifier(made["plain"]["path"], threads=1).predict(faces).shape == (len(faces), 4)
    paths = {label: about["path"] for label, about in made.items()} | {"paper": MODELS / "paper-int8.tflite"}
    latency = time_files(paths, rounds=1, calls=5, log=lines.append)
    table = shapes.markdown(made, latency, "paper")
    assert all(label in table for label in paths) and "| 1.00 |" in table
