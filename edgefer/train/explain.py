"""Grad-CAM++ explanations of edgefer's models, judged with the source paper's perturbation metrics.

Two layers live here. The metric functions are plain numpy and take the model as a callable
``f(images) -> probs`` (images ``(N, H, W)`` in [0, 1]), so each one can be checked by hand on
a 2x2 "image". Grad-CAM++ and the ``edgefer-explain`` command need TensorFlow (the ``train``
extra) and are imported lazily.

Definitions follow Appendix A of the source paper (Sensors 2025, 25(23), 7320), which cites
RISE (Petsiuk et al., 2018) for insertion / deletion, and Grad-CAM++ (Chattopadhay et al., 2018)
and Mitra et al. (2024) for Average Drop and Increase in Confidence. docs/explainability.md
states every choice the paper leaves open (threshold of the important region, fill values,
step size, target class) and why the baseline maps are area-matched.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgefer import LABELS
from edgefer.train.plots import pyplot

#: ``f(images (N, H, W) float in [0, 1]) -> probabilities (N, classes)``.
ProbFn = Callable[[np.ndarray], np.ndarray]

BLOCKS: tuple[str, ...] = ("fb1", "fb2", "fb3")
DEFAULT_STEPS = 16
DEFAULT_THRESHOLD = 0.5
#: What "removed" / "not yet revealed" pixels become: black, as in the paper's Appendix A.1.
DEFAULT_BASELINE = 0.0
#: Ranges the paper quotes from the literature (AD, IC from Grad-CAM++; IAUC, DAUC from Gomez et al. 2022).
LITERATURE: dict[str, tuple[float, float]] = {
    "AD": (0.195, 0.598),
    "IC": (0.067, 0.191),
    "IAUC": (0.16, 0.49),
    "DAUC": (0.016, 0.296),
}
#: Table columns: key, heading, True if higher is better.
COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("IAUC", "IAUC", True),
    ("DAUC", "DAUC", False),
    ("AD", "AD", True),
    ("IC", "IC", True),
    ("ADA", "ADA", True),
    ("active_pixels", "Active pixels", False),
    ("masked_accuracy", "Acc. after masking", False),
)
CENTRE_SIGMA = 10.0


# --------------------------------------------------------------------------------------------
# Perturbation metrics (numpy only)
# --------------------------------------------------------------------------------------------


def step_counts(n_pixels: int, steps: int) -> np.ndarray:
    """Pixels revealed (insertion) or removed (deletion) at each of ``steps + 1`` curve points.

    Evaluating every pixel (2,304 forward passes per curve) is what the paper's formula
    describes; equal steps keep the same curve shape at a fraction of the cost.
    """
    if steps < 1:
        raise ValueError("steps must be >= 1")
    return np.round(np.linspace(0, n_pixels, steps + 1)).astype(np.int64)


def saliency_ranks(saliencies: np.ndarray) -> np.ndarray:
    """(N, H*W) position of each pixel in descending saliency order, 0 = most salient.

    A stable sort makes ties (flat maps, the shared centre blob) break by raster order, so
    every run perturbs the same pixels.
    """
    s = np.asarray(saliencies, dtype=np.float64)
    flat = s.reshape(s.shape[0], -1)
    order = np.argsort(-flat, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None, :].repeat(flat.shape[0], 0), axis=1)
    return ranks


def _perturb(
    images: np.ndarray, saliencies: np.ndarray, counts: np.ndarray, baseline: float, insert: bool
) -> np.ndarray:
    imgs = np.asarray(images, dtype=np.float32)
    n, h, w = imgs.shape
    ranks = saliency_ranks(saliencies)
    top = ranks[:, None, :] < np.asarray(counts)[None, :, None]  # (N, K, HW): among the first k
    keep_original = top if insert else ~top
    flat = imgs.reshape(n, 1, h * w)
    out = np.where(keep_original, flat, np.float32(baseline))
    return out.reshape(n, len(counts), h, w)


def insertion_images(
    images: np.ndarray, saliencies: np.ndarray, counts: Sequence[int], baseline: float = 0.0
) -> np.ndarray:
    """(N, K, H, W): the ``counts[k]`` most salient pixels of each image shown, the rest at baseline."""
    return _perturb(images, saliencies, np.asarray(counts), baseline, insert=True)


def deletion_images(
    images: np.ndarray, saliencies: np.ndarray, counts: Sequence[int], baseline: float = 0.0
) -> np.ndarray:
    """(N, K, H, W): the ``counts[k]`` most salient pixels of each image set to baseline."""
    return _perturb(images, saliencies, np.asarray(counts), baseline, insert=False)


def _target_conf(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    probs = np.asarray(probs)
    return probs[np.arange(len(targets)), np.asarray(targets)]


def _curves(
    f: ProbFn,
    images: np.ndarray,
    saliencies: np.ndarray,
    targets: np.ndarray,
    steps: int,
    baseline: float,
    insert: bool,
) -> np.ndarray:
    images = np.asarray(images, dtype=np.float32)
    counts = step_counts(images.shape[1] * images.shape[2], steps)
    stack = _perturb(images, saliencies, counts, baseline, insert)
    n, k = stack.shape[:2]
    probs = np.asarray(f(stack.reshape(n * k, *images.shape[1:]))).reshape(n, k, -1)
    return probs[np.arange(n), :, np.asarray(targets)]


def insertion_curves(
    f: ProbFn,
    images: np.ndarray,
    saliencies: np.ndarray,
    targets: np.ndarray,
    steps: int = DEFAULT_STEPS,
    baseline: float = DEFAULT_BASELINE,
) -> np.ndarray:
    """(N, steps + 1) target-class confidence as pixels are revealed, most salient first."""
    return _curves(f, images, saliencies, targets, steps, baseline, insert=True)


def deletion_curves(
    f: ProbFn,
    images: np.ndarray,
    saliencies: np.ndarray,
    targets: np.ndarray,
    steps: int = DEFAULT_STEPS,
    baseline: float = DEFAULT_BASELINE,
) -> np.ndarray:
    """(N, steps + 1) target-class confidence as pixels are removed, most salient first."""
    return _curves(f, images, saliencies, targets, steps, baseline, insert=False)


def curve_auc(curves: np.ndarray, fractions: np.ndarray | None = None) -> np.ndarray:
    """Trapezoidal area under each curve over the fraction of pixels (0..1).

    Equally spaced fractions unless given; the area then lies in [0, 1] like a probability.
    """
    c = np.atleast_2d(np.asarray(curves, dtype=np.float64))
    x = np.linspace(0.0, 1.0, c.shape[1]) if fractions is None else np.asarray(fractions, dtype=np.float64)
    return ((c[:, 1:] + c[:, :-1]) * np.diff(x)[None, :] / 2.0).sum(axis=1)


def salient_mask(saliencies: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Boolean map of the "important region": saliency at or above ``threshold``."""
    return np.asarray(saliencies) >= threshold


