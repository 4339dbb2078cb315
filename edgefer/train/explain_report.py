"""The explanation report: tables (Markdown), per-method results (JSON) and figures (PNG).

Tables are shaped like the source paper's Table 10 (emotions as rows, metrics as columns) with
the literature ranges it quotes, and carry the bootstrap intervals of ``explain_stats`` beside
every mean and a win / tie / loss verdict for each paired difference against a baseline.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgefer import LABELS
from edgefer.figures import pyplot, save
from edgefer.train.explain_metrics import summarise

#: Ranges the paper quotes from the literature (AD, IC from Grad-CAM++; IAUC, DAUC from Gomez et al. 2022).
LITERATURE: dict[str, tuple[float, float]] = {
    "AD": (0.195, 0.598),
    "IC": (0.067, 0.191),
    "IAUC": (0.16, 0.49),
    "DAUC": (0.016, 0.296),
}
#: Table columns: key, heading, True if higher is better.
COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("IAUC", "IAUC", True),
    ("DAUC", "DAUC", False),
    ("AD", "AD", True),
    ("IC", "IC", True),
    ("ADA", "ADA", True),
    ("active_pixels", "Active pixels", False),
    ("masked_accuracy", "Acc. after masking", False),
)


class Progress:
    """Count-down lines on stderr at most every few seconds: the evaluation takes minutes."""

    def __init__(self, label: str, total: int, every: float = 5.0) -> None:
        self.label, self.total, self.every = label, total, every
        self.done = 0
        self.start = self.last = time.monotonic()

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every or self.done >= self.total:
            self.last = now
            elapsed = now - self.start
            eta = elapsed / max(self.done, 1) * (self.total - self.done)
            pct = 100.0 * self.done / max(self.total, 1)
            print(
                f"  {self.label}: {self.done}/{self.total} ({pct:.0f} %), {elapsed:.0f} s, ~{eta:.0f} s left",
                file=sys.stderr,
                flush=True,
            )


def _probs(p: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in sorted(p.items(), key=lambda kv: -kv[1]))


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def _with_ci(row: dict[str, Any], key: str) -> str:
    """``mean [low, high]`` where the row has an interval for ``key``, else the mean alone."""
    ci = row.get("ci95", {}).get(key)
    return _fmt(row.get(key)) if ci is None else f"{row[key]:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def _title(method: str) -> str:
    return f"Grad-CAM++ {method.split('/', 1)[1].upper()}" if method.startswith("gradcam++") else method


def _heads() -> tuple[str, str]:
    heads = " | ".join(f"{h} {'↑' if up else '↓'}" for _, h, up in COLUMNS)
    lit = " | ".join(
        f"{LITERATURE[k][0]:.3f}–{LITERATURE[k][1]:.3f}" if k in LITERATURE else "—" for k, _, _ in COLUMNS
    )
    return heads, lit


def _header_lines(report: dict[str, Any]) -> list[str]:
    s, d = report["settings"], report["dataset"]
    boot = s.get("bootstrap")
    ci = (
        f" Intervals: {100 * boot['level']:g} % percentile bootstrap over faces ({boot['resamples']} resamples "
        f"drawn within each true emotion, the same resamples for every map), shown as [low, high]."
        if boot
        else ""
    )
    return [
        f"# Grad-CAM++ explainability: {report['model']['name']} on {d['name']}",
        "",
        f"{d['n']} images ({', '.join(f'{k} {v}' for k, v in d['counts'].items())}); "
        f"model accuracy on them {d['accuracy']:.3f}. Target class: {s['target']} label. "
        f"Curves: {s['steps']} steps of 1/{s['steps']} of the pixels, removed pixels = {s['baseline']:g}; "
        f"important region: normalised saliency >= {s['threshold']:g} (removed for AD/ADA, kept on the "
        f"image mean for IC). The all-black image, where insertion starts and deletion ends, is "
        f"classified {_probs(s['baseline_image_probs'])}. ↑ / ↓: higher / lower is better.{ci}",
        "",
    ]


def _block_lines(report: dict[str, Any]) -> list[str]:
    """One table per Grad-CAM++ block, emotions as rows, the interval of the All row below it."""
    heads, lit = _heads()
    lines: list[str] = []
    for method, res in report["results"].items():
        if not method.startswith("gradcam++"):
            continue
        block = method.split("/", 1)[1]
        lines += [
            f"## Grad-CAM++ at {block.upper()} (layer `{report['layers'][block]}`)",
            "",
            f"| Emotion | {heads} | n |",
            f"|{'|'.join(['---'] * (len(COLUMNS) + 2))}|",
        ]
        for name in (*LABELS, "all"):
            row = res[name]
            label = "**All**" if name == "all" else name.capitalize()
            lines.append(f"| {label} | {' | '.join(_fmt(row.get(k)) for k, _, _ in COLUMNS)} | {row['n']} |")
        ci = res["all"].get("ci95")
        if ci:
            cells = " | ".join(f"{ci[k][0]:.3f}–{ci[k][1]:.3f}" if k in ci else "—" for k, _, _ in COLUMNS)
            lines.append(f"| All, 95 % interval | {cells} | |")
        lines += [f"| Literature range | {lit} | |", ""]
    return lines


def _comparison_lines(report: dict[str, Any]) -> list[str]:
    """Every map on the baseline faces with intervals, then Grad-CAM++ minus each baseline."""
    comp, s = report["comparison"], report["settings"]
    if not any(not m.startswith("gradcam++") for m in comp["results"]):
        return []
    heads, lit = _heads()
    counts = ", ".join(f"{k} {v}" for k, v in comp["counts"].items())
    lines = [
        f"## Against baseline saliency maps ({comp['n']} images: {counts})",
        "",
        f"Random noise on a {'x'.join(map(str, s['random_grid']))} grid (upsampled) and a centre blob, "
        f"each re-valued per image so that its important region has "
        f"the area of Grad-CAM++ {s['baselines_area_matched_to'].upper()}'s for that face (same pixel "
        f"order, so the same curves); all rows on the same images.",
        "",
        f"| Map | {heads} |",
        f"|{'|'.join(['---'] * (len(COLUMNS) + 1))}|",
    ]
    for method, res in comp["results"].items():
        lines.append(f"| {_title(method)} | {' | '.join(_with_ci(res['all'], k) for k, _, _ in COLUMNS)} |")
    lines += [f"| Literature range | {lit} |", ""]
    diffs = comp.get("differences")
    if diffs:
        judged = [k for k, _, _ in COLUMNS if k in next(iter(diffs.values()))]
        judged_heads = " | ".join(f"{h} {'↑' if up else '↓'}" for k, h, up in COLUMNS if k in judged)
        lines += [
            "### Paired differences, Grad-CAM++ minus baseline",
            "",
            "Mean per-face difference with its interval; **win** / **loss**: the interval lies wholly on the "
            "better / worse side of 0 (↑: above, ↓: below), **tie**: it contains 0. The baselines' regions "
            f"have {s['baselines_area_matched_to'].upper()}'s area, so at the other blocks AD, IC and ADA compare "
            "regions of different sizes.",
            "",
            f"| Difference | {judged_heads} |",
            f"|{'|'.join(['---'] * (len(judged) + 1))}|",
        ]
        for pair, row in diffs.items():
            a, b = pair.split(" - ")
            cells = [
                f"{row[k]['estimate']:+.3f} [{row[k]['ci'][0]:+.3f}, {row[k]['ci'][1]:+.3f}] {row[k]['verdict']}"
                for k in judged
            ]
            lines.append(f"| {_title(a)} − {b} | {' | '.join(cells)} |")
        lines.append("")
    return lines


def markdown_report(report: dict[str, Any]) -> str:
    """Per-emotion tables shaped like the paper's Table 10, then the baseline comparison."""
    lines = _header_lines(report) + _block_lines(report) + _comparison_lines(report)
    lines += [
        "AD uses Grad-CAM++'s max(0, ·) per image; the unclipped mean of the paper's Appendix "
        "formula is in the JSON as `AD_unclipped`.",
        "",
    ]
    return "\n".join(lines + _file_lines(report))


