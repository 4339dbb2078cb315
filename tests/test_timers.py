"""The service loop's timers and status pieces, driven with plain time values."""

from __future__ import annotations

import logging

import pytest

from edgefer import config
from edgefer.sdnotify import Notifier, WatchdogGrace
from edgefer.status import Counters, Readiness
from edgefer.timers import STATUS_EVERY, LoopTimers, Periodic, RateMeter


def test_a_periodic_duty_is_due_once_per_period_counted_from_when_it_ran() -> None:
    p = Periodic(30, start=100.0)
    assert [p.due(t) for t in (100.0, 129.9, 130.0, 130.1, 159.9, 160.0)] == [
        False,
        False,
        True,
        False,
        False,
        True,
    ]


def test_a_late_loop_runs_a_missed_duty_once_and_not_once_per_missed_period() -> None:
    p = Periodic(10, start=0.0)
    assert p.due(95.0)  # nine periods late: one run
    assert not p.due(95.0) and not p.due(104.9)
    assert p.due(105.0)  # a full period after it actually ran


def test_a_new_period_counts_from_the_last_run() -> None:
    p = Periodic(60, start=0.0)
    assert p.due(60.0)
    p.period = 5
    assert not p.due(64.0) and p.due(65.0)


@pytest.mark.parametrize("period", [0, -1, float("nan")])
def test_a_periodic_duty_without_a_positive_period_is_refused(period: float) -> None:
    with pytest.raises(ValueError, match="positive period"):
        Periodic(period, 0.0)


def test_the_rate_is_the_last_complete_windows_and_steady_in_between() -> None:
    m = RateMeter(2.0, start=10.0)
    for _ in range(30):
        m.add()
    assert m.update(11.9) == 0.0  # the first window is not complete yet
    assert m.update(13.0) == pytest.approx(10.0)  # 30 frames over 3 s
    m.add(4)
    assert m.update(14.0) == pytest.approx(10.0)  # unchanged until the next window closes
    assert m.update(15.0) == pytest.approx(2.0)
    assert m.update(17.0) == 0.0  # a window without frames


def test_the_loop_timers_take_their_periods_from_the_config_and_follow_a_reload() -> None:
    cfg = config.parse('[mood]\npersist_every = "45s"\n[mqtt]\nstats_every = "2m"\n')
    timers = LoopTimers(cfg, 0.0)
    assert (timers.persist.period, timers.stats.period, timers.status.period) == (45, 120, STATUS_EVERY)
    assert timers.persist.due(45.0) and not timers.stats.due(119.0)
    timers.configure(config.parse('[mood]\npersist_every = "10s"\n[mqtt]\nstats_every = "1m"\n'))
    assert not timers.persist.due(54.0) and timers.persist.due(55.0)
    assert timers.stats.due(120.0)


def test_durations_are_parsed_once_when_the_config_is_loaded() -> None:
    cfg = config.parse('[mood]\nwindows = ["1h", "1m"]\npublish_every = "1m"\npersist_every = 20\n')
    # the cache is filled by validation, before anything reads it
    assert {"window_seconds", "publish_seconds", "persist_seconds"} <= vars(cfg.mood).keys()
    assert (cfg.mood.window_seconds, cfg.mood.publish_seconds, cfg.mood.persist_seconds) == ([60, 3600], 60, 20)
    assert "stats_seconds" in vars(cfg.mqtt) and cfg.mqtt.stats_seconds == 30
    # what the daemon compares on reload and writes back stays the config's own keys
    assert "publish_seconds" not in cfg.to_dict()["mood"]


class _Recorder(Notifier):
    """The notifier with its datagram replaced by a list: what would have been sent."""

    def __init__(self, watchdog_usec: int = 0) -> None:
        super().__init__()
        self.sent: list[dict] = []
        self.watchdog_usec = watchdog_usec
        self._last_watchdog = float("-inf")

    def send(self, **fields: str | int) -> bool:
        self.sent.append(fields)
        return True


def test_the_watchdog_is_fed_within_the_grace_then_not_and_again_when_frames_return(
    caplog: pytest.LogCaptureFixture,
) -> None:
    n = _Recorder(watchdog_usec=20_000_000)
    grace = WatchdogGrace(n)
    caplog.set_level(logging.INFO, "edgefer")
    assert grace.ping("cam", down=299.0, grace=300.0)
    assert n.sent == [{"watchdog": 1}]
    assert not grace.ping("cam", down=300.0, grace=300.0)
    assert not grace.ping("cam", down=400.0, grace=300.0)
    assert len(n.sent) == 1  # nothing sent past the grace
    assert sum("no longer feeding" in r.message for r in caplog.records) == 1  # said once
    assert "systemd restarts the daemon" in caplog.text
    n._last_watchdog = float("-inf")
    assert grace.ping("cam", down=0.0, grace=300.0) and n.sent[-1] == {"watchdog": 1}
    assert "frames again" in caplog.text and not grace.spent


def test_readiness_is_announced_once_with_the_first_reason() -> None:
    n = _Recorder()
    r = Readiness(n)
    r.announce("waiting for source: /dev/video0: cannot open video source")
    r.announce("running: opencv:0")
    assert n.sent == [{"ready": 1, "status": "waiting for source: /dev/video0: cannot open video source"}]


def test_counters_smooth_only_the_stages_a_frame_timed() -> None:
    c = Counters()
    c.add_timings({"detect": 10.0, "total": 20.0})
    c.add_timings({"detect": 20.0, "total": 30.0})
    assert c.ms_report() == {"detect": 11.0, "classify": None, "total": 21.0}
