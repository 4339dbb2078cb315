"""Frame sources and face cropping as plain functions and small classes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edgefer.bench.stats import iou
from edgefer.config import SourceConfig
from edgefer.faces import Face, FaceStage, Framing, HaarDetector, crop_face, framing_for, scale_faces
from edgefer.sources import Feed, FolderSource, OpenCVSource, make_source, redact, to_gray


def test_redact_hides_credentials_in_stream_urls() -> None:
    assert redact("rtsp://user:pa@ss/word@cam.local:554/stream") == "rtsp://***@cam.local:554/stream"
    assert redact("/dev/video0") == "/dev/video0"
    assert OpenCVSource("rtsp://u:p@host/x").name == "opencv:rtsp://***@host/x"


def test_to_gray_accepts_what_backends_return() -> None:
    bgr = np.zeros((4, 6, 3), np.uint8)
    bgr[..., 2] = 255  # red
    assert to_gray(bgr).shape == (4, 6) and int(to_gray(bgr)[0, 0]) == 76
    assert to_gray(np.ones((4, 6), np.float32)).max() == 255
    assert to_gray(np.zeros((4, 6, 1), np.uint8)).shape == (4, 6)


def test_auto_source_never_falls_back_to_the_demo(tmp_path: Path) -> None:
    assert make_source(SourceConfig(kind="auto", device="7")).name == "opencv:7"  # retried, not replaced
    assert make_source(SourceConfig(kind="auto", device=str(tmp_path))).name == f"folder:{tmp_path}"


def test_folder_feed_hands_over_every_frame_then_ends(tmp_path: Path) -> None:
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((32, 32), i * 10, np.uint8))
    (tmp_path / "junk.png").write_bytes(b"nope")
    feed = Feed(lambda: FolderSource(str(tmp_path)), pace=False)
    feed.start()
    got = []
    while not feed.ended or feed.queue_depth():
        f = feed.get(1.0)
        if f is not None:
            got.append(int(f.gray[0, 0]))
    feed.stop()
    assert got == [0, 10, 20, 30, 40] and feed.dropped == 0


def test_crop_is_square_with_margin_and_levels_the_eyes() -> None:
    img = np.zeros((200, 200), np.uint8)
    img[50:150, 50:150] = 255  # the "face" box
    c = crop_face(img, Face(50, 50, 100, 100), Framing.from_margin(0.25))
    assert c.shape == (48, 48)
    # a quarter of the box as margin on each side: the bright square fills the middle 2/3
    assert c[24, 24] == 255 and c[2, 24] == 0 and c[24, 2] == 0
    tilted = np.zeros((200, 200), np.uint8)
    cv2.line(tilted, (60, 80), (140, 120), 255, 3)  # a line through both eyes, tilted
    flat = crop_face(tilted, Face(50, 50, 100, 100, eyes=((60, 80), (140, 120))))
    rows = np.flatnonzero(flat.max(axis=1) > 128)
    assert rows.max() - rows.min() <= 4  # the eye line is horizontal after levelling


def test_framing_moves_and_scales_the_crop_relative_to_the_box() -> None:
    img = np.zeros((300, 300), np.uint8)
    img[100:200, 100:200] = 255
    # a crop twice the box (200 px, scale 0.24), its centre moved down by half the box to
    # y = 150: it spans y 50..250, so the square (y 100..200) fills crop rows 12..36
    c = crop_face(img, Face(100, 50, 100, 100), Framing(scale=2.0, dy=0.5))
    col = c[:, 24] > 128
    assert not col[:10].any() and col[14:34].all() and not col[38:].any()
    assert framing_for("haar") == framing_for("haar", "auto") != framing_for("haar", 0.15)
    assert framing_for("haar", 0.15) == Framing(scale=1.3)


def test_scale_faces_and_held_boxes(fer2013: Path) -> None:
    """Boxes scale with their eyes; detection runs every third frame and holds its boxes in
    between; and the box found at half resolution, scaled back, lies on the face pasted into
    the frame: one box, centred within a tenth of the face's size of the face's centre, its
    side within a quarter of the face's, overlapping it by IoU >= 0.6 (Haar's box on a tight
    FER2013 crop is a little larger than the crop). A box left at detection scale, or one
    on the background, fails."""
    assert scale_faces([Face(10, 20, 30, 40, eyes=((1, 2), (3, 4)))], 2.0)[0] == Face(
        20, 40, 60, 80, eyes=((2, 4), (6, 8))
    )
    face = cv2.imread(str(sorted((fer2013 / "test" / "happy").glob("*.jpg"))[0]), cv2.IMREAD_GRAYSCALE)
    frame = np.full((480, 640), 120, np.uint8)
    frame[100:340, 200:440] = cv2.resize(face, (240, 240))
    stage = FaceStage(HaarDetector(), detect_scale=0.5, detect_every=3, min_face=60)
    runs = [stage.faces(frame)[1] for _ in range(6)]
    assert runs == [True, False, False, True, False, False] and stage.detections == 2
    boxes, _ = stage.faces(frame)
    assert len(boxes) == 1, boxes
    b, truth = boxes[0], (200, 100, 240, 240)  # where the face was pasted: x, y, w, h
    assert abs(b.x + b.w / 2 - 320) <= 24 and abs(b.y + b.h / 2 - 220) <= 24, b
    assert 0.75 * 240 <= b.w <= 1.25 * 240 and 0.75 * 240 <= b.h <= 1.25 * 240, b
    assert iou((b.x, b.y, b.w, b.h), truth) >= 0.6, b


@pytest.mark.parametrize("device", ["Kitchen-1", "hall"])
def test_entity_ids_are_valid_home_assistant_ids(device: str) -> None:
    from edgefer.discovery import discovery_messages

    for _, p in discovery_messages(device=device, prefix="e", ha_prefix="h", window="1m", stats_every=30,
                                   publish_every=60):  # fmt: skip
        obj = p["default_entity_id"].split(".", 1)[1]
        assert p["default_entity_id"].startswith("sensor.") and obj == obj.lower() and "-" not in obj
