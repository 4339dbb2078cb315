"""The model files edgefer ships, as package data: the daemon's default, the previous default
and the paper's network, each as int8 and float32 ``.tflite``, and ``labels.txt``.

They live inside the package so that every way of installing it (a wheel, the Pi installer,
an editable checkout) finds them in the same place through ``importlib.resources``; the
training side (Keras files, the model card) stays in the repository's ``models/`` folder.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from edgefer.classifier import ModelError

#: The file the daemon runs when the config names none (see models/README.md).
DEFAULT_MODEL = "edgefer-dense-int8.tflite"
LABELS_FILE = "labels.txt"


class ShippedModelError(ModelError):
    """A shipped model was asked for by name and is not in the installed package."""


def shipped_dir() -> Path:
    """The folder holding the shipped files.

    Installed from a wheel or a checkout this is a real directory; a zipped install
    (which pip never makes) would need the files extracted first, and is refused plainly.
    """
    root = resources.files(__name__)
    if not isinstance(root, Path):
        raise ShippedModelError(f"edgefer's model files are not on the file system ({root}); install from a wheel")
    return root


def shipped_models() -> list[Path]:
    """Every shipped emotion classifier (``.tflite``, not the BlazeFace face detectors), sorted by name."""
    return sorted(p for p in shipped_dir().glob("*.tflite") if not p.name.startswith("blazeface-"))


def resolve(value: str) -> tuple[Path, Path]:
    """(model, labels) for a config's ``classifier.model``.

    Empty means the shipped default; a bare file name that a shipped model has (for
    example ``edgefer-int8.tflite``) means that shipped file; anything else is a path. The
    labels are ``labels.txt`` beside the model.
    """
    if not value:
        model = shipped_dir() / DEFAULT_MODEL
        if not model.is_file():
            raise ShippedModelError(f"{DEFAULT_MODEL}: the shipped default is missing from {shipped_dir()}")
    elif "/" not in value and (shipped_dir() / value).is_file():
        model = shipped_dir() / value
    else:
        model = Path(value)
    return model, model.parent / LABELS_FILE
