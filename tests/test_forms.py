"""benchmarks/forms.py: every export form of a mirrored network answers alike, the stage
prefixes end where the stages do, and the timing covers every file in every round."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgefer.classifier import Classifier
from edgefer.datasets import load_fer2013

pytest.importorskip("tensorflow")
pytestmark = pytest.mark.train


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
    paths = forms.files(tmp_path / "m.keras", str(fer2013), tmp_path, log=lines.append)
    assert len(paths) == len(lines) == 7 and lines[-1].startswith("forms: exporting 7/7")

    faces = load_fer2013(fer2013, "test", limit_per_class=20).images
    tiled = Classifier(paths["both views in one file, tiled"]).predict(faces)
    trained = Classifier(paths["both views, as trained (3 kernels per channel)"]).predict(faces)
    assert tiled.std(0).max() > 0.05 and np.abs(tiled - trained).max() < 0.02

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
