"""The architectures behind edgefer's shipped models, and the paper's.

``paper`` is the source paper's selected CNN, kept layer for layer so its edge table can be
reproduced (``paper-*.tflite``).

``edgefer`` spends the same 48x48 grayscale input's budget on depth (residual
depthwise-separable blocks) instead of a large dense layer, which is where the paper's network
keeps 72 % of its parameters. It is the teacher of the shipped default (stage 7 in
models/README.md) and ``models/edgefer-plain.keras``.

``edgefer-mirror-full`` is flip averaging inside the network: the edgefer trunk reads the face
and its mirror image and the two answers are averaged. The three full convs opening stages 2-4
hold 64 of its 90 MFLOPs, and a rank-3 factored conv (depthwise then pointwise, nothing
between) does each for about 7.5, which pays for the second view; a trained edgefer model
factors into it by SVD (:func:`edgefer.train.warmstart.factor_into`). It made the previous
default (``edgefer-*.tflite``, one view of its trunk; ``models/edgefer.keras``).

``edgefer-dense`` is shaped for CPUs with int8 dot products as well as for those without: the
edgefer networks spend few FLOPs in many small operations (depthwise convs, 1x1 convs on few
channels, additions at 48 px), which dot-product instructions do not speed up, while they make
dense convs several times cheaper. Here every layer is a dense 3x3 conv on channels in multiples
of 32, the first one strided so that nothing runs at 48 px (a one-channel conv there is bound by
its pixels, not its arithmetic): 64 MFLOPs in 8 convs, 18 operations in its int8 file against the
edgefer trunk's 31. ``edgefer-dense-mirror`` is that network trained as a mirrored pair: a trunk
taught to be averaged with its mirror image gains more from the mirror pass the daemon makes
when unsure than one trained alone. Its trunk is the default (``edgefer-dense-*.tflite``;
``models/edgefer-dense.keras``).

Retired experiments (a wider teacher, a learnt pooling head, channel gates, a narrower mirrored
pair, a cropped pair, a single-view factored trunk) were removed; git history keeps them and
models/HISTORY.md says which stage tried each.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from edgefer import LABELS
from edgefer.train import ARCHITECTURES

INPUT_SHAPE = (48, 48, 1)


def paper_cnn(batch_norm: bool = True, dropout: float = 0.2) -> keras.Model:
    """Three 3x3 'valid' conv + 2x2 max-pool blocks (64, 128, 256), dense 256, 128, softmax.

    Batch normalisation after each convolution folds into the convolution at export, so the
    exported graph keeps the paper's layers and cost.
    """
    x = inp = keras.Input(INPUT_SHAPE, name="face")
    for i, filters in enumerate((64, 128, 256), start=1):
        x = layers.Conv2D(filters, 3, padding="valid", use_bias=not batch_norm, name=f"fb{i}_conv")(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"fb{i}_bn")(x)
        x = layers.Activation("relu", name=f"fb{i}_relu")(x)
        x = layers.MaxPooling2D(2, name=f"fb{i}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(256, activation="relu", name="dense256")(x)
    x = layers.Dense(128, activation="relu", name="dense128")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    out = layers.Dense(len(LABELS), activation="softmax", name="emotion")(x)
    return keras.Model(inp, out, name="paper")


def _conv_bn(x, filters: int, name: str, kernel: int = 3, strides: int = 1):
    return layers.Activation("relu", name=f"{name}_relu")(_conv_bn_linear(x, filters, name, kernel, strides))


def _conv_bn_linear(x, filters: int, name: str, kernel: int = 3, strides: int = 1):
    """A conv and its batch norm, the activation left to the caller (after a residual)."""
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    return layers.BatchNormalization(name=f"{name}_bn")(x)


def _factored_conv_bn(x, filters: int, rank: int, name: str):
    """A 3x3 convolution of rank ``rank`` per input channel: each input channel gets ``rank``
    3x3 kernels (a depthwise conv), and a 1x1 conv mixes their maps into ``filters`` outputs.

    No norm or activation between the two, so the pair is exactly a full 3x3 conv whose kernel,
    for each input channel, is a sum of ``rank`` products of one 3x3 kernel and one row of
    output weights: a full conv's kernel factors into it by a truncated SVD
    (:func:`edgefer.train.warmstart.factor_into`), at a cost of ``rank`` (9 + filters) per
    input channel and pixel instead of 9 x filters."""
    x = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=rank, use_bias=False, name=f"{name}_dwf")(x)
    x = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pwf")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def _sep_residual(x, filters: int, name: str):
    y = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_dw")(x)
    y = layers.BatchNormalization(name=f"{name}_dwbn")(y)
    y = layers.Activation("relu", name=f"{name}_dwrelu")(y)
    y = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pw")(y)
    y = layers.BatchNormalization(name=f"{name}_pwbn")(y)
    y = layers.Add(name=f"{name}_add")([x, y])
    return layers.Activation("relu", name=f"{name}_relu")(y)


def edgefer_cnn(
    width: int = 32,
    dropout: float = 0.3,
    blocks: tuple[int, int, int] = (1, 2, 2),
    name: str = "edgefer",
    rank: int = 0,
) -> keras.Model:
    """Four stages (48, 24, 12, 6 px); each opens with a full 3x3 conv that doubles the
    channels and continues with ``blocks`` residual depthwise-separable blocks (stages 2-4),
    then global pooling.

    Full convolutions where channels change (cheap at low channel counts, and fast on CPU),
    separable ones for depth: about 0.6 M parameters and 90 MFLOPs at ``width=32``; each
    further block costs about 5 MFLOPs, whatever its stage. Blocks are named by stage and
    position (``s3b``, ``s3c``, ...). ``rank`` > 0 factors the full convs that open stages 2-4
    into depthwise-then-pointwise pairs of that rank (:func:`_factored_conv_bn`): from 21 to about
    7.5 MFLOPs each at rank 3.
    """
    w = width
    x = inp = keras.Input(INPUT_SHAPE, name="face")
    x = _conv_bn(x, w, "s1a")
    x = layers.MaxPooling2D(2, name="s1_pool")(x)  # 24
    for stage, (filters, n) in enumerate(zip((2 * w, 4 * w, 8 * w), blocks, strict=True), start=2):
        opener = f"fb{stage - 1}"
        x = _factored_conv_bn(x, filters, rank, opener) if rank else _conv_bn(x, filters, opener)
        for i in range(n):
            x = _sep_residual(x, filters, f"s{stage}{chr(ord('b') + i)}")
        if stage < 4:
            x = layers.MaxPooling2D(2, name=f"s{stage}_pool")(x)  # 12, then 6
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    out = layers.Dense(len(LABELS), activation="softmax", name="emotion")(x)
    return keras.Model(inp, out, name=name)


def dense_cnn(
    widths: tuple[int, ...] = (32, 64, 128),
    convs: tuple[int, ...] = (2, 3, 2),
    dropout: float = 0.3,
    name: str = "edgefer-dense",
    stem: tuple[int, int] = (3, 2),
    stem_width: int | None = None,
    residual: bool = True,
) -> keras.Model:
    """A strided 3x3 stem to 24 px, then stages of dense 3x3 convs at 24, 12 and 6 px.

    Each stage's first conv sets its channels; the others add a residual, which keeps a
    network trained from scratch easy to optimise and costs one addition each. Channels are
    multiples of 32, the widths int8 kernels with dot products run at full rate (40 channels
    cost about what 48 do there, measured). The stride-2 stem sees every pixel (3x3 windows
    overlapping by one) and writes 32 values for each 2x2 block, so the first stage loses no
    detail it needs. ``stem`` (kernel, stride), ``stem_width`` and ``residual`` give the
    neighbouring shapes this one was chosen among (``benchmarks.shapes``); a stride-1 stem is
    followed by a 2x2 max pool, so every shape reaches 24 px before its first stage."""
    kernel, stride = stem
    inp = keras.Input(INPUT_SHAPE, name="face")
    x = _conv_bn(inp, stem_width or widths[0], "s1", kernel, stride)
    if stride == 1:
        x = layers.MaxPooling2D(2, name="s1_pool")(x)  # 24 px
    for stage, (filters, n) in enumerate(zip(widths, convs, strict=True), start=2):
        for i in range(n):
            block = f"s{stage}{chr(ord('a') + i)}"
            y = _conv_bn_linear(x, filters, block)
            if residual and x.shape[-1] == filters:
                y = layers.Add(name=f"{block}_add")([x, y])
            x = layers.Activation("relu", name=f"{block}_relu")(y)
        if stage < len(widths) + 1:
            x = layers.MaxPooling2D(2, name=f"s{stage}_pool")(x)  # 12, then 6
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    out = layers.Dense(len(LABELS), activation="softmax", name="emotion")(x)
    return keras.Model(inp, out, name=name)


@keras.saving.register_keras_serializable(package="edgefer")
class MirrorPair(layers.Layer):
    """The batch of faces followed by their mirror images (left and right swapped).

    One batch rather than two calls of the trunk, so that int8 conversion calibrates one
    set of activation ranges for a face and its mirror image: with two paths each gets its
    own, and the int8 network stops being exactly mirror-invariant."""

    #: faces the layers after it see per input face (what a face costs, for count_flops)
    views = 2

    def call(self, x):
        return ops.concatenate([x, ops.flip(x, axis=2)], axis=0)

    def compute_output_shape(self, shape):
        return (None if shape[0] is None else 2 * shape[0], *shape[1:])


@keras.saving.register_keras_serializable(package="edgefer")
class FoldPair(layers.Layer):
    """The mean of the answers for each face and its mirror image, undoing MirrorPair's batch."""

    views = 0.5

    def call(self, y):
        return ops.mean(ops.reshape(y, (2, -1, y.shape[-1])), axis=0)

    def compute_output_shape(self, shape):
        return (None if shape[0] is None else shape[0] // 2, *shape[1:])


def mirrored(trunk: keras.Model, name: str) -> keras.Model:
    """``trunk``'s answers for a face and for its mirror image, averaged: one network whose
    answer cannot change when the face is mirrored. The trunk's layers keep their names."""
    x = keras.Input(INPUT_SHAPE, name="face")
    return keras.Model(x, FoldPair(name="mean")(trunk(MirrorPair(name="mirror")(x))), name=name)


def build(name: str) -> keras.Model:
    """A fresh network of architecture ``name`` (one of :data:`edgefer.train.ARCHITECTURES`)."""
    if name == "paper":
        return paper_cnn()
    if name == "edgefer":
        return edgefer_cnn()
    if name == "edgefer-mirror-full":
        return mirrored(edgefer_cnn(rank=3, name="trunk"), name)
    if name == "edgefer-dense":
        return dense_cnn()
    if name == "edgefer-dense-mirror":
        return mirrored(dense_cnn(name="trunk"), name)
    raise ValueError(f"unknown architecture {name!r} (known: {', '.join(ARCHITECTURES)})")


def load(path, compile: bool = False) -> keras.Model:
    """A saved edgefer network (or a teacher). Every load goes through here so that the layers
    mirrored networks are saved with (MirrorPair, FoldPair) are registered, which importing this
    module does; a bare ``keras.models.load_model`` works only if something else imported it."""
    return keras.models.load_model(path, compile=compile)


def trunk_of(model: keras.Model) -> keras.Model | None:
    """The trunk a mirrored network (:func:`mirrored`) runs on both views, or None for a plain one."""
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model) and layer.name == "trunk"]
    return nested[0] if nested else None


