"""Which share estimator converges on the truth, chosen on held-out training faces.

The daemon publishes, per window, the share of face-time spent in each emotion. How those
shares are computed from per-face classifier outputs decides how far they sit from the truth
even with a perfect detector, because the classifier's confusions are not symmetric. This
compares the candidates on the material the choice may be made on: the validation tenth of
FER2013's *training* split (never seen in training, never PublicTest), composited into clips
and run through the daemon's own frame path (edgefer.framepath) at its defaults:

- ``confident labels``: argmax labels of faces whose top probability >= 0.4 (the old shares);
- ``labels``: argmax labels of every face;
- ``mean p``: the mean of the probabilities (T = 1);
- ``mean p, T``: the mean after temperature scaling, T fitted (NLL) on the other half;
- ``mean p, T=0.5`` .. ``T=0.2``: the mean after sharper, fixed temperatures, between the mean
  and the labels (benchmarks.mixes, on clips of other mixes, chooses among them);
- ``..., balance 0.5`` and ``balance 1``: the same after dividing each face's probabilities by
  FER2013's training mix to that power (logit adjustment, Menon et al., 2021), which takes the
  training mix's lean out of them (the daemon's ``classifier.balance``);
- ``PACC``: probabilistic adjusted classify-and-count, the mean corrected by the pipeline's
  own mean-probability confusion matrix from the other half;
- ``mean p, EM`` and ``mean p, T, EM``: the maximum-likelihood mix under label shift
  (Saerens, Latinne and Decaestecker's EM, 2002), with and without temperature scaling first
  (as Alexandari et al., 2020, recommend), each face's probabilities re-weighted from the mix
  they lean toward (their mean on half A) to the window's own.

Half A of the validation faces fits T and the confusion matrix; clips of half B (``--seeds``,
``--shots`` faces each, 8 frames per face) score every estimator by L1 to the true mix, over the
whole clip and averaged over its 20-shot windows (few tracks, as a short window on a camera
has), and the published estimator's 95 % intervals by how often they cover it.

    python -m benchmarks.estimators --data-dir ../shared/datasets/fer2013 --out benchmarks/results/estimators
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.margins import validation_faces
from edgefer import LABELS
from edgefer.bench.clip import on_face
from edgefer.bench.clips import composite_frames
from edgefer.config import Config, parse
from edgefer.faces import build_face_stage
from edgefer.framepath import FER2013_TRAIN_MIX, FramePath, TrackMemory, calibrate
from edgefer.mood import share_intervals
from edgefer.service import build_classifier

HOLD = 8
#: sharper temperatures the daemon accepts (0.2 is its floor; labels are the limit T -> 0)
SHARPER = (0.5, 0.35, 0.2)
#: how much of the training mix's lean is taken out (``classifier.balance``) besides none
BALANCES = (0.5, 1.0)
TRAIN_MIX = np.array([FER2013_TRAIN_MIX[lab] for lab in LABELS], float)
#: every (temperature, balance) the daemon accepts that is scored, by the estimator's name
SETTINGS = {
    (f"mean p, T={t:g}" if t != 1 else "mean p") + (f", balance {b:g}" if b else ""): (t, b)
    for b in (0.0, *BALANCES)
    for t in (1.0, *SHARPER)
}


@dataclass
class ClipRun:
    """What the daemon's frame path made of one composited clip."""

    probs: np.ndarray  # (faces, 4): every box on the face shown, as the daemon counts it
    tracks: np.ndarray  # (faces,) the track each of those boxes belongs to
    truth: np.ndarray  # (faces,) the label of the face shown
    shown: np.ndarray  # (frames,) the label of the face each frame shows
    found: np.ndarray  # (frames,) whether a box landed on it
    false: np.ndarray  # (frames,) boxes beyond one on it, or on background
    false_probs: np.ndarray  # (boxes, 4): what the classifier said of the background boxes
    frame: np.ndarray  # (faces,) the frame each of the shown faces' boxes came from

    def counted(self) -> np.ndarray:
        """Every face-frame the daemon would count: the shown faces' boxes and false ones."""
        return np.concatenate([self.probs.reshape(-1, 4), self.false_probs.reshape(-1, 4)])

    def found_per_class(self) -> np.ndarray:
        k = self.probs.shape[1] if len(self.probs) else 4
        return np.bincount(self.shown, weights=self.found, minlength=k) / np.maximum(
            np.bincount(self.shown, minlength=k), 1
        )


