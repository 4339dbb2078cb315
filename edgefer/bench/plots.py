"""PNG figures of results (matplotlib, headless through :mod:`edgefer.figures`): the confusion matrix
and clip mode's shares against the truth."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgefer import LABELS
from edgefer.figures import pyplot, save


def confusion_png(cm: np.ndarray, labels: Sequence[str], path: str | Path, title: str) -> Path:
    """Row-normalised confusion matrix with raw counts in each cell."""
    plt = pyplot()
    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.6, 4.2), dpi=110)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=30)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            colour = "white" if norm[i, j] > 0.5 else "black"
            ax.text(j, i, f"{norm[i, j]:.2f}\n({cm[i, j]})", ha="center", va="center", fontsize=7, color=colour)
    ax.set_title(title, fontsize=9)
    return save(fig, path)


def clip_shares_png(result: dict[str, Any], path: str | Path) -> Path:
    """Clip mode's whole-clip shares, one panel per seed: the true mix of the faces shown, each
    pipeline's shares (edgefer's with its 95 % interval) and, in the legend, each one's L1."""
    plt = pyplot()
    seeds = result["seeds"]
    fig, axes = plt.subplots(1, len(seeds), figsize=(3.6 * len(seeds), 3.4), dpi=110, sharey=True, squeeze=False)
    x = np.arange(len(LABELS))
    for ax, s in zip(axes[0], seeds, strict=True):
        lanes = s["lanes"]
        truth = next(iter(lanes.values()))["clip"]["truth_mix"]
        bars = [("truth", [truth[lab] for lab in LABELS], None)]
        for name, r in lanes.items():
            c = r["clip"]
            err = None
            if "ci95" in c:
                lo = [c["shares"][lab] - c["ci95"][lab][0] for lab in LABELS]
                hi = [c["ci95"][lab][1] - c["shares"][lab] for lab in LABELS]
                err = np.array([lo, hi])
            bars.append((f"{name} (L1 {c['l1']:.3f})", [c["shares"][lab] for lab in LABELS], err))
        width = 0.8 / len(bars)
        for k, (label, values, err) in enumerate(bars):
            ax.bar(x + (k - (len(bars) - 1) / 2) * width, values, width, yerr=err, capsize=2, label=label)
        ax.set_xticks(x, LABELS, rotation=30)
        ax.set_title(f"seed {s['seed']}: {s['shots']} shots", fontsize=9)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("share of face-frames")
    fig.suptitle(f"Whole-clip shares against the truth, FER2013 {result['data']['split']}", fontsize=10)
    return save(fig, path)
