"""The paper's client sweep on a budget two shared cores allow, plus a small DP sweep.

``python -m edgefer.train.fed_sweep --data-dir DIR --runs runs/federated-sweep
--results benchmarks/results/federated-sweep`` trains, one after the other: the centralized
model and FedAvg with 3, 6, 9 and 15 clients, IID and Dirichlet label skew, all on the same
fixed subset of FER2013 train and the same number of passes over it; then 3 IID clients
under central DP at a few noise multipliers. A run whose ``report.json`` exists is skipped
and a stopped federated run resumes at its next round, so the command can simply be
repeated. The summary (JSON, Markdown table, per-round plot) is rewritten after every run.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgefer.train.fed_config import DP_DELTA, FedConfig
from edgefer.train.recipe import Recipe

#: The budget: 800 faces per class (3200; 10 % of them the server's hold-out), batches of 32,
#: 6 rounds of one local epoch, i.e. 6 passes over the 2880 client faces (the centralized
#: run: 6 epochs over the same faces). 600 faces per class in batches of 64 (204 steps) left
#: the centralized model at 31 % validation accuracy, too close to chance to compare.
BUDGET = Recipe(limit_per_class=800, batch_size=32, epochs=6, patience=6)
ROUNDS, LOCAL_EPOCHS, ALPHA = 6, 1, 0.5
CLIENTS = (3, 6, 9, 15)
DP_NOISE = (0.001, 0.3, 1.0)


def plan() -> list[tuple[str, FedConfig | None]]:
    """Run names and settings in the order they run (None: the centralized run): the
    client sweep, then DP at noise multipliers 1.0, 0.3 and 0.001."""
    fed = {
        f"fed{n}-{p}": FedConfig(
            clients=n, rounds=ROUNDS, local_epochs=LOCAL_EPOCHS, partition=p, alpha=ALPHA, keep_last=True
        )
        for n in CLIENTS
        for p in ("iid", "dirichlet")
    }
    dp = {
        f"dp-z{z}": FedConfig(clients=3, rounds=ROUNDS, local_epochs=LOCAL_EPOCHS, dp="central", dp_noise=z)
        for z in DP_NOISE
    }
    order = ["centralized", *fed, *sorted(dp, key=lambda k: -float(k.removeprefix("dp-z")))]
    return [(name, None if name == "centralized" else {**fed, **dp}[name]) for name in order]


def _clip_from(runs: Path) -> float:
    """DP clip: the median client update norm of the same federation without DP, so the
    clipping removes about half of the update size and the noise is scaled to real updates."""
    report = json.loads((runs / "fed3-iid" / "report.json").read_text())
    norms = [r["update_norm"] for r in report["federated"]["history"] if r.get("update_norm")]
    return float(np.median(norms))


def _one(name: str, cfg: FedConfig | None, data_dir: str, runs: Path, log) -> None:
    from edgefer.train import federated
    from edgefer.train.fit import train

    out = runs / name
    t0 = time.monotonic()
    if cfg is None:
        train(BUDGET, data_dir, out, log=log)
    else:
        if cfg.dp == "central":
            cfg = replace(cfg, dp_clip=round(_clip_from(runs), 2))
        federated.run(BUDGET, cfg, data_dir, federated.Destination(out, log))
    report = json.loads((out / "report.json").read_text())
    report["wall_seconds"] = report.get("wall_seconds", 0.0) + time.monotonic() - t0
    (out / "report.json").write_text(json.dumps(report, indent=1))


def _summary_row(name: str, report: dict, state: dict) -> dict:
    fed = report.get("federated", {})
    test = report.get("files", {}).get("int8", {}).get("test", {})
    if fed:
        history = list({r["round"]: r for r in fed["history"]}.values())  # one row per round
        curve = [r["val_accuracy"] for r in history]
        train_curve = [r.get("train_accuracy") for r in history]
    else:  # the centralized run: epoch e is compared with round e
        curve = [None, *state.get("history", {}).get("val_accuracy", [])]
        train_curve = [None, *state.get("history", {}).get("accuracy", [])]
    return {
        "run": name,
        "clients": fed.get("clients", 1),
        "partition": fed.get("partition", "pooled"),
        "label_skew": fed.get("label_skew"),
        "dp": report.get("dp"),
        "client_bn": report.get("client_bn"),
        "keras_test_accuracy": report.get("keras_test", {}).get("accuracy"),
        "int8_test_accuracy": test.get("accuracy"),
        "int8_test_macro_f1": test.get("macro_f1"),
        "validation_accuracy": report.get("validation", {}).get("accuracy"),
        "best_round": report.get("best_round", report.get("best_epoch")),
        "diverged": bool(report.get("diverged")),
        "curve": curve,
        "train_curve": train_curve,
        "wall_seconds": report.get("wall_seconds"),
    }


def summarize(runs: Path, results: Path) -> list[dict]:
    """sweep.json, sweep.md and sweep.png in ``results`` from the finished runs."""
    rows = []
    for name, _ in plan():
        path = runs / name / "report.json"
        if path.exists():
            state_path = runs / name / "state.json"
            state = json.loads(state_path.read_text()) if state_path.exists() else {}
            rows.append(_summary_row(name, json.loads(path.read_text()), state))
    results.mkdir(parents=True, exist_ok=True)
    budget = {
        "recipe": BUDGET.__dict__,
        "rounds": ROUNDS,
        "local_epochs": LOCAL_EPOCHS,
        "alpha": ALPHA,
        "dp_delta": DP_DELTA,
    }
    (results / "sweep.json").write_text(json.dumps({"budget": budget, "runs": rows}, indent=1, default=str))
    (results / "sweep.md").write_text(markdown(rows))
    if rows:
        plot(rows, results / "sweep.png")
    return rows


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def markdown(rows: list[dict]) -> str:
    """The sweep table: PublicTest accuracy of each run and its gap to the centralized run."""
    central = next((r for r in rows if r["run"] == "centralized"), None)
    ref = central["int8_test_accuracy"] if central else None
    lines = [
        "| run | clients | partition (label skew) | best round | client BN stats | validation % | "
        "PublicTest Keras % | PublicTest int8 % | gap to centralized (int8, points) | epsilon (delta 1e-5) | minutes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        gap = (
            "-"
            if ref is None or r["int8_test_accuracy"] is None or r is central
            else f"{100 * (r['int8_test_accuracy'] - ref):+.1f}"
        )
        skew = "" if r["label_skew"] is None else f" ({r['label_skew']:.2f})"
        bn = r["client_bn"] or {}
        bn_text = (
            "-" if not bn else ("skipped (DP)" if "skipped" in bn else ("kept" if bn.get("kept") else "discarded"))
        )
        eps = "-" if not r["dp"] else f"{r['dp']['epsilon']:.3g} (z={r['dp']['noise_multiplier']}, C={r['dp']['clip']})"
        minutes = "-" if r["wall_seconds"] is None else f"{r['wall_seconds'] / 60:.1f}"
        if r.get("diverged"):
            bn_text = "diverged: non-finite outputs, no export"
        lines.append(
            f"| {r['run']} | {r['clients']} | {r['partition']}{skew} | {r['best_round']} | {bn_text} | "
            f"{_pct(r['validation_accuracy'])} | {_pct(r['keras_test_accuracy'])} | {_pct(r['int8_test_accuracy'])} | "
            f"{gap} | {eps} | {minutes} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    """Accuracy after each round, one line per run: the clients' training accuracy (on their
    augmented faces, batch statistics) on top, the server's validation accuracy (its own
    faces, the averaged moving statistics) below; IID left, Dirichlet right."""
    from edgefer.train.plots import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.4), dpi=110, sharex=True, sharey="row")
    for col, part in enumerate(("iid", "dirichlet")):
        for row, key in enumerate(("train_curve", "curve")):
            ax = axes[row][col]
            for r in rows:
                if r["partition"] not in (part, "pooled") or r["dp"]:
                    continue
                ys = r[key]
                xs = [i for i, y in enumerate(ys) if y is not None]
                style = "k--" if r["partition"] == "pooled" else "o-"
                label = "centralized" if r["partition"] == "pooled" else f"{r['clients']} clients"
                ax.plot(xs, [ys[i] for i in xs], style, ms=3, label=label)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title("IID" if part == "iid" else f"Dirichlet alpha={ALPHA}", fontsize=9)
                ax.legend(fontsize=7)
            else:
                ax.set_xlabel("round (centralized: epoch)")
        axes[0][0].set_ylabel("client training accuracy")
        axes[1][0].set_ylabel("server validation accuracy")
    fig.suptitle(
        f"FedAvg, {ROUNDS} rounds x {LOCAL_EPOCHS} local epoch, {BUDGET.limit_per_class} faces/class, "
        f"batch {BUDGET.batch_size}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="FER2013 folder with train/ and test/")
    p.add_argument("--runs", default="runs/federated-sweep", help="one folder per run (checkpoints, models)")
    p.add_argument("--results", default="benchmarks/results/federated-sweep", help="summary files to commit")
    p.add_argument("--only", nargs="*", help="run only these names (default: the whole plan)")
    args = p.parse_args(argv)
    runs, results = Path(args.runs), Path(args.results)

    def log(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)

    for name, cfg in plan():
        if args.only and name not in args.only:
            continue
        if (runs / name / "report.json").exists():
            log(f"== {name}: finished before, skipped")
            continue
        log(f"== {name}: starting")
        _one(name, cfg, args.data_dir, runs, log)
        summarize(runs, results)
        log(f"== {name}: done")
    summarize(runs, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