def run_clip(images: np.ndarray, labels: np.ndarray, shots: int, seed: int, cfg: Config | None = None) -> ClipRun:
    """Run the daemon's frame path (``cfg``, default its defaults) over a composited clip."""
    cfg = cfg or parse("")
    path = FramePath(build_face_stage(cfg.faces), build_classifier(cfg))
    clip = composite_frames(images, labels, shots * HOLD, seed=seed, hold=HOLD)
    probs, tracks, truth, false_probs, at = [], [], [], [], []
    found = np.zeros(len(clip.frames), bool)
    false = np.zeros(len(clip.frames), int)
    for i, frame in enumerate(clip.frames):
        r = path.process(frame)
        if r.probs is None:
            continue
        refused = r.poor if r.poor is not None else np.zeros(len(r.faces), bool)
        for face, track, p, bad in zip(r.faces, r.tracks, r.probs, refused, strict=True):
            if bad:  # the quality gate's: the daemon does not count it
                continue
            hit = on_face((face.x, face.y, face.w, face.h), clip.boxes[i, 0])
            if hit:
                probs.append(p)
                tracks.append(track)
                truth.append(int(clip.labels[i, 0]))
                at.append(i)
            else:
                false_probs.append(p)
            false[i] += not hit or found[i]  # background, or a second box on the same face
            found[i] |= hit
    arrays = np.array(probs), np.array(tracks), np.array(truth), clip.labels[:, 0], found, false
    return ClipRun(*arrays, np.array(false_probs), np.array(at))


def remembered(probs: np.ndarray, tracks: np.ndarray, weight: float) -> np.ndarray:
    """``probs`` (face-frames in frame order) as the daemon counts them with ``classifier.smoothing``
    = ``weight``: each averaged along its track by the daemon's own :class:`TrackMemory`."""
    memory = TrackMemory(weight)
    return np.concatenate([memory.update(probs[i : i + 1], [int(tracks[i])]) for i in range(len(probs))])


def fit_temperature(probs: np.ndarray, truth: np.ndarray) -> float:
    """The T in 0.3..3 minimising the negative log-likelihood of the true labels."""

    def nll(t: float) -> float:
        q = calibrate(probs, t)
        return float(-np.log(np.clip(q[np.arange(len(truth)), truth], 1e-9, 1)).mean())

    return float(min(np.arange(0.3, 3.001, 0.05), key=nll))


def pacc(mean: np.ndarray, confusion: np.ndarray) -> np.ndarray:
    x = np.clip(np.linalg.lstsq(confusion.T, mean, rcond=None)[0], 0, None)
    return x / x.sum() if x.sum() > 0 else mean


def track_rows(probs: np.ndarray, tracks: np.ndarray) -> np.ndarray:
    ids = np.unique(tracks)
    return np.array([[int((tracks == t).sum()), *probs[tracks == t].sum(axis=0)] for t in ids])


