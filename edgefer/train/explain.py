"""``edgefer-explain``: Grad-CAM++ explanations of edgefer's models, judged with the source
paper's perturbation metrics, beside two baseline maps, with bootstrap intervals.

The pieces live in modules of their own: the numpy metrics in ``explain_metrics``, the maps
(Grad-CAM++ and the baselines) in ``explain_maps``, sampling and the paired bootstrap in
``explain_stats``, tables and figures in ``explain_report``. This module runs them in order and
keeps the names the pieces had when they lived here, so ``from edgefer.train.explain import
...`` keeps working. docs/explainability.md states every choice the paper leaves open
(threshold of the important region, fill values, step size, target class), why the baseline
maps are area-matched, and how the intervals are drawn.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgefer import LABELS
from edgefer.train.explain_maps import (
    BLOCKS,
    CENTRE_SIGMA,
    GradCamPlusPlus,
    centre_maps,
    default_blocks,
    gradcampp_map,
    keras_prob_fn,
    match_active_ratio,
    normalise_maps,
    one_view,
    random_maps,
    resolve_layer,
)
from edgefer.train.explain_metrics import (
    DEFAULT_BASELINE,
    DEFAULT_STEPS,
    DEFAULT_THRESHOLD,
    ProbFn,
    active_pixel_ratio,
    average_drop,
    average_drop_in_accuracy,
    confidence_drops,
    curve_auc,
    deletion_images,
    evaluate_maps,
    increase_in_confidence,
    insertion_images,
    keep_salient,
    per_image_metrics,
    remove_salient,
    saliency_ranks,
    salient_mask,
    step_counts,
    summarise,
)
from edgefer.train.explain_report import (
    COLUMNS,
    LITERATURE,
    Progress,
    class_counts,
    curves_png,
    markdown_report,
    method_results,
    overlay_png,
    pick_overlay,
)
from edgefer.train.explain_stats import paired_bootstrap, stratified_sample

__all__ = [
    "BLOCKS",
    "CENTRE_SIGMA",
    "COLUMNS",
    "DEFAULT_BASELINE",
    "DEFAULT_STEPS",
    "DEFAULT_THRESHOLD",
    "LITERATURE",
    "GradCamPlusPlus",
    "ProbFn",
    "Progress",
    "active_pixel_ratio",
    "average_drop",
    "average_drop_in_accuracy",
    "centre_maps",
    "confidence_drops",
    "curve_auc",
    "curves_png",
    "default_blocks",
    "deletion_images",
    "evaluate_maps",
    "gradcampp_map",
    "increase_in_confidence",
    "insertion_images",
    "keep_salient",
    "keras_prob_fn",
    "main",
    "markdown_report",
    "match_active_ratio",
    "method_results",
    "normalise_maps",
    "one_view",
    "overlay_png",
    "paired_bootstrap",
    "parser",
    "per_image_metrics",
    "random_maps",
    "remove_salient",
    "resolve_layer",
    "saliency_ranks",
    "salient_mask",
    "step_counts",
    "stratified_sample",
    "summarise",
]

#: Bootstrap resamples by default: enough that the ends of a 95 % interval move by well under
#: a tenth of its width between seeds.
DEFAULT_RESAMPLES = 10_000


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edgefer-explain",
        description="Grad-CAM++ maps of a trained model per conv block and the source paper's perturbation "
        "metrics (IAUC, DAUC, AD, IC, ADA, active pixels) on FER2013 PublicTest, beside random and "
        "centre-blob baselines.",
    )
    p.add_argument("--model", required=True, help="trained Keras model (.keras)")
    p.add_argument("--data-dir", help="folder holding test/<class>/*.jpg, or fer2013.csv")
    p.add_argument("--out", default="explain", help="output folder (default: %(default)s)")
    p.add_argument("--limit-per-class", type=int, help="random images per emotion, for a quick run (default: all)")
    p.add_argument(
        "--blocks",
        help="conv blocks to explain, comma-separated (default: fb1,fb2,fb3 where the model has them, as paper and "
        "edgefer do, else the last ReLU at each of its three deepest resolutions: s2b,s3c,s4b for edgefer-dense)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling, random maps and overlay choice")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="points per curve (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="saliency of the important region")
    p.add_argument("--target", choices=("true", "predicted"), default="true", help="class explained and scored")
    p.add_argument("--overlays", type=int, default=8, help="faces per overlay grid (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    p.add_argument(
        "--baseline-limit-per-class",
        type=int,
        default=100,
        help="images per emotion for the random and centre-blob maps (0: all; default: %(default)s)",
    )
    p.add_argument("--no-baselines", action="store_true", help="skip the random and centre-blob maps")
    p.add_argument(
        "--bootstrap",
        type=int,
        default=DEFAULT_RESAMPLES,
        help="bootstrap resamples of the faces for the 95 %% intervals and paired differences "
        "(0: no intervals; default: %(default)s)",
    )
    return p


class UsageError(Exception):
    """Bad input to the command: printed with the program's name, exit status 2."""


