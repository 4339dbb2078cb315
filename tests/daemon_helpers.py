"""Running the real daemon as a subprocess against a real broker, on real faces: the test-only
pieces, beside the harness the tests share with the benchmarks (``benchmarks/harness.py``)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from benchmarks.harness import Daemon, config_text, make_clip, mood_payloads, proc_sample, produced_keys, wait_until

__all__ = [
    "REAL_POSED",
    "Daemon",
    "analysis_args",
    "config_text",
    "looping_config",
    "make_clip",
    "make_real_clip",
    "mood_payloads",
    "proc_sample",
    "produced_keys",
    "wait_until",
    "write_video",
]

REAL_POSED = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "real-posed"


def make_real_clip(out: Path, per_class: int = 3, hold: int = 4, head: int = 260, seed: int = 0) -> Path:
    """A folder of 640x480 PNG frames showing real photographed heads (real-posed/rafd), each
    scaled to ``head`` px tall, placed at a random spot on a textured background and held for
    ``hold`` frames: a person in front of a camera, for the tests that need the detector to
    see faces as it does in a room (FER2013's tight crops lack the head it looks for)."""
    from edgefer.bench.clips import background

    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    i = 0
    for label in ("angry", "happy", "sad", "neutral"):
        for photo in sorted((REAL_POSED / "rafd" / label).iterdir())[:per_class]:
            gray = cv2.imread(str(photo), cv2.IMREAD_GRAYSCALE)
            small = cv2.resize(
                gray, None, fx=head / gray.shape[0], fy=head / gray.shape[0], interpolation=cv2.INTER_AREA
            )
            y, x = int(rng.integers(0, 481 - small.shape[0])), int(rng.integers(0, 641 - small.shape[1]))
            for _ in range(hold):
                frame = background((640, 480), rng)
                frame[y : y + small.shape[0], x : x + small.shape[1]] = small
                cv2.imwrite(str(out / f"{i:05d}.png"), frame)
                i += 1
    return out


def analysis_args(config: str | Path, source: str | Path, state: str | Path) -> list[str]:
    """``edgefer run`` arguments that analyse a recording or folder as a researcher does."""
    return ["run", "--config", str(config), "--source", str(source), "--stdout", "--fast", "--state-dir", str(state)]


def write_video(frames_dir: Path, path: Path, fps: float = 15.0, fourcc: str = "MJPG") -> Path:
    """A video of the folder's PNG frames: MJPG (what cameras send) or FFV1 (lossless, for
    comparing machines: JPEG decoders differ in the last bits between CPU architectures)."""
    files = sorted(frames_dir.glob("*.png"))
    first = cv2.imread(str(files[0]), cv2.IMREAD_GRAYSCALE)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (first.shape[1], first.shape[0]))
    for f in files:
        w.write(cv2.cvtColor(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE), cv2.COLOR_GRAY2BGR))
    w.release()
    return path


def looping_config(port: int, state: Path, source: str, windows: str = '["5s", "1m"]', **extra: str) -> str:
    """A looping clip at its own pace with summaries every 5 s: the live-camera stand-in."""
    live = {"source.loop": "true", "source.pace": "true", "mood.windows": windows, "mood.publish_every": '"5s"'}
    return config_text(port, state, source, **{**live, **extra})
