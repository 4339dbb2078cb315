"""The real daemon, a real mosquitto and real faces, as the end-to-end tests and the long
benchmarks (soak, daemon load, stall soak) both run them.

This lives with the benchmarks, not in ``tests/``, so that a benchmark never imports the test
suite: the tests import it from here (tests -> benchmarks -> edgefer, never back).
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np

from edgefer.datasets import load_fer2013

REPO = Path(__file__).resolve().parents[1]

T = TypeVar("T")


def fer_root() -> Path:
    """FER2013 beside the checkout (``../shared/datasets/fer2013``) or ``$EDGEFER_FER2013``."""
    env = os.environ.get("EDGEFER_FER2013")
    return Path(env) if env else REPO.parent / "shared" / "datasets" / "fer2013"


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.05) -> T | None:
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout`` seconds
    pass (None). Waiting on the condition itself instead of sleeping a guessed interval keeps
    a fast machine fast and a loaded one correct."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


# -- a real mosquitto broker on a free port ------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mosquitto_binary() -> str:
    path = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if path is None:
        raise RuntimeError("mosquitto is not installed (apt-get install mosquitto); .ci/run installs it")
    return path


class Broker:
    """A mosquitto process that can be stopped and started again on the same port."""

    def __init__(self, workdir: Path, extra: str = "", port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.conf = workdir / f"mosquitto-{self.port}.conf"
        # as root, mosquitto would switch to its own user, who cannot read the caller's files
        user = f"user {getpass.getuser()}\n"
        self.conf.write_text(f"{user}listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n{extra}")
        self.proc: subprocess.Popen | None = None
        self.log = workdir / f"mosquitto-{self.port}.log"

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()}") from None
            return False

    def start(self) -> Broker:
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.conf)], stdout=self.log.open("ab"), stderr=subprocess.STDOUT
        )
        if not wait_until(self._listening, 10):
            raise RuntimeError(f"mosquitto did not start listening on port {self.port}")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


class Collector:
    """A paho subscriber that records every message (topic, payload, retain) in order."""

    def __init__(self, port: int, topic: str = "#") -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self.subscribed = threading.Event()
        self._marker = f"edgefer-sync-{uuid.uuid4().hex}".encode()
        self._synced = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{port}-{id(self)}"
        )
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: object, userdata: object, m: object) -> None:
        if m.payload == self._marker:  # type: ignore[attr-defined]
            self._synced.set()
            return
        self.messages.append((m.topic, m.payload, bool(m.retain)))  # type: ignore[attr-defined]

    def wait_for(self, pred: Callable[[list[tuple[str, bytes, bool]]], bool], timeout: float = 30.0) -> bool:
        """Whether ``pred(messages)`` came true within ``timeout`` seconds."""
        return bool(wait_until(lambda: pred(self.messages), timeout, 0.1))

    def sync(self, topic: str, timeout: float = 10.0) -> None:
        """Return once every message the broker had for this subscriber has arrived: publish a
        marker on ``topic`` (which must match the subscription) and wait for it to come back.
        The broker delivers one client's messages in order, so the retained messages sent on
        subscribing, and anything published before this call, arrive before the marker. This
        is how a test shows that something is *absent* without sleeping and hoping."""
        if not self.subscribed.wait(timeout):
            raise TimeoutError("the subscription was never acknowledged")
        self._synced.clear()
        self.client.publish(topic, self._marker, qos=1)
        if not self._synced.wait(timeout):
            raise TimeoutError(f"the marker published on {topic!r} never came back")

    def on(self, suffix: str) -> list[bytes]:
        return [p for t, p, _ in self.messages if t.endswith(suffix)]

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# -- the daemon, its config and its input --------------------------------------------------


def make_clip(fer2013: Path, out: Path, per_class: int = 8, repeat: int = 3, seed: int = 0) -> tuple[Path, np.ndarray]:
    """A folder of 640x480 PNG frames, each with one FER2013 test face; returns the
    folder and the true label of every frame."""
    from edgefer.bench.clips import composite_frames

    d = load_fer2013(fer2013, "test", limit_per_class=per_class)
    clip = composite_frames(d.images, d.labels, len(d) * repeat, seed=seed)
    frames, labels = clip.frames, clip.labels
    out.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        cv2.imwrite(str(out / f"{i:05d}.png"), f)
    return out, np.asarray(labels).reshape(-1)


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


class Daemon:
    """``edgefer run`` as a subprocess, as systemd starts it, watched through its status file."""

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

    def wait_status(self, state: Path, pred: Callable[[dict], bool], timeout: float = 30) -> dict:
        """The first status that satisfies ``pred``; an AssertionError with the log when the
        daemon exits first or ``timeout`` seconds pass."""

        def matched() -> dict | None:
            st = self.status(state)
            if st and pred(st):
                return st
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.logs()}")
            return None

        st = wait_until(matched, timeout, 0.2)
        if st is None:
            raise AssertionError(f"status never matched; last: {self.status(state)}\n{self.logs()}")
        return st


def proc_sample(pid: int) -> dict[str, float]:
    """A process's resident memory (MB), threads and open file descriptors, from /proc: what
    grows when a long-running daemon leaks."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "rss_mb": int(fields["VmRSS"].split()[0]) / 1024,
        "threads": int(fields["Threads"]),
        "fds": len(list(Path(f"/proc/{pid}/fd").iterdir())),
    }


def produced_keys(state: Path) -> list[str]:
    """Every summary the daemon produced (its local history), in production order."""
    with sqlite3.connect(state / "edgefer.db") as db:
        return [k for (k,) in db.execute("SELECT key FROM history ORDER BY end_ts, window_seconds")]


def mood_payloads(messages: list[tuple[str, bytes, bool]]) -> list[dict]:
    """The decoded mood summaries among a Collector's messages, in arrival order."""
    return [json.loads(p) for t, p, _ in messages if "/mood/" in t and p]
