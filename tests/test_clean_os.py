"""The installer on a clean Debian, for real: what a new Pi owner types, in a chroot.

Each run unpacks a fresh minimal Debian (Bookworm, the base of Raspberry Pi OS, and Trixie),
clones this checkout into a user's home and runs ``sudo deploy/install.sh --no-start`` as
docs/install.md says. Then the installed ``edgefer check-config`` and the installed daemon, as
the service account, on a short clip of real photographed heads; its counts must equal the same
clip's counts from this checkout on the host. Then a second run (which changes nothing),
uninstall and purge.

The arm64 case (a Pi's CPU under qemu-user-static) takes 3-7 minutes, needs qemu and binfmt_misc, and runs only when
asked: ``tests/clean-os-arm64.sh`` (``EDGEFER_ARM64_CPU=cortex-a72``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.clean_os import clean_debian, progress
from tests.daemon_helpers import analysis_args, make_real_clip, write_video

pytestmark = [pytest.mark.slow, pytest.mark.deploy]

EXAMPLE_CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "edgefer.toml"
CONF = "/etc/edgefer/edgefer.toml"  # where the installer puts it
ARM64_CPU = os.environ.get("EDGEFER_ARM64_CPU", "")


def need_root_and_debootstrap() -> None:
    if os.geteuid() != 0:
        pytest.skip("a chroot needs root")
    if shutil.which("debootstrap") is None:
        pytest.fail("debootstrap is not installed (apt-get install debootstrap); .ci/run installs it")


def summaries(stdout: str) -> list[dict]:
    return [json.loads(ln) for ln in stdout.splitlines() if ln.startswith("{")]


def final_counts(stdout: str) -> dict:
    """What the longest window said last: the figures a subscriber would read."""
    rows = [s["payload"] for s in summaries(stdout) if "/mood/" in s["topic"]]
    assert rows, f"no mood summaries in:\n{stdout[-2000:]}"
    last = max(rows, key=lambda p: (p["window_seconds"], p["seq"]))
    return {k: last[k] for k in ("counts", "faces", "uncertain", "frames", "frames_with_faces")}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    frames = make_real_clip(tmp_path_factory.mktemp("frames"), per_class=3, hold=4)
    # lossless: MJPEG decodes differently in the last bits on ARM and x86, and that is not
    # what this compares
    return write_video(frames, tmp_path_factory.mktemp("clip") / "clip.mkv", fourcc="FFV1")


def host_counts(clip: Path, tmp_path: Path) -> dict:
    """The same clip through this checkout with the example config the installer copies."""
    args = analysis_args(EXAMPLE_CONFIG, clip, tmp_path / "host-state")
    done = subprocess.run([sys.executable, "-m", "edgefer.cli", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return final_counts(done.stdout)


def lines(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-6000:]}"


def paths_present(chroot, paths: list[str]) -> set[str]:
    return {p for p in paths if chroot.path(p).exists() or chroot.path(p).is_symlink()}


def record(chroot, seconds: float) -> None:
    """What docs/install.md records of each run: OS, Python, what pip chose, install time."""
    os_name = re.search(r'PRETTY_NAME="([^"]+)"', chroot.path("/etc/os-release").read_text())
    venv = "/opt/edgefer/venv/bin/python"
    py = chroot.run_root(f"{venv} -c 'import platform; print(platform.python_version(), platform.machine())'")
    freeze = chroot.run_root(f"{venv} -m pip freeze --exclude-editable 2>/dev/null").stdout.split()
    chosen = [p for p in freeze if p.split("==")[0].lower() in CHOSEN]
    progress(
        f"record: {os_name.group(1) if os_name else '?'}; Python {py.stdout.strip()}; "
        f"install {seconds:.0f} s; pip chose {', '.join(chosen)}"
    )


CHOSEN = {"edgefer", "numpy", "opencv-python-headless", "ai-edge-litert", "paho-mqtt", "psutil"}

INSTALLED = [
    "/opt/edgefer/venv/bin/edgefer",
    "/opt/edgefer/install-stamp",
    "/opt/edgefer/constraints.txt",
    "/usr/local/bin/edgefer",
    "/etc/edgefer/edgefer.toml",
    "/etc/edgefer/mqtt_password",
    "/var/lib/edgefer",
    "/etc/systemd/system/edgefer.service",
    "/etc/systemd/system/multi-user.target.wants/edgefer.service",
]
KEPT = {"/etc/edgefer/edgefer.toml", "/etc/edgefer/mqtt_password", "/var/lib/edgefer"}


def install_and_run(suite: str, clip: Path, tmp_path: Path, arch: str | None = None, cpu: str | None = None) -> None:
    need_root_and_debootstrap()
    expected = host_counts(clip, tmp_path)
    with clean_debian(suite, tmp_path, arch=arch, qemu_cpu=cpu) as chroot:
        repo = chroot.clone()
        shutil.copy2(clip, chroot.path("/tmp/clip.mkv"))

        # 1. as docs/install.md says, from the user's clone
        progress(f"{suite} {chroot.arch}: sudo deploy/install.sh --no-start")
        began = time.monotonic()
        first = chroot.as_admin("deploy/install.sh --no-start", repo)
        took = time.monotonic() - began
        assert first.returncode == 0, lines(first)
        out = first.stdout
        assert "[not run: systemd is not running] systemctl" in out, lines(first)
        assert re.search(r"^\+ .*-m venv --system-site-packages /opt/edgefer/venv$", out, re.M), lines(first)
        assert paths_present(chroot, INSTALLED) == set(INSTALLED)
        owner = chroot.run_root("stat -c '%U:%G %a' /var/lib/edgefer /etc/edgefer/mqtt_password")
        assert owner.stdout.split("\n")[:2] == ["edgefer:edgefer 750", "root:root 600"], owner.stdout
        pins = chroot.path("/opt/edgefer/constraints.txt").read_text()
        assert ("numpy<2" in pins) == (suite == "bookworm"), pins

        record(chroot, took)

        # 2. the installed check-config loads the model from inside the installed package
        check = chroot.as_admin("edgefer check-config /etc/edgefer/edgefer.toml")
        assert check.returncode == 0, lines(check)
        assert "ok: /etc/edgefer/edgefer.toml" in check.stderr
        assert re.search(r"model /opt/edgefer/venv/lib/python3\.\d+/site-packages/edgefer/models/", check.stderr)

        # 3. the installed daemon, as the service account, on a clip: the host's counts
        progress(f"{suite} {chroot.arch}: the installed daemon on a {expected['frames']}-frame clip")
        run = chroot.run_as(
            "edgefer",
            " ".join(["/opt/edgefer/venv/bin/edgefer", *analysis_args(CONF, "/tmp/clip.mkv", "/var/lib/edgefer")]),
        )
        assert run.returncode == 0, lines(run)
        got = final_counts(run.stdout)
        assert got["faces"] > 0, got
        assert got == expected, f"installed daemon {got} != host {expected}"
        progress(f"{suite} {chroot.arch}: counts equal the host's: {got}")

        # 4. lean: plotting is an extra, and the command that needs it says how to get it
        report = chroot.as_admin("edgefer report --state-dir /var/lib/edgefer")
        assert report.returncode == 2 and "edgefer[report]" in report.stderr, lines(report)

        # 5. a second run changes nothing but re-validating the config
        again = chroot.as_admin("deploy/install.sh --no-start", repo)
        assert again.returncode == 0, lines(again)
        changes = [ln for ln in again.stdout.splitlines() if ln.startswith("+ ") and "check-config" not in ln]
        assert changes == [], lines(again)

        if suite != "bookworm":
            # mediapipe 0.10.18 and numpy<2 have no wheels for this Python: refused up front
            mp = chroot.as_admin("deploy/install.sh --no-start --extras mediapipe", repo)
            assert mp.returncode != 0, lines(mp)
            assert "mediapipe extra cannot be installed with Python 3.1" in mp.stderr, lines(mp)
            assert "pip install" not in mp.stdout, lines(mp)

        # 6. uninstall keeps the operator's config and data; purge removes everything
        gone = chroot.as_admin("deploy/install.sh --uninstall", repo)
        assert gone.returncode == 0, lines(gone)
        assert paths_present(chroot, INSTALLED) == KEPT
        purge = chroot.as_admin("deploy/install.sh --uninstall --purge", repo)
        assert purge.returncode == 0, lines(purge)
        assert paths_present(chroot, INSTALLED) == set()
        assert chroot.run_root("getent passwd edgefer").returncode != 0


@pytest.mark.parametrize("suite", ["bookworm", "trixie"])
def test_installer_on_a_clean_debian(suite: str, clip: Path, tmp_path: Path) -> None:
    install_and_run(suite, clip, tmp_path)


@pytest.mark.skipif(not ARM64_CPU, reason="arm64 under emulation runs on request: tests/clean-os-arm64.sh")
def test_installer_on_a_clean_debian_arm64(clip: Path, tmp_path: Path) -> None:
    install_and_run(os.environ.get("EDGEFER_ARM64_SUITE", "bookworm"), clip, tmp_path, arch="arm64", cpu=ARM64_CPU)
