"""Where the edgefer int8 file spends its time: the mirrored network exported in each form (both
views in one file; one view, the trunk, which ships and which the runtime mirrors when unsure),
and the trunk stage by stage. Needs the train extra (it converts Keras models).

    python -m benchmarks.forms --data-dir DIR --out benchmarks/results/forms

Every whole-network form computes the same function. Each is converted to a full-integer file
calibrated on train faces, and all files are timed in the same rounds (batch 1, one thread,
the interpreter called directly), so their ratios hold on a machine doing other work. Writes
forms.json, forms.md and forms.png into --out.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import log, save_results

ROOT = Path(__file__).resolve().parents[1]
# the trunk's layers where each stage ends (after its pooling), for the cumulative profile
STAGE_ENDS = {"stem (48 px)": "s1_pool", "stage 2 (24 px)": "s2_pool", "stage 3 (12 px)": "s3_pool"}


def files(keras_path: Path, data_dir: str | None, workdir: Path, log=print) -> dict[str, Path]:
    """Export every form and stage prefix of the mirrored network in ``keras_path``."""
    import keras

    import edgefer.train.models  # noqa: F401  (registers the mirrored layers)
    from edgefer.datasets import find_root, load_fer2013
    from edgefer.train.export import calibration_sample, to_tflite

    model = keras.models.load_model(keras_path, compile=False)
    trunk = model.get_layer("trunk")
    train = load_fer2013(find_root(data_dir), "train", limit_per_class=200)
    calibration = calibration_sample(train.images, train.labels)
    both = np.concatenate([calibration, calibration[:, :, ::-1]])  # what the trunk sees in the file
    stages = {
        label: keras.Model(trunk.inputs, trunk.get_layer(end).output, name=end) for label, end in STAGE_ENDS.items()
    }
    jobs = {
        "both views in one file, tiled": (model, calibration, True),
        "both views, as trained (3 kernels per channel)": (model, calibration, False),
        "one view, tiled (the shipped file)": (trunk, both, True),
        "one view, as trained": (trunk, both, False),
        **{f"one view, tiled, up to the end of {label}": (sub, both, True) for label, sub in stages.items()},
    }
    out = {}
    for i, (name, (net, faces, rewrite)) in enumerate(jobs.items()):
        log(f"forms: exporting {i + 1}/{len(jobs)}: {name}")
        out[name] = to_tflite(net, workdir / f"form{i}.tflite", int8=True, calibration=faces, rewrite=rewrite)
    return out


def time_files(paths: dict[str, Path], rounds: int = 20, calls: int = 300, log=print) -> dict[str, dict]:
    """Median and spread of one call's time for each file, all files timed in every round."""
    from edgefer.bench import latency_stats
    from edgefer.classifier import load_interpreter_class

    interpreter_class, _ = load_interpreter_class()
    runners = {}
    for name, path in paths.items():
        interpreter = interpreter_class(model_path=str(path), num_threads=1)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        face = np.zeros(detail["shape"], detail["dtype"])
        runners[name] = (interpreter, detail["index"], face)
    per_round: dict[str, list[float]] = {name: [] for name in paths}
    for r in range(rounds + 1):  # round 0 warms up and is dropped
        for name, (interpreter, index, face) in runners.items():
            start = time.perf_counter()
            for _ in range(calls):
                interpreter.set_tensor(index, face)
                interpreter.invoke()
            if r:
                per_round[name].append((time.perf_counter() - start) / calls * 1000)
        log(f"forms: round {r}/{rounds}")
    return {name: latency_stats(ms) for name, ms in per_round.items()}


def markdown(results: dict[str, dict], reference: str) -> str:
    ref = results[reference]["median"]
    rows = [
        "| file (int8, batch 1, 1 thread) | median ms | p95 ms | x the paper's int8 file |",
        "|---|---|---|---|",
    ]
    for name, stats in results.items():
        rows.append(f"| {name} | {stats['median']:.3f} | {stats['p95']:.3f} | {stats['median'] / ref:.2f} |")
    return "\n".join(rows) + "\n"


def plot(results: dict[str, dict], path: Path, reference: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(names) + 1.2))
    ax.barh(range(len(names)), [results[n]["median"] for n in names], color="tab:blue")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    if reference:  # what a form must beat
        ax.axvline(results[reference]["median"], color="gray", linestyle="--", linewidth=1)
    ax.set_xlabel("median ms per face (int8, batch 1, one thread)")
    ax.set_title("edgefer: where the int8 file's time goes")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.forms", description=__doc__.split("\n\n")[0])
    p.add_argument("--keras", default=str(ROOT / "models" / "edgefer.keras"), help="a mirrored edgefer Keras model")
    p.add_argument("--reference", default=str(ROOT / "models" / "paper-int8.tflite"), help="timed beside the forms")
    p.add_argument("--data-dir", help="FER2013 folder (train faces calibrate the int8 files)")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--out", default="benchmarks/results/forms")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        paths = files(Path(args.keras), args.data_dir, Path(work), log)
        paths["the paper's int8 file"] = Path(args.reference)
        results = time_files(paths, rounds=args.rounds, log=log)
    table = markdown(results, "the paper's int8 file")
    out = save_results(args.out, "forms", table, {"latency_ms": results})
    plot(results, out / "forms.png", "the paper's int8 file")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
