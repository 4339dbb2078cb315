"""``edgefer-bench --mode faces``: labelled photographs through edgefer and fer, side by side.

A folder of labelled photos (``DIR/<class>/*`` or ``DIR/<set>/<class>/*``; classes other than
angry, happy, sad and neutral are ignored) stands for what a user points either tool at. Each
photo is read in grayscale and shrunk to 640 px on its long side, the size of a camera frame,
then given to both pipelines, one after the other, photo by photo. Each photo holds one face,
so every box beyond the first is a false one, and the largest box is the one scored.

What is reported is what each tool's user gets: how often a face is found, how many false
faces come with it, how often the largest face is read right, and the emotion shares each
tool's users would compute from all the faces it returns (the daemon's mean probabilities
with their 95 % intervals; fer's share of argmax labels), against the folder's true mix.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edgefer import LABELS
from edgefer.bench.host import host_info
from edgefer.bench.lanes import Seen, lane_shares, make_lanes, run_all, warm_up
from edgefer.bench.output import error, log, write_result
from edgefer.bench.plots import confusion_png
from edgefer.bench.stats import per_class, ratio
from edgefer.datasets import DatasetError
from edgefer.metrics import summary

LONG_SIDE = 640
IMAGE_EXT = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
WARMUP = 2


@dataclass
class Photo:
    set: str
    label: int
    name: str
    gray: np.ndarray


def find_photos(root: Path) -> list[tuple[str, int, Path]]:
    """(set, label index, file) of every image under ``root`` in either layout."""

    def has_classes(d: Path) -> bool:
        return any((d / lab).is_dir() for lab in LABELS)

    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder (--data-dir)")
    if has_classes(root):
        sets = [(root.resolve().name, root)]
    else:
        sets = [(d.name, d) for d in sorted(root.iterdir()) if d.is_dir() and has_classes(d)]
    found = [
        (name, j, f)
        for name, d in sets
        for j, lab in enumerate(LABELS)
        if (d / lab).is_dir()
        for f in sorted((d / lab).iterdir())
        if f.suffix.lower() in IMAGE_EXT and f.is_file()
    ]
    if not found:
        raise DatasetError(f"{root}: no images in <class>/ or <set>/<class>/ folders ({', '.join(LABELS)})")
    return found


def load_photo(path: Path) -> np.ndarray | None:
    """The photo in grayscale, at most :data:`LONG_SIDE` px on its long side (area-averaged
    when shrunk, as a camera's scaler would); None when it cannot be decoded."""
    import cv2

    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if gray is None:
        return None
    h, w = gray.shape
    s = LONG_SIDE / max(h, w)
    if s < 1:
        gray = cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return gray


def block(seen: list[Seen], truth: np.ndarray, daemon: bool) -> dict[str, Any]:
    """Every figure of one pipeline on one group of photos."""
    n = len(seen)
    boxes = np.array([len(s.boxes) for s in seen])
    detected = boxes > 0
    pred = np.array([int(s.labels[s.largest()]) if s.boxes else -1 for s in seen])  # type: ignore[index]
    correct = int(((pred == truth) & detected).sum())
    scored = summary(truth[detected], pred[detected], LABELS) if detected.any() else None
    cpu = np.array([s.cpu_ms for s in seen])
    return {
        "photos": n,
        "detected": int(detected.sum()),
        "detection_rate": float(detected.mean()),
        "detection_rate_per_class": per_class(detected, truth),
        "boxes": int(boxes.sum()),
        "false_boxes": int(np.maximum(boxes - 1, 0).sum()),
        "false_boxes_per_photo": float(np.maximum(boxes - 1, 0).mean()),
        "faces_per_photo": float(boxes.mean()),
        "correct": correct,
        "accuracy": correct / int(detected.sum()) if detected.any() else None,
        "accuracy_all_photos": correct / n,
        "macro_f1": float(np.mean([scored["f1"][LABELS[j]] for j in np.unique(truth[detected])])) if scored else None,
        "recall": scored["recall"] if scored else None,
        "confusion": scored["confusion"] if scored else None,
        **lane_shares(seen, truth, daemon),
        "cpu_ms_median": float(np.median(cpu)),
        "cpu_ms_mean": float(cpu.mean()),
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(args.data_dir)
    found = find_photos(root)
    photos, skipped = [], []
    for set_name, label, path in found:
        gray = load_photo(path)
        if gray is None:
            skipped.append(f"{set_name}/{LABELS[label]}/{path.name}")
        else:
            photos.append(Photo(set_name, label, path.name, gray))
    lanes, peer_note = make_lanes(args, stills=True)
    grays = [p.gray for p in photos]
    warm_up(lanes, grays, WARMUP)

    def progress(i: int) -> None:
        if (i + 1) % 50 == 0:
            log(args.quiet, f"{i + 1}/{len(photos)} photos")

    seen = run_all(lanes, grays, progress)
    truth = np.array([p.label for p in photos])
    sets = sorted({p.set for p in photos})
    groups = {
        "all": np.arange(len(photos)),
        **{s: np.array([i for i, p in enumerate(photos) if p.set == s]) for s in sets},
    }
    results = {
        lane.name: {
            g: block([seen[i][j] for i in idx], truth[idx], lane.name == "edgefer") for g, idx in groups.items()
        }
        for j, lane in enumerate(lanes)
    }
    cpu_ratio = None
    if "fer" in results:
        cpu_ratio = {
            g: ratio(results["edgefer"][g]["cpu_ms_median"], results["fer"][g]["cpu_ms_median"]) for g in groups
        }
    return {
        "tool": "edgefer-bench",
        "mode": "faces",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": {
            "root": root.resolve().name,
            "long_side": LONG_SIDE,
            "sets": {
                s: {lab: int(sum(1 for p in photos if p.set == s and p.label == j)) for j, lab in enumerate(LABELS)}
                for s in sets
            },
            "skipped": skipped,
        },
        "pipelines": {lane.name: lane.describe() for lane in lanes},
        "peer_not_measured": peer_note,
        "groups": list(groups),
        "results": results,
        "cpu_ratio_edgefer_over_fer": cpu_ratio,
    }


def confusion_pngs(result: dict[str, Any], out: Path) -> None:
    result["confusion_png"] = {}
    for name, groups in result["results"].items():
        a = groups["all"]
        if a["confusion"] is None:
            continue
        png = out / f"confusion-{name}.png"
        title = f"{name}: {result['data']['root']}, largest face, {a['detected']} of {a['photos']} photos with a face"
        confusion_png(np.array(a["confusion"]), LABELS, png, title)
        result["confusion_png"][name] = png.name


NOTES = [
    "Each photo holds one posed face: detection = photos with at least one box; false boxes = boxes beyond one "
    "per photo; accuracy and macro-F1 score the largest box of the photos where one was found "
    "('of all' counts a photo without a face as wrong); macro-F1 averages the classes the group holds "
    "(williams has no neutral).",
    "Shares come from every face a pipeline returns, false boxes included, as its user would count them: "
    "edgefer's are the daemon's (mean probabilities, edgefer.mood.share_intervals, each face of a still its "
    "own track, 95 % interval); fer's are the share of argmax labels over its faces. L1 = sum over the four "
    "classes of |share - true share| (0 best, 2 worst).",
    "Photos are read in grayscale and shrunk to 640 px on the long side before timing; both pipelines get "
    "the same array, one after the other, their order alternating photo by photo. CPU = process CPU time "
    "(all threads) of the call; the ratio is edgefer's median over fer's, measured in the same run.",
    "fer is fer 25.10.3's detect_emotions rebuilt from its source (edgefer/bench/peers/fer.py) on the same LiteRT "
    "runtime: OpenCV Haar on the full frame (scaleFactor 1.1, minNeighbors 5, minSize 50), box squared and "
    "widened 10 px, 40 px frame padding, 64x64, [-1, 1], its emotion_model_quantized.tflite; its 7 outputs "
    "are cut to the 4 classes.",
    "Posed expressions of few people: the figures compare the two pipelines on the same photos, they do not "
    "estimate accuracy on candid faces.",
]


def run_faces(args: argparse.Namespace) -> int:
    if not args.data_dir:
        return error("--mode faces needs --data-dir (DIR/<class>/* or DIR/<set>/<class>/*)", 2)
    try:
        result = measure(args)
    except DatasetError as exc:
        return error(exc)
    out = Path(args.out or "benchmarks/results/faces")
    out.mkdir(parents=True, exist_ok=True)
    confusion_pngs(result, out)
    result["notes"] = NOTES
    result["host"] = host_info()
    write_result(out, "faces", result, args.quiet)
    return 0
