"""The daemon's only persistent state: one SQLite file in the state directory.

It holds the outbox (summaries not yet acknowledged by the broker, in order, bounded),
the local history of published summaries (for ``edgefer report``), the rolling mood state,
and counters. Only aggregate JSON ever enters it: no pixels.

Disk trouble (full, read-only, vanished) must not stop live publishing, so every write
failure flips the store into a bounded in-memory fallback, records the fault for the
status, and is retried; items kept in memory meanwhile are written back once the disk
accepts writes again.

A state directory serves one daemon at a time: ``StateDirLock`` holds an ``flock`` on
``edgefer.lock`` in it for the life of the process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT UNIQUE NOT NULL,
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    key TEXT PRIMARY KEY,
    window_seconds INTEGER NOT NULL,
    end_ts INTEGER NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_end ON history (window_seconds, end_ts);
CREATE TABLE IF NOT EXISTS kv (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class StateDirBusy(RuntimeError):
    """Another running process holds the state directory; ``str()`` names it and its pid."""


class StateDirLock:
    """Exclusive use of a state directory: an ``flock`` on ``edgefer.lock`` inside it.

    The kernel drops the lock when the holding process exits, however it exits, so a daemon
    killed with SIGKILL leaves no stale lock; the file itself stays and only says which pid
    held it last. ``acquire`` creates the directory when missing (as the store would) and
    touches nothing else in it."""

    NAME = "edgefer.lock"

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / self.NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock and write this process's pid into the file. Raises StateDirBusy when
        another process holds it, OSError when the directory or file cannot be made or opened."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise StateDirBusy(
                f"{self.directory}: state directory in use by another edgefer process "
                f"(pid {holder if holder.isdigit() else 'unknown'}); stop it, or give each daemon "
                "its own state directory (--state-dir or state_dir)"
            ) from None
        except OSError:
            os.close(fd)
            raise
        pid = f"{os.getpid()}\n".encode()
        try:
            os.pwrite(fd, pid, 0)
            os.ftruncate(fd, len(pid))
        except OSError:
            os.close(fd)
            raise
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Unlock (closing the file); the file stays."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass
class Item:
    key: str
    topic: str
    payload: str
    id: int | None = None


class Store:
    """Outbox, history, state and counters with a bounded memory fallback."""

    def __init__(self, path: str | Path, *, queue_max: int = 10000, retry_seconds: float = 10.0) -> None:
        self.path = Path(path)
        self.queue_max = queue_max
        self.retry_seconds = retry_seconds
        self.fault: str | None = None
        self._db: sqlite3.Connection | None = None
        self._mem: deque[Item] = deque()
        self._mem_state: str | None = None
        self._next_try = 0.0
        self.dropped = 0
        self._open()

    # -- connection and faults ---------------------------------------------------------

    def _open(self) -> bool:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=5, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(SCHEMA)
            self._db = db
            self.dropped = int(self._get(db, "dropped") or 0)
        except (sqlite3.Error, OSError) as exc:
            self._fail(exc)
            return False
        return True

    @staticmethod
    def _get(db: sqlite3.Connection, name: str) -> str | None:
        row = db.execute("SELECT value FROM kv WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def _fail(self, exc: BaseException) -> None:
        msg = f"{self.path}: {exc}"
        if msg != self.fault:
            log.error("state store unavailable, keeping summaries in memory: %s", msg)
        self.fault = msg
        self._next_try = time.monotonic() + self.retry_seconds
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
        self._db = None

    def _usable(self) -> sqlite3.Connection | None:
        """The connection, reopening (and draining the memory fallback) when it is time."""
        if self._db is None and time.monotonic() >= self._next_try and self._open():
            self._recover()
        return self._db

    def _recover(self) -> None:
        db = self._db
        assert db is not None
        try:
            with db:
                db.execute("BEGIN")
                for item in self._mem:
                    db.execute(
                        "INSERT OR IGNORE INTO outbox (key, topic, payload, created) VALUES (?, ?, ?, ?)",
                        (item.key, item.topic, item.payload, time.time()),
                    )
                if self._mem_state is not None:
                    db.execute("INSERT OR REPLACE INTO kv VALUES ('mood', ?)", (self._mem_state,))
                self._trim(db)
        except (sqlite3.Error, OSError) as exc:
            self._fail(exc)
            return
        log.info("state store writable again; %d queued summaries moved to disk", len(self._mem))
        self._mem.clear()
        self._mem_state = None
        self.fault = None

    def _trim(self, db: sqlite3.Connection) -> None:
        n = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        if n > self.queue_max:
            extra = n - self.queue_max
            db.execute("DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)", (extra,))
            self.dropped += extra
            db.execute("INSERT OR REPLACE INTO kv VALUES ('dropped', ?)", (str(self.dropped),))
            log.warning("outbox over its bound of %d: dropped the %d oldest summaries", self.queue_max, extra)

    # -- public API ----------------------------------------------------------------------

    def enqueue(self, items: list[Item], mood_state: dict | None = None, history: list[tuple] | None = None) -> None:
        """Queue summaries and save the mood state that produced them in one transaction, so
        a crash can never leave a published boundary without its summary, or the reverse."""
        state_json = json.dumps(mood_state) if mood_state is not None else None
        db = self._usable()
        if db is not None:
            try:
                with db:
                    db.execute("BEGIN")
                    for it in items:
                        db.execute(
                            "INSERT OR IGNORE INTO outbox (key, topic, payload, created) VALUES (?, ?, ?, ?)",
                            (it.key, it.topic, it.payload, time.time()),
                        )
                    for key, window, end, payload in history or []:
                        db.execute("INSERT OR REPLACE INTO history VALUES (?, ?, ?, ?)", (key, window, end, payload))
                    if state_json is not None:
                        db.execute("INSERT OR REPLACE INTO kv VALUES ('mood', ?)", (state_json,))
                    self._trim(db)
                return
            except (sqlite3.Error, OSError) as exc:
                self._fail(exc)
        known = {m.key for m in self._mem}
        self._mem.extend(it for it in items if it.key not in known)
        while len(self._mem) > self.queue_max:
            self._mem.popleft()
            self.dropped += 1
        if state_json is not None:
            self._mem_state = state_json

    def instance_id(self) -> str:
        """A random id made once per state directory: it tells this daemon's announcements
        apart from another daemon's that uses the same device id."""
        import uuid

        db = self._usable()
        if db is not None:
            try:
                value = self._get(db, "instance")
                if value is None:
                    value = uuid.uuid4().hex[:12]
                    db.execute("INSERT OR REPLACE INTO kv VALUES ('instance', ?)", (value,))
                return value
            except sqlite3.Error as exc:
                self._fail(exc)
        return uuid.uuid4().hex[:12]

    def save_state(self, mood_state: dict) -> None:
        self.enqueue([], mood_state)

    def load_state(self) -> dict | None:
        if self._mem_state is not None:
            return json.loads(self._mem_state)
        db = self._usable()
        if db is None:
            return None
        try:
            raw = self._get(db, "mood")
        except sqlite3.Error as exc:
            self._fail(exc)
            return None
        return json.loads(raw) if raw else None

    def pending(self, limit: int = 50) -> list[Item]:
        """The oldest undelivered summaries, disk first (it is older), then memory."""
        out: list[Item] = []
        db = self._usable()
        if db is not None:
            try:
                rows = db.execute("SELECT id, key, topic, payload FROM outbox ORDER BY id LIMIT ?", (limit,))
                out = [Item(key, topic, payload, id_) for id_, key, topic, payload in rows]
            except sqlite3.Error as exc:
                self._fail(exc)
        return out + list(self._mem)[: max(0, limit - len(out))]

    def delivered(self, key: str) -> None:
        for m in list(self._mem):
            if m.key == key:
                self._mem.remove(m)
                return
        db = self._usable()
        if db is None:
            return
        try:
            db.execute("DELETE FROM outbox WHERE key = ?", (key,))
        except sqlite3.Error as exc:
            self._fail(exc)

    def depth(self) -> int:
        db = self._usable()  # first: reopening may move memory items to disk
        n = len(self._mem)
        if db is not None:
            try:
                n += db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
            except sqlite3.Error as exc:
                self._fail(exc)
        return n

    def history(self, since: float, window: int | None = None) -> list[dict]:
        db = self._usable()
        if db is None:
            return []
        sql = "SELECT payload FROM history WHERE end_ts >= ?"
        args: list = [int(since)]
        if window is not None:
            sql += " AND window_seconds = ?"
            args.append(window)
        return [json.loads(r[0]) for r in db.execute(sql + " ORDER BY end_ts", args)]

    def prune_history(self, keep_seconds: float) -> None:
        db = self._usable()
        if db is None:
            return
        try:
            db.execute("DELETE FROM history WHERE end_ts < ?", (int(time.time() - keep_seconds),))
        except sqlite3.Error as exc:
            self._fail(exc)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
