"""What an operator and a dashboard see: privacy, systemd notifications, Home Assistant
discovery, a second instance, ``edgefer status`` and ``edgefer report``."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edgefer import LABELS
from tests.conftest import Broker, Collector
from tests.daemon_helpers import Daemon, config_text, looping_config, make_clip, mood_payloads

pytestmark = pytest.mark.daemon

MOOD_KEYS = {
    "schema", "device", "window", "window_seconds", "start", "end", "key", "seq", "timeline", "recording_start",
    "counts", "shares", "shares_ci95", "faces", "tracks", "uncertain", "poor", "frames", "frames_with_faces",
    "positivity_ratio", "flourishing", "neutral_share", "expressivity", "emotion_entropy", "dominant", "coverage",
}  # fmt: skip


@pytest.fixture(scope="module")
def clip(fer2013: Path, tmp_path_factory: pytest.TempPathFactory):
    return make_clip(fer2013, tmp_path_factory.mktemp("clip"), per_class=4, repeat=2)


def list_paths(node: object, path: str) -> set[str]:
    """Dotted paths of every list inside a decoded JSON value."""
    if isinstance(node, list):
        return {path} | {p for v in node for p in list_paths(v, path)}
    if isinstance(node, dict):
        return {p for k, v in node.items() for p in list_paths(v, f"{path}.{k}" if path else k)}
    return set()


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_privacy_only_small_aggregate_json_leaves_and_nothing_is_written(broker: Broker, clip, tmp_path: Path) -> None:
    """Every message of a full run is small JSON of the documented shape (or the two
    availability words), and the daemon writes no file outside its state directory."""
    frames, _ = clip
    state = tmp_path / "state"
    home, work, tmp = tmp_path / "home", tmp_path / "cwd", tmp_path / "tmp"
    for d in (home, work, tmp):
        d.mkdir()
    sub = Collector(broker.port)
    cfg = looping_config(broker.port, state, str(frames), '["5s", "1m"]')
    env = {"HOME": str(home), "TMPDIR": str(tmp), "XDG_CACHE_HOME": str(home / ".cache"), "MPLCONFIGDIR": str(tmp)}
    d = Daemon(work, cfg, env=env)
    d.start()
    assert sub.wait_for(lambda m: len(mood_payloads(m)) >= 4 and any(t.endswith("/stats") for t, _, _ in m), 40)
    assert d.stop() == 0
    assert sub.wait_for(lambda m: sub.on("/available")[-1:] == [b"offline"], 10)
    sub.stop()
    for topic, payload, _ in sub.messages:
        assert len(payload) < 4096, topic
        if topic.endswith("/available"):
            assert payload in (b"online", b"offline")
            continue
        if topic.endswith("/instance"):
            assert payload == b"" or re.fullmatch(rb"[0-9a-f]{12}", payload), payload
            continue
        body = json.loads(payload) if payload else {}
        if "/mood/" in topic:
            assert set(body) == MOOD_KEYS
            assert set(body["counts"]) == set(LABELS) and all(isinstance(v, int) for v in body["counts"].values())
        # no array anywhere that could carry an image, however small: the only lists are the
        # two ends of each share's interval
        if not topic.endswith("/config"):
            assert not list_paths(body, "") - {f"shares_ci95.{lab}" for lab in LABELS}, topic
            for pair in (body.get("shares_ci95") or {}).values():
                assert len(pair) == 2 and all(isinstance(v, float | int) for v in pair)
    # Files: the daemon's own config and log are the test's; everything else must be state.
    assert tree(home) == set() and tree(tmp) == set()
    assert tree(work) == {"edgefer.toml", "edgefer.log"}
    assert tree(state) <= {"edgefer.db", "edgefer.db-wal", "edgefer.db-shm", "status.json", "edgefer.lock"}
    assert "png" not in d.logs().lower() and "jpg" not in d.logs().lower()


def test_systemd_notifications(broker: Broker, clip, tmp_path: Path) -> None:
    """What systemd hears, in order: READY, watchdog pings at half the watchdog period, a
    STATUS with the frame rate; on SIGHUP, RELOADING with the monotonic time and READY again
    once the reload is done; on SIGTERM, STOPPING and a clean exit."""
    frames, _ = clip
    state = tmp_path / "state"
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.2)
    cfg = config_text(broker.port, state, str(frames), **{"source.loop": "true", "source.pace": "true"})
    d = Daemon(tmp_path, cfg, env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "2000000"}).start()
    got: list[str] = []

    def drain_until(done: Callable[[], bool], timeout: float) -> bool:
        """Collect notifications until ``done()`` or ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() >= deadline or d.proc.poll() is not None:
                return done()
            with contextlib.suppress(TimeoutError):
                got.extend(sock.recv(4096).decode().splitlines())
        return True

    def ready_after_reload() -> bool:
        return "RELOADING=1" in got and "READY=1" in got[got.index("RELOADING=1") :]

    running = drain_until(lambda: got.count("WATCHDOG=1") >= 3 and any("fps" in line for line in got), 30)
    assert running, got
    d.signal(signal.SIGHUP)
    assert drain_until(ready_after_reload, 20), got
    d.signal(signal.SIGTERM)
    assert drain_until(lambda: "STOPPING=1" in got, 20), got
    assert d.wait(20) == 0
    sock.close()
    assert "READY=1" in got
    assert got.count("WATCHDOG=1") >= 3
    assert any(line.startswith("STATUS=running") for line in got)
    assert any(line.startswith("STATUS=") and "fps" in line for line in got)
    assert "RELOADING=1" in got and any(line.startswith("MONOTONIC_USEC=") for line in got)
    assert got.index("RELOADING=1") > got.index("READY=1")
    assert "STOPPING=1" in got