def _file_lines(report: dict[str, Any]) -> list[str]:
    """Links to every file the run wrote beside the table, so each is one click from it."""
    figures = report.get("figures", [])
    overlays = [p for p in figures if p.startswith("overlays/")]
    lines = ["## Files", "", "- every figure above, and the per-emotion curves: [metrics.json](metrics.json)"]
    if "curves.png" in figures:
        lines.append("- mean insertion and deletion curves of every map: [curves.png](curves.png)")
    if overlays:
        links = ", ".join(f"[{Path(p).stem}]({p})" for p in overlays)
        lines.append(f"- heat maps over faces of each true emotion, per block: {links}")
    return [*lines, ""]


def method_results(raw: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, Any]:
    """Metrics per emotion, over all images and as the mean over emotions, plus mean curves."""
    res: dict[str, Any] = {name: summarise(raw, labels, np.flatnonzero(labels == i)) for i, name in enumerate(LABELS)}
    res["all"] = summarise(raw, labels)
    present = [c for c in LABELS if res[c]["n"]]
    res["macro"] = {k: float(np.mean([res[c][k] for c in present])) for k in res["all"] if k != "n"}
    res["macro"]["n"] = res["all"]["n"]
    groups = {name: labels == i for i, name in enumerate(LABELS)} | {"all": np.ones(len(labels), bool)}
    res["curves"] = {
        name: {
            "insertion": raw["ins_curve"][sel].mean(axis=0).tolist(),
            "deletion": raw["del_curve"][sel].mean(axis=0).tolist(),
        }
        for name, sel in groups.items()
        if sel.any()
    }
    return res


