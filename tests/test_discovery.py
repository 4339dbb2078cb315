"""Home Assistant discovery payloads (pure) and the one input the daemon takes from MQTT."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from edgefer import LABELS
from edgefer.discovery import discovery_messages, parse_ha_status


def msgs() -> list[tuple[str, dict]]:
    return discovery_messages(
        device="kitchen", prefix="edgefer", ha_prefix="homeassistant", window="15m", stats_every=30, publish_every=60
    )


def test_every_entity_has_what_home_assistant_needs() -> None:
    out = msgs()
    assert {t.split("/")[-2] for t, _ in out} == {
        "positivity_ratio",
        "neutral_share",
        "dominant_emotion",
        "faces",
        "fps",
    }
    for topic, p in out:
        assert re.fullmatch(r"homeassistant/sensor/[a-zA-Z0-9_-]+/[a-zA-Z0-9_-]+/config", topic)
        assert re.fullmatch(r"[a-zA-Z0-9_-]+", p["unique_id"])
        assert p["availability_topic"] == "edgefer/kitchen/available"
        assert (p["payload_available"], p["payload_not_available"]) == ("online", "offline")
        assert p["device"]["identifiers"] == ["edgefer_kitchen"]
        assert {"name", "manufacturer", "model", "sw_version"} <= set(p["device"])
        assert p["origin"]["name"] == "edgefer"
        assert p["expire_after"] >= 60
        if p.get("device_class") == "enum":
            assert p["options"] == list(LABELS)
            assert "unit_of_measurement" not in p and "state_class" not in p
        else:
            assert p["state_class"] == "measurement" and p["unit_of_measurement"]
    by = {t.split("/")[-2]: p for t, p in out}
    assert by["positivity_ratio"]["state_topic"] == "edgefer/kitchen/mood/15m"
    assert by["fps"]["state_topic"] == "edgefer/kitchen/stats"
    assert len({p["unique_id"] for _, p in out}) == len(out)


def test_ha_status_accepts_exactly_two_words() -> None:
    assert parse_ha_status(b"online") == "online"
    assert parse_ha_status(b" OFFLINE\n") == "offline"
    assert parse_ha_status(b"onlinex") is None
    assert parse_ha_status("online") is None  # type: ignore[arg-type]


@given(st.binary(max_size=4096))
def test_ha_status_never_raises(payload: bytes) -> None:
    assert parse_ha_status(payload) in (None, "online", "offline")
