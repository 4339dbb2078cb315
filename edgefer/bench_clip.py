"""``edgefer-bench --mode clip``: one composited video through edgefer and fer, the shares each
tool's user would read against the mix of faces actually shown.

The clip is :func:`edgefer.bench.composite_frames`: FER2013 faces (one split, the four
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
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edgefer import LABELS
from edgefer.bench_lanes import (
    K,
    Seen,
    counted_shares,
    daemon_shares,
    make_lanes,
    num,
    pct,
    ratio,
    run_both,
    share_cells,
    track_rows,
    truth_cells,
    write_result,
)
from edgefer.datasets import Dataset, DatasetError, find_root, load_fer2013

HOLD = 8
WINDOW = 300
WARMUP = 10
MATCH_IOU = 0.3


def shares_over(seen: list[Seen], truth: np.ndarray, daemon: bool) -> dict[str, Any]:
    """One lane's shares over a run of frames, against the label mix of those frames."""
    mix = np.bincount(truth, minlength=K) / len(truth)
    if daemon:
        out = daemon_shares(track_rows([(s.tracks or [], s.probs) for s in seen]), mix)
    else:
        out = counted_shares(np.concatenate([s.labels for s in seen]), mix)
    return {"frames": len(seen), "truth_mix": {lab: round(float(mix[j]), 6) for j, lab in enumerate(LABELS)}, **out}


