"""The MQTT output's rules without a broker: the in-flight window (edgefer.acks) and telling a
second daemon with the same identity (edgefer.conflicts). Times are plain numbers."""

from __future__ import annotations

import logging
import threading

import pytest

from edgefer.acks import FORGET_ACK_AFTER, Inflight
from edgefer.conflicts import (
    ANNOUNCE_EVERY,
    CONFIRM_AFTER,
    FORGET_AFTER,
    SESSION_TAKEN_OVER,
    SHORT_LIVED,
    SHORT_LIVED_MAX,
    SIGHTINGS_MAX,
    SessionGuard,
)

# -- the in-flight window ---------------------------------------------------------------


def test_an_acknowledged_summary_is_delivered_once_and_leaves_the_window() -> None:
    w = Inflight(limit=2)
    w.sent(1, "a", now=0.0)
    w.sent(2, "b", now=0.0)
    assert w.full and w.busy() == {"a", "b"}
    w.acked(2)
    assert w.settle(1.0) == ["b"]
    assert w.settle(2.0) == []  # not twice
    assert len(w) == 1 and not w.full and w.busy() == {"a"}


def test_an_ack_that_comes_before_the_send_is_recorded_is_kept_until_it_is() -> None:
    w = Inflight(limit=5)
    w.acked(7)  # paho's thread was faster than publish() returning the id
    assert w.settle(0.0) == []
    w.sent(7, "k", now=1.0)
    assert w.settle(2.0) == ["k"]


def test_acks_of_untracked_messages_are_forgotten_after_a_while() -> None:
    w = Inflight(limit=5)
    w.acked(99)  # a stats message: never tracked
    w.settle(0.0)
    w.settle(FORGET_ACK_AFTER + 1)
    w.sent(99, "late", now=FORGET_ACK_AFTER + 2)  # the id comes round again for a summary
    assert w.settle(FORGET_ACK_AFTER + 3) == []  # the old ack is not taken for its delivery


def test_qos0_sends_count_as_delivered_at_the_next_settle() -> None:
    w = Inflight(limit=5)
    w.sent(3, "q0", now=0.0, unacknowledged=True)
    assert w.settle(0.0) == ["q0"] and len(w) == 0


def test_a_send_never_acknowledged_is_freed_to_go_again_after_the_timeout() -> None:
    w = Inflight(limit=5, ack_timeout=60.0)
    w.sent(1, "old", now=0.0)
    w.sent(2, "new", now=30.0)
    assert w.expire(60.0) == []
    assert w.expire(60.5) == ["old"] and w.busy() == {"new"}
    w.acked(1)  # the lost ack turns up after all: nothing is delivered twice
    assert w.settle(61.0) == []


def test_acks_recorded_from_another_thread_are_all_settled() -> None:
    w = Inflight(limit=1000)
    for mid in range(1000):
        w.sent(mid, f"k{mid}", now=0.0)
    threads = [
        threading.Thread(target=lambda lo=lo: [w.acked(m) for m in range(lo, lo + 250)]) for lo in range(0, 1000, 250)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(w.settle(1.0)) == sorted(f"k{m}" for m in range(1000)) and len(w) == 0


# -- session takeovers and dropped connections ------------------------------------------


def guard() -> SessionGuard:
    return SessionGuard("edgefer-cam", "aaaaaaaaaaaa", "broker:1883")


def test_a_session_taken_over_is_a_conflict_naming_the_client_id() -> None:
    g = guard()
    g.connected(0.0)
    v = g.disconnected(SESSION_TAKEN_OVER, "Session taken over", was_connected=True, stopping=False, now=100.0)
    assert v is not None and v.state == "conflict" and "'edgefer-cam'" in v.error and v.level == logging.ERROR
    assert g.takeovers == 1 and g.in_conflict


def test_connections_dropped_on_opening_become_a_conflict_on_the_third() -> None:
    g = guard()
    verdicts = []
    for i in range(SHORT_LIVED_MAX):
        g.connected(100.0 * i)
        verdicts.append(g.disconnected(None, "x", was_connected=True, stopping=False, now=100.0 * i + 1))
    assert verdicts[:-1] == [None] * (SHORT_LIVED_MAX - 1)
    assert (
        verdicts[-1] is not None
        and verdicts[-1].state == "conflict"
        and f"({SHORT_LIVED_MAX} times)" in verdicts[-1].error
    )


def test_a_connection_that_lasted_resets_the_count_and_is_plainly_lost() -> None:
    g = guard()
    g.connected(0.0)
    assert g.disconnected(None, "x", was_connected=True, stopping=False, now=1.0) is None
    g.connected(10.0)
    v = g.disconnected(7, "Unspecified error", was_connected=True, stopping=False, now=10.0 + SHORT_LIVED)
    assert v is not None and v.state == "disconnected" and v.level == logging.WARNING
    assert v.error == "lost connection to broker:1883: Unspecified error" and v.note.endswith("; reconnecting")
    assert g.short_lived == 0 and not g.in_conflict


@pytest.mark.parametrize(("was", "stopping"), [(False, False), (True, True)])
def test_a_stop_or_a_failed_connect_shows_nothing(was: bool, stopping: bool) -> None:
    g = guard()
    g.connected(0.0)
    assert g.disconnected(None, "x", was_connected=was, stopping=stopping, now=1.0) is None
    assert g.short_lived == 0


# -- instance ids seen on the device's instance topic -----------------------------------


def test_own_id_and_an_id_retained_at_the_first_connect_are_not_counted() -> None:
    g = guard()
    g.connected(0.0)
    assert g.announced("aaaaaaaaaaaa", retained=False, now=1.0) is None
    assert g.announced("bbbbbbbbbbbb", retained=True, now=2.0) is None
    assert g.announced("bbbbbbbbbbbb", retained=True, now=2.0 + 2 * CONFIRM_AFTER) is None
    assert g.announced(None, retained=False, now=3.0) is None
    assert g.sightings == {}


def test_sightings_that_go_on_are_a_conflict_a_burst_is_not() -> None:
    g = guard()
    g.connected(0.0)
    t = 100.0
    for dt in (0, 1, 1):  # a burst: 2 s in all
        t += dt
        assert g.announced("bbbbbbbbbbbb", retained=False, now=t) is None
    t += FORGET_AFTER + 1  # forgotten meanwhile: a first sighting again
    assert g.announced("bbbbbbbbbbbb", retained=False, now=t) is None
    v = g.announced("bbbbbbbbbbbb", retained=False, now=t + ANNOUNCE_EVERY)  # the next announcement
    assert v is not None and v.state == "conflict" and "bbbbbbbbbbbb" in v.error and v.note.endswith("(seen 1 times)")
    assert g.conflicts == 1 and g.in_conflict


def test_an_id_retained_on_a_reconnect_counts() -> None:
    g = guard()
    g.connected(0.0)
    g.connected(50.0)
    assert g.announced("cccccccccccc", retained=True, now=100.0) is None
    assert g.announced("cccccccccccc", retained=True, now=100.0 + CONFIRM_AFTER) is not None


def test_a_flood_of_made_up_ids_is_not_remembered_without_bound() -> None:
    g = guard()
    for i in range(100):
        g.announced(f"{i:012x}", retained=False, now=float(i))
    assert len(g.sightings) == SIGHTINGS_MAX and f"{99:012x}" in g.sightings and f"{0:012x}" not in g.sightings
