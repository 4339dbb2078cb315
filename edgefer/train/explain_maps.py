"""Saliency maps: Grad-CAM++ of a Keras model at several layers, and the two maps that know
nothing about the model (random blobs, a centre blob) an explanation must beat.

Grad-CAM++ follows Chattopadhay et al. (WACV 2018); TensorFlow and Keras (the ``train`` extra)
are imported inside the functions that need them, so the numpy baselines load without them.
docs/explainability.md gives the derivation and why the baselines are area-matched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgefer.train.explain_metrics import DEFAULT_THRESHOLD, ProbFn, saliency_ranks

BLOCKS: tuple[str, ...] = ("fb1", "fb2", "fb3")
CENTRE_SIGMA = 10.0


def normalise_maps(maps: np.ndarray) -> np.ndarray:
    """Min-max each map to [0, 1]; a flat map becomes all zeros (it ranks no pixel above another)."""
    m = np.asarray(maps, dtype=np.float32)
    flat = m.reshape(m.shape[0], -1)
    lo, hi = flat.min(axis=1, keepdims=True), flat.max(axis=1, keepdims=True)
    span = hi - lo
    out = np.where(span > 1e-12, (flat - lo) / np.where(span > 1e-12, span, 1.0), 0.0)
    return out.reshape(m.shape).astype(np.float32)


def random_maps(n: int, size: tuple[int, int], seed: int, grid: tuple[int, int] | None = None) -> np.ndarray:
    """Random maps: uniform noise per pixel, or on a coarse ``grid`` upsampled bilinearly.

    The coarse form has the blob structure of a Grad-CAM++ map taken at that resolution.
    Per-pixel noise scatters its important region over the whole face; at equal area, that
    disturbs the model more than any contiguous region, so masking metrics would reward the
    mask's shape rather than its placement.
    """
    rng = np.random.default_rng(seed)
    if grid is None or tuple(grid) == tuple(size):
        return rng.random((n, *size), dtype=np.float32)
    import cv2

    coarse = rng.random((n, *grid), dtype=np.float32)
    up = [cv2.resize(c, (size[1], size[0]), interpolation=cv2.INTER_LINEAR) for c in coarse]
    return normalise_maps(np.stack(up))


def centre_maps(n: int, size: tuple[int, int], sigma: float = CENTRE_SIGMA) -> np.ndarray:
    """A fixed Gaussian blob on the image centre, the same for every image.

    Aligned face crops put eyes, nose and mouth near the centre, so this is the prior a
    useful explanation must beat, harder than random noise.
    """
    h, w = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    g = np.exp(-(((y - (h - 1) / 2) ** 2 + (x - (w - 1) / 2) ** 2) / (2 * sigma**2)))
    return np.repeat(normalise_maps(g[None]), n, axis=0)


def match_active_ratio(maps: np.ndarray, ratios: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Maps with the same pixel order but exactly ``round(ratio * H * W)`` pixels at or above ``threshold``.

    AD, ADA and IC remove or keep the important region, so their values grow with its area:
    uniform noise thresholded at 0.5 masks half the face and "wins" AD for that reason alone.
    Re-valuing a baseline map by rank, to the area the explanation under test chose for the
    same image, leaves the insertion / deletion order (ties broken as in
    :func:`saliency_ranks`) untouched and makes the masking metrics compare like with like.
    """
    m = np.asarray(maps)
    n, hw = m.shape[0], int(np.prod(m.shape[1:]))
    ranks = saliency_ranks(m).astype(np.float64)
    k = np.clip(np.round(np.asarray(ratios, dtype=np.float64) * hw), 0, hw)[:, None]
    top = threshold + (1.0 - threshold) * (1.0 - ranks / np.maximum(k, 1))  # in (threshold, 1]
    rest = threshold * (1.0 - (ranks - k + 1) / (hw - k + 1))  # in (0, threshold)
    return np.where(ranks < k, top, rest).reshape(n, *m.shape[1:]).astype(np.float32)


