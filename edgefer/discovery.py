"""Home Assistant MQTT discovery, built by pure functions.

The retained config messages make one HA device per edgefer device with the mood
sensors of one window, the frame rate and the online state. Building them is separate
from sending them so the exact payloads are tested without a broker, and so turning
discovery off can clear precisely the topics that turning it on created.
"""

from __future__ import annotations

import re

from edgefer import LABELS, __version__


def topics(prefix: str, device: str) -> dict[str, str]:
    base = f"{prefix}/{device}"
    return {
        "available": f"{base}/available",
        "stats": f"{base}/stats",
        "mood": f"{base}/mood",
        "instance": f"{base}/instance",
    }


def _object_id(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]", "_", text)


def _entities(window: str, stats_every: int, publish_every: int) -> list[dict]:
    mood_expire = 2 * publish_every + 30
    stats_expire = 2 * stats_every + 30
    share = "{{ (value_json.%s * 100) | round(1) if value_json.%s is not none else None }}"
    return [
        {
            "key": "positivity_ratio",
            "name": f"Positivity ratio ({window})",
            "source": "mood",
            "value_template": "{{ value_json.positivity_ratio if value_json.positivity_ratio is not none else None }}",
            "state_class": "measurement",
            "unit_of_measurement": ":1",
            "icon": "mdi:emoticon-happy-outline",
            "expire_after": mood_expire,
        },
        {
            "key": "neutral_share",
            "name": f"Neutral share ({window})",
            "source": "mood",
            "value_template": share % ("neutral_share", "neutral_share"),
            "state_class": "measurement",
            "unit_of_measurement": "%",
            "icon": "mdi:emoticon-neutral-outline",
            "expire_after": mood_expire,
        },
        {
            "key": "dominant_emotion",
            "name": f"Dominant emotion ({window})",
            "source": "mood",
            "value_template": "{{ value_json.dominant if value_json.dominant else None }}",
            "device_class": "enum",
            "options": list(LABELS),
            "icon": "mdi:emoticon-outline",
            "expire_after": mood_expire,
        },
        {
            "key": "faces",
            "name": f"Faces seen ({window})",
            "source": "mood",
            "value_template": "{{ value_json.faces }}",
            "state_class": "measurement",
            "unit_of_measurement": "faces",
            "icon": "mdi:face-recognition",
            "expire_after": mood_expire,
        },
        {
            "key": "fps",
            "name": "Frame rate",
            "source": "stats",
            "value_template": "{{ value_json.fps }}",
            "state_class": "measurement",
            "unit_of_measurement": "fps",
            "icon": "mdi:camera-timer",
            "entity_category": "diagnostic",
            "expire_after": stats_expire,
        },
    ]


def discovery_messages(
    *,
    device: str,
    prefix: str,
    ha_prefix: str,
    window: str,
    stats_every: int,
    publish_every: int,
) -> list[tuple[str, dict]]:
    """(config topic, payload) for every entity of this device."""
    t = topics(prefix, device)
    node = _object_id(f"edgefer_{device}")
    dev = {
        "identifiers": [node],
        "name": f"edgefer {device}",
        "manufacturer": "edgefer",
        "model": "Facial-emotion mood monitor",
        "sw_version": __version__,
    }
    origin = {"name": "edgefer", "sw_version": __version__}
    out = []
    for e in _entities(window, stats_every, publish_every):
        key = e.pop("key")
        source = e.pop("source")
        payload = {
            **e,
            "unique_id": f"{node}_{key}",
            "default_entity_id": "sensor." + re.sub(r"[^a-z0-9_]", "_", f"{node}_{key}".lower()),
            "state_topic": f"{t['mood']}/{window}" if source == "mood" else t["stats"],
            "availability_topic": t["available"],
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": dev,
            "origin": origin,
        }
        out.append((f"{ha_prefix}/sensor/{node}/{key}/config", payload))
    return out


def parse_ha_status(payload: bytes) -> str | None:
    """'online' or 'offline' from Home Assistant's birth/will topic; None for anything else.

    This is the one place where the daemon accepts input from the broker, so it accepts
    exactly two short ASCII words and nothing more.
    """
    if not isinstance(payload, bytes | bytearray) or len(payload) > 16:
        return None
    try:
        text = bytes(payload).decode("ascii").strip().lower()
    except UnicodeDecodeError:
        return None
    return text if text in ("online", "offline") else None


def parse_instance(payload: bytes) -> str | None:
    """Another daemon's instance id (12 hex digits) from the instance topic, else None."""
    if not isinstance(payload, bytes | bytearray) or len(payload) != 12:
        return None
    try:
        text = bytes(payload).decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if all(c in "0123456789abcdef" for c in text) else None
