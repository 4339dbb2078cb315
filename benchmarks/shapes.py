"""What a network's shape costs in int8, before any training: edgefer-dense and the neighbouring
shapes it was chosen among, timed beside the shipped files. Needs the train extra.

    python -m benchmarks.shapes --data-dir DIR --out benchmarks/results/shapes

A file's speed does not depend on its weights, so untrained networks, calibrated on train faces
and converted to full-integer files, tell which shapes are worth training. Every file is timed in
the same rounds (batch 1, one thread, the interpreter called directly), so the ratios hold on a
machine doing other work. The ranking depends on the CPU's int8 instructions: dot products make
dense convs cheap and leave depthwise convs, additions and per-operation overhead as they were,
so run it on each kind of CPU a shape must serve. Writes shapes.json, shapes.md and shapes.png.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks import log
from benchmarks.forms import ROOT, save_timed, time_files

#: label -> dense_cnn arguments; the first is edgefer-dense itself
SHAPES: dict[str, dict] = {
    "edgefer-dense: 3x3/2 stem, 2-3-2 convs, 32-64-128, additions": {},
    "2-2-2 convs": {"convs": (2, 2, 2)},
    "2-2-3 convs": {"convs": (2, 2, 3)},
    "1-2-2 convs, 48-96-192": {"convs": (1, 2, 2), "widths": (48, 96, 192)},
    "4x4/2 stem, 1-2-2 convs, no additions": {"stem": (4, 2), "convs": (1, 2, 2), "residual": False},
    "16-channel stem at 48 px, pooled, 1-2-2 convs, no additions": {
        "stem": (3, 1),
        "stem_width": 16,
        "convs": (1, 2, 2),
        "residual": False,
    },
    "4x4/2 stem, 1-2-2 convs, 40-80-160, no additions": {
        "stem": (4, 2),
        "convs": (1, 2, 2),
        "widths": (40, 80, 160),
        "residual": False,
    },
    "4x4/2 stem, 1-2-2 convs, 48-96-192, no additions": {
        "stem": (4, 2),
        "convs": (1, 2, 2),
        "widths": (48, 96, 192),
        "residual": False,
    },
}
REFERENCES = {
    "the paper's int8 file": ROOT / "edgefer" / "models" / "paper-int8.tflite",
    "the default (edgefer-dense int8)": ROOT / "edgefer" / "models" / "edgefer-dense-int8.tflite",
    "the previous default (edgefer int8)": ROOT / "edgefer" / "models" / "edgefer-int8.tflite",
}


def files(data_dir: str | None, workdir: Path, shapes: dict[str, dict] = SHAPES, log=log) -> dict[str, dict]:
    """Each shape built untrained and exported as a full-integer file: label -> path, MFLOPs,
    parameters and the file's operation count."""
    from ai_edge_litert.interpreter import Interpreter

    from edgefer.datasets import find_root, load_fer2013
    from edgefer.train.export import calibration_sample, to_tflite
    from edgefer.train.models import count_flops, dense_cnn

    train = load_fer2013(find_root(data_dir), "train", limit_per_class=100)
    calibration = calibration_sample(train.images, train.labels, n=200)
    out = {}
    for i, (label, kwargs) in enumerate(shapes.items()):
        log(f"shapes: exporting {i + 1}/{len(shapes)}: {label}")
        net = dense_cnn(**kwargs, name=f"shape{i}")
        path = to_tflite(net, workdir / f"shape{i}.tflite", int8=True, calibration=calibration)
        operations = len(Interpreter(model_path=str(path))._get_ops_details())
        out[label] = {"path": path, "mflops": count_flops(net) / 1e6, "params": net.count_params(), "ops": operations}
    return out


def markdown(shapes: dict[str, dict], latency: dict[str, dict], reference: str) -> str:
    ref = latency[reference]["median"]
    rows = [
        "| shape (untrained, int8, batch 1, 1 thread) | MFLOPs | operations | median ms | x the paper's int8 file |",
        "|---|---|---|---|---|",
    ]
    for name, stats in latency.items():
        about = shapes.get(name)
        cost = f"{about['mflops']:.1f} | {about['ops']}" if about else "|"
        rows.append(f"| {name} | {cost} | {stats['median']:.3f} | {stats['median'] / ref:.2f} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.shapes", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", help="FER2013 folder (train faces calibrate the int8 files)")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--out", default="benchmarks/results/shapes")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        shapes = files(args.data_dir, Path(work))
        paths = {label: about["path"] for label, about in shapes.items()} | REFERENCES
        latency = time_files(paths, rounds=args.rounds, log=log)
    reference = "the paper's int8 file"
    costs = {label: {k: v for k, v in about.items() if k != "path"} for label, about in shapes.items()}
    table = markdown(shapes, latency, reference)
    result = {"shapes": costs, "latency_ms": latency}
    save_timed(args.out, "shapes", table, result, latency, reference, title="edgefer: what a shape costs in int8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
