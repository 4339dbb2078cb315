"""The Markdown of every mode's result, from the result alone (a run's or a saved JSON's)."""

from __future__ import annotations

from typing import Any

from edgefer import LABELS
from edgefer.bench.host import cpu_label
from edgefer.bench.stats import K

# -- cells -----------------------------------------------------------------------------------


def num(v: float | None, fmt: str = "{:.2f}") -> str:
    return "–" if v is None else fmt.format(v)


def pm(d: dict[str, Any] | None, fmt: str = "{:.2f}") -> str:
    """``mean ± std`` of a :func:`edgefer.bench.stats.mean_std` dict."""
    if not d or d.get("mean") is None:
        return "–"
    return f"{fmt.format(d['mean'])} ± {fmt.format(d.get('std', 0.0))}"


def pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def share_cells(b: dict[str, Any]) -> str:
    """A Markdown row's share cells: each class's share, with its interval where there is one."""
    cells = [
        f"{b['shares'][lab]:.3f}" + (f" [{b['ci95'][lab][0]:.3f}, {b['ci95'][lab][1]:.3f}]" if "ci95" in b else "")
        for lab in LABELS
    ]
    return " | ".join(cells)


def truth_cells(mix: dict[str, float]) -> str:
    return " | ".join(f"{mix[lab]:.3f}" for lab in LABELS)


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table's lines."""
    return [
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def notes(result: dict[str, Any]) -> list[str]:
    return ["", "Notes:", "", *(f"- {n}" for n in result["notes"])]


def unmeasured_notes(result: dict[str, Any]) -> list[str]:
    """The notes on peers that were asked for and could not be measured."""
    return [f"Peer {p['name']} not measured: {p['reason']}." for p in result.get("peers_not_measured", [])]


# -- dataset mode ----------------------------------------------------------------------------


def _dataset_rows(result: dict[str, Any]) -> list[list[str]]:
    p = result["paper"]
    models = result["models"]
    mem = [m.get("memory") or {} for m in models]
    cores = result["host"]["cores_usable"]
    split = result["dataset"]["split"]
    return [
        [
            "latency per image, ms (mean ± std)",
            f"{p['latency_ms_mean']:.2f} ± {p['latency_ms_std']:.2f}",
            *(pm(m["latency_ms"]) for m in models),
        ],
        [
            "latency median / p95, ms",
            "–",
            *(f"{m['latency_ms']['median']:.2f} / {m['latency_ms']['p95']:.2f}" for m in models),
        ],
        ["throughput, FPS (1000 / mean)", f"{p['fps']:.2f}", *(num(m["fps"], "{:.1f}") for m in models)],
        [
            "CPU, % of one core (mean ± std)",
            f"{p['cpu_percent_mean']:.2f} ± {p['cpu_percent_std']:.2f}",
            *(pm(m["cpu_percent_one_core"], "{:.1f}") for m in models),
        ],
        [f"CPU, % of all {cores} cores", "–", *(num(m["cpu_percent_all_cores"], "{:.1f}") for m in models)],
        ["peak memory, MB", f"{p['peak_memory_mb']:.2f}", *(num(x.get("peak_rss_mb"), "{:.1f}") for x in mem)],
        [
            "runtime memory overhead, MB",
            f"{p['runtime_overhead_mb']:.2f}",
            *(num(x.get("runtime_overhead_mb"), "{:.2f}") for x in mem),
        ],
        ["accuracy, 4 classes", f"{100 * p['accuracy']:.1f} %", *(f"{100 * m['accuracy']:.1f} %" for m in models)],
        ["macro-F1", "–", *(f"{m['macro_f1']:.3f}" for m in models)],
        [
            "recall " + " / ".join(LABELS),
            "–",
            *(" / ".join(f"{m['recall'][lab]:.2f}" for lab in LABELS) for m in models),
        ],
        ["storage, MB", f"{p['storage_mb']:.1f}", *(f"{m['storage_mb']:.2f}" for m in models)],
        ["quantisation", "n/r", *(m.get("quantization", "–") for m in models)],
        ["threads", "n/r", *(str(m["threads"]) for m in models)],
        ["runtime", "TFLite", *(m["runtime"] for m in models)],
        ["images scored", "FER2013 test", *(f"{m['images']} ({split})" for m in models)],
    ]


def _paired_text(r: dict[str, Any]) -> str:
    if "sign_test_p" not in r:  # results saved before paired counts were kept
        return ""
    return (
        f" (right only on one: {r['only_numerator_right']} / {r['only_denominator_right']} faces, "
        f"sign test p = {r['sign_test_p']:.2g})"
    )


def _ratio_lines(result: dict[str, Any]) -> list[str]:
    if not result.get("ratios"):
        return []
    out = ["Ratios measured side by side in this run (latency per round: mean ± std over rounds):", ""]
    for r in result["ratios"]:
        out.append(
            f"- {r['what']}: {r['numerator']} / {r['denominator']} @{r['threads']}t — latency x"
            f"{r['latency_ratio_median']:.2f} (medians), x{pm(r['latency_ratio_per_round'])} per round; "
            f"size x{r['size_ratio']:.2f}; accuracy {100 * r['accuracy_difference']:+.1f} points" + _paired_text(r)
        )
    return [*out, ""]


def _sweep_lines(m: dict[str, Any]) -> list[str]:
    if not m.get("thread_sweep"):
        return []
    out = [f"Thread sweep, {m['name']}:", ""]
    out += table(["threads", "latency ms (mean ± std)", "median / p95", "FPS", "CPU % of one core"], [])
    for s in m["thread_sweep"]:
        lat = s["latency_ms"]
        out.append(
            f"| {s['threads']} | {pm(lat)} | {lat['median']:.2f} / {lat['p95']:.2f} | "
            f"{num(s['fps'], '{:.1f}')} | {pm(s['cpu_percent_one_core'], '{:.1f}')} |"
        )
    return [*out, ""]


def markdown_dataset(result: dict[str, Any]) -> str:
    """The Table 14 shaped Markdown of a dataset-mode result."""
    rows = _dataset_rows(result)
    models = result["models"]
    head = ["metric", "paper (Pi 4)", *[f"{m['name']} ({m['threads']}t)" for m in models]]
    out = [f"## edgefer-bench: Table 14 reproduced ({result['created']})", "", *table(head, rows), ""]
    errors = [f"{m['name']}: {m['memory']['error']}" for m in models if (m.get("memory") or {}).get("error")]
    if errors:
        out += ["Memory not measured: " + "; ".join(errors), ""]
    out += _ratio_lines(result)
    for m in models:
        out += _sweep_lines(m)
    h = result["host"]
    pk = ", ".join(f"{k} {v}" for k, v in h["packages"].items())
    out += [
        f"Host: {cpu_label(h)}{', ' + h['board'] if h.get('board') else ''}, {h['cores_usable']} usable "
        f"cores, {h['os']}, Python {h['python']}; {pk}. Load average at start: "
        f"{', '.join(f'{x:.2f}' for x in h.get('load_average_before') or [])}.",
        *notes(result),
        "",
    ]
    return "\n".join(out)


# -- pipeline mode ---------------------------------------------------------------------------


def _variant_row(v: dict[str, Any]) -> str:
    st = v["stages_ms"]
    det = st.get("detect", {})
    per_run = det.get("per_run", {}).get("mean")
    crop = st.get("crop", {}).get("per_frame_mean") if "crop" in st else None
    cls = st.get("classify", {}).get("per_frame_mean")
    paced = v.get("paced") or {}
    acc = (
        f"{100 * v['detection_rate']:.0f} % / {num(v.get('face_accuracy') and 100 * v['face_accuracy'], '{:.0f} %')}"
        if "detection_rate" in v
        else "–"
    )
    return (
        f"| {v['name']} | {num(det.get('per_frame_mean'))} ({num(per_run)}) | "
        f"{num(crop) if 'crop' in st else 'in classify'} | {num(cls)} | {pm(v['total_ms'])} | "
        f"{num(v['total_ms'].get('p95'))} | {num(v['fps'], '{:.1f}')} | {v['faces_found']} | {acc} | "
        f"{num(paced.get('cpu_percent_one_core'), '{:.1f}')} | {paced.get('late_frames', '–')} |"
    )


def markdown_pipeline(result: dict[str, Any]) -> str:
    src = result["source"]
    s = result["settings"]
    dec = src["decode_ms"]
    prep = pm(dec) if dec.get("n", 0) > 1 else num(dec.get("mean"))
    paced_head = f"CPU % of one core @ {s['fps']:g} fps" if s["fps"] else "CPU % (paced pass skipped)"
    head = ["variant", "detect ms/frame (per run)", "crop ms", "classify ms", "total ms (mean ± std)", "p95", "FPS"]
    head += ["faces found", "detection / accuracy", paced_head, "late"]
    out = [
        f"## edgefer-bench pipeline: {src['name']}, {src['frames']} frames {src['size'][0]}x{src['size'][1]} "
        f"({result['created']})",
        "",
        f"Frame preparation ({src['decode_what']}; excluded from the stage times): {prep} ms per frame.",
        "",
        *table(head, []),
        *(_variant_row(v) for v in result["variants"]),
    ]
    h = result["host"]
    used = ", ".join(f"{m['name']} ({m['runtime']}, {m['storage_mb']:.2f} MB)" for m in result["models"])
    out += [
        "",
        f"Models: {used}; "
        f"{s['threads']} thread(s). Host: {cpu_label(h)}, {h['cores_usable']} usable cores, Python {h['python']}.",
        *notes(result),
        "",
    ]
    return "\n".join(out)


# -- faces mode ------------------------------------------------------------------------------


def _shares_table(
    first: str, groups: list[tuple[str, dict[str, float], list[tuple[str, dict[str, Any]]]]]
) -> list[str]:
    """The shares table: per group, the true mix and each pipeline's shares."""
    lines = [f"| {first} | who | " + " | ".join(LABELS) + " |", "|---|---|" + "---|" * K]
    for g, truth, rows in groups:
        lines.append(f"| {g} | truth | {truth_cells(truth)} |")
        lines += [f"| {g} | {name} | {share_cells(b)} |" for name, b in rows]
    return lines


def markdown_faces(result: dict[str, Any]) -> str:
    d = result["data"]
    sets = ", ".join(f"{s} ({', '.join(f'{lab} {n}' for lab, n in c.items() if n)})" for s, c in d["sets"].items())
    lines = [
        f"## edgefer-bench faces: {d['root']} ({result['created']})",
        "",
        f"Photos: {sets}; grayscale, {d['long_side']} px on the long side.",
        "",
        "| pipeline | set | photos | face found | false boxes / photo | faces / photo | accuracy (largest face) "
        "| of all | macro-F1 | shares L1 | 95 % intervals cover | CPU ms / photo (median) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, groups in result["results"].items():
        for g, b in groups.items():
            cover = f"{b['covered_count']}/4" if "covered_count" in b else "–"
            lines.append(
                f"| {name} | {g} | {b['photos']} | {pct(b['detection_rate'])} | {num(b['false_boxes_per_photo'])} "
                f"| {num(b['faces_per_photo'])} | {pct(b['accuracy'])} | {pct(b['accuracy_all_photos'])} "
                f"| {num(b['macro_f1'], '{:.3f}')} | {num(b['l1'], '{:.3f}')} | {cover} "
                f"| {num(b['cpu_ms_median'], '{:.1f}')} |"
            )
    if result.get("cpu_ratio_edgefer_over_fer"):
        r = result["cpu_ratio_edgefer_over_fer"]
        lines += ["", "CPU per photo, edgefer / fer (same run): " + ", ".join(f"{g} {v:.2f}" for g, v in r.items())]
    lines += ["", "Shares (true mix, edgefer with its 95 % interval, fer):", ""]
    first = next(iter(result["results"].values()))
    shares = [(g, first[g]["truth_mix"], [(n, gs[g]) for n, gs in result["results"].items()]) for g in result["groups"]]
    lines += _shares_table("set", shares)
    if result.get("confusion_png"):
        lines += ["", "Confusion matrices: " + ", ".join(f"[{n}]({p})" for n, p in result["confusion_png"].items())]
    if result.get("peer_not_measured"):
        lines += ["", f"**{result['peer_not_measured']}**"]
    return "\n".join([*lines, *notes(result)]) + "\n"


# -- clip mode -------------------------------------------------------------------------------


def _seed_rows(result: dict[str, Any]) -> list[str]:
    lines = []
    for s in result["seeds"]:
        for name, r in s["lanes"].items():
            c = r["clip"]
            cover = f"{c['covered_count']}/4" if "covered_count" in c else "–"
            wcover = pct(r.get("window_coverage")) if "window_coverage" in r else "–"
            tracks = str(c["tracks"]) if "tracks" in c else "–"
            crops = r.get("crops", {})
            lines.append(
                f"| {s['seed']} | {name} | {r['faces']} | {tracks} | {pct(r['detection_rate'])} "
                f"| {num(r['false_boxes_per_frame'], '{:.3f}')} | {pct(r['accuracy_found'])} | {c['l1']:.3f} "
                f"| {pct(crops.get('accuracy'))} | {num(crops.get('l1'), '{:.3f}')} | {cover} "
                f"| {num(r['window_l1_mean'], '{:.3f}')} | {wcover} | {r['cpu_ms_per_frame']:.2f} |"
            )
    for name, m in result["mean"].items():
        if name == "cpu_ratio_edgefer_over_fer":
            continue
        cover = pct(m["clip_coverage"]) if "clip_coverage" in m else "–"
        wcover = pct(m["window_coverage"]) if "window_coverage" in m else "–"
        tracks = num(m["tracks_clip"], "{:.1f}") if "tracks_clip" in m else "–"
        lines.append(
            f"| mean | {name} | | {tracks} | {pct(m['detection_rate'])} | {num(m['false_boxes_per_frame'], '{:.3f}')} "
            f"| {pct(m['accuracy_found'])} | {m['l1_clip']:.3f} | {pct(m.get('accuracy_crops'))} "
            f"| {num(m.get('l1_crops'), '{:.3f}')} | {cover} | {num(m.get('window_l1_mean'), '{:.3f}')} "
            f"| {wcover} | {m['cpu_ms_per_frame']:.2f} |"
        )
    return lines


def markdown_clip(result: dict[str, Any]) -> str:
    d = result["data"]
    lines = [
        f"## edgefer-bench clip: FER2013 {d['split']} ({result['created']})",
        "",
        f"{d['shots']} shots x {d['hold']} frames = {d['frames']} frames per seed, one face per frame; seeds "
        f"{', '.join(str(s['seed']) for s in result['seeds'])}; windows of {d['window']} frames.",
        "",
        "| seed | pipeline | faces | tracks | face found | false boxes / frame | accuracy (found) | shares L1 (clip) "
        "| accuracy (crops) | shares L1 (crops) | intervals cover (clip) | L1 per window (mean) "
        "| intervals cover (windows) | CPU ms / frame |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *_seed_rows(result),
    ]
    ratios = [
        f"seed {s['seed']} {s['cpu_ratio_edgefer_over_fer']:.2f}"
        for s in result["seeds"]
        if s["cpu_ratio_edgefer_over_fer"]
    ]
    if ratios:
        mean = result["mean"]["cpu_ratio_edgefer_over_fer"]
        lines += ["", f"CPU per frame, edgefer / fer (same run): {', '.join(ratios)}; mean {mean:.2f}"]
    lines += ["", "Shares over the whole clip (edgefer with its 95 % interval):", ""]
    shares = [
        (
            str(s["seed"]),
            next(iter(s["lanes"].values()))["clip"]["truth_mix"],
            [(n, r["clip"]) for n, r in s["lanes"].items()],
        )
        for s in result["seeds"]
    ]
    lines += _shares_table("seed", shares)
    if result.get("shares_png"):
        lines += ["", f"The same as a figure: [{result['shares_png']}]({result['shares_png']})"]
    lines += ["", "Faces found per class (mean over seeds): frames where the face shown was found / all showing it:"]
    lines += ["", "| pipeline | " + " | ".join(LABELS) + " |", "|---|" + "---|" * K]
    for name, m in result["mean"].items():
        if name != "cpu_ratio_edgefer_over_fer":
            lines.append(f"| {name} | " + " | ".join(pct(m["detection_rate_per_class"][lab]) for lab in LABELS) + " |")
    if result.get("peer_not_measured"):
        lines += ["", f"**{result['peer_not_measured']}**"]
    return "\n".join([*lines, *notes(result)]) + "\n"


def render(result: dict[str, Any]) -> str:
    """The Markdown of any mode's result."""
    mode = result.get("mode")
    if mode == "faces":
        return markdown_faces(result)
    if mode == "clip":
        return markdown_clip(result)
    return markdown_pipeline(result) if mode == "pipeline" else markdown_dataset(result)
