"""The daemon's timeline across wall-clock steps, on injected clocks: step detection, the gate
that waits for a sane clock, and the mood tracker's counts and keys around a step."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from edgefer import clock as clockmod
from edgefer.clock import Clock, ClockGate, offset_wall
from edgefer.mood import MoodTracker

HAPPY = np.array([[0.05, 0.85, 0.05, 0.05]])
T0 = 1_800_000_000  # 2027-01-15, a multiple of 60


class FakeTime:
    """A wall clock and a monotonic clock the test moves by hand."""

    def __init__(self, wall: float) -> None:
        self.offset = wall - 1000.0
        self.m = 1000.0

    def mono(self) -> float:
        return self.m

    def wall(self) -> float:
        return self.m + self.offset

    def tick(self, seconds: float) -> None:
        self.m += seconds


def test_clock_advances_with_the_monotonic_clock_and_reanchors_on_a_step() -> None:
    t = FakeTime(T0)
    clock = Clock(wall=t.wall, mono=t.mono)
    t.tick(10)
    t.offset += 1.5  # within the tolerance: slewing, not a step
    assert clock.check() is None and clock.now() == T0 + 10
    t.offset += 3600  # NTP steps the clock an hour forward
    assert clock.now() == T0 + 10  # now() alone never looks at the wall clock
    step = clock.check()
    assert step is not None and step.seconds == pytest.approx(3601.5) and step.since == T0
    assert clock.now() == pytest.approx(T0 + 3611.5) and clock.steps == 1
    assert clock.check() is None  # reported once
    t.tick(5)
    assert clock.at(t.m) == pytest.approx(T0 + 3616.5)  # monotonic spacing after the anchor
    t.offset -= 120
    assert clock.check().seconds == pytest.approx(-120)
    assert clock.now() == pytest.approx(T0 + 3496.5) and clock.steps == 2


def test_offset_file_shifts_the_wall_clock_and_survives_a_bad_write(tmp_path: Path) -> None:
    f = tmp_path / "offset"
    wall = offset_wall(f, base=lambda: 1000.0)
    assert wall() == 1000.0  # no file yet: no offset
    f.write_text("-3600.5\n")
    assert wall() == 999.0 - 3600.5 + 1
    for torn in ("half a wr", ""):
        f.write_text(torn)
        assert wall() == 1000.0 - 3600.5  # a file caught mid-write keeps the last offset
    f.write_text("120")
    assert wall() == 1120.0


def test_the_offset_hook_is_used_only_when_its_variable_is_set(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv(clockmod.OFFSET_ENV, raising=False)
    assert clockmod.system_wall() is clockmod.time.time
    (tmp_path / "offset").write_text("3600")
    monkeypatch.setenv(clockmod.OFFSET_ENV, str(tmp_path / "offset"))
    assert clockmod.system_wall()() - clockmod.time.time() == pytest.approx(3600, abs=1)


def test_gate_waits_for_a_clock_before_the_release() -> None:
    gate = ClockGate(None, earliest=T0)
    assert "1970-01-01" in gate.reason(12.0) and "before this release" in gate.reason(12.0)
    assert gate.reason(T0 + 1) is None
    assert gate.reason(30.0) is not None  # a clock stepped back to 1970 is doubted again


def test_gate_waits_for_a_clock_behind_the_last_summary_until_it_passes_or_is_synced() -> None:
    mono = [0.0]
    synced = [False]
    gate = ClockGate(T0, earliest=0, synced=lambda: synced[0], behind_wait=600, mono=lambda: mono[0])
    why = gate.reason(T0 - 120)
    assert why is not None and "120 s before the last summary published" in why
    assert gate.reason(T0) is None  # the clock passed it (NTP stepped it forward)
    assert gate.reason(T0 - 500) is None  # trusted from then on: a later step back is a correction

    gate = ClockGate(T0, earliest=0, synced=lambda: synced[0], behind_wait=600, mono=lambda: mono[0])
    assert gate.reason(T0 - 3600) is not None
    synced[0] = True  # systemd-timesyncd says the clock is right: the earlier run's was wrong
    assert gate.reason(T0 - 3600) is None

    synced[0] = False
    gate = ClockGate(T0, earliest=0, synced=lambda: synced[0], behind_wait=600, mono=lambda: mono[0])
    mono[0] = 599.0
    assert gate.reason(T0 - 3600) is not None
    mono[0] = 600.0  # waited long enough: no NTP is coming; take the clock as it is
    assert gate.reason(T0 - 3600) is None


def test_a_real_release_date_is_not_in_the_future() -> None:
    assert clockmod.time.time() > clockmod.EARLIEST


def run(tracker: MoodTracker, start: float, end: float, published: list, fps: float = 1.0) -> None:
    """One happy face per frame from ``start`` to ``end`` on the tracker's timeline, with the
    summaries due collected as the daemon's loop would."""
    t = start
    while t < end:
        tracker.add_frame(t, HAPPY, [1])
        published += tracker.due(t)
        t += 1 / fps


