"""Training-time augmentation: the warps FER2013 crops get, and what a camera does to a face.

The daemon classifies crops cut from camera frames by a detector: a face 60-200 px wide,
resampled to 48x48, often soft (focus, motion, a cheap lens), dim or backlit, noisy in low
light, and framed a little differently each time the detector's box jitters. FER2013's crops
are none of these. ``camera_degrade`` applies them to the student's faces after the teachers
have labelled the clean face, so the student learns to give the clean face's answer to the
degraded one instead of learning the degradation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgefer.train.recipe import Recipe


def augmenter(r: Recipe):
    """The geometric warps (and random erasing) of ``r`` as one Keras model."""
    import keras
    from keras import layers

    parts = [layers.RandomFlip("horizontal", seed=r.seed)] if r.flip else []
    if r.rotation_deg:
        parts.append(layers.RandomRotation(r.rotation_deg / 360.0, fill_mode="reflect", seed=r.seed))
    if r.zoom:
        parts.append(layers.RandomZoom(r.zoom, fill_mode="reflect", seed=r.seed))
    if r.shift:
        parts.append(layers.RandomTranslation(r.shift, r.shift, fill_mode="reflect", seed=r.seed))
    if r.erase:
        # A (p, p) factor erases each face with probability p; a bare p would draw the
        # probability itself from [0, p] per face.
        parts.append(
            layers.RandomErasing(factor=(r.erase, r.erase), scale=(0.02, 0.2), value_range=(0.0, 1.0), seed=r.seed)
        )
    return keras.Sequential(parts, name="augment")


def _blur(x, sigma):
    """Gaussian blur of a (N, 48, 48, 1) batch, one sigma (pixels) per face, separable 7-tap."""
    import tensorflow as tf

    taps = tf.range(-3.0, 4.0)
    k = tf.exp(-0.5 * (taps[None, :] / tf.maximum(sigma[:, None], 1e-3)) ** 2)
    k = k / tf.reduce_sum(k, axis=1, keepdims=True)  # (N, 7)
    # Each face has its own kernel: run the batch as channels of one depthwise conv.
    n = tf.shape(x)[0]
    xc = tf.transpose(x, [3, 1, 2, 0])  # (1, 48, 48, N)
    kh = tf.reshape(tf.transpose(k), [7, 1, n, 1])
    kv = tf.reshape(tf.transpose(k), [1, 7, n, 1])
    xc = tf.pad(xc, [[0, 0], [3, 3], [3, 3], [0, 0]], mode="REFLECT")
    xc = tf.nn.depthwise_conv2d(xc, kh, [1, 1, 1, 1], "VALID")
    xc = tf.nn.depthwise_conv2d(xc, kv, [1, 1, 1, 1], "VALID")
    return tf.transpose(xc, [3, 1, 2, 0])


def camera_degrade(x, p: float):
    """Degrade each face of a [0, 1] batch with probability ``p``, as a camera would.

    A degraded face gets, each drawn at random: resolution loss (shrunk to 16-48 px and
    brought back, a small face upscaled), blur (sigma up to 1.2 px), exposure (gain 0.35-1.15
    and gamma 0.7-1.5: dim rooms, backlight, bright windows) and sensor noise that grows as
    the light falls. The others pass unchanged.
    """
    import tensorflow as tf

    n = tf.shape(x)[0]
    size = tf.shape(x)[1]
    u = lambda lo, hi: tf.random.uniform([n], lo, hi)  # noqa: E731
    y = x
    # Resolution: one random size per batch keeps the graph static; faces keep theirs or take it.
    side = tf.random.uniform([], 16, 49, dtype=tf.int32)
    small = tf.image.resize(tf.image.resize(y, [side, side], antialias=True), [size, size], method="bilinear")
    take = tf.reshape(tf.cast(u(0, 1) < 0.5, y.dtype), [-1, 1, 1, 1])
    y = take * small + (1 - take) * y
    y = _blur(y, u(0.0, 1.2))
    gain = u(0.35, 1.15)
    gamma = u(0.7, 1.5)
    y = tf.clip_by_value(gain[:, None, None, None] * tf.pow(tf.maximum(y, 1e-4), gamma[:, None, None, None]), 0, 1)
    noise = tf.random.normal(tf.shape(y)) * tf.reshape(u(0.0, 0.04) / tf.sqrt(gain), [-1, 1, 1, 1])
    y = tf.clip_by_value(y + noise, 0.0, 1.0)
    hit = tf.reshape(tf.cast(u(0, 1) < p, x.dtype), [-1, 1, 1, 1])
    return hit * y + (1 - hit) * x
