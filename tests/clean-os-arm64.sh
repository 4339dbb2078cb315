#!/usr/bin/env bash
# The installer on a clean arm64 Debian, as a Raspberry Pi runs it, under qemu-user-static.
#
#   tests/clean-os-arm64.sh [cortex-a72|cortex-a76] [bookworm|trixie]
#
# Pi 4 is cortex-a72 (the default), Pi 5 cortex-a76. Needs root, debootstrap and
# qemu-user-static with binfmt_misc (apt-get install debootstrap qemu-user-static
# binfmt-support). Takes 3-7 minutes (the first run bootstraps the arm64 base system under
# emulation) and needs qemu and binfmt_misc: not part of every test run.
#
# QEMU_CPU matters: qemu's default "max" CPU makes LiteRT's int8 XNNPACK kernels return one
# class for every face (an emulator artefact; a72, a76 and x86 agree exactly), so the test
# compares the installed daemon's counts with the host's on the same clip.
set -euo pipefail
cd "$(dirname "$0")/.."

cpu=${1:-cortex-a72}
suite=${2:-bookworm}
case $cpu in cortex-a72 | cortex-a76) ;; *) echo "unknown CPU '$cpu' (cortex-a72 or cortex-a76)" >&2; exit 2 ;; esac
case $suite in bookworm | trixie) ;; *) echo "unknown suite '$suite' (bookworm or trixie)" >&2; exit 2 ;; esac
[[ $(id -u) -eq 0 ]] || { echo "needs root (a chroot and mounts)" >&2; exit 2; }

if [[ ! -e /proc/sys/fs/binfmt_misc/status ]]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
    update-binfmts --enable qemu-aarch64 ||
        { echo "no binfmt handler for aarch64: apt-get install qemu-user-static binfmt-support" >&2; exit 2; }
fi

PY=${PYTHON:-.venv/bin/python}
start=$(date +%s)
EDGEFER_ARM64_CPU=$cpu EDGEFER_ARM64_SUITE=$suite "$PY" -m pytest -q -s -p no:cacheprovider \
    tests/test_clean_os.py -k arm64 -rA
echo "arm64 $suite on $cpu: passed in $(($(date +%s) - start)) s"
