"""The outbox: ordered, bounded with counted drops, and surviving a disk that refuses writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgefer.store import Item, StateDirBusy, StateDirLock, Store


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
