"""BlazeFace through LiteRT: the shipped model files, the real interpreter, real photographs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edgefer.blazeface import VARIANTS, BlazeFaceDetector, ssd_anchors, weighted_nms
from edgefer.faces import available_detectors, make_detector

REAL_POSED = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "real-posed"
CLASSES = ("angry", "happy", "sad", "neutral")


@pytest.fixture(scope="module", params=["short", "full"])
def detector(request: pytest.FixtureRequest) -> BlazeFaceDetector:
    return BlazeFaceDetector(request.param)


def photo(path: Path, long_side: int = 640) -> np.ndarray:
    """A photograph in grayscale, scaled to ``long_side`` as a camera frame would be."""
    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert gray is not None, path
    scale = long_side / max(gray.shape)
    return cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def rafd_sample(per_class: int = 5) -> list[Path]:
    root = REAL_POSED / "rafd"
    if not root.is_dir():
        pytest.fail(f"real-posed photographs not found at {root}")
    return [p for c in CLASSES for p in sorted((root / c).glob("*.jpg"))[:: 36 // per_class][:per_class]]


def test_short_range_anchors_follow_the_ssd_layout() -> None:
    a = ssd_anchors(128, (8, 16, 16, 16), 2)
    assert a.shape == (896, 2)
    # stride 8: a 16 x 16 map, two anchors per cell, cells row by row
    assert np.allclose(a[:3], [[0.5 / 16, 0.5 / 16], [0.5 / 16, 0.5 / 16], [1.5 / 16, 0.5 / 16]])
    assert np.allclose(a[32], [0.5 / 16, 1.5 / 16])
    # the three stride-16 layers share one 8 x 8 map: six anchors per cell
    assert np.allclose(a[512:518], [0.5 / 8, 0.5 / 8])
    assert np.allclose(a[518], [1.5 / 8, 0.5 / 8])
    assert np.allclose(a[-1], [7.5 / 8, 7.5 / 8])


def test_full_range_anchors_follow_the_ssd_layout() -> None:
    a = ssd_anchors(192, (4,), 1)
    assert a.shape == (2304, 2)
    assert np.allclose(a[:2], [[0.5 / 48, 0.5 / 48], [1.5 / 48, 0.5 / 48]])
    assert np.allclose(a[48], [0.5 / 48, 1.5 / 48])
    assert np.allclose(a[-1], [47.5 / 48, 47.5 / 48])


def test_anchor_counts_match_the_models_outputs(detector: BlazeFaceDetector) -> None:
    outputs = {int(d["index"]): tuple(d["shape"]) for d in detector._interp.get_output_details()}
    assert outputs[detector._boxes] == (1, len(detector.anchors), 16)
    assert outputs[detector._scores] == (1, len(detector.anchors), 1)
    assert detector.name == VARIANTS[{"blazeface": "short", "blazeface-full": "full"}[detector.name]].name


def test_weighted_nms_blends_overlapping_boxes_by_score() -> None:
    boxes = np.array([[0.0, 0.0, 1.0, 1.0], [0.1, 0.0, 1.1, 1.0], [3.0, 3.0, 4.0, 4.0]])
    scores = np.array([0.9, 0.3, 0.6])
    kps = np.stack([boxes[:, :2], boxes[:, 2:]], axis=1)
    out, out_scores, out_kps = weighted_nms(boxes, scores, kps)
    assert np.allclose(out_scores, [0.9, 0.6])
    assert np.allclose(out[0], [0.025, 0.0, 1.025, 1.0])  # (0.9 * 0 + 0.3 * 0.1) / 1.2
    assert np.allclose(out[1], boxes[2])
    assert np.allclose(out_kps[0], [[0.025, 0.0], [1.025, 1.0]])


def test_weak_candidates_suppress_but_do_not_move_a_strong_face() -> None:
    """With a merge floor, a 0.3 candidate beside a 0.9 one is suppressed without pulling the
    box; a group of weak candidates alone keeps its best (the face the low threshold found)."""
    boxes = np.array([[0.0, 0.0, 1.0, 1.0], [0.1, 0.0, 1.1, 1.0], [3.0, 3.0, 4.0, 4.0], [3.2, 3.0, 4.2, 4.0]])
    scores = np.array([0.9, 0.3, 0.35, 0.25])
    kps = np.stack([boxes[:, :2], boxes[:, 2:]], axis=1)
    out, out_scores, _ = weighted_nms(boxes, scores, kps, merge_score=0.5)
    assert np.allclose(out_scores, [0.9, 0.35])
    assert np.allclose(out[0], boxes[0]) and np.allclose(out[1], boxes[2])


def test_one_face_per_photograph_with_its_eyes(detector: BlazeFaceDetector) -> None:
    sample = rafd_sample()
    assert len(sample) == 20
    for path in sample:
        gray = photo(path)
        w = gray.shape[1]
        faces = detector.detect(gray, 20)
        assert len(faces) == 1, f"{path.name}: {faces}"
        f = faces[0]
        assert f.x < w / 2 < f.x + f.w, f"{path.name}: {f}"
        assert 0.2 * w <= f.w <= 0.7 * w, f"{path.name}: {f}"
        assert f.eyes is not None and 0.5 <= f.score <= 1
        (left_x, _), (right_x, _) = f.eyes
        assert left_x < right_x, f"{path.name}: eyes {f.eyes}"
        for ex, ey in f.eyes:
            assert f.x <= ex <= f.x + f.w and f.y <= ey <= f.y + f.h / 2, f"{path.name}: {f}"


def test_no_face_no_box(detector: BlazeFaceDetector) -> None:
    assert detector.detect(np.full((480, 640), 128, np.uint8), 8) == []
    for seed in range(3):
        noise = np.random.default_rng(seed).integers(0, 256, (480, 640), dtype=np.uint8)
        assert detector.detect(noise, 8) == []


def test_small_boxes_are_dropped(detector: BlazeFaceDetector) -> None:
    gray = photo(rafd_sample()[0])
    (face,) = detector.detect(gray, 20)
    assert detector.detect(gray, min(face.w, face.h) + 1) == []


@pytest.mark.parametrize(("frame", "at"), [((480, 1280), (611, 37)), ((1280, 480), (23, 517))])
def test_letterboxed_frames_map_boxes_back_to_frame_pixels(
    detector: BlazeFaceDetector, frame: tuple[int, int], at: tuple[int, int]
) -> None:
    """A face placed at a known offset in a wide (or tall) frame gives the box it gives in a
    square frame of the same side, shifted by the letterbox's padding: the model sees the same
    pixels at the same scale in both, so only the mapping back to the frame can differ (a box
    depends on the face's scale, which is why the reference is not the photograph alone)."""
    gray = cv2.imread(str(rafd_sample()[5]), cv2.IMREAD_GRAYSCALE)
    face = gray[300:700, 140:540]
    x, y = at
    wide = np.zeros(frame, np.uint8)
    wide[y : y + 400, x : x + 400] = face
    side = max(frame)
    pad_x, pad_y = (side - frame[1]) // 2, (side - frame[0]) // 2
    square = np.zeros((side, side), np.uint8)
    square[y + pad_y : y + pad_y + 400, x + pad_x : x + pad_x + 400] = face
    (ref,) = detector.detect(square, 20)
    (got,) = detector.detect(wide, 20)
    tol = 0.02 * ref.w
    assert abs(got.x - (ref.x - pad_x)) <= tol and abs(got.y - (ref.y - pad_y)) <= tol, (got, ref)
    assert abs(got.w - ref.w) <= tol and abs(got.h - ref.h) <= tol, (got, ref)
    assert got.eyes is not None and ref.eyes is not None
    for (gx, gy), (rx, ry) in zip(got.eyes, ref.eyes, strict=True):
        assert abs(gx - (rx - pad_x)) <= tol and abs(gy - (ry - pad_y)) <= tol
    # and the face is where it was put
    assert x <= got.x + got.w / 2 - 100 and got.x + got.w / 2 + 100 <= x + 400


def test_make_detector_and_the_shipped_model_list() -> None:
    from edgefer.models import shipped_models

    found = available_detectors()
    assert found[:2] == ["blazeface-full", "blazeface"] and found[-1] == "haar"
    det = make_detector("blazeface")
    assert det.name == "blazeface" and isinstance(det, BlazeFaceDetector)
    assert make_detector("blazeface-full", 0.6).name == "blazeface-full"
    assert make_detector("auto").name == "blazeface-full"  # the default, chosen by measurement
    names = [p.name for p in shipped_models()]
    assert names and not any(n.startswith("blazeface") for n in names)
