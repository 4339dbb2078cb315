"""Where the edgefer int8 file spends its time: the mirrored network exported in each form (both
views in one file; one view, the trunk, which ships and which the runtime mirrors when unsure),
and the trunk stage by stage. Needs the train extra (it converts Keras models).

    python -m benchmarks.forms --data-dir DIR --out benchmarks/results/forms

Every whole-network form computes the same function. Each is converted to a full-integer file
calibrated on train faces, and all files are timed in the same rounds (batch 1, one thread,
the interpreter called directly), so their ratios hold on a machine doing other work. Writes
forms.json, forms.md and forms.png into --out.

Two more forms of the same functions, for the edgefer trunk and for the paper's network alike,
show how much of the ranking belongs to the runtime rather than to the networks: the factored
convs rebuilt as the full convs they equal (:func:`unfactored`), and the stem (a 3x3 conv on the
one grey channel, then a 2x2 max pool) run on 2x2 blocks of pixels (:func:`space_to_depth_stem`).
"""

from __future__ import annotations

import argparse
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

from benchmarks import log, save_results

ROOT = Path(__file__).resolve().parents[1]
# the trunk's layers where each stage ends (after its pooling), for the cumulative profile
STAGE_ENDS = {"stem (48 px)": "s1_pool", "stage 2 (24 px)": "s2_pool", "stage 3 (12 px)": "s3_pool"}


def unfactored(trunk):
    """The edgefer ``trunk`` with each factored stage opener (``rank`` kernels per channel, then
    a 1x1 conv) rebuilt as the one full 3x3 conv it equals: fewer layers, more multiply-adds."""
    from edgefer.train.models import edgefer_cnn

    names = {layer.name for layer in trunk.layers}
    blocks = tuple(sum(f"s{stage}{chr(ord('b') + i)}_add" in names for i in range(8)) for stage in (2, 3, 4))
    crop = trunk.get_layer("crop").cropping[0][0] if "crop" in names else 0
    full = edgefer_cnn(width=trunk.get_layer("s1a_conv").filters, blocks=blocks, crop=crop, name=trunk.name)
    for layer in full.layers:
        if not layer.weights:
            continue
        if layer.name in names:
            layer.set_weights(trunk.get_layer(layer.name).get_weights())
            continue
        opener = layer.name.removesuffix("_conv")  # fb1_conv <- fb1_dwf (3, 3, c, r) and fb1_pwf (1, 1, c r, o)
        depthwise = trunk.get_layer(f"{opener}_dwf").get_weights()[0]
        pointwise = trunk.get_layer(f"{opener}_pwf").get_weights()[0][0, 0]
        c, r = depthwise.shape[2:]
        layer.set_weights([np.einsum("hwcr,cro->hwco", depthwise, pointwise.reshape(c, r, -1))])
    if len(full.weights) != len(trunk.weights) - 3:  # three openers, two kernels each -> one
        raise ValueError(f"{trunk.name}: not an edgefer trunk with factored stage openers")
    return full


