"""Outputs: MQTT (paho-mqtt 2) and standard output, behind one small interface.

Summaries never go to the broker directly: the service puts them in the store's outbox
and :meth:`pump` sends the oldest ones, a few in flight at a time, deleting each only when
the broker acknowledges it (the bookkeeping: ``edgefer.acks``). Order is kept and nothing
is lost within the outbox bound; paho re-sends in-flight messages itself after a
reconnect, and a crash can leave the in-flight window (5 summaries) acknowledged but not
yet deleted, so delivery is at least once: every summary carries a ``key`` for consumers
to drop repeats. A second daemon with the same identity is told by the rules in
``edgefer.conflicts``; the paho callbacks here only pass events to those two and show what
they decide.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

from edgefer.acks import Inflight
from edgefer.config import MqttConfig
from edgefer.conflicts import (  # noqa: F401 (the rules' constants, named where they are used)
    ANNOUNCE_EVERY,
    CONFIRM_AFTER,
    FORGET_AFTER,
    SIGHTINGS_MAX,
    SessionGuard,
    Verdict,
)
from edgefer.discovery import parse_ha_status, parse_instance, topics
from edgefer.store import Store

log = logging.getLogger(__name__)

AUTH_CODES = {
    134: "bad user name or password",
    135: "not authorized",
    4: "bad user name or password",
    5: "not authorized",
}


class Output(Protocol):
    def start(self) -> None: ...
    def pump(self, store: Store) -> int: ...
    def publish_live(self, topic: str, payload: dict | str, *, retain: bool = False) -> bool: ...
    def take_ha_online(self) -> bool: ...
    def status(self) -> dict[str, Any]: ...
    def stop(self) -> None: ...


def read_password(cfg: MqttConfig) -> str | None:
    """The MQTT password from the systemd credential or a file; never from the config."""
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    candidates = [Path(creds) / cfg.password_credential] if creds and cfg.password_credential else []
    if cfg.password_file:
        candidates.append(Path(cfg.password_file))
    for path in candidates:
        try:
            return path.read_text().strip() or None
        except OSError:
            continue
    return None


class StdoutOutput:
    """JSON lines on standard output: the no-broker default and a pipe-friendly output."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stdout
        self.sent = 0
        self.last_publish: float | None = None

    def start(self) -> None:
        pass

    def pump(self, store: Store) -> int:
        items = store.pending(100)
        for it in items:
            self.stream.write(json.dumps({"topic": it.topic, "payload": json.loads(it.payload)}) + "\n")
            store.delivered(it.key)
        if items:
            self.stream.flush()
            self.sent += len(items)
            self.last_publish = time.time()
        return len(items)

    def publish_live(self, topic: str, payload: dict | str, *, retain: bool = False) -> bool:
        return True

    def take_ha_online(self) -> bool:
        return False

    def status(self) -> dict[str, Any]:
        return {"kind": "stdout", "connected": True, "delivered": self.sent, "last_publish": self.last_publish}

    def stop(self) -> None:
        self.stream.flush()


