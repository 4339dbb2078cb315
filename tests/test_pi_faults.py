"""The faults a Pi meets, shown on the real daemon against a real mosquitto: a wall clock that
NTP corrects after the start (forward, back, and a boot in 1970), a state directory that
fills up or turns read-only, and a broker client that fakes another instance.

The daemon's clock is moved through its test-only hook, ``$EDGEFER_CLOCK_OFFSET_FILE`` (a
file of seconds added to the system clock): no root, and the machine's clock is left alone.
The small file system is a tmpfs of 1 MB, so that test needs root (and skips without it).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from edgefer import statusfile
from edgefer.clock import OFFSET_ENV
from tests.conftest import Broker, Collector
from tests.daemon_helpers import Daemon, looping_config, produced_keys

pytestmark = pytest.mark.slow

EVERY = 5  # the publish interval of every window here
SLACK = 2.0  # the loop's tick, the broker's round trip, a busy machine
#: how long summaries are watched after a clock correction: at least four boundaries of
#: every window after it (the first within one interval), each to be neither lost nor repeated
AFTER = 3 * EVERY


def demo_config(port: int, state: Path) -> str:
    """The embedded demo at 5 frames a second, windows 5s and 1m published every 5 s: a live
    camera's stand-in that needs no data set."""
    return looping_config(port, state, "", '["5s", "1m"]', **{"source.kind": '"demo"', "source.fps": "5.0"})


class Stamped(list):
    """A message list that also records when each message arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def append(self, item) -> None:
        self.times.append(time.time())
        super().append(item)


def mood_collector(port: int) -> Collector:
    c = Collector(port, "edgefer/testcam/mood/#")
    c.messages = Stamped()  # the broker is new: nothing was published yet
    return c


def arrivals(c: Collector) -> list[tuple[float, dict]]:
    """(arrival time, payload) of every mood summary received live, in arrival order."""
    return [
        (t, json.loads(p))
        for t, (_, p, retained) in zip(c.messages.times, c.messages, strict=True)
        if p and not retained
    ]


def end(p: dict) -> float:
    return datetime.strptime(p["end"], "%Y-%m-%dT%H:%M:%S%z").timestamp()


def clock_now(status: dict) -> float:
    """The daemon's own time, from its status."""
    return datetime.strptime(status["clock"]["now"], "%Y-%m-%dT%H:%M:%S%z").timestamp()


def set_offset(path: Path, seconds: float) -> float:
    """Step the daemon's clock: the file is replaced whole, never seen half-written."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{seconds}\n")
    tmp.replace(path)
    return time.time()


def clock_daemon(tmp_path: Path, port: int, offset: float, name: str = "edgefer") -> tuple[Daemon, Path]:
    state = tmp_path / "state"
    (tmp_path / "offset").write_text(f"{offset}\n")
    cfg = demo_config(port, state)
    return Daemon(tmp_path, cfg, env={OFFSET_ENV: str(tmp_path / "offset")}, name=name).start(), state


def assert_corrected(got: list[tuple[float, dict]], fixed: float, state: Path) -> list[tuple[float, dict]]:
    """After the clock was corrected at ``fixed``: a summary with the correct time within one
    publish interval, then only correct times; every boundary from there on, in every window
    (none lost); no key twice over the whole run (none duplicated). Returns the corrected."""
    keys = [p["key"] for _, p in got]
    assert not [k for k, n in Counter(keys).items() if n > 1], "a key was published twice"
    correct = [(t, p) for t, p in got if t >= fixed and 0 <= t - end(p) <= EVERY + SLACK]
    assert correct and correct[0][0] - fixed <= EVERY + SLACK, [(t - fixed, p["key"]) for t, p in got[-12:]]
    late = [(t, p) for t, p in got if t >= fixed + SLACK]
    assert all(0 <= t - end(p) <= EVERY + SLACK for t, p in late), [(t - end(p), p["key"]) for t, p in late]
    for window in ("5s", "1m"):
        ends = [int(end(p)) for _, p in correct if p["window"] == window]
        assert ends == list(range(ends[0], ends[-1] + EVERY, EVERY)), (window, ends)
    assert set(produced_keys(state)) <= set(keys), "produced but never delivered"
    return correct


def run_and_correct(broker: Broker, tmp_path: Path, offset: float) -> tuple:
    """A daemon started with its clock ``offset`` seconds off, corrected once four summaries
    have arrived, run until summaries have flowed ``AFTER`` seconds past the correction;
    returns the daemon, its state directory, the summaries as they arrived and the
    correction's time."""
    sub = mood_collector(broker.port)
    d, state = clock_daemon(tmp_path, broker.port, offset)
    try:
        assert sub.wait_for(lambda m: len(m) >= 4, 60), d.logs()
        fixed = set_offset(tmp_path / "offset", 0)
        assert sub.wait_for(lambda m: m.times[-1] > fixed + AFTER, 60), d.logs()
    finally:
        assert d.stop() == 0
        sub.stop()
    return d, state, arrivals(sub), fixed


