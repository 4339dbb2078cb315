"""Telling that a second daemon shares this one's identity on the broker.

Two daemons publishing as one device would mix their summaries silently, so each announces
its instance id (retained, on the device's instance topic) and watches for others, and a
client id handed back and forth between two clients shows up as session takeovers or as
connections dropped right after they open. These rules are kept apart from paho: the
callbacks pass in what happened and the time, and get back a :class:`Verdict` to show, so
they are tested without a broker.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("edgefer.publish")

#: the MQTT v5 reason code for "a second client with our id took the session over"
SESSION_TAKEN_OVER = 142
#: A daemon announces its instance id (retained) on connect and again this often, so a second
#: daemon with the same device id is seen again and again, live ...
ANNOUNCE_EVERY = 10.0
#: ... and another instance id becomes a conflict only when its sightings go on for at least
#: CONFIRM_AFTER seconds, none more than FORGET_AFTER after the one before, as a second
#: daemon's announcements do: a single message, which any client of the broker can publish,
#: or a burst of them proves nothing, and neither does the id a subscription finds retained
#: on the first connect (a daemon that was killed leaves its id behind).
CONFIRM_AFTER = ANNOUNCE_EVERY / 2
FORGET_AFTER = 3 * ANNOUNCE_EVERY
#: foreign instance ids remembered at once (a flood of made-up ids must not grow memory)
SIGHTINGS_MAX = 16
#: a connection the broker closes within this many seconds counts as dropped on opening ...
SHORT_LIVED = 5.0
#: ... and this many such drops in a row mean another client uses our client id (MQTT 3
#: brokers close the older connection without a reason code)
SHORT_LIVED_MAX = 3


@dataclass(frozen=True)
class Verdict:
    """What the output shows after an event: its state, the error, and the log line."""

    state: str
    error: str
    level: int
    note: str


class SessionGuard:
    """The counters and rules behind the output's ``conflict`` state."""

    def __init__(self, client_id: str, instance: str, broker: str) -> None:
        self.client_id = client_id
        self.instance = instance
        self.broker = broker
        self.connects = 0
        self.takeovers = 0
        self.conflicts = 0
        self.short_lived = 0
        self.connected_at = 0.0
        #: foreign instance id -> times of its first and latest sighting
        self.sightings: dict[str, tuple[float, float]] = {}

    @property
    def in_conflict(self) -> bool:
        """A conflict stays visible across reconnects: the other instance will be back."""
        return bool(self.takeovers or self.conflicts)

    def connected(self, now: float) -> None:
        self.connects += 1
        self.connected_at = now

    def disconnected(
        self, code: int | None, reason: str, *, was_connected: bool, stopping: bool, now: float
    ) -> Verdict | None:
        """A lost connection: a session taken over, one dropped on opening once too often, or
        plainly lost; None when there is nothing to show (stopping, or a drop still allowed)."""
        if code == SESSION_TAKEN_OVER:
            self.takeovers += 1
            error = (
                f"another client with id {self.client_id!r} took over the session "
                f"({self.takeovers} times): two daemons share one device_id or client_id"
            )
            return Verdict("conflict", error, logging.ERROR, error)
        if not was_connected or stopping:
            return None
        if now - self.connected_at < SHORT_LIVED:
            self.short_lived += 1
            if self.short_lived < SHORT_LIVED_MAX:
                return None
            self.takeovers += 1
            error = (
                f"the broker keeps dropping client id {self.client_id!r} right after connecting "
                f"({self.short_lived} times): another client probably uses the same client id"
            )
            return Verdict("conflict", error, logging.ERROR, error)
        self.short_lived = 0
        error = f"lost connection to {self.broker}: {reason}"
        return Verdict("disconnected", error, logging.WARNING, f"{error}; reconnecting")

    def announced(self, other: str | None, *, retained: bool, now: float) -> Verdict | None:
        """An instance id read from this device's instance topic. A retained id found on a
        reconnect was written after our own earlier announcement: someone is announcing now.
        On the first connect it may be a dead daemon's, and is not counted."""
        if not other or other == self.instance or (retained and self.connects < 2):
            return None
        return self.sighted(other, now)

    def sighted(self, other: str, now: float) -> Verdict | None:
        """Another instance id: a conflict once its sightings have gone on for CONFIRM_AFTER
        seconds without a gap longer than FORGET_AFTER, as a second daemon's do."""
        first, last = self.sightings.pop(other, (now, now))
        if now - last > FORGET_AFTER:
            first = now
        self.sightings[other] = (first, now)
        while len(self.sightings) > SIGHTINGS_MAX:
            del self.sightings[next(iter(self.sightings))]
        if first == now:
            log.info("instance id %s seen on this device's instance topic; a conflict if it keeps coming", other)
        if now - first < CONFIRM_AFTER:
            return None
        self.conflicts += 1
        error = f"another edgefer instance ({other}) publishes as this device; give each daemon its own device_id"
        return Verdict("conflict", error, logging.ERROR, f"{error} (seen {self.conflicts} times)")
