"""FER2013 in both layouts, the 7 -> 4 class mapping, and errors that point at the culprit."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edgefer import LABELS
from edgefer.datasets import UNLABELLED, DatasetError, find_root, load_fer2013


def test_folder_layout_on_the_real_test_split(fer2013: Path) -> None:
    d = load_fer2013(fer2013, "test")
    assert d.images.shape[1:] == (48, 48) and d.images.dtype == np.uint8
    counts = d.class_counts()
    for name in LABELS:  # every image of the four classes, nothing of the other three
        assert counts[name] == len(list((fer2013 / "test" / name).glob("*.jpg")))
    assert all("disgust" not in s and "fear" not in s and "surprise" not in s for s in d.sources)


def test_dropped_classes_load_on_request_unlabelled(fer2013: Path) -> None:
    """``dropped=True`` gives exactly the faces the four-class load leaves out, with no label."""
    d = load_fer2013(fer2013, "test", dropped=True, limit_per_class=20)
    assert len(d) == 60 and set(d.labels.tolist()) == {UNLABELLED}
    assert sorted({Path(s).parent.name for s in d.sources}) == ["disgust", "fear", "surprise"]
    assert d.class_counts() == dict.fromkeys(LABELS, 0)
    everything = load_fer2013(fer2013, "test", dropped=True)
    on_disk = sum(len(list((fer2013 / "test" / c).glob("*.jpg"))) for c in ("disgust", "fear", "surprise"))
    assert len(everything) == on_disk


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("emotion,pixels,Usage\n" + "\n".join(rows) + "\n")
    return path


def test_csv_layout_maps_and_splits(fer2013: Path, tmp_path: Path) -> None:
    img = cv2.imread(str(next((fer2013 / "test" / "happy").glob("*.jpg"))), cv2.IMREAD_GRAYSCALE)
    px = " ".join(map(str, img.flatten()))
    rows = [f"3,{px},PublicTest", f"1,{px},PublicTest", f"6,{px},Training", f"0,{px},PublicTest", f"4,{px},PrivateTest"]
    csv = write_csv(tmp_path / "fer2013.csv", rows)
    test = load_fer2013(tmp_path, "test")
    assert [LABELS[i] for i in test.labels] == ["happy", "angry"]  # disgust (1) dropped
    assert np.array_equal(test.images[0], img)
    assert test.sources[0] == f"{csv}:2"
    assert [LABELS[i] for i in load_fer2013(csv, "train").labels] == ["neutral"]
    assert [LABELS[i] for i in load_fer2013(csv, "privatetest").labels] == ["sad"]
    dropped = load_fer2013(csv, "test", dropped=True)
    assert dropped.sources == [f"{csv}:3"] and dropped.labels.tolist() == [UNLABELLED]  # the disgust row
    with pytest.raises(DatasetError, match=r"no Training rows of the classes disgust, fear, surprise"):
        load_fer2013(csv, "train", dropped=True)


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("3," + " ".join(["1"] * 2000) + ",PublicTest", "expected 2304 pixel values, got 2000"),
        ("9," + " ".join(["1"] * 2304) + ",PublicTest", "unknown emotion label '9' (expected 0..6)"),
        ("3," + " ".join(["300"] * 2304) + ",PublicTest", "pixel values must lie in 0..255"),
        ("3," + " ".join(["a"] * 2304) + ",PublicTest", "pixel values must be integers"),
    ],
)
def test_bad_csv_rows_name_file_and_line(tmp_path: Path, row: str, problem: str) -> None:
    good = "3," + " ".join(["7"] * 2304) + ",PublicTest"
    csv = write_csv(tmp_path / "fer2013.csv", [good, row])
    with pytest.raises(DatasetError) as exc:
        load_fer2013(csv, "test")
    assert str(exc.value) == f"{csv}:3: {problem}"
    kept = load_fer2013(csv, "test", skip_bad=True)
    assert len(kept) == 1 and kept.skipped == [f"{csv}:3: {problem}"]


def test_unreadable_image_is_named_or_skipped(fer2013: Path, tmp_path: Path) -> None:
    for name in ("happy", "sad"):
        (tmp_path / "test" / name).mkdir(parents=True)
    good = next((fer2013 / "test" / "sad").glob("*.jpg"))
    (tmp_path / "test" / "sad" / "a.jpg").write_bytes(good.read_bytes())
    bad = tmp_path / "test" / "happy" / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match=r"broken\.jpg: unreadable image"):
        load_fer2013(tmp_path, "test")
    d = load_fer2013(tmp_path, "test", skip_bad=True)
    assert len(d) == 1 and d.skipped == [f"{bad}: unreadable image"]


def test_unknown_class_folder_and_missing_dataset(tmp_path: Path) -> None:
    (tmp_path / "test" / "contempt").mkdir(parents=True)
    with pytest.raises(DatasetError, match="unknown class folder 'contempt'"):
        load_fer2013(tmp_path, "test")
    with pytest.raises(DatasetError, match=r"FER2013 not found \(looked in: .*nowhere\)\. .*--data-dir"):
        find_root(tmp_path / "nowhere")