def active_pixel_ratio(saliencies: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """(N,) share of each map's pixels in its important region; smaller means a more compact map."""
    m = salient_mask(saliencies, threshold)
    return m.reshape(m.shape[0], -1).mean(axis=1)


def remove_salient(
    images: np.ndarray, saliencies: np.ndarray, threshold: float = DEFAULT_THRESHOLD, fill: float = DEFAULT_BASELINE
) -> np.ndarray:
    """Images with the important region set to ``fill`` (the input of AD and ADA)."""
    imgs = np.asarray(images, dtype=np.float32)
    return np.where(salient_mask(saliencies, threshold), np.float32(fill), imgs)


def keep_salient(images: np.ndarray, saliencies: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Images with only the important region kept and the rest set to the image's own mean (IC)."""
    imgs = np.asarray(images, dtype=np.float32)
    means = imgs.reshape(imgs.shape[0], -1).mean(axis=1)[:, None, None]
    return np.where(salient_mask(saliencies, threshold), imgs, means).astype(np.float32)


def confidence_drops(full_conf: np.ndarray, removed_conf: np.ndarray, clip: bool = True) -> np.ndarray:
    """(N,) relative drop (y - r) / y of the target confidence.

    ``clip`` applies Grad-CAM++'s max(0, .): the paper's Appendix formula omits it, but
    without it one image whose confidence was near zero and rises after masking outweighs
    thousands of others.
    """
    y = np.asarray(full_conf, dtype=np.float64)
    r = np.asarray(removed_conf, dtype=np.float64)
    d = y - r
    if clip:
        d = np.maximum(d, 0.0)
    return d / np.maximum(y, 1e-12)


def average_drop(full_conf: np.ndarray, removed_conf: np.ndarray, clip: bool = True) -> float:
    """AD: mean relative confidence drop when the important region is removed (higher is better)."""
    return float(confidence_drops(full_conf, removed_conf, clip).mean())


def average_drop_in_accuracy(labels: np.ndarray, pred_full: np.ndarray, pred_removed: np.ndarray) -> float:
    """ADA: mean of 1(correct on the full image) - 1(correct with the important region removed)."""
    t = np.asarray(labels)
    return float(((np.asarray(pred_full) == t).astype(float) - (np.asarray(pred_removed) == t)).mean())


def increase_in_confidence(full_conf: np.ndarray, kept_conf: np.ndarray) -> float:
    """IC: share of images whose confidence rises when only the important region is shown."""
    return float((np.asarray(full_conf) < np.asarray(kept_conf)).mean())


def evaluate_maps(
    f: ProbFn,
    images: np.ndarray,
    saliencies: np.ndarray,
    targets: np.ndarray,
    *,
    steps: int = DEFAULT_STEPS,
    threshold: float = DEFAULT_THRESHOLD,
    baseline: float = DEFAULT_BASELINE,
    full_probs: np.ndarray | None = None,
    chunk: int = 64,
    progress: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Per-image raw quantities behind every metric, in as few forward passes as possible.

    The curves' end points are the full image and the all-baseline image, shared by
    insertion and deletion, so only the interior steps and the two masked images are
    evaluated per map; they go through the model together in large batches.
    """
    images = np.asarray(images, dtype=np.float32)
    targets = np.asarray(targets)
    n, h, w = images.shape
    counts = step_counts(h * w, steps)
    inner = counts[1:-1]
    if full_probs is None:
        full_probs = np.asarray(f(images))
    base_probs = np.asarray(f(np.full((1, h, w), baseline, np.float32)))[0]
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("ins", "del", "removed", "kept")}
    for s in range(0, n, chunk):
        img, sal, tgt = images[s : s + chunk], saliencies[s : s + chunk], targets[s : s + chunk]
        b, m = len(img), len(inner)
        parts = [
            insertion_images(img, sal, inner, baseline).reshape(b * m, h, w),
            deletion_images(img, sal, inner, baseline).reshape(b * m, h, w),
            remove_salient(img, sal, threshold, baseline),
            keep_salient(img, sal, threshold),
        ]
        probs = np.asarray(f(np.concatenate(parts)))
        ins, dele = probs[: b * m].reshape(b, m, -1), probs[b * m : 2 * b * m].reshape(b, m, -1)
        out["ins"].append(ins[np.arange(b), :, tgt])
        out["del"].append(dele[np.arange(b), :, tgt])
        out["removed"].append(probs[2 * b * m : 2 * b * m + b])
        out["kept"].append(probs[2 * b * m + b :])
        if progress:
            progress(b)
    full_conf = _target_conf(full_probs, targets)
    base_conf = base_probs[targets]
    ins_curves = np.concatenate([base_conf[:, None], np.concatenate(out["ins"]), full_conf[:, None]], axis=1)
    del_curves = np.concatenate([full_conf[:, None], np.concatenate(out["del"]), base_conf[:, None]], axis=1)
    removed, kept = np.concatenate(out["removed"]), np.concatenate(out["kept"])
    fractions = counts / (h * w)
    return {
        "ins_curve": ins_curves,
        "del_curve": del_curves,
        "iauc": curve_auc(ins_curves, fractions),
        "dauc": curve_auc(del_curves, fractions),
        "conf_full": full_conf,
        "conf_removed": _target_conf(removed, targets),
        "conf_kept": _target_conf(kept, targets),
        "pred_full": np.argmax(full_probs, axis=1),
        "pred_removed": np.argmax(removed, axis=1),
        "active": active_pixel_ratio(saliencies, threshold),
    }


def summarise(raw: dict[str, np.ndarray], labels: np.ndarray, idx: np.ndarray | None = None) -> dict[str, float]:
    """The paper's metrics over the images ``idx`` (all if None) from :func:`evaluate_maps` output."""
    sel = np.arange(len(labels)) if idx is None else np.asarray(idx)
    if len(sel) == 0:
        return {"n": 0}
    t = np.asarray(labels)[sel]
    r = {k: v[sel] for k, v in raw.items()}
    return {
        "n": len(sel),
        "IAUC": float(r["iauc"].mean()),
        "DAUC": float(r["dauc"].mean()),
        "AD": average_drop(r["conf_full"], r["conf_removed"]),
        "AD_unclipped": average_drop(r["conf_full"], r["conf_removed"], clip=False),
        "IC": increase_in_confidence(r["conf_full"], r["conf_kept"]),
        "ADA": average_drop_in_accuracy(t, r["pred_full"], r["pred_removed"]),
        "active_pixels": float(r["active"].mean()),
        "accuracy": float((r["pred_full"] == t).mean()),
        "masked_accuracy": float((r["pred_removed"] == t).mean()),
    }


# --------------------------------------------------------------------------------------------
# Saliency maps
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Report: table, JSON, figures
# --------------------------------------------------------------------------------------------


class Progress:
    """Count-down lines on stderr at most every few seconds: the evaluation takes minutes."""

    def __init__(self, label: str, total: int, every: float = 5.0) -> None:
        self.label, self.total, self.every = label, total, every
        self.done = 0
        self.start = self.last = time.monotonic()

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every or self.done >= self.total:
            self.last = now
            elapsed = now - self.start
            eta = elapsed / max(self.done, 1) * (self.total - self.done)
            pct = 100.0 * self.done / max(self.total, 1)
            print(
                f"  {self.label}: {self.done}/{self.total} ({pct:.0f} %), {elapsed:.0f} s, ~{eta:.0f} s left",
                file=sys.stderr,
                flush=True,
            )


def _probs(p: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in sorted(p.items(), key=lambda kv: -kv[1]))


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def markdown_report(report: dict[str, Any]) -> str:
    """Per-emotion tables shaped like the paper's Table 10, then the baseline comparison."""
    heads = " | ".join(f"{h} {'↑' if up else '↓'}" for _, h, up in COLUMNS)
    sep = "|".join(["---"] * (len(COLUMNS) + 2))
    lit = " | ".join(
        f"{LITERATURE[k][0]:.3f}–{LITERATURE[k][1]:.3f}" if k in LITERATURE else "—" for k, _, _ in COLUMNS
    )
    s = report["settings"]
    lines = [
        f"# Grad-CAM++ explainability: {report['model']['name']} on {report['dataset']['name']}",
        "",
        f"{report['dataset']['n']} images ({', '.join(f'{k} {v}' for k, v in report['dataset']['counts'].items())}); "
        f"model accuracy on them {report['dataset']['accuracy']:.3f}. Target class: {s['target']} label. "
        f"Curves: {s['steps']} steps of 1/{s['steps']} of the pixels, removed pixels = {s['baseline']:g}; "
        f"important region: normalised saliency >= {s['threshold']:g} (removed for AD/ADA, kept on the "
        f"image mean for IC). The all-black image, where insertion starts and deletion ends, is "
        f"classified {_probs(s['baseline_image_probs'])}. ↑ / ↓: higher / lower is better.",
        "",
    ]
    for method, res in report["results"].items():
        if not method.startswith("gradcam++"):
            continue
        block = method.split("/", 1)[1]
        lines += [
            f"## Grad-CAM++ at {block.upper()} (layer `{report['layers'][block]}`)",
            "",
            f"| Emotion | {heads} | n |",
            f"|{sep}|",
        ]
        for name in (*LABELS, "all"):
            row = res[name]
            vals = " | ".join(_fmt(row.get(k)) for k, _, _ in COLUMNS)
            label = "**All**" if name == "all" else name.capitalize()
            lines.append(f"| {label} | {vals} | {row['n']} |")
        lines += [f"| Literature range | {lit} | |", ""]
    comp = report["comparison"]
    if any(not m.startswith("gradcam++") for m in comp["results"]):
        counts = ", ".join(f"{k} {v}" for k, v in comp["counts"].items())
        lines += [
            f"## Against baseline saliency maps ({comp['n']} images: {counts})",
            "",
            f"Random noise on a {'x'.join(map(str, s['random_grid']))} grid (upsampled) and a centre blob, "
            f"each re-valued per image so that its important region has "
            f"the area of Grad-CAM++ {s['baselines_area_matched_to'].upper()}'s for that face (same pixel "
            f"order, so the same curves); all rows on the same images.",
            "",
            f"| Map | {heads} |",
            f"|{'|'.join(['---'] * (len(COLUMNS) + 1))}|",
        ]
        for method, res in comp["results"].items():
            row = res["all"]
            title = f"Grad-CAM++ {method.split('/', 1)[1].upper()}" if method.startswith("gradcam++") else method
            lines.append(f"| {title} | {' | '.join(_fmt(row.get(k)) for k, _, _ in COLUMNS)} |")
        lines += [f"| Literature range | {lit} |", ""]
    lines += [
        "AD uses Grad-CAM++'s max(0, ·) per image; the unclipped mean of the paper's Appendix "
        "formula is in the JSON as `AD_unclipped`.",
        "",
    ]
    return "\n".join(lines)


def overlay_png(
    faces: np.ndarray, maps: np.ndarray, titles: Sequence[str], path: str | Path, suptitle: str, cols: int = 4
) -> Path:
    """A grid of faces with their heat maps laid over them."""
    plt = pyplot()
    n = len(faces)
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.7, rows * 1.9 + 0.3), dpi=110, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(faces[i], cmap="gray", vmin=0, vmax=255)
            ax.imshow(maps[i], cmap="jet", alpha=0.45, vmin=0, vmax=1)
            ax.set_title(titles[i], fontsize=7)
    fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def curves_png(curves: dict[str, dict[str, list[float]]], path: str | Path, title: str) -> Path:
    """Mean insertion and deletion curves of every map, side by side."""
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=110)
    for method, c in curves.items():
        for key, ax in (("insertion", a), ("deletion", b)):
            y = np.asarray(c[key])
            ax.plot(np.linspace(0, 1, len(y)), y, label=method)
    for key, ax in (("insertion", a), ("deletion", b)):
        ax.set_xlabel(f"fraction of pixels {'revealed' if key == 'insertion' else 'removed'}")
        ax.set_ylabel("target-class confidence")
        ax.set_title(key, fontsize=9)
        ax.grid(alpha=0.3)
    a.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def _pick_overlay(labels, preds, cls: int, k: int, rng: np.random.Generator) -> np.ndarray:
    # Correctly classified faces first, as the paper shows them; others only to fill the grid.
    idx = np.flatnonzero(labels == cls)
    right = rng.permutation(idx[preds[idx] == cls])
    wrong = rng.permutation(idx[preds[idx] != cls])
    return np.concatenate([right, wrong])[:k].astype(np.int64)


def method_results(raw: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, Any]:
    """Metrics per emotion, over all images and as the mean over emotions, plus mean curves."""
    res: dict[str, Any] = {name: summarise(raw, labels, np.flatnonzero(labels == i)) for i, name in enumerate(LABELS)}
    res["all"] = summarise(raw, labels)
    present = [c for c in LABELS if res[c]["n"]]
    res["macro"] = {k: float(np.mean([res[c][k] for c in present])) for k in res["all"] if k != "n"}
    res["macro"]["n"] = res["all"]["n"]
    groups = {name: labels == i for i, name in enumerate(LABELS)} | {"all": np.ones(len(labels), bool)}
    res["curves"] = {
        name: {
            "insertion": raw["ins_curve"][sel].mean(axis=0).tolist(),
            "deletion": raw["del_curve"][sel].mean(axis=0).tolist(),
        }
        for name, sel in groups.items()
        if sel.any()
    }
    return res


def _counts(labels: np.ndarray) -> dict[str, int]:
    return {name: int((labels == i).sum()) for i, name in enumerate(LABELS)}


def stratified_sample(labels: np.ndarray, per_class: int | None, seed: int) -> np.ndarray:
    """Sorted indices of up to ``per_class`` random images of each class (all if None)."""
    if per_class is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(keep))


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edgefer-explain",
        description="Grad-CAM++ maps of a trained model per conv block and the source paper's perturbation "
        "metrics (IAUC, DAUC, AD, IC, ADA, active pixels) on FER2013 PublicTest, beside random and "
        "centre-blob baselines.",
    )
    p.add_argument("--model", required=True, help="trained Keras model (.keras)")
    p.add_argument("--data-dir", help="folder holding test/<class>/*.jpg, or fer2013.csv")
    p.add_argument("--out", default="explain", help="output folder (default: %(default)s)")
    p.add_argument("--limit-per-class", type=int, help="random images per emotion, for a quick run (default: all)")
    p.add_argument(
        "--blocks",
        help="conv blocks to explain, comma-separated (default: fb1,fb2,fb3 where the model has them, as paper and "
        "edgefer do, else the last ReLU at each of its three deepest resolutions: s2b,s3c,s4b for edgefer-dense)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling, random maps and overlay choice")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="points per curve (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="saliency of the important region")
    p.add_argument("--target", choices=("true", "predicted"), default="true", help="class explained and scored")
    p.add_argument("--overlays", type=int, default=8, help="faces per overlay grid (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    p.add_argument(
        "--baseline-limit-per-class",
        type=int,
        default=100,
        help="images per emotion for the random and centre-blob maps (0: all; default: %(default)s)",
    )
    p.add_argument("--no-baselines", action="store_true", help="skip the random and centre-blob maps")
    return p


