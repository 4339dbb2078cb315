"""A clean Debian userland to install edgefer into, the way a new Pi owner does.

``debootstrap`` builds a minimal Debian rootfs from Debian's own packages (python3, systemd,
sudo, ca-certificates: what Raspberry Pi OS Lite has before anyone touches it), the checkout
is cloned into a user's home, and ``sudo deploy/install.sh`` runs there in a chroot. Foreign
architectures (arm64 on an x86 host) run under ``qemu-user-static`` through binfmt_misc.

The base rootfs is cached as a tarball between runs (keyed by suite, architecture and package
list) and unpacked afresh for every test, so no run sees another's changes. pip's download
cache is kept beside it for the same reason apt's is on a real Pi: a second install should
not fetch 60 MB of wheels again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MIRROR = os.environ.get("EDGEFER_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = ("python3", "ca-certificates", "systemd", "sudo")
CACHE = Path(os.environ.get("EDGEFER_ROOTFS_CACHE", Path.home() / ".cache" / "edgefer-tests"))
MAX_AGE_DAYS = 14
USER = "pi"

# /proc/cpuinfo as a Raspberry Pi shows it (4 cores). LiteRT reads it at start; under
# emulation the host's x86 text would be read instead, and its CPU probe crashes on it.
_CPUINFO_CORE = """processor\t: {n}
BogoMIPS\t: 108.00
Features\t: {features}
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: {variant}
CPU part\t: {part}
CPU revision\t: {revision}

