"""What is measured: a model file and how to build it (an edgefer Classifier or a peer), here
or in a memory-probe subprocess, and how a file is named in a shared report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgefer import LABELS
from edgefer import models as shipped
from edgefer.bench.peers.fer import FerPeer, package_version
from edgefer.classifier import Classifier, ModelError, read_labels


def shown_path(path: str | Path) -> str:
    """How a model file is named in a report meant to be shared: relative to the working
    directory when inside it (``edgefer/models/edgefer-int8.tflite``), relative to its
    ``site-packages`` for an installed package's file, else the bare file name, so
    results copied between machines neither leak nor depend on where they were made.
    """
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd().resolve()))
    except ValueError:
        pass
    if "site-packages" in p.parts:
        return str(Path(*p.parts[p.parts.index("site-packages") + 1 :]))
    return p.name


@dataclass(frozen=True)
class ModelSpec:
    """A model to measure and how to build it, here or in a memory-probe subprocess."""

    kind: str  # "edgefer" (a Classifier) or "fer" (the peer)
    path: Path
    labels_path: Path | None = None
    display: str | None = None
    #: mirror the faces whose top-two margin is below this, as the daemon does (None: never)
    flip_margin: float | None = None

    @property
    def name(self) -> str:
        if self.kind == "fer":
            return self.display or f"fer {package_version('fer')} (peer)"
        name = self.display or self.path.stem
        return name if self.flip_margin is None else f"{name} +mirror<{self.flip_margin:g}"

    def build(self, threads: int) -> Any:
        if self.kind == "fer":
            return FerPeer(self.path, threads=threads)
        labels = read_labels(self.labels_path) if self.labels_path and self.labels_path.exists() else LABELS
        if self.flip_margin is None:
            return Classifier(self.path, labels, threads=threads)
        return Classifier(self.path, labels, threads=threads, flip_average=True, flip_margin=self.flip_margin)


def model_specs(paths: Sequence[str] | None, flip_margin: float | None = None) -> list[ModelSpec]:
    """A spec per file; with ``flip_margin``, each file a second time, mirrored as the daemon
    mirrors (a file is then measured both alone, as papers measure, and as it is used)."""
    files = [Path(p) for p in paths] if paths else shipped.shipped_models()
    if not files:
        raise ModelError("no models given and no shipped .tflite found (pass --model)")
    stems = [f.stem for f in files]
    specs = [
        ModelSpec(
            "edgefer", f, f.parent / "labels.txt", None if stems.count(f.stem) == 1 else f"{f.parent.name}/{f.stem}"
        )
        for f in files
    ]
    return specs if flip_margin is None else [*specs, *(replace(s, flip_margin=flip_margin) for s in specs)]


def daemon_specs(paths: Sequence[str] | None, default: str, flip_margin: float | None) -> list[ModelSpec]:
    """The files given, else the daemon's configured model (``default``), each mirrored as
    ``flip_margin`` says: what pipeline mode runs."""
    specs = [ModelSpec("edgefer", Path(p), Path(p).parent / "labels.txt", flip_margin=flip_margin) for p in paths or []]
    if not specs:
        model, labels = shipped.resolve(default)
        specs = [ModelSpec("edgefer", model, labels, flip_margin=flip_margin)]
    return specs


def label_order(model_labels: Sequence[str]) -> np.ndarray:
    """Model output index -> index in :data:`edgefer.LABELS` (a model may order its labels
    differently)."""
    return np.array([LABELS.index(lab) for lab in model_labels])
