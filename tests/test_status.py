"""``edgefer status``: where the status is found when the state directory refuses it, and exit
codes that tell a running daemon from a stale status and a stopped one."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgefer import cli, statusfile


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "run"
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(d))
    return d


def status(**extra) -> dict:
    base = {
        "device": "kitchen",
        "pid": 1,
        "uptime": 60,
        "version": "0.1.0",
        "updated": time.time(),
        "source": {"name": "demo:astronaut", "state": "running"},
        "output": {"kind": "mqtt", "broker": "localhost:1883", "state": "connected", "connected": True},
        "queue_depth": 0,
        "dropped_summaries": 0,
        "state_dir": {"path": "/x", "health": "ok", "error": None, "since": None},
    }
    return {**base, **extra}


def run_status(state: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = cli.main(["status", "--state-dir", str(state), *extra])
    return code, capsys.readouterr().out


def test_status_goes_to_the_runtime_directory_while_the_state_directory_refuses_it(
    tmp_path: Path, runtime: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    state = blocker / "state"  # cannot be a directory: every write fails
    fails: list[OSError] = []
    oks: list[int] = []
    w = statusfile.StatusWriter(state, on_fail=fails.append, on_ok=lambda: oks.append(1))
    where = w.write(status(queue_depth=7), refresh=lambda st: st.update(note="refused"))
    assert where == runtime / statusfile.runtime_name(state) and len(fails) == 1
    found = statusfile.read(state)
    assert found is not None and found[0] == where and found[1]["queue_depth"] == 7 and found[1]["note"] == "refused"
    # the state directory takes writes again: the status goes back there and the copy goes
    blocker.unlink()
    state.mkdir(parents=True)
    assert w.write(status()) == state / "status.json" and oks == [1]
    assert not where.exists() and statusfile.read(state)[0] == state / "status.json"


def test_status_reads_the_newest_of_the_state_and_runtime_copies(tmp_path: Path, runtime: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    runtime.mkdir()
    (state / "status.json").write_text(json.dumps(status(updated=time.time() - 300, queue_depth=1)))
    fresh = runtime / statusfile.runtime_name(state)
    fresh.write_text(json.dumps(status(queue_depth=2)))
    assert statusfile.read(state) == (fresh, json.loads(fresh.read_text()))
    # another state directory's runtime copy is not mistaken for this one's
    assert statusfile.runtime_name(tmp_path / "other") != fresh.name


def test_exit_codes_running_stale_stopped_and_unknown(
    tmp_path: Path, runtime: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    path = state / "status.json"
    code, _ = run_status(state / "never", capsys)
    assert code == cli.STOPPED == 3  # never ran here

    path.write_text(json.dumps(status()))
    code, out = run_status(state, capsys)
    assert code == cli.RUNNING == 0
    assert "state:         running" in out and "localhost:1883 connected" in out and "demo:astronaut" in out

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path.write_text(json.dumps(status(updated=time.time() - 47, pid=int(gone.stdout))))
    code, out = run_status(state, capsys)
    assert code == cli.STALE == 1
    assert "not updated for 47s" in out and "is gone" in out
    assert "connected" not in out and "running" not in out  # nothing claimed about now

    path.write_text(json.dumps(status(state="stopped", queue_depth=3)))
    code, out = run_status(state, capsys)
    assert code == 3 and out.startswith("state:         stopped")
    assert "connected" not in out and "running" not in out and "fps" not in out
    assert "left for the next start" in out
    assert run_status(state, capsys, "--json")[0] == 3

    path.write_text("{not json")
    code, _ = run_status(state, capsys)
    assert code == cli.UNKNOWN == 4


def test_status_shows_the_state_directory_health_and_the_clock(
    tmp_path: Path, runtime: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    runtime.mkdir()
    health = {"path": str(state), "health": "full", "error": "database or disk is full", "since": time.time() - 9}
    step = {"seconds": -120.0, "from": "2027-01-15T08:02:00Z", "to": "2027-01-15T08:00:00Z"}
    wait = "the clock reads 1970-01-01T00:00:09Z"
    clock = {"now": "2027-01-15T08:00:00Z", "state": "waiting", "waiting_for": wait, "steps": 1, "last_step": step}
    (runtime / statusfile.runtime_name(state)).write_text(
        json.dumps(status(state="waiting for the clock", state_dir=health, queue_in_memory=4, clock=clock))
    )
    code, out = run_status(state, capsys)
    assert code == 0
    assert "state:         waiting for the clock: the clock reads 1970-01-01T00:00:09Z" in out
    assert f"state dir:     full  ({state}): database or disk is full" in out and "4 summaries held in memory" in out
    assert "status file:   " in out and "refused" in out
    assert "clock:         2027-01-15T08:00:00Z (waiting for the clock); 1 step(s), last -120 s" in out
