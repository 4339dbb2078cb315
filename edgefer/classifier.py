"""The TFLite classifier runtime: whichever interpreter is installed, one interface.

LiteRT (``ai_edge_litert``) is preferred; older Pi images have ``tflite_runtime``; a
development box may only have TensorFlow. Callers never learn which one loaded except
through :attr:`Classifier.runtime`, which the status and the benchmark report.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from edgefer import LABELS

TFLITE_MAGIC = b"TFL3"
RUNTIMES = (
    ("ai_edge_litert.interpreter", "ai-edge-litert"),
    ("tflite_runtime.interpreter", "tflite-runtime"),
    ("tensorflow.lite", "tensorflow"),
)


class ModelError(RuntimeError):
    """A model file that cannot serve as edgefer's classifier, naming the file and why."""


def load_interpreter_class(preferred: str | None = None) -> tuple[type, str]:
    """The first importable ``Interpreter`` class and a 'package version' label."""
    errors = []
    for module, dist in RUNTIMES:
        if preferred and dist != preferred:
            continue
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            errors.append(f"{module}: {exc}")
            continue
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = "?"
        return mod.Interpreter, f"{dist} {version}"
    raise ModelError("no TFLite runtime importable (install ai-edge-litert): " + "; ".join(errors))


def read_labels(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """One label per line, in the model's output order; blank lines ignored."""
    p = Path(path)
    try:
        labels = tuple(line.strip() for line in p.read_text().splitlines() if line.strip())
    except OSError as exc:
        raise ModelError(f"{p}: cannot read labels ({exc.strerror})") from None
    unknown = [lab for lab in labels if lab not in LABELS]
    if unknown or len(labels) != len(set(labels)):
        raise ModelError(f"{p}: labels must be distinct names from {', '.join(LABELS)}; got {', '.join(labels)}")
    return labels


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: type
    scale: float
    zero_point: int


def _spec(detail: dict) -> TensorSpec:
    scale, zero = detail.get("quantization", (0.0, 0))
    return TensorSpec(tuple(int(v) for v in detail["shape"]), detail["dtype"], float(scale), int(zero))


def top_two_margin(probs: np.ndarray) -> np.ndarray:
    """How far each row's likeliest class lies above the next: 0 = a tie, 1 = certain."""
    top = np.partition(probs, -2, axis=-1)
    return top[..., -1] - top[..., -2]


class Classifier:
    """Four-emotion probabilities for batches of uint8 48x48 grayscale faces.

    Inputs are scaled to [0, 1] (pixel / 255) and, for integer models, quantised with the
    model's own scale and zero point; outputs are dequantised likewise, so a float32 and
    an int8 file are drop-in replacements for each other.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        labels: tuple[str, ...] | None = None,
        *,
        threads: int = 1,
        runtime: str | None = None,
        flip_average: bool = False,
        flip_margin: float = 1.0,
    ) -> None:
        self.path = Path(model_path)
        #: average a face's probabilities with its mirror image's: a network sees a face and
        #: its mirror image as two faces and errs on them differently, so the mean is right
        #: more often, for a second inference
        self.flip_average = flip_average
        #: ... but only for faces whose two likeliest emotions lie closer than this (in
        #: probability); 1 mirrors every face. A confident answer is seldom changed by the
        #: mirror image, so most of flip averaging's gain costs a fraction of its inferences
        #: (the shipped model: about 15 % of faces mirrored at its 0.11, see models/README.md)
        if not 0 <= flip_margin <= 1:
            raise ValueError(f"flip_margin must lie in [0, 1], got {flip_margin}")
        self.flip_margin = flip_margin
        #: faces classified and how many of them were mirrored too, for the status
        self.faces_seen = self.faces_mirrored = 0
        self.labels = labels or LABELS
        self.threads = threads
        data = self._read(self.path)
        cls, self.runtime = load_interpreter_class(runtime)
        try:
            self._interp = cls(model_content=data, num_threads=threads)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{self.path}: not a usable TFLite model ({str(exc).splitlines()[0]})") from None
        inputs, outputs = self._interp.get_input_details(), self._interp.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"{self.path}: expected one input and one output, got {len(inputs)} and {len(outputs)}")
        self._in, self._out = inputs[0], outputs[0]
        self.input, self.output = _spec(self._in), _spec(self._out)
        if self.input.shape[1:] not in ((48, 48, 1), (48, 48)):
            raise ModelError(f"{self.path}: input shape {list(self.input.shape)} is not [N, 48, 48, 1]")
        if self.output.shape[-1] != len(self.labels):
            raise ModelError(
                f"{self.path}: {self.output.shape[-1]} outputs but {len(self.labels)} labels ({', '.join(self.labels)})"
            )
        for name, spec in (("input", self.input), ("output", self.output)):
            if spec.dtype not in (np.float32, np.int8, np.uint8):
                raise ModelError(f"{self.path}: unsupported {name} type {np.dtype(spec.dtype).name}")
            if spec.dtype != np.float32 and spec.scale == 0:
                raise ModelError(f"{self.path}: integer {name} without quantisation parameters")
        self._batch = self.input.shape[0]
        self._table = self._convert(np.arange(256, dtype=np.uint8))  # each pixel value's input value
        self.size_bytes = len(data)

    @staticmethod
    def _read(path: Path) -> bytes:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ModelError(f"{path}: model file not found") from None
        except OSError as exc:
            raise ModelError(f"{path}: cannot read model ({exc.strerror})") from None
        if len(data) < 8 or data[4:8] != TFLITE_MAGIC:
            what = "empty" if not data else "truncated" if len(data) < 8 else "not a TFLite flatbuffer (no TFL3 tag)"
            raise ModelError(f"{path}: {what}")
        return data

    @property
    def passes(self) -> int:
        """Inferences per face at most: two when the mirror image may be classified too."""
        return 2 if self.flip_average and self.flip_margin > 0 else 1

    @property
    def mirroring(self) -> str:
        """Which faces get their mirror image classified too, in words for the log."""
        if self.passes == 1:
            return "none"
        return "every face" if self.flip_margin >= 1 else f"faces whose top-two margin is under {self.flip_margin:g}"

    @property
    def inferences_per_face(self) -> float:
        """Inferences per face so far (before any face: what one face would cost at most)."""
        if not self.faces_seen:
            return float(self.passes)
        return 1 + self.faces_mirrored / self.faces_seen

    @property
    def quantized(self) -> bool:
        return self.input.dtype != np.float32

    def _resize(self, n: int) -> None:
        if n != self._batch:
            self._interp.resize_tensor_input(self._in["index"], [n, *self.input.shape[1:]])
            self._interp.allocate_tensors()
            self._in = self._interp.get_input_details()[0]
            self._out = self._interp.get_output_details()[0]
            self._batch = n

    def _convert(self, pixels: np.ndarray) -> np.ndarray:
        """Pixel values as input values: scaled to [0, 1], then quantised for an integer input."""
        x = pixels.astype(np.float32) / 255.0
        if self.quantized:
            info = np.iinfo(self.input.dtype)
            x = np.clip(np.round(x / self.input.scale + self.input.zero_point), info.min, info.max)
        return x.astype(self.input.dtype)

    def prepare(self, faces: np.ndarray) -> np.ndarray:
        """uint8 (N, 48, 48) faces as the model's input tensor."""
        # uint8 pixels: one table lookup each instead of five passes over the array, the same
        # values at a fraction of the cost, which every call pays
        x = self._table[faces] if faces.dtype == np.uint8 else self._convert(faces)
        return x.reshape((len(faces), *self.input.shape[1:]))

    def predict(self, faces: np.ndarray) -> np.ndarray:
        """(N, 4) probabilities for uint8 faces shaped (N, 48, 48) or (48, 48)."""
        faces = np.asarray(faces)
        if faces.ndim == 2:
            faces = faces[None]
        if faces.ndim != 3 or faces.shape[1:] != (48, 48):
            raise ValueError(f"faces must be (N, 48, 48) uint8, got {faces.shape}")
        if len(faces) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        self.faces_seen += len(faces)
        if self.passes == 1:
            return self._infer(faces)
        if self.flip_margin >= 1:  # every face: both views in one batch
            self.faces_mirrored += len(faces)
            both = self._infer(np.concatenate([faces, faces[:, :, ::-1]]))
            return (both[: len(faces)] + both[len(faces) :]) / 2
        probs = self._infer(faces)
        unsure = np.flatnonzero(top_two_margin(probs) < self.flip_margin)
        if len(unsure):
            self.faces_mirrored += len(unsure)
            probs[unsure] = (probs[unsure] + self._infer(faces[unsure, :, ::-1])) / 2
        return probs

    def _infer(self, faces: np.ndarray) -> np.ndarray:
        self._resize(len(faces))
        self._interp.set_tensor(self._in["index"], self.prepare(faces))
        self._interp.invoke()
        y = self._interp.get_tensor(self._out["index"])
        if self.output.dtype != np.float32:
            y = (y.astype(np.float32) - self.output.zero_point) * self.output.scale
        return y.reshape(len(faces), -1).astype(np.float32)

    def predict_labels(self, faces: np.ndarray, batch: int = 64) -> np.ndarray:
        """Argmax indices over many faces, in chunks so memory stays bounded."""
        return (
            np.concatenate([self.predict(faces[i : i + batch]).argmax(1) for i in range(0, len(faces), batch)])
            if len(faces)
            else np.zeros(0, np.int64)
        )

    def describe(self) -> dict:
        return {
            "path": str(self.path),
            "runtime": self.runtime,
            "threads": self.threads,
            "flip_average": self.flip_average,
            "flip_margin": self.flip_margin,
            "passes": self.passes,
            "input_dtype": np.dtype(self.input.dtype).name,
            "size_bytes": self.size_bytes,
            "labels": list(self.labels),
        }