@dataclass
class Evaluation:
    """What one run computed: the faces, the model's answers, the maps and their raw metrics."""

    labels: np.ndarray
    full_probs: np.ndarray
    targets: np.ndarray
    maps: dict[str, np.ndarray]
    base_idx: np.ndarray
    black: np.ndarray
    grid: tuple[int, int] | None = None
    raws: dict[str, tuple[dict[str, np.ndarray], np.ndarray]] = field(default_factory=dict)


def _blocks_arg(args: argparse.Namespace) -> list[str] | None:
    """The blocks asked for, after checking every numeric option (UsageError names the option)."""
    blocks = None if args.blocks is None else [b.strip() for b in args.blocks.split(",") if b.strip()]
    if blocks == []:
        raise UsageError("--blocks names no block")
    if args.steps < 2 or not 0.0 < args.threshold <= 1.0:
        raise UsageError("--steps must be >= 2 and --threshold in (0, 1]")
    if args.limit_per_class is not None and args.limit_per_class < 1:
        raise UsageError("--limit-per-class must be >= 1")
    if args.baseline_limit_per_class < 0:
        raise UsageError("--baseline-limit-per-class must be >= 0")
    if args.bootstrap < 0:
        raise UsageError("--bootstrap must be >= 0")
    return blocks


def _load_model(path: Path, blocks: list[str] | None) -> tuple[Any, Any, dict[str, str]]:
    """(the network as saved, the view explained, block -> layer), or UsageError saying why not."""
    try:
        from edgefer.train.models import load  # Keras, which the train extra brings
    except ImportError as exc:
        raise UsageError("needs the train extra: pip install 'edgefer[train]'") from exc
    if not path.is_file():
        raise UsageError(f"{path}: no such model file")
    try:
        saved = load(path)
    except Exception as exc:  # Keras raises many types for a bad archive
        raise UsageError(f"{path}: cannot load model ({exc})") from exc
    model = one_view(saved)
    if model is not saved:
        print(f"{saved.name}: mirrored network; explaining its trunk on the face as given", file=sys.stderr)
    try:
        layers = {b: resolve_layer(model, b) for b in blocks or default_blocks(model)}
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    n_out = int(model.outputs[0].shape[-1])
    if n_out != len(LABELS):
        raise UsageError(f"{path}: model has {n_out} outputs, expected {len(LABELS)} ({', '.join(LABELS)})")
    return saved, model, layers


