"""PNG figures of training: curves and confusion matrices (matplotlib, headless).

The confusion matrix is the benchmark's (:mod:`edgefer.bench.plots`) and the headless pyplot
:mod:`edgefer.figures`'s, so training and ``edgefer-bench`` draw alike from one place.
"""

from __future__ import annotations

from pathlib import Path

from edgefer.bench.plots import confusion_png
from edgefer.figures import pyplot, save

__all__ = ["confusion_png", "curves_png", "pyplot"]


def curves_png(history: dict[str, list[float]], path: str | Path, title: str) -> Path:
    """Loss and accuracy per epoch, train beside validation."""
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=110)
    for key, ax in (("loss", a), ("accuracy", b)):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + key)
            if values:
                ax.plot(range(1, len(values) + 1), values, style, label=(prefix or "train_") + key)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save(fig, path)
