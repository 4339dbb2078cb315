"""The ``edgefer-bench`` command line: its options, their checks and the mode they run.

Modes:

* ``dataset`` (default): every model given, batch 1 after warm-up, over the four-class
  FER2013 test images: latency, throughput, CPU, memory, accuracy, storage. The paper's
  Raspberry Pi 4 figures stand in a column beside the measured ones (:mod:`.dataset`).
* ``pipeline``: the daemon's per-frame path (detect -> crop -> classify) on frames decoded
  into memory beforehand, broken down by stage, and its CPU use at a fixed frame rate
  (:mod:`.pipeline`).
* ``faces`` and ``clip``: what users get, edgefer beside fer on labelled photos
  (:mod:`.faces`) and on a composited clip (:mod:`.clip`).

``--render JSON`` prints the table of any saved result.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgefer.bench.clip import run_clip
from edgefer.bench.dataset import KNOWN_DATASETS, run_dataset
from edgefer.bench.faces import run_faces
from edgefer.bench.output import error
from edgefer.bench.pipeline import DETECTORS, run_pipeline
from edgefer.bench.report import render
from edgefer.config import ClassifierConfig, FacesConfig

MODES: dict[str, Callable[[argparse.Namespace], int]] = {
    "dataset": run_dataset,
    "pipeline": run_pipeline,
    "faces": run_faces,
    "clip": run_clip,
}


def parse_list(text: str, kind: Callable[[str], Any], what: str) -> list[Any]:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}: expected a comma-separated list, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"{what}: empty list")
    return values


def _common_options(p: argparse.ArgumentParser, clf: ClassifierConfig) -> None:
    p.add_argument("--mode", choices=tuple(MODES), default="dataset")
    p.add_argument("--dataset", default="fer2013", help=f"known: {', '.join(KNOWN_DATASETS)}")
    p.add_argument("--data-dir", help="FER2013 root: holds test/<class>/*.jpg or fer2013.csv (default: searched)")
    p.add_argument(
        "--model",
        action="append",
        help="a .tflite file; repeat for several (default: every shipped one; in pipeline mode the daemon's model; "
        "in faces and clip modes, the classifier of edgefer's lane, to check a candidate as the daemon would run it)",
    )
    p.add_argument("--peer", action="append", choices=("fer",), help="also measure a peer package where installed")
    p.add_argument(
        "--flip-margin",
        type=float,
        metavar="M",
        help="also run each edgefer file mirroring the faces whose top-two margin is below M, as the daemon "
        f"does (its default: {clf.flip_margin:g}; 1 mirrors every face); in pipeline mode, run it so only",
    )
    p.add_argument("--threads", type=int, default=clf.threads, help=f"interpreter threads (default {clf.threads})")
    p.add_argument(
        "--thread-sweep",
        type=lambda s: parse_list(s, int, "--thread-sweep"),
        help="comma-separated thread counts, e.g. 1,2,4: a table per model",
    )
    p.add_argument("--limit-per-class", type=int, help="at most N test images per class (quick runs)")
    p.add_argument("--warmup", type=int, default=20, help="untimed inferences (frames) per model first (default 20)")
    p.add_argument("--chunk", type=int, default=50, help="images (frames) per model per round (default 50)")
    p.add_argument("--no-memory-probe", action="store_true", help="skip the fresh-process memory measurement")
    p.add_argument("--json", help="write every figure and the host's description here")
    p.add_argument("--out-dir", help="confusion-matrix PNGs (default: beside --json)")
    p.add_argument("--markdown", help="also write the table to this file")
    p.add_argument("--render", metavar="JSON", help="print the table of a saved --json result and exit")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")


def _pipeline_options(p: argparse.ArgumentParser, clf: ClassifierConfig, faces: FacesConfig) -> None:
    g = p.add_argument_group("pipeline mode")
    g.add_argument("--source", help="demo, fer2013 (test faces composited on a background), a video file or a folder")
    g.add_argument("--frames", type=int, default=300, help="frames to decode into memory (default 300)")
    g.add_argument(
        "--detector",
        type=lambda s: parse_list(s, str, "--detector"),
        default=[faces.detector],
        help=f"{', '.join(DETECTORS)} or a comma list (default {faces.detector})",
    )
    g.add_argument(
        "--detect-every",
        type=lambda s: parse_list(s, int, "--detect-every"),
        default=[faces.detect_every],
        help=f"run the detector every N frames; a comma list compares (default {faces.detect_every})",
    )
    g.add_argument(
        "--detect-scale",
        type=lambda s: parse_list(s, float, "--detect-scale"),
        default=[faces.detect_scale],
        help=f"detect on the frame scaled by this; a comma list compares (default {faces.detect_scale:g})",
    )
    g.add_argument("--fps", type=float, default=15.0, help="paced pass frame rate for CPU %% (0 skips it; default 15)")
    g.add_argument(
        "--max-rate",
        type=float,
        help=f"classifications per second in the paced pass (default the daemon's {clf.max_rate:g}; 0 = every frame)",
    )
    g.add_argument("--faces-per-frame", type=int, default=1, help="faces per composited frame (--source fer2013)")
    g.add_argument("--seed", type=int, default=0, help="seed of the composited clip")
    g.add_argument("--write-clip", help="also save the frames: .avi/.mp4/.mkv, or a folder of PNGs")


def _user_options(p: argparse.ArgumentParser) -> None:
    u = p.add_argument_group("faces and clip modes (what users get, edgefer beside fer)")
    u.add_argument("--fer-model", help="fer's emotion_model_quantized.tflite (default: installed fer, else cached)")
    u.add_argument("--split", default="test", help="clip: FER2013 split whose faces are composited (default test)")
    u.add_argument("--shots", type=int, default=200, help="clip: faces shown, 8 frames each (default 200)")
    u.add_argument("--seeds", type=int, nargs="+", default=[0], help="clip: one clip per seed (default 0)")
    u.add_argument("--out", help="folder for JSON, Markdown, PNGs (default benchmarks/results/<mode>)")


def parser() -> argparse.ArgumentParser:
    clf = ClassifierConfig()
    p = argparse.ArgumentParser(
        prog="edgefer-bench",
        description="Reproduce the source paper's edge table (Table 14) on this machine, beside the paper and peers.",
    )
    _common_options(p, clf)
    _pipeline_options(p, clf, FacesConfig())
    _user_options(p)
    return p


def _render(path: str) -> int:
    try:
        print(render(json.loads(Path(path).read_text())))
    except (OSError, ValueError, KeyError) as exc:
        return error(f"{path}: cannot render ({exc})")
    return 0


def _bad_arguments(args: argparse.Namespace) -> str | None:
    """What is wrong with the options, or None."""
    if args.dataset not in KNOWN_DATASETS:
        return f"unknown dataset {args.dataset!r} (known: {', '.join(KNOWN_DATASETS)})"
    bad = [t for t in [args.threads, *(args.thread_sweep or [])] if not 1 <= t <= 64]
    if bad or args.chunk < 1 or args.warmup < 0 or (args.limit_per_class is not None and args.limit_per_class < 1):
        return "threads must lie in 1..64, --chunk >= 1, --warmup >= 0, --limit-per-class >= 1"
    if args.mode == "pipeline":
        unknown = [d for d in args.detector if d not in DETECTORS]
        if unknown:
            return f"unknown detector {unknown[0]!r} (known: {', '.join(DETECTORS)})"
        if args.frames < 1 or args.fps < 0:
            return "--frames must be >= 1 and --fps >= 0"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.render:
        return _render(args.render)
    problem = _bad_arguments(args)
    if problem:
        return error(problem, 2)
    return MODES[args.mode](args)


if __name__ == "__main__":
    raise SystemExit(main())
