"""Where the training names used to live, kept importable for the modules and scripts that still
import them from here (the federated package, benchmarks); new code imports from the module of
each concern: :mod:`~edgefer.train.recipe`, :mod:`~edgefer.train.data`,
:mod:`~edgefer.train.teachers`, :mod:`~edgefer.train.warmstart`, :mod:`~edgefer.train.average`,
:mod:`~edgefer.train.fit`, :mod:`~edgefer.train.finalize` and :mod:`~edgefer.train.soup`.
"""

from __future__ import annotations

from edgefer.train.average import WeightAverage, average_if_better, recalibrate_bn
from edgefer.train.data import make_dataset, mixup, predict_probs, train_and_validation, training_faces, validate
from edgefer.train.finalize import evaluate_and_export, finalize, precise_bn_if_better
from edgefer.train.fit import train
from edgefer.train.recipe import Recipe, TrainError, check_resumable
from edgefer.train.teachers import FER7, load_teacher, teacher_probs, teacher_targets
from edgefer.train.warmstart import start_from

__all__ = [
    "FER7",
    "Recipe",
    "TrainError",
    "WeightAverage",
    "average_if_better",
    "check_resumable",
    "evaluate_and_export",
    "finalize",
    "load_teacher",
    "make_dataset",
    "mixup",
    "precise_bn_if_better",
    "predict_probs",
    "recalibrate_bn",
    "start_from",
    "teacher_probs",
    "teacher_targets",
    "train",
    "train_and_validation",
    "training_faces",
    "validate",
]
