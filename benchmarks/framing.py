"""How each face detector's box relates to the crops the classifier learned from.

The classifier was trained on FER2013, whose faces are tight 48x48 crops. A detector draws
its own box around a face, and the daemon's crop must reproduce FER2013's framing from that
box, or the classifier sees hair and background it never saw in training. This measures the
mapping on training material only:

1. FER2013 *training* faces are upscaled (110-230 px) and pasted into 640x480 frames on the
   same textured backgrounds the pipeline benchmark uses;
2. each frame goes through the daemon's face stage (detect at half size, as configured);
3. for every detected face, the pasted square (the FER2013 crop) is expressed relative to the
   box: scale = crop side / box side, dx, dy = crop centre - box centre in box widths/heights.

The medians become ``edgefer.faces.FRAMING``. Then, as a check and never to choose, the same
framing and a few plain margins are scored on real photographs (``--check-dir``, e.g.
real-posed): detection and 4-class accuracy of the largest face per photo.

    python -m benchmarks.framing --data-dir ../shared/datasets/fer2013 \\
        --check-dir ../shared/datasets/real-posed --out benchmarks/results/framing
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from edgefer import LABELS
from edgefer.bench.clips import background
from edgefer.config import FacesConfig, parse
from edgefer.datasets import find_root, load_fer2013
from edgefer.faces import FRAMING, Framing, available_detectors, build_face_stage, crop_face
from edgefer.service import build_classifier

MARGINS = (0.0, 0.025, 0.05, 0.1, 0.15)


def measure(detector: str, images: np.ndarray, n: int, seed: int) -> dict:
    """Median framing of FER2013 crops relative to ``detector``'s boxes, with spreads."""
    rng = np.random.default_rng(seed)
    stage = build_face_stage(replace(FacesConfig(), detector=detector, detect_every=1))
    rel, tried = [], 0
    for i in rng.permutation(len(images))[:n]:
        side = int(rng.integers(110, 231))
        frame = background((640, 480), rng)
        x, y = int(rng.integers(0, 640 - side)), int(rng.integers(0, 480 - side))
        frame[y : y + side, x : x + side] = cv2.resize(images[i], (side, side), interpolation=cv2.INTER_CUBIC)
        stage.reset()
        boxes, _ = stage.faces(frame)
        tried += 1
        inside = [b for b in boxes if x <= b.x + b.w / 2 <= x + side and y <= b.y + b.h / 2 <= y + side]
        if not inside:
            continue
        b = max(inside, key=lambda b: b.w * b.h)
        rel.append((side / max(b.w, b.h), (x + side / 2 - b.x - b.w / 2) / b.w, (y + side / 2 - b.y - b.h / 2) / b.h))
    r = np.asarray(rel)
    if not len(r):
        return {"detector": detector, "faces": tried, "detected": 0}
    q = {k: np.percentile(r[:, j], [25, 50, 75]).round(3).tolist() for j, k in enumerate(("scale", "dx", "dy"))}
    return {"detector": detector, "faces": tried, "detected": len(r), "quartiles": q}


def photos(root: Path) -> list[tuple[Path, int]]:
    """``root/<set>/<class>/*`` (or ``root/<class>/*``) for the four classes."""
    sets = [d for d in sorted(root.iterdir()) if (d / "happy").is_dir()] or [root]
    return [(p, LABELS.index(c)) for s in sets for c in LABELS if (s / c).is_dir() for p in sorted((s / c).iterdir())]


def check(detector: str, framing: Framing, files: list[tuple[Path, int]]) -> dict:
    """Accuracy of the largest face per photo at the measured framing and at plain margins."""
    stage = build_face_stage(replace(FacesConfig(), detector=detector, detect_every=1))
    clf = build_classifier(parse(""))
    crops: dict[str, list[np.ndarray]] = {"auto": [], **{f"margin {m:g}": [] for m in MARGINS}}
    truth = []
    for path, label in files:
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        img = cv2.resize(img, None, fx=640 / max(img.shape), fy=640 / max(img.shape), interpolation=cv2.INTER_AREA)
        stage.reset()
        boxes, _ = stage.faces(img)
        if not boxes:
            continue
        truth.append(label)
        crops["auto"].append(crop_face(img, boxes[0], framing))
        for m in MARGINS:
            crops[f"margin {m:g}"].append(crop_face(img, boxes[0], Framing.from_margin(m)))
    y = np.asarray(truth)
    acc = {k: round(float((clf.predict(np.stack(v)).argmax(1) == y).mean()), 4) for k, v in crops.items()}
    return {"photos": len(files), "detected": len(y), "accuracy": acc}


def markdown(result: dict) -> str:
    lines = [
        "| detector | FER2013 train faces found | scale (q25, median, q75) | dx | dy |",
        "|---|---|---|---|---|",
    ]
    for m in result["measured"]:
        q = m.get("quartiles")
        row = [f"{v[1]} ({v[0]}, {v[2]})" for v in q.values()] if q else ["-", "-", "-"]
        lines.append(f"| {m['detector']} | {m['detected']} / {m['faces']} | " + " | ".join(row) + " |")
    for det, c in result.get("check", {}).items():
        found = f"{c['detected']} / {c['photos']} detected"
        lines += ["", f"Check on real photographs ({det}, {found}), 4-class accuracy:", ""]
        lines += ["| framing | accuracy |", "|---|---|"] + [f"| {k} | {v:.1%} |" for k, v in c["accuracy"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.framing", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", help="FER2013 (its train split is used)")
    p.add_argument("--check-dir", help="labelled real photographs, <set>/<class>/* (a check, never a choice)")
    p.add_argument("--faces", type=int, default=1000, help="training faces per detector")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/framing")
    args = p.parse_args(argv)
    train = load_fer2013(find_root(args.data_dir), "train", limit_per_class=args.faces)
    dets = [d for d in available_detectors() if d != "mediapipe"]
    result: dict = {"measured": [measure(d, train.images, args.faces, args.seed) for d in dets]}
    if args.check_dir:
        files = photos(Path(args.check_dir))
        result["check"] = {d: check(d, FRAMING.get(d, FRAMING["haar"]), files) for d in dets}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
