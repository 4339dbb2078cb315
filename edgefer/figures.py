"""Headless matplotlib, set up once for every PNG edgefer draws.

The daemon's ``edgefer report``, the benchmark and training all draw figures on machines with no
display (a Pi, a CI runner, a training box over SSH), so pyplot must use the Agg backend before
it is first imported; and every figure is finished the same way. matplotlib is imported only
when a figure is drawn: it is the ``report`` extra, not a dependency of the daemon.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """matplotlib's pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: str | Path, **savefig: Any) -> Path:
    """Lay the figure out, write it to ``path`` and free it (pyplot keeps every open figure)."""
    fig.tight_layout()
    fig.savefig(path, **savefig)
    pyplot().close(fig)
    return Path(path)
