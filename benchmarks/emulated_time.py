"""Time int8 model files one face at a time, in any Python that has numpy and a TFLite runtime.

``benchmarks/emulated.sh`` runs this under qemu-user as CPU models the host is not: a Pi 4's
Cortex-A72 (no int8 dot product), a Pi 5's Cortex-A76 (with one), an x86 with AVX2 only. The
runtime's kernels are chosen by the CPU features it sees, so the emulated CPU decides which
int8 code runs; the time that code takes under emulation is not the time it takes on that
CPU. Only the ratios between files timed in the same rounds carry over, and only roughly (the
card says how well they matched real hardware where both exist). That is why this script
imports nothing from edgefer: it must run in a bare emulated Python beside the runtime wheel.

Faces are pseudo-random pixels: an int8 network's work does not depend on what the face shows.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np


def _interpreter(path: str):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # the older runtime's name
        from tflite_runtime.interpreter import Interpreter
    it = Interpreter(model_path=path, num_threads=1)
    it.allocate_tensors()
    return it


def _feed(it, spec: dict, face: np.ndarray) -> None:
    """Quantise one face as the classifier does (pixel/255, then the input's own scale and zero
    point) and run it, so the per-face cost includes the same conversion the daemon pays (and,
    like the classifier, not a fresh read of the input's details for every face)."""
    x = face.astype(np.float32)[None, :, :, None] / 255.0
    if spec["dtype"] != np.float32:
        scale, zero = spec["quantization"]
        info = np.iinfo(spec["dtype"])
        x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(spec["dtype"])
    it.set_tensor(spec["index"], x)
    it.invoke()


def time_files(files: list[str], faces: int, rounds: int) -> dict[str, list[float]]:
    """Milliseconds per face for each file, per round; the files take turns within each round
    so that drift in the host's load (or the emulator's translation cache) hits all of them."""
    pixels = np.random.default_rng(0).integers(0, 256, (faces, 48, 48), dtype=np.uint8)
    models = {f: _interpreter(f) for f in files}
    specs = {f: it.get_input_details()[0] for f, it in models.items()}
    per: dict[str, list[float]] = {f: [] for f in files}
    for r in range(rounds + 1):  # round 0 warms up (and fills the emulator's code cache)
        for f, it in models.items():
            t = time.perf_counter()
            for face in pixels:
                _feed(it, specs[f], face)
            if r:
                per[f].append((time.perf_counter() - t) / faces * 1000)
    return per


def aarch64_features() -> list[str]:
    """The int8 instructions the kernel reports to this process (the runtime reads the same)."""
    if platform.machine() != "aarch64":
        return []
    import ctypes

    getauxval = ctypes.CDLL(None).getauxval
    getauxval.restype = ctypes.c_ulong
    hwcap, hwcap2 = getauxval(16), getauxval(26)  # AT_HWCAP, AT_HWCAP2
    return [n for n, on in (("asimd", hwcap >> 1 & 1), ("asimddp", hwcap >> 20 & 1), ("i8mm", hwcap2 >> 13 & 1)) if on]


def _means(result: dict) -> list[float]:
    """Mean milliseconds per face of each file, in the order the files were given."""
    return [float(np.mean(result["ms"][f])) for f in result["files"]]


def render(results: list[dict]) -> str:
    """One Markdown table: a row per emulated CPU, a column per file as a share of the first
    file's time (the reference), the reference's emulated time for scale."""
    files = [Path(f).name for f in results[0]["files"]]
    head = "| emulated CPU | int8 instructions | " + " | ".join(f"{f}" for f in files) + " |"
    rows = [head, "|" + "---|" * (len(files) + 2)]
    for r in results:
        means = _means(r)
        cells = [f"{means[0]:.1f} ms (1.00)"] + [f"x{m / means[0]:.2f}" for m in means[1:]]
        rows.append(f"| {r['cpu']} | {', '.join(r['features']) or r['note']} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot(results: list[dict], path: str) -> None:
    """Bars of each file's time as a share of the reference's, one group per emulated CPU."""
    from edgefer.figures import pyplot

    plt = pyplot()

    files = [Path(f).stem for f in results[0]["files"]]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / len(files)
    for k, name in enumerate(files):
        shares = [_means(r)[k] / _means(r)[0] for r in results]
        ax.bar(np.arange(len(results)) + (k - (len(files) - 1) / 2) * width, shares, width, label=name)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(results)), [r["cpu"] for r in results])
    ax.set_ylabel(f"time per face, x {files[0]}")
    ax.set_title("int8 files under emulated CPUs (ratios only; qemu-user)")
    ax.set_ylim(0, 1.3)  # room above the bars for the legend
    ax.legend(fontsize=8, ncol=len(files), loc="upper center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="*", help="model files; the first is the reference")
    p.add_argument("--cpu", default=platform.machine(), help="label of the CPU model run as")
    p.add_argument("--note", default="", help="what the label cannot say (e.g. the x86 extensions)")
    p.add_argument("--faces", type=int, default=60)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--render", nargs="+", metavar="JSON", help="print the table of saved results and exit")
    p.add_argument("--plot", metavar="PNG", help="with --render: also draw the ratios (needs matplotlib)")
    args = p.parse_args(argv)
    if args.render:
        saved = [json.loads(Path(f).read_text()) for f in args.render]
        print(render(saved))
        if args.plot:
            plot(saved, args.plot)
        return 0
    if len(args.files) < 2:
        p.error("give at least two model files: the reference, then those timed against it")
    missing = [f for f in args.files if not Path(f).is_file()]
    if missing:
        p.error(f"no such model file: {', '.join(missing)}")
    per = time_files(args.files, args.faces, args.rounds)
    result = {"cpu": args.cpu, "note": args.note, "features": aarch64_features(), "files": args.files, "ms": per}
    ref = float(np.mean(per[args.files[0]]))
    for f, v in per.items():
        print(f"{args.cpu}: {f}: {np.mean(v):.2f} ms a face (x{np.mean(v) / ref:.2f})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