def adjust_prior(tracks: np.ndarray, prior: np.ndarray, *, strength: float = 1.0, iterations: int = 200) -> np.ndarray:
    """Track rows re-weighted to the window's own class mix (Saerens-Latinne-Decaestecker EM).

    A classifier's probabilities carry the class mix it was trained on: averaged over a
    window they lean toward that mix, away from the window's own. EM alternates between the
    window's mix ``pi`` (the weighted mean of the adjusted per-track probabilities) and each
    track's probabilities re-weighted by ``pi / prior``, to the maximum-likelihood mix.
    ``strength`` pseudo-tracks of the plain mean hold small windows near it (one track alone
    would be pushed to a single emotion). Rows are ``[n, sum p_1 .. sum p_k]``, returned in
    the same form, so :func:`share_intervals` reads them unchanged.
    """
    if len(tracks) == 0:
        return tracks
    n = tracks[:, :1]
    mean_p = tracks[:, 1:] / np.maximum(n, 1e-12)
    weights = n[:, 0] / n.sum()
    plain = weights @ mean_p
    ratio = 1.0 / np.maximum(np.asarray(prior, float), 1e-6)
    pi = plain
    for _ in range(iterations):
        q = mean_p * (pi * ratio)
        q /= np.maximum(q.sum(axis=1, keepdims=True), 1e-12)
        new = (len(tracks) * (weights @ q) + strength * plain) / (len(tracks) + strength)
        if np.abs(new - pi).max() < 1e-7:
            pi = new
            break
        pi = new
    q = mean_p * (pi * ratio)
    q /= np.maximum(q.sum(axis=1, keepdims=True), 1e-12)
    return np.c_[n, n * q]


def em_shares(probs: np.ndarray, tracks: np.ndarray, prior: np.ndarray) -> np.ndarray:
    rows = adjust_prior(track_rows(probs, tracks), prior)
    return rows[:, 1:].sum(axis=0) / rows[:, 0].sum()


def estimates(
    probs: np.ndarray, tracks: np.ndarray, t: float, confusion: np.ndarray, prior: np.ndarray, prior_t: np.ndarray
) -> dict[str, np.ndarray]:
    k = probs.shape[1]
    confident = probs.max(axis=1) >= 0.4
    return {
        "confident labels": np.bincount(probs[confident].argmax(1), minlength=k) / max(confident.sum(), 1),
        "labels": np.bincount(probs.argmax(1), minlength=k) / len(probs),
        "mean p, T": calibrate(probs, t).mean(axis=0),
        **{name: calibrate(probs, g, TRAIN_MIX, b).mean(axis=0) for name, (g, b) in SETTINGS.items()},
        "PACC": pacc(probs.mean(axis=0), confusion),
        "mean p, EM": em_shares(probs, tracks, prior),
        "mean p, T, EM": em_shares(calibrate(probs, t), tracks, prior_t),
    }


