"""The faces a run trains and validates on, as TensorFlow datasets with the recipe's augmentation.

FER2013 train is cut once per recipe (:func:`train_and_validation`): training, finalizing,
soups and paired comparisons all take their keep-it-or-not decisions on the same held-out faces.
"""

from __future__ import annotations

import numpy as np

from edgefer import LABELS
from edgefer.datasets import Dataset, load_fer2013, stratified_split
from edgefer.metrics import summary
from edgefer.train import augment as augment_mod
from edgefer.train.recipe import Recipe, TrainError
from edgefer.train.teachers import teacher_targets


def mixup(x, y, alpha: float):
    """Blend each face (and its target) with a random partner from the same batch.

    The weight of the face itself is drawn per face from Beta(alpha, alpha) and folded
    to at least 0.5, so every blend still mostly shows the face whose label it keeps.
    """
    import tensorflow as tf

    n = tf.shape(x)[0]
    a = tf.random.gamma([n], alpha)
    b = tf.random.gamma([n], alpha)
    lam = a / (a + b)
    lam = tf.maximum(lam, 1.0 - lam)
    partner = tf.random.shuffle(tf.range(n))
    lx = tf.reshape(lam, [-1, 1, 1, 1])
    ly = tf.reshape(lam, [-1, 1])
    return lx * x + (1.0 - lx) * tf.gather(x, partner), ly * y + (1.0 - ly) * tf.gather(y, partner)


def make_dataset(images: np.ndarray, onehot: np.ndarray, r: Recipe, *, train: bool, framed: np.ndarray | None = None):
    """Batches of uint8 faces scaled to [0, 1] with their targets; for training, shuffled and
    augmented in the order that keeps each step honest: warps, mixup, then the teachers label
    what the student will see, and only then the camera degrades the student's copy.

    ``framed``: each face as the daemon's face stage crops it (edgefer.train.framed). It
    travels as a second channel, so the warps and mixup move it with the clean face; the
    teachers label the clean channel and the student reads the framed one for ``r.framed``
    of the faces."""
    import tensorflow as tf

    x = images.astype(np.float32)[..., None] / 255.0
    if framed is not None:
        x = np.concatenate([x, framed.astype(np.float32)[..., None] / 255.0], axis=-1)
    ds = tf.data.Dataset.from_tensor_slices((x, onehot))
    if train:
        ds = ds.shuffle(len(x), seed=r.seed, reshuffle_each_iteration=True)
    ds = ds.batch(r.batch_size)
    if train:
        aug = augment_mod.augmenter(r)
        ds = ds.map(lambda a, b: (aug(a, training=True), b), num_parallel_calls=tf.data.AUTOTUNE)
        if r.mixup > 0:
            ds = ds.map(lambda a, b: mixup(a, b, r.mixup), num_parallel_calls=tf.data.AUTOTUNE)
        if r.teachers and r.distill > 0:
            target = teacher_targets(r.teachers, r.distill, flip=r.teacher_flip)
            ds = ds.map(lambda a, b: (a, target(a[..., :1], b)), num_parallel_calls=tf.data.AUTOTUNE)
        if framed is not None:
            ds = ds.map(lambda a, b: (student_view(a, r.framed), b), num_parallel_calls=tf.data.AUTOTUNE)
        if r.camera > 0:
            ds = ds.map(lambda a, b: (augment_mod.camera_degrade(a, r.camera), b), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def student_view(x, p: float):
    """The framed channel of a two-channel batch for a share ``p`` of the faces, else the clean one."""
    import tensorflow as tf

    pick = tf.random.uniform([tf.shape(x)[0], 1, 1, 1]) < p
    return tf.where(pick, x[..., 1:], x[..., :1])


def predict_probs(model, images: np.ndarray, *, flip_average: bool = False, batch: int = 256) -> np.ndarray:
    """Softmax outputs for uint8 faces; optionally averaged with the mirrored face."""
    x = images.astype(np.float32)[..., None] / 255.0
    p = model.predict(x, batch_size=batch, verbose=0)
    if flip_average:
        p = (p + model.predict(x[:, :, ::-1], batch_size=batch, verbose=0)) / 2
    return p


def train_and_validation(recipe: Recipe, data_dir: str | None) -> tuple[Dataset, Dataset]:
    """FER2013 train cut into the training faces and the validation part held out per class
    (``recipe.val_fraction``, ``recipe.seed``): the same cut for training, finalizing and soups,
    so every keep-it-or-not decision is taken on the same faces."""
    full = load_fer2013(data_dir, "train", limit_per_class=recipe.limit_per_class)
    keep, held = stratified_split(full.labels, recipe.val_fraction, recipe.seed)
    return full.subset(keep), full.subset(held)


def training_faces(tr: Dataset, recipe: Recipe, data_dir: str | None, log=print) -> tuple[np.ndarray, np.ndarray]:
    """The faces a run trains on and their one-hot targets; with ``transfer_faces`` the
    dropped classes' training faces follow, with all-zero targets that the teachers fill."""
    onehot = np.eye(len(LABELS), dtype=np.float32)
    images, targets = tr.images, onehot[tr.labels]
    if recipe.transfer_faces:
        if not (recipe.teachers and recipe.distill > 0):
            raise TrainError("--transfer-faces: only teachers label those faces; give --teacher and --distill")
        extra = load_fer2013(data_dir, "train", limit_per_class=recipe.limit_per_class, dropped=True).images
        log(f"transfer faces: {len(extra)} of the dropped classes, labelled by the teachers alone")
        images = np.concatenate([images, extra])
        targets = np.concatenate([targets, np.zeros((len(extra), len(LABELS)), np.float32)])
    return images, targets


def validate(model, va) -> dict:
    """Accuracy, macro-F1 and confusion of ``model`` on the validation faces ``va``: the one
    measure every keep-it-or-not decision after training is taken on."""
    return summary(va.labels, predict_probs(model, va.images).argmax(1), LABELS)
