"""systemd's notification protocol (READY, WATCHDOG, STATUS, RELOADING, STOPPING).

systemd-python is used when installed; otherwise the documented datagram protocol is
spoken directly, which is a few lines and has no dependency. Outside systemd (no
``$NOTIFY_SOCKET``) every call is a cheap no-op.
"""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    def __init__(self) -> None:
        self.address = os.environ.get("NOTIFY_SOCKET") or None
        self.watchdog_usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        self._sock: socket.socket | None = None
        self._last_watchdog = 0.0

    @property
    def enabled(self) -> bool:
        return self.address is not None

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
