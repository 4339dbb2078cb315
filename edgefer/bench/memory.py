"""Memory, measured in a fresh interpreter per model so that models do not pollute each
other's numbers and the benchmark's own dataset does not count."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edgefer.bench.host import MIB
from edgefer.bench.models import ModelSpec
from edgefer.classifier import load_interpreter_class


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB
    except (OSError, ValueError, IndexError):
        import psutil

        return psutil.Process().memory_info().rss / MIB


def peak_rss_mb() -> float:
    """The process's high-water RSS (VmHWM); ru_maxrss where /proc is missing.

    VmHWM belongs to the current process image, whereas Linux carries ru_maxrss across
    exec from the parent that spawned us, which would report the benchmark's own peak.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024


def memory_probe(
    kind: str, path: str, labels_path: str | None, threads: int, n: int = 200, flip_margin: float | None = None
) -> dict[str, float]:
    """Run in a fresh interpreter: RSS before and after the model, and the process's peak.

    OpenCV is imported first because the daemon always has it loaded (detection), so the
    peak matches a real process and the overhead figures do not include OpenCV. The
    runtime overhead is RSS once tensors are allocated minus RSS with the runtime module
    imported but no model loaded; the inferences use random faces (memory does not depend
    on pixel values) so no dataset is held.
    """
    import cv2  # noqa: F401

    rss_start = rss_mb()
    load_interpreter_class()
    rss_runtime = rss_mb()
    spec = ModelSpec(kind, Path(path), Path(labels_path) if labels_path else None, flip_margin=flip_margin)
    model = spec.build(threads)
    rss_model = rss_mb()
    faces = np.random.default_rng(0).integers(0, 256, (n, 48, 48), dtype=np.uint8)
    for i in range(n):
        model.predict(faces[i : i + 1])
    rss_after = rss_mb()
    return {
        "rss_start_mb": rss_start,
        "rss_runtime_imported_mb": rss_runtime,
        "rss_model_allocated_mb": rss_model,
        "rss_after_inference_mb": rss_after,
        "runtime_import_mb": rss_runtime - rss_start,
        "runtime_overhead_mb": rss_model - rss_runtime,
        "runtime_overhead_after_inference_mb": rss_after - rss_runtime,
        "peak_rss_mb": peak_rss_mb(),
        "inferences": n,
    }


def probe_memory(spec: ModelSpec, threads: int, timeout: float = 300.0) -> dict[str, Any]:
    """:func:`memory_probe` in a subprocess of the same Python; errors are reported, not raised."""
    code = (
        "import json, sys\n"
        "from edgefer.bench.memory import memory_probe\n"
        "print(json.dumps(memory_probe(*json.loads(sys.argv[1]))))\n"
    )
    labels = str(spec.labels_path) if spec.labels_path else None
    args = [spec.kind, str(spec.path), labels, threads, 200, spec.flip_margin]
    env = dict(os.environ)
    pkg_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, json.dumps(args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"memory probe timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"memory probe failed: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])
