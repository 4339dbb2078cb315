"""The source paper's perturbation metrics, in numpy, over a model given as a callable.

Every function takes the model as ``f(images) -> probs`` (images ``(N, H, W)`` in [0, 1]), so
each one can be checked by hand on a 2x2 "image". Definitions follow Appendix A of the source
paper (Sensors 2025, 25(23), 7320), which cites RISE (Petsiuk et al., 2018) for insertion /
deletion, and Grad-CAM++ (Chattopadhay et al., 2018) and Mitra et al. (2024) for Average Drop
and Increase in Confidence. Every metric is a mean over images of a per-image value
(:func:`per_image_metrics`), which is what lets the bootstrap in ``explain_stats`` resample
faces and pair maps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

#: ``f(images (N, H, W) float in [0, 1]) -> probabilities (N, classes)``.
ProbFn = Callable[[np.ndarray], np.ndarray]

DEFAULT_STEPS = 16
DEFAULT_THRESHOLD = 0.5
#: What "removed" / "not yet revealed" pixels become: black, as in the paper's Appendix A.1.
DEFAULT_BASELINE = 0.0


def step_counts(n_pixels: int, steps: int) -> np.ndarray:
    """Pixels revealed (insertion) or removed (deletion) at each of ``steps + 1`` curve points.

    Evaluating every pixel (2,304 forward passes per curve) is what the paper's formula
    describes; equal steps keep the same curve shape at a fraction of the cost.
    """
    if steps < 1:
        raise ValueError("steps must be >= 1")
    return np.round(np.linspace(0, n_pixels, steps + 1)).astype(np.int64)


def saliency_ranks(saliencies: np.ndarray) -> np.ndarray:
    """(N, H*W) position of each pixel in descending saliency order, 0 = most salient.

    A stable sort makes ties (flat maps, the shared centre blob) break by raster order, so
    every run perturbs the same pixels.
    """
    s = np.asarray(saliencies, dtype=np.float64)
    flat = s.reshape(s.shape[0], -1)
    order = np.argsort(-flat, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None, :].repeat(flat.shape[0], 0), axis=1)
    return ranks


def _perturb(
    images: np.ndarray, saliencies: np.ndarray, counts: np.ndarray, baseline: float, insert: bool
) -> np.ndarray:
    imgs = np.asarray(images, dtype=np.float32)
    n, h, w = imgs.shape
    ranks = saliency_ranks(saliencies)
    top = ranks[:, None, :] < np.asarray(counts)[None, :, None]  # (N, K, HW): among the first k
    keep_original = top if insert else ~top
    flat = imgs.reshape(n, 1, h * w)
    out = np.where(keep_original, flat, np.float32(baseline))
    return out.reshape(n, len(counts), h, w)


def insertion_images(
    images: np.ndarray, saliencies: np.ndarray, counts: Sequence[int], baseline: float = 0.0
) -> np.ndarray:
    """(N, K, H, W): the ``counts[k]`` most salient pixels of each image shown, the rest at baseline."""
    return _perturb(images, saliencies, np.asarray(counts), baseline, insert=True)


def deletion_images(
    images: np.ndarray, saliencies: np.ndarray, counts: Sequence[int], baseline: float = 0.0
) -> np.ndarray:
    """(N, K, H, W): the ``counts[k]`` most salient pixels of each image set to baseline."""
    return _perturb(images, saliencies, np.asarray(counts), baseline, insert=False)


def _target_conf(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    probs = np.asarray(probs)
    return probs[np.arange(len(targets)), np.asarray(targets)]


def curve_auc(curves: np.ndarray, fractions: np.ndarray | None = None) -> np.ndarray:
    """Trapezoidal area under each curve over the fraction of pixels (0..1).

    Equally spaced fractions unless given; the area then lies in [0, 1] like a probability.
    """
    c = np.atleast_2d(np.asarray(curves, dtype=np.float64))
    x = np.linspace(0.0, 1.0, c.shape[1]) if fractions is None else np.asarray(fractions, dtype=np.float64)
    return ((c[:, 1:] + c[:, :-1]) * np.diff(x)[None, :] / 2.0).sum(axis=1)


def salient_mask(saliencies: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Boolean map of the "important region": saliency at or above ``threshold``."""
    return np.asarray(saliencies) >= threshold


