"""The deployment pieces: systemd unit, Pi installer, and how they fit together.

The installer runs here in two quick ways:

* into a staged root (``--prefix DIR``): the whole file tree is written under
  a temporary directory, host-level steps are only printed;
* as a dry run against this machine, which must change nothing.

The real thing, the installer on a clean Debian with the real package, the real
``check-config`` and the installed daemon, is tests/test_clean_os.py.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "edgefer.service"
INSTALLER = REPO / "deploy" / "install.sh"
EXAMPLE_CONFIG = REPO / "deploy" / "edgefer.toml"

VENV_EDGEFER = "/opt/edgefer/venv/bin/edgefer"
EXEC_START = f"{VENV_EDGEFER} run --config /etc/edgefer/edgefer.toml"

# Inputs a test places in a staged root; everything else there is the installer's.
BOOKWORM = 'PRETTY_NAME="Raspberry Pi OS (bookworm)"\nID=debian\nVERSION_CODENAME=bookworm\n'
TRIXIE = 'PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nID=debian\nVERSION_CODENAME=trixie\n'
PI_MODEL = b"Raspberry Pi 4 Model B Rev 1.5\x00"


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (Debian package: {'shellcheck' if tool == 'shellcheck' else 'systemd'})")
    return path


# --- unit file ------------------------------------------------------------------------------------


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file as ordered (key, value) lists; keys may repeat."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"line continuation not expected: {raw!r}"
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"setting outside a section: {raw!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a setting: {raw!r}"
        current.append((key.strip(), value.strip()))
    return sections


def values(section: list[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in section if k == key]


def one(section: list[tuple[str, str]], key: str) -> str:
    found = values(section, key)
    assert len(found) == 1, f"{key}= set {len(found)} times: {found}"
    return found[0]


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [need("systemd-analyze"), "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        cwd=unit.parent,
        timeout=120,
    )


def test_unit_passes_systemd_analyze_verify(tmp_path):
    """Clean under `systemd-analyze verify` once ExecStart points at an existing program.

    The shipped ExecStart names the venv's console script, which exists only on an installed
    device; the copy swaps in an executable stub with the same arguments and must then produce
    no output at all, warnings included.
    """
    stub = tmp_path / "edgefer"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = UNIT.read_text()
    assert text.count(f"ExecStart={VENV_EDGEFER} ") == 1
    copy = tmp_path / "edgefer.service"
    copy.write_text(text.replace(f"ExecStart={VENV_EDGEFER} ", f"ExecStart={stub} "))

    result = verify(copy)
    assert result.returncode == 0, result.stderr
    assert (result.stdout + result.stderr).strip() == ""


def test_shipped_unit_only_lacks_the_installed_program():
    """Verifying the shipped file unchanged: the missing venv program is the only complaint."""
    if Path(VENV_EDGEFER).exists():
        pytest.skip(f"{VENV_EDGEFER} exists on this machine (edgefer is installed)")
    result = verify(UNIT)
    lines = [ln for ln in (result.stdout + result.stderr).splitlines() if ln.strip()]
    assert lines, "expected systemd-analyze to report the missing ExecStart program"
    assert all(VENV_EDGEFER in ln for ln in lines), lines


def test_unit_security_exposure_stays_low(tmp_path):
    """systemd's own sandbox scoring of the unit (0 = locked down, 10 = exposed).

    --threshold counts in tenths of the printed level: 25 fails the test above 2.5.
    """
    tool = need("systemd-analyze")
    help_text = subprocess.run([tool, "--help"], capture_output=True, text=True).stdout
    if "--offline" not in help_text or "--threshold" not in help_text:
        pytest.skip("this systemd-analyze cannot score unit files offline (needs systemd 250+)")
    copy = tmp_path / "edgefer.service"
    shutil.copy(UNIT, copy)
    result = subprocess.run(
        [tool, "security", "--offline=yes", "--threshold=25", "--no-pager", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert re.search(r"Overall exposure level for edgefer\.service: [0-9.]+ ", result.stdout)


def test_unit_wires_the_daemon_contract():
    unit = parse_unit(UNIT)
    assert set(unit) == {"Unit", "Service", "Install"}
    svc, head = unit["Service"], unit["Unit"]

    assert one(svc, "Type") == "notify"  # systemd 252: no notify-reload
    assert one(svc, "NotifyAccess") == "main"
    assert one(svc, "ExecStart") == EXEC_START
    assert one(svc, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(svc, "WatchdogSec") == "30"
    assert one(svc, "Restart") == "on-failure"
    assert int(one(head, "StartLimitBurst")) >= 1
    assert one(head, "StartLimitIntervalSec")
    assert one(svc, "User") == "edgefer"
    assert "video" in one(svc, "SupplementaryGroups").split()
    assert one(svc, "StateDirectory") == "edgefer"
    # the status's fallback while the state directory refuses writes (edgefer.statusfile)
    assert (one(svc, "RuntimeDirectory"), one(svc, "RuntimeDirectoryPreserve")) == ("edgefer", "yes")
    assert one(svc, "ConfigurationDirectory") == "edgefer"
    assert one(svc, "LoadCredential") == "mqtt_password:/etc/edgefer/mqtt_password"
    assert one(unit["Install"], "WantedBy") == "multi-user.target"


def test_unit_sandbox_keeps_the_camera_reachable():
    svc = parse_unit(UNIT)["Service"]

    assert one(svc, "DevicePolicy") == "closed"
    allowed = {v.split()[0]: v.split()[1] for v in values(svc, "DeviceAllow")}
    assert allowed == {
        "char-video4linux": "rw",
        "char-media": "rw",
        "char-dma_heap": "rw",
        "/dev/vchiq": "rw",
    }
    # systemd takes globs only in char-<group> names, never in /dev paths.
    assert not any(ch in name for name in allowed if name.startswith("/") for ch in "*?[")
    # PrivateDevices=yes would hide /dev/video* and /dev/media*.
    assert values(svc, "PrivateDevices") in ([], ["no"])
    assert values(svc, "MemoryDenyWriteExecute") in ([], ["no"])

    families = one(svc, "RestrictAddressFamilies").split()
    assert {"AF_UNIX", "AF_INET", "AF_INET6"} <= set(families)
    assert not any(f.startswith("~") for f in families)

    for key, want in {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectControlGroups": "yes",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "SystemCallArchitectures": "native",
        "LimitCORE": "0",  # a core dump would hold camera frames
    }.items():
        assert one(svc, key) == want, key
    assert re.fullmatch(r"\d+[KMG]", one(svc, "MemoryMax"))


# --- shellcheck -------------------------------------------------------------------------------


def test_shell_scripts_are_shellcheck_clean():
    scripts = sorted([*(REPO / "deploy").glob("*.sh"), *(REPO / "benchmarks").glob("*.sh"), REPO / ".ci" / "run"])
    assert INSTALLER in scripts and REPO / "benchmarks" / "emulated.sh" in scripts
    result = subprocess.run(
        [need("shellcheck"), *map(str, scripts)], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


# --- installer into a staged root ----------------------------------------------------------------


def system_python_args() -> list[str]:
    """The installer defaults to /usr/bin/python3; point it elsewhere only if that is too old."""
    probe = "import sys; sys.exit(sys.version_info < (3, 11))"
    if Path("/usr/bin/python3").exists() and subprocess.run(["/usr/bin/python3", "-c", probe]).returncode == 0:
        return []
    return ["--python", sys.executable]


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A copy of the checkout's deployment files, so no test writes into the repository.

    The installer finds everything relative to its own location. The example config is the
    shipped one when present; until then a stand-in takes its place.
    """
    root = tmp_path / "checkout"
    (root / "deploy").mkdir(parents=True)
    (root / "systemd").mkdir()
    shutil.copy2(INSTALLER, root / "deploy" / "install.sh")
    shutil.copy2(UNIT, root / "systemd" / "edgefer.service")
    shutil.copy2(REPO / "pyproject.toml", root / "pyproject.toml")
    if EXAMPLE_CONFIG.exists():
        shutil.copy2(EXAMPLE_CONFIG, root / "deploy" / "edgefer.toml")
    else:
        (root / "deploy" / "edgefer.toml").write_text('[mqtt]\nhost = "localhost"\n')
    return root


