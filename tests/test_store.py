"""The outbox: ordered, bounded with counted drops, and surviving a disk that refuses writes."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from edgefer.store import WAL_LIMIT, DirHealth, Item, StateDirBusy, StateDirLock, Store, classify


def items(n: int, start: int = 0) -> list[Item]:
    return [Item(f"k{i}", "t", f'{{"i": {i}}}') for i in range(start, start + n)]


def test_order_dedup_and_delivery(tmp_path: Path) -> None:
    s = Store(tmp_path / "db.sqlite")
    s.enqueue(items(5))
    s.enqueue(items(2))  # the same keys again: ignored
    assert [i.key for i in s.pending()] == ["k0", "k1", "k2", "k3", "k4"]
    s.delivered("k0")
    s.delivered("k2")
    assert [i.key for i in s.pending()] == ["k1", "k3", "k4"]
    s.close()
    again = Store(tmp_path / "db.sqlite")
    assert again.depth() == 3


def test_bound_drops_oldest_and_counts_across_restarts(tmp_path: Path) -> None:
    s = Store(tmp_path / "db.sqlite", queue_max=10)
    s.enqueue(items(25))
    assert s.depth() == 10 and s.dropped == 15
    assert s.pending(1)[0].key == "k15"
    s.close()
    assert Store(tmp_path / "db.sqlite", queue_max=10).dropped == 15


def test_state_is_saved_with_the_summaries(tmp_path: Path) -> None:
    s = Store(tmp_path / "db.sqlite")
    s.enqueue(items(1), {"seq": 7})
    assert Store(tmp_path / "db.sqlite").load_state() == {"seq": 7}


def test_unwritable_state_dir_falls_back_to_memory() -> None:
    """/proc refuses new files even to root: the store starts faulted but keeps working."""
    s = Store(Path("/proc/edgefer-test/db.sqlite"), retry_seconds=3600)
    assert s.fault and "/proc/edgefer-test" in s.fault
    s.enqueue(items(3), {"seq": 2})
    assert [i.key for i in s.pending()] == ["k0", "k1", "k2"]
    assert s.load_state() == {"seq": 2}
    s.delivered("k1")
    assert s.depth() == 2


def test_full_disk_keeps_summaries_in_memory_and_recovers(tmp_path: Path) -> None:
    """SQLite's own 'database or disk is full' (a page limit on the connection) loses
    nothing within the bound: summaries wait in memory, in order, and move back to disk
    when a new connection can write again."""
    path = tmp_path / "db.sqlite"
    s = Store(path, retry_seconds=0)
    s.enqueue(items(2))
    assert s._db is not None
    pages = s._db.execute("PRAGMA page_count").fetchone()[0]
    s._db.execute(f"PRAGMA max_page_count = {pages}")
    big = [Item(f"k{i}", "t", "x" * 20000) for i in range(2, 5)]
    s.enqueue(big, {"seq": 1})
    assert s.fault and "full" in s.fault
    assert s.depth() == 5  # reopened (no page limit now) and drained memory to disk
    assert s.fault is None
    assert [i.key for i in s.pending()] == ["k0", "k1", "k2", "k3", "k4"]
    assert Store(path).load_state() == {"seq": 1}


def test_state_dir_lock_admits_one_holder_and_names_it(tmp_path: Path) -> None:
    state = tmp_path / "new" / "state"
    first = StateDirLock(state)
    first.acquire()  # makes the directory, and nothing in it but the lock file
    assert [p.name for p in state.iterdir()] == ["edgefer.lock"]
    assert (state / "edgefer.lock").read_text() == f"{os.getpid()}\n"
    second = StateDirLock(state)
    with pytest.raises(StateDirBusy) as exc:
        second.acquire()
    assert str(exc.value).startswith(f"{state}: state directory in use by another edgefer process (pid {os.getpid()})")
    assert not second.held
    first.release()
    second.acquire()
    assert second.held
    second.release()


def test_one_ordered_queue_across_a_disk_that_refuses_writes(tmp_path: Path) -> None:
    """Summaries on disk when writes start failing go first, those queued in memory meanwhile
    after them, newer ones after those: the disk is still read while it refuses writes. One
    delivered from disk meanwhile is not sent again, and is deleted with the write-back."""
    s = Store(tmp_path / "db.sqlite", retry_seconds=3600)
    s.enqueue(items(3))  # k0 k1 k2 on disk, undelivered (the broker is away)
    assert s._db is not None
    pages = s._db.execute("PRAGMA page_count").fetchone()[0]
    s._db.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full from here on
    s.enqueue([Item(f"k{i}", "t", "x" * 20000) for i in (3, 4)], {"seq": 5})
    assert s.fault and s.health.state == "full" and s.memory_depth == 2
    s.enqueue(items(1, start=5))
    assert [i.key for i in s.pending()] == ["k0", "k1", "k2", "k3", "k4", "k5"]
    s.delivered("k0")  # its delete cannot be written either
    s.delivered("k3")
    assert [i.key for i in s.pending()] == ["k1", "k2", "k4", "k5"] and s.depth() == 4
    s._next_try = 0  # time to try again: a fresh connection has no page limit
    assert s.depth() == 4 and s.fault is None and s.health.state == "ok" and s.memory_depth == 0
    assert [i.key for i in s.pending()] == ["k1", "k2", "k4", "k5"]
    s.enqueue(items(1, start=6))
    assert [i.key for i in s.pending()][-1] == "k6"
    s.close()
    again = Store(tmp_path / "db.sqlite")
    assert [i.key for i in again.pending()] == ["k1", "k2", "k4", "k5", "k6"]
    assert again.load_state() == {"seq": 5}


def test_history_made_while_the_disk_refused_writes_is_written_back(tmp_path: Path) -> None:
    s = Store(tmp_path / "db.sqlite", retry_seconds=3600)
    s._fail(OSError(28, "No space left on device"))
    s.enqueue(items(1), history=[("k0", 60, 1000, '{"end": 1000}')])
    assert s.history(0) == []
    s._next_try = 0
    assert s.depth() == 1 and s.history(0) == [{"end": 1000}]


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (OSError(28, "No space left on device"), "full"),
        (sqlite3.OperationalError("database or disk is full"), "full"),
        (OSError(30, "Read-only file system"), "read-only"),
        (sqlite3.OperationalError("attempt to write a readonly database"), "read-only"),
        (PermissionError(13, "Permission denied"), "read-only"),
        (sqlite3.OperationalError("disk I/O error"), "error"),  # the file system says neither
    ],
)
def test_failures_are_classified(tmp_path: Path, exc: BaseException, kind: str) -> None:
    assert classify(exc, tmp_path) == kind


def test_health_logs_one_warning_per_change_not_per_write(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    health = DirHealth(tmp_path)
    full = OSError(28, "No space left on device")
    with caplog.at_level(logging.DEBUG, logger="edgefer.store"):
        for _ in range(20):
            health.failed("store", full)
            health.failed("status", full)
        assert health.report()["health"] == "full" and "No space" in health.report()["error"]
        health.recovered("status")
        assert health.state == "full"  # the store still fails
        health.failed("status", OSError(30, "Read-only file system"))
        assert health.state == "full"  # the more specific of the two stays shown
        health.recovered("store")
        assert health.state == "read-only"
        health.recovered("status")
        health.recovered("status")
    assert health.report() == {"path": str(tmp_path), "health": "ok", "error": None, "since": None}
    lines = [r for r in caplog.records if r.name == "edgefer.store"]
    assert all(r.levelno == logging.WARNING for r in lines)
    assert [r.getMessage().split(": ")[1] for r in lines[:2]] == [
        "full ([Errno 28] No space left on device)",
        "read-only ([Errno 30] Read-only file system)",
    ]
    assert len(lines) == 3 and "takes writes again" in lines[2].getMessage()


def test_write_ahead_log_stays_bounded(tmp_path: Path) -> None:
    """Left to SQLite's defaults the log settles at about 4 MB; here it stays near its bound
    however much state is written, and the periodic upkeep truncates it."""
    path = tmp_path / "db.sqlite"
    wal = tmp_path / "db.sqlite-wal"
    s = Store(path)
    state = {"buckets": {str(b): {"row": [b] * 8, "tracks": {"1": [0.25] * 5}} for b in range(2000)}}
    largest = 0
    for i in range(60):  # 60 saves of a 160 kB state: 10 MB through the log
        s.enqueue(items(1, start=i), state, [(f"k{i}", 60, i, "{}")])
        s.delivered(f"k{i}")
        largest = max(largest, wal.stat().st_size)
    assert len(json.dumps(state)) > 150_000
    assert largest <= WAL_LIMIT + 512 * 1024, largest
    s.prune_history(86400)
    assert wal.stat().st_size == 0


def test_a_read_only_directory_is_still_read(tmp_path: Path) -> None:
    """Started on a state directory mounted read-only, the store resumes the mood state and
    the queue from the file it cannot write, so nothing restarts from zero or out of order."""
    if os.geteuid() != 0:
        pytest.skip("mounting a read-only file system needs root")
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        s = Store(mnt / "db.sqlite")
        s.enqueue(items(2), {"seq": 9})
        s.close()  # a clean stop: SQLite removes its -wal and -shm files
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        ro = Store(mnt / "db.sqlite", retry_seconds=3600)
        assert ro.fault and ro.health.state == "read-only"
        assert ro.load_state() == {"seq": 9}
        ro.enqueue(items(1, start=2))
        assert [i.key for i in ro.pending()] == ["k0", "k1", "k2"]
        ro.close()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
