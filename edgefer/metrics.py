"""Classification metrics in plain numpy, shared by the benchmark and the trainer."""

from __future__ import annotations

import math

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


def sign_test_p(k: int, m: int) -> float:
    """Exact two-sided sign test of ``k`` against ``m`` (McNemar's exact test when they count
    the faces only one of two classifiers gets right).

    Two models scored on the same faces differ only where one is right and the other wrong;
    the faces both get right or both get wrong say nothing about which is better. Under "no
    difference" each such face is a fair coin, so a half-point gap on 2,600 faces can be told
    from noise only through these counts, not through the two accuracies.
    """
    if k < 0 or m < 0:
        raise ValueError(f"counts must be >= 0, got {k} and {m}")
    n = k + m
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(k, m) + 1))
    return min(1.0, 2 * tail / 2**n)  # exact integers; the division rounds once


def paired(y_true: np.ndarray, a_pred: np.ndarray, b_pred: np.ndarray) -> dict:
    """How two classifiers' predictions on the same faces differ: the faces only ``a`` gets
    right, only ``b`` gets right, and the sign test's p-value on those two counts."""
    truth, a_pred, b_pred = np.asarray(y_true), np.asarray(a_pred), np.asarray(b_pred)
    if not truth.shape == a_pred.shape == b_pred.shape:
        raise ValueError(f"labels and predictions of different lengths: {len(truth)}, {len(a_pred)}, {len(b_pred)}")
    a, b = a_pred == truth, b_pred == truth
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    return {
        "n": int(a.size),
        "only_a_right": only_a,
        "only_b_right": only_b,
        "both_right": int(np.sum(a & b)),
        "sign_test_p": sign_test_p(only_a, only_b),
        "difference": (only_a - only_b) / max(int(a.size), 1),
        "difference_lower_95": paired_lower_bound(only_a, only_b, int(a.size)),
    }


def paired_lower_bound(only_a: int, only_b: int, n: int, z: float = 1.645) -> float:
    """One-sided lower confidence bound (95 % at the default ``z``) of accuracy(a) - accuracy(b)
    for two classifiers scored on the same ``n`` faces, from the faces only one gets right.

    A keep-or-ship rule that asks a faster candidate to be "not worse by more than d" needs
    this bound rather than the sign test: the sign test can only fail to find a difference,
    which a small validation split always does, while the bound above -d is positive evidence
    that any loss is smaller than d. The variance is the paired (McNemar) one, so the many
    faces both classifiers get right or wrong tighten it instead of being ignored.
    """
    if only_a < 0 or only_b < 0 or only_a + only_b > n:
        raise ValueError(f"need 0 <= counts and their sum <= n, got {only_a}, {only_b} of {n}")
    if n == 0:
        return 0.0
    diff = only_a - only_b
    spread = math.sqrt(max(only_a + only_b - diff * diff / n, 0.0)) / n
    return diff / n - z * spread
