"""What ``classifier.flip_margin`` trades: accuracy against time per face, on the validation
faces that the shipped margin was chosen on (never the test faces).

    python -m benchmarks.margins --data-dir DIR --out benchmarks/results/margins

At each margin the model runs as the daemon runs it: one inference per face, and a second for the
mirror image of a face whose two likeliest emotions lie closer than the margin (0: never, 1: every
face). Accuracy and the share of faces mirrored come from all the validation faces; the time per
face from the runtime's whole call (batch 1, one thread) on a sample of them, every margin and the
reference file timed in the same rounds, so their ratios hold on a machine doing other work.
Writes margins.json, margins.md and margins.png into --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks import log, save_results

ROOT = Path(__file__).resolve().parents[1]
MARGINS = (0.0, 0.04, 0.08, 0.12, 0.16, 0.2, 0.3, 0.5, 1.0)


def validation_faces(data_dir: str | None, limit_per_class: int | None = None):
    """The training run's validation tenth (its split and seed), where margins are chosen."""
    from edgefer.datasets import find_root
    from edgefer.train.data import train_and_validation
    from edgefer.train.recipe import Recipe

    return train_and_validation(Recipe(limit_per_class=limit_per_class), str(find_root(data_dir)))[1]


def score(model: Path, faces: np.ndarray, labels: np.ndarray, margins=MARGINS) -> dict[float, dict]:
    """Accuracy and share of faces mirrored at each margin, through the runtime's own path."""
    from edgefer.classifier import Classifier

    clf = Classifier(model, threads=2, flip_average=True)
    out = {}
    for m in margins:
        clf.flip_margin, clf.faces_seen, clf.faces_mirrored = m, 0, 0
        got = clf.predict_labels(faces)
        out[m] = {"accuracy": float(np.mean(got == labels)), "mirrored_share": clf.faces_mirrored / len(faces)}
    return out


def time_lanes(lanes: dict, faces: np.ndarray, rounds: int = 5, log=print) -> dict[str, dict]:
    """Mean time per face (ms) of each classifier's whole call, per round. The lanes run
    interleaved by edgefer-bench's own runner (:func:`edgefer.bench.timing.interleaved`): every
    round each lane classifies all ``faces``, the lane order rotating, so their ratios hold while
    the machine does other work. One untimed pass over the faces warms every lane up first."""
    from edgefer.bench import timing
    from edgefer.bench.stats import latency_stats

    clfs = list(lanes.values())
    n = len(faces)
    timing.warm_up(len(clfs), n, lambda j, i: clfs[j].predict(faces[i : i + 1]))

    def work(j: int, start: int, stop: int) -> None:
        for i in range(start, stop):
            clfs[j].predict(faces[i % n : i % n + 1])

    shares = timing.interleaved(
        len(clfs), n * rounds, n, work, lambda k, total, _: log(f"timing: round {k + 1}/{total}")
    )
    return {name: latency_stats([s.wall_s / n * 1000 for s in shares[j]]) for j, name in enumerate(lanes)}


def time_margins(
    model: Path, reference: Path, faces: np.ndarray, margins=MARGINS, rounds: int = 5, log=print
) -> dict[str, dict]:
    """Each margin's lane and the reference file alone, timed in the same rounds."""
    from edgefer.classifier import Classifier

    lanes = {f"{m:g}": Classifier(model, threads=1, flip_average=True, flip_margin=m) for m in margins}
    lanes["reference"] = Classifier(reference, threads=1)
    return time_lanes(lanes, faces, rounds=rounds, log=log)


def markdown(scores: dict[float, dict], times: dict[str, dict], reference: str) -> str:
    ref = times["reference"]["mean"]
    rows = [
        f"| flip_margin | faces mirrored | validation accuracy | ms per face (mean of rounds) | x {reference} |",
        "|---|---|---|---|---|",
    ]
    for m, s in scores.items():
        t = times[f"{m:g}"]["mean"]
        rows.append(f"| {m:g} | {s['mirrored_share']:.1%} | {s['accuracy']:.2%} | {t:.3f} | {t / ref:.2f} |")
    rows.append(f"| {reference} alone | | | {ref:.3f} | 1.00 |")
    return "\n".join(rows) + "\n"


def plot(scores: dict[float, dict], times: dict[str, dict], path: Path, reference: str, default: float) -> None:
    from edgefer.figures import pyplot

    plt = pyplot()

    ms = [times[f"{m:g}"]["mean"] for m in scores]
    acc = [100 * s["accuracy"] for s in scores.values()]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(ms, acc, "o-", color="tab:blue", label="edgefer int8, mirrored under the margin")
    for m, x, y in zip(scores, ms, acc, strict=True):
        ax.annotate(f"{m:g}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8)
        if m == default:
            ax.plot([x], [y], "o", markersize=11, fillstyle="none", color="tab:red", label=f"the default ({m:g})")
    ax.axvline(times["reference"]["mean"], color="gray", linestyle="--", linewidth=1, label=f"{reference}'s time")
    ax.set_xlabel("ms per face (runtime call, batch 1, one thread)")
    ax.set_ylabel("validation accuracy, %")
    ax.set_title("classifier.flip_margin: accuracy against time")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from edgefer.config import ClassifierConfig
    from edgefer.models import DEFAULT_MODEL

    p = argparse.ArgumentParser(prog="python -m benchmarks.margins", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(ROOT / "edgefer" / "models" / DEFAULT_MODEL), help="default: the daemon's")
    p.add_argument(
        "--reference", default=str(ROOT / "edgefer" / "models" / "paper-int8.tflite"), help="timed beside, alone"
    )
    p.add_argument("--data-dir", help="FER2013 folder (its train split holds the validation faces)")
    p.add_argument("--timed", type=int, default=600, help="validation faces timed per lane and round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/margins")
    args = p.parse_args(argv)
    va = validation_faces(args.data_dir)
    log(f"margins: {len(va)} validation faces")
    scores = score(Path(args.model), va.images, va.labels)
    sample = va.images[np.random.default_rng(0).permutation(len(va))[: args.timed]]
    times = time_margins(Path(args.model), Path(args.reference), sample, rounds=args.rounds, log=log)
    name = Path(args.reference).stem
    table = markdown(scores, times, name)
    result = {"validation_faces": len(va), "scores": {f"{m:g}": s for m, s in scores.items()}, "latency_ms": times}
    out = save_results(args.out, "margins", table, result)
    plot(scores, times, out / "margins.png", name, ClassifierConfig().flip_margin)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
