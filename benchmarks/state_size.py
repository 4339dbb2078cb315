"""How large the state directory grows: a day of the daemon's writes at the default settings,
through the real mood tracker and the real store, on a simulated clock.

The daemon's writes in a day at the defaults (windows 1m, 15m, 1h, 24h published every
minute, the state saved every 30 s, upkeep every 30 s, history kept 30 days, the broker up):
1,440 publishing rounds of four summaries each (queued, delivered, kept in the history, with
the state that made them), 2,880 state saves and 2,880 rounds of upkeep (history pruning and
a truncating checkpoint of the write-ahead log). A face is in view all day, one frame a
second, a new face track every five minutes: every bucket of the 24-hour window holds
counts and a track, the largest state the defaults make (more frames a second change the
counts, not the number of buckets or tracks). The write-ahead log's size is read after every
write; the history of 29 more days is then added as the daemon would have written it, to
give the size with the default 30 days kept.

Run: ``python -m benchmarks.state_size [--out benchmarks/results/state_size.json]``.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np

from edgefer.config import parse
from edgefer.mood import MoodTracker, window_name
from edgefer.store import WAL_LIMIT, WAL_PAGES, Item, Store

DAY = 86400
T0 = 1_800_000_000 // DAY * DAY  # a midnight (UTC)


def simulate_day(directory: Path) -> dict:
    """One day of writes; sizes of the database, its log and the state."""
    cfg = parse("device_id = 'kitchen'")
    mood = cfg.mood
    tracker = MoodTracker(cfg.device_id, mood.window_seconds, 60)
    tracker.start(T0)
    store = Store(directory / "edgefer.db", queue_max=cfg.mqtt.queue_max)
    wal = directory / "edgefer.db-wal"
    rng = np.random.default_rng(0)
    wal_max = state_bytes = 0
    summaries = 0
    payload_bytes: list[int] = []
    for second in range(DAY):
        t = T0 + second
        probs = rng.dirichlet(np.ones(4)).reshape(1, 4)
        tracker.add_frame(t + 0.5, probs, [1_796_000_000_000_000 + second // 300])
        due = tracker.due(t + 1)
        if due:
            items, hist = [], []
            for s in due:
                body = json.dumps(s.payload, separators=(",", ":"))
                payload_bytes.append(len(body))
                items.append(Item(s.key, f"edgefer/kitchen/mood/{window_name(s.window_seconds)}", body))
                hist.append((s.key, s.window_seconds, s.end, body))
            store.enqueue(items, tracker.state(), hist)
            for it in items:  # the broker acknowledges them
                store.delivered(it.key)
            summaries += len(items)
        if second % 30 == 29:
            state = tracker.state()
            state_bytes = len(json.dumps(state))
            store.save_state(state)
            wal_max = max(wal_max, wal.stat().st_size if wal.exists() else 0)
            store.prune_history(cfg.history.keep_days * DAY)  # the daemon's upkeep, every stats_every
        wal_max = max(wal_max, wal.stat().st_size if wal.exists() else 0)
    store.close()
    return {
        "summaries": summaries,
        "summary_bytes_mean": round(float(np.mean(payload_bytes))),
        "state_bytes_per_save": state_bytes,
        "state_saves": DAY // 30 + summaries // len(mood.window_seconds),
        "wal_max_bytes": wal_max,
        "db_bytes_after_a_day": (directory / "edgefer.db").stat().st_size,
    }


def add_history(directory: Path, days: int) -> int:
    """Copy the day's history ``days`` times further back, as earlier days; the new size."""
    db = sqlite3.connect(directory / "edgefer.db")
    rows = db.execute("SELECT key, window_seconds, end_ts, payload FROM history").fetchall()
    with db:
        for d in range(1, days + 1):
            db.executemany(
                "INSERT INTO history VALUES (?, ?, ?, ?)", [(f"{k}/{d}", w, e - d * DAY, p) for k, w, e, p in rows]
            )
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return (directory / "edgefer.db").stat().st_size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/state_size.json"))
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        result = simulate_day(Path(tmp))
        keep = parse("").history.keep_days
        result["db_bytes_with_30_days_of_history"] = add_history(Path(tmp), keep - 1)
    result.update(
        wal_autocheckpoint_pages=WAL_PAGES, journal_size_limit_bytes=WAL_LIMIT, seconds=round(time.monotonic() - t0)
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for k, v in result.items():
        print(f"{k:34} {v:>12,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