def test_forward_step_moves_the_counts_and_publishes_the_latest_boundary_once() -> None:
    tr = MoodTracker("dev", [5, 60], 60)
    tr.start(T0)
    out: list = []
    run(tr, T0, T0 + 30, out)  # the clock is an hour behind: these frames were seen at T0 + 3600 ...
    before = len(out)
    assert tr.move(T0, T0 + 30, 3600, T0 + 3630) == 6  # six 5-second buckets move
    run(tr, T0 + 3630, T0 + 3661, out)
    keys = [s.key for s in out]
    assert len(keys) == len(set(keys))
    after = out[before:]
    assert [s.end for s in after if s.window_seconds == 5] == list(range(T0 + 3630, T0 + 3661, 5))
    assert [s.end for s in after if s.window_seconds == 60] == [T0 + 3600, T0 + 3660]  # the latest, once
    # the minute after the step holds the half minute counted before it, where it was seen
    minute = after[-1].payload
    assert minute["window_seconds"] == 60 and minute["frames"] == 60 and minute["coverage"] == 1.0


def test_backward_step_publishes_every_boundary_again_under_keys_of_its_own() -> None:
    tr = MoodTracker("dev", [5, 60], 60)
    tr.start(T0)
    out: list = []
    run(tr, T0 + 120, T0 + 150, out)  # the clock runs two minutes ahead
    before = len(out)
    assert [s.end for s in out if s.window_seconds == 5] == list(range(T0 + 120, T0 + 150, 5))
    tr.move(T0 + 120, T0 + 150, -120, T0 + 30)  # corrected at T0 + 30
    assert tr.rewind(T0 + 30) == [5, 60] and tr.era == 1
    run(tr, T0 + 30, T0 + 200, out)
    keys = [s.key for s in out]
    assert len(keys) == len(set(keys)), Counter(keys).most_common(3)
    after = out[before:]
    # every boundary after the correction, on the corrected clock, within one interval of it
    assert [s.end for s in after if s.window_seconds == 5] == list(range(T0 + 35, T0 + 200, 5))
    assert [s.end for s in after if s.window_seconds == 60] == [T0 + 60, T0 + 120, T0 + 180]
    # those whose boundary was published under the wrong time carry an era suffix; later ones not
    assert [s.key.endswith("/r1") for s in after] == [s.end <= T0 + (145 if s.window_seconds == 5 else 120)
                                                       for s in after]  # fmt: skip
    # the half minute counted before the step sits where it was seen: the first corrected
    # minute holds it and the half minute after, and nothing is counted twice
    assert after[[s.key for s in after].index(f"dev/60/{T0 + 60}/r1")].payload["frames"] == 60
    assert all(s.payload["frames"] <= s.window_seconds for s in out)


def test_small_backward_step_waits_less_than_an_interval_instead_of_repeating() -> None:
    tr = MoodTracker("dev", [60], 60)
    tr.start(T0)
    out: list = []
    run(tr, T0 + 3, T0 + 62, out)  # 3 s ahead: boundary T0 + 60 published at true T0 + 57
    assert [s.end for s in out] == [T0 + 60]
    tr.move(T0 + 3, T0 + 62, -3, T0 + 59)
    assert tr.rewind(T0 + 59) == [] and tr.era == 0  # within one interval: no second T0 + 60
    run(tr, T0 + 59, T0 + 125, out)
    assert [s.key for s in out] == [f"dev/60/{T0 + 60}", f"dev/60/{T0 + 120}"]