def test_clock_corrected_an_hour_forward_after_the_start(broker: Broker, tmp_path: Path) -> None:
    """A Pi started an hour behind; NTP corrects it. Before: every timestamp stayed 3,600 s off
    until a restart."""
    d, state, got, fixed = run_and_correct(broker, tmp_path, -3600)
    before = [(t, p) for t, p in got if t < fixed]
    assert before and all(abs(t - 3600 - end(p)) <= EVERY + SLACK for t, p in before)  # the hook took hold
    correct = assert_corrected(got, fixed, state)
    assert not any(p["key"].endswith("/r1") for _, p in correct)  # forward: every boundary is new
    st = json.loads((state / "status.json").read_text())["clock"]
    assert st["steps"] == 1 and abs(st["last_step"]["seconds"] - 3600) < SLACK
    assert d.logs().count("the wall clock stepped +") == 1


def test_clock_corrected_two_minutes_back_after_the_start(broker: Broker, tmp_path: Path) -> None:
    """A Pi started two minutes ahead; NTP steps it back. The boundaries it already published
    under the wrong time come again under the correct time, with keys of their own."""
    d, state, got, fixed = run_and_correct(broker, tmp_path, 120)
    before = [(t, p) for t, p in got if t < fixed]
    assert before and all(abs(t + 120 - end(p)) <= EVERY + SLACK for t, p in before)
    correct = assert_corrected(got, fixed, state)
    ahead = max(end(p) for _, p in before)
    # boundaries the wrong clock had already used carry /r1; none went silent meanwhile
    assert all(p["key"].endswith("/r1") == (end(p) <= ahead) for _, p in correct)
    assert any(p["key"].endswith("/r1") for _, p in correct)
    assert "publish them again under the correct time" in d.logs()


