"""Keras -> TFLite export, float32 and full-integer int8.

Both files take (N, 48, 48, 1) faces scaled to [0, 1]; the int8 file carries its own input
quantisation so the runtime can feed it from the same convention.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np


def to_tflite(
    model, out: str | Path, *, int8: bool = False, calibration: np.ndarray | None = None, rewrite: bool = True
) -> Path:
    """Write ``model`` as TFLite; ``calibration`` are uint8 48x48 train faces for int8.
    ``rewrite=False`` keeps the graph as trained instead of :func:`runtime_graph`'s form (to
    measure what that form buys)."""
    import tempfile

    import tensorflow as tf

    if rewrite:
        model = runtime_graph(model)
    with tempfile.TemporaryDirectory() as saved:
        # A SavedModel freezes the variables; a bare tf.function would leave resource
        # reads in the graph, which int8 calibration cannot execute.
        spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32, name="face")
        model.export(saved, format="tf_saved_model", input_signature=[spec], verbose=False)
        conv = tf.lite.TFLiteConverter.from_saved_model(saved)
        data = _convert(conv, int8, calibration)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    return out


def runtime_graph(model):
    """``model`` computing the same function in a form the TFLite runtime runs faster.

    A depthwise conv with ``r`` kernels per channel (a factored conv's first half) becomes its
    input tiled ``r`` times along the channels, then one kernel per channel; the 1x1 conv that
    reads it takes its input rows in the tiled order. The two are the same sums, but XNNPACK
    runs the second form in about half the time in int8 (a few multiply-accumulates per
    channel leave the multiplier form dominated by its memory traffic). Nested models (a
    mirrored network's trunk) are rewritten too; a model with no such conv comes back as is.
    """
    import keras

    from edgefer.train.models import every_layer

    layers = keras.layers
    tiled: dict[str, tuple[int, int]] = {}  # depthwise conv -> (input channels, kernels per channel)
    rows: dict[str, tuple[int, int]] = {}  # 1x1 conv reading one -> the same
    made: dict[int, str] = {}  # id of a tiled conv's output -> its name

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, layers.DepthwiseConv2D) and layer.depth_multiplier > 1:
            tiled[layer.name] = (layer.kernel.shape[2], layer.depth_multiplier)
            config["depth_multiplier"] = 1
        return layer.__class__.from_config(config)

    def call(layer, *args, **kwargs):
        readers = [t for t in keras.tree.flatten((args, kwargs)) if id(t) in made]
        if readers:
            source = made[id(readers[0])]
            if not (type(layer) is layers.Conv2D and layer.kernel_size == (1, 1) and layer.groups == 1):
                raise ValueError(
                    f"layer {layer.name} reads {source}, which has several kernels per channel; "
                    "only a 1x1 conv can take its channels in another order"
                )
            rows[layer.name] = tiled[source]
        if layer.name in tiled:
            x = layers.Concatenate(name=f"{layer.name}_tiles")([args[0]] * tiled[layer.name][1])
            out = layer(x, *args[1:], **kwargs)
            made[id(out)] = layer.name
            return out
        return layer(*args, **kwargs)

    if not any(isinstance(la, layers.DepthwiseConv2D) and la.depth_multiplier > 1 for la in every_layer(model)):
        return model
    new = keras.models.clone_model(model, clone_function=clone, call_function=call, recursive=True)
    theirs = {layer.name: layer for layer in every_layer(model)}
    for layer in every_layer(new):
        if not layer.weights or layer.name not in theirs:
            continue
        w = theirs[layer.name].get_weights()
        if layer.name in tiled:  # kernel (h, w, c, m) -> (h, w, m * c), bias from c * r + m to m * c + c
            cin, r = tiled[layer.name]
            kh, kw = w[0].shape[:2]
            w = [
                np.transpose(w[0], (0, 1, 3, 2)).reshape(kh, kw, r * cin, 1),
                *(b.reshape(cin, r).T.ravel() for b in w[1:]),
            ]
        elif layer.name in rows:
            cin, r = rows[layer.name]
            kernel = w[0][0, 0]
            w = [kernel.reshape(cin, r, -1).transpose(1, 0, 2).reshape(cin * r, -1)[None, None], *w[1:]]
        layer.set_weights(w)
    return new


def _convert(conv, int8: bool, calibration: np.ndarray | None) -> bytes:
    import tensorflow as tf

    if int8:
        if calibration is None or len(calibration) == 0:
            raise ValueError("int8 export needs calibration images")

        def representative() -> Iterator[list[np.ndarray]]:
            for img in calibration:
                yield [(img.astype(np.float32) / 255.0)[None, :, :, None]]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv.convert()


def calibration_sample(images: np.ndarray, labels: np.ndarray, n: int = 400, seed: int = 0) -> np.ndarray:
    """A class-balanced sample of train faces for int8 calibration."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per = max(1, n // len(classes))
    idx = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per] for c in classes])
    return images[idx]
