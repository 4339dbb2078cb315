"""Faults the daemon must survive and report: TLS and auth at the broker, a camera that
stalls or is unplugged, frames that make no sense. (A clock that jumps: tests/test_clock.py
and tests/test_pi_faults.py.)"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from edgefer import config as configmod
from edgefer.service import Service
from tests.conftest import REPO, Broker
from tests.daemon_helpers import Daemon, config_text, make_clip

pytestmark = pytest.mark.daemon


@pytest.fixture(scope="module")
def clip(fer2013: Path, tmp_path_factory: pytest.TempPathFactory):
    return make_clip(fer2013, tmp_path_factory.mktemp("clip"), per_class=4, repeat=2)


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test CA, a broker certificate for 'localhost' only, and an unrelated CA."""
    d = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "other"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=edgefer test {ca}",
                "-keyout", f"{ca}.key", "-out", f"{ca}.crt", cwd=d)  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key",
            "-out", "server.csr", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", "server.crt", cwd=d)  # fmt: skip
    for f in d.iterdir():
        f.chmod(0o644)
    return d


def tls_broker(tmp_path: Path, pki: Path) -> Broker:
    return Broker(tmp_path, f"cafile {pki / 'ca.crt'}\ncertfile {pki / 'server.crt'}\nkeyfile {pki / 'server.key'}\n")


@pytest.mark.parametrize(
    ("host", "ca", "expect"),
    [
        ("localhost", "ca.crt", None),
        ("localhost", "other.crt", "certificate"),
        ("127.0.0.1", "ca.crt", "IP address mismatch"),  # the certificate names localhost only
    ],
)
def test_tls_trusts_only_the_right_ca_and_hostname(clip, pki: Path, tmp_path: Path, host, ca, expect) -> None:
    """With the broker's CA and its name, summaries go through TLS: the broker acknowledges
    at least one (``delivered`` counts acknowledged summaries, so a connection that never
    carried one fails). With another CA, or a name the certificate lacks, the handshake is
    refused, the error says why, and the pipeline keeps running."""
    frames, _ = clip
    broker = tls_broker(tmp_path, pki).start()
    state = tmp_path / "state"
    cfg = config_text(broker.port, state, str(frames), **{
        "source.loop": "true", "mqtt.host": f'"{host}"', "mqtt.tls": "true", "mqtt.ca_file": f'"{pki / ca}"',
        "mood.windows": '["5s", "1m"]', "mood.publish_every": '"5s"',
    })  # fmt: skip
    d = Daemon(tmp_path, cfg).start()
    try:
        if expect is None:
            d.wait_status(state, lambda s: s["output"]["connected"] and s["output"]["delivered"] >= 1, 40)
        else:
            st = d.wait_status(state, lambda s: s["output"]["state"] == "unreachable", 30)
            assert "TLS handshake" in st["output"]["error"] and expect in st["output"]["error"]
            assert st["frames"] > 0  # the pipeline keeps running without the broker
    finally:
        assert d.stop() == 0
        broker.stop()


def test_auth_refused_then_accepted_with_the_credential(clip, tmp_path: Path) -> None:
    frames, _ = clip
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "edgefer", "s3cret"], check=True, capture_output=True)
    pw.chmod(0o644)
    broker = Broker(tmp_path, f"password_file {pw}\n").start()
    broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    broker.stop()
    broker.start()
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt_password").write_text("wrong\n")
    state = tmp_path / "state"
    cfg = config_text(broker.port, state, str(frames), **{"source.loop": "true", "mqtt.username": '"edgefer"'})
    d = Daemon(tmp_path, cfg, env={"CREDENTIALS_DIRECTORY": str(creds)}).start()
    try:
        st = d.wait_status(state, lambda s: s["output"]["state"] == "auth refused", 30)
        assert "refused" in st["output"]["error"] and "s3cret" not in d.logs()
    finally:
        d.stop()
    (creds / "mqtt_password").write_text("s3cret\n")
    d = Daemon(tmp_path, cfg, env={"CREDENTIALS_DIRECTORY": str(creds)}, name="right").start()
    try:
        d.wait_status(state, lambda s: s["output"]["connected"], 30)
    finally:
        d.stop()
        broker.stop()
    assert "s3cret" not in d.logs() and "s3cret" not in (state / "status.json").read_text()


def fake_camera_env(frames: Path, control: Path) -> dict:
    return {
        "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "fakes"), str(REPO)]),
        "EDGEFER_FAKE_CAMERA_FRAMES": str(frames),
        "EDGEFER_FAKE_CAMERA_CONTROL": str(control),
    }


def test_camera_stall_and_unplug_are_noticed_and_recovered(broker: Broker, clip, tmp_path: Path) -> None:
    frames, _ = clip
    control = tmp_path / "camera"
    control.write_text("ok")
    state = tmp_path / "state"
    cfg = config_text(broker.port, state, "0", **{
        "source.kind": '"picamera2"', "source.stall_seconds": "1.5", "source.retry_initial_seconds": "0.5",
        "source.retry_max_seconds": "1.0", "source.fps": "20.0",
    })  # fmt: skip
    d = Daemon(tmp_path, cfg, env=fake_camera_env(frames, control)).start()
    try:
        st = d.wait_status(state, lambda s: s["frames"] > 10 and s["faces"] > 0, 30)
        assert st["source"]["name"] == "picamera2:0"
        control.write_text("stall")
        st = d.wait_status(state, lambda s: s["source"]["restarts"] >= 1, 20)
        assert "no frame for" in (st["source"]["last_error"] or "")
        control.write_text("unplug")
        d.wait_status(state, lambda s: s["source"]["state"].startswith("retrying"), 20)
        control.write_text("ok")
        n = d.status(state)["frames"]
        d.wait_status(state, lambda s: s["source"]["state"] == "running" and s["frames"] > n + 10, 30)
    finally:
        assert d.stop() == 0
    assert "no frame for 1.5s (capture timed out)" in d.logs()  # the capture's own timeout noticed it


def test_bad_frames_are_counted_not_fatal(tmp_path: Path) -> None:
    cfg = configmod.parse(f"state_dir = '{tmp_path}'\n[mqtt]\nenabled = false\n[faces]\ndetector = 'haar'\n")
    svc = Service(cfg)
    t = time.time()
    assert svc.process(np.zeros((480, 640), np.uint8), t, True) == 0  # all black: no face, no error
    assert svc.process(np.zeros((480, 640), np.float32), t, True) == 0
    assert svc.process(np.zeros((480, 640, 3), np.uint8), t, True) == 0
    assert svc.process(np.zeros((4, 4), np.uint8), t, True) == 0
    assert svc.counters.bad_frames == 3
    svc.store.close()
