#!/usr/bin/env bash
# Time int8 model files as CPU models this machine is not, under qemu-user:
#   x86 with AVX2 only (no int8 dot product, like the AMD EPYC of the speed tables),
#   Cortex-A72 (a Pi 4: no int8 dot product) and Cortex-A76 (a Pi 5: with one).
# The runtime picks its int8 kernels by the CPU features it is shown, so each run executes the
# code that CPU would run; the emulated time is NOT that CPU's time, and only ratios between
# files in the same rounds are reported. See models/README.md ("Speed") for how well they track
# real hardware. Needs Debian's qemu-user and, for the Arm runs, apt access to arm64 packages:
#   sudo apt-get install qemu-user && sudo dpkg --add-architecture arm64 && sudo apt-get update
#
# usage: benchmarks/emulated.sh OUT_DIR [REFERENCE.tflite MODEL.tflite ...]
#   default files: edgefer/models/paper-int8.tflite edgefer/models/edgefer-dense-int8.tflite (the default)
#   EMULATED_CACHE (default ~/.cache/edgefer-emulated) holds the arm64 Python and wheels.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: benchmarks/emulated.sh OUT_DIR [REFERENCE.tflite MODEL.tflite ...]}
shift
if (($# == 0)); then
    set -- "$here/../edgefer/models/paper-int8.tflite" "$here/../edgefer/models/edgefer-dense-int8.tflite"
fi
python=${PYTHON:-python3}
cache=${EMULATED_CACHE:-$HOME/.cache/edgefer-emulated}
# The newest aarch64 LiteRT wheels (2.1 on) crash at load under Debian 12's qemu-user 7.2;
# 2.0.3 runs and picks its kernels the same way.
litert_arm=${LITERT_ARM_VERSION:-2.0.3}
mkdir -p "$out" "$cache"

for tool in qemu-x86_64 qemu-aarch64; do
    command -v "$tool" >/dev/null || { echo "emulated.sh: $tool not found (Debian package qemu-user)" >&2; exit 2; }
done

say() { printf '%s\n' "$*" >&2; }
results=()

# x86 without VNNI: the host's own Python and runtime, shown a Haswell (AVX2, FMA; no AVX-512).
say "== x86, AVX2 only (Haswell)"
qemu-x86_64 -cpu Haswell-v4 "$python" "$here/emulated_time.py" --cpu "x86 Haswell" \
    --note "AVX2, no AVX-512 or VNNI" --json "$out/x86-haswell.json" "$@" 2> >(grep -v -e warning -e INFO >&2)
results+=("$out/x86-haswell.json")

# An arm64 Python from Debian's packages, unpacked (not installed) into the cache.
root=$cache/arm64-root
if [[ ! -x $root/usr/bin/python3.11 ]]; then
    say "== preparing an arm64 Python in $cache"
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        say "emulated.sh: arm64 packages unavailable; run: sudo dpkg --add-architecture arm64 && sudo apt-get update"
        exit 2
    fi
    debs=$cache/debs
    mkdir -p "$debs" "$root"
    (cd "$debs" && apt-get download -q \
        python3.11-minimal:arm64 libpython3.11-minimal:arm64 libpython3.11-stdlib:arm64 libc6:arm64 \
        libexpat1:arm64 zlib1g:arm64 libffi8:arm64 libssl3:arm64 libbz2-1.0:arm64 liblzma5:arm64 \
        libstdc++6:arm64 libgcc-s1:arm64 libsqlite3-0:arm64 libuuid1:arm64 libcrypt1:arm64 media-types)
    for deb in "$debs"/*.deb; do dpkg -x "$deb" "$root"; done
fi
site=$cache/arm64-site-$litert_arm
if [[ ! -d $site/ai_edge_litert ]]; then
    numpy_version=$("$python" -c 'import numpy; print(numpy.__version__)')
    wheels=$cache/wheels
    platforms=()
    for tag in manylinux2014 manylinux_2_17 manylinux_2_27 manylinux_2_28; do platforms+=(--platform "${tag}_aarch64"); done
    "$python" -m pip download -q --only-binary=:all: --no-deps --python-version 311 "${platforms[@]}" \
        -d "$wheels" "ai-edge-litert==$litert_arm" "numpy==$numpy_version"
    mkdir -p "$site"
    for wheel in "$wheels"/ai_edge_litert-"$litert_arm"-*.whl "$wheels"/numpy-"$numpy_version"-*aarch64*.whl; do
        "$python" -m zipfile -e "$wheel" "$site"
    done
fi

for cpu in cortex-a72 cortex-a76; do
    say "== Arm $cpu"
    PYTHONPATH=$site qemu-aarch64 -cpu "$cpu" -L "$root" "$root/usr/bin/python3.11" "$here/emulated_time.py" \
        --cpu "Arm $cpu" --json "$out/arm-$cpu.json" "$@" 2> >(grep -v INFO >&2)
    results+=("$out/arm-$cpu.json")
done

"$python" "$here/emulated_time.py" --render "${results[@]}" --plot "$out/emulated.png" | tee "$out/emulated.md"
