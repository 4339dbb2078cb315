"""benchmarks/margins.py: the margin sweep runs the runtime's own path, from no mirror image to
every face's, on validation faces only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgefer.classifier import Classifier
from edgefer.config import ClassifierConfig
from edgefer.models import DEFAULT_MODEL
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
    assert lines[-1] == "timing: round 2/2"
    table = margins.markdown(scores, times, "paper-int8")
    assert table.count("\n") == 6 and "| 0.12 |" in table and "| paper-int8 alone | | | " in table
    margins.plot(scores, times, tmp_path / "m.png", "paper-int8", 0.12)
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"


def test_margin_by_share_takes_the_largest_within_the_cap_not_the_best_scoring() -> None:
    from benchmarks.candidate import margin_by_share, verdict

    scores = {0.0: (0.70, 0.0), 0.05: (0.80, 0.10), 0.1: (0.75, 0.15), 0.2: (0.90, 0.151)}
    scores = {m: {"accuracy": a, "mirrored_share": s} for m, (a, s) in scores.items()}
    assert margin_by_share(scores, 0.15) == 0.1
    assert margin_by_share(scores, 0.0) == 0.0
    with pytest.raises(ValueError, match="at most"):
        margin_by_share({0.1: {"accuracy": 1, "mirrored_share": 0.5}}, 0.15)
    assert verdict(0.8, 0.85, -1.4, 1.5)["passed"]
    assert not verdict(0.9, 0.85, -1.4, 1.5)["passed"]
    assert not verdict(0.8, 0.85, -1.6, 1.5)["passed"]


def test_a_candidate_rule_is_settled_on_validation_faces_as_the_daemon_runs_each_file(
    fer2013: Path, tmp_path: Path
) -> None:
    from benchmarks import candidate, margins

    # The previous default as a candidate against the daemon's default, at its default margin.
    new, old = MODELS / "edgefer-int8.tflite", MODELS / DEFAULT_MODEL
    args = [str(new), "--data-dir", str(fer2013), "--limit-per-class", "300"]
    args += ["--timed", "5", "--rounds", "2", "--non-inferior", "100", "--out", str(tmp_path), "--name", "x"]
    code = candidate.main(args)
    result = json.loads((tmp_path / "x-rule.json").read_text())
    assert code == (0 if result["passed"] else 1)
    # The margin is the cap's, not the score's: the next step on the grid mirrors too many faces.
    m = result["margin"]
    grid = result["grid"]
    assert grid[f"{m:g}"]["mirrored_share"] <= 0.15 < grid[f"{round(m + 0.01, 2):g}"]["mirrored_share"]
    # The paired counts are those of the two files run as the daemon runs them, computed apart.
    va = margins.validation_faces(str(fer2013), limit_per_class=300)
    a = Classifier(new, flip_average=True, flip_margin=m).predict_labels(va.images) == va.labels
    default = Classifier(old, flip_average=True, flip_margin=ClassifierConfig().flip_margin)
    b = default.predict_labels(va.images) == va.labels
    pair = result["paired_against_default"]
    assert (pair["only_candidate_right"], pair["only_default_right"]) == (int(np.sum(a & ~b)), int(np.sum(~a & b)))
    assert result["non_inferior_passed"]  # a 100-point margin admits any loss
    assert result["speed_passed"] == (result["ratio_to_reference"] <= 0.85)
    assert set(result["latency_ms"]) == {"candidate", "default", "reference"}
    assert (tmp_path / "x-rule.png").read_bytes()[:4] == b"\x89PNG"
    assert (result["candidate"], result["default"]) == (new.name, old.name)  # names, never paths
