"""The face-quality gate's bounds, measured, and what they refuse on each kind of face.

The bounds (edgefer.quality.FER2013_BOUNDS) are the :data:`edgefer.quality.PERCENTILE`
percentile of FER2013's training faces on brightness, contrast and sharpness. This measures
them again and reports, per emotion, the share of faces the gate refuses: on the training
faces (where a share that differs by emotion would bias the published mood), on PublicTest
and on real photographs through the daemon's frame path (checks).

    python -m benchmarks.quality --data-dir ../shared/datasets/fer2013 \\
        --photos ../shared/datasets/real-posed --out benchmarks/results/quality
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from edgefer import LABELS
from edgefer.datasets import load_fer2013
from edgefer.quality import FER2013_BOUNDS, PERCENTILE, measures, poor


def per_class(refused: np.ndarray, labels: np.ndarray) -> list[float]:
    return [float(refused[labels == k].mean()) if (labels == k).any() else float("nan") for k in range(len(LABELS))]


def on_photos(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Refused flag and label of every face the daemon's frame path finds in labelled photos."""
    from edgefer.bench.faces import find_photos, load_photo
    from edgefer.config import parse
    from edgefer.faces import build_face_stage
    from edgefer.framepath import FramePath
    from edgefer.service import build_classifier

    cfg = parse("")
    path = FramePath(build_face_stage(cfg.faces), build_classifier(cfg), stills=True)
    refused, labels = [], []
    for _, label, f in find_photos(root):
        gray = load_photo(f)
        r = path.process(gray) if gray is not None else None
        if r is not None and r.poor is not None:
            refused += r.poor.tolist()
            labels += [label] * len(r.poor)
    return np.array(refused, bool), np.array(labels, int)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", help="FER2013")
    p.add_argument("--photos", help="labelled photo folders (e.g. real-posed), a check")
    p.add_argument("--out", default="benchmarks/results/quality")
    args = p.parse_args(argv)
    tr = load_fer2013(args.data_dir, "train")
    measured = np.percentile(measures(tr.images), PERCENTILE, axis=0).round(3).tolist()
    rows = {"FER2013 train": per_class(poor(tr.images), tr.labels)}
    te = load_fer2013(args.data_dir, "test")
    rows["FER2013 PublicTest"] = per_class(poor(te.images), te.labels)
    if args.photos:
        refused, labels = on_photos(Path(args.photos))
        rows[f"{Path(args.photos).name} (frame path)"] = per_class(refused, labels)
    shipped = [FER2013_BOUNDS.brightness, FER2013_BOUNDS.contrast, FER2013_BOUNDS.sharpness]
    result = {"percentile": PERCENTILE, "measured_bounds": measured, "shipped_bounds": shipped, "refused": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    md = [
        f"Bounds at the {PERCENTILE} percentile of FER2013's training faces (brightness, contrast, sharpness): "
        f"measured {[round(v, 3) for v in measured]}, shipped {shipped}.",
        "",
        "| faces | " + " | ".join(LABELS) + " |",
        "|---|" + "---|" * len(LABELS),
    ]
    md += [f"| {name} | " + " | ".join(f"{v:.1%}" for v in vals) + " |" for name, vals in rows.items()]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