def gradcampp_map(activations, grads):
    """Grad-CAM++ map (B, h, w) from a layer's activations A and the class-score gradients dY/dA.

    With the score passed through exp (S = exp(Y)) and Y piecewise linear in A (ReLU
    networks), the second and third derivatives of S are S*g**2 and S*g**3, so the
    alpha weights need only the first gradient g:
    ``alpha = g**2 / (2 g**2 + sum_ab(A) g**3)``. The channel weight is
    ``w_k = sum_ij alpha * relu(g)`` (the common factor S > 0 of each image is dropped:
    normalisation removes it) and the map is ``relu(sum_k w_k A_k)``.
    Accepts numpy arrays or tensors (B, h, w, K); returns a tensor.
    """
    import tensorflow as tf

    a = tf.convert_to_tensor(activations, tf.float32)
    g = tf.convert_to_tensor(grads, tf.float32)
    g2 = g * g
    g3 = g2 * g
    total = tf.reduce_sum(a, axis=(1, 2), keepdims=True)
    denom = 2.0 * g2 + total * g3
    nonzero = tf.not_equal(denom, 0.0)
    alpha = tf.where(nonzero, g2 / tf.where(nonzero, denom, tf.ones_like(denom)), tf.zeros_like(denom))
    weights = tf.reduce_sum(alpha * tf.nn.relu(g), axis=(1, 2))  # (B, K)
    return tf.nn.relu(tf.einsum("bhwk,bk->bhw", a, weights))


def one_view(model: Any) -> Any:
    """The network whose layers and answers are explained: a mirrored network's trunk.

    A mirrored network (edgefer-mirror, edgefer-mirror-full) runs its trunk on a batch of the
    face and its mirror image and averages the two answers, so its block layers hold two maps
    per face, one of them mirrored. The trunk on the face as given is one of the two views the
    network averages, and its maps sit on the face's own pixels; a plain network is its own view."""
    from edgefer.train.models import trunk_of

    trunk = trunk_of(model)
    return model if trunk is None else trunk


def default_blocks(model: Any) -> list[str]:
    """The blocks explained when ``--blocks`` is not given: FB1-FB3 where the network names them
    (paper, edgefer), else the last ReLU output at each of its three deepest resolutions.

    The paper reads a map per stage of the network, coarse to fine; a network that names no
    ``fb`` blocks (edgefer-dense: s2b, s3c, s4b at 24, 12 and 6 px) still has stages, and the
    last activation of each is what the next stage sees."""
    names = {layer.name for layer in model.layers}
    if all(f"{b}_relu" in names or f"{b}_conv" in names or b in names for b in BLOCKS):
        return list(BLOCKS)
    last: dict[tuple[int, int], str] = {}
    for layer in model.layers:
        shape = layer.output.shape if layer.name.endswith("_relu") else ()
        if len(shape) == 4:
            last[(int(shape[1]), int(shape[2]))] = layer.name.removesuffix("_relu")
    deepest = sorted(last, reverse=True)[-3:]
    if not deepest:
        raise ValueError(f"model {model.name!r} has no fb1-fb3 blocks and no <name>_relu layers: pass --blocks")
    return [last[size] for size in deepest]


def resolve_layer(model: Any, block: str) -> str:
    """Layer to explain for a block name: ``<block>_relu`` if present, else ``<block>_conv``, else
    ``block`` itself as a layer name, so both shipped architectures and custom ones work."""
    names = {layer.name for layer in model.layers}
    for candidate in (f"{block}_relu", f"{block}_conv", block):
        if candidate in names:
            return candidate
    raise ValueError(f"model {model.name!r} has no layer {block}_relu, {block}_conv or {block}")


