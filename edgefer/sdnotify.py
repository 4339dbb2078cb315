"""systemd's notification protocol (READY, WATCHDOG, STATUS, RELOADING, STOPPING).

The documented datagram protocol (sd_notify(3)) is spoken directly: it is a few lines and
needs no dependency (systemd-python is not used). Outside systemd (no ``$NOTIFY_SOCKET``)
every call is a cheap no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("edgefer")


class Notifier:
    def __init__(self) -> None:
        self.address = os.environ.get("NOTIFY_SOCKET") or None
        self.watchdog_usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        self._sock: socket.socket | None = None
        self._last_watchdog = 0.0

    def send(self, **fields: str | int) -> bool:
        """Send KEY=VALUE lines; keys are upper-cased (ready=1 -> READY=1)."""
        if not self.address:
            return False
        msg = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
        addr = self.address
        if addr.startswith("@"):
            addr = "\0" + addr[1:]
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(msg, addr)
        except OSError:
            return False
        return True

    def ready(self, status: str) -> None:
        self.send(ready=1, status=status)

    def status(self, text: str) -> None:
        self.send(status=text)

    def watchdog(self) -> None:
        """Ping at most every half-period of WatchdogSec; called from the frame loop only."""
        now = time.monotonic()
        period = self.watchdog_usec / 1e6 / 2 if self.watchdog_usec else 1.0
        if now - self._last_watchdog >= min(period, 5.0):
            self._last_watchdog = now
            self.send(watchdog=1)

    def reloading(self) -> None:
        usec = int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6)
        self.send(reloading=1, monotonic_usec=usec)

    def stopping(self) -> None:
        self.send(stopping=1)


class WatchdogGrace:
    """The watchdog policy for a source that delivers nothing, in one sentence: systemd's
    watchdog is fed for ``grace`` seconds after the last frame (or the start), then no more,
    and systemd restarts the process, which frees a camera wedged in the kernel. Retries and
    brief stalls stay inside the process; only a camera that stays dead costs a restart. The
    pings come from the service loop only, so a hung loop stops them at once, whatever the
    grace."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        #: set once the source has been without frames for longer than the grace (logged once)
        self.spent = False

    def ping(self, source: str, down: float, grace: float) -> bool:
        """Feed the watchdog unless ``source`` has been ``down`` seconds, past the grace;
        returns whether it was fed."""
        if down < grace:
            if self.spent:
                self.spent = False
                log.warning("source %s: frames again; feeding systemd's watchdog again", source)
            self.notifier.watchdog()
            return True
        if not self.spent:
            self.spent = True
            then = "systemd restarts the daemon" if self.notifier.watchdog_usec else "no watchdog is set to act on it"
            log.error(
                "source %s: no frame for %.0f s (source.watchdog_grace_seconds = %g): no longer feeding "
                "systemd's watchdog; %s",
                source,
                down,
                grace,
                then,
            )
        return False