def ha_configs(port: int) -> dict[str, bytes]:
    """The discovery configs retained on the broker now: a new subscriber is sent every
    retained message before the marker it publishes itself comes back."""
    c = Collector(port, "homeassistant/#")
    try:
        c.sync("homeassistant/edgefer-test/sync")
    finally:
        c.stop()
    return {t: p for t, p, _ in c.messages}


def test_home_assistant_discovery_appears_then_is_removed(broker: Broker, clip, tmp_path: Path) -> None:
    """The daemon retains five sensor configs, sends them again when Home Assistant says it
    restarted, shrugs off junk on that topic, and clears them (nothing retained) when a
    reload turns discovery off."""
    frames, _ = clip
    state = tmp_path / "state"
    base = {"source.loop": "true", "source.pace": "true"}
    d = Daemon(tmp_path, config_text(broker.port, state, str(frames), **base)).start()
    d.wait_status(state, lambda s: s["output"]["connected"])
    watcher = Collector(broker.port, "homeassistant/sensor/#")
    assert watcher.wait_for(lambda m: len({t for t, p, _ in m if p}) >= 5, 15), watcher.messages
    configs = ha_configs(broker.port)
    assert len(configs) == 5
    ratio = json.loads(configs["homeassistant/sensor/edgefer_testcam/positivity_ratio/config"])
    assert ratio["state_topic"] == "edgefer/testcam/mood/1m"  # no 15m window here: the shortest
    assert ratio["availability_topic"] == "edgefer/testcam/available"
    assert ratio["device"]["identifiers"] == ["edgefer_testcam"]
    # Home Assistant restarts: discovery is sent again.
    watcher.sync("homeassistant/sensor/edgefer-test-sync")  # all sent so far has arrived
    before = len(watcher.messages)
    pub = Collector(broker.port, "nothing/here")
    pub.client.publish("homeassistant/status", "online", qos=1).wait_for_publish(5)
    assert watcher.wait_for(lambda m: len(m) >= before + 5, 10)
    for junk in (b"\xff\xfe", b"online" * 100, b"", b"{}"):
        pub.client.publish("homeassistant/status", junk, qos=1).wait_for_publish(5)
    pub.stop()
    d.wait_status(state, lambda s: s["frames"] > 20)  # junk on the status topic did not hurt
    # Discovery turned off: the retained configs are cleared (an empty retained message each).
    watcher.sync("homeassistant/sensor/edgefer-test-sync")
    before = len(watcher.messages)
    d.config.write_text(config_text(broker.port, state, str(frames), **base, **{"homeassistant.enabled": "false"}))
    d.signal(signal.SIGHUP)
    d.wait_status(state, lambda s: (s.get("last_reload") or {}).get("ok") and s["output"]["connected"])
    assert watcher.wait_for(lambda m: len({t for t, p, _ in m[before:] if p == b""}) >= 5, 15), watcher.messages
    watcher.stop()
    assert ha_configs(broker.port) == {}
    assert d.stop() == 0


def test_second_instance_with_the_same_id_is_reported(broker: Broker, clip, tmp_path: Path) -> None:
    frames, _ = clip
    cfgs = []
    for name in ("a", "b"):
        state = tmp_path / f"state-{name}"
        cfgs.append((state, config_text(broker.port, state, str(frames), **{"source.loop": "true"})))
    d1 = Daemon(tmp_path, cfgs[0][1], name="a").start()
    d1.wait_status(cfgs[0][0], lambda s: s["output"]["connected"])
    d2 = Daemon(tmp_path, cfgs[1][1], name="b").start()
    try:
        st = d1.wait_status(cfgs[0][0], lambda s: s["output"]["instance_conflicts"] >= 1, 30)
        assert "another edgefer instance" in st["output"]["error"]
        st2 = d2.wait_status(cfgs[1][0], lambda s: s["output"]["instance_conflicts"] >= 1, 30)
        assert st["output"]["instance"] in st2["output"]["error"] or st2["output"]["instance"] in st["output"]["error"]
    finally:
        d1.stop()
        d2.stop()


def test_status_and_report_commands(broker: Broker, clip, tmp_path: Path) -> None:
    frames, _ = clip
    state = tmp_path / "state"
    cfg = looping_config(broker.port, state, str(frames), '["5s", "1m"]')
    d = Daemon(tmp_path, cfg).start()
    try:
        d.wait_status(state, lambda s: s["output"].get("delivered", 0) >= 4, 40)
        cli = [sys.executable, "-m", "edgefer.cli"]
        out = subprocess.run([*cli, "status", "--state-dir", str(state)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert "state:         running" in out.stdout and "detector:      haar" in out.stdout
        assert "counting:      smoothing 0, balance 0.5, temperature 0.2" in out.stdout  # a folder: no averaging
        assert f"127.0.0.1:{broker.port} connected" in out.stdout
    finally:
        d.stop()
    png = tmp_path / "mood.png"
    rep = subprocess.run([*cli, "report", "--state-dir", str(state), "--since", "1h", "--out", str(png)], text=True,
                         capture_output=True, env={**os.environ, "MPLCONFIGDIR": str(tmp_path)})  # fmt: skip
    assert rep.returncode == 0, rep.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    empty = subprocess.run([*cli, "report", "--state-dir", str(tmp_path / "none")], capture_output=True, text=True)
    assert empty.returncode == 3 and "no summaries" in empty.stderr
