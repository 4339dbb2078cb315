"""Which face detector should the daemon run: recall, false boxes and CPU cost on real photographs.

    python -m benchmarks.detectors --data-dir ../shared/datasets/real-posed --out benchmarks/results/detectors

Every photograph of the real-posed sets (rafd, williams; angry, happy, sad, neutral) is turned
into what a camera gives the daemon: grayscale, 640 px on its long side. Each detector then sees it
exactly as the daemon runs it, through ``edgefer.faces.FaceStage`` (``detect_scale`` 0.5,
``min_face`` 40, a fresh stage per image), so the detector's own thresholds, the downscale and the
minimum size all count. Each photograph holds exactly one face, so:

- recall = images with at least one box / images;
- false boxes per image = the boxes beyond one per image, sum of max(len(boxes) - 1, 0) over the
  images / images (a miss plus a stray box elsewhere is not caught: recall and this figure come
  from box counts only);
- CPU ms per frame = ``time.process_time`` around the stage's detection, median over images and
  rounds. Process time, not wall time: it counts every thread a detector starts (OpenCV's cascade
  spreads over cores), which is what a Pi pays. The detectors take turns on each image, so drift in
  the machine's other load hits all of them alike, and each is also given as a ratio to Haar
  measured in the same run, which holds where absolute times do not.

Writes detectors.json (every figure, the host) and detectors.md (the table) into --out.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from benchmarks import log, save_results

SETS = ("rafd", "williams")
CLASSES = ("angry", "happy", "sad", "neutral")
#: the order of the table's rows; mediapipe only where its package imports
DETECTORS = ("haar", "blazeface", "blazeface-full", "mediapipe")
LONG_SIDE = 640
DETECT_SCALE = 0.5
MIN_FACE = 40


def load_frames(data_dir: Path, set_name: str) -> list[tuple[str, np.ndarray]]:
    """(relative name, grayscale frame) for every image of a set's four classes, scaled to
    ``LONG_SIDE``: detection cost and the smallest findable face depend on the frame's size, so
    the photographs are measured at a camera's size, not their own (1000 to 2000 px)."""
    frames = []
    for cls in CLASSES:
        for path in sorted((data_dir / set_name / cls).glob("*")):
            gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if gray is None:
                continue
            scale = LONG_SIDE / max(gray.shape)
            frames.append(
                (f"{cls}/{path.name}", cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
            )
    return frames


def measure(detectors: dict[str, Any], frames: list[tuple[str, np.ndarray]], rounds: int) -> dict[str, dict]:
    """Per detector: recall, false boxes per image, CPU ms per frame (median) and the box count
    of every image. Boxes come from the first round (detection is deterministic); every round
    adds times. One warm-up detection per detector first, so no one pays for allocation."""
    from edgefer.faces import FaceStage

    stages = {
        n: FaceStage(d, detect_scale=DETECT_SCALE, detect_every=1, min_face=MIN_FACE) for n, d in detectors.items()
    }
    for stage in stages.values():
        stage.faces(frames[0][1])
    counts: dict[str, list[int]] = {n: [] for n in stages}
    times: dict[str, list[float]] = {n: [] for n in stages}
    for r in range(rounds):
        for _, gray in frames:
            for name, stage in stages.items():  # interleaved: every detector on this image in turn
                stage.reset()
                start = time.process_time()
                boxes, _ = stage.faces(gray)
                times[name].append((time.process_time() - start) * 1000)
                if r == 0:
                    counts[name].append(len(boxes))
    out = {}
    for name in stages:
        n = len(counts[name])
        out[name] = {
            "images": n,
            "recall": sum(c > 0 for c in counts[name]) / n,
            "false_boxes_per_image": sum(max(c - 1, 0) for c in counts[name]) / n,
            "cpu_ms_median": statistics.median(times[name]),
            "boxes": {frames[i][0]: counts[name][i] for i in range(n)},
        }
    if "haar" in out:
        for fig in out.values():
            fig["cpu_ratio_to_haar"] = fig["cpu_ms_median"] / out["haar"]["cpu_ms_median"]
    return out


SIZES = (40, 60, 80, 100, 130, 160)


def recall_by_size(detectors: dict[str, Any], frames: list[tuple[str, np.ndarray]], seed: int = 0) -> dict:
    """Recall when the face is as small as a room camera shows it: each photograph scaled so
    that its face (BlazeFace full range's box on the 640 px photo) is ``side`` px wide and
    pasted at a random place into a 640x480 frame on a textured background. A person 2 m from
    a Pi camera module (about 62 degrees across 640 px) shows a face about 50 px wide."""
    from edgefer.bench.clips import background
    from edgefer.faces import FaceStage

    ref = FaceStage(detectors["blazeface-full"], detect_scale=1.0, min_face=20)
    widths = []
    for _, gray in frames:
        ref.reset()
        boxes, _ = ref.faces(gray)
        widths.append(boxes[0].w if boxes else 0)
    out: dict[str, dict[str, float]] = {}
    for name, det in detectors.items():
        rng = np.random.default_rng(seed)
        stage = FaceStage(det, detect_scale=DETECT_SCALE, min_face=20)
        out[name] = {}
        for side in SIZES:
            hits = n = 0
            for (_, gray), w in zip(frames, widths, strict=True):
                if not w:
                    continue
                small = cv2.resize(gray, None, fx=side / w, fy=side / w, interpolation=cv2.INTER_AREA)[:480, :640]
                frame = background((640, 480), rng)
                y, x = int(rng.integers(0, 481 - small.shape[0])), int(rng.integers(0, 641 - small.shape[1]))
                frame[y : y + small.shape[0], x : x + small.shape[1]] = small
                stage.reset()
                hits += bool(stage.faces(frame)[0])
                n += 1
            out[name][str(side)] = hits / max(n, 1)
    return out


def table(result: dict[str, Any]) -> str:
    """The Markdown table: one row per set and detector."""
    lines = [
        f"## Face detectors on real photographs ({result['date']})",
        "",
        f"Grayscale, {LONG_SIDE} px long side; FaceStage with detect_scale {DETECT_SCALE}, min_face {MIN_FACE}. "
        "One face per image: recall = images with a box; false boxes = boxes beyond one per image, per image. "
        "CPU = process time per detection (all threads), median; ratio to Haar from the same interleaved run.",
        "",
        "| set | detector | images | recall | false boxes / image | CPU ms / frame | x Haar |",
        "|---|---|---|---|---|---|---|",
    ]
    for set_name, per_det in result["sets"].items():
        for name, f in per_det.items():
            ratio = f.get("cpu_ratio_to_haar")
            lines.append(
                f"| {set_name} | {name} | {f['images']} | {f['recall']:.1%} | {f['false_boxes_per_image']:.3f} | "
                f"{f['cpu_ms_median']:.2f} | {'' if ratio is None else f'{ratio:.2f}'} |"
            )
    if result.get("by_size"):
        lines += [
            "",
            "Recall by face width in a 640x480 frame (real photographs scaled and pasted; detect_scale "
            f"{DETECT_SCALE}, min_face 20): what a room camera shows.",
            "",
            "| detector | " + " | ".join(f"{s} px" for s in SIZES) + " |",
            "|---|" + "---|" * len(SIZES),
        ]
        for name, row in result["by_size"].items():
            lines.append(f"| {name} | " + " | ".join(f"{row[str(s)]:.0%}" for s in SIZES) + " |")
    host = result["host"]
    lines += [
        "",
        f"Host: {host['cpu']}, {host['cores_usable']} usable cores, Python {host['python']}, {host['runtime']}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, required=True, help="the real-posed folder (rafd/, williams/)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/detectors"))
    ap.add_argument("--rounds", type=int, default=3, help="timing passes over the images (default 3)")
    args = ap.parse_args(argv)

    from edgefer.bench.host import cpu_label, host_info
    from edgefer.classifier import load_interpreter_class
    from edgefer.faces import available_detectors, make_detector

    usable = available_detectors()
    detectors = {n: make_detector(n) for n in DETECTORS if n in usable}
    log(f"detectors: {', '.join(detectors)}")
    sets = {}
    for set_name in SETS:
        frames = load_frames(args.data_dir, set_name)
        if not frames:
            raise SystemExit(f"no images under {args.data_dir / set_name}")
        log(f"{set_name}: {len(frames)} images")
        sets[set_name] = measure(detectors, frames, args.rounds)
    by_size = None
    if "blazeface-full" in detectors:
        log("recall by face size")
        by_size = recall_by_size(detectors, [f for s in SETS for f in load_frames(args.data_dir, s)])
    host = host_info()
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {"long_side": LONG_SIDE, "detect_scale": DETECT_SCALE, "min_face": MIN_FACE, "rounds": args.rounds},
        "sets": sets,
        "by_size": by_size,
        "host": {
            "cpu": cpu_label(host),
            "cores_usable": host["cores_usable"],
            "python": host["python"],
            "runtime": load_interpreter_class()[1],
            "opencv": cv2.__version__,
            "detail": host,
        },
    }
    save_results(args.out, "detectors", table(result), result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
