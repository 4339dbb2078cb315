"""Running the real daemon as a subprocess against a real broker, on real FER2013 faces."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from edgefer.datasets import load_fer2013


def make_clip(fer2013: Path, out: Path, per_class: int = 8, repeat: int = 3, seed: int = 0) -> tuple[Path, np.ndarray]:
    """A folder of 640x480 PNG frames, each with one FER2013 test face; returns the
    folder and the true label of every frame."""
    from edgefer.bench.clips import composite_clip

    d = load_fer2013(fer2013, "test", limit_per_class=per_class)
    frames, labels = composite_clip(d.images, d.labels, len(d) * repeat, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        cv2.imwrite(str(out / f"{i:05d}.png"), f)
    return out, np.asarray(labels).reshape(-1)


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


def config_text(port: int, state: Path, source: str, **extra: str) -> str:
    """A complete daemon config; ``extra`` maps 'section.key' to a TOML literal."""
    sections: dict[str, dict[str, str]] = {
        "": {"device_id": '"testcam"', "state_dir": f'"{state}"', "log_level": '"info"'},
        "source": {"kind": '"folder"', "device": f'"{source}"', "pace": "false", "fps": "15.0"},
        "faces": {"detector": '"haar"', "detect_every": "1", "min_face": "60"},
        "classifier": {"max_rate": "0", "threads": "1"},
        "mood": {"windows": '["1m", "1h"]', "publish_every": '"1m"', "persist_every": '"2s"'},
        "mqtt": {"host": '"127.0.0.1"', "port": str(port), "stats_every": '"5s"'},
    }
    for dotted, value in extra.items():
        section, _, key = dotted.rpartition(".")
        sections.setdefault(section, {})[key] = value
    lines = [f"{k} = {v}" for k, v in sections.pop("").items()]
    for name, keys in sections.items():
        lines.append(f"\n[{name}]")
        lines += [f"{k} = {v}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


def looping_config(port: int, state: Path, source: str, windows: str = '["5s", "1m"]', **extra: str) -> str:
    """A looping clip at its own pace with summaries every 5 s: the live-camera stand-in."""
    live = {"source.loop": "true", "source.pace": "true", "mood.windows": windows, "mood.publish_every": '"5s"'}
    return config_text(port, state, source, **{**live, **extra})


class Daemon:
    def __init__(self, workdir: Path, config: str, env: dict | None = None, name: str = "edgefer") -> None:
        self.workdir = workdir
        self.config = workdir / f"{name}.toml"
        self.config.write_text(config)
        self.log = workdir / f"{name}.log"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self, *extra: str) -> Daemon:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgefer.cli", "run", "--config", str(self.config), *extra],
            stdout=subprocess.PIPE,
            stderr=self.log.open("ab"),
            env=self.env,
            cwd=self.workdir,
        )
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.signal(signal.SIGTERM)
        return self.wait(30)

    def logs(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def status(self, state: Path) -> dict:
        try:
            return json.loads((state / "status.json").read_text())
        except (OSError, ValueError):
            return {}

    def wait_status(self, state: Path, pred, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.status(state)
            if st and pred(st):
                return st
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.logs()}")
            time.sleep(0.2)
        raise AssertionError(f"status never matched; last: {self.status(state)}\n{self.logs()}")


def produced_keys(state: Path) -> list[str]:
    """Every summary the daemon produced (its local history), in production order."""
    with sqlite3.connect(state / "edgefer.db") as db:
        return [k for (k,) in db.execute("SELECT key FROM history ORDER BY end_ts, window_seconds")]


def mood_payloads(messages: list[tuple[str, bytes, bool]]) -> list[dict]:
    return [json.loads(p) for t, p, _ in messages if "/mood/" in t and p]
