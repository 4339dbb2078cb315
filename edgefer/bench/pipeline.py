"""``edgefer-bench --mode pipeline``: the daemon's per-frame path (detect -> crop -> classify)
on frames decoded into memory beforehand, broken down by stage, and its CPU use at a fixed
frame rate."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edgefer.bench import timing
from edgefer.bench.clips import FRAME_SIZE, Clip, composite_frames, write_clip
from edgefer.bench.dataset import PAPER
from edgefer.bench.host import MIB, host_info
from edgefer.bench.models import ModelSpec, daemon_specs, label_order, shown_path
from edgefer.bench.output import error, finish, log
from edgefer.bench.peers import measurable
from edgefer.bench.peers.fer import FerPackageLane
from edgefer.bench.report import unmeasured_notes
from edgefer.bench.stats import iou, latency_stats, mean_std, rate
from edgefer.classifier import ModelError
from edgefer.config import ClassifierConfig, FacesConfig
from edgefer.datasets import DatasetError, find_root, load_fer2013

#: what pipeline mode's ``--detector`` accepts
DETECTORS = ("auto", "blazeface-full", "blazeface", "haar", "mediapipe")


@dataclass
class FrameSet:
    frames: list[np.ndarray]
    source: str
    decode_ms: list[float]
    decode_what: str
    truth: Clip | None = None


def _timed_frames(n: int, read: Any) -> tuple[list[np.ndarray], list[float]]:
    """Up to ``n`` frames from ``read(i)`` (None ends them), each read's time in ms."""
    frames, ms = [], []
    while len(frames) < n:
        t = time.perf_counter()
        f = read(len(frames))
        dt = (time.perf_counter() - t) * 1000
        if f is None:
            break
        frames.append(f)
        ms.append(dt)
    return frames, ms


def _demo_frames(args: argparse.Namespace) -> FrameSet:
    from edgefer.demo import DemoSource

    demo = DemoSource(*FRAME_SIZE, fps=args.fps)
    demo.open()
    frames, ms = _timed_frames(args.frames, demo.frame)
    demo.close()
    return FrameSet(frames, "demo (embedded astronaut clip)", ms, "generated in memory")


def _composited_frames(args: argparse.Namespace) -> FrameSet:
    n = args.frames
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


def load_frames(args: argparse.Namespace) -> FrameSet:
    """Decode (or generate) every frame into memory first, timing that separately."""
    from edgefer.sources import FolderSource, OpenCVSource, SourceError

    src = args.source
    if src == "demo":
        return _demo_frames(args)
    if src == "fer2013":
        return _composited_frames(args)
    path = Path(src)
    source: Any = FolderSource(src) if path.is_dir() else OpenCVSource(src)
    if not path.exists():
        raise SourceError(f"{src}: no such file or folder (or use --source demo / fer2013)")
    source.open()
    try:
        frames, ms = _timed_frames(args.frames, lambda _: source.read())
    finally:
        source.close()
    if not frames:
        raise SourceError(f"{src}: no frames decoded")
    return FrameSet(frames, src, ms, "read, decoded and converted to gray")


class EdgeferLane:
    """The daemon's frame path (edgefer.framepath.FramePath: detect on a downscaled frame and
    hold boxes, frame and align, classify, track), timed stage by stage as it reports them."""

    def __init__(self, detector: str, every: int, scale: float, spec: ModelSpec, threads: int) -> None:
        from edgefer.faces import build_face_stage
        from edgefer.framepath import FramePath

        stage = build_face_stage(replace(FacesConfig(), detector=detector, detect_every=every, detect_scale=scale))
        self.model = spec.build(threads)
        self.path = FramePath.of(stage, self.model, ClassifierConfig())
        self.spec, self.threads, self.every, self.scale = spec, threads, every, scale
        self.name = f"{stage.detector.name} every {every} scale {scale:g} + {spec.name} @{threads}t"
        self._to_common = label_order(self.model.labels)
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

    def add(self, ms: dict[str, float], ran: bool, found: list[tuple[tuple, int]], truth: Clip | None, i: int) -> None:
        """One frame's stage times and faces, scored against the clip's truth where known."""
        for key, v in ms.items():
            self.ms.setdefault(key, []).append(v)
        if ran:
            self.detect_runs_ms.append(ms["detect"])
        self.faces += len(found)
        self.frames_with_faces += bool(found)
        if truth is None:
            return
        for box, label in zip(truth.boxes[i], truth.labels[i], strict=True):
            self.truth_faces += 1
            best = max(found, key=lambda f: iou(f[0], box), default=None)
            if best is not None and iou(best[0], box) >= 0.3:
                self.matched += 1
                self.correct += int(best[1] == int(label))


def run_pipeline_unpaced(
    lanes: list[Any], fs: FrameSet, recs: list[PipeRecord], chunk: int, quiet: bool, warmup: int
) -> None:
    """As fast as possible, every frame with faces classified: the stage costs."""
    n = len(fs.frames)
    timing.warm_up(len(lanes), min(warmup, n), lambda j, i: lanes[j].step(fs.frames[i], True))
    for lane in lanes:
        lane.reset()

    def work(j: int, start: int, stop: int) -> None:
        for i in range(start, stop):
            recs[j].add(*lanes[j].step(fs.frames[i], True), fs.truth, i)

    def progress(k: int, rounds: int, stop: int) -> None:
        log(quiet, f"unpaced round {k + 1}/{rounds} ({stop}/{n} frames)")

    shares = timing.interleaved(len(lanes), n, chunk, work, progress)
    for rec, own in zip(recs, shares, strict=True):
        rec.round_cpu = [s.cpu_percent for s in own]