def space_to_depth_stem(model, conv: str, pool: str):
    """``model`` with its stem run on 2x2 blocks of pixels: the same function, other kernels.

    The stem is ``conv`` (3x3, stride 1, one input channel, 'same' or 'valid'), its batch norm
    and ReLU, then ``pool`` (2x2 max). With one input channel the conv does 9 multiply-adds per
    output pixel and XNNPACK's int8 kernels are bound by the pixels, not the arithmetic. Here the
    face becomes a quarter-size map of 2x2 blocks (4 channels), one conv computes all four pixels
    of each output block at once (4 x the filters, kernel 3 or 2 over blocks), and the pool is
    the maximum over those four: a quarter of the output pixels, four times the work for each.
    """
    import keras
    import tensorflow as tf

    layers = keras.layers
    source = model.get_layer(conv)
    pooling = model.get_layer(pool)
    if source.kernel_size != (3, 3) or source.strides != (1, 1) or source.input.shape[-1] != 1:
        raise ValueError(f"{conv}: needs a 3x3 conv, stride 1, on one input channel")
    if not isinstance(pooling, layers.MaxPooling2D) or pooling.pool_size != (2, 2) or pooling.strides != (2, 2):
        raise ValueError(f"{pool}: needs a 2x2 max pool, stride 2")
    kernel, *conv_bias = source.get_weights()
    bn = model.get_layer(conv.replace("_conv", "_bn"))
    gamma, beta, mean, var = bn.get_weights()
    scale = gamma / np.sqrt(var + bn.epsilon)
    bias = beta + ((conv_bias[0] if conv_bias else 0) - mean) * scale
    kernel = kernel[:, :, 0] * scale  # (3, 3, filters), the batch norm folded in
    same = source.padding == "same"
    offset = -1 if same else 0  # where tap 0 of output pixel p reads: p + offset
    filters = kernel.shape[-1]
    span = 3 if same else 2  # blocks the new kernel covers
    blocked = np.zeros((span, span, 4, 4 * filters), np.float32)
    for t, u, a, b in np.ndindex(3, 3, 2, 2):  # tap (t, u) of output pixel (2i + a, 2j + b)
        (bi, y), (bj, x) = divmod(a + t + offset, 2), divmod(b + u + offset, 2)
        blocked[bi - offset, bj - offset, 2 * y + x, (2 * a + b) * filters : (2 * a + b + 1) * filters] = kernel[t, u]

    face = keras.Input(model.input.shape[1:], name=model.input.name)
    x = face if source.input is model.input else keras.Model(model.input, source.input)(face)  # a crop, say
    side = x.shape[1]
    x = layers.Lambda(lambda f: tf.nn.space_to_depth(f, 2), output_shape=(side // 2, side // 2, 4))(x)
    stem = layers.Conv2D(4 * filters, span, padding=source.padding, activation="relu", name=f"{conv}_blocks")
    x = stem(x)
    stem.set_weights([blocked, np.tile(bias, 4)])
    out = x.shape[1]  # each block's four pixels side by side, pooled as one row of four
    x = layers.Lambda(lambda t: tf.reshape(t, (-1, out * out, 4, filters)), output_shape=(out * out, 4, filters))(x)
    x = layers.MaxPooling2D((1, 4), name=f"{pool}_blocks")(x)
    x = layers.Lambda(lambda t: tf.reshape(t, (-1, out, out, filters)), output_shape=(out, out, filters))(x)
    rest = keras.Model(pooling.output, model.output)
    return keras.Model(face, rest(x), name=model.name)


def files(
    keras_path: Path, data_dir: str | None, workdir: Path, log=print, paper_path: Path | None = None
) -> dict[str, Path]:
    """Export every form and stage prefix of the mirrored network in ``keras_path``, and the
    paper's network in ``paper_path`` (if given) with the space-to-depth stem."""
    import keras

    from edgefer.datasets import find_root, load_fer2013
    from edgefer.train.export import calibration_sample, runtime_graph, to_tflite
    from edgefer.train.models import load

    model = load(keras_path)
    trunk = model.get_layer("trunk")
    train = load_fer2013(find_root(data_dir), "train", limit_per_class=200)
    calibration = calibration_sample(train.images, train.labels)
    both = np.concatenate([calibration, calibration[:, :, ::-1]])  # what the trunk sees in the file

    def blocked_stem(net):
        return space_to_depth_stem(net, "s1a_conv", "s1_pool")

    stages = {
        label: keras.Model(trunk.inputs, trunk.get_layer(end).output, name=end) for label, end in STAGE_ENDS.items()
    }
    jobs = {
        "both views in one file, tiled": (model, calibration, True),
        "both views, as trained (3 kernels per channel)": (model, calibration, False),
        "one view, tiled (the shipped file)": (trunk, both, True),
        "one view, as trained": (trunk, both, False),
        **{f"one view, tiled, up to the end of {label}": (sub, both, True) for label, sub in stages.items()},
        "one view, full convs": (unfactored(trunk), both, False),
        "one view, tiled, space-to-depth stem": (blocked_stem(runtime_graph(trunk)), both, False),
        "one view, full convs, space-to-depth stem": (blocked_stem(unfactored(trunk)), both, False),
    }
    if paper_path is not None:
        paper = load(paper_path)
        jobs["paper, space-to-depth stem"] = (space_to_depth_stem(paper, "fb1_conv", "fb1_pool"), calibration, False)
    out = {}
    for i, (name, (net, faces, rewrite)) in enumerate(jobs.items()):
        log(f"forms: exporting {i + 1}/{len(jobs)}: {name}")
        out[name] = to_tflite(net, workdir / f"form{i}.tflite", int8=True, calibration=faces, rewrite=rewrite)
    return out


def time_files(paths: dict[str, Path], rounds: int = 20, calls: int = 300, log=print) -> dict[str, dict]:
    """Median and spread of one call's time for each file, all files timed in every round."""
    from edgefer.bench.stats import latency_stats
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


def plot(
    results: dict[str, dict],
    path: Path,
    reference: str | None = None,
    host: str = "",
    title: str = "edgefer: where the int8 file's time goes",
) -> None:
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
    ax.set_title("\n".join([title, *textwrap.wrap(host, 80)]), fontsize=10)  # a long CPU name wraps
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save_timed(
    out: str | Path,
    name: str,
    table: str,
    result: dict,
    latency: dict[str, dict],
    reference: str,
    title: str = "edgefer: where the int8 file's time goes",
) -> Path:
    """Save a timing table, its figures and its plot with the host they were measured on: the
    ranking of int8 files depends on the CPU's int8 instructions, so a number without its CPU
    cannot be read."""
    from edgefer.bench.host import cpu_label, host_info

    host = host_info()
    folder = save_results(out, name, table + f"\nHost: {cpu_label(host)}.\n", {**result, "host": host})
    plot(latency, folder / f"{name}.png", reference, cpu_label(host), title)
    return folder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.forms", description=__doc__.split("\n\n")[0])
    p.add_argument("--keras", default=str(ROOT / "models" / "edgefer.keras"), help="a mirrored edgefer Keras model")
    p.add_argument(
        "--reference", default=str(ROOT / "edgefer" / "models" / "paper-int8.tflite"), help="timed beside the forms"
    )
    p.add_argument(
        "--paper-keras",
        default=str(ROOT / "models" / "paper.keras"),
        help="the paper's Keras network, exported with the space-to-depth stem too ('' to skip)",
    )
    p.add_argument("--data-dir", help="FER2013 folder (train faces calibrate the int8 files)")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--out", default="benchmarks/results/forms")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        paper = Path(args.paper_keras) if args.paper_keras else None
        paths = files(Path(args.keras), args.data_dir, Path(work), log, paper_path=paper)
        paths["the paper's int8 file"] = Path(args.reference)
        results = time_files(paths, rounds=args.rounds, log=log)
    reference = "the paper's int8 file"
    save_timed(args.out, "forms", markdown(results, reference), {"latency_ms": results}, results, reference)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
