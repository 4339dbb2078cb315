"""edgefer as pip installs it: a built wheel (not the editable checkout) in a fresh venv.

The checkout's editable install finds files that a wheel may not carry; this test sees only
what the wheel holds. It runs from a directory outside the checkout, so nothing of the
source tree is importable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edgefer.models import DEFAULT_MODEL
from tests.conftest import MODELS, REPO
from tests.daemon_helpers import analysis_args, make_clip, write_video

pytestmark = [pytest.mark.slow, pytest.mark.deploy]


def user_env() -> dict[str, str]:
    """The environment of a user's shell: nothing that points Python at this test process's
    own packages (a PYTHONPATH or PYTHONHOME left by a library earlier in the run would make
    pip see the checkout's editable install and install nothing)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"}


def run(cmd: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=timeout, env=user_env())
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the freshly built wheel and its dependencies; returns its bin/."""
    work = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(work / "dist"), str(REPO)], cwd=work)
    (wheel,) = (work / "dist").glob("edgefer-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    shipped = {f"edgefer/models/{p.name}" for p in MODELS.iterdir() if p.suffix in (".tflite", ".txt")}
    assert f"edgefer/models/{DEFAULT_MODEL}" in shipped
    assert shipped <= names, f"missing from the wheel: {sorted(shipped - names)}"
    assert not any(n.endswith(".keras") for n in names), "training networks do not belong in the wheel"

    run([sys.executable, "-m", "venv", str(work / "venv")], cwd=work)
    done = run([str(work / "venv/bin/python"), "-m", "pip", "install", str(wheel)], cwd=work)
    assert (work / "venv" / "bin" / "edgefer").exists(), done.stdout[-3000:]
    return work / "venv" / "bin"


def test_installed_check_config_finds_the_model_inside_the_package(installed: Path, tmp_path: Path) -> None:
    config = tmp_path / "edgefer.toml"
    config.write_text((REPO / "deploy" / "edgefer.toml").read_text())
    done = run([str(installed / "edgefer"), "check-config", "--quiet", str(config)], cwd=tmp_path)
    assert f"ok: {config}" in done.stderr
    model = done.stderr.split("model ", 1)[1].split(" (", 1)[0]
    assert "site-packages/edgefer/models/" in model and model.startswith(str(installed.parent)), done.stderr

    # a shipped alternative by its bare name, as docs/configuration.md offers
    config.write_text('[classifier]\nmodel = "paper-int8.tflite"\n')
    done = run([str(installed / "edgefer"), "check-config", "--quiet", str(config)], cwd=tmp_path)
    assert "site-packages/edgefer/models/paper-int8.tflite" in done.stderr


def test_installed_daemon_summarises_a_clip(installed: Path, fer2013: Path, tmp_path: Path) -> None:
    frames, labels = make_clip(fer2013, tmp_path / "frames", per_class=4, repeat=2)
    clip = write_video(frames, tmp_path / "clip.avi")
    args = analysis_args(REPO / "deploy" / "edgefer.toml", clip, tmp_path / "state")
    done = run([str(installed / "edgefer"), *args], cwd=tmp_path, timeout=300)
    rows = [json.loads(ln) for ln in done.stdout.splitlines() if ln.startswith("{")]
    moods = [r["payload"] for r in rows if "/mood/" in r["topic"]]
    assert moods, done.stdout + done.stderr
    last = max(moods, key=lambda p: (p["window_seconds"], p["seq"]))
    assert last["frames"] == len(labels)
    assert last["faces"] > 0 and sum(last["counts"].values()) + last["uncertain"] == last["faces"]


def test_installed_daemon_carries_no_plotting_and_report_says_how_to_add_it(installed: Path, tmp_path: Path) -> None:
    probe = subprocess.run(
        [str(installed / "python"), "-c", "import matplotlib"], capture_output=True, text=True, env=user_env()
    )
    assert probe.returncode != 0, "matplotlib came with the daemon's install"
    done = subprocess.run(
        [str(installed / "edgefer"), "report", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=user_env(),
    )
    assert done.returncode == 2 and "edgefer[report]" in done.stderr, done.stderr
