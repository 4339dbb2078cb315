"""Classification metrics in plain numpy, shared by the benchmark and the trainer."""

from __future__ import annotations

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    """(n, n) counts, rows true class, columns predicted class."""
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def summary(y_true: np.ndarray, y_pred: np.ndarray, labels: tuple[str, ...] | list[str]) -> dict:
    """Accuracy, macro-F1, per-class recall/precision/F1 and the confusion matrix."""
    n = len(labels)
    cm = confusion(y_true, y_pred, n)
    tp = np.diag(cm).astype(float)
    recall = tp / np.maximum(cm.sum(axis=1), 1)
    precision = tp / np.maximum(cm.sum(axis=0), 1)
    f1 = np.where(recall + precision > 0, 2 * recall * precision / np.maximum(recall + precision, 1e-12), 0.0)
    return {
        "n": int(cm.sum()),
        "accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "macro_f1": float(f1.mean()),
        "recall": {lab: float(r) for lab, r in zip(labels, recall, strict=True)},
        "precision": {lab: float(p) for lab, p in zip(labels, precision, strict=True)},
        "f1": {lab: float(v) for lab, v in zip(labels, f1, strict=True)},
        "confusion": cm.tolist(),
    }
