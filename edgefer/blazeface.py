"""BlazeFace run directly through the LiteRT interpreter edgefer already loads, no mediapipe.

The ``mediapipe`` package runs BlazeFace well but pins numpy<2 and has no wheels past
Python 3.12 nor for recent aarch64; the model files themselves are plain TFLite. This module
does what MediaPipe's graph does around them, written from the published graph options
(``mediapipe/modules/face_detection/face_detection.pbtxt`` and its ``_short_range`` and
``_full_range`` variants):

- ImageToTensorCalculator: ``keep_aspect_ratio: true`` (the frame is letterboxed into a
  square, ``border_mode: BORDER_ZERO``), RGB input scaled to ``[-1, 1]``.
- SsdAnchorsCalculator: ``anchor_offset_x/y: 0.5``, ``aspect_ratios: 1.0``,
  ``fixed_anchor_size: true`` (every anchor is 1 x 1, so only its centre matters);
  short range: 128 x 128, strides 8, 16, 16, 16 with ``interpolated_scale_aspect_ratio: 1.0``
  (two anchors per layer and cell) = 896 anchors; full range: 192 x 192, stride 4 with
  ``interpolated_scale_aspect_ratio: 0.0`` (one anchor per cell) = 2304 anchors.
- TensorsToDetectionsCalculator: 16 coordinates per anchor, ``reverse_output_order: true``
  (box centre x, y, then w, h), then 6 keypoints (x, y), all in input pixels relative to the
  anchor centre (``x_scale`` = ``y_scale`` = ``w_scale`` = ``h_scale`` = the input size);
  scores are logits, clipped to +-100 (``score_clipping_thresh``) and passed through a sigmoid.
- NonMaxSuppressionCalculator: ``min_suppression_threshold: 0.3``,
  ``overlap_type: INTERSECTION_OVER_UNION``, ``algorithm: WEIGHTED``.

Keypoints, in the model's order: 0 the subject's right eye (image left), 1 the left eye, 2 the
nose tip, 3 the mouth centre, 4 the right ear tragion, 5 the left ear tragion.

The full-range file is ``face_detection_full_range_sparse.tflite`` from the mediapipe 0.10.18
wheel, the only full-range model in it and the one MediaPipe's own full-range graph names;
LiteRT densifies its weights on loading. Model files: Apache-2.0, see ``models/BLAZEFACE-LICENSE``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edgefer.faces import Face

#: MediaPipe's NonMaxSuppressionCalculator option for both face detection graphs
SUPPRESSION_IOU = 0.3
#: TensorsToDetectionsCalculator's score_clipping_thresh
SCORE_CLIP = 100.0
#: Candidates below this score suppress their neighbours but do not pull the merged box, unless
#: the group holds nothing better. MediaPipe's own threshold (0.5) is where the crop framing
#: was measured (edgefer.faces.FRAMING); a lower detection threshold finds more faces without
#: letting weak, looser candidates move the boxes of the faces 0.5 already found.
MERGE_SCORE = 0.5
N_KEYPOINTS = 6


@dataclass(frozen=True)
class Variant:
    """One BlazeFace model: its shipped file, input side and anchor layout."""

    name: str
    file: str
    size: int
    strides: tuple[int, ...]
    anchors_per_layer: int


VARIANTS = {
    "short": Variant("blazeface", "blazeface-short-range.tflite", 128, (8, 16, 16, 16), 2),
    "full": Variant("blazeface-full", "blazeface-full-range.tflite", 192, (4,), 1),
}


def ssd_anchors(size: int, strides: tuple[int, ...], anchors_per_layer: int) -> np.ndarray:
    """Anchor centres (N, 2) as x, y in [0, 1], in the order the model's outputs follow.

    As SsdAnchorsCalculator lays them out: consecutive layers with the same stride share one
    feature map (side ``ceil(size / stride)``) and put all their anchors at each cell, cells
    row by row; a cell's anchors sit at its centre (offset 0.5). With ``fixed_anchor_size``
    every anchor is 1 x 1, so the centres are all there is.
    """
    out = []
    i = 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        side = -(-size // strides[i])
        centres = (np.arange(side, dtype=np.float32) + 0.5) / side
        ys, xs = np.meshgrid(centres, centres, indexing="ij")
        cell = np.stack([xs.ravel(), ys.ravel()], axis=1)
        out.append(np.repeat(cell, (j - i) * anchors_per_layer, axis=0))
        i = j
    return np.concatenate(out)


def weighted_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    keypoints: np.ndarray,
    iou_threshold: float = SUPPRESSION_IOU,
    merge_score: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's WEIGHTED suppression: boxes (N, 4 as x1, y1, x2, y2), keypoints (N, K, 2).

    Take the best-scoring detection left; every detection overlapping it by more than
    ``iou_threshold`` (itself included) is merged into one whose box and keypoints are the
    score-weighted mean of the group and whose score is the best's; repeat on the rest. The
    average steadies the box from frame to frame more than keeping the single best would.
    Members scoring below ``merge_score`` (or the best's score, if lower) are suppressed
    without entering the mean.
    """
    order = np.argsort(-scores, kind="stable")
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    out_boxes, out_scores, out_kps = [], [], []
    while order.size:
        best = order[0]
        b = boxes[order]
        iw = np.clip(np.minimum(b[:, 2], boxes[best, 2]) - np.maximum(b[:, 0], boxes[best, 0]), 0, None)
        ih = np.clip(np.minimum(b[:, 3], boxes[best, 3]) - np.maximum(b[:, 1], boxes[best, 1]), 0, None)
        inter = iw * ih
        union = area[order] + area[best] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        group = iou > iou_threshold
        group[0] = True
        members = order[group]
        members = members[scores[members] >= min(merge_score, scores[best])]
        weights = scores[members]
        total = float(weights.sum())
        out_boxes.append((boxes[members] * weights[:, None]).sum(axis=0) / total)
        out_kps.append((keypoints[members] * weights[:, None, None]).sum(axis=0) / total)
        out_scores.append(scores[best])
        order = order[~group]
    if not out_boxes:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, keypoints.shape[1], 2), np.float32)
    return np.array(out_boxes), np.array(out_scores), np.array(out_kps)


