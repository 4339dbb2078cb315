"""Centralized training on FER2013 train, resumable, with a held-out validation part.

The recipe (documented with what each part bought in models/README.md): pixel/255 input,
horizontal flips and small affine warps, AdamW with a one-cycle schedule (linear warm-up,
cosine decay), label smoothing, and flip-averaged evaluation. Every epoch writes a full
checkpoint (weights and optimizer state) so a stopped run resumes where it was.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from edgefer import LABELS
from edgefer.train.average import WeightAverage, average_if_better
from edgefer.train.data import make_dataset, train_and_validation, training_faces
from edgefer.train.finalize import finalize
from edgefer.train.recipe import Recipe, check_resumable
from edgefer.train.warmstart import copy_weights, start_from


class _Progress:
    """Per-epoch line with elapsed time and ETA, flushed so a log file shows it live."""

    def __init__(self, total: int, log) -> None:
        self.total, self.log, self.t0 = total, log, time.monotonic()
        self.first_epoch: int | None = None

    def make(self):
        """The Keras callback that writes the lines."""
        import keras

        outer = self

        class Cb(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                if outer.first_epoch is None:
                    outer.first_epoch = epoch

            def on_epoch_end(self, epoch, logs=None):
                outer.line(epoch, logs or {})

        return Cb()

    def line(self, epoch: int, logs: dict) -> None:
        done = epoch + 1 - (self.first_epoch or 0)
        per = (time.monotonic() - self.t0) / max(done, 1)
        eta = per * (self.total - epoch - 1)
        val = (
            f"val_loss {logs['val_loss']:.4f} val_acc {logs.get('val_accuracy', 0):.4f} " if "val_loss" in logs else ""
        )
        self.log(
            f"epoch {epoch + 1}/{self.total} loss {logs.get('loss', 0):.4f} "
            f"acc {logs.get('accuracy', 0):.4f} {val}({per:.0f} s/epoch, ETA {eta / 60:.0f} min)"
        )


class _Run:
    """A run folder's files and state: what every epoch end writes, so a stopped run resumes."""

    def __init__(self, out: Path, recipe: Recipe, refit: bool, log) -> None:
        self.out, self.recipe, self.refit, self.log = out, recipe, refit, log
        self.ckpt, self.state_path = out / "last.keras", out / "state.json"
        self.best_path, self.avg_path = out / "best.weights.h5", out / "average.npz"
        self.state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        if self.state:
            check_resumable(self.state.get("recipe", {}), recipe, self.state_path)
            self.state["recipe"] = asdict(recipe)
        self.average = WeightAverage()

    def fresh(self) -> None:
        self.state = {"recipe": asdict(self.recipe), "epoch": 0, "history": {}, "best_val": -1.0, "best_epoch": 0}

    def unfinished(self) -> bool:
        s = self.state
        return s["epoch"] < self.recipe.epochs and s["epoch"] - s["best_epoch"] < self.recipe.patience

    def save_state(self) -> None:
        self.state_path.write_text(json.dumps(self.state, indent=1))

    def epoch_end(self, model, epoch: int, logs: dict) -> None:
        """Record the epoch, keep the best weights (a refit keeps its latest), add to the
        average, checkpoint, and stop once validation has not improved for ``patience`` epochs."""
        state, recipe = self.state, self.recipe
        for k, v in logs.items():
            state["history"].setdefault(k, []).append(float(v))
        state["epoch"] = epoch + 1
        if self.refit or logs.get("val_accuracy", 0) > state["best_val"]:
            state["best_val"], state["best_epoch"] = float(logs.get("val_accuracy", -1.0)), epoch + 1
            model.save_weights(self.best_path)
        if recipe.average_from and epoch + 1 >= recipe.average_from:
            self.average.add(model.get_weights())
            self.average.save(self.avg_path)
            state["averaged"] = self.average.count
        model.save(self.ckpt)
        self.save_state()
        if not self.refit and epoch + 1 - state["best_epoch"] >= recipe.patience:
            self.log(f"early stop: no validation gain for {recipe.patience} epochs")
            model.stop_training = True

    def callback(self):
        import keras

        run = self

        class Keep(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                run.epoch_end(self.model, epoch, logs or {})

        return Keep()


def _new_model(recipe: Recipe, steps: int, tr, log):
    """The architecture built, started from ``init_from``, wrapped for quantisation-aware
    training if asked, and compiled with the recipe's optimizer, schedule and loss."""
    import keras

    from edgefer.train import export
    from edgefer.train.models import build

    model = build(recipe.arch)
    start_from(model, recipe, log)
    if recipe.quant_aware:
        from edgefer.train import quant

        model = quant.fake_quantized(model, export.calibration_sample(tr.images, tr.labels))
        log(quant.describe(model))
    warm = int(steps * recipe.warmup_fraction)
    sched = keras.optimizers.schedules.CosineDecay(
        recipe.lr / 25, steps - warm, alpha=recipe.lr_floor, warmup_target=recipe.lr, warmup_steps=warm
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(sched, weight_decay=recipe.weight_decay),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing),
        metrics=["accuracy"],
    )
    return model