def detection(seen: list[Seen], truth: np.ndarray, boxes: np.ndarray) -> dict[str, Any]:
    """Faces found per class: frames where a returned box overlaps the face shown (IoU >= 0.3,
    as pipeline mode scores it), over the frames showing that class; and what the found faces
    were read as."""
    from edgefer.bench import _iou

    found = np.zeros(len(seen), bool)
    right = np.zeros(len(seen), bool)
    false_boxes = 0
    for i, s in enumerate(seen):
        overlaps = [_iou(b, boxes[i]) for b in s.boxes]
        best = int(np.argmax(overlaps)) if overlaps else -1
        found[i] = best >= 0 and overlaps[best] >= MATCH_IOU
        right[i] = found[i] and int(s.labels[best]) == int(truth[i])
        false_boxes += len(s.boxes) - int(found[i])
    return {
        "detection_rate": float(found.mean()),
        "detection_rate_per_class": {
            lab: float(found[truth == j].mean()) if (truth == j).any() else None for j, lab in enumerate(LABELS)
        },
        "frames_per_class": {lab: int((truth == j).sum()) for j, lab in enumerate(LABELS)},
        "false_boxes_per_frame": false_boxes / len(seen),
        "accuracy_found": float(right.sum() / found.sum()) if found.any() else None,
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
    from edgefer.bench import FRAME_SIZE, composite_frames

    n = shots * HOLD
    clip = composite_frames(data.images, data.labels, n, FRAME_SIZE, 1, seed, hold=HOLD)
    for i in range(min(WARMUP, n)):
        run_both(lanes, clip.frames[i], i)  # untimed, then forgotten: tracks start clean
    for lane in lanes:
        lane.reset()
    seen: list[list[Seen]] = []
    for i, frame in enumerate(clip.frames):
        seen.append(run_both(lanes, frame, i))
        if not quiet and (i + 1) % 400 == 0:
            print(f"edgefer-bench: seed {seed}: {i + 1}/{n} frames", file=sys.stderr, flush=True)
    truth, boxes = clip.labels[:, 0], clip.boxes[:, 0]
    del clip
    per = {
        lane.name: lane_result([s[j] for s in seen], truth, boxes, lane.name == "edgefer")
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
    f"Clip: FER2013 faces composited one per 640x480 frame (edgefer.bench.composite_frames), each 48x48 face "
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
    "Found = a returned box overlapping the face shown with IoU >= 0.3; other boxes count as false. Accuracy "
    "(found) = the found face's argmax label against the truth.",
    "CPU = process CPU time (all threads) of each pipeline's call on each frame, the two alternating; the ratio "
    "is edgefer's mean per frame over fer's, per seed, then averaged. fer is fer 25.10.3's detect_emotions "
    "rebuilt from its source on the same LiteRT runtime (edgefer/peer_fer.py).",
]


def _seed_rows(result: dict[str, Any]) -> list[str]:
    lines = []
    for s in result["seeds"]:
        for name, r in s["lanes"].items():
            c = r["clip"]
            cover = f"{c['covered_count']}/4" if "covered_count" in c else "–"
            wcover = pct(r.get("window_coverage")) if "window_coverage" in r else "–"
            tracks = str(c["tracks"]) if "tracks" in c else "–"
            lines.append(
                f"| {s['seed']} | {name} | {r['faces']} | {tracks} | {pct(r['detection_rate'])} "
                f"| {num(r['false_boxes_per_frame'], '{:.3f}')} | {pct(r['accuracy_found'])} | {c['l1']:.3f} | {cover} "
                f"| {num(r['window_l1_mean'], '{:.3f}')} | {wcover} | {r['cpu_ms_per_frame']:.2f} |"
            )
    for name, m in result["mean"].items():
        if name == "cpu_ratio_edgefer_over_fer":
            continue
        cover = pct(m["clip_coverage"]) if "clip_coverage" in m else "–"
        wcover = pct(m["window_coverage"]) if "window_coverage" in m else "–"
        tracks = num(m["tracks_clip"], "{:.1f}") if "tracks_clip" in m else "–"
        lines.append(
            f"| mean | {name} | | {tracks} | {pct(m['detection_rate'])} | {num(m['false_boxes_per_frame'], '{:.3f}')} "
            f"| {pct(m['accuracy_found'])} | {m['l1_clip']:.3f} | {cover} | {num(m.get('window_l1_mean'), '{:.3f}')} "
            f"| {wcover} | {m['cpu_ms_per_frame']:.2f} |"
        )
    return lines


def markdown(result: dict[str, Any]) -> str:
    d = result["data"]
    lines = [
        f"## edgefer-bench clip: FER2013 {d['split']} ({result['created']})",
        "",
        f"{d['shots']} shots x {d['hold']} frames = {d['frames']} frames per seed, one face per frame; seeds "
        f"{', '.join(str(s['seed']) for s in result['seeds'])}; windows of {d['window']} frames.",
        "",
        "| seed | pipeline | faces | tracks | face found | false boxes / frame | accuracy (found) | shares L1 (clip) "
        "| intervals cover (clip) | L1 per window (mean) | intervals cover (windows) | CPU ms / frame |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *_seed_rows(result),
    ]
    ratios = [
        f"seed {s['seed']} {s['cpu_ratio_edgefer_over_fer']:.2f}"
        for s in result["seeds"]
        if s["cpu_ratio_edgefer_over_fer"]
    ]
    if ratios:
        mean = result["mean"]["cpu_ratio_edgefer_over_fer"]
        lines += ["", f"CPU per frame, edgefer / fer (same run): {', '.join(ratios)}; mean {mean:.2f}"]
    lines += ["", "Shares over the whole clip (edgefer with its 95 % interval):", ""]
    lines += ["| seed | who | " + " | ".join(LABELS) + " |", "|---|---|" + "---|" * K]
    for s in result["seeds"]:
        first = next(iter(s["lanes"].values()))["clip"]
        lines.append(f"| {s['seed']} | truth | {truth_cells(first['truth_mix'])} |")
        lines += [f"| {s['seed']} | {name} | {share_cells(r['clip'])} |" for name, r in s["lanes"].items()]
    lines += ["", "Faces found per class (mean over seeds): frames where the face shown was found / all showing it:"]
    lines += [""]
    lines += ["| pipeline | " + " | ".join(LABELS) + " |", "|---|" + "---|" * K]
    for name, m in result["mean"].items():
        if name != "cpu_ratio_edgefer_over_fer":
            lines.append(f"| {name} | " + " | ".join(pct(m["detection_rate_per_class"][lab]) for lab in LABELS) + " |")
    if result.get("peer_not_measured"):
        lines += ["", f"**{result['peer_not_measured']}**"]
    lines += ["", "Notes:", ""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def run_clip(args: argparse.Namespace) -> int:
    if args.shots < 1 or not args.seeds:
        print("edgefer-bench: --mode clip needs --shots >= 1 and at least one --seeds value", file=sys.stderr)
        return 2
    try:
        data = load_fer2013(find_root(args.data_dir), args.split, skip_bad=True, limit_per_class=args.limit_per_class)
    except DatasetError as exc:
        print(f"edgefer-bench: {exc}", file=sys.stderr)
        return 1
    from edgefer.bench import host_info

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
    write_result(Path(args.out or "benchmarks/results/clip"), "clip", result, markdown(result), args.quiet)
    return 0
