"""Weight averages and batch-norm statistics: a run's averaged epochs or a soup of finished
models, and the statistics recomputed for them ("precise BN").

An average replaces the model it competes with only when the validation faces prefer it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgefer.train import augment as augment_mod
from edgefer.train.data import validate
from edgefer.train.recipe import Recipe


class WeightAverage:
    """Running mean of a model's weight arrays (all of them, as ``get_weights`` lists them).

    Kept as one float64 copy so many snapshots do not accumulate rounding, and saved with
    the run's checkpoint so a resumed run continues the same mean.
    """

    def __init__(self, mean: list[np.ndarray] | None = None, count: int = 0) -> None:
        self.mean, self.count = mean, count

    def add(self, weights: list[np.ndarray]) -> None:
        self.count += 1
        if self.mean is None:
            self.mean = [np.asarray(w, np.float64).copy() for w in weights]
            return
        for m, w in zip(self.mean, weights, strict=True):
            m += (np.asarray(w, np.float64) - m) / self.count

    def _arrays(self) -> list[np.ndarray]:
        if self.mean is None:
            raise ValueError("no weights averaged yet")
        return self.mean

    def weights(self) -> list[np.ndarray]:
        return [m.astype(np.float32) for m in self._arrays()]

    def save(self, path: Path) -> None:
        arrays = self._arrays()
        tmp = path.with_name(path.name + ".tmp.npz")  # replaced in one step: a kill never leaves half a file
        np.savez(tmp, count=self.count, **{f"w{i}": m for i, m in enumerate(arrays)})
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> WeightAverage:
        with np.load(path) as z:
            n = len(z.files) - 1
            return cls([z[f"w{i}"].astype(np.float64) for i in range(n)], int(z["count"]))


def recalibrate_bn(
    model, images: np.ndarray, batches: int = 120, batch: int = 128, seed: int = 0, augment: Recipe | None = None
) -> None:
    """Recompute every batch-norm layer's statistics as the exact mean over ``batches``
    batches of clean training faces ("precise BN").

    The moving averages kept during training lag behind weights that change fast under a
    high learning rate, and were collected on augmented images; inference sees clean ones.
    With ``augment`` the faces pass through that recipe's flips and warps first: a network
    trained on warped and blended faces can depend on the statistics of warped ones.
    Clean faces are seen at most once: a second pass over the same faces adds nothing to the
    mean, so a small training set takes fewer than ``batches`` batches (every warp is new, so
    augmented batches keep their count).
    """
    import keras

    from edgefer.train.models import every_layer

    bns = [layer for layer in every_layer(model) if isinstance(layer, keras.layers.BatchNormalization)]
    if not bns:
        return
    x = images.astype(np.float32)[..., None] / 255.0
    order = np.random.default_rng(seed).permutation(len(x))
    warp = augment_mod.augmenter(augment) if augment else None
    if warp is None:
        batches = min(batches, -(-len(x) // batch))
    saved = [layer.momentum for layer in bns]
    seen = 0
    for k in range(batches):
        start = k * batch if warp is None else (k * batch) % max(len(x) - batch, 1)
        faces = x[order[start : start + batch]]
        for layer in bns:
            layer.momentum = seen / (seen + len(faces))  # a running mean, each face weighing the same
        model(warp(faces, training=True) if warp else faces, training=True)
        seen += len(faces)
    for layer, m in zip(bns, saved, strict=True):
        layer.momentum = m


def average_if_better(
    model, average: WeightAverage, recipe: Recipe, best_val: float, tr, va, log=print, what: str = "epochs"
) -> dict:
    """Put the averaged weights into ``model`` when they beat ``best_val``, the validation
    accuracy of the best of the averaged ``what`` (epochs of a run, or models for a soup);
    otherwise leave ``model`` as it is.

    The moving batch-norm statistics of an average are the average of statistics that
    belonged to other weights, so they are recomputed first, on training faces warped as
    in training (``recipe``'s augmentation without mixup): recomputed on clean faces, the
    stage-5 average scored 1.1 points lower on validation (models/README.md).
    """
    best = model.get_weights()
    model.set_weights(average.weights())
    recalibrate_bn(model, tr.images, augment=recipe)
    val = validate(model, va)["accuracy"]
    kept = val > best_val
    if not kept:
        model.set_weights(best)
    log(f"average of {average.count} {what}: validation {val:.4f} against the best one's {best_val:.4f} "
        f"({'kept' if kept else 'discarded'})")  # fmt: skip
    return {"epochs": average.count, "validation": val, "best_epoch_validation": best_val, "kept": kept}