def class_counts(labels: np.ndarray) -> dict[str, int]:
    """Images per emotion, by name."""
    return {name: int((labels == i).sum()) for i, name in enumerate(LABELS)}


def overlay_png(
    faces: np.ndarray, maps: np.ndarray, titles: Sequence[str], path: str | Path, suptitle: str, cols: int = 4
) -> Path:
    """A grid of faces with their heat maps laid over them."""
    plt = pyplot()
    n = len(faces)
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.7, rows * 1.9 + 0.3), dpi=110, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(faces[i], cmap="gray", vmin=0, vmax=255)
            ax.imshow(maps[i], cmap="jet", alpha=0.45, vmin=0, vmax=1)
            ax.set_title(titles[i], fontsize=7)
    fig.suptitle(suptitle, fontsize=9)
    return save(fig, path)


def curves_png(curves: dict[str, dict[str, list[float]]], path: str | Path, title: str) -> Path:
    """Mean insertion and deletion curves of every map, side by side."""
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=110)
    for method, c in curves.items():
        for key, ax in (("insertion", a), ("deletion", b)):
            y = np.asarray(c[key])
            ax.plot(np.linspace(0, 1, len(y)), y, label=method)
    for key, ax in (("insertion", a), ("deletion", b)):
        ax.set_xlabel(f"fraction of pixels {'revealed' if key == 'insertion' else 'removed'}")
        ax.set_ylabel("target-class confidence")
        ax.set_title(key, fontsize=9)
        ax.grid(alpha=0.3)
    a.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return save(fig, path)


def pick_overlay(labels: np.ndarray, preds: np.ndarray, cls: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``k`` faces of true class ``cls`` for an overlay grid: correctly classified faces
    first, as the paper shows them; others only to fill the grid."""
    idx = np.flatnonzero(labels == cls)
    right = rng.permutation(idx[preds[idx] == cls])
    wrong = rng.permutation(idx[preds[idx] != cls])
    return np.concatenate([right, wrong])[:k].astype(np.int64)
