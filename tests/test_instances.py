"""Several daemons on one host: each device id gets its own client id on the broker, and a
state directory serves one daemon at a time."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgefer.conflicts import ANNOUNCE_EVERY
from tests.conftest import Broker, Collector
from tests.daemon_helpers import Daemon, config_text

pytestmark = pytest.mark.slow

#: How long two daemons run side by side. A shared client id shows as a session takeover the
#: moment the second connects; a shared instance topic as a conflict at the first daemon's next
#: announcement after the second's (within ANNOUNCE_EVERY, confirmed CONFIRM_AFTER after the
#: first sighting). Two announce periods and a few status writes see either twice over.
SIDE_BY_SIDE = 2 * ANNOUNCE_EVERY + 5


def demo_config(port: int, state: Path) -> str:
    """The embedded demo at 5 frames a second: runs until stopped, needs no camera."""
    return config_text(port, state, "", **{"source.kind": '"demo"', "source.pace": "true", "source.fps": "5.0"})


def status_json(state: Path) -> dict:
    cmd = [sys.executable, "-m", "edgefer.cli", "status", "--state-dir", str(state), "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_two_device_ids_share_a_host_and_a_broker_without_takeovers(broker: Broker, tmp_path: Path) -> None:
    """One config file (device_id "testcam", no client_id), two daemons started with
    --device-id alpha and beta: each connects as edgefer-<its device id>, and two announce
    periods side by side bring no session takeover and no instance conflict."""
    config = demo_config(broker.port, tmp_path / "unused")
    daemons: dict[str, tuple[Daemon, Path]] = {}
    for dev in ("alpha", "beta"):
        state = tmp_path / f"state-{dev}"
        d = Daemon(tmp_path, config, name=dev).start("--device-id", dev, "--state-dir", str(state))
        daemons[dev] = (d, state)
    try:
        for dev, (d, state) in daemons.items():
            st = d.wait_status(state, lambda s: s["output"]["connected"], 90)
            assert (st["device"], st["output"]["client_id"]) == (dev, f"edgefer-{dev}")
        # Two clients with one id drop each other within seconds; two daemons announcing on
        # one instance topic see each other's id within an announce period.
        end = time.monotonic() + SIDE_BY_SIDE
        while time.monotonic() < end:
            for dev, (d, state) in daemons.items():
                assert d.proc is not None and d.proc.poll() is None, d.logs()
                out = d.status(state).get("output", {})
                assert out.get("session_takeovers", 0) == 0 and out.get("instance_conflicts", 0) == 0, (dev, out)
            time.sleep(0.5)
        for dev, (d, state) in daemons.items():
            st = status_json(state)
            assert d.proc is not None and (st["pid"], st["device"]) == (d.proc.pid, dev)
            assert time.time() - st["updated"] < 10
            out = st["output"]
            assert (out["session_takeovers"], out["instance_conflicts"]) == (0, 0), out
            assert out["connected"] and out["connects"] == 1, out
        # The broker saw both clients, each once, and both devices are online.
        sub = Collector(broker.port, "edgefer/+/available")
        assert sub.wait_for(lambda m: {t for t, p, r in m if p == b"online" and r} >= {
            "edgefer/alpha/available", "edgefer/beta/available"}, 10), sub.messages  # fmt: skip
        sub.stop()
        log = broker.log.read_text()
        for dev in ("alpha", "beta"):
            assert log.count(f" as edgefer-{dev} ") == 1, log
        assert "edgefer-testcam" not in log and "already connected" not in log, log
    finally:
        for d, _ in daemons.values():
            d.stop()
    for d, _ in daemons.values():
        assert d.proc is not None and d.proc.returncode == 0, d.logs()


def test_a_state_directory_serves_one_daemon_at_a_time(broker: Broker, tmp_path: Path) -> None:
    """A second daemon on a state directory in use refuses to start, naming the directory
    and the first daemon's pid; the first runs on. A daemon killed with SIGKILL leaves no
    stale lock: the next one starts."""
    state = tmp_path / "state"
    config = demo_config(broker.port, state)
    first = Daemon(tmp_path, config, name="first").start()
    second = third = None
    try:
        assert first.proc is not None
        first.wait_status(state, lambda s: s["pid"] == first.proc.pid and s["output"]["connected"], 90)
        second = Daemon(tmp_path, config, name="second").start("--device-id", "other")
        try:
            code = second.wait(90)
        except subprocess.TimeoutExpired:
            pytest.fail(f"a second daemon on {state} kept running:\n{second.logs()}")
        err = second.logs()
        assert code != 0, err
        assert str(state) in err and f"pid {first.proc.pid}" in err, err
        assert "Traceback" not in err
        # The first is untouched: still running, still the one writing the status.
        since = time.time()
        st = first.wait_status(state, lambda s: s["updated"] > since, 30)
        assert (st["pid"], st["device"]) == (first.proc.pid, "testcam")
        assert first.proc.poll() is None
        # Killed outright, the first leaves its lock file behind but not the lock.
        first.proc.kill()
        first.proc.wait(30)
        third = Daemon(tmp_path, config, name="third").start()
        assert third.proc is not None
        third.wait_status(state, lambda s: s["pid"] == third.proc.pid and s["output"]["connected"], 90)
        assert third.stop() == 0, third.logs()
    finally:
        for d in (first, second, third):
            if d is not None:
                d.stop()