class MqttOutput:
    """paho-mqtt client with availability, an ordered outbox pump and HA status intake."""

    def __init__(
        self,
        cfg: MqttConfig,
        device: str,
        *,
        ha_status_topic: str | None = None,
        inflight: int = 5,
        instance: str | None = None,
    ) -> None:
        import paho.mqtt.client as mqtt

        self.cfg = cfg
        self.topics = topics(cfg.prefix, device)
        self.ha_status_topic = ha_status_topic
        self.inflight_max = inflight
        self.inflight = Inflight(inflight)
        self._lock = threading.Lock()
        self._ha_online = False
        self.connected = False
        self.state = "connecting"
        self.error: str | None = None
        self.delivered = 0
        self.instance = instance or uuid.uuid4().hex[:12]
        self.guard = SessionGuard(cfg.client_id, self.instance, f"{cfg.host}:{cfg.port}")
        self._announced = 0.0
        #: the clock instance-id sightings are timed on (replaceable, for the rules' tests)
        self._mono = time.monotonic
        self.instance_topic = self.topics["instance"]
        self.last_publish: float | None = None
        c = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id,
            protocol=mqtt.MQTTv5,
        )
        c.reconnect_delay_set(1, 60)
        c.max_inflight_messages_set(max(inflight, 20))
        if cfg.username:
            c.username_pw_set(cfg.username, read_password(cfg))
        if cfg.tls:
            c.tls_set_context(self._ssl_context())
        c.will_set(self.topics["available"], "offline", qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        c.on_connect_fail = self._on_connect_fail
        self.client = c
        self._probing = False
        self._stopping = False

    # The conflict rules' counters, kept by the guard and read as the output's own.

    @property
    def connects(self) -> int:
        """Connections the broker accepted (from the second on, a retained id counts)."""
        return self.guard.connects

    @connects.setter
    def connects(self, n: int) -> None:
        self.guard.connects = n

    @property
    def takeovers(self) -> int:
        return self.guard.takeovers

    @property
    def conflicts(self) -> int:
        return self.guard.conflicts

    @property
    def _sightings(self) -> dict[str, tuple[float, float]]:
        return self.guard.sightings

    def _ssl_context(self) -> ssl.SSLContext:
        """One TLS context for paho and for the failure probe, so both judge alike."""
        ctx = ssl.create_default_context(cafile=self.cfg.ca_file or None)
        if self.cfg.cert_file:
            ctx.load_cert_chain(self.cfg.cert_file, self.cfg.key_file or None)
        if self.cfg.tls_insecure:
            ctx.check_hostname = False
        return ctx

    def probe(self) -> str:
        """Why a connection fails, in words: paho only reports that it did."""
        host, port = self.cfg.host, self.cfg.port
        try:
            sock = socket.create_connection((host, port), timeout=5)
        except OSError as exc:
            return f"cannot reach broker {host}:{port}: {exc.strerror or exc}"
        with sock:
            if self.cfg.tls:
                try:
                    self._ssl_context().wrap_socket(sock, server_hostname=host).close()
                except (ssl.SSLError, ssl.CertificateError, OSError) as exc:
                    return f"TLS handshake with {host}:{port} failed: {getattr(exc, 'verify_message', None) or exc}"
        return f"connection to broker {host}:{port} failed"

    def _on_connect_fail(self, client, userdata) -> None:
        self.connected = False
        if self._probing:
            return
        self._probing = True

        def run() -> None:
            try:
                msg = self.probe()
                if msg != self.error:
                    log.error("%s; retrying with backoff", msg)
                self.state, self.error = "unreachable", msg
            finally:
                self._probing = False

        threading.Thread(target=run, name="edgefer-mqtt-probe", daemon=True).start()

    # -- callbacks (paho's network thread) ---------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            code = getattr(reason_code, "value", None)
            self.state = "auth refused" if code in AUTH_CODES else "refused"
            self.error = f"broker {self.cfg.host}:{self.cfg.port} refused the connection: {reason_code}"
            log.error("%s; retrying with backoff", self.error)
            return
        self.connected = True
        self.guard.connected(time.monotonic())
        self.state = "connected"
        self.error = self.error if self.guard.in_conflict else None
        log.info("connected to %s:%d as %s", self.cfg.host, self.cfg.port, self.cfg.client_id)
        client.publish(self.topics["available"], "online", qos=1, retain=True)
        # Two daemons publishing as one device would mix their summaries silently. Each
        # announces its instance id (kept in its state directory, so a restart keeps it);
        # any other id on the topic means another daemon runs with this device id.
        client.subscribe(self.instance_topic, qos=1)
        client.publish(self.instance_topic, self.instance, qos=1, retain=True)
        self._announced = self._mono()
        if self.ha_status_topic:
            client.subscribe(self.ha_status_topic, qos=1)
        with self._lock:
            self._ha_online = True  # (re)send discovery after every connect

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self.connected
        self.connected = False
        verdict = self.guard.disconnected(
            getattr(reason_code, "value", None),
            str(reason_code),
            was_connected=was,
            stopping=self._stopping,
            now=time.monotonic(),
        )
        self._show(verdict)

    def _show(self, verdict: Verdict | None) -> None:
        if verdict is not None:
            self.state, self.error = verdict.state, verdict.error
            log.log(verdict.level, verdict.note)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self.inflight.acked(mid)

    def _on_message(self, client, userdata, msg) -> None:
        if msg.topic == self.instance_topic:
            other = parse_instance(msg.payload)
            self._show(self.guard.announced(other, retained=bool(msg.retain), now=self._mono()))
            return
        if msg.topic != self.ha_status_topic:
            return
        if parse_ha_status(msg.payload) == "online":
            with self._lock:
                self._ha_online = True

    # -- main thread -------------------------------------------------------------------

    def start(self) -> None:
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive)
        self.client.loop_start()

    def take_ha_online(self) -> bool:
        """True once per Home Assistant (re)start or broker connect: time to send discovery."""
        with self._lock:
            flag, self._ha_online = self._ha_online, False
        return flag and self.connected

    def pump(self, store: Store) -> int:
        """Settle acknowledgements, then send the next queued summaries; returns how many went out."""
        now = time.monotonic()
        for key in self.inflight.settle(now):
            store.delivered(key)
            self.delivered += 1
            self.last_publish = time.time()
        if self.connected:
            self.inflight.expire(now)
        if self.connected and now - self._announced >= ANNOUNCE_EVERY:
            self.client.publish(self.instance_topic, self.instance, qos=1, retain=True)
            self._announced = now
        if not self.connected or self.inflight.full:
            return 0
        busy = self.inflight.busy()
        sent = 0
        for it in store.pending(self.inflight_max + len(busy)):
            if it.key in busy:
                continue
            if self.inflight.full:
                break
            info = self.client.publish(it.topic, it.payload, qos=self.cfg.qos, retain=True)
            if info.rc != 0:
                break
            self.inflight.sent(info.mid, it.key, now, unacknowledged=self.cfg.qos == 0)
            sent += 1
        return sent

    def publish_live(self, topic: str, payload: dict | str, *, retain: bool = False) -> bool:
        """Stats and discovery: sent now if connected, otherwise dropped (they are live)."""
        if not self.connected:
            return False
        body = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
        return self.client.publish(topic, body, qos=1 if retain else 0, retain=retain).rc == 0

    def status(self) -> dict[str, Any]:
        return {
            "kind": "mqtt",
            "broker": f"{self.cfg.host}:{self.cfg.port}",
            "client_id": self.cfg.client_id,
            "state": self.state,
            "connected": self.connected,
            "error": self.error,
            "connects": self.connects,
            "session_takeovers": self.takeovers,
            "instance_conflicts": self.conflicts,
            "instance": self.instance,
            "inflight": len(self.inflight),
            "delivered": self.delivered,
            "last_publish": self.last_publish,
        }

    def stop(self, timeout: float = 3.0) -> None:
        """Publish 'offline' (retained) and disconnect cleanly, waiting briefly for the ack."""
        self._stopping = True
        if self.connected:
            self.client.publish(self.instance_topic, "", qos=1, retain=True)
            info = self.client.publish(self.topics["available"], "offline", qos=1, retain=True)
            deadline = time.monotonic() + timeout
            while not info.is_published() and time.monotonic() < deadline and self.connected:
                time.sleep(0.02)
        self.client.disconnect()
        self.client.loop_stop()
        self.connected = False
        self.state = "stopped"
