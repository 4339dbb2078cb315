"""``edgefer-bench --mode clip``: one composited video through edgefer and fer, the shares each
tool's user would read against the mix of faces actually shown.

The clip is :func:`edgefer.bench.clips.composite_frames`: FER2013 faces (one split, the four
classes) pasted one per frame into a 640x480 textured frame, each shown for 8 frames (a
shot) while its slot drifts. The truth is known frame by frame, so the question "does the
published mix match what was in front of the camera?" has an exact answer, for the whole clip
(the longest window) and for each window of 300 frames (20 s at 15 fps).

edgefer runs as the daemon analyses a recording: its frame path with tracks across frames,
every frame classified, its shares and 95 % intervals from :func:`share_intervals` over the
tracks. fer runs on every frame as fer users run it, and its shares are the share of argmax
labels. Both get each frame one after the other, the order alternating.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edgefer import LABELS
from edgefer.bench.clips import FRAME_SIZE, composite_frames
from edgefer.bench.host import host_info
from edgefer.bench.lanes import Seen, lane_shares, make_lanes, run_all, warm_up
from edgefer.bench.output import error, log, write_result
from edgefer.bench.plots import clip_shares_png
from edgefer.bench.stats import K, by_label, l1, per_class, ratio
from edgefer.datasets import Dataset, DatasetError, find_root, load_fer2013

HOLD = 8
WINDOW = 300
WARMUP = 10


def shares_over(seen: list[Seen], truth: np.ndarray, daemon: bool) -> dict[str, Any]:
    """One lane's shares over a run of frames, against the label mix of those frames."""
    return {"frames": len(seen), **lane_shares(seen, truth, daemon)}


def on_face(box: tuple[int, int, int, int], face: np.ndarray) -> bool:
    """Whether a returned box's centre lies on the square the face was pasted into.

    Not IoU: each detector draws its own box around a face (BlazeFace's is about 0.77 of a
    FER2013 crop's side, and varies with the face), and a box well inside the face still finds
    it: its crop is what gets classified and counted. The estimator and detector-threshold
    benchmarks score their clips with it too (benchmarks/estimators.py)."""
    x, y, w, h = (float(v) for v in face)
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    return x <= cx <= x + w and y <= cy <= y + h


def detection(seen: list[Seen], truth: np.ndarray, boxes: np.ndarray) -> dict[str, Any]:
    """Faces found per class: frames where a returned box lies on the face shown
    (:func:`on_face`), over the frames showing that class; boxes beyond that one (off the face,
    or a second on it) are false; and what the found faces were read as."""
    found = np.zeros(len(seen), bool)
    right = np.zeros(len(seen), bool)
    false_boxes = 0
    for i, s in enumerate(seen):
        hits = [j for j, b in enumerate(s.boxes) if on_face(b, boxes[i])]
        found[i] = bool(hits)
        if hits:  # the largest box on the face is the one read as it
            best = max(hits, key=lambda j: s.boxes[j][2] * s.boxes[j][3])
            right[i] = int(s.labels[best]) == int(truth[i])
        false_boxes += len(s.boxes) - int(found[i])
    return {
        "detection_rate": float(found.mean()),
        "detection_rate_per_class": per_class(found, truth),
        "frames_per_class": {lab: int((truth == j).sum()) for j, lab in enumerate(LABELS)},
        "false_boxes_per_frame": false_boxes / len(seen),
        "accuracy_found": float(right.sum() / found.sum()) if found.any() else None,
    }


