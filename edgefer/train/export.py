"""Keras -> TFLite export, float32 and full-integer int8.

Both files take (N, 48, 48, 1) faces scaled to [0, 1]; the int8 file carries its own input
quantisation so the runtime can feed it from the same convention.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np


def to_tflite(model, out: str | Path, *, int8: bool = False, calibration: np.ndarray | None = None) -> Path:
    """Write ``model`` as TFLite; ``calibration`` are uint8 48x48 train faces for int8."""
    import tempfile

    import tensorflow as tf

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