def active_pixel_ratio(saliencies: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """(N,) share of each map's pixels in its important region; smaller means a more compact map."""
    m = salient_mask(saliencies, threshold)
    return m.reshape(m.shape[0], -1).mean(axis=1)


def remove_salient(
    images: np.ndarray, saliencies: np.ndarray, threshold: float = DEFAULT_THRESHOLD, fill: float = DEFAULT_BASELINE
) -> np.ndarray:
    """Images with the important region set to ``fill`` (the input of AD and ADA)."""
    imgs = np.asarray(images, dtype=np.float32)
    return np.where(salient_mask(saliencies, threshold), np.float32(fill), imgs)


def keep_salient(images: np.ndarray, saliencies: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Images with only the important region kept and the rest set to the image's own mean (IC)."""
    imgs = np.asarray(images, dtype=np.float32)
    means = imgs.reshape(imgs.shape[0], -1).mean(axis=1)[:, None, None]
    return np.where(salient_mask(saliencies, threshold), imgs, means).astype(np.float32)


def confidence_drops(full_conf: np.ndarray, removed_conf: np.ndarray, clip: bool = True) -> np.ndarray:
    """(N,) relative drop (y - r) / y of the target confidence.

    ``clip`` applies Grad-CAM++'s max(0, .): the paper's Appendix formula omits it, but
    without it one image whose confidence was near zero and rises after masking outweighs
    thousands of others.
    """
    y = np.asarray(full_conf, dtype=np.float64)
    r = np.asarray(removed_conf, dtype=np.float64)
    d = y - r
    if clip:
        d = np.maximum(d, 0.0)
    return d / np.maximum(y, 1e-12)


def average_drop(full_conf: np.ndarray, removed_conf: np.ndarray, clip: bool = True) -> float:
    """AD: mean relative confidence drop when the important region is removed (higher is better)."""
    return float(confidence_drops(full_conf, removed_conf, clip).mean())


def average_drop_in_accuracy(labels: np.ndarray, pred_full: np.ndarray, pred_removed: np.ndarray) -> float:
    """ADA: mean of 1(correct on the full image) - 1(correct with the important region removed)."""
    t = np.asarray(labels)
    return float(((np.asarray(pred_full) == t).astype(float) - (np.asarray(pred_removed) == t)).mean())


def increase_in_confidence(full_conf: np.ndarray, kept_conf: np.ndarray) -> float:
    """IC: share of images whose confidence rises when only the important region is shown."""
    return float((np.asarray(full_conf) < np.asarray(kept_conf)).mean())


def evaluate_maps(
    f: ProbFn,
    images: np.ndarray,
    saliencies: np.ndarray,
    targets: np.ndarray,
    *,
    steps: int = DEFAULT_STEPS,
    threshold: float = DEFAULT_THRESHOLD,
    baseline: float = DEFAULT_BASELINE,
    full_probs: np.ndarray | None = None,
    chunk: int = 64,
    progress: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Per-image raw quantities behind every metric, in as few forward passes as possible.

    The curves' end points are the full image and the all-baseline image, shared by
    insertion and deletion, so only the interior steps and the two masked images are
    evaluated per map; they go through the model together in large batches.
    """
    images = np.asarray(images, dtype=np.float32)
    targets = np.asarray(targets)
    n, h, w = images.shape
    counts = step_counts(h * w, steps)
    inner = counts[1:-1]
    if full_probs is None:
        full_probs = np.asarray(f(images))
    base_probs = np.asarray(f(np.full((1, h, w), baseline, np.float32)))[0]
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("ins", "del", "removed", "kept")}
    for s in range(0, n, chunk):
        img, sal, tgt = images[s : s + chunk], saliencies[s : s + chunk], targets[s : s + chunk]
        b, m = len(img), len(inner)
        parts = [
            insertion_images(img, sal, inner, baseline).reshape(b * m, h, w),
            deletion_images(img, sal, inner, baseline).reshape(b * m, h, w),
            remove_salient(img, sal, threshold, baseline),
            keep_salient(img, sal, threshold),
        ]
        probs = np.asarray(f(np.concatenate(parts)))
        ins, dele = probs[: b * m].reshape(b, m, -1), probs[b * m : 2 * b * m].reshape(b, m, -1)
        out["ins"].append(ins[np.arange(b), :, tgt])
        out["del"].append(dele[np.arange(b), :, tgt])
        out["removed"].append(probs[2 * b * m : 2 * b * m + b])
        out["kept"].append(probs[2 * b * m + b :])
        if progress:
            progress(b)
    full_conf = _target_conf(full_probs, targets)
    base_conf = base_probs[targets]
    ins_curves = np.concatenate([base_conf[:, None], np.concatenate(out["ins"]), full_conf[:, None]], axis=1)
    del_curves = np.concatenate([full_conf[:, None], np.concatenate(out["del"]), base_conf[:, None]], axis=1)
    removed, kept = np.concatenate(out["removed"]), np.concatenate(out["kept"])
    fractions = counts / (h * w)
    return {
        "ins_curve": ins_curves,
        "del_curve": del_curves,
        "iauc": curve_auc(ins_curves, fractions),
        "dauc": curve_auc(del_curves, fractions),
        "conf_full": full_conf,
        "conf_removed": _target_conf(removed, targets),
        "conf_kept": _target_conf(kept, targets),
        "pred_full": np.argmax(full_probs, axis=1),
        "pred_removed": np.argmax(removed, axis=1),
        "active": active_pixel_ratio(saliencies, threshold),
    }


def per_image_metrics(raw: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric's value per image, from :func:`evaluate_maps` output; a metric is their mean.

    AD is the clipped relative drop, IC whether keeping the region raised the confidence, ADA
    ``1(right on the full image) - 1(right with the region removed)``; resampling these rows
    is all a bootstrap over faces needs.
    """
    t = np.asarray(labels)
    right_full = (raw["pred_full"] == t).astype(np.float64)
    right_removed = (raw["pred_removed"] == t).astype(np.float64)
    return {
        "IAUC": np.asarray(raw["iauc"], np.float64),
        "DAUC": np.asarray(raw["dauc"], np.float64),
        "AD": confidence_drops(raw["conf_full"], raw["conf_removed"]),
        "AD_unclipped": confidence_drops(raw["conf_full"], raw["conf_removed"], clip=False),
        "IC": (np.asarray(raw["conf_full"]) < np.asarray(raw["conf_kept"])).astype(np.float64),
        "ADA": right_full - right_removed,
        "active_pixels": np.asarray(raw["active"], np.float64),
        "accuracy": right_full,
        "masked_accuracy": right_removed,
    }


def summarise(raw: dict[str, np.ndarray], labels: np.ndarray, idx: np.ndarray | None = None) -> dict[str, float]:
    """The paper's metrics over the images ``idx`` (all if None) from :func:`evaluate_maps` output."""
    sel = np.arange(len(labels)) if idx is None else np.asarray(idx)
    if len(sel) == 0:
        return {"n": 0}
    per = per_image_metrics(raw, labels)
    return {"n": len(sel), **{k: float(v[sel].mean()) for k, v in per.items()}}
