"""Side-by-side view of finished runs: the model card's centralized-vs-federated table and the
accuracy-against-clients plot come from the runs' own ``report.json`` files, not from hand copies.

``edgefer-train compare RUN [RUN ...] [--plot PNG]``: each RUN is a run folder or a report
file. The first centralized run is the baseline the gaps are measured against.

``edgefer-train paired A.tflite B.tflite``: two model files on the validation faces, paired.

``edgefer-train score-teachers PATH[:signed] ...``: candidate teachers on the validation faces.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from edgefer.train.recipe import Recipe


def load_report(path: str | Path) -> dict[str, Any]:
    """A run folder's ``report.json`` (or the report file itself), with a clear error naming
    the path when the run was never finalized or the file is not a report."""
    p = Path(path)
    file = p / "report.json" if p.is_dir() else p
    if not file.is_file():
        raise ValueError(f"{file}: no report (finish the run with edgefer-train finalize --out RUN)")
    try:
        report = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{file}: line {e.lineno}: not JSON ({e.msg})") from None
    missing = [k for k in ("arch", "files", "validation") if k not in report]
    if missing:
        raise ValueError(f"{file}: not an edgefer-train report (missing {', '.join(missing)})")
    return report


def run_row(report: dict[str, Any], name: str) -> dict[str, Any]:
    """The figures one table row needs, read from a report (pure; no I/O).

    Compute is counted in epoch-equivalents (one pass over the training split), so a
    federation of R rounds x E local epochs counts R x E, as its clients together see the data
    that often.
    """
    fed = report.get("federated")
    files = report["files"]
    flip = report.get("keras_test_flip") or {}
    # Reports from before exports scored the int8 file on validation have no such entry.
    int8_val = files["int8"].get("validation") or {}
    return {
        "name": name,
        "kind": "federated" if fed else "centralized",
        "clients": fed["clients"] if fed else 1,
        "partition": fed["partition"] if fed else "",
        "dp": fed["dp"] if fed else "none",
        "epochs": report["epochs_run"],
        "best": f"round {report['best_round']}" if fed else f"epoch {report['best_epoch']}",
        "validation": (report["validation"] or {}).get("accuracy"),  # None: a refit on every face
        "float32": files["float32"]["test"]["accuracy"],
        "float32_f1": files["float32"]["test"]["macro_f1"],
        "int8": files["int8"]["test"]["accuracy"],
        "int8_f1": files["int8"]["test"]["macro_f1"],
        "flip": flip.get("accuracy"),
        "int8_validation": int8_val.get("accuracy"),
        "int8_agreement": int8_val.get("argmax_agreement_with_keras"),
    }


def with_gaps(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add each row's gap (points) to the first centralized row, float32 and int8; rows get
    ``None`` gaps when there is no centralized run to compare with."""
    base = next((r for r in rows if r["kind"] == "centralized"), None)
    out = []
    for r in rows:
        gaps = {"gap_float32": None, "gap_int8": None}
        if base is not None and r is not base:
            gaps = {f"gap_{k}": 100 * (base[k] - r[k]) for k in ("float32", "int8")}
        out.append({**r, **gaps})
    return out


def _pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.2f}"