def test_a_restart_behind_the_last_summary_and_in_1970_waits_for_the_clock(broker: Broker, tmp_path: Path) -> None:
    """A Pi restarted with the time fake-hwclock saved (2 min behind), or with none (1970):
    before, it published nothing for 122 s although NTP corrected the clock 10 s after the
    start. Now the daemon says it waits for the clock, and publishes within one interval of
    the correction, without repeating a key."""
    sub = mood_collector(broker.port)
    d, state = clock_daemon(tmp_path, broker.port, 0)
    try:  # one boundary's summaries (5s and 1m): a last summary to restart behind
        assert sub.wait_for(lambda m: len(m) >= 2, 60), d.logs()
    finally:
        assert d.stop() == 0
    first_run = len(sub.messages)
    d2, _ = clock_daemon(tmp_path, broker.port, 1000 - time.time(), name="again")  # 1970-01-01 00:16
    try:
        st = d2.wait_status(state, lambda s: s.get("pid") == d2.proc.pid and s["frames"] > 5, 60)
        assert st["state"] == "waiting for the clock" and "before this release" in st["clock"]["waiting_for"]
        cmd = [sys.executable, "-m", "edgefer.cli", "status", "--state-dir", str(state)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "state:         waiting for the clock: the clock reads 1970-01-01" in out.stdout
        set_offset(tmp_path / "offset", -120)  # fake-hwclock's time: behind the last summary
        st = d2.wait_status(state, lambda s: "before the last summary" in (s["clock"]["waiting_for"] or ""), 20)
        passed = (clock_now(st) // EVERY + 1) * EVERY + 1  # a boundary passes on the wrong clock ...
        d2.wait_status(state, lambda s: clock_now(s) >= passed, 20)
        assert len(sub.messages) == first_run  # ... and is not published
        fixed = set_offset(tmp_path / "offset", 0)  # NTP arrives
        assert sub.wait_for(lambda m: m.times[-1] > fixed + AFTER, 60), d2.logs()
    finally:
        assert d2.stop() == 0
        sub.stop()
    assert_corrected(arrivals(sub), fixed, state)
    logs = d2.logs()
    assert logs.count("waiting for the clock:") == 1 and logs.count("counting and publishing resume") == 1


# -- the state directory ------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path):
    """A 1 MB tmpfs: a state directory that can be filled, and remounted read-only."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system (mount -t tmpfs -o size=1m) needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


class Filler:
    """Keeps a file system full, as a runaway log would: every block freed (SQLite truncating
    its log, say) is taken again within a tenth of a second, until :meth:`stop`."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "filler"
        self._stop = threading.Event()
        self._full = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._full.wait(10), "the file system never filled"

    def _run(self) -> None:
        with self.path.open("ab", buffering=0) as f:
            while not self._stop.is_set():
                with contextlib.suppress(OSError):  # unbuffered: the write that fails is the last
                    while True:
                        f.write(b"\0" * 4096)
                self._full.set()
                self._stop.wait(0.1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.path.unlink()


def cli_status(state: Path) -> tuple[int, str]:
    cmd = [sys.executable, "-m", "edgefer.cli", "status", "--state-dir", str(state)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return out.returncode, out.stdout


def wait_health(state: Path, health: str, timeout: float) -> float:
    """Seconds until the status ``edgefer status`` reads (statusfile.read, without the
    command's start-up time) shows the state directory's ``health``; then the command too."""
    t0 = time.monotonic()
    wait_current(state, lambda s: s["state_dir"]["health"] == health, timeout)
    took = time.monotonic() - t0
    code, out = cli_status(state)
    assert code == 0 and f"state dir:     {health}  (" in out, out
    return took


def current(state: Path) -> dict:
    found = statusfile.read(state)
    return found[1] if found else {}


def wait_current(state: Path, pred, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = current(state)
        if st and pred(st):
            return st
        time.sleep(0.2)
    raise AssertionError(f"status never matched; last: {current(state)}")


def test_a_full_then_read_only_state_directory_is_shown_and_keeps_the_order(
    small_fs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Summaries queue on disk while the broker is away; then the disk fills: `edgefer status`
    says so within 5 s (its status now in the runtime directory), newer summaries wait in
    memory behind the older ones on disk, and all arrive oldest first once the broker is
    back. Then a start on the directory mounted read-only (before: "no status"), and the
    directory writable again while it runs. One warning each way, each time."""
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "run"))  # the daemon's and `edgefer status`'s
    broker = Broker(tmp_path).start()
    state = small_fs / "state"
    sub = Collector(broker.port, "edgefer/testcam/mood/#")
    cfg = demo_config(broker.port, state)
    d = Daemon(tmp_path, cfg).start()
    d2 = filler = None
    try:
        assert sub.wait_for(lambda m: len(m) >= 2, 60), d.logs()
        broker.stop()
        wait_current(state, lambda s: s["queue_depth"] >= 2 and s["state_dir"]["health"] == "ok", 40)
        filler = Filler(small_fs)
        took = wait_health(state, "full", 10)
        assert took <= 5, f"shown after {took:.1f} s"
        code, out = cli_status(state)
        assert "status file:   " in out and "state:         running" in out
        wait_current(state, lambda s: s["queue_in_memory"] >= 2, 40)  # newer ones, in memory
        broker.start()
        wait_current(state, lambda s: s["output"]["connected"] and s["queue_depth"] == 0, 60)
        filler.stop()
        wait_health(state, "ok", 30)
        assert (state / "status.json").exists() and current(state)["queue_in_memory"] == 0
        assert d.stop() == 0
        code, out = cli_status(state)
        assert code == 3 and out.startswith("state:         stopped")
        assert "running" not in out and "connected" not in out

        subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
        d2 = Daemon(tmp_path, cfg, name="read-only").start()
        assert d2.proc is not None
        st = wait_current(state, lambda s: s.get("pid") == d2.proc.pid, 60)
        assert st["state_dir"]["health"] == "read-only", st["state_dir"]  # in its first status
        wait_health(state, "read-only", 5)
        n = len(sub.messages)
        assert sub.wait_for(lambda m: len(m) >= n + 2, 30), d2.logs()  # published live all the same
        subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
        wait_health(state, "ok", 30)
        wait_current(state, lambda s: s["queue_depth"] == 0 and s["queue_in_memory"] == 0, 30)
    finally:
        if filler is not None and filler.path.exists():
            filler.stop()
        subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=False)
        for daemon in (d, d2):
            if daemon is not None:
                assert daemon.stop() == 0
        sub.stop()
        broker.stop()
    got = [json.loads(p) for _, p, _ in sub.messages if p]
    first_seen = list(dict.fromkeys(p["key"] for p in got))
    seqs = [next(p["seq"] for p in got if p["key"] == k) for k in first_seen]
    assert seqs == sorted(seqs), f"summaries arrived out of order: {seqs}"
    assert set(produced_keys(state)) <= set(first_seen), "produced but never delivered"
    for daemon, kind in ((d, "full"), (d2, "read-only")):
        logs = daemon.logs()
        assert logs.count(f": {kind} (") == 1 and logs.count("takes writes again (after") == 1, logs


def test_a_single_faked_instance_id_is_not_a_conflict(broker: Broker, tmp_path: Path) -> None:
    """Any broker client can publish on a device's instance topic. One message with another
    instance id, or a retained one (a killed daemon leaves its id behind), proves nothing:
    only an id that keeps coming, as a second daemon's announcements do, is a conflict."""
    state = tmp_path / "state"
    d = Daemon(tmp_path, demo_config(broker.port, state)).start()
    faker = Collector(broker.port, "nothing/here")
    try:
        d.wait_status(state, lambda s: s["output"]["connected"], 60)
        topic = "edgefer/testcam/instance"
        faker.client.publish(topic, "0123456789ab", qos=1).wait_for_publish(5)
        faker.client.publish(topic, "ba9876543210", qos=1, retain=True).wait_for_publish(5)
        since = time.time()
        st = d.wait_status(state, lambda s: s["updated"] > since + 12, 30)  # more than an announce period
        assert st["output"]["instance_conflicts"] == 0 and st["output"]["state"] == "connected", st["output"]
        faker.client.publish(topic, "0123456789ab", qos=1).wait_for_publish(5)  # again, as a daemon would
        st = d.wait_status(state, lambda s: s["output"]["instance_conflicts"] >= 1, 10)
        assert "0123456789ab" in st["output"]["error"] and st["output"]["state"] == "conflict"
    finally:
        faker.stop()
        assert d.stop() == 0


def test_instance_conflict_rules() -> None:
    """The rules on their own: the id retained on the first connect and a single message or a
    burst are not enough; sightings that go on, as a second daemon's announcements do, are,
    and so is a foreign id found retained on a reconnect (written after our own)."""
    from types import SimpleNamespace

    from edgefer import publish
    from edgefer.config import MqttConfig

    out = publish.MqttOutput(MqttConfig(), "testcam", instance="aaaaaaaaaaaa")
    now = [100.0]
    out._mono = lambda: now[0]
    out.connects = 1

    def msg(payload: str, *, retain: bool = False, after: float = 0.0) -> None:
        now[0] += after
        out._on_message(None, None, SimpleNamespace(topic=out.instance_topic, payload=payload.encode(), retain=retain))

    msg("bbbbbbbbbbbb", retain=True)  # maybe a killed daemon's
    msg("bbbbbbbbbbbb", retain=True, after=10)
    msg("aaaaaaaaaaaa", after=10)  # our own
    msg("bbbbbbbbbbbb")
    msg("bbbbbbbbbbbb", after=1)
    msg("bbbbbbbbbbbb", after=1)  # a burst: 2 s in all
    msg("bbbbbbbbbbbb", after=publish.FORGET_AFTER + 1)  # forgotten meanwhile: a first sighting again
    assert (out.conflicts, out.state) == (0, "connecting")
    msg("bbbbbbbbbbbb", after=publish.ANNOUNCE_EVERY)  # a second daemon's next announcement
    assert (out.conflicts, out.state) == (1, "conflict") and "bbbbbbbbbbbb" in out.error

    out = publish.MqttOutput(MqttConfig(), "testcam", instance="aaaaaaaaaaaa")
    out._mono = lambda: now[0]
    out.connects = 2  # two daemons with one client id take turns on the broker
    msg("cccccccccccc", retain=True)
    msg("cccccccccccc", retain=True, after=2)
    assert out.conflicts == 0
    msg("cccccccccccc", retain=True, after=publish.CONFIRM_AFTER)
    assert out.conflicts == 1 and "cccccccccccc" in out.error
    for i in range(100):  # a flood of made-up ids is not remembered without bound
        msg(f"{i:012x}")
    assert len(out._sightings) == publish.SIGHTINGS_MAX