def every_layer(model: keras.Model) -> list:
    """Every layer of ``model``, those of a nested trunk included."""
    nested = (every_layer(layer) if isinstance(layer, keras.Model) else [layer] for layer in model.layers)
    return [inner for group in nested for inner in group]


def count_flops(model: keras.Model) -> int:
    """Inference FLOPs (2 x multiply-accumulates) of conv and dense layers per input face."""
    macs, views = 0.0, 1.0
    for layer in model.layers:  # in the order a face flows through them
        views *= getattr(layer, "views", 1)
        # a layer wrapped to simulate int8 rounding (edgefer.train.quant) costs what it wraps
        kind = inner if isinstance(inner := getattr(layer, "layer", None), layers.Layer) else layer
        if isinstance(layer, keras.Model):  # a shared trunk costs what it costs at each call
            macs += views * count_flops(layer) / 2 * len(layer._inbound_nodes)
        elif isinstance(kind, layers.DepthwiseConv2D):
            _, h, w, c = layer.output.shape
            kh, kw = kind.kernel_size
            macs += views * h * w * c * kh * kw
        elif isinstance(kind, layers.Conv2D):
            _, h, w, c = layer.output.shape
            kh, kw = kind.kernel_size
            macs += views * h * w * c * kh * kw * layer.input.shape[-1]
        elif isinstance(kind, layers.Dense):
            macs += views * layer.input.shape[-1] * kind.units
    return round(2 * macs)