def test_rewind_and_its_keys_survive_a_restart() -> None:
    tr = MoodTracker("dev", [5], 5)
    tr.start(T0)
    out: list = []
    run(tr, T0 + 100, T0 + 120, out)  # published up to T0 + 115
    tr.rewind(T0)
    run(tr, T0, T0 + 12, out)
    again = MoodTracker("dev", [5], 5)
    again.restore(tr.state())
    again.start(T0 + 12)
    run(again, T0 + 12, T0 + 125, out)
    keys = [s.key for s in out]
    assert len(keys) == len(set(keys))
    assert {f"dev/5/{T0 + 110}", f"dev/5/{T0 + 110}/r1", f"dev/5/{T0 + 120}"} <= set(keys)
    assert f"dev/5/{T0 + 120}/r1" not in keys  # past the old timeline's last boundary: plain


def test_move_adds_up_buckets_that_land_together_and_drops_the_future() -> None:
    tr = MoodTracker("dev", [5, 60], 60)
    tr.start(T0)
    run(tr, T0, T0 + 10, [])
    run(tr, T0 + 20, T0 + 30, [])
    assert tr.move(T0 + 20, T0 + 30, -20, T0 + 10) == 2  # onto the first ten seconds
    n = len(tr.labels)
    row, tracks, _ = tr.window_row(T0, T0 + 10)
    assert row[n + 1] == 20 and row[n + 3] == 2  # frames add up; the active flag stays one per bucket
    assert len(tracks) == 1 and tracks[0][0] == 20  # one track, its face-frames added up
    assert tr.window_row(T0 + 20, T0 + 30)[0][n + 1] == 0  # nothing left behind
    tr.move(T0, T0 + 10, 100, T0 + 10)  # moved past "now": dropped, never counted twice
    assert tr.window_row(T0, T0 + 200)[0][n + 1] == 0


def test_the_service_follows_a_step_waits_for_a_sane_clock_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The daemon's loop on an injected clock: a step is logged once and shown in the status,
    the counts move with it, and a clock stepped back to 1970 holds counting and publishing."""
    from edgefer import config as configmod
    from edgefer.service import Service

    cfg = configmod.parse(
        f"state_dir = '{tmp_path}'\n[mqtt]\nenabled = false\n[faces]\ndetector = 'haar'\n"
        "[mood]\nwindows = ['5s', '1m']\npublish_every = '5s'\n"
    )
    svc = Service(cfg)
    t = FakeTime(T0)
    svc.clock = Clock(wall=t.wall, mono=t.mono)
    svc.gate = ClockGate(None, earliest=T0 - 86400)
    black = np.zeros((120, 160), np.uint8)

    def loop(seconds: int) -> list:
        """The loop's clock work, one frame a second; the summaries queued meanwhile."""
        before = svc.store.depth()
        for _ in range(seconds):
            t.tick(1)
            svc.follow_clock()
            svc.process(black, svc.clock.at(t.m), True)
            svc.publish_due()
        return svc.store.pending(1000)[before:]

    try:
        svc.tracker.start(T0)
        loop(20)
        with caplog.at_level(logging.WARNING, logger="edgefer"):
            t.offset += 3600
            got = loop(10)
        steps = [r for r in caplog.records if "wall clock stepped +3600.0 s" in r.getMessage()]
        assert len(steps) == 1
        clock = svc.stats(0.0)["clock"]
        assert clock["steps"] == 1 and clock["last_step"]["seconds"] == 3600.0 and clock["state"] == "ok"
        ends = [json.loads(i.payload)["end"] for i in got if i.topic.endswith("/5s")]
        assert ends[0] == clockmod.iso(T0 + 3620)  # the latest boundary at once, on the corrected clock
        minute = json.loads(next(i.payload for i in got if i.topic.endswith("/1m")))
        assert minute["frames"] >= 19  # the frames counted before the step came along

        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="edgefer"):
            t.offset -= T0  # back to 1970
            assert loop(10) == []
            st = svc.stats(0.0)
            assert st["state"] == "waiting for the clock" and "1970-01-01" in st["clock"]["waiting_for"]
            assert svc.tracker.window_row(0, 86400)[0].sum() == 0  # nothing counted in 1970
            t.offset += T0
            assert loop(6) != []
        assert sum("waiting for the clock" in r.getMessage() for r in caplog.records) == 1
        assert sum("counting and publishing resume" in r.getMessage() for r in caplog.records) == 1
    finally:
        svc.store.close()
        svc.lock.release()
