"""Model weights and batch-norm statistics as Flower records, and how client statistics pool.

Weights travel keyed by Keras variable path, so a reordered or foreign record fails loudly
instead of loading into the wrong layer.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord

MEAN, VARIANCE = "moving_mean", "moving_variance"


def model_arrays(model) -> ArrayRecord:
    """The model's weights (trainable and batch-norm statistics) keyed by variable path."""
    return ArrayRecord({w.path: Array(np.asarray(v)) for w, v in zip(model.weights, model.get_weights(), strict=True)})


def set_arrays(model, arrays: ArrayRecord | dict[str, np.ndarray]) -> None:
    """Load weights by variable path; a record may hold only some of them (e.g. the
    batch-norm statistics), the others keep their values.

    Batch-norm variances are floored at zero: differential-privacy noise added to an
    average can push a small variance negative, which would turn every output into NaN.
    """
    values = []
    for w, current in zip(model.weights, model.get_weights(), strict=True):
        if w.path not in arrays:
            values.append(current)
            continue
        a = arrays[w.path]
        a = a.numpy() if isinstance(a, Array) else np.asarray(a)
        if a.shape != tuple(w.shape):
            raise ValueError(f"{w.path}: shape {a.shape} does not fit the model's {tuple(w.shape)}")
        values.append(np.maximum(a, 0) if w.path.endswith(VARIANCE) else a)
    model.set_weights(values)


def require_all(model, arrays: ArrayRecord) -> None:
    """Refuse a weight record that misses any of the model's variables (a foreign model)."""
    missing = [w.path for w in model.weights if w.path not in arrays]
    if missing:
        raise ValueError(f"the received weights lack {len(missing)} of the model's variables, e.g. {missing[0]}")


def to_numpy(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in arrays.items()}


def bn_statistics(model) -> dict[str, np.ndarray]:
    """The model's batch-norm moving means and variances, keyed by variable path."""
    return {
        w.path: np.asarray(v)
        for w, v in zip(model.weights, model.get_weights(), strict=True)
        if w.path.endswith((MEAN, VARIANCE))
    }


def pool_bn_statistics(parts: list[tuple[int, dict[str, np.ndarray]]]) -> dict[str, np.ndarray]:
    """Per-channel statistics of all clients' faces together, from each client's own.

    ``parts`` holds, per client, its number of faces n_k and its per-layer means m_k and
    variances v_k. The pooled mean is sum(n_k m_k) / N and the pooled variance
    sum(n_k (v_k + (m_k - m)^2)) / N: the within-client variances plus the spread of the
    client means, so label-skewed clients whose means differ do not make the pooled
    variance too small (a plain average of variances would).
    """
    if not parts:
        raise ValueError("no client statistics to pool")
    total = float(sum(n for n, _ in parts))
    if total <= 0 or any(n < 0 for n, _ in parts):
        raise ValueError(f"client face counts must be non-negative with a positive sum, got {[n for n, _ in parts]}")
    keys = set(parts[0][1])
    for _, stats in parts[1:]:
        if set(stats) != keys:
            raise ValueError(f"clients returned different statistics: {sorted(keys ^ set(stats))[:3]}")
    pooled: dict[str, np.ndarray] = {}
    for key in sorted(k for k in keys if k.endswith(MEAN)):
        var_key = key[: -len(MEAN)] + VARIANCE
        if var_key not in keys:
            raise ValueError(f"{key} comes without its {VARIANCE}")
        means = [(n, stats[key].astype(np.float64)) for n, stats in parts]
        mean = sum(n * m for n, m in means) / total
        var = sum(n * (stats[var_key].astype(np.float64) + (stats[key] - mean) ** 2) for n, stats in parts) / total
        pooled[key], pooled[var_key] = mean.astype(np.float32), var.astype(np.float32)
    return pooled
