"""What a reader needs to judge a number from another machine: the CPU, its int8
instructions, the board, the OS, Python and the packages that explain a figure."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import Any

from edgefer import __version__
from edgefer.bench.peers.fer import package_version

MIB = 1024 * 1024

#: Packages whose versions explain a number (the runtime, the maths, the image library).
HOST_PACKAGES = (
    "numpy",
    "opencv-python-headless",
    "opencv-python",
    "opencv-contrib-python",
    "ai-edge-litert",
    "tflite-runtime",
    "tensorflow",
    "tensorflow-cpu",
    "psutil",
    "mediapipe",
    "fer",
    "matplotlib",
)

# CPU features that decide how fast int8 convolutions run, in /proc/cpuinfo's spelling: x86
# (AVX2; AVX-512 and AVX dot products, VNNI; AMX tiles) and Arm (NEON; the ARMv8.2 dot product,
# absent on a Pi 4's Cortex-A72, present on a Pi 5's Cortex-A76; int8 matrix multiply).
INT8_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "asimddp", "i8mm")


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _cpu_model(text: str) -> str:
    for key in ("model name", "Model", "Hardware", "cpu model"):
        for line in text.splitlines():
            if line.split(":")[0].strip() == key and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_label(host: dict[str, Any]) -> str:
    """The CPU as a result's reader needs it: its model and its int8 instructions."""
    features = host.get("int8_features")
    if features is None:  # a result written before the features were recorded
        return host["cpu_model"]
    return f"{host['cpu_model']} (int8 instructions: {', '.join(features) or 'none of note'})"


def int8_features(cpuinfo: str) -> list[str]:
    """Which of :data:`INT8_FEATURES` the CPU has, from /proc/cpuinfo's text.

    Kept with every result because they reorder the models: with dot-product instructions a
    dense int8 convolution costs a fraction of what it costs without, while depthwise convs and
    small layers gain little, so a network with fewer FLOPs can be faster on one CPU and slower
    on another (models/README.md, "Speed")."""
    have: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            have.update(value.split())
    return [f for f in INT8_FEATURES if f in have]


def load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def host_info() -> dict[str, Any]:
    """What a reader needs to judge a number from another machine."""
    import psutil

    board = None
    with contextlib.suppress(OSError):
        board = Path("/proc/device-tree/model").read_text().strip("\x00\n ")
    os_name = platform.platform()
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = f"{line.split('=', 1)[1].strip(chr(34))} ({platform.release()})"
    cpuinfo = _cpuinfo()
    return {
        "cpu_model": _cpu_model(cpuinfo),
        "int8_features": int8_features(cpuinfo),
        "board": board,
        "machine": platform.machine(),
        "cores_logical": os.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_total_mb": round(psutil.virtual_memory().total / MIB),
        "os": os_name,
        "python": platform.python_version(),
        "edgefer": __version__,
        "packages": {name: v for name in HOST_PACKAGES if (v := package_version(name))},
        "load_average_after": load_average(),
    }