def train(
    recipe: Recipe,
    data_dir: str | None,
    out_dir: str | Path,
    log=print,
    export_to: str | Path | None = None,
    stop_after: int | None = None,
    *,
    export: bool = True,
) -> dict:
    """Train (or resume) into ``out_dir`` and finalize the run (:func:`finalize`, which
    ``export`` is passed to); returns the final report dict.

    ``stop_after`` ends this call after that many epochs (a time box); calling again with
    the same recipe and folder resumes from the checkpoint.
    """
    import keras

    from edgefer.train.models import count_flops, load

    recipe.check()
    if recipe.quant_aware:
        from edgefer.train import quant  # noqa: F401  (registers its layer before a checkpoint is loaded)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(recipe.seed)

    tr, va = train_and_validation(recipe, data_dir)
    refit = len(va) == 0
    log(f"train {len(tr)} images {tr.class_counts()}, "
        + ("no validation part: a refit, the last epoch ships" if refit else f"validation {len(va)}"))  # fmt: skip
    images, targets = training_faces(tr, recipe, data_dir, log)
    framed = None
    if recipe.framed > 0:
        from edgefer.train.framed import cached_framed_faces

        framed, _ = cached_framed_faces(images, out / "framed.npz", recipe.seed, log)
    ds_tr = make_dataset(images, targets, recipe, train=True, framed=framed)
    ds_va = (
        None
        if refit
        else make_dataset(va.images, np.eye(len(LABELS), dtype=np.float32)[va.labels], recipe, train=False)
    )
    run = _Run(out, recipe, refit, log)
    if run.ckpt.exists() and run.state:
        model = load(run.ckpt, compile=True)
        log(f"resuming from {run.ckpt} after epoch {run.state['epoch']}")
    else:
        model = _new_model(recipe, int(np.ceil(len(images) / recipe.batch_size)) * recipe.epochs, tr, log)
        run.fresh()
    log(f"{recipe.arch}: {model.count_params():,} parameters, {count_flops(model) / 1e6:.1f} MFLOPs")
    if run.state.get("averaged") and run.avg_path.exists():
        run.average = WeightAverage.load(run.avg_path)
    if run.unfinished():
        model.fit(
            ds_tr,
            validation_data=ds_va,
            epochs=min(recipe.epochs, run.state["epoch"] + stop_after) if stop_after else recipe.epochs,
            initial_epoch=run.state["epoch"],
            verbose=0,
            callbacks=[run.callback(), _Progress(recipe.epochs, log).make()],
        )
    if run.unfinished():
        log(f"stopped after epoch {run.state['epoch']} of {recipe.epochs}; run the same command again to resume")
        return {"resumable": True, "epoch": run.state["epoch"]}
    _keep_best(model, run, tr, va, log)
    return finalize(out, data_dir, export_to, log=log, export=export)


def _keep_best(model, run: _Run, tr, va, log) -> None:
    """Put the weights that ship into ``best.keras``: the best epoch's, or the epochs' average
    when validation prefers it, moved back into the plain network after quantisation-aware training."""
    from edgefer.train.models import build

    model.load_weights(run.best_path)
    if run.average.count:
        run.state["average"] = average_if_better(model, run.average, run.recipe, run.state["best_val"], tr, va, log)
        run.save_state()
    if run.recipe.quant_aware:  # the weights go back into the plain network the export converts
        plain = build(run.recipe.arch)
        copy_weights(model, plain, source=str(run.best_path))
        model = plain
    model.save(run.out / "best.keras")