def _evaluate(
    args: argparse.Namespace, model: Any, layers: dict[str, str], x: np.ndarray, labels: np.ndarray
) -> Evaluation:
    """Grad-CAM++ maps of every block on every face, the baselines on a stratified subset, and
    the raw quantities of every metric for each map."""
    f = keras_prob_fn(model, args.batch_size)
    full_probs = f(x)
    targets = labels if args.target == "true" else full_probs.argmax(axis=1)
    black = f(np.full((1, *x.shape[1:]), DEFAULT_BASELINE, np.float32))[0]
    print(f"  accuracy on these images: {(full_probs.argmax(1) == labels).mean():.3f}", file=sys.stderr)
    blocks, n = list(layers), len(x)
    cam = GradCamPlusPlus(model, list(layers.values()))
    grad_maps = cam(x, targets, progress=Progress("Grad-CAM++ " + "+".join(blocks), n))
    maps = {f"gradcam++/{b}": grad_maps[layers[b]] for b in blocks}
    base_idx = stratified_sample(labels, args.baseline_limit_per_class or None, args.seed + 1)
    ev = Evaluation(labels, full_probs, targets, maps, base_idx, black)
    print(
        f"  perturbation metrics: {2 * (args.steps - 1) + 2} forward passes per image and map, {len(blocks)} x {n} "
        f"Grad-CAM++ maps + 2 x {0 if args.no_baselines else len(base_idx)} baseline maps",
        file=sys.stderr,
    )

    def run(sal: np.ndarray, idx: np.ndarray, method: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
        kw = {"steps": args.steps, "threshold": args.threshold, "full_probs": full_probs[idx]}
        return evaluate_maps(f, x[idx], sal, targets[idx], progress=Progress(method, len(idx)), **kw), idx

    for method, sal in maps.items():
        ev.raws[method] = run(sal, np.arange(n), method)
    if not args.no_baselines:
        area = active_pixel_ratio(maps[f"gradcam++/{blocks[-1]}"][base_idx], args.threshold)
        ev.grid = tuple(int(d) for d in model.get_layer(layers[blocks[-1]]).output.shape[1:3])
        size = x.shape[1:3]
        for name, sal in (
            ("random", random_maps(len(base_idx), size, args.seed, ev.grid)),
            ("centre", centre_maps(len(base_idx), size)),
        ):
            ev.raws[name] = run(match_active_ratio(sal, area, args.threshold), base_idx, name)
    return ev


def _results(args: argparse.Namespace, ev: Evaluation) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per-method results on the faces each map saw, and every map on the baseline faces, each
    with bootstrap intervals; the comparison also with Grad-CAM++ minus each baseline."""
    labels, n = ev.labels, len(ev.labels)
    results = {m: method_results(raw, labels[idx]) for m, (raw, idx) in ev.raws.items()}
    # Baselines and Grad-CAM++ side by side on the same images, so the averages compare.
    on_base = {
        m: {k: v[ev.base_idx] for k, v in raw.items()} if len(idx) == n else raw for m, (raw, idx) in ev.raws.items()
    }
    comparison = {m: method_results(raw, labels[ev.base_idx]) for m, raw in on_base.items()}
    if args.bootstrap:
        kw = {"n_boot": args.bootstrap, "seed": args.seed + 2}
        for m, (raw, idx) in ev.raws.items():
            per = {m: per_image_metrics(raw, labels[idx])}
            results[m]["all"]["ci95"] = paired_bootstrap(per, labels[idx], [], **kw)["maps"][m]
        base_labels = labels[ev.base_idx]
        per = {m: per_image_metrics(raw, base_labels) for m, raw in on_base.items()}
        grads = [m for m in per if m.startswith("gradcam++")]
        pairs = [(g, b) for g in grads for b in per if not b.startswith("gradcam++")]
        boot = paired_bootstrap(per, base_labels, pairs, **kw)
        for m, ci in boot["maps"].items():
            comparison[m]["all"]["ci95"] = ci
        return results, {"results": comparison, "differences": boot["differences"]}
    return results, {"results": comparison}


def _figures(
    out: Path,
    args: argparse.Namespace,
    ev: Evaluation,
    images: np.ndarray,
    layers: dict[str, str],
    comparison: dict[str, Any],
    name: str,
) -> list[str]:
    """Overlay grids per block and emotion, and the mean curves of every map; their paths."""
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    preds, pngs = ev.full_probs.argmax(axis=1), []
    for i, emotion in enumerate(LABELS):
        pick = pick_overlay(ev.labels, preds, i, args.overlays, rng)
        if len(pick) == 0:
            continue
        titles = [f"{LABELS[preds[j]]} {ev.full_probs[j, i]:.2f}" for j in pick]
        for b, layer in layers.items():
            path = out / "overlays" / f"{b}_{emotion}.png"
            suptitle = f"Grad-CAM++ {b.upper()} ({layer}), true {emotion}; title: predicted, p({emotion})"
            overlay_png(images[pick], ev.maps[f"gradcam++/{b}"][pick], titles, path, suptitle)
            pngs.append(str(path.relative_to(out)))
    curves = {m: res["curves"]["all"] for m, res in comparison.items()}
    curves_png(curves, out / "curves.png", f"{name}: mean insertion / deletion curves, {len(ev.base_idx)} images")
    return [*pngs, "curves.png"]


def _settings(args: argparse.Namespace, ev: Evaluation, blocks: list[str]) -> dict[str, Any]:
    """Every choice that shapes the numbers, so metrics.json alone says how they were made."""
    return {
        "steps": args.steps,
        "threshold": args.threshold,
        "baseline": DEFAULT_BASELINE,
        "kept_fill": "image mean",
        "target": args.target,
        "seed": args.seed,
        "limit_per_class": args.limit_per_class,
        "baseline_limit_per_class": args.baseline_limit_per_class or None,
        "centre_sigma_px": CENTRE_SIGMA,
        "ad_clipped": True,
        "baselines_area_matched_to": None if args.no_baselines else blocks[-1],
        "random_grid": None if ev.grid is None else list(ev.grid),
        "baseline_image_probs": dict(zip(LABELS, map(float, ev.black), strict=True)),
        "bootstrap": None
        if not args.bootstrap
        else {
            "resamples": args.bootstrap,
            "level": 0.95,
            "seed": args.seed + 2,
            "method": "percentile; faces resampled with replacement within each true emotion; "
            "the same resamples for every map (paired)",
        },
    }


def _print_summary(results: dict[str, Any]) -> None:
    """One line per map on stderr, so a long run shows its figures before the files are written."""
    for m, res in results.items():
        a = res["all"]
        print(
            f"  {m}: IAUC {a['IAUC']:.3f} DAUC {a['DAUC']:.3f} AD {a['AD']:.3f} IC {a['IC']:.3f} "
            f"ADA {a['ADA']:.3f} active {a['active_pixels']:.3f} ({a['n']} images)",
            file=sys.stderr,
        )


def main(argv: list[str] | None = None) -> int:
    """Explain a model on FER2013 PublicTest; write table.md, metrics.json and PNGs into ``--out``."""
    args = parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from edgefer.datasets import DatasetError, load_fer2013

    model_path = Path(args.model)
    try:
        saved, model, layers = _load_model(model_path, _blocks_arg(args))
        data = load_fer2013(args.data_dir, "test")
    except (UsageError, DatasetError) as exc:
        print(f"edgefer-explain: {exc}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    data = data.subset(stratified_sample(data.labels, args.limit_per_class, args.seed))
    x = data.images.astype(np.float32) / 255.0
    print(f"{model.name}: {len(x)} FER2013 PublicTest images {data.class_counts()}, blocks {layers}", file=sys.stderr)
    ev = _evaluate(args, model, layers, x, data.labels)
    results, comparison = _results(args, ev)
    _print_summary(results)
    out = Path(args.out)
    pngs = _figures(out, args, ev, data.images, layers, comparison["results"], model.name)
    report: dict[str, Any] = {
        "model": {"name": saved.name, "file": model_path.name, "params": int(saved.count_params())},
        "explained": "the trunk, one of the two views it averages" if model is not saved else "the network",
        "dataset": {
            "name": "FER2013 PublicTest",
            "n": len(x),
            "counts": class_counts(data.labels),
            "accuracy": float((ev.full_probs.argmax(1) == data.labels).mean()),
        },
        "settings": _settings(args, ev, list(layers)),
        "layers": layers,
        "literature": {k: list(v) for k, v in LITERATURE.items()},
        "results": results,
        "comparison": {"n": len(ev.base_idx), "counts": class_counts(data.labels[ev.base_idx]), **comparison},
        "figures": pngs,
        "elapsed_s": round(time.monotonic() - t0, 1),
    }
    table = markdown_report(report)
    out.joinpath("table.md").write_text(table)
    out.joinpath("metrics.json").write_text(json.dumps(report, indent=2))
    print(table)
    print(
        f"wrote {out / 'table.md'}, {out / 'metrics.json'} and {len(pngs)} PNGs in {report['elapsed_s']} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
