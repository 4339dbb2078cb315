"""benchmarks/margins.py: the margin sweep runs the runtime's own path, from no mirror image to
every face's, on validation faces only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgefer.classifier import Classifier
from tests.conftest import MODELS


def test_margins_run_from_no_mirror_to_every_face(fer2013: Path, tmp_path: Path) -> None:
    from benchmarks import margins

    va = margins.validation_faces(str(fer2013), limit_per_class=300)
    assert len(va) == 120  # the training run's held-out tenth of what was loaded
    model = MODELS / "edgefer-int8.tflite"
    chosen = (0.0, 0.12, 1.0)
    scores = margins.score(model, va.images, va.labels, margins=chosen)
    shares = [s["mirrored_share"] for s in scores.values()]
    assert shares[0] == 0 and 0 < shares[1] < 1 and shares[2] == 1
    alone = Classifier(model).predict_labels(va.images)
    every = Classifier(model, flip_average=True).predict_labels(va.images)
    assert scores[0.0]["accuracy"] == np.mean(alone == va.labels)
    assert scores[1.0]["accuracy"] == np.mean(every == va.labels)

    lines: list[str] = []
    times = margins.time_margins(model, MODELS / "paper-int8.tflite", va.images[:5], chosen, rounds=2, log=lines.append)
    assert set(times) == {"0", "0.12", "1", "reference"} and all(t["n"] == 2 for t in times.values())
    assert lines[-1] == "margins: round 2/2"
    table = margins.markdown(scores, times, "paper-int8")
    assert table.count("\n") == 6 and "| 0.12 |" in table and "| paper-int8 alone | | | " in table
    margins.plot(scores, times, tmp_path / "m.png", "paper-int8", 0.12)
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"
