"""The faults a Pi's camera meets, against the real daemon process and real OpenCV: a live
MJPEG stream that stalls (over HTTP and through a FIFO), and systemd's watchdog while the
camera is dead (a fake notify socket, as systemd's would be)."""

from __future__ import annotations

import itertools
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

from benchmarks.mjpeg_stream import MjpegHttpServer, jpeg_frames
from benchmarks.stall_soak import stall_soak
from tests.daemon_helpers import Daemon, config_text, make_clip, wait_until

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("via", ["http", "fifo"])
def test_a_stalling_mjpeg_stream_is_reported_and_resumes_without_a_crash(fer2013: Path, tmp_path: Path, via) -> None:
    """Two cycles of benchmarks/stall_soak.py (its 20-cycle run is in docs/faults.md)."""
    res = stall_soak(tmp_path, cycles=2, via=via, stall=2.0, log=lambda m: None, fer=fer2013)
    assert res["crashes"] == 0, res["log"][-3000:]
    assert res["failed_cycles"] == [], (res["cycles"], res["log"][-3000:])
    for cycle in res["cycles"]:
        assert "no frame for" in (cycle["error_during"] or ""), cycle  # the stall, in status.json
        assert cycle["restarts"] >= 1, cycle
    if via == "fifo":  # a read blocked in the kernel: the reader was abandoned, not closed under it
        assert res["abandoned_readers"] >= 2
        assert "an abandoned reader's call returned; it closed its source" in res["log"]
    assert res["exit_code"] == 0


class NotifySocket:
    """The datagram socket systemd listens on (``$NOTIFY_SOCKET``), recording what arrives."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="sdnotify-")  # short: AF_UNIX paths are 107 bytes at most
        self.path = f"{self._dir}/notify"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def env(self, watchdog_seconds: float = 1.0) -> dict:
        """What systemd passes with WatchdogSec=: pings are then due every half period."""
        return {"NOTIFY_SOCKET": self.path, "WATCHDOG_USEC": str(int(watchdog_seconds * 1e6))}

    def pings(self, since: float = 0.0, until: float = float("inf")) -> list[float]:
        return [t for t, m in list(self.messages) if "WATCHDOG=1" in m.splitlines() and since <= t < until]

    def first(self, line: str, timeout: float = 30.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, m in list(self.messages):
                if line in m.splitlines():
                    return t
            time.sleep(0.05)
        raise AssertionError(f"{line} never arrived: {self.messages}")

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=2)
        self._sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture
def notify():
    sock = NotifySocket()
    yield sock
    sock.close()


def watchdog_config(state: Path, device: str, grace: float) -> str:
    return config_text(1883, state, device, **{
        "source.kind": '"opencv"', "source.stall_seconds": "1.0", "source.retry_initial_seconds": "0.5",
        "source.retry_max_seconds": "1.0", "source.watchdog_grace_seconds": f"{grace}", "mqtt.enabled": "false",
    })  # fmt: skip


def test_a_camera_that_never_delivers_is_fed_for_the_grace_then_not(notify: NotifySocket, tmp_path: Path) -> None:
    state = tmp_path / "state"
    d = Daemon(tmp_path, watchdog_config(state, "/dev/video-not-there", 3.0), env=notify.env()).start()
    try:
        ready = notify.first("READY=1")  # sent once the first retry is under way
        time.sleep(7.0)
        pings = notify.pings(since=ready)
        assert len(pings) >= 3, notify.messages  # alive while the camera is retried...
        assert pings[-1] - ready < 3.5, pings  # ...for the grace, measured from the feed's start
        assert time.monotonic() - pings[-1] > 3.0  # then nothing, so systemd would restart it
        assert d.proc is not None and d.proc.poll() is None  # (here nobody does: it runs on)
        st = d.status(state)["source"]
        assert st["state"].startswith("retrying") and "cannot open" in st["error"]
    finally:
        assert d.stop() == 0
    assert "no longer feeding systemd's watchdog; systemd restarts the daemon" in d.logs()


def test_a_short_stall_keeps_the_watchdog_fed_and_pings_resume_with_frames(
    fer2013: Path, notify: NotifySocket, tmp_path: Path
) -> None:
    frames, _ = make_clip(fer2013, tmp_path / "clip", per_class=2, repeat=1)
    camera = MjpegHttpServer(jpeg_frames(frames)).start()
    state = tmp_path / "state"
    d = Daemon(tmp_path, watchdog_config(state, camera.url, 4.0), env=notify.env()).start()
    try:
        d.wait_status(state, lambda s: s["source"]["state"] == "running" and s["fps"] > 0, 30)
        camera.pause()  # longer than stall_seconds, shorter than the grace: the pings go on
        t0 = time.monotonic()
        time.sleep(2.5)
        camera.resume()
        t1 = time.monotonic()
        short = [t0, *notify.pings(t0, t1), t1]
        assert max(b - a for a, b in itertools.pairwise(short)) < 1.5, short
        assert "no frame for 1s (read timed out)" in d.logs()  # it was a stall, not a pause in frames
        n = d.wait_status(state, lambda s: s["source"]["state"] == "running", 15)["frames"]
        d.wait_status(state, lambda s: s["frames"] > n + 5, 15)
        camera.pause()  # longer than the grace: they stop about 4 s after the last frame
        t2 = time.monotonic()
        time.sleep(7.0)
        assert notify.pings(t2, t2 + 3.5), "fed during the grace"
        assert notify.pings(t2 + 4.8, time.monotonic()) == [], "still fed after the grace"
        camera.resume()
        t3 = time.monotonic()
        d.wait_status(state, lambda s: s["source"]["state"] == "running", 15)
        assert wait_until(lambda: len(notify.pings(t3)) >= 2, 10), "the pings resume with the frames"
    finally:
        assert d.stop() == 0
        camera.stop()
    logs = d.logs()
    assert "no longer feeding systemd's watchdog" in logs and "frames again; feeding systemd's watchdog again" in logs