def _err(msg: str) -> None:
    print(f"edgefer-explain: {msg}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Explain a model on FER2013 PublicTest; write table.md, metrics.json and PNGs into ``--out``."""
    args = parser().parse_args(argv)
    blocks = None if args.blocks is None else [b.strip() for b in args.blocks.split(",") if b.strip()]
    if blocks == []:
        _err("--blocks names no block")
        return 2
    if args.steps < 2 or not 0.0 < args.threshold <= 1.0:
        _err("--steps must be >= 2 and --threshold in (0, 1]")
        return 2
    if args.limit_per_class is not None and args.limit_per_class < 1:
        _err("--limit-per-class must be >= 1")
        return 2
    if args.baseline_limit_per_class < 0:
        _err("--baseline-limit-per-class must be >= 0")
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        from edgefer.train.models import load  # Keras, which the train extra brings
    except ImportError:
        _err("needs the train extra: pip install 'edgefer[train]'")
        return 2
    from edgefer.datasets import DatasetError, load_fer2013

    model_path = Path(args.model)
    if not model_path.is_file():
        _err(f"{model_path}: no such model file")
        return 2
    try:
        model = load(model_path)
    except Exception as exc:  # Keras raises many types for a bad archive
        _err(f"{model_path}: cannot load model ({exc})")
        return 2
    mirrored, model = model, one_view(model)
    if model is not mirrored:
        print(f"{mirrored.name}: mirrored network; explaining its trunk on the face as given", file=sys.stderr)
    try:
        blocks = blocks or default_blocks(model)
        layers = {b: resolve_layer(model, b) for b in blocks}
    except ValueError as exc:
        _err(str(exc))
        return 2
    n_out = int(model.outputs[0].shape[-1])
    if n_out != len(LABELS):
        _err(f"{model_path}: model has {n_out} outputs, expected {len(LABELS)} ({', '.join(LABELS)})")
        return 2
    try:
        data = load_fer2013(args.data_dir, "test")
    except DatasetError as exc:
        _err(str(exc))
        return 2

    t0 = time.monotonic()
    data = data.subset(stratified_sample(data.labels, args.limit_per_class, args.seed))
    labels = data.labels
    x = data.images.astype(np.float32) / 255.0
    n, size = len(x), x.shape[1:3]
    print(f"{model.name}: {n} FER2013 PublicTest images {data.class_counts()}, blocks {layers}", file=sys.stderr)
    f = keras_prob_fn(model, args.batch_size)
    full_probs = f(x)
    preds = full_probs.argmax(axis=1)
    targets = labels if args.target == "true" else preds
    acc = float((preds == labels).mean())
    black = f(np.full((1, *x.shape[1:]), DEFAULT_BASELINE, np.float32))[0]
    print(f"  accuracy on these images: {acc:.3f}", file=sys.stderr)

    cam = GradCamPlusPlus(model, list(layers.values()))
    grad_maps = cam(x, targets, progress=Progress("Grad-CAM++ " + "+".join(blocks), n))
    maps = {f"gradcam++/{b}": grad_maps[layers[b]] for b in blocks}
    per_image = 2 * (args.steps - 1) + 2
    base_idx = stratified_sample(labels, args.baseline_limit_per_class or None, args.seed + 1)
    nb = 0 if args.no_baselines else len(base_idx)
    print(
        f"  perturbation metrics: {per_image} forward passes per image and map, "
        f"{len(blocks)} x {n} Grad-CAM++ maps + 2 x {nb} baseline maps",
        file=sys.stderr,
    )

    def run(sal: np.ndarray, idx: np.ndarray, method: str) -> dict[str, np.ndarray]:
        return evaluate_maps(
            f,
            x[idx],
            sal,
            targets[idx],
            steps=args.steps,
            threshold=args.threshold,
            full_probs=full_probs[idx],
            progress=Progress(method, len(idx)),
        )

    all_idx = np.arange(n)
    raws: dict[str, tuple[dict[str, np.ndarray], np.ndarray]] = {}
    for b in blocks:
        raws[f"gradcam++/{b}"] = (run(maps[f"gradcam++/{b}"], all_idx, f"gradcam++/{b}"), all_idx)
    if not args.no_baselines:
        area = active_pixel_ratio(maps[f"gradcam++/{blocks[-1]}"][base_idx], args.threshold)
        grid = tuple(int(d) for d in model.get_layer(layers[blocks[-1]]).output.shape[1:3])
        for name, sal in (
            ("random", random_maps(len(base_idx), size, args.seed, grid)),
            ("centre", centre_maps(len(base_idx), size)),
        ):
            raws[name] = (run(match_active_ratio(sal, area, args.threshold), base_idx, name), base_idx)

    results = {m: method_results(raw, labels[idx]) for m, (raw, idx) in raws.items()}
    # Baselines and Grad-CAM++ side by side on the same images, so the averages compare.
    pos = np.searchsorted(all_idx, base_idx)
    comparison = {
        m: method_results({k: v[pos] for k, v in raw.items()} if len(idx) == n else raw, labels[base_idx])
        for m, (raw, idx) in raws.items()
    }
    for m, res in results.items():
        a = res["all"]
        print(
            f"  {m}: IAUC {a['IAUC']:.3f} DAUC {a['DAUC']:.3f} AD {a['AD']:.3f} IC {a['IC']:.3f} "
            f"ADA {a['ADA']:.3f} active {a['active_pixels']:.3f} ({a['n']} images)",
            file=sys.stderr,
        )

    out = Path(args.out)
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    pngs: list[str] = []
    for i, name in enumerate(LABELS):
        pick = _pick_overlay(labels, preds, i, args.overlays, rng)
        if len(pick) == 0:
            continue
        titles = [f"{LABELS[preds[j]]} {full_probs[j, i]:.2f}" for j in pick]
        for b in blocks:
            path = out / "overlays" / f"{b}_{name}.png"
            overlay_png(
                data.images[pick],
                maps[f"gradcam++/{b}"][pick],
                titles,
                path,
                f"Grad-CAM++ {b.upper()} ({layers[b]}), true {name}; title: predicted, p({name})",
            )
            pngs.append(str(path.relative_to(out)))
    curves = {m: res["curves"]["all"] for m, res in comparison.items()}
    curves_png(curves, out / "curves.png", f"{model.name}: mean insertion / deletion curves, {len(base_idx)} images")
    pngs.append("curves.png")

    report: dict[str, Any] = {
        "model": {"name": mirrored.name, "file": model_path.name, "params": int(mirrored.count_params())},
        "explained": "the trunk, one of the two views it averages" if model is not mirrored else "the network",
        "dataset": {"name": "FER2013 PublicTest", "n": n, "counts": _counts(labels), "accuracy": acc},
        "settings": {
            "steps": args.steps,
            "threshold": args.threshold,
            "baseline": DEFAULT_BASELINE,
            "kept_fill": "image mean",
            "target": args.target,
            "seed": args.seed,
            "limit_per_class": args.limit_per_class,
            "baseline_limit_per_class": args.baseline_limit_per_class or None,
            "centre_sigma_px": CENTRE_SIGMA,
            "ad_clipped": True,
            "baselines_area_matched_to": None if args.no_baselines else blocks[-1],
            "random_grid": None if args.no_baselines else list(grid),
            "baseline_image_probs": dict(zip(LABELS, map(float, black), strict=True)),
        },
        "layers": layers,
        "literature": {k: list(v) for k, v in LITERATURE.items()},
        "results": results,
        "comparison": {"n": len(base_idx), "counts": _counts(labels[base_idx]), "results": comparison},
        "figures": pngs,
        "elapsed_s": round(time.monotonic() - t0, 1),
    }
    table = markdown_report(report)
    (out / "table.md").write_text(table)
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    print(table)
    print(
        f"wrote {out / 'table.md'}, {out / 'metrics.json'} and {len(pngs)} PNGs in {report['elapsed_s']} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
