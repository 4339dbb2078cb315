"""Recordings and folders analysed as a researcher runs them: the real CLI, real faces.

``edgefer run --source FILE|FOLDER --stdout --fast``: every frame is processed (the live rate
cap does not apply), windows follow the recording's own clock, a folder's photographs are
independent stills, and an analysis starts from nothing, whatever ran before on the same
state directory.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import cv2
import pytest

from edgefer.config import parse
from edgefer.faces import build_face_stage
from edgefer.framepath import FramePath
from edgefer.service import build_classifier
from tests.daemon_helpers import analysis_args, make_clip, write_video

pytestmark = pytest.mark.slow

REAL = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "real-posed"


def analyse(source: Path, state: Path) -> list[dict]:
    example = Path(__file__).resolve().parents[1] / "deploy" / "edgefer.toml"
    done = subprocess.run(
        [sys.executable, "-m", "edgefer.cli", *analysis_args(example, source, state)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(ln) for ln in done.stdout.splitlines() if ln.startswith("{")]
    return [r["payload"] for r in rows if "/mood/" in r["topic"]]


def last_of_longest(payloads: list[dict]) -> dict:
    return max(payloads, key=lambda p: (p["window_seconds"], p["seq"]))


def seconds(iso: str) -> float:
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").timestamp()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four real photographs per class, as a user's folder of stills."""
    if not REAL.is_dir():
        pytest.fail(f"real photographs not found at {REAL}")
    folder = tmp_path_factory.mktemp("photos")
    for label in ("angry", "happy", "sad", "neutral"):
        for p in sorted((REAL / "rafd" / label).iterdir())[:4]:
            (folder / f"{label}-{p.name}").symlink_to(p)
    return folder


def test_a_folder_counts_every_photograph_once(photos: Path, tmp_path: Path) -> None:
    last = last_of_longest(analyse(photos, tmp_path / "state"))
    n = len(list(photos.iterdir()))
    assert last["frames"] == n
    assert last["faces"] >= 0.9 * n  # before: the live rate cap skipped most of a fast folder
    assert last["tracks"] == last["faces"]  # stills: no face is followed into the next photograph
    assert last["timeline"] == "recording" and last["recording_start"] is not None


def test_an_analysis_starts_from_nothing(photos: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = last_of_longest(analyse(photos, state))
    second = last_of_longest(analyse(photos, state))
    assert second["faces"] == first["faces"] and second["counts"] == first["counts"]  # not doubled
    with sqlite3.connect(state / "edgefer.db") as db:  # nothing for `edgefer report` to mix up
        assert db.execute("SELECT COUNT(*) FROM history").fetchone() == (0,)
    assert second["shares"] == first["shares"]


def test_a_video_is_analysed_whole_on_its_own_clock(fer2013: Path, tmp_path: Path) -> None:
    frames, labels = make_clip(fer2013, tmp_path / "frames", per_class=6, repeat=2)
    fps = 15.0
    clip = write_video(frames, tmp_path / "clip.avi", fps=fps)
    payloads = analyse(clip, tmp_path / "state")
    last = last_of_longest(payloads)
    assert last["frames"] == len(labels)
    # every frame in which the daemon's face path sees a face is classified (a live camera's
    # rate cap would have skipped most of them at this speed)
    path = FramePath(build_face_stage(parse("").faces), build_classifier(parse("")))
    cap, seen = cv2.VideoCapture(str(clip)), 0
    while (got := cap.read())[0]:
        seen += bool(path.process(cv2.cvtColor(got[1], cv2.COLOR_BGR2GRAY), classify=False).faces)
    assert seen > 0 and last["frames_with_faces"] == seen
    assert last["tracks"] < last["faces"]  # a face held for several frames is one track
    # the last summary closes the recording at its own length, not at the analysis' wall time
    length = len(labels) / fps
    offset = seconds(last["end"]) - seconds(last["recording_start"])
    assert length <= offset <= length + 2, (offset, length)