def fit_half(
    images: np.ndarray, labels: np.ndarray, shots: int, cfg: Config
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """What the estimators fit on half A, from a clip of it through the daemon's path: the
    temperature, the mean-probability confusion matrix, and the mix the model's probabilities
    lean toward (their mean over faces of the training mix), plain and at that temperature."""
    fit = run_clip(images, labels, min(len(images), 3 * shots), seed=100, cfg=cfg)
    pa, ta = fit.probs, fit.truth
    t = fit_temperature(pa, ta)
    confusion = np.array([pa[ta == k].mean(axis=0) for k in range(pa.shape[1])])
    return t, confusion, pa.mean(axis=0), calibrate(pa, t).mean(axis=0)


def window_l1(
    run: ClipRun, shots: int, t: float, confusion: np.ndarray, prior: np.ndarray, prior_t: np.ndarray
) -> dict[str, float]:
    """Mean L1 over consecutive windows of ``shots`` faces shown: how each estimator fares on a short
    window (few tracks), where the EM's mix has little to go on."""
    per_face = np.repeat(np.arange(len(run.shown) // HOLD), HOLD)[: len(run.shown)]
    frame_of_box = run.frame
    out: dict[str, list[float]] = {}
    for start in range(0, per_face.max() + 1 - shots + 1, shots):
        frames = (per_face >= start) & (per_face < start + shots)
        sel = frames[frame_of_box]
        if sel.sum() < 2:
            continue
        truth = np.bincount(run.shown[frames], minlength=4) / frames.sum()
        for name, v in estimates(run.probs[sel], run.tracks[sel], t, confusion, prior, prior_t).items():
            out.setdefault(name, []).append(float(np.abs(v - truth).sum()))
    return {k: float(np.mean(v)) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.estimators", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", help="FER2013 (the validation tenth of its train split is used)")
    p.add_argument("--shots", type=int, default=200, help="faces per evaluation clip")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--model", help="a classifier file in place of the shipped default (a candidate's check)")
    p.add_argument("--out", default="benchmarks/results/estimators")
    args = p.parse_args(argv)
    cfg = parse(f"[classifier]\nmodel = {json.dumps(args.model)}\n" if args.model else "")
    va = validation_faces(args.data_dir)
    order = np.random.default_rng(0).permutation(len(va))
    a, b = order[: len(order) // 2], order[len(order) // 2 :]
    print(f"validation faces: {len(va)}; fitting on {len(a)}, clips from {len(b)}", flush=True)
    t, confusion, prior, prior_t = fit_half(va.images[a], va.labels[a], args.shots, cfg)
    rows, cover = [], []
    for seed in args.seeds:
        run = run_clip(va.images[b], va.labels[b], args.shots, seed, cfg)
        probs, tracks, truth_faces, shown = run.probs, run.tracks, run.truth, run.shown
        truth = np.bincount(shown, minlength=probs.shape[1]) / len(shown)
        l1 = {name: float(np.abs(v - truth).sum())
              for name, v in estimates(probs, tracks, t, confusion, prior, prior_t).items()}  # fmt: skip
        short = window_l1(run, 20, t, confusion, prior, prior_t)
        print("  20-shot windows: " + ", ".join(f"{k} {v:.3f}" for k, v in short.items()), flush=True)
        # the published estimator at the daemon's settings, over the whole clip
        c = cfg.classifier
        daemon = calibrate(remembered(probs, tracks, c.smoothing), c.temperature, TRAIN_MIX, c.balance)
        _, lo, hi = share_intervals(track_rows(daemon, tracks))
        found_mix = np.bincount(truth_faces, minlength=probs.shape[1]) / len(truth_faces)
        cover.append({
            "shown": ((lo <= truth) & (truth <= hi)).tolist(),
            "found": ((lo <= found_mix) & (found_mix <= hi)).tolist(),
        })  # fmt: skip
        found = run.found_per_class()
        interval = np.c_[lo, hi].round(4).tolist()
        rows.append({"seed": seed, "faces": len(probs), "tracks": len(np.unique(tracks)), "l1": l1, "l1_20": short,
                     "found_per_class": found.round(3).tolist(), "interval": interval})  # fmt: skip
        print(f"seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in l1.items()), flush=True)
    mean = {k: float(np.mean([r["l1"][k] for r in rows])) for k in rows[0]["l1"]}
    shown_cov = float(np.mean([c["shown"] for c in cover]))
    found_cov = float(np.mean([c["found"] for c in cover]))
    result = {"temperature_fitted": t, "confusion": confusion.round(4).tolist(), "clips": rows, "mean_l1": mean,
              "coverage": {"shown": shown_cov, "found": found_cov}, "shots": args.shots}  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    md = [f"Temperature fitted on half A: T = {t:.2f}", "", "| estimator | mean L1 | " + " | ".join(
        f"seed {r['seed']}" for r in rows) + " |", "|---|---|" + "---|" * len(rows)]  # fmt: skip
    md += [f"| {k} | {v:.3f} | " + " | ".join(f"{r['l1'][k]:.3f}" for r in rows) + " |" for k, v in mean.items()]
    md += ["", "The same, averaged over each clip's 20-shot windows:", "", md[2], md[3]]
    md += [
        f"| {k} | {np.mean([r['l1_20'][k] for r in rows]):.3f} | "
        + " | ".join(f"{r['l1_20'][k]:.3f}" for r in rows)
        + " |"
        for k in mean
    ]
    found_rates = " / ".join(",".join(f"{v:.2f}" for v in r["found_per_class"]) for r in rows)
    md += [
        "",
        f"The published estimator (the daemon's smoothing, balance and temperature) over each whole clip: its 95 % "
        f"intervals hold the true mix of the faces shown for {shown_cov:.0%} of (clip, emotion) pairs, and the true "
        f"mix of the faces the detector found for {found_cov:.0%}. The gap is the detector: share of each emotion's "
        f"frames in which its face was found (angry, happy, sad, neutral; per seed): {found_rates}.",
    ]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