def make_root(base: Path, os_release: str, pi: bool) -> Path:
    root = base / "target"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text(os_release)
    if pi:
        (root / "proc" / "device-tree").mkdir(parents=True)
        (root / "proc" / "device-tree" / "model").write_bytes(PI_MODEL)
    return root


INPUTS = {"etc/os-release", "proc/device-tree/model"}


@pytest.fixture
def pi_root(tmp_path) -> Path:
    return make_root(tmp_path, BOOKWORM, pi=True)


def run_installer(checkout: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["bash", str(checkout / "deploy" / "install.sh"), *system_python_args(), *args],
        capture_output=True,
        text=True,
        cwd=checkout.parent,
        timeout=300,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under root: type, mode, size, mtime and content hash or link target."""
    entries: dict[str, tuple] = {}
    if not root.exists():
        return entries
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                detail = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                detail = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                detail = ""
            entries[str(path.relative_to(root))] = (
                stat.S_IFMT(st.st_mode),
                stat.S_IMODE(st.st_mode),
                st.st_size if not stat.S_ISDIR(st.st_mode) else 0,
                st.st_mtime_ns,
                detail,
            )
    return entries


def changing_lines(output: str) -> list[str]:
    """Lines where the installer reports a change it made ("+ command" or "+ write file")."""
    return [ln for ln in output.splitlines() if ln.startswith("+ ")]


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_staged_install_writes_the_expected_tree(checkout, pi_root):
    result = run_installer(checkout, "--prefix", str(pi_root))
    out = result.stdout

    unit = pi_root / "etc/systemd/system/edgefer.service"
    assert unit.read_bytes() == UNIT.read_bytes()
    assert mode_of(unit) == 0o644
    config = pi_root / "etc/edgefer/edgefer.toml"
    assert config.read_bytes() == (checkout / "deploy/edgefer.toml").read_bytes()
    assert mode_of(config) == 0o644
    password = pi_root / "etc/edgefer/mqtt_password"
    assert password.read_bytes() == b""
    assert mode_of(password) == 0o600
    assert mode_of(pi_root / "etc/edgefer") == 0o755
    assert (pi_root / "var/lib/edgefer").is_dir()
    assert mode_of(pi_root / "var/lib/edgefer") == 0o750

    # Bookworm: apt's numpy 1.x stack, so numpy and OpenCV are held back.
    constraints = (pi_root / "opt/edgefer/constraints.txt").read_text()
    pins = [ln for ln in constraints.splitlines() if ln and not ln.startswith("#")]
    assert pins == ["numpy<2", "opencv-python-headless<4.12"]

    # A real venv that sees apt's packages (picamera2); pip is left out on purpose.
    venv = pi_root / "opt/edgefer/venv"
    cfg = (venv / "pyvenv.cfg").read_text()
    assert re.search(r"^include-system-site-packages = true$", cfg, re.M)
    assert (venv / "bin/python").exists()
    assert not (venv / "bin/pip").exists()
    assert not (venv / "bin/edgefer").exists()

    # The command on PATH and the unit's ExecStart name the same program.
    link = pi_root / "usr/local/bin/edgefer"
    assert os.readlink(link) == VENV_EDGEFER == one(parse_unit(unit)["Service"], "ExecStart").split()[0]
    # Enabled offline, as `systemctl enable` would on the device.
    if shutil.which("systemctl"):
        wants = pi_root / "etc/systemd/system/multi-user.target.wants/edgefer.service"
        assert os.readlink(wants) == "/etc/systemd/system/edgefer.service"

    # Nothing else is written (the venv's own files aside).
    expected = {
        "etc/systemd/system/edgefer.service",
        "etc/edgefer/edgefer.toml",
        "etc/edgefer/mqtt_password",
        "opt/edgefer/constraints.txt",
        "usr/local/bin/edgefer",
    }
    if shutil.which("systemctl"):
        expected.add("etc/systemd/system/multi-user.target.wants/edgefer.service")
    written = {
        p
        for p, entry in snapshot(pi_root).items()
        if entry[0] != stat.S_IFDIR and p not in INPUTS and not p.startswith("opt/edgefer/venv/")
    }
    assert written == expected

    # Host-level steps are reported, not run.
    skipped = [ln for ln in out.splitlines() if ln.startswith("[not run: staged root] ")]
    apt = [ln for ln in skipped if " apt-get install " in ln]
    assert len(apt) == 1 and "python3-picamera2" in apt[0] and "python3-venv" in apt[0]
    assert any(" useradd --system " in ln and ln.endswith(" edgefer") for ln in skipped)
    assert any(" chown edgefer:edgefer " in ln for ln in skipped)
    pip = [ln for ln in skipped if " -m pip install " in ln]
    assert len(pip) == 1 and "--constraint /opt/edgefer/constraints.txt" in pip[0]
    assert pip[0].startswith("[not run: staged root] /opt/edgefer/venv/bin/python ")
    assert any(ln.endswith(f"{VENV_EDGEFER} check-config /etc/edgefer/edgefer.toml") for ln in skipped)
    assert any(ln.endswith("systemctl start edgefer.service") for ln in skipped)


def test_second_run_changes_nothing(checkout, pi_root):
    run_installer(checkout, "--prefix", str(pi_root))
    before = snapshot(pi_root)
    assert len(before) > 10
    again = run_installer(checkout, "--prefix", str(pi_root))
    assert snapshot(pi_root) == before
    assert changing_lines(again.stdout) == []


def test_dry_run_on_a_fresh_root_changes_nothing(checkout, pi_root):
    before = snapshot(pi_root)
    result = run_installer(checkout, "--prefix", str(pi_root), "--dry-run")
    assert snapshot(pi_root) == before
    assert changing_lines(result.stdout) == []
    planned = [ln for ln in result.stdout.splitlines() if ln.startswith("[dry-run] ")]
    assert any(ln.endswith(f"{pi_root}/etc/systemd/system/edgefer.service") for ln in planned)
    assert any(f"{pi_root}/etc/edgefer/mqtt_password" in ln and "0600" in ln for ln in planned)
    assert any("-m venv --system-site-packages" in ln for ln in planned)


def test_dry_run_reports_drift_without_repairing_it(checkout, pi_root):
    run_installer(checkout, "--prefix", str(pi_root))
    unit = pi_root / "etc/systemd/system/edgefer.service"
    unit.write_text("[Service]\nExecStart=/bin/false\n")
    (pi_root / "etc/edgefer/mqtt_password").unlink()
    before = snapshot(pi_root)

    result = run_installer(checkout, "--prefix", str(pi_root), "--dry-run")
    assert snapshot(pi_root) == before
    planned = "\n".join(ln for ln in result.stdout.splitlines() if ln.startswith("[dry-run] "))
    assert f"{pi_root}/etc/systemd/system/edgefer.service" in planned
    assert f"{pi_root}/etc/edgefer/mqtt_password" in planned

    # A real run repairs both and reloads systemd for the new unit.
    result = run_installer(checkout, "--prefix", str(pi_root))
    assert unit.read_bytes() == UNIT.read_bytes()
    assert (pi_root / "etc/edgefer/mqtt_password").read_bytes() == b""
    assert "[not run: staged root] systemctl daemon-reload" in result.stdout


def test_operator_config_and_password_are_never_overwritten(checkout, pi_root):
    run_installer(checkout, "--prefix", str(pi_root))
    config = pi_root / "etc/edgefer/edgefer.toml"
    password = pi_root / "etc/edgefer/mqtt_password"
    config.write_text('[mqtt]\nhost = "broker.lan"\n')
    password.write_text("s3cret\n")
    (checkout / "deploy/edgefer.toml").write_text('[mqtt]\nhost = "changed-upstream"\n')

    result = run_installer(checkout, "--prefix", str(pi_root))
    assert config.read_text() == '[mqtt]\nhost = "broker.lan"\n'
    assert password.read_text() == "s3cret\n"
    assert mode_of(password) == 0o600
    assert "keeping existing /etc/edgefer/edgefer.toml" in result.stdout


def test_uninstall_removes_its_files_and_keeps_config_and_data(checkout, pi_root):
    run_installer(checkout, "--prefix", str(pi_root))
    (pi_root / "var/lib/edgefer/stats.json").write_text("{}")
    config_before = (pi_root / "etc/edgefer/edgefer.toml").read_bytes()

    result = run_installer(checkout, "--prefix", str(pi_root), "--uninstall")
    for gone in (
        "etc/systemd/system/edgefer.service",
        "etc/systemd/system/multi-user.target.wants/edgefer.service",
        "usr/local/bin/edgefer",
        "opt/edgefer",
    ):
        assert not os.path.lexists(pi_root / gone), gone
    assert (pi_root / "etc/edgefer/edgefer.toml").read_bytes() == config_before
    assert (pi_root / "etc/edgefer/mqtt_password").exists()
    assert (pi_root / "var/lib/edgefer/stats.json").read_text() == "{}"
    assert "userdel" not in result.stdout

    # Uninstalling twice is a no-op.
    before = snapshot(pi_root)
    again = run_installer(checkout, "--prefix", str(pi_root), "--uninstall")
    assert snapshot(pi_root) == before
    assert changing_lines(again.stdout) == []


def test_uninstall_purge_removes_config_data_and_account(checkout, pi_root):
    run_installer(checkout, "--prefix", str(pi_root))
    (pi_root / "var/lib/edgefer/stats.json").write_text("{}")

    result = run_installer(checkout, "--prefix", str(pi_root), "--uninstall", "--purge")
    left = [p for p, entry in snapshot(pi_root).items() if entry[0] != stat.S_IFDIR and p not in INPUTS]
    assert left == []
    assert not (pi_root / "etc/edgefer").exists()
    assert not (pi_root / "var/lib/edgefer").exists()
    assert "[not run: staged root] userdel edgefer" in result.stdout


def test_dry_run_uninstall_changes_nothing(checkout, pi_root):
    run_installer(checkout, "--prefix", str(pi_root))
    before = snapshot(pi_root)
    result = run_installer(checkout, "--prefix", str(pi_root), "--uninstall", "--purge", "--dry-run")
    assert snapshot(pi_root) == before
    planned = [ln for ln in result.stdout.splitlines() if ln.startswith("[dry-run] ")]
    assert any(ln.endswith(f"{pi_root}/opt/edgefer") for ln in planned)
    assert any(ln.endswith(f"{pi_root}/etc/edgefer") for ln in planned)


@pytest.mark.parametrize(
    ("os_release", "pi", "extra", "pinned"),
    [
        (BOOKWORM, True, [], True),
        (BOOKWORM, False, [], True),
        (TRIXIE, True, [], False),
        (TRIXIE, False, [], False),
        (TRIXIE, False, ["--extras", "mediapipe"], True),  # mediapipe 0.10.18 needs numpy<2
        (BOOKWORM, True, ["--numpy", "2"], False),
        (TRIXIE, False, ["--numpy", "1"], True),
    ],
)
def test_numpy_and_opencv_pins_follow_the_target(tmp_path, checkout, os_release, pi, extra, pinned):
    root = make_root(tmp_path, os_release, pi)
    result = run_installer(checkout, "--prefix", str(root), *extra)
    constraints = (root / "opt/edgefer/constraints.txt").read_text()
    pins = [ln for ln in constraints.splitlines() if ln and not ln.startswith("#")]
    assert pins == (["numpy<2", "opencv-python-headless<4.12"] if pinned else [])

    apt = next(ln for ln in result.stdout.splitlines() if " apt-get install " in ln)
    assert ("python3-picamera2" in apt) == pi
    if extra[:1] == ["--extras"]:
        pip = next(ln for ln in result.stdout.splitlines() if " -m pip install " in ln)
        assert shlex.split(pip.removeprefix("[not run: staged root] "))[-1] == f"{checkout}[mediapipe]"


def test_broker_option_adds_mosquitto(checkout, tmp_path):
    root = make_root(tmp_path, TRIXIE, pi=False)
    result = run_installer(checkout, "--prefix", str(root), "--with-broker")
    apt = next(ln for ln in result.stdout.splitlines() if " apt-get install " in ln)
    assert " mosquitto " in f"{apt} " and "mosquitto-clients" in apt


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--purge"], 2, "--purge only goes with --uninstall"),
        (["--frobnicate"], 2, "unknown option"),
        (["--numpy", "3"], 1, "--numpy takes auto, 1 or 2"),
        (["--extras", "a b"], 1, "--extras takes comma-separated names"),
        (["--prefix", "/"], 1, "would be the real system"),
    ],
)
def test_bad_options_are_refused(checkout, tmp_path, args, code, message):
    root = make_root(tmp_path, TRIXIE, pi=False)
    before = snapshot(root)
    if "--prefix" not in args:
        args = ["--prefix", str(root), *args]
    result = run_installer(checkout, *args, check=False)
    assert result.returncode == code, result.stdout + result.stderr
    assert message in result.stderr
    assert snapshot(root) == before


def test_missing_example_config_is_an_error(checkout, pi_root):
    (checkout / "deploy/edgefer.toml").unlink()
    result = run_installer(checkout, "--prefix", str(pi_root), check=False)
    assert result.returncode == 1
    assert "deploy/edgefer.toml" in result.stderr
    assert not (pi_root / "opt").exists()


# --- installer against this machine ---------------------------------------------------------------

SYSTEM_PATHS = [
    "/opt/edgefer",
    "/etc/edgefer",
    "/var/lib/edgefer",
    "/usr/local/bin/edgefer",
    "/etc/systemd/system/edgefer.service",
    "/etc/systemd/system/multi-user.target.wants/edgefer.service",
]


def system_state() -> dict[str, tuple | None]:
    state: dict[str, tuple | None] = {}
    for p in SYSTEM_PATHS:
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            state[p] = None
        else:
            state[p] = (st.st_mode, st.st_mtime_ns, st.st_size)
    return state


def test_dry_run_against_this_system_changes_nothing(checkout):
    if not shutil.which("apt-get"):
        pytest.skip("the installer targets Debian-based systems (no apt-get here)")
    before = system_state()
    result = run_installer(checkout, "--dry-run")
    assert system_state() == before
    assert changing_lines(result.stdout) == []
    assert "[dry-run] " in result.stdout
    assert "(this system, dry run)" in result.stdout
