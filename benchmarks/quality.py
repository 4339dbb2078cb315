"""The face-quality gate's bounds, measured, and what they refuse on each kind of face.

The bounds (edgefer.quality.FER2013_BOUNDS) are, per measure, the lower of two
:data:`edgefer.quality.PERCENTILE` percentiles: of FER2013's training crops as they are, and
of training faces as the daemon's frame path crops them (the validation tenth of the training
split, half A as in benchmarks/estimators.py, composited into clips and detected). This
measures both again and reports, per emotion, the share of faces the gate refuses: on the
training crops, on framed training faces (where a share that differs by emotion would bias
the published mood), on framed PublicTest faces and on real photographs (checks).

    python -m benchmarks.quality --data-dir ../shared/datasets/fer2013 \\
        --photos ../shared/datasets/real-posed --out benchmarks/results/quality
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.margins import validation_faces
from edgefer import LABELS
from edgefer.datasets import load_fer2013
from edgefer.quality import FER2013_BOUNDS, PERCENTILE, QualityBounds, measures

NAMES = ("brightness", "contrast", "sharpness")


def framed(images: np.ndarray, labels: np.ndarray, seeds: tuple[int, ...], frames: int = 1200):
    """Measures and labels of the shown faces' crops, as the daemon's frame path cuts them."""
    from edgefer.bench.clips import composite_frames
    from edgefer.config import parse
    from edgefer.faces import build_face_stage

    stage = build_face_stage(parse("").faces)
    out, got = [], []
    for seed in seeds:
        clip = composite_frames(images, labels, frames, seed=seed, hold=8)
        stage.reset()
        for i, frame in enumerate(clip.frames):
            faces, _ = stage.faces(frame)
            x, y, w, h = clip.boxes[i, 0]
            on = [f for f in faces if x <= f.x + f.w / 2 <= x + w and y <= f.y + f.h / 2 <= y + h]
            if on:
                out.append(measures(stage.crops(frame, on[:1])))
                got.append(int(clip.labels[i, 0]))
    return np.concatenate(out), np.array(got)


def on_photos(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Measures and labels of every face the daemon's frame path finds in labelled photos."""
    from edgefer.bench.faces import find_photos, load_photo
    from edgefer.config import parse
    from edgefer.faces import build_face_stage

    stage = build_face_stage(parse("").faces)
    out, got = [], []
    for _, label, f in find_photos(root):
        gray = load_photo(f)
        if gray is None:
            continue
        stage.reset()
        faces, _ = stage.faces(gray)
        if faces:
            out.append(measures(stage.crops(gray, faces)))
            got += [label] * len(faces)
    return np.concatenate(out), np.array(got)


def refused(m: np.ndarray, labels: np.ndarray, b: QualityBounds) -> list[float]:
    bad = (m[:, 0] < b.brightness) | (m[:, 1] < b.contrast) | (m[:, 2] < b.sharpness)
    return [float(bad[labels == k].mean()) if (labels == k).any() else float("nan") for k in range(len(LABELS))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", help="FER2013")
    p.add_argument("--photos", help="labelled photo folders (e.g. real-posed), a check")
    p.add_argument("--out", default="benchmarks/results/quality")
    args = p.parse_args(argv)
    tr = load_fer2013(args.data_dir, "train")
    va = validation_faces(args.data_dir)
    half_a = np.random.default_rng(0).permutation(len(va))[: len(va) // 2]
    forms = {"FER2013 train crops": (measures(tr.images), tr.labels)}
    forms["framed training faces"] = framed(va.images[half_a], va.labels[half_a], (100, 101))
    raw_pct = np.percentile(forms["FER2013 train crops"][0], PERCENTILE, axis=0)
    framed_pct = np.percentile(forms["framed training faces"][0], PERCENTILE, axis=0)
    measured = np.minimum(raw_pct, framed_pct).round(3).tolist()
    te = load_fer2013(args.data_dir, "test")
    forms["framed PublicTest faces"] = framed(te.images, te.labels, (0,))
    if args.photos:
        forms[f"{Path(args.photos).name} (frame path)"] = on_photos(Path(args.photos))
    shipped = [FER2013_BOUNDS.brightness, FER2013_BOUNDS.contrast, FER2013_BOUNDS.sharpness]
    rows = {name: refused(m, lab, FER2013_BOUNDS) for name, (m, lab) in forms.items()}
    result = {
        "percentile": PERCENTILE,
        "raw_percentile": dict(zip(NAMES, raw_pct.round(3).tolist(), strict=True)),
        "framed_percentile": dict(zip(NAMES, framed_pct.round(3).tolist(), strict=True)),
        "measured_bounds": dict(zip(NAMES, measured, strict=True)),
        "shipped_bounds": dict(zip(NAMES, shipped, strict=True)),
        "faces": {name: len(lab) for name, (_, lab) in forms.items()},
        "refused": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    md = [
        f"Bounds (brightness, contrast, sharpness) at the {PERCENTILE} percentile of FER2013's training crops: "
        f"{raw_pct.round(3).tolist()}; of training faces as the frame path crops them: "
        f"{framed_pct.round(3).tolist()}; the lower of each, measured: {measured}; shipped: {shipped}.",
        "",
        "Share of faces the gate refuses:",
        "",
        "| faces | n | " + " | ".join(LABELS) + " |",
        "|---|---|" + "---|" * len(LABELS),
    ]
    md += [
        f"| {name} | {result['faces'][name]} | " + " | ".join(f"{v:.1%}" for v in vals) + " |"
        for name, vals in rows.items()
    ]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