def on_crops(lane: Any, faces: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """The lane's classifier on the dataset crops of the faces shown, counted as its user counts
    them: the shares it would publish with a perfect face path (every face found, framed as in
    the dataset). Its distance to the truth is what the classifier alone misses on these faces;
    what the clip adds beyond it is the face path's."""
    rows = lane.on_crops(faces)
    mix = np.bincount(labels, minlength=K) / len(labels)
    shares = rows.mean(axis=0)
    return {
        "faces": len(faces),
        "accuracy": float((rows.argmax(axis=1) == labels).mean()),
        "shares": by_label(shares),
        "l1": l1(shares, mix),
    }


def lane_result(seen: list[Seen], truth: np.ndarray, boxes: np.ndarray, daemon: bool) -> dict[str, Any]:
    windows = [
        shares_over(seen[a : a + WINDOW], truth[a : a + WINDOW], daemon)
        for a in range(0, len(seen) - WINDOW + 1, WINDOW)
    ]
    cpu = np.array([s.cpu_ms for s in seen])
    out = {
        "faces": int(sum(len(s.boxes) for s in seen)),
        **detection(seen, truth, boxes),
        "clip": shares_over(seen, truth, daemon),
        "windows": windows,
        "window_l1_mean": float(np.mean([w["l1"] for w in windows])) if windows else None,
        "cpu_ms_per_frame": float(cpu.mean()),
        "cpu_ms_per_frame_median": float(np.median(cpu)),
    }
    if daemon and windows:
        out["window_coverage"] = sum(w["covered_count"] for w in windows) / (K * len(windows))
    return out


def measure_seed(lanes: list[Any], data: Dataset, shots: int, seed: int, quiet: bool) -> dict[str, Any]:
    n = shots * HOLD
    clip = composite_frames(data.images, data.labels, n, FRAME_SIZE, 1, seed, hold=HOLD)
    warm_up(lanes, clip.frames, WARMUP)
    for lane in lanes:
        lane.reset()  # what warming up tracked is forgotten: tracks start clean

    def progress(i: int) -> None:
        if (i + 1) % 400 == 0:
            log(quiet, f"seed {seed}: {i + 1}/{n} frames")

    seen = run_all(lanes, clip.frames, progress)
    truth, boxes = clip.labels[:, 0], clip.boxes[:, 0]
    shown = clip.images[::HOLD, 0]  # one face a shot, each on screen for HOLD frames
    del clip
    per = {
        lane.name: {
            **lane_result([s[j] for s in seen], truth, boxes, lane.name == "edgefer"),
            "crops": on_crops(lane, data.images[shown], data.labels[shown]),
        }
        for j, lane in enumerate(lanes)
    }
    cpu = ratio(per["edgefer"]["cpu_ms_per_frame"], per["fer"]["cpu_ms_per_frame"]) if "fer" in per else None
    return {"seed": seed, "frames": n, "shots": shots, "lanes": per, "cpu_ratio_edgefer_over_fer": cpu}


def mean_over(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """Each lane's figures averaged over seeds (coverage pooled over seeds and classes)."""
    out: dict[str, Any] = {}
    for name in seeds[0]["lanes"]:
        r = [s["lanes"][name] for s in seeds]
        m: dict[str, Any] = {
            key: float(np.mean([x[key] for x in r]))
            for key in ("detection_rate", "false_boxes_per_frame", "window_l1_mean", "cpu_ms_per_frame")
            if all(x.get(key) is not None for x in r)
        }
        m["l1_clip"] = float(np.mean([x["clip"]["l1"] for x in r]))
        m["l1_crops"] = float(np.mean([x["crops"]["l1"] for x in r]))
        m["accuracy_crops"] = float(np.mean([x["crops"]["accuracy"] for x in r]))
        m["detection_rate_per_class"] = {
            lab: float(np.mean([x["detection_rate_per_class"][lab] for x in r])) for lab in LABELS
        }
        acc = [x["accuracy_found"] for x in r if x["accuracy_found"] is not None]
        m["accuracy_found"] = float(np.mean(acc)) if acc else None
        if "covered_count" in r[0]["clip"]:
            m["clip_coverage"] = sum(x["clip"]["covered_count"] for x in r) / (K * len(r))
            m["tracks_clip"] = float(np.mean([x["clip"]["tracks"] for x in r]))
            covers = [x["window_coverage"] for x in r if "window_coverage" in x]
            m["window_coverage"] = float(np.mean(covers)) if covers else None
        out[name] = m
    ratios = [s["cpu_ratio_edgefer_over_fer"] for s in seeds if s["cpu_ratio_edgefer_over_fer"] is not None]
    out["cpu_ratio_edgefer_over_fer"] = float(np.mean(ratios)) if ratios else None
    return out


NOTES = [
    f"Clip: FER2013 faces composited one per 640x480 frame (edgefer.bench.clips.composite_frames), each 48x48 face "
    f"upscaled to 100-160 px and shown for {HOLD} frames while its slot drifts; truth = the label mix of the "
    "frames shown. Synthetic: real cameras see whole heads, not dataset crops.",
    "edgefer runs as the daemon analyses a recording: its defaults (edgefer.config.parse('')), tracks across "
    "frames, every frame classified; shares = edgefer.mood.share_intervals over the tracks of the whole clip and "
    f"of each full window of {WINDOW} frames (20 s at 15 fps). fer runs on every frame; its shares are the share "
    "of argmax labels over the faces it returns. L1 = sum over classes of |share - true share|.",
    "A detector that misses one emotion more than another biases the shares before any classification: the "
    "detection rate per class says how much. The 95 % intervals describe the spread among the faces that were "
    "found and tracked; they cannot account for faces the detector never found.",
    "In this clip a new face appears where the last one was, so a track can follow the slot across several "
    "faces: tracks are fewer than faces shown, which widens the intervals (they treat tracks as the independent "
    "unit); the track count is reported beside them.",
    "Found = a returned box whose centre lies on the square the face was pasted into (not IoU: each detector "
    "draws its own box around a face, and a box inside it is what gets read); other boxes, and a second box on "
    "the same face, count as false. Accuracy (found) = the largest found box's argmax label against the truth.",
    "Crops = the same pipeline's classifier on the dataset crops of the faces shown, counted as its user counts "
    "them (edgefer: calibrated probabilities averaged; fer: argmax labels): the shares a perfect face path would "
    "give. Their distance to the truth is what the classifier alone misses on the faces drawn; a clip's L1 "
    "beyond it is the face path's, and one below it is the face path's errors cancelling the classifier's. "
    "Over a few hundred faces it is mostly which faces were drawn: read the seeds together.",
    "CPU = process CPU time (all threads) of each pipeline's call on each frame, the two alternating; the ratio "
    "is edgefer's mean per frame over fer's, per seed, then averaged. fer is fer 25.10.3's detect_emotions "
    "rebuilt from its source on the same LiteRT runtime (edgefer/bench/peers/fer.py).",
]


def run_clip(args: argparse.Namespace) -> int:
    if args.shots < 1 or not args.seeds:
        return error("--mode clip needs --shots >= 1 and at least one --seeds value", 2)
    try:
        data = load_fer2013(find_root(args.data_dir), args.split, skip_bad=True, limit_per_class=args.limit_per_class)
    except DatasetError as exc:
        return error(exc)
    lanes, peer_note = make_lanes(args, stills=False)
    seeds = [measure_seed(lanes, data, args.shots, seed, args.quiet) for seed in args.seeds]
    result = {
        "tool": "edgefer-bench",
        "mode": "clip",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": {
            "dataset": "fer2013",
            "split": args.split,
            "faces_available": data.class_counts(),
            "shots": args.shots,
            "hold": HOLD,
            "frames": args.shots * HOLD,
            "window": WINDOW,
            "skipped": data.skipped,
        },
        "pipelines": {lane.name: lane.describe() for lane in lanes},
        "peer_not_measured": peer_note,
        "seeds": seeds,
        "mean": mean_over(seeds),
        "notes": NOTES,
        "host": host_info(),
    }
    out = Path(args.out or "benchmarks/results/clip")
    out.mkdir(parents=True, exist_ok=True)
    result["shares_png"] = clip_shares_png(result, out / "shares.png").name
    write_result(out, "clip", result, args.quiet)
    return 0
