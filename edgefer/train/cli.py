"""``edgefer-train``: centralized or federated training, export and model card figures."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields

from edgefer.train import ARCHITECTURES
from edgefer.train.trainer import Recipe


def _log(msg: str) -> None:
    print(msg, flush=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgefer-train", description=__doc__)
    p.add_argument(
        "--arch",
        choices=ARCHITECTURES,
        default="edgefer",
        help="edgefer-wide: a teacher at 1.5x the channels, over the budget, never shipped; "
        "edgefer-gdc: edgefer pooling with a learnt weight per position (global depthwise convolution); "
        "edgefer-se: edgefer with channel gates; edgefer-mirror: a narrower edgefer run on the face and its mirror; "
        "edgefer-mirror-full: the same at full width, its stage-opening convs factored; "
        "edgefer-mirror-crop: edgefer-mirror-full on the face's central 40x40; "
        "edgefer-factored: that trunk alone, one view per face; "
        "edgefer-dense: dense 3x3 convs from 24 px down, fast where int8 dot products are; "
        "edgefer-dense-mirror: edgefer-dense trained on the face and its mirror",
    )
    p.add_argument("--data-dir", help="folder holding train/ and test/, or fer2013.csv")
    p.add_argument("--out", help="run folder for checkpoints and figures (default runs/<arch>)")
    p.add_argument("--export-to", help="folder for the two .tflite files (default: the run folder)")
    p.add_argument("--threads", type=int, default=0, help="TensorFlow intra-op threads (0: all cores)")
    p.add_argument("--stop-after", type=int, help="end this call after N epochs; the same command resumes")
    p.add_argument("--finalize", action="store_true", help="evaluate and export the run in --out without training")
    p.add_argument(
        "--compare",
        nargs="+",
        metavar="RUN",
        help="print a Markdown table of finished runs (folders or report.json files); "
        "gaps are measured against the first centralized one",
    )
    p.add_argument(
        "--soup",
        nargs="+",
        metavar="KERAS_FILE",
        help="average the weights of these finished models (one architecture, fine-tuned from one another) "
        "into --out; the average ships only when it beats the best of them on validation",
    )
    p.add_argument(
        "--score-teachers",
        nargs="+",
        metavar="PATH[:signed]",
        help="print each candidate teacher's flip-averaged validation accuracy, their mean's, "
        "and how often each is right where another is wrong; trains nothing",
    )
    p.add_argument(
        "--paired",
        nargs=2,
        metavar="TFLITE",
        help="score two model files on the validation faces (--val-fraction, --seed) and print the faces only "
        "one gets right with an exact sign test; trains nothing",
    )
    p.add_argument(
        "--margins",
        nargs=2,
        type=float,
        metavar="MARGIN",
        help="with --paired: run each file as the daemon does, mirroring a face when its two likeliest "
        "emotions lie within MARGIN (classifier.flip_margin; 0 never, 1 always); default: one view alone",
    )
    p.add_argument(
        "--non-inferior",
        type=float,
        metavar="POINTS",
        help="with --paired: say whether the first file is shown to be at most POINTS accuracy points below "
        "the second (the one-sided 95 %% lower bound of the paired difference above -POINTS)",
    )
    p.add_argument("--plot", metavar="PNG", help="with --compare: PublicTest accuracy against the number of clients")
    defaults = Recipe()
    special = {
        "teachers": dict(
            action="append",
            default=[],
            metavar="PATH[:signed]",
            help="distil from this Keras model (repeatable); :signed feeds it pixel/127.5 - 1",
        ),
        "patience": dict(
            type=int,
            default=defaults.patience,
            help="stop after N epochs without a validation gain (the one setting a resumed run may change)",
        ),
        "distill": dict(type=float, default=0.0, help="teachers' share of the training target (0: no distillation)"),
        "init_from": dict(
            metavar="KERAS_FILE",
            help="start from these weights (same architecture, or a shallower edgefer to grow: "
            "its new blocks start as the identity, a new pooling head as the average, new channel gates as 1; "
            "for edgefer-mirror, an edgefer narrowed to its trunk's width; for edgefer-mirror-full, "
            "one whose stage-opening convs are factored; for edgefer-factored, edgefer-mirror-full's trunk)",
        ),
        "teacher_flip": dict(
            action=argparse.BooleanOptionalAction,
            default=False,
            help="each teacher averages its output over the face and its mirror image",
        ),
        "mixup": dict(
            type=float,
            default=0.0,
            metavar="ALPHA",
            help="blend faces and targets pairwise, weights from Beta(ALPHA, ALPHA) (0: off); teachers label the blend",
        ),
        "erase": dict(
            type=float,
            default=0.0,
            metavar="SHARE",
            help="replace a rectangle (2-20 %% of the face) by noise in SHARE of the training faces (0: off)",
        ),
        "camera": dict(
            type=float,
            default=0.0,
            metavar="SHARE",
            help="shrink, blur, dim or brighten and add noise to SHARE of the student's faces, as a camera does, "
            "after the teachers have labelled the clean face (0: off)",
        ),
        "transfer_faces": dict(
            action=argparse.BooleanOptionalAction,
            default=False,
            help="also train on the faces of the dropped classes, their target the teachers' answer alone",
        ),
        "lr_floor": dict(
            type=float,
            default=defaults.lr_floor,
            metavar="SHARE",
            help="the learning rate decays to SHARE of its peak (1: constant after warm-up, for --average-from)",
        ),
        "average_from": dict(
            type=int,
            default=0,
            metavar="EPOCH",
            help="average the weights of every epoch from EPOCH on (stochastic weight averaging; 0: off); "
            "the average replaces the best epoch when it is better on validation",
        ),
        "val_fraction": dict(
            type=float,
            default=defaults.val_fraction,
            metavar="SHARE",
            help="share of each class held out for validation (default %(default)s); 0 refits a recipe "
            "chosen earlier on every training face and ships the last epoch",
        ),
        "quant_aware": dict(
            action=argparse.BooleanOptionalAction,
            default=False,
            help="fine-tune --init-from with int8 rounding simulated (batch norm frozen), "
            "so its int8 file keeps the float model's answers",
        ),
    }
    for f in fields(Recipe):
        if f.name == "arch":
            continue
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if f.name in special:
            p.add_argument("--teacher" if f.name == "teachers" else flag, dest=f.name, **special[f.name])
        elif isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            p.add_argument(flag, type=float if isinstance(default, float) else int, default=default)
    fed = p.add_argument_group("federated training with Flower (docs/federated.md)")
    fed.add_argument("--federated", action="store_true", help="simulate a FedAvg federation on this machine")
    fed.add_argument("--clients", type=int, default=3, help="number of clients (default %(default)s)")
    fed.add_argument("--rounds", type=int, default=10, help="FedAvg rounds (default %(default)s)")
    fed.add_argument("--local-epochs", type=int, default=3, help="epochs per client per round (default %(default)s)")
    fed.add_argument("--partition", choices=("iid", "dirichlet"), default="iid", help="how FER2013 train is shared")
    fed.add_argument("--alpha", type=float, default=0.5, help="Dirichlet label skew, smaller is more skewed")
    fed.add_argument(
        "--dp",
        choices=("none", "central"),
        default="none",
        help="central: clients clip their update, the server adds Gaussian noise",
    )
    fed.add_argument("--dp-noise", type=float, default=0.1, help="DP noise multiplier (default %(default)s)")
    fed.add_argument("--dp-clip", type=float, default=5.0, help="DP L2 bound of a client update (default %(default)s)")
    fed.add_argument("--flower-app", metavar="DIR", help="write a Flower App for a SuperLink deployment and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.compare:
        from edgefer.train.compare import compare

        try:
            _log(compare(args.compare, args.plot))
        except ValueError as e:
            print(f"edgefer-train: {e}", file=sys.stderr)
            return 2
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError:
        print("edgefer-train needs the train extra: pip install 'edgefer[train]'", file=sys.stderr)
        return 2
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    from edgefer.train.trainer import finalize, train

    if args.finalize:
        if not args.out:
            print("--finalize needs --out RUN_DIR", file=sys.stderr)
            return 2
        finalize(args.out, args.data_dir, args.export_to, log=_log)
        return 0
    recipe = Recipe(**{f.name: getattr(args, f.name) for f in fields(Recipe)})
    if not 0 <= recipe.val_fraction < 1:
        print(f"--val-fraction {recipe.val_fraction}: must be at least 0 and below 1", file=sys.stderr)
        return 2
    for name in ("erase", "camera"):
        if not 0 <= getattr(recipe, name) <= 1:
            print(f"--{name} {getattr(recipe, name)}: a share of the training faces, from 0 to 1", file=sys.stderr)
            return 2
    if recipe.val_fraction == 0 and (args.federated or args.flower_app):
        print("--val-fraction 0: a federation picks its round on validation; keep a validation part", file=sys.stderr)
        return 2
    if recipe.transfer_faces and (args.federated or args.flower_app):
        print("--transfer-faces: federated clients train on their own labelled faces only", file=sys.stderr)
        return 2
    if (args.margins or args.non_inferior is not None) and not args.paired:
        print("--margins and --non-inferior go with --paired", file=sys.stderr)
        return 2
    if args.paired:
        from edgefer.train.compare import paired_on_validation

        try:
            paired_on_validation(
                args.paired, recipe, args.data_dir, log=_log, margins=args.margins, non_inferior=args.non_inferior
            )
        except ValueError as e:
            print(f"edgefer-train: {e}", file=sys.stderr)
            return 2
        return 0
    if args.score_teachers:
        from edgefer.train.trainer import score_teachers

        score_teachers(args.score_teachers, recipe, args.data_dir, log=_log)
        return 0
    if args.soup:
        from edgefer.train.trainer import soup

        soup(args.soup, recipe, args.data_dir, args.out or "runs/soup", log=_log, export_to=args.export_to)
        return 0
    if args.federated or args.flower_app:
        from edgefer.train import federated

        cfg = federated.FedConfig(
            clients=args.clients,
            rounds=args.rounds,
            local_epochs=args.local_epochs,
            partition=args.partition,
            alpha=args.alpha,
            dp=args.dp,
            dp_noise=args.dp_noise,
            dp_clip=args.dp_clip,
            threads=args.threads or 1,
        )
        out = args.out or f"runs/{recipe.arch}-federated"
        if args.flower_app:
            path = federated.write_app(
                args.flower_app, recipe, cfg, data_dir=args.data_dir, out=out, export_to=args.export_to
            )
            _log(f"wrote {path}")
        else:
            federated.run(recipe, cfg, args.data_dir, out, log=_log, export_to=args.export_to)
        return 0
    train(
        recipe,
        args.data_dir,
        args.out or f"runs/{recipe.arch}",
        log=_log,
        export_to=args.export_to,
        stop_after=args.stop_after,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
