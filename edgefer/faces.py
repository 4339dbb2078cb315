"""Face detection and cropping to the classifier's 48x48 grayscale input.

Detection runs on a downscaled copy of the frame (faces are large; detection cost grows
with pixels); crops come from the full-resolution frame so the classifier sees all the
detail there is. Between detections the last boxes are held, which is what lets a Pi run
the detector every few frames only.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np

if TYPE_CHECKING:
    from edgefer.config import FacesConfig

log = logging.getLogger(__name__)
SIZE = 48


@dataclass(frozen=True)
class Face:
    """A face box in full-frame pixels; ``eyes`` (left, right) when the detector gives them."""

    x: int
    y: int
    w: int
    h: int
    score: float = 1.0
    eyes: tuple[tuple[float, float], tuple[float, float]] | None = None


class Detector(Protocol):
    name: str

    def detect(self, gray: np.ndarray, min_size: int) -> list[Face]: ...


class HaarDetector:
    """OpenCV's bundled frontal-face cascade: always available, no extra download."""

    name = "haar"

    def __init__(self) -> None:
        data = getattr(cv2, "data", None)
        if data is None or not hasattr(cv2, "CascadeClassifier"):
            raise RuntimeError("this OpenCV build has no Haar cascades (opencv-python-headless 5.x); install <5")
        path = data.haarcascades + "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise RuntimeError(f"{path}: Haar cascade failed to load")

    def detect(self, gray: np.ndarray, min_size: int) -> list[Face]:
        boxes = self._cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_size, min_size))
        return [Face(int(x), int(y), int(w), int(h)) for x, y, w, h in boxes]


class MediapipeDetector:
    """BlazeFace (short range) from the legacy mediapipe solutions API, with eye keypoints."""

    name = "mediapipe"

    def __init__(self, min_score: float = 0.5) -> None:
        import mediapipe as mp

        self._det = mp.solutions.face_detection.FaceDetection(model_selection=0, min_detection_confidence=min_score)

    def detect(self, gray: np.ndarray, min_size: int) -> list[Face]:
        h, w = gray.shape
        res = self._det.process(cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB))
        out = []
        for d in res.detections or []:
            bb = d.location_data.relative_bounding_box
            box = Face(int(bb.xmin * w), int(bb.ymin * h), int(bb.width * w), int(bb.height * h), float(d.score[0]))
            if min(box.w, box.h) < min_size:
                continue
            kp = d.location_data.relative_keypoints
            # keypoint 0 is the subject's right eye (image left), 1 the left eye
            eyes = ((kp[0].x * w, kp[0].y * h), (kp[1].x * w, kp[1].y * h)) if len(kp) >= 2 else None
            out.append(Face(box.x, box.y, box.w, box.h, box.score, eyes))
        return out


def available_detectors() -> list[str]:
    """The detectors usable here, in the order ``auto`` prefers them: BlazeFace through LiteRT
    (when an interpreter imports and the model files are installed; full range first), the
    short-range network through the mediapipe package, and Haar always. By measurement
    (benchmarks/results/detectors/detectors.md): on real photographs BlazeFace full range finds
    every face Haar finds, draws no false boxes and costs about a fifth of Haar's CPU; and it
    still finds faces 40-60 px wide, as a room camera shows a person 2 m away, where the short
    range network (made for faces at arm's length) finds almost none."""
    from edgefer.blazeface import blazeface_available

    names = ["blazeface-full", "blazeface"] if blazeface_available() else []
    try:
        import mediapipe as mp

        if hasattr(mp, "solutions") and hasattr(mp.solutions, "face_detection"):
            names.append("mediapipe")
    except Exception:  # an import error of any kind means: not usable here
        pass
    return [*names, "haar"]


def make_detector(name: str = "auto", min_score: float = 0.5) -> Detector:
    """The requested detector; 'auto' takes the first of :func:`available_detectors`."""
    if name == "auto":
        name = available_detectors()[0]
    if name == "mediapipe":
        return MediapipeDetector(min_score)
    if name in ("blazeface", "blazeface-full"):
        from edgefer.blazeface import BlazeFaceDetector

        return BlazeFaceDetector("full" if name == "blazeface-full" else "short", min_score)
    if name == "haar":
        return HaarDetector()
    raise ValueError(f"unknown detector {name!r}")


def scale_faces(faces: list[Face], factor: float) -> list[Face]:
    def s(v: float) -> int:
        return round(v * factor)

    return [
        Face(
            s(f.x),
            s(f.y),
            s(f.w),
            s(f.h),
            f.score,
            None if f.eyes is None else tuple((x * factor, y * factor) for x, y in f.eyes),  # type: ignore[arg-type]
        )
        for f in faces
    ]


