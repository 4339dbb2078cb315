"""Which queued summaries the broker has acknowledged: the outbox's in-flight window.

A summary leaves the store only when the broker acknowledges it, so this bookkeeping is what
keeps delivery at least once. It is kept apart from paho: the network thread only records
message ids (:meth:`Inflight.acked`), and the service loop settles them against what it
sent, with times passed in, so every rule here is tested without a broker.
"""

from __future__ import annotations

import threading
from collections import deque

#: an acknowledgement whose message id never turns up as a tracked send (stats, discovery,
#: announcements are not tracked) is forgotten after this many seconds
FORGET_ACK_AFTER = 60.0


class Inflight:
    """Summaries published and not yet acknowledged, at most ``limit`` at a time.

    Two races are handled here. An acknowledgement can arrive before ``publish()`` has
    returned the message id to the loop, so unmatched acks are kept (``early``) until the id
    is known. And an ack that never comes on a live connection (a broker restart between
    two reconnects can lose it) would stall the queue, so a send older than ``ack_timeout``
    is dropped from the window and its summary sent again (at least once, never lost).
    """

    def __init__(self, limit: int, ack_timeout: float = 60.0) -> None:
        self.limit = limit
        self.ack_timeout = ack_timeout
        self._lock = threading.Lock()  # between paho's network thread and the loop
        self._acked: deque[int] = deque()
        #: message id -> (summary key, time sent)
        self._sent: dict[int, tuple[str, float]] = {}
        #: acknowledged message ids not yet matched to a send -> when the ack was seen
        self._early: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self._sent)

    @property
    def full(self) -> bool:
        return len(self._sent) >= self.limit

    def busy(self) -> set[str]:
        """The keys of the summaries in flight (not to be sent a second time meanwhile)."""
        return {key for key, _ in self._sent.values()}

    def acked(self, mid: int) -> None:
        """Record an acknowledgement; called from paho's network thread, so it only records
        (no lock may be held around ``publish()``: paho calls back with its own lock held)."""
        with self._lock:
            self._acked.append(mid)

    def sent(self, mid: int, key: str, now: float, *, unacknowledged: bool = False) -> None:
        """A summary was published as message ``mid``; ``unacknowledged`` (QoS 0: the broker
        never answers) counts it as delivered at the next :meth:`settle`."""
        self._sent[mid] = (key, now)
        if unacknowledged:
            self._early[mid] = now

    def settle(self, now: float) -> list[str]:
        """The keys of the summaries acknowledged since the last call, in the order matched."""
        with self._lock:
            acked = list(self._acked)
            self._acked.clear()
        self._early.update(dict.fromkeys(acked, now))
        delivered = []
        for mid, seen in list(self._early.items()):
            entry = self._sent.pop(mid, None)
            if entry is not None:
                del self._early[mid]
                delivered.append(entry[0])
            elif now - seen > FORGET_ACK_AFTER:
                del self._early[mid]
        return delivered

    def expire(self, now: float) -> list[str]:
        """Give up waiting for acks older than ``ack_timeout`` (call on a live connection
        only: while disconnected, paho re-sends in-flight messages itself); returns the keys
        freed to be sent again."""
        late = [mid for mid, (_, sent_at) in self._sent.items() if now - sent_at > self.ack_timeout]
        return [self._sent.pop(mid)[0] for mid in late]