def _input_crop(model: Any) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) pixels a network drops from its input before any conv
    (a ``Cropping2D`` first layer), else zeros. Its maps cover the rest of the face, so they are
    stretched over that part and the dropped border, which cannot move the answer, scores 0."""
    import keras

    first = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)][:1]
    if first and isinstance(first[0], keras.layers.Cropping2D):
        (top, bottom), (left, right) = first[0].cropping
        return (int(top), int(bottom)), (int(left), int(right))
    return (0, 0), (0, 0)


class GradCamPlusPlus:
    """Grad-CAM++ of one Keras model at several layers, from one backward pass per batch.

    The class score is the pre-softmax logit when the model ends in a softmax (a Dense layer
    with softmax activation or a softmax Activation layer): Grad-CAM++'s derivation assumes
    a score that is piecewise linear in the activations, which the logit is and the
    probability is not. A linear output is taken as logits; other heads fall back to the
    log of the output.
    """

    def __init__(self, model: Any, layer_names: Sequence[str]) -> None:
        import keras
        import tensorflow as tf

        self.model = model
        self.layer_names = list(layer_names)
        self.input_size = tuple(int(d) for d in model.inputs[0].shape[1:3])
        (top, bottom), (left, right) = self._crop = _input_crop(model)
        self._seen = (self.input_size[0] - top - bottom, self.input_size[1] - left - right)
        final = model.layers[-1]
        act = getattr(getattr(final, "activation", None), "__name__", "")
        if isinstance(final, keras.layers.Dense) and act == "softmax":
            self._head, head_tensor = "dense", final.input
        elif isinstance(final, keras.layers.Activation) and act == "softmax":
            self._head, head_tensor = "logits", final.input
        elif act == "linear":
            self._head, head_tensor = "logits", model.outputs[0]
        else:
            self._head, head_tensor = "logprob", model.outputs[0]
        self._final = final
        outputs = [model.get_layer(n).output for n in self.layer_names] + [head_tensor]
        self._sub = keras.Model(model.inputs, outputs, name=f"{model.name}_gradcampp")
        self._step = tf.function(self._maps, reduce_retracing=True)

    def _maps(self, x, targets):
        import keras
        import tensorflow as tf

        with tf.GradientTape() as tape:
            outs = self._sub(x, training=False)
            acts, head = outs[:-1], outs[-1]
            if self._head == "dense":
                scores = keras.ops.matmul(head, self._final.kernel)
                if self._final.use_bias:
                    scores = scores + self._final.bias
            elif self._head == "logits":
                scores = head
            else:
                scores = tf.math.log(tf.maximum(head, 1e-12))
            # Images are independent at inference, so one summed score yields per-image gradients.
            score = tf.reduce_sum(tf.gather(scores, targets, batch_dims=1))
        grads = tape.gradient(score, acts)
        maps = []
        for a, g in zip(acts, grads, strict=True):
            cam = gradcampp_map(a, g)[..., None]
            (top, bottom), (left, right) = self._crop
            cam = tf.image.resize(cam, self._seen, method="bilinear")
            maps.append(tf.pad(cam, [[0, 0], [top, bottom], [left, right], [0, 0]])[..., 0])
        return maps

    def __call__(
        self,
        images: np.ndarray,
        targets: np.ndarray,
        batch_size: int = 64,
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, np.ndarray]:
        """Maps (N, H, W) in [0, 1] per layer for images (N, H, W[, 1]) in [0, 1]."""
        x = np.asarray(images, dtype=np.float32)
        if x.ndim == 3:
            x = x[..., None]
        t = np.asarray(targets, dtype=np.int32)
        parts: list[list[np.ndarray]] = [[] for _ in self.layer_names]
        for s in range(0, len(x), batch_size):
            maps = self._step(x[s : s + batch_size], t[s : s + batch_size])
            for i, m in enumerate(maps):
                parts[i].append(np.asarray(m))
            if progress:
                progress(len(x[s : s + batch_size]))
        return {n: normalise_maps(np.concatenate(p)) for n, p in zip(self.layer_names, parts, strict=True)}


def keras_prob_fn(model: Any, batch_size: int = 256) -> ProbFn:
    """A :data:`ProbFn` over a Keras model, compiled once.

    Batches are padded to a power of two (at most ``batch_size``) so the traced graph is
    reused instead of retraced for every odd-sized remainder.
    """
    import tensorflow as tf

    call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def f(images: np.ndarray) -> np.ndarray:
        x = np.asarray(images, dtype=np.float32)
        if x.ndim == 3:
            x = x[..., None]
        out = []
        for s in range(0, len(x), batch_size):
            chunk = x[s : s + batch_size]
            n = len(chunk)
            size = min(batch_size, 1 << max(n - 1, 0).bit_length())
            if size > n:
                chunk = np.concatenate([chunk, np.zeros((size - n, *chunk.shape[1:]), np.float32)])
            out.append(np.asarray(call(chunk))[:n])
        return np.concatenate(out)

    return f