class BlazeFaceDetector:
    """BlazeFace short range (faces within about 2 m, the default) or full range (up to about 5 m).

    One interpreter thread by default: the classifier has its own threads, and on a Pi the
    detector shares the cores with capture.
    """

    def __init__(self, range: str = "short", min_score: float = 0.5, *, threads: int = 1) -> None:
        from edgefer.classifier import load_interpreter_class
        from edgefer.models import shipped_dir

        if range not in VARIANTS:
            raise ValueError(f"range must be one of {', '.join(VARIANTS)}, got {range!r}")
        self.variant = VARIANTS[range]
        self.name = self.variant.name
        self.min_score = min_score
        self.path = shipped_dir() / self.variant.file
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise RuntimeError(f"{self.path}: cannot read the BlazeFace model ({exc.strerror})") from None
        cls, self.runtime = load_interpreter_class()
        self._interp = cls(model_content=data, num_threads=threads)
        self._interp.allocate_tensors()
        self._in, self._boxes, self._scores = self._find_tensors()
        self.anchors = ssd_anchors(self.variant.size, self.variant.strides, self.variant.anchors_per_layer)
        n_out = next(int(d["shape"][1]) for d in self._interp.get_output_details() if d["index"] == self._boxes)
        if len(self.anchors) != n_out:
            raise RuntimeError(f"{self.path}: {n_out} outputs per image but {len(self.anchors)} anchors")

    def _find_tensors(self) -> tuple[int, int, int]:
        """Input, regressor and score tensor indices, found by their shapes rather than their
        positions or names (which differ between the two files)."""
        size = self.variant.size
        inputs = self._interp.get_input_details()
        if len(inputs) != 1 or tuple(inputs[0]["shape"]) != (1, size, size, 3):
            raise RuntimeError(f"{self.path}: expected one input of shape [1, {size}, {size}, 3]")
        found: dict[int, int] = {}
        for d in self._interp.get_output_details():
            shape = tuple(d["shape"])
            if len(shape) == 3 and shape[0] == 1 and shape[2] in (16, 1):
                found[int(shape[2])] = int(d["index"])
        if set(found) != {16, 1}:
            raise RuntimeError(f"{self.path}: expected outputs [1, N, 16] and [1, N, 1]")
        return int(inputs[0]["index"]), found[16], found[1]

    def detect(self, gray: np.ndarray, min_size: int) -> list[Face]:
        """Faces in a uint8 grayscale frame, in that frame's pixels; sides under ``min_size``
        are dropped."""
        h, w = gray.shape[:2]
        side = max(h, w)
        top, left = (side - h) // 2, (side - w) // 2
        # Letterboxed into a square first, so that one scale maps the model's unit square
        # back onto the frame exactly in both directions.
        square = cv2.copyMakeBorder(gray, top, side - h - top, left, side - w - left, cv2.BORDER_CONSTANT, value=0)
        size = self.variant.size
        interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
        small = cv2.resize(square, (size, size), interpolation=interp).astype(np.float32) * (2 / 255) - 1
        self._interp.set_tensor(self._in, np.repeat(small[None, :, :, None], 3, axis=3))
        self._interp.invoke()
        raw = self._interp.get_tensor(self._boxes)[0]
        logits = self._interp.get_tensor(self._scores)[0, :, 0].astype(np.float64)  # exp(100) overflows float32
        scores = 1 / (1 + np.exp(-np.clip(logits, -SCORE_CLIP, SCORE_CLIP)))
        keep = np.flatnonzero(scores >= self.min_score)
        if keep.size == 0:
            return []
        raw, scores, anchors = raw[keep] / size, scores[keep], self.anchors[keep]
        centre = anchors + raw[:, 0:2]
        half = raw[:, 2:4] / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        keypoints = anchors[:, None, :] + raw[:, 4 : 4 + 2 * N_KEYPOINTS].reshape(-1, N_KEYPOINTS, 2)
        boxes, scores, keypoints = weighted_nms(boxes, scores, keypoints, merge_score=MERGE_SCORE)
        offset = np.array([left, top], np.float64)
        faces = []
        for box, score, kps in zip(boxes, scores, keypoints, strict=True):
            x1, y1 = box[:2] * side - offset
            bw, bh = (box[2:] - box[:2]) * side
            if min(bw, bh) < min_size:
                continue
            eyes = kps[:2] * side - offset
            faces.append(
                Face(
                    round(x1),
                    round(y1),
                    round(bw),
                    round(bh),
                    float(score),
                    ((float(eyes[0, 0]), float(eyes[0, 1])), (float(eyes[1, 0]), float(eyes[1, 1]))),
                )
            )
        return faces


def blazeface_available() -> bool:
    """Whether a TFLite interpreter imports and both shipped BlazeFace files are present."""
    try:
        from edgefer.classifier import load_interpreter_class
        from edgefer.models import shipped_dir

        load_interpreter_class()
        return all((shipped_dir() / v.file).is_file() for v in VARIANTS.values())
    except Exception:  # any failure to import or locate means: not usable here
        return False
