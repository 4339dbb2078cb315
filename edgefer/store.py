"""The daemon's only persistent state: one SQLite file in the state directory.

It holds the outbox (summaries not yet acknowledged by the broker, in order, bounded),
the local history of published summaries (for ``edgefer report``), the rolling mood state,
and counters. Only aggregate JSON ever enters it: no pixels.

Disk trouble (full, read-only, vanished) must not stop live publishing. A write that fails
leaves the store reading the disk as before but writing to memory: summaries made meanwhile
queue in memory behind those still on disk (one queue, oldest first, so delivery order
holds across the episode), summaries delivered from disk are remembered until they can be
deleted, and every ``retry_seconds`` a fresh connection tries to write all of it back. The
state directory's health (ok, full, read-only, error) is kept in a :class:`DirHealth` that
the status file reports into too, which logs one warning when the directory first fails and
one when it recovers.

The write-ahead log is bounded (``wal_autocheckpoint``, ``journal_size_limit``, and a
truncating checkpoint with every history pruning): left alone, SQLite lets it settle at
about 4 MB, which fills a small partition by itself.

A state directory serves one daemon at a time: ``StateDirLock`` holds an ``flock`` on
``edgefer.lock`` in it for the life of the process.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: SQLite checkpoints the write-ahead log into the database once it holds this many pages
#: (4 KiB each: 1 MiB) instead of its default 1000 (4 MiB) ...
WAL_PAGES = 256
#: ... and truncates the log file back to this size after a checkpoint.
WAL_LIMIT = 1 << 20

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


OK, FULL, READ_ONLY, ERROR = "ok", "full", "read-only", "error"
#: below this much free space, a failed write is put down to a full disk
LOW_SPACE = 64 * 1024


def classify(exc: BaseException, directory: Path) -> str:
    """``full``, ``read-only`` or ``error``: what a failed write says about the directory.

    SQLite reports a full disk as ``database or disk is full`` or, when the log cannot grow,
    as a plain I/O error; a read-only mount as ``readonly database`` or ``unable to open``.
    The error's own words decide where they are plain; otherwise the file system is asked."""
    code = getattr(exc, "errno", None)
    name = str(getattr(exc, "sqlite_errorname", ""))
    text = str(exc).lower()
    if code in (errno.ENOSPC, errno.EDQUOT) or name == "SQLITE_FULL" or "disk is full" in text:
        return FULL
    if code in (errno.EROFS, errno.EACCES, errno.EPERM) or name.startswith("SQLITE_READONLY") or "readonly" in text:
        return READ_ONLY
    try:
        fs = os.statvfs(directory)
        if fs.f_flag & os.ST_RDONLY:
            return READ_ONLY
        if fs.f_bavail * fs.f_frsize < LOW_SPACE:
            return FULL
    except OSError:
        return ERROR
    if not os.access(directory, os.W_OK):
        return READ_ONLY
    return ERROR


class DirHealth:
    """The state directory's health as the daemon's writes find it.

    Each writer (the store, the status file) reports its failures and successes under its
    own name; the directory is ``ok`` only when none is failing. An operator reading the
    journal gets one warning when the directory first fails (and one more if the kind of
    failure changes) and one when it recovers, not one per write."""

    ORDER = (FULL, READ_ONLY, ERROR)

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._faults: dict[str, tuple[str, str]] = {}
        self.since: float | None = None

    @property
    def state(self) -> str:
        kinds = {kind for kind, _ in self._faults.values()}
        return next((k for k in self.ORDER if k in kinds), OK)

    @property
    def error(self) -> str | None:
        state = self.state
        return next((msg for kind, msg in self._faults.values() if kind == state), None)

    def failed(self, writer: str, exc: BaseException) -> str:
        """Record a failed write; returns its kind."""
        kind = classify(exc, self.directory)
        before = self.state
        self._faults[writer] = (kind, f"{exc}")
        self._changed(before)
        return kind

    def recovered(self, writer: str) -> None:
        """Record a write that succeeded."""
        before = self.state
        if self._faults.pop(writer, None) is not None:
            self._changed(before)

    def _changed(self, before: str) -> None:
        state = self.state
        if state == before:
            return
        if state == OK:
            took = time.time() - (self.since or time.time())
            log.warning("state directory %s takes writes again (after %.0f s)", self.directory, took)
            self.since = None
            return
        if before == OK:
            self.since = time.time()
        log.warning(
            "state directory %s: %s (%s): summaries wait in memory, in order, and the status goes to "
            "the runtime directory until it takes writes again",
            self.directory,
            state,
            self.error,
        )

    def report(self) -> dict:
        return {"path": str(self.directory), "health": self.state, "error": self.error, "since": self.since}