def _pts(v: float | None) -> str:
    return "" if v is None else f"{v:.1f}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The comparison as a Markdown table (accuracies on FER2013 PublicTest, 4 classes, in %,
    but for the two validation columns: the Keras model's, and the int8 file's with its
    agreement with Keras, on which the int8 file to ship is chosen)."""
    head = (
        "| run | kind | clients | epoch-equiv. | best | validation | int8 validation (agreement) |"
        " float32 (F1) | int8 (F1) | flip | gap float32 / int8 |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in with_gaps(rows):
        kind = r["kind"] + (f", {r['partition']}" if r["partition"] else "")
        kind += f", DP {r['dp']}" if r["dp"] != "none" else ""
        gap = "" if r["gap_float32"] is None else f"{_pts(r['gap_float32'])} / {_pts(r['gap_int8'])}"
        int8_val = "" if r["int8_validation"] is None else f"{_pct(r['int8_validation'])} ({_pct(r['int8_agreement'])})"
        lines.append(
            f"| {r['name']} | {kind} | {r['clients']} | {r['epochs']} | {r['best']} | {_pct(r['validation'])} "
            f"| {int8_val} | {_pct(r['float32'])} ({_pct(r['float32_f1'])}) | {_pct(r['int8'])} ({_pct(r['int8_f1'])}) "
            f"| {_pct(r['flip'])} | {gap} |"
        )
    return "\n".join(lines)


def clients_png(rows: list[dict[str, Any]], path: str | Path, title: str = "accuracy against clients") -> Path:
    """PublicTest accuracy of the federated runs against their number of clients, with the
    centralized baseline as a line: the picture of what spreading the data costs."""
    from edgefer.figures import pyplot, save

    plt = pyplot()
    fed = sorted((r for r in rows if r["kind"] == "federated"), key=lambda r: r["clients"])
    base = next((r for r in rows if r["kind"] == "centralized"), None)
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=110)
    for key, style in (("float32", "o-"), ("int8", "s--")):
        ax.plot([r["clients"] for r in fed], [100 * r[key] for r in fed], style, label=f"federated {key}")
        if base is not None:
            ax.axhline(100 * base[key], ls=":", color="grey" if key == "int8" else "black", label=f"centralized {key}")
    ax.set_xlabel("clients")
    ax.set_ylabel("PublicTest accuracy (%)")
    ax.set_xticks(sorted({r["clients"] for r in fed}))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return save(fig, path)


def compare(paths: list[str], plot: str | None = None) -> str:
    """Load the runs, return the Markdown table and write the plot when asked."""
    rows = [run_row(load_report(p), Path(p).stem if Path(p).is_file() else Path(p).name) for p in paths]
    if plot:
        clients_png(rows, plot)
    return markdown_table(rows)


def paired_on_validation(
    files: list[str],
    recipe: Any,
    data_dir: str | None,
    log=print,
    margins: list[float] | None = None,
    non_inferior: float | None = None,
) -> dict[str, Any]:
    """Two exported model files scored on the faces the recipe holds out for validation, and
    the faces only one of them gets right with the sign test on them.

    Keep-or-ship rules compare a new run with the shipped one. On the two accuracies alone a
    half-point gap on 2,100 faces is within run-to-run noise; the paired counts say whether it
    is, before the test split is ever looked at. ``margins`` runs each file as the daemon does
    (its mirror image only when unsure), since that, not one view, is what would ship; with
    ``non_inferior`` the verdict of a "not worse by more than so many points" rule is printed,
    so a rule written before a run is settled by one command rather than by hand.
    """
    from edgefer.classifier import Classifier, ModelError
    from edgefer.metrics import paired
    from edgefer.train.data import train_and_validation

    if len(files) != 2:
        raise ValueError(f"--paired takes two model files, got {len(files)}")
    for m in margins or []:
        if not 0 <= m <= 1:
            raise ValueError(f"--margins {m}: a probability gap, from 0 (never mirror) to 1 (always)")
    if non_inferior is not None and non_inferior < 0:
        raise ValueError(f"--non-inferior {non_inferior}: a loss in accuracy points, at least 0")
    options = [{"flip_average": True, "flip_margin": m} for m in margins] if margins else [{}, {}]
    try:
        models = [Classifier(path, threads=1, **o) for path, o in zip(files, options, strict=True)]
    except ModelError as e:
        raise ValueError(str(e)) from None
    _, va = train_and_validation(recipe, data_dir)
    if not len(va):
        raise ValueError("--val-fraction 0 leaves no validation faces to compare on")
    preds = [m.predict_labels(va.images) for m in models]
    result = {"files": list(files), "accuracy": [float(np.mean(p == va.labels)) for p in preds]}
    result.update(paired(va.labels, *preds))  # "n" is the number of validation faces
    for path, acc, model in zip(files, result["accuracy"], models, strict=True):
        how = f", mirrored under margin {model.flip_margin:g} ({model.faces_mirrored} faces)" if margins else ""
        log(f"{path}: validation {100 * acc:.2f} % of {len(va)} faces{how}")
    log(
        f"right only on one: {result['only_a_right']} (first) / {result['only_b_right']} (second); "
        f"sign test p = {result['sign_test_p']:.3g}; first minus second {100 * result['difference']:+.2f} points, "
        f"95 % lower bound {100 * result['difference_lower_95']:+.2f}"
    )
    if non_inferior is not None:
        result["non_inferior"] = result["difference_lower_95"] > -non_inferior / 100
        verdict = "shown" if result["non_inferior"] else "not shown"
        log(f"non-inferiority by {non_inferior:g} points: {verdict}")
    return result


def score_teachers(specs: list[str], recipe: Recipe, data_dir: str | None, log=print) -> dict:
    """Flip-averaged validation accuracy of candidate teachers, alone and as their mean, and how
    often each is right where another is wrong.

    A teacher joins an ensemble only if it raises the ensemble's accuracy on validation, and it
    has something to add only where the others fail: a teacher taught by another mostly repeats
    it, which its accuracy on the faces the other gets wrong shows. Teachers are read exactly as
    ``--teacher`` reads them (``PATH[:signed]``, four or seven outputs), on ``recipe``'s cut.
    """
    import tensorflow as tf

    from edgefer.train.data import train_and_validation
    from edgefer.train.recipe import TrainError
    from edgefer.train.teachers import load_teacher, teacher_probs

    _, va = train_and_validation(recipe, data_dir)
    if not len(va):
        raise TrainError("scoring teachers needs a validation part; --val-fraction 0 leaves none")
    x = va.images.astype(np.float32)[..., None] / 255.0
    batches = [x[i : i + 256] for i in range(0, len(x), 256)]
    probs = []
    for spec in specs:
        teacher = load_teacher(spec)
        probs.append(np.concatenate([teacher_probs(teacher, tf.constant(b), flip=True).numpy() for b in batches]))
    right = [p.argmax(1) == va.labels for p in probs]
    result: dict = {"faces": len(va), "teachers": {}}
    for spec, r in zip(specs, right, strict=True):
        where = {
            other: float(r[~o].mean()) if (~o).any() else None
            for other, o in zip(specs, right, strict=True)
            if other != spec
        }
        result["teachers"][spec] = {"accuracy": float(r.mean()), "right_where_wrong": where}
        log(f"{spec}: flip-averaged validation {r.mean():.4f}")
        for other, share in where.items():
            if share is not None:
                log(f"  right on {share:.4f} of the faces {other} gets wrong")
    if len(specs) > 1:
        result["ensemble"] = float((np.mean(probs, axis=0).argmax(1) == va.labels).mean())
        log(f"their mean: flip-averaged validation {result['ensemble']:.4f}")
    return result
