"""Shared fixtures: the real FER2013 copy beside the project, and the shipped models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: the shipped .tflite files and labels.txt (package data)
MODELS = REPO / "edgefer" / "models"
#: the Keras networks behind them, which only training needs
KERAS = REPO / "models"


def fer_root() -> Path:
    """FER2013 beside the checkout (``../shared/datasets/fer2013``) or ``$EDGEFER_FER2013``."""
    env = os.environ.get("EDGEFER_FER2013")
    return Path(env) if env else REPO.parent / "shared" / "datasets" / "fer2013"


@pytest.fixture(scope="session")
def fer2013() -> Path:
    root = fer_root()
    if not (root / "test").is_dir():
        pytest.fail(f"FER2013 not found at {root}; set EDGEFER_FER2013")
    return root


@pytest.fixture
def few_faces(fer2013: Path, tmp_path: Path) -> Path:
    """A FER2013 folder with 40 real faces per class in train and 15 in test (linked, not
    copied): enough for a training step's export and figures, quick to finalize."""
    few = tmp_path / "fer2013-few"
    for split, n in (("train", 40), ("test", 15)):
        for label in ("angry", "happy", "sad", "neutral"):
            (few / split / label).mkdir(parents=True)
            for face in sorted((fer2013 / split / label).iterdir())[:n]:
                (few / split / label / face.name).symlink_to(face)
    return few


# -- a real mosquitto broker on a free port ------------------------------------------------

import getpass  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mosquitto_binary() -> str:
    path = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if path is None:
        pytest.fail("mosquitto is not installed (apt-get install mosquitto); .ci/run installs it")
    return path


class Broker:
    """A mosquitto process the test can stop and start again on the same port."""

    def __init__(self, workdir: Path, extra: str = "", port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.conf = workdir / f"mosquitto-{self.port}.conf"
        # as root, mosquitto would switch to its own user, who cannot read the test's files
        user = f"user {getpass.getuser()}\n"
        self.conf.write_text(f"{user}listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n{extra}")
        self.proc: subprocess.Popen | None = None
        self.log = workdir / f"mosquitto-{self.port}.log"

    def start(self) -> Broker:
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.conf)], stdout=self.log.open("ab"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: {self.log.read_text()}") from None
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def broker(tmp_path: Path):
    b = Broker(tmp_path).start()
    yield b
    b.stop()


class Collector:
    """A paho subscriber that records every message (topic, payload, retain) in order."""

    def __init__(self, port: int, topic: str = "#") -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{port}-{id(self)}"
        )
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload, bool(m.retain)))
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def wait_for(self, pred, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred(self.messages):
                return True
            time.sleep(0.1)
        return False

    def on(self, suffix: str) -> list[bytes]:
        return [p for t, p, _ in self.messages if t.endswith(suffix)]

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