"""
PI_CPUS = {
    # Pi 4 (BCM2711): Cortex-A72
    "cortex-a72": ("fp asimd evtstrm crc32 cpuid", "0x0", "0xd08", "3", "Raspberry Pi 4 Model B Rev 1.5"),
    # Pi 5 (BCM2712): Cortex-A76
    "cortex-a76": (
        "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp",
        "0x4",
        "0xd0b",
        "1",
        "Raspberry Pi 5 Model B Rev 1.0",
    ),
}


def pi_cpuinfo(cpu: str) -> str:
    features, variant, part, revision, model = PI_CPUS[cpu]
    cores = "".join(
        _CPUINFO_CORE.format(n=n, features=features, variant=variant, part=part, revision=revision) for n in range(4)
    )
    return f"{cores}Model\t\t: {model}\n"


def host_arch() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()


def progress(msg: str) -> None:
    print(f"[clean-os {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def base_rootfs(suite: str, arch: str) -> Path:
    """The cached tarball of a fresh ``debootstrap`` of ``suite`` for ``arch``; built when
    missing or older than two weeks (security updates land in Debian in the meantime)."""
    key = hashlib.sha256(f"{suite} {arch} {MIRROR} {' '.join(PACKAGES)}".encode()).hexdigest()[:12]
    tarball = CACHE / f"rootfs-{suite}-{arch}-{key}.tar"
    if tarball.exists() and time.time() - tarball.stat().st_mtime < MAX_AGE_DAYS * 86400:
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    work = CACHE / f"build-{suite}-{arch}"
    shutil.rmtree(work, ignore_errors=True)
    progress(f"debootstrap {suite} {arch} from {MIRROR}")
    cmd = ["debootstrap", "--variant=minbase", f"--arch={arch}", f"--include={','.join(PACKAGES)}", suite, str(work)]
    done = subprocess.run([*cmd, MIRROR], capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        log = work / "debootstrap" / "debootstrap.log"
        detail = log.read_text()[-3000:] if log.exists() else done.stdout[-3000:] + done.stderr[-3000:]
        raise RuntimeError(f"debootstrap {suite} {arch} failed:\n{detail}")
    partial = tarball.with_suffix(".partial")
    subprocess.run(["tar", "-C", str(work), "-cf", str(partial), "."], check=True)
    partial.rename(tarball)
    shutil.rmtree(work, ignore_errors=True)
    return tarball


def checkout_files() -> list[str]:
    """The checkout as a clone of it holds it: tracked files plus new, not ignored ones."""
    out = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout
    return [f for f in out.decode().split("\0") if f and (REPO / f).is_file()]


class Chroot:
    """One unpacked rootfs with the mounts a program needs, and a user who owns a clone."""

    def __init__(self, root: Path, arch: str, qemu_cpu: str | None) -> None:
        self.root, self.arch, self.qemu_cpu = root, arch, qemu_cpu
        self.mounts: list[Path] = []

    def path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")

    def _mount(self, *args: str, target: Path) -> None:
        subprocess.run(["mount", *args, str(target)], check=True)
        self.mounts.append(target)

    def prepare(self) -> None:
        shutil.copy2("/etc/resolv.conf", self.path("/etc/resolv.conf"), follow_symlinks=True)
        # The host's trust store and pip's use of it: where the host reaches the package
        # index through an inspecting proxy, so must the chroot.
        shutil.copy2("/etc/ssl/certs/ca-certificates.crt", self.path("/etc/ssl/certs/ca-certificates.crt"))
        self.path("/etc/pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
        self.path("/etc/hosts").write_text("127.0.0.1 localhost\n")
        self._mount("-t", "proc", "proc", target=self.path("/proc"))
        self._mount("--bind", "/dev", target=self.path("/dev"))
        if self.qemu_cpu:
            cpuinfo = self.root.parent / "cpuinfo"
            cpuinfo.write_text(pi_cpuinfo(self.qemu_cpu))
            self._mount("--bind", str(cpuinfo), target=self.path("/proc/cpuinfo"))
        pip_cache = CACHE / f"pip-{self.arch}"
        pip_cache.mkdir(parents=True, exist_ok=True)
        self.path("/root/.cache/pip").mkdir(parents=True, exist_ok=True)
        self._mount("--bind", str(pip_cache), target=self.path("/root/.cache/pip"))
        self.run_root(f"useradd --create-home --shell /bin/bash {USER}")
        keep = 'Defaults env_keep += "QEMU_CPU"\n' if self.qemu_cpu else ""
        sudoers = self.path(f"/etc/sudoers.d/{USER}")
        sudoers.write_text(f"{keep}{USER} ALL=(ALL) NOPASSWD: ALL\n")
        sudoers.chmod(0o440)

    def clone(self) -> str:
        """``git clone`` of the checkout into the user's home, with any uncommitted work
        copied over it, so the test installs what a clone of this tree would hold."""
        dest = self.path(f"/home/{USER}/edgefer")
        subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(REPO), str(dest)], check=True)
        for f in checkout_files():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, dest / f)
        self.run_root(f"chown -R {USER}:{USER} /home/{USER}/edgefer")
        return f"/home/{USER}/edgefer"

    def _env(self) -> dict[str, str]:
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        if self.qemu_cpu:
            env["QEMU_CPU"] = self.qemu_cpu
        return env

    def run_root(self, script: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["chroot", str(self.root), "/bin/bash", "-c", script],
            capture_output=True,
            text=True,
            env=self._env(),
            timeout=timeout,
        )

    def run_as(self, user: str, script: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        """``script`` in a login-like shell of ``user`` (``runuser``, as ssh would give)."""
        return subprocess.run(
            ["chroot", str(self.root), "runuser", "-u", user, "--", "/bin/bash", "-c", f"cd ~ 2>/dev/null; {script}"],
            capture_output=True,
            text=True,
            env=self._env(),
            timeout=timeout,
        )

    def as_admin(self, script: str, cwd: str = "~", timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        """``sudo script`` as the user would type it. Under emulation setuid programs do not
        gain root (binfmt_misc runs them without the credentials flag), so there the chroot's
        root runs the same command line instead."""
        if self.qemu_cpu:
            return self.run_root(f"cd {cwd} && {script}", timeout=timeout)
        return self.run_as(USER, f"cd {cwd} && sudo {script}", timeout=timeout)

    def close(self) -> None:
        for target in reversed(self.mounts):
            subprocess.run(["umount", "-l", str(target)], check=False)
        self.mounts.clear()


@contextlib.contextmanager
def clean_debian(suite: str, workdir: Path, arch: str | None = None, qemu_cpu: str | None = None) -> Iterator[Chroot]:
    """A fresh chroot of ``suite`` under ``workdir``, torn down (mounts and files) on exit."""
    arch = arch or host_arch()
    tarball = base_rootfs(suite, arch)
    root = workdir / f"{suite}-{arch}"
    root.mkdir(parents=True)
    subprocess.run(["tar", "-C", str(root), "-xf", str(tarball)], check=True)
    chroot = Chroot(root, arch, qemu_cpu)
    try:
        chroot.prepare()
        yield chroot
    finally:
        chroot.close()
        shutil.rmtree(root, ignore_errors=True)