class Store:
    """Outbox, history, state and counters, with an ordered in-memory overflow for a disk
    that refuses writes."""

    def __init__(
        self,
        path: str | Path,
        *,
        queue_max: int = 10000,
        retry_seconds: float = 10.0,
        health: DirHealth | None = None,
    ) -> None:
        self.path = Path(path)
        self.queue_max = queue_max
        self.retry_seconds = retry_seconds
        self.health = health or DirHealth(self.path.parent)
        #: why the disk refuses writes (None while it takes them)
        self.fault: str | None = None
        self._db: sqlite3.Connection | None = None  # reads always; writes while fault is None
        self._mem: deque[Item] = deque()  # newer than everything on disk
        self._mem_history: deque[tuple] = deque()
        self._mem_state: str | None = None
        self._gone: set[str] = set()  # delivered from disk, not yet deleted there
        self._instance: str | None = None
        self._next_try = 0.0
        self.dropped = 0
        try:
            self._db = self._connect()
        except (sqlite3.Error, OSError) as exc:
            self._fail(exc, reading=True)
            self._db = self._reader()
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self.dropped = int(self._get(self._db, "dropped") or 0)

    # -- connection and faults ---------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=5, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
            db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
            db.executescript(SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    def _reader(self) -> sqlite3.Connection | None:
        """A read-only connection to a database the directory no longer lets us write (a
        read-only mount), so that a start there still resumes the mood state and sends
        what was queued, in order. Immutable when even SQLite's shared-memory file cannot
        be made: nothing can change the file while its directory refuses writes."""
        if not self.path.is_file():
            return None
        for mode in ("ro", "ro&immutable=1"):
            try:
                db = sqlite3.connect(f"{self.path.absolute().as_uri()}?mode={mode}", uri=True, isolation_level=None)
            except sqlite3.Error:
                continue
            try:
                db.execute("SELECT COUNT(*) FROM outbox").fetchone()
            except sqlite3.Error:
                db.close()
                continue
            return db
        return None

    @staticmethod
    def _get(db: sqlite3.Connection, name: str) -> str | None:
        row = db.execute("SELECT value FROM kv WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def _fail(self, exc: BaseException, *, reading: bool = False) -> None:
        """A write failed (reads go on), or with ``reading`` a read failed too (memory only)."""
        self.fault = f"{self.path}: {exc}"
        self._next_try = time.monotonic() + self.retry_seconds
        self.health.failed("store", exc)
        if reading and self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    def _usable(self) -> sqlite3.Connection | None:
        """The connection for reading, after writing back what memory holds when it is time."""
        if (self.fault is not None or self._db is None) and time.monotonic() >= self._next_try:
            self._recover()
        return self._db

    def _recover(self) -> None:
        """A fresh connection writes back, in one transaction and in order, what waited in
        memory; only then do writes go to disk again."""
        try:
            db = self._connect()
        except (sqlite3.Error, OSError) as exc:
            self._fail(exc)
            return
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
        self._db = db
        try:
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.executemany("DELETE FROM outbox WHERE key = ?", [(k,) for k in self._gone])
                self._insert(db, self._mem, self._mem_history, self._mem_state)
        except (sqlite3.Error, OSError) as exc:
            self._fail(exc)
            return
        if self.fault is not None:
            log.info("state store: %d summaries kept in memory moved to disk", len(self._mem))
        self._mem.clear()
        self._mem_history.clear()
        self._mem_state = None
        self._gone.clear()
        self.fault = None
        self.health.recovered("store")

    def _insert(self, db: sqlite3.Connection, items, history, state_json: str | None) -> None:
        now = time.time()
        db.executemany(
            "INSERT OR IGNORE INTO outbox (key, topic, payload, created) VALUES (?, ?, ?, ?)",
            [(it.key, it.topic, it.payload, now) for it in items],
        )
        db.executemany("INSERT OR REPLACE INTO history VALUES (?, ?, ?, ?)", list(history))
        if state_json is not None:
            db.execute("INSERT OR REPLACE INTO kv VALUES ('mood', ?)", (state_json,))
        self._trim(db)

    def _write(self, work: Callable[[sqlite3.Connection], object]) -> bool:
        """Run ``work`` in one transaction if the disk takes writes; False when it did not
        (the caller keeps the data in memory)."""
        db = self._usable()
        if db is None or self.fault is not None:
            return False
        try:
            with db:
                db.execute("BEGIN IMMEDIATE")
                work(db)
        except (sqlite3.Error, OSError) as exc:
            self._fail(exc)
            return False
        return True

    def _read(self, work: Callable[[sqlite3.Connection], object], default):
        db = self._usable()
        if db is None:
            return default
        try:
            return work(db)
        except (sqlite3.Error, OSError) as exc:
            self._fail(exc, reading=True)
            return default

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
        if self._write(lambda db: self._insert(db, items, history or [], state_json)):
            return
        known = {m.key for m in self._mem}
        self._mem.extend(it for it in items if it.key not in known)
        while len(self._mem) > self.queue_max:
            self._mem.popleft()
            self.dropped += 1
        self._mem_history.extend(history or [])
        while len(self._mem_history) > self.queue_max:
            self._mem_history.popleft()
        if state_json is not None:
            self._mem_state = state_json

    def instance_id(self) -> str:
        """A random id made once per state directory: it tells this daemon's announcements
        apart from another daemon's that uses the same device id."""
        import uuid

        if self._instance is None:
            value = self._read(lambda db: self._get(db, "instance"), None)
            if value is None:
                value = uuid.uuid4().hex[:12]
                self._write(lambda db: db.execute("INSERT OR REPLACE INTO kv VALUES ('instance', ?)", (value,)))
            self._instance = value
        return self._instance

    @property
    def memory_depth(self) -> int:
        """Summaries queued in memory because the disk refused them."""
        return len(self._mem)

    def save_state(self, mood_state: dict) -> None:
        self.enqueue([], mood_state)

    def load_state(self) -> dict | None:
        if self._mem_state is not None:
            return json.loads(self._mem_state)
        raw = self._read(lambda db: self._get(db, "mood"), None)
        return json.loads(raw) if raw else None

    def pending(self, limit: int = 50) -> list[Item]:
        """The oldest undelivered summaries: those on disk first (they are older), then those
        that waited in memory while the disk refused writes."""
        gone = self._gone

        def rows(db: sqlite3.Connection) -> list[Item]:
            sql = "SELECT id, key, topic, payload FROM outbox ORDER BY id LIMIT ?"
            found = [
                Item(key, topic, payload, id_) for id_, key, topic, payload in db.execute(sql, (limit + len(gone),))
            ]
            return [it for it in found if it.key not in gone][:limit]

        out = self._read(rows, [])
        return out + list(self._mem)[: max(0, limit - len(out))]

    def delivered(self, key: str) -> None:
        for m in self._mem:
            if m.key == key:
                self._mem.remove(m)
                return
        if not self._write(lambda db: db.execute("DELETE FROM outbox WHERE key = ?", (key,))):
            self._gone.add(key)  # deleted with the write-back; never sent again meanwhile

    def depth(self) -> int:
        on_disk = self._read(lambda db: db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0], 0)
        return max(0, on_disk - len(self._gone)) + len(self._mem)

    def history(self, since: float, window: int | None = None) -> list[dict]:
        sql = "SELECT payload FROM history WHERE end_ts >= ?"
        args: list = [int(since)]
        if window is not None:
            sql += " AND window_seconds = ?"
            args.append(window)
        rows = self._read(lambda db: db.execute(sql + " ORDER BY end_ts", args).fetchall(), [])
        return [json.loads(r[0]) for r in rows]

    def prune_history(self, keep_seconds: float) -> None:
        """Delete history older than ``keep_seconds``, then truncate the write-ahead log (the
        store's periodic upkeep)."""
        cutoff = int(time.time() - keep_seconds)
        if self._write(lambda db: db.execute("DELETE FROM history WHERE end_ts < ?", (cutoff,))):
            self._read(lambda db: db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone(), None)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