@dataclass(frozen=True)
class Framing:
    """Where the classifier's square crop lies relative to a detector's box.

    ``scale`` is the crop's side over the box's larger side; ``dx``, ``dy`` move the crop's
    centre by that fraction of the box's width and height. The classifier learned from
    FER2013's tight face crops, and each detector draws its box differently, so each has its
    own framing: the one that reproduces FER2013's crops from that detector's boxes.
    """

    scale: float = 1.0
    dx: float = 0.0
    dy: float = 0.0

    @classmethod
    def from_margin(cls, margin: float) -> Framing:
        """A box widened by ``margin`` of its side on every edge, centred."""
        return cls(scale=1 + 2 * margin)


#: Measured by ``python -m benchmarks.framing`` (benchmarks/results/framing.md): FER2013
#: training faces composited into frames, detected the way the daemon detects, and the
#: median of (FER2013 crop) relative to (detector box). Used when ``faces.margin = "auto"``.
FRAMING: dict[str, Framing] = {
    "haar": Framing(scale=1.04, dx=0.0, dy=0.004),
    "blazeface": Framing(scale=1.218, dx=0.0, dy=-0.097),
    "blazeface-full": Framing(scale=1.156, dx=0.009, dy=-0.051),
}


def framing_for(detector: str, margin: float | str = "auto") -> Framing:
    """The framing a config asks for: a detector's measured one, or a plain margin."""
    if margin == "auto":
        return FRAMING.get(detector, FRAMING["haar"])
    return Framing.from_margin(float(margin))


def crop_face(gray: np.ndarray, face: Face, framing: Framing = Framing(), size: int = SIZE) -> np.ndarray:
    """A square ``size`` crop of ``face`` framed by ``framing``, eyes levelled when known.

    Borders are replicated when the square reaches past the frame so faces at the edge
    keep their scale instead of being stretched.
    """
    cx, cy = face.x + face.w * (0.5 + framing.dx), face.y + face.h * (0.5 + framing.dy)
    side = max(face.w, face.h) * framing.scale
    angle = 0.0
    if face.eyes is not None:
        (lx, ly), (rx, ry) = face.eyes
        angle = math.degrees(math.atan2(ry - ly, rx - lx))
    scale = size / side
    m = cv2.getRotationMatrix2D((cx, cy), angle, scale)
    m[0, 2] += size / 2 - cx
    m[1, 2] += size / 2 - cy
    return cv2.warpAffine(gray, m, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)


def crop_faces(gray: np.ndarray, faces: list[Face], framing: Framing = Framing()) -> np.ndarray:
    if not faces:
        return np.zeros((0, SIZE, SIZE), np.uint8)
    return np.stack([crop_face(gray, f, framing) for f in faces])


class FaceStage:
    """Detect every ``detect_every`` frames on a downscaled frame; hold boxes in between."""

    def __init__(
        self,
        detector: Detector,
        *,
        detect_scale: float = 0.5,
        detect_every: int = 1,
        min_face: int = 40,
        framing: Framing | None = None,
        max_faces: int = 8,
    ) -> None:
        self.detector = detector
        self.detect_scale = detect_scale
        self.detect_every = detect_every
        self.min_face = min_face
        self.framing = framing or framing_for(getattr(detector, "name", "haar"))
        self.max_faces = max_faces
        self._frame = 0
        self._held: list[Face] = []
        self.detections = 0

    def faces(self, gray: np.ndarray) -> tuple[list[Face], bool]:
        """Boxes for this frame and whether the detector ran on it."""
        ran = self._frame % self.detect_every == 0
        self._frame += 1
        if ran:
            small = gray
            if self.detect_scale < 1:
                small = cv2.resize(gray, None, fx=self.detect_scale, fy=self.detect_scale, interpolation=cv2.INTER_AREA)
            found = self.detector.detect(small, max(8, int(self.min_face * self.detect_scale)))
            found = scale_faces(found, 1 / self.detect_scale) if self.detect_scale < 1 else found
            found.sort(key=lambda f: f.w * f.h, reverse=True)
            self._held = found[: self.max_faces]
            self.detections += 1
        return self._held, ran

    def crops(self, gray: np.ndarray, faces: list[Face]) -> np.ndarray:
        return crop_faces(gray, faces, self.framing)

    def reset(self) -> None:
        self._frame = 0
        self._held = []


def build_face_stage(fc: FacesConfig, detector: Detector | None = None) -> FaceStage:
    """The face stage a ``[faces]`` config describes (the detector is made unless given)."""
    det = detector or make_detector(fc.detector, fc.min_score)
    return FaceStage(
        det,
        detect_scale=fc.detect_scale,
        detect_every=fc.detect_every,
        min_face=fc.min_face,
        framing=framing_for(det.name, fc.margin),
        max_faces=fc.max_faces,
    )
