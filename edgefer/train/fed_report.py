"""What a federated run leaves behind: checkpoints, the per-round table and plot, the report."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path

import numpy as np

from edgefer import __version__

_COLUMNS = ("round", "val_accuracy", "val_macro_f1", "val_loss", "train_loss", "update_norm", "clients", "examples")


@contextlib.contextmanager
def quiet_flower(level: int = logging.WARNING) -> Iterator[None]:
    """Keep Flower's per-message INFO lines out of the way of edgefer's per-round progress."""
    logger = logging.getLogger("flwr")
    old = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(old)


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically: a run stopped mid-write must still resume from the previous round."""
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


def val_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0))))


def progress_line(row: dict, rounds: int, per: list[float]) -> str:
    """One log line per evaluated round, with the mean round time and the time left."""
    if not row["round"] or not per:
        return f"round 0 (initial model) val_acc {row['val_accuracy']:.4f} val_loss {row['val_loss']:.4f}"
    mean = float(np.mean(per))
    eta = mean * (rounds - row["round"]) / 60
    return (
        f"round {row['round']}/{rounds} val_acc {row['val_accuracy']:.4f} val_loss {row['val_loss']:.4f} "
        f"train_loss {row['train_loss'] or 0:.4f} clients {row['clients']} ({row['failures']} failed) "
        f"update_norm {row['update_norm'] or 0:.2f} ({mean:.0f} s/round, ETA {eta:.0f} min)"
    )


def rounds_table(history: list[dict], path: Path) -> None:
    lines = [",".join(_COLUMNS)]
    lines += [",".join("" if r.get(c) is None else str(r[c]) for c in _COLUMNS) for r in history]
    path.write_text("\n".join(lines) + "\n")


def table_lines(history: list[dict]) -> list[str]:
    out = ["round  val_acc  macro_f1  val_loss  train_loss  clients"]
    for r in history:
        tl = "" if r.get("train_loss") is None else f"{r['train_loss']:.4f}"
        out.append(
            f"{r['round']:5d}  {r['val_accuracy']:.4f}  {r['val_macro_f1']:.4f}    "
            f"{r['val_loss']:.4f}  {tl:>10}  {r['clients']:7d}"
        )
    return out


def rounds_png(history: list[dict], path: Path, title: str) -> None:
    from matplotlib.ticker import MaxNLocator

    from edgefer.train.plots import pyplot

    plt = pyplot()
    rounds = [r["round"] for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=110)
    a.plot(rounds, [r["val_accuracy"] for r in history], "o-", label="validation accuracy")
    a.plot(rounds, [r["val_macro_f1"] for r in history], "s--", label="validation macro-F1")
    b.plot(rounds, [r["val_loss"] for r in history], "o-", label="validation loss")
    trained = [r for r in history if r.get("train_loss") is not None]
    b.plot([r["round"] for r in trained], [r["train_loss"] for r in trained], "s--", label="client train loss")
    for ax in (a, b):
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_round_files(history: list[dict], out: Path, recipe, cfg, log) -> None:
    """rounds.csv, rounds.png and the table in the log."""
    rounds_table(history, out / "rounds.csv")
    dp = f", DP z={cfg.dp_noise} C={cfg.dp_clip}" if cfg.dp != "none" else ""
    rounds_png(history, out / "rounds.png", f"{recipe.arch}: FedAvg, {cfg.clients} clients, {cfg.partition}{dp}")
    for line in table_lines(history):
        log(line)


def base_report(model, recipe, cfg, state: dict, flops: int, extra: dict) -> dict:
    """The report fields shared with centralized runs, plus the ``federated`` section."""
    e = cfg.local_epochs
    return {
        "arch": recipe.arch,
        "params": model.count_params(),
        "flops": flops,
        # Epoch fields count local epochs per client, so they line up with centralized reports.
        "best_epoch": state["best_round"] * e,
        "epochs_run": state["round"] * e,
        "recipe": asdict(recipe),
        "best_round": state["best_round"],
        "rounds_run": state["round"],
        "federated": {
            **asdict(cfg),
            "strategy": "FedAvg",
            "flwr": version("flwr"),
            "edgefer": __version__,
            "server_data": "its own held-out faces only (validation, model choice, int8 calibration)",
            **extra,
            "history": state["history"],
        },
    }
