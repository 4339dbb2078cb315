"""FER2013 loading in both layouts users have: the image-folder tree and the original CSV.

The seven FER2013 classes are mapped onto edgefer's four by dropping disgust, fear and
surprise, as the source paper does. Every loader returns uint8 48x48 arrays so the
runtime, the benchmark and the trainer all see exactly the same pixels.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgefer import LABELS

#: FER2013's own class order (the CSV's ``emotion`` column indexes this tuple).
FER2013_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
DROPPED: frozenset[str] = frozenset({"disgust", "fear", "surprise"})
SIZE = 48
#: The label of a face from a dropped class, loaded with ``dropped=True``: it has no place
#: among edgefer's four, but a teacher can still say what it looks like.
UNLABELLED = -1
#: CSV ``Usage`` values per split name accepted by :func:`load_fer2013`.
CSV_USAGE = {"train": "Training", "test": "PublicTest", "privatetest": "PrivateTest"}
DEFAULT_ROOTS = ("~/.local/share/edgefer/datasets/fer2013", "/usr/share/edgefer/datasets/fer2013")
OBTAIN_HINT = (
    "FER2013 is not shipped with edgefer (its licence forbids redistribution). Get it from "
    "the Kaggle 'Challenges in Representation Learning: Facial Expression Recognition' page "
    "as fer2013.csv, or as the image-folder copy (train/<class>/*.jpg, test/<class>/*.jpg), "
    "and pass its folder with --data-dir."
)


class DatasetError(ValueError):
    """A dataset problem, always naming the file (and line) at fault."""


@dataclass
class Dataset:
    """Images (N, 48, 48) uint8 and labels (N,) indexing :data:`edgefer.LABELS`."""

    images: np.ndarray
    labels: np.ndarray
    sources: list[str]
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, idx: np.ndarray) -> Dataset:
        return Dataset(self.images[idx], self.labels[idx], [self.sources[i] for i in idx])

    def class_counts(self) -> dict[str, int]:
        return {name: int((self.labels == i).sum()) for i, name in enumerate(LABELS)}


def map_label(fer_class: str) -> int | None:
    """Index in :data:`LABELS` of a FER2013 class name, or None if edgefer drops it."""
    if fer_class in DROPPED:
        return None
    if fer_class not in LABELS:
        raise KeyError(fer_class)
    return LABELS.index(fer_class)


def find_root(data_dir: str | os.PathLike[str] | None) -> Path:
    """The dataset root to use, or a DatasetError that says where it looked."""
    candidates = [Path(data_dir).expanduser()] if data_dir else []
    if not data_dir:
        env = os.environ.get("EDGEFER_FER2013")
        candidates += [Path(env)] if env else []
        candidates += [Path(p).expanduser() for p in DEFAULT_ROOTS]
    for c in candidates:
        if c.is_file() and c.suffix == ".csv":
            return c
        if (c / "fer2013.csv").is_file() or (c / "test").is_dir() or (c / "train").is_dir():
            return c
    looked = ", ".join(str(c) for c in candidates)
    raise DatasetError(f"FER2013 not found (looked in: {looked}). {OBTAIN_HINT}")


def load_fer2013(
    data_dir: str | os.PathLike[str] | None,
    split: str = "test",
    *,
    skip_bad: bool = False,
    limit_per_class: int | None = None,
    dropped: bool = False,
) -> Dataset:
    """Load one split: the four classes, or with ``dropped`` the three others.

    ``skip_bad`` turns a malformed image or row into a counted skip (listed in
    ``Dataset.skipped`` with its location) instead of an error, for callers such as the
    benchmark that must report bad input rather than stop on it. ``dropped`` loads the
    faces of the three dropped classes instead, labelled :data:`UNLABELLED`: distillation
    can show them to a student with its teachers' labels (``--transfer-faces``).
    """
    root = find_root(data_dir)
    csv_path = root if root.is_file() else root / "fer2013.csv"
    if csv_path.is_file() and not (root.is_dir() and (root / split).is_dir()):
        return _load_csv(csv_path, split, skip_bad, limit_per_class, dropped)
    split_dir = root / split
    if not split_dir.is_dir():
        raise DatasetError(f"{split_dir}: no such split folder (expected {root}/{split}/<class>/*.jpg)")
    return _load_folder(split_dir, skip_bad, limit_per_class, dropped)


def _classes(dropped: bool) -> str:
    return ", ".join(sorted(DROPPED) if dropped else LABELS)


def _wanted(fer_class: str, dropped: bool) -> int | None:
    """The label a face of ``fer_class`` is loaded with, or None when this load skips it."""
    label = map_label(fer_class)
    if dropped:
        return UNLABELLED if label is None else None
    return label


def _load_folder(split_dir: Path, skip_bad: bool, limit: int | None, dropped: bool = False) -> Dataset:
    import cv2

    images: list[np.ndarray] = []
    labels: list[int] = []
    sources: list[str] = []
    skipped: list[str] = []
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        try:
            label = _wanted(class_dir.name, dropped)
        except KeyError:
            raise DatasetError(
                f"{class_dir}: unknown class folder {class_dir.name!r} (expected one of {', '.join(FER2013_CLASSES)})"
            ) from None
        if label is None:
            continue
        files = sorted(f for f in class_dir.iterdir() if f.is_file())
        if limit is not None:
            files = files[:limit]
        for f in files:
            img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
            problem = None
            if img is None:
                problem = "unreadable image"
            elif img.shape != (SIZE, SIZE):
                img = cv2.resize(img, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
            if problem:
                if not skip_bad:
                    raise DatasetError(f"{f}: {problem}")
                skipped.append(f"{f}: {problem}")
                continue
            images.append(img)
            labels.append(label)
            sources.append(str(f))
    if not images:
        raise DatasetError(f"{split_dir}: no images of the classes {_classes(dropped)}")
    return Dataset(np.stack(images), np.asarray(labels, np.int64), sources, skipped)


def parse_pixels(text: str, where: str) -> np.ndarray:
    """One CSV ``pixels`` cell (2304 space-separated grey levels) as a 48x48 uint8 image."""
    parts = text.split()
    if len(parts) != SIZE * SIZE:
        raise DatasetError(f"{where}: expected {SIZE * SIZE} pixel values, got {len(parts)}")
    try:
        values = np.array([int(p) for p in parts], dtype=np.int64)
    except ValueError:
        raise DatasetError(f"{where}: pixel values must be integers") from None
    if values.min() < 0 or values.max() > 255:
        raise DatasetError(f"{where}: pixel values must lie in 0..255")
    return values.astype(np.uint8).reshape(SIZE, SIZE)


def _load_csv(path: Path, split: str, skip_bad: bool, limit: int | None, dropped: bool = False) -> Dataset:
    usage = CSV_USAGE.get(split.lower())
    if usage is None:
        raise DatasetError(f"{path}: unknown split {split!r} (known: {', '.join(CSV_USAGE)})")
    images: list[np.ndarray] = []
    labels: list[int] = []
    sources: list[str] = []
    skipped: list[str] = []
    per_class: dict[int, int] = {}
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"emotion", "pixels", "Usage"} - set(reader.fieldnames or [])
        if missing:
            raise DatasetError(f"{path}:1: missing column(s) {', '.join(sorted(missing))}")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if (row.get("Usage") or "").strip() != usage:
                continue
            try:
                code = int(row["emotion"])
                if not 0 <= code < len(FER2013_CLASSES):
                    raise ValueError
            except (TypeError, ValueError):
                problem = f"{where}: unknown emotion label {row['emotion']!r} (expected 0..6)"
                if not skip_bad:
                    raise DatasetError(problem) from None
                skipped.append(problem)
                continue
            label = _wanted(FER2013_CLASSES[code], dropped)
            if label is None or (limit is not None and per_class.get(code, 0) >= limit):
                continue
            try:
                img = parse_pixels(row["pixels"] or "", where)
            except DatasetError as exc:
                if not skip_bad:
                    raise
                skipped.append(str(exc))
                continue
            per_class[code] = per_class.get(code, 0) + 1
            images.append(img)
            labels.append(label)
            sources.append(where)
    if not images:
        raise DatasetError(f"{path}: no {usage} rows of the classes {_classes(dropped)}")
    return Dataset(np.stack(images), np.asarray(labels, np.int64), sources, skipped)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out) with ``fraction`` of each class held out, reproducibly."""
    rng = np.random.default_rng(seed)
    keep: list[np.ndarray] = []
    held: list[np.ndarray] = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = round(len(idx) * fraction)
        held.append(idx[:n])
        keep.append(idx[n:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))
