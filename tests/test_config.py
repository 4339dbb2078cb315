"""Configuration: unknown keys refused with their line, bad values named, defaults documented."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from edgefer import cli, config
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
        # a range's open end, and the values a comparison lets through: inf and nan
        ("[faces]\nmin_score = 0\n", "f.toml:2: faces.min_score: min_score must lie in (0, 1)"),
        (
            "[classifier]\nmin_confidence = 1.0\n",
            "f.toml:2: classifier.min_confidence: min_confidence must lie in [0, 1)",
        ),
        ("[classifier]\ntemperature = nan\n", "f.toml:2: classifier.temperature: temperature must lie in [0.2, 5]"),
        ("[source]\nfps = inf\n", "f.toml:2: source.fps: fps must lie in (0, 120]"),
        (
            "[source]\nstall_seconds = 0.05\n",
            "f.toml:2: source.stall_seconds: stall_seconds must be a finite number of seconds from 0.1 to 600",
        ),
        ("[history]\nkeep_days = -1\n", "f.toml:2: history.keep_days: keep_days must lie in 0..3650"),
        ("[mqtt]\nqueue_max = 5\n", "f.toml:2: mqtt.queue_max: queue_max must lie in 10..1000000"),
        ("[mqtt]\nport = true\n", "f.toml:2: mqtt.port: expected an integer"),
        ("[mood]\nwindows = ['1m', 'soon']\n", "f.toml:2: mood.windows: expected a duration"),
        ("[mood]\nwindows = ['1m', '60s']\n", "f.toml:2: mood.windows: windows must be distinct"),
        ("device_id = 'living room'\n", "f.toml:1: device_id: device_id may hold only"),
        ("[mqtt]\nca_file = '/nonexistent/ca.pem'\n", "f.toml:2: mqtt.ca_file: no such file"),
        ("[mqtt]\nhost = ''\n", "f.toml:2: mqtt.host: host must name the broker"),
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


def test_overrides_derive_the_client_id_again_but_keep_a_configured_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    derived = config.parse("device_id = 'kitchen'")
    alpha = config.apply_overrides(derived, {"device_id": "alpha"})
    assert (alpha.device_id, alpha.mqtt.client_id) == ("alpha", "edgefer-alpha")
    # and again from the result (a reload applies the overrides the same way)
    assert config.apply_overrides(alpha, {"device_id": "beta"}).mqtt.client_id == "edgefer-beta"
    # the device id derived from the host name follows the same rule
    assert config.apply_overrides(config.parse(""), {"device_id": "gamma"}).mqtt.client_id == "edgefer-gamma"
    explicit = config.parse("device_id = 'kitchen'\n[mqtt]\nclient_id = 'cam-7'\n")
    assert config.apply_overrides(explicit, {"device_id": "alpha"}).mqtt.client_id == "cam-7"
    # the state directory: derived stays derived, a configured one is kept, an override wins
    assert alpha.state_dir == str(tmp_path / "state")
    fixed = config.parse(f"state_dir = '{tmp_path / 'fixed'}'")
    assert config.apply_overrides(fixed, {"device_id": "alpha"}).state_dir == str(tmp_path / "fixed")
    moved = config.apply_overrides(derived, {"state_dir": str(tmp_path / "other")})
    assert moved.state_dir == str(tmp_path / "other")


def test_mqtt_host_may_be_empty_only_without_mqtt() -> None:
    assert config.parse("[mqtt]\nenabled = false\nhost = ''\n").mqtt.host == ""


def test_state_dir_must_be_able_to_be_a_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for state in (blocker, blocker / "state"):
        with pytest.raises(ConfigError) as exc:
            config.parse(f"state_dir = '{state}'\n", "f.toml")
        assert str(exc.value) == f"f.toml:1: state_dir: {blocker} exists and is not a directory"
    assert config.parse(f"state_dir = '{tmp_path / 'new' / 'state'}'\n").state_dir == str(tmp_path / "new" / "state")


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


def test_check_config_without_a_file_fails_when_the_default_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    default = tmp_path / "etc" / "edgefer.toml"
    monkeypatch.setattr(config, "DEFAULT_PATH", default)
    assert cli.main(["check-config", "--no-model", "-q"]) == 1
    err = capsys.readouterr().err
    assert f"{default}: no such file" in err and "edgefer check-config FILE" in err
    assert "ok:" not in err
    default.parent.mkdir()
    default.write_text("device_id = 'hall'\n")
    assert cli.main(["check-config", "--no-model", "-q"]) == 0
    assert f"ok: {default}" in capsys.readouterr().err


@pytest.fixture
def run_env(tmp_path: Path) -> dict:
    """An empty config and state directory for ``edgefer run``; nothing outside tmp_path."""
    (tmp_path / "empty.toml").write_text("")
    (tmp_path / "a-file").write_text("not a directory\n")
    return {**os.environ, "HOME": str(tmp_path)}


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--mqtt-host", ""], "--mqtt-host"),
        (["--mqtt-host", "broker .lan"], "--mqtt-host"),
        (["--mqtt-port", "0"], "--mqtt-port"),
        (["--mqtt-port", "70000"], "--mqtt-port"),
        (["--device-id", "a b"], "--device-id"),
        (["--state-dir", "{tmp}/a-file"], "--state-dir"),
        (["--state-dir", "{tmp}/a-file/state"], "--state-dir"),
        (["--source", "{tmp}/missing.mp4"], "--source"),
    ],
)
def test_run_refuses_bad_options_naming_the_flag(tmp_path: Path, run_env: dict, args: list[str], flag: str) -> None:
    """A bad command-line value is one clear line naming the option and exit code 2,
    before the daemon opens anything (no broker, camera or store is involved)."""
    args = [a.format(tmp=tmp_path) for a in args]
    base = ["run", "--config", str(tmp_path / "empty.toml"), "--source", "demo", "--state-dir", str(tmp_path / "st")]
    try:
        out = subprocess.run(
            [sys.executable, "-m", "edgefer.cli", *base, *args],
            capture_output=True,
            text=True,
            env=run_env,
            cwd=tmp_path,
            timeout=60,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"edgefer run {args} was not refused: it kept running ({(exc.stderr or b'')[-300:]!r})")
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"edgefer: {flag}: "), out.stderr
    assert not (tmp_path / "st").exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # an infinite stall or retry would switch the stall watchdog off; nan compares false
        ("[source]\nstall_seconds = inf\n", "f.toml:2: source.stall_seconds: stall_seconds must be a finite number "
         "of seconds from 0.1 to 600, got inf"),
        ("[source]\n\nstall_seconds = nan\n", "f.toml:3: source.stall_seconds: stall_seconds must be a finite"),
        ("[source]\nretry_max_seconds = inf\n", "f.toml:2: source.retry_max_seconds: retry_max_seconds must be a "
         "finite number of seconds from retry_initial_seconds (1) to 3600, got inf"),
        ("[source]\nretry_initial_seconds = 5.0\nretry_max_seconds = 2.0\n",
         "f.toml:3: source.retry_max_seconds: retry_max_seconds must be a finite number of seconds from "
         "retry_initial_seconds (5)"),
        ("[source]\nretry_initial_seconds = -inf\n", "f.toml:2: source.retry_initial_seconds: retry_initial_seconds "
         "must be a finite number of seconds from 0.1 to 600, got -inf"),
        ("[mood]\npublish_every = '2d'\n", "f.toml:2: mood.publish_every: publish_every must lie between 5s and 1d, "
         "got '2d'"),
        ("[mood]\npersist_every = 99999999999\n", "f.toml:2: mood.persist_every: persist_every must lie between 1s "
         "and 1h"),
        ("[mood]\nwindows = ['1m', '8d']\n", "f.toml:2: mood.windows: windows must lie between 5s and 7d, got '8d'"),
        ("[mood]\nwindows = ['2s']\n", "f.toml:2: mood.windows: windows must lie between 5s and 7d, got '2s'"),
        ("[mqtt]\nstats_every = '2h'\n", "f.toml:2: mqtt.stats_every: stats_every must lie between 1s and 1h"),
        # 1-second buckets: gcd(7d, 11s, 13s) = 1
        ("[mood]\nwindows = ['7d', '11s']\npublish_every = '13s'\n", "f.toml:2: mood.windows: windows 11s, 7d "
         "published every 13s are counted in 1s buckets (the greatest common divisor of the windows and the "
         "interval); buckets must be at least 5s: make every window and publish_every a multiple of 5s or more"),
        ("[mood]\nwindows = ['7d', '1m']\npublish_every = '30s'\n", "f.toml:2: mood.windows: the longest window, "
         "7d, holds 20160 buckets of 30s; at most 20000 are kept"),
        ("[mqtt]\nprefix = '/abs'\n", "f.toml:2: mqtt.prefix: prefix '/abs': no '/' at the start or end and no "
         "empty level (write 'abs')"),
        ("[mqtt]\nprefix = 'a//b'\n", "f.toml:2: mqtt.prefix: prefix 'a//b': no '/' at the start or end and no "
         "empty level (write 'a/b')"),
        ("[mqtt]\nprefix = 'home/cams/'\n", "f.toml:2: mqtt.prefix: prefix 'home/cams/': no '/' at the start or end"),
        ("[mqtt]\nprefix = 'a/+/b'\n", "f.toml:2: mqtt.prefix: prefix 'a/+/b': + and # are MQTT wildcards"),
        ("[mqtt]\nprefix = ''\n", "f.toml:2: mqtt.prefix: prefix must not be empty"),
        ("[homeassistant]\nprefix = 'ha/#'\n", "f.toml:2: homeassistant.prefix: prefix 'ha/#': + and # are MQTT"),
        ("[homeassistant]\nprefix = '/homeassistant'\n", "f.toml:2: homeassistant.prefix: prefix '/homeassistant': "
         "no '/' at the start or end and no empty level (write 'homeassistant')"),
    ],
)  # fmt: skip
def test_values_that_would_switch_protection_off_are_refused(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config.parse(text, "f.toml")
    assert str(exc.value).startswith(expected), str(exc.value)


def test_the_bounds_admit_what_they_should() -> None:
    cfg = config.parse(
        "[source]\nstall_seconds = 60\nretry_initial_seconds = 0.5\nretry_max_seconds = 3600\n"
        "[mood]\nwindows = ['7d', '1h', '1m']\npublish_every = '1m'\npersist_every = '1h'\n"
        "[mqtt]\nprefix = 'home/cams-2/edge_fer'\nstats_every = '1h'\n[homeassistant]\nprefix = 'ha/discovery'\n"
    )
    assert cfg.mood.window_seconds == [60, 3600, 604800]  # 10,080 one-minute buckets
    assert config.parse("[mood]\nwindows = ['24h', '5s']\npublish_every = '5s'\n").mood.window_seconds == [5, 86400]
