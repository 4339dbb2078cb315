"""A finished run's last steps: precise batch-norm statistics if validation prefers them, the
model saved without optimizer state, both TFLite files exported and scored as the daemon runs
them, and the run's ``report.json``.

Separate from training so a run's files can be rebuilt, or a run stopped early exported,
without training again (``edgefer-train finalize --out RUN``).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from edgefer import LABELS
from edgefer.datasets import load_fer2013
from edgefer.metrics import summary
from edgefer.train.average import recalibrate_bn
from edgefer.train.data import predict_probs, train_and_validation, validate
from edgefer.train.recipe import TrainError, recipe_of


def precise_bn_if_better(model, tr, va, log=print) -> tuple[dict, dict]:
    """Apply :func:`recalibrate_bn` on the training faces ``tr`` and keep it only when
    accuracy on the validation faces ``va`` improves (decided on validation, never on test).

    Returns the report's ``precise_bn`` entry and the validation summary of the model kept.
    """
    val_before = validate(model, va)
    weights = model.get_weights()
    recalibrate_bn(model, tr.images)
    val_after = validate(model, va)
    kept = val_after["accuracy"] > val_before["accuracy"]
    if not kept:
        model.set_weights(weights)
    log(f"precise BN: validation {val_before['accuracy']:.4f} -> {val_after['accuracy']:.4f} "
        f"({'kept' if kept else 'discarded'})")  # fmt: skip
    entry = {"validation_before": val_before["accuracy"], "validation_after": val_after["accuracy"], "kept": kept}
    return entry, val_after if kept else val_before


def finalize(
    run_dir: str | Path, data_dir: str | None, export_to: str | Path | None = None, log=print, *, export: bool = True
) -> dict:
    """Evaluate a finished run's best model, export both TFLite files and check them; with
    ``export=False`` (a stage whose model only starts the next one) everything but the files
    and their scores."""
    from edgefer.train import plots
    from edgefer.train.models import count_flops, load

    out = Path(run_dir)
    if not (out / "state.json").is_file() or not (out / "best.keras").is_file():
        raise TrainError(f"{out}: not a finished run (no state.json and best.keras); train into it first")
    state = json.loads((out / "state.json").read_text())
    recipe = recipe_of(state, out / "state.json")
    # Uncompiled: a .keras file keeps the optimizer of a compiled model (Keras 3 has no
    # include_optimizer for it), which would triple the size of the model exported below.
    model = load(out / "best.keras")
    tr, va = train_and_validation(recipe, data_dir)
    if not len(va):  # a refit: no faces left to tell whether recomputed statistics are better
        precise, validation = {"kept": False, "skipped": "no validation part"}, None
    elif recipe.quant_aware:  # its statistics are the ones it was fine-tuned for int8 with
        precise, validation = {"kept": False, "skipped": "quantisation-aware"}, validate(model, va)
    else:
        precise, validation = precise_bn_if_better(model, tr, va, log)
    report: dict = {
        "arch": recipe.arch,
        "params": model.count_params(),
        "flops": count_flops(model),
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        "recipe": asdict(recipe),
        "precise_bn": precise,
        "validation": validation,
        **({"average": state["average"]} if "average" in state else {}),
    }
    dest = Path(export_to) if export_to else out
    dest.mkdir(parents=True, exist_ok=True)
    # The model without optimizer state: what explanations, agreement checks and the next stage load.
    model.save(dest / f"{recipe.arch}.keras")
    if state["history"]:  # a soup has no epochs of its own
        plots.curves_png(state["history"], out / "curves.png", f"{recipe.arch}: training curves")
    if export:
        evaluate_and_export(model, recipe.arch, tr, va, data_dir, out, dest, report, log)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    return report


def _file_summary(got: np.ndarray, labels: np.ndarray, keras_labels: np.ndarray) -> dict:
    """A TFLite file's scores on some faces, with how often it gives the Keras model's answer."""
    res = summary(labels, got, LABELS)
    res["argmax_agreement_with_keras"] = float((got == keras_labels).mean())
    return res


def _scores(clf, faces: np.ndarray, labels: np.ndarray, ref: np.ndarray, margin: float) -> dict:
    """A file's figures: alone, with every face mirrored, and mirrored when unsure at ``margin``
    as the daemon runs it (``clf`` is a :class:`edgefer.classifier.Classifier`)."""
    clf.flip_average, clf.flip_margin = False, 1.0
    res = _file_summary(clf.predict_labels(faces), labels, ref)
    clf.flip_average = True
    res["flip_average"] = summary(labels, clf.predict_labels(faces), LABELS)
    clf.flip_margin, clf.faces_seen, clf.faces_mirrored = margin, 0, 0
    res["as_daemon"] = {
        **summary(labels, clf.predict_labels(faces), LABELS),
        "flip_margin": margin,
        "mirrored_share": clf.faces_mirrored / max(clf.faces_seen, 1),
    }
    return res


def evaluate_and_export(
    model, stem: str, tr, va, data_dir: str | None, out: Path, dest: Path, report: dict, log
) -> None:
    """Export ``<stem>-float32.tflite`` and ``<stem>-int8.tflite`` into ``dest`` and add to
    ``report`` each file's figures on the validation faces ``va`` and on PublicTest (accuracy,
    macro-F1, agreement of its argmax with the Keras model; mirrored, and as the daemon runs it).

    The validation figures decide which int8 file ships: quantisation costs some models more
    than others (a weight average lost 0.8 points there where its ingredient lost 0.1), and
    the test figures are never a selection."""
    from edgefer.classifier import Classifier
    from edgefer.config import ClassifierConfig
    from edgefer.train import export
    from edgefer.train.models import trunk_of

    calib = export.calibration_sample(tr.images, tr.labels)
    # A mirrored network ships as one view, its trunk: the runtime mirrors the faces it is
    # unsure of (classifier.flip_margin), or all of them, which is the network itself. Its
    # int8 grid is set on faces and their mirror images, as the trunk saw them in training.
    net = trunk_of(model) or model
    if net is not model:
        calib = np.concatenate([calib, calib[:, :, ::-1]])
        report["exported"] = "the trunk: one view, mirrored by the runtime"
    files = {
        "float32": export.to_tflite(net, dest / f"{stem}-float32.tflite"),
        "int8": export.to_tflite(net, dest / f"{stem}-int8.tflite", int8=True, calibration=calib),
    }
    report["files"] = {k: {"path": str(v), "bytes": v.stat().st_size} for k, v in files.items()}
    runtimes = {kind: Classifier(path, threads=2) for kind, path in files.items()}  # one load per file
    margin = ClassifierConfig().flip_margin  # the daemon's default
    if len(va):  # a refit has no validation faces
        ref_val = predict_probs(net, va.images).argmax(1)
        for kind, path in files.items():
            res = _scores(runtimes[kind], va.images, va.labels, ref_val, margin)
            report["files"][kind]["validation"] = res
            log(f"{path.name}: validation accuracy {res['accuracy']:.4f} "
                f"({res['as_daemon']['accuracy']:.4f} as the daemon runs it), "
                f"agreement with Keras {res['argmax_agreement_with_keras']:.4f}")  # fmt: skip
    _score_on_test(net, files, runtimes, data_dir, out, report, margin, log)
    log(f"exported {', '.join(str(p) for p in files.values())}")


def _score_on_test(net, files: dict, runtimes: dict, data_dir, out: Path, report: dict, margin: float, log) -> None:
    """The Keras model's and each file's figures on FER2013 PublicTest, with a confusion PNG
    per file in ``out``; a copy of FER2013 without its test split leaves them out."""
    from edgefer.train import plots

    try:
        test = load_fer2013(data_dir, "test")
    except Exception as exc:  # a train-only copy is fine; the test figures are then absent
        log(f"no test split: {exc}")
        return
    ref = predict_probs(net, test.images).argmax(1)
    report["keras_test"] = summary(test.labels, ref, LABELS)
    flip = predict_probs(net, test.images, flip_average=True).argmax(1)
    report["keras_test_flip"] = summary(test.labels, flip, LABELS)
    for kind, path in files.items():
        res = _scores(runtimes[kind], test.images, test.labels, ref, margin)
        report["files"][kind]["test"] = res
        plots.confusion_png(
            np.array(res["confusion"]),
            LABELS,
            out / f"confusion-{kind}.png",
            f"{path.name} on FER2013 PublicTest (4 classes), accuracy {res['accuracy']:.3f}",
        )
        log(f"{path.name}: accuracy {res['accuracy']:.4f}, macro-F1 {res['macro_f1']:.4f}, "
            f"agreement with Keras {res['argmax_agreement_with_keras']:.4f}, "
            f"flip-averaged {res['flip_average']['accuracy']:.4f}, "
            f"as the daemon runs it {res['as_daemon']['accuracy']:.4f}")  # fmt: skip
    log(
        f"Keras on FER2013 PublicTest: accuracy {report['keras_test']['accuracy']:.4f} "
        f"(flip-averaged {report['keras_test_flip']['accuracy']:.4f})"
    )
