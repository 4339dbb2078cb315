"""Configuration: unknown keys refused with their line, bad values named, defaults documented."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tomllib

import pytest

from edgefer import config
from edgefer.config import ConfigError
from tests.conftest import REPO


def test_defaults_validate_and_fill_derived_values(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    cfg = config.parse("device_id = 'kitchen'")
    assert cfg.state_dir == str(tmp_path / "state")
    assert cfg.mqtt.client_id == "edgefer-kitchen"
    assert cfg.mood.window_seconds == [60, 900, 3600, 86400]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[mqtt]\nhost = 'x'\nhots = 'y'\n", "f.toml:3: mqtt.hots: unknown key"),
        ("device_id = 'a'\n[nope]\na = 1\n", "f.toml:2: nope: unknown key"),
        ("[faces]\n\ndetect_scale = 3\n", "f.toml:3: faces.detect_scale: detect_scale must lie in [0.1, 1]"),
        ("[source]\nfps = 'fast'\n", "f.toml:2: source.fps: expected a number"),
        ("[source]\nkind = 'webcam'\n", "f.toml:2: source.kind: kind must be one of"),
        ("[mqtt]\nport = 70000\n", "f.toml:2: mqtt.port: port must lie in 1..65535"),
        ("[classifier]\nflip_margin = 1.5\n", "f.toml:2: classifier.flip_margin: flip_margin must lie in [0, 1]"),
        ("[mqtt]\nport = true\n", "f.toml:2: mqtt.port: expected an integer"),
        ("[mood]\nwindows = ['1m', 'soon']\n", "f.toml:2: mood.windows: expected a duration"),
        ("[mood]\nwindows = ['1m', '60s']\n", "f.toml:2: mood.windows: windows must be distinct"),
        ("device_id = 'living room'\n", "f.toml:1: device_id: device_id may hold only"),
        ("[mqtt]\nca_file = '/nonexistent/ca.pem'\n", "f.toml:2: mqtt.ca_file: no such file"),
        ("[mqtt\n", "f.toml: not valid TOML"),
        ("source = 3\n", "f.toml:1: source: expected a [source] table"),
    ],
)
def test_errors_name_file_line_key_and_reason(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config.parse(text, "f.toml")
    assert str(exc.value).startswith(expected), str(exc.value)


def test_example_file_documents_every_key_with_its_default() -> None:
    """deploy/edgefer.toml is the reference: every key, every default, nothing extra."""
    example = tomllib.loads((REPO / "deploy" / "edgefer.toml").read_text())
    defaults = dataclasses.asdict(config.Config())
    assert example == defaults


def test_overrides_apply_and_are_validated() -> None:
    cfg = config.apply_overrides(config.parse(""), {"mqtt.port": 1884, "device_id": "porch", "mqtt.host": None})
    assert (cfg.mqtt.port, cfg.device_id, cfg.mqtt.host) == (1884, "porch", "localhost")
    with pytest.raises(ConfigError, match=r"mqtt\.port"):
        config.apply_overrides(cfg, {"mqtt.port": 0})


def test_durations() -> None:
    assert [config.parse_duration(v) for v in (90, "90", "15m", "1h", "24h", "7d")] == [
        90,
        90,
        900,
        3600,
        86400,
        604800,
    ]
    for bad in (0, -1, "1w", "", True, "1.5h"):
        with pytest.raises(ValueError):
            config.parse_duration(bad)


def test_check_config_command(tmp_path) -> None:
    good = tmp_path / "good.toml"
    good.write_text("device_id = 'hall'\n[source]\nkind = 'demo'\n")
    bad = tmp_path / "bad.toml"
    bad.write_text("[source]\nkind = 'demo'\nfsp = 10\n")
    run = [sys.executable, "-m", "edgefer.cli", "check-config"]
    ok = subprocess.run([*run, str(good)], capture_output=True, text=True)
    assert ok.returncode == 0 and '"device_id": "hall"' in ok.stdout
    no = subprocess.run([*run, str(bad)], capture_output=True, text=True)
    assert no.returncode == 1 and f"{bad}:3: source.fsp: unknown key" in no.stderr