def run_pipeline_paced(lane: Any, frames: list[np.ndarray], fps: float, max_rate: float) -> dict[str, Any]:
    """Frames offered at ``fps`` like a camera; classification gated at ``max_rate`` per second
    exactly as the daemon gates it. Returns CPU % of one core over the run and late frames."""
    lane.reset()
    gap = 1.0 / max_rate if max_rate else 0.0
    last_classify = -1e9
    classified = 0

    def work(i: int, slot: float) -> None:
        nonlocal last_classify, classified
        allow = gap == 0 or slot - last_classify >= gap
        _, _, found = lane.step(frames[i], allow)
        if found and allow:
            last_classify = slot
            classified += 1

    share, late = timing.paced(len(frames), fps, work)
    wall = share.wall_s
    return {
        "fps_target": fps,
        "max_rate": max_rate,
        "frames": len(frames),
        "seconds": wall,
        "fps_achieved": len(frames) / wall if wall > 0 else None,
        "cpu_percent_one_core": share.cpu_percent if wall > 0 else None,
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
        "fps": rate(total.get("mean")),
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
    return notes + unmeasured_notes(result)


def _fer_package_lane(frames: list[np.ndarray]) -> FerPackageLane:
    lane = FerPackageLane()
    lane.prepare(frames)
    return lane


def _prepare(args: argparse.Namespace) -> tuple[list[ModelSpec], FrameSet, list[Any], list[dict[str, str]]] | int:
    """The models, the frames in memory and the lanes; or the exit code of what failed."""
    from edgefer.sources import SourceError

    if not args.source:
        return error("--mode pipeline needs --source (demo, fer2013, a video file or a folder)", 2)
    try:
        specs = daemon_specs(args.model, ClassifierConfig().model, args.flip_margin)
        log(args.quiet, f"loading frames from {args.source}")
        fs = load_frames(args)
    except (ModelError, DatasetError, SourceError, OSError, ValueError) as exc:
        return error(exc)
    if args.write_clip:
        log(args.quiet, f"wrote {write_clip(fs.frames, Path(args.write_clip), args.fps)}")
    try:
        lanes: list[Any] = [
            EdgeferLane(det, every, scale, spec, args.threads)
            for det in args.detector
            for every in args.detect_every
            for scale in args.detect_scale
            for spec in specs
        ]
    except ImportError as exc:
        return error(f"a detector is not importable ({exc}); mediapipe needs the mediapipe extra")
    except (ModelError, RuntimeError, ValueError) as exc:
        return error(exc)
    peers, not_measured = measurable(args.peer, lambda _: _fer_package_lane(fs.frames), lambda m: log(args.quiet, m))
    return specs, fs, lanes + peers, not_measured


def _measure(args: argparse.Namespace, lanes: list[Any], fs: FrameSet, max_rate: float) -> tuple[list, dict]:
    """Each lane's unpaced and paced figures, and the host they were measured on."""
    n = len(fs.frames)
    log(args.quiet, f"{n} frames in memory; lanes: {'; '.join(lane.name for lane in lanes)}")
    recs = [PipeRecord() for _ in lanes]
    run_pipeline_unpaced(lanes, fs, recs, args.chunk, args.quiet, warmup=min(args.warmup, n))
    host = host_info()
    entries = []
    for lane, rec in zip(lanes, recs, strict=True):
        paced = None
        if args.fps > 0:
            log(args.quiet, f"paced at {args.fps:g} fps ({n / args.fps:.1f} s): {lane.name}")
            paced = run_pipeline_paced(lane, fs.frames, args.fps, 0.0 if isinstance(lane, FerPackageLane) else max_rate)
        entries.append(pipe_result(lane, rec, n, paced, host["cores_usable"] or 1))
    return entries, host


def run_pipeline(args: argparse.Namespace) -> int:
    prepared = _prepare(args)
    if isinstance(prepared, int):
        return prepared
    specs, fs, lanes, not_measured = prepared
    n = len(fs.frames)
    max_rate = ClassifierConfig().max_rate if args.max_rate is None else args.max_rate
    entries, host = _measure(args, lanes, fs, max_rate)
    models = []
    for spec in specs:
        m = next(lane.model for lane in lanes if isinstance(lane, EdgeferLane) and lane.spec == spec)
        models.append(
            {"name": spec.name, "path": shown_path(spec.path), "runtime": m.runtime, "storage_mb": m.size_bytes / MIB}
        )
    faces = FacesConfig()
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
            "faces": {"min_face": faces.min_face, "margin": faces.margin, "max_faces": faces.max_faces},
        },
        "host": host,
        "paper": PAPER,
        "models": models,
        "variants": entries,
        "peers_not_measured": not_measured,
    }
    result["notes"] = notes_pipeline(result)
    return finish(args, result)
