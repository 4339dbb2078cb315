"""The two architectures edgefer ships.

``paper`` is the source paper's selected CNN, kept layer for layer so its edge table can be
reproduced. ``edgefer`` is the product default: the same 48x48 grayscale input at a lower
cost, spending its budget on depth (residual depthwise-separable blocks) instead of a large
dense layer, which is where the paper's network keeps 72 % of its parameters.

``edgefer-wide`` is a teacher, never shipped: the edgefer network at 1.5 times the channels
(2.25 times the cost, over the product's budget). The student has matched every teacher it had,
so a better student needs a stronger teacher, and width is the cheapest strength to buy.

``edgefer-gdc`` is the edgefer network with a global depthwise convolution in place of global
average pooling (the head of MobileFaceNet, Chen et al. 2018): one learnt weight per channel and
position of the last 6x6 map. Average pooling treats every position alike, yet in an aligned
face the mouth and the eyes always sit in the same places; the head costs 9,216 parameters and
18 kFLOPs. It learnt to favour the middle of the face and bought no accuracy (stage 10 in
models/README.md), so the product keeps average pooling.

``edgefer-se`` gates the channels of each residual branch by what the whole face shows
(squeeze-and-excitation, Hu et al. 2018): convolutions weigh every face alike, a gate lets the
face at hand pick which features count. 85 k parameters and 0.2 MFLOPs for five gates. Only the
last block's gates learnt to vary from face to face, and the network tied the one without gates
(stage 11 in models/README.md), so the product keeps plain blocks.

``edgefer-mirror`` is flip averaging inside the network, paid for by width: a 24-channel edgefer
trunk (51 MFLOPs) reads the face and its mirror image and the two answers are averaged, 103
MFLOPs in all. Flip averaging is worth 0.6 to 1 point to every edgefer model, but at two passes
of the 32-channel network it costs 180 MFLOPs; here it fits the paper's budget, and the network
gives one face and its mirror image the same answer by construction.

``edgefer-mirror-full`` pays for the mirror pass where the cost is instead of with width: the
three full convs opening stages 2-4 hold 64 of the 90 MFLOPs, and a rank-3 factored conv
(depthwise then pointwise, nothing between) does each for about 7.5. The trunk keeps all 32
channels, and a trained edgefer model factors into it by SVD, so it starts near that model.

``edgefer-dense`` is shaped for CPUs with int8 dot products as well as for those without: the
edgefer networks spend few FLOPs in many small operations (depthwise convs, 1x1 convs on few
channels, additions at 48 px), which dot-product instructions do not speed up, while they make
dense convs several times cheaper. Here every layer is a dense 3x3 conv on channels in multiples
of 32, the first one strided so that nothing runs at 48 px (a one-channel conv there is bound by
its pixels, not its arithmetic): 64 MFLOPs in 8 convs, 18 operations in its int8 file against the
edgefer trunk's 31, so it is cheap by FLOPs and by operation count alike.
``edgefer-dense-mirror`` is that network trained as a mirrored pair, as stage 13 trained the
edgefer trunk: a trunk taught to be averaged with its mirror image gains more from the mirror
pass the daemon makes when unsure than one trained alone.
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
    (:func:`edgefer.train.trainer.factor_into`), at a cost of ``rank`` (9 + filters) per
    input channel and pixel instead of 9 x filters."""
    x = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=rank, use_bias=False, name=f"{name}_dwf")(x)
    x = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pwf")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def _squeeze_excite(y, filters: int, name: str):
    """Rescale each channel of a residual branch by a gate read from the whole face.

    The gate is 2 x sigmoid, not the usual sigmoid, and its last layer starts at zero: the gate
    then starts at exactly 1, so a model grown from one without gates first computes what its
    source did (:func:`edgefer.train.trainer.grow_from`), and can still learn to damp or boost.
    """
    s = layers.GlobalAveragePooling2D(name=f"{name}_sepool")(y)
    s = layers.Dense(max(8, filters // 4), activation="relu", name=f"{name}_sedown")(s)
    s = layers.Dense(filters, kernel_initializer="zeros", name=f"{name}_seup")(s)
    s = layers.Activation("sigmoid", name=f"{name}_sesig")(s)
    s = layers.Rescaling(2.0, name=f"{name}_segate")(s)
    s = layers.Reshape((1, 1, filters), name=f"{name}_seshape")(s)
    return layers.Multiply(name=f"{name}_se")([y, s])


def _sep_residual(x, filters: int, name: str, se: bool = False):
    y = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_dw")(x)
    y = layers.BatchNormalization(name=f"{name}_dwbn")(y)
    y = layers.Activation("relu", name=f"{name}_dwrelu")(y)
    y = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pw")(y)
    y = layers.BatchNormalization(name=f"{name}_pwbn")(y)
    if se:
        y = _squeeze_excite(y, filters, name)
    y = layers.Add(name=f"{name}_add")([x, y])
    return layers.Activation("relu", name=f"{name}_relu")(y)


def edgefer_cnn(
    width: int = 32,
    dropout: float = 0.3,
    blocks: tuple[int, int, int] = (1, 2, 2),
    name: str = "edgefer",
    head: str = "gap",
    se: bool = False,
    rank: int = 0,
    crop: int = 0,
) -> keras.Model:
    """Four stages (48, 24, 12, 6 px); each opens with a full 3x3 conv that doubles the
    channels and continues with ``blocks`` residual depthwise-separable blocks (stages 2-4),
    then global pooling.

    Full convolutions where channels change (cheap at low channel counts, and fast on CPU),
    separable ones for depth: about 0.6 M parameters and 90 MFLOPs at ``width=32``; each
    further block costs about 5 MFLOPs, whatever its stage. Blocks are named by stage and
    position (``s3b``, ``s3c``, ...), so a deeper model can start from a shallower one's
    weights (:func:`edgefer.train.trainer.start_from`). ``head="gdc"`` pools with a global
    depthwise convolution (``gdc``) instead, which a model grown from a ``gap`` one starts as
    the plain average. ``se`` gates each residual branch's channels (squeeze-and-excitation).
    ``rank`` > 0 factors the full convs that open stages 2-4 into depthwise-then-pointwise
    pairs of that rank (:func:`_factored_conv_bn`): from 21 to about 7.5 MFLOPs each at rank 3.
    ``crop`` > 0 makes the first layer drop that many pixels on every side: the network still
    takes the product's 48x48 face, but computes on its centre, where FER2013's tight crops put
    the eyes, brows and mouth. Every conv's cost scales with the pixels it sees, so a 4-pixel crop
    (40x40) costs 0.69 of the full face, and no weight changes shape: a network trained on the
    full face starts a cropped one as it is.
    """
    if head not in ("gap", "gdc"):
        raise ValueError(f"unknown head {head!r} (known: gap, gdc)")
    w = width
    x = inp = keras.Input(INPUT_SHAPE, name="face")
    if crop:
        x = layers.Cropping2D(crop, name="crop")(x)
    x = _conv_bn(x, w, "s1a")
    x = layers.MaxPooling2D(2, name="s1_pool")(x)  # 24
    for stage, (filters, n) in enumerate(zip((2 * w, 4 * w, 8 * w), blocks, strict=True), start=2):
        opener = f"fb{stage - 1}"
        x = _factored_conv_bn(x, filters, rank, opener) if rank else _conv_bn(x, filters, opener)
        for i in range(n):
            x = _sep_residual(x, filters, f"s{stage}{chr(ord('b') + i)}", se=se)
        if stage < 4:
            x = layers.MaxPooling2D(2, name=f"s{stage}_pool")(x)  # 12, then 6
    if head == "gdc":
        x = layers.DepthwiseConv2D(x.shape[1], use_bias=False, name="gdc")(x)
        x = layers.Flatten(name="gdc_flat")(x)
    else:
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
    if name == "paper":
        return paper_cnn()
    if name == "edgefer":
        return edgefer_cnn()
    if name == "edgefer-wide":
        return edgefer_cnn(width=48, name=name)
    if name == "edgefer-gdc":
        return edgefer_cnn(name=name, head="gdc")
    if name == "edgefer-se":
        return edgefer_cnn(name=name, se=True)
    if name == "edgefer-mirror":
        return mirrored(edgefer_cnn(width=24, name="trunk"), name)
    if name == "edgefer-mirror-full":
        return mirrored(edgefer_cnn(rank=3, name="trunk"), name)
    if name == "edgefer-mirror-crop":
        return mirrored(edgefer_cnn(rank=3, crop=4, name="trunk"), name)
    if name == "edgefer-factored":
        return edgefer_cnn(rank=3, name=name)
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
