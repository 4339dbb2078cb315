"""Quantisation-aware fine-tuning: train the float network while it feels int8 rounding.

A full-integer TFLite file rounds every tensor that leaves a fused operation (convolution
with its batch norm and ReLU, an addition with its ReLU, global pooling) to 256 levels spread
over the range that tensor reached on the calibration faces. A network whose answers hinge
on small margins loses some of them to that rounding: the soup of stages 3 and 6 agreed with
its own int8 file on 97.6 % of validation faces, stage 3 on 98.2 % (models/README.md).
Fine-tuning with the same rounding simulated in the forward pass (and a straight-through
gradient) lets the network find weights whose answers survive it.

The export is unchanged: the fine-tuned float model is calibrated and converted like any
other, so the simulated rounding never reaches a file. Batch norm is frozen while it runs,
as the converter folds it into the convolution with the statistics it has. Both roundings
are simulated, the activations' and the weights' (per channel): with the activations' alone
the simulated network agreed with stage 3's int8 file on fewer validation faces than the
float network did (97.8 % against 98.2 %), so it was rehearsing other errors than the file's.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

# Layers whose output TFLite carries over unchanged (max pooling keeps its input's scale,
# dropout and flatten vanish) or folds into the layer that produced their input.
_PASS_THROUGH = (
    keras.layers.MaxPooling2D,
    keras.layers.Dropout,
    keras.layers.Flatten,
    keras.layers.InputLayer,
)
_FUSES_INTO_PRODUCER = (keras.layers.BatchNormalization, keras.layers.Activation)
# Layers whose kernel the converter stores as int8, one step per output channel.
_WEIGHTED = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)


def _round_weights(kernel):
    """Symmetric int8 per output channel (the last axis; a depthwise kernel's channels), the
    converter's choice. Rounding the raw kernel equals rounding the one with batch norm
    folded in: folding scales each output channel by one factor, and so does its step."""
    axes = list(range(len(kernel.shape) - 1))
    step = tf.maximum(tf.reduce_max(tf.abs(kernel), axis=axes, keepdims=True), 1e-12) / 127.0
    rounded = tf.clip_by_value(tf.round(kernel / step), -127.0, 127.0) * step
    return kernel + tf.stop_gradient(rounded - kernel)  # straight-through gradient


@keras.saving.register_keras_serializable("edgefer")
class FakeQuant(keras.layers.Layer):
    """Runs ``layer`` as the int8 file will: a convolution or dense layer with its kernel
    rounded to int8 per channel, and its output (when ``low`` and ``high`` are given) rounded
    to the int8 grid of that range (asymmetric, zero exactly representable). Gradients pass
    straight through the rounding, and are zero for outputs beyond the range.

    It wraps the layer rather than following it, so the layer keeps its name and its
    weights: a plain model of the same architecture takes them back by name.
    """

    def __init__(self, layer: keras.layers.Layer, low: float | None = None, high: float | None = None, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer
        self.low, self.high = (None, None) if low is None or high is None else (float(low), float(high))

    def call(self, inputs, training=None, mask=None):
        y = self._weighted(inputs) if isinstance(self.layer, _WEIGHTED) else self.layer(inputs, training=training)
        if self.low is None:
            return y
        return tf.quantization.fake_quant_with_min_max_args(y, min=self.low, max=self.high, num_bits=8)

    def _weighted(self, x):
        layer = self.layer
        if not layer.built:
            layer.build(x.shape)
        kernel = _round_weights(layer.kernel)
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            y = keras.ops.depthwise_conv(
                x, kernel, layer.strides, layer.padding, layer.data_format, layer.dilation_rate
            )
        elif isinstance(layer, keras.layers.Conv2D):
            y = keras.ops.conv(x, kernel, layer.strides, layer.padding, layer.data_format, layer.dilation_rate)
        else:
            y = keras.ops.matmul(x, kernel)
        if layer.use_bias:
            y = y + layer.bias
        return layer.activation(y)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "layer": keras.saving.serialize_keras_object(self.layer),
            "low": self.low,
            "high": self.high,
        }

    @classmethod
    def from_config(cls, config: dict) -> FakeQuant:
        layer = keras.saving.deserialize_keras_object(config.pop("layer"))
        return cls(layer, **config)


def _consumers(model: keras.Model) -> dict[str, list[str]]:
    """Layer name -> names of the layers fed by its output, read from the functional config."""

    def producers(node) -> list[str]:
        if isinstance(node, dict):
            if node.get("class_name") == "__keras_tensor__":
                return [node["config"]["keras_history"][0]]
            return [name for v in node.values() for name in producers(v)]
        if isinstance(node, list | tuple):
            return [name for v in node for name in producers(v)]
        return []

    out: dict[str, list[str]] = {layer.name: [] for layer in model.layers}
    for entry in model.get_config()["layers"]:
        for name in producers(entry.get("inbound_nodes", [])):
            out[name].append(entry["name"])
    return out


def quant_points(model: keras.Model) -> list[str]:
    """Names of the layers whose output the int8 file stores as a tensor of its own.

    A layer whose output goes on only into a batch norm or an activation is fused with it
    and never rounded; pass-through layers keep their input's grid; the model's output (the
    layer nothing consumes: softmax probabilities) is left exact, its rounding cannot be
    learned around.
    """
    consumers = _consumers(model)
    points = []
    for layer in model.layers:
        fed = [model.get_layer(name) for name in consumers[layer.name]]
        if isinstance(layer, _PASS_THROUGH) or not fed:
            continue
        if len(fed) == 1 and isinstance(fed[0], _FUSES_INTO_PRODUCER):
            continue
        points.append(layer.name)
    return points


def activation_ranges(model: keras.Model, points: list[str], faces: np.ndarray) -> dict[str, tuple[float, float]]:
    """Min and max of each point's output over ``faces`` (uint8, 48x48), widened to include
    zero: what the converter's calibration records for the same tensors.

    One converter habit is copied as measured: a tensor whose only use is an addition (a
    residual branch, not the skip that also feeds a convolution) is stored with the union of
    its own range and the sum's (stage 3's last block: -20.3 to 6.3 on its own, stored as
    -20.3 to 8.3, the sum's maximum).
    """
    consumers = _consumers(model)
    sums = {
        name: consumers[name] if all(isinstance(model.get_layer(c), keras.layers.Add) for c in consumers[name]) else []
        for name in points
    }
    probed = sorted(set(points) | {c for cs in sums.values() for c in cs})
    probe = keras.Model(model.inputs, [model.get_layer(name).output for name in probed])
    outs = probe.predict(faces.astype(np.float32)[..., None] / 255.0, batch_size=100, verbose=0)
    outs = outs if isinstance(outs, list) else [outs]
    seen = {name: (float(o.min()), float(o.max())) for name, o in zip(probed, outs, strict=True)}
    ranges = {}
    for name in points:
        lows, highs = zip(*(seen[n] for n in (name, *sums[name])), strict=True)
        ranges[name] = (min(0.0, *lows), max(0.0, *highs))
    return ranges


def fake_quantized(model: keras.Model, faces: np.ndarray) -> keras.Model:
    """A model that shares ``model``'s layers (training it trains ``model``) with int8
    rounding of every kernel and after each :func:`quant_points` layer, the activation
    ranges calibrated on ``faces`` (the calibration faces of the export, for the same grid).

    Batch norm is frozen first (inference statistics, no updates), in ``model`` too. A mirrored
    network (edgefer-mirror-full, edgefer-dense-mirror) is rounded in its trunk, whose ranges are
    those of the faces and their mirror images together: the int8 file runs both views as one batch, so
    calibration gives them one grid.
    """
    from edgefer.train.models import mirrored, trunk_of

    if (trunk := trunk_of(model)) is not None:
        both = np.concatenate([faces, faces[:, :, ::-1]])
        return mirrored(fake_quantized(trunk, both), model.name)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    ranges = activation_ranges(model, quant_points(model), faces)

    def wrap(layer):
        if layer.name in ranges or isinstance(layer, _WEIGHTED):
            return FakeQuant(layer, *ranges.get(layer.name, (None, None)), name=layer.name)
        return layer

    return keras.models.clone_model(model, clone_function=wrap)


def describe(model: keras.Model) -> str:
    """What a :func:`fake_quantized` model rounds, for the training log."""
    from edgefer.train.models import trunk_of

    if (trunk := trunk_of(model)) is not None:
        return describe(trunk) + ", in the trunk both views run through"
    wrapped = [layer for layer in model.layers if isinstance(layer, FakeQuant)]
    kernels = sum(isinstance(layer.layer, _WEIGHTED) for layer in wrapped)
    tensors = sum(layer.low is not None for layer in wrapped)
    return f"simulating int8 rounding of {kernels} kernels and {tensors} activation tensors, batch norm frozen"
