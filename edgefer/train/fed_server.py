"""The ServerApp's work: FedAvg rounds, a statistics round, then validation and export.

The server owns one labelled set of its own (``server_set``), disjoint from every client's
faces: it picks the best round on it, decides whether the clients' pooled batch-norm
statistics help, and calibrates the int8 export on it. It opens no client's training data:
batch-norm statistics come from the clients through a Flower query message and are pooled
here (:func:`client_bn_round`). PublicTest, when the server has it, only scores the result.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping, FedAvg, Strategy

from edgefer import LABELS
from edgefer.datasets import Dataset
from edgefer.metrics import summary
from edgefer.train import fed_report
from edgefer.train.data import predict_probs, validate
from edgefer.train.fed_config import FedConfig, refuse_centralized_only, run_config, same_run
from edgefer.train.fed_records import model_arrays, pool_bn_statistics, set_arrays, to_numpy
from edgefer.train.recipe import Recipe
from edgefer.train.warmstart import start_from

#: A Pi may need an hour or more for a round of local epochs; a reply that takes longer
#: than this is treated as lost.
ROUND_TIMEOUT_S = 24 * 3600


class RecordingFedAvg(FedAvg):
    """Flower's FedAvg with per-round bookkeeping and a round offset for resumed runs.

    ``keep_updates`` additionally keeps every client's returned weights and the weights
    sent out, so a test can recompute the average by hand. ``weighted_by`` names the
    client metric that weighs each update: the image count, or a constant 1 under DP.
    """

    def __init__(
        self, clients: int, round_offset: int = 0, keep_updates: bool = False, weighted_by: str = "num-examples"
    ) -> None:
        with fed_report.quiet_flower(logging.ERROR):  # it warns that client-side evaluation is off
            super().__init__(
                fraction_train=1.0,
                fraction_evaluate=0.0,
                min_train_nodes=clients,
                min_evaluate_nodes=0,
                min_available_nodes=clients,
                weighted_by_key=weighted_by,
            )
        self.round_offset = round_offset
        self.keep_updates = keep_updates
        self.sent: dict[int, dict[str, np.ndarray]] = {}
        self.updates: dict[int, list[tuple[int, dict[str, np.ndarray]]]] = {}
        self.rounds: dict[int, dict] = {}
        self.aggregated_round = 0

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        rnd = server_round + self.round_offset
        if self.keep_updates:
            self.sent[rnd] = to_numpy(arrays)
        return super().configure_train(rnd, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        rnd = server_round + self.round_offset
        replies = list(replies)
        ok = [m for m in replies if not m.has_error()]
        errors = [f"node {m.metadata.src_node_id}: {m.error.reason}" for m in replies if m.has_error()]
        if self.keep_updates:
            self.updates[rnd] = [(int(m.content["metrics"]["num-examples"]), to_numpy(m.content["arrays"])) for m in ok]
        arrays, metrics = super().aggregate_train(rnd, replies)
        self.rounds[rnd] = {
            "clients": len(ok),
            "failures": errors,
            "examples": [int(m.content["metrics"]["num-examples"]) for m in ok],
            "metrics": dict(metrics or {}),
        }
        if arrays is not None:
            self.aggregated_round = rnd
        return arrays, metrics


def make_strategy(cfg: FedConfig, offset: int) -> tuple[Strategy, RecordingFedAvg]:
    """FedAvg, wrapped in Flower's central DP when ``cfg.dp == "central"``.

    Under DP every client weighs the same (``unit-weight``): the noise std
    dp_noise * dp_clip / clients on the average is calibrated to one client moving the
    *uniform* average by at most dp_clip / clients; an image-count weighting would let a
    large client move it further than the accountant assumes.
    """
    if cfg.dp == "central":
        inner = RecordingFedAvg(cfg.clients, round_offset=offset, weighted_by="unit-weight")
        return DifferentialPrivacyClientSideFixedClipping(inner, cfg.dp_noise, cfg.dp_clip, cfg.clients), inner
    inner = RecordingFedAvg(cfg.clients, round_offset=offset)
    return inner, inner


def _query(grid: Grid, nodes: list[int], arrays: ArrayRecord, config: ConfigRecord) -> list[Message]:
    messages = [
        Message(RecordDict({"arrays": arrays, "config": config}), dst_node_id=n, message_type=MessageType.QUERY)
        for n in nodes
    ]
    return list(grid.send_and_receive(messages, timeout=ROUND_TIMEOUT_S))


def client_bn_round(grid: Grid, model, config: ConfigRecord, log: Callable[[str], None]) -> dict | None:
    """Ask every connected client for the batch-norm statistics of ``model``'s weights on its
    own faces and return them pooled (or None when no client answered).

    Replaces a server-side "precise BN" pass over pooled training faces, which a federation
    must not have; the clients compute exactly what that pass would, each on its own faces.
    """
    nodes = sorted(grid.get_node_ids())
    replies = _query(grid, nodes, model_arrays(model), config)
    ok = [m for m in replies if not m.has_error()]
    for m in replies:
        if m.has_error():
            log(f"statistics round: node {m.metadata.src_node_id} failed: {m.error.reason}")
    if not ok:
        return None
    parts = [(int(m.content["metrics"]["num-examples"]), to_numpy(m.content["bn"])) for m in ok]
    return {"stats": pool_bn_statistics(parts), "clients": len(ok), "faces": sum(n for n, _ in parts)}


def pooled_bn_if_better(grid: Grid, model, config: ConfigRecord, server_set: Dataset, log) -> tuple[dict, dict]:
    """Put the clients' pooled statistics into ``model`` if they raise accuracy on the
    server's own faces; returns the report entry and the validation summary kept."""
    before = validate(model, server_set)
    got = client_bn_round(grid, model, config, log)
    if got is None:
        log("statistics round: no client answered; the averaged statistics stay")
        return {"validation_before": before["accuracy"], "kept": False, "clients": 0}, before
    weights = model.get_weights()
    set_arrays(model, got["stats"])
    after = validate(model, server_set)
    kept = after["accuracy"] > before["accuracy"]
    if not kept:
        model.set_weights(weights)
    log(
        f"client batch-norm statistics ({got['clients']} clients, {got['faces']} faces): validation "
        f"{before['accuracy']:.4f} -> {after['accuracy']:.4f} ({'kept' if kept else 'discarded'})"
    )
    entry = {
        "validation_before": before["accuracy"],
        "validation_after": after["accuracy"],
        "kept": kept,
        "clients": got["clients"],
        "faces": got["faces"],
    }
    return entry, after if kept else before


def _load_state(out: Path, settings: dict) -> dict:
    path = out / "state.json"
    state = json.loads(path.read_text()) if path.exists() else {}
    if state and same_run(state.get("settings", {})) != same_run(settings):
        raise SystemExit(f"{path}: checkpoint was made with other settings; use a fresh --out")
    return state


def _row(rnd: int, probs: np.ndarray, server_set: Dataset, info: dict) -> dict:
    res = summary(server_set.labels, probs.argmax(1), LABELS)
    m = info.get("metrics", {})
    return {
        "round": rnd,
        "val_accuracy": res["accuracy"],
        "val_macro_f1": res["macro_f1"],
        "val_loss": fed_report.val_loss(probs, server_set.labels),
        "train_loss": m.get("train-loss"),
        "train_accuracy": m.get("train-accuracy"),
        "update_norm": m.get("update-norm"),
        "clients": info.get("clients", 0),
        "failures": len(info.get("failures", [])),
        "examples": sum(info.get("examples", [])),
    }


def _evaluator(model, inner: RecordingFedAvg, cfg: FedConfig, state: dict, server_set: Dataset, out: Path, log):
    """The per-round evaluate_fn: validate on the server's faces, checkpoint, keep the best."""
    done = int(state["round"])
    clock = {"t": time.monotonic(), "per": []}

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        rnd = server_round + done
        if server_round == 0 and state["history"]:
            return None  # a resumed run evaluated this model before it stopped
        info = inner.rounds.get(rnd, {})
        if server_round and inner.aggregated_round != rnd:
            reasons = "; ".join(info.get("failures", [])) or "see the client errors logged above"
            raise RuntimeError(f"round {rnd}: no client update was aggregated ({reasons})")
        for failure in info.get("failures", []):
            log(f"round {rnd}: client failed: {failure}")
        set_arrays(model, arrays)
        row = _row(rnd, predict_probs(model, server_set.images), server_set, info)
        state["history"].append(row)
        state["round"] = rnd
        fed_report.save_npz(out / "global.npz", to_numpy(arrays))
        # On a tie the later, longer-trained model wins; keep_last always takes the latest.
        if row["val_accuracy"] >= state["best_val"] or (cfg.keep_last and server_round):
            state["best_val"], state["best_round"] = row["val_accuracy"], rnd
            fed_report.save_npz(out / "best.npz", to_numpy(arrays))
        fed_report.write_json(out / "state.json", state)
        now = time.monotonic()
        if server_round:
            clock["per"].append(now - clock["t"])
        clock["t"] = now
        log(fed_report.progress_line(row, cfg.rounds, clock["per"]))
        return MetricRecord({"accuracy": row["val_accuracy"], "loss": row["val_loss"]})

    return evaluate


@dataclass(frozen=True)
class Destination:
    """Where a federated run writes its files and what it says on the way."""

    out_dir: str | Path
    log: Callable[[str], None] = print
    #: the exported ``.tflite`` files go here instead of ``out_dir``
    export_to: str | Path | None = None
    #: called with the strategy before the first round (tests watch the rounds through it)
    strategy_hook: Callable[[RecordingFedAvg], None] | None = None


def serve(
    grid: Grid,
    recipe: Recipe,
    cfg: FedConfig,
    server_set: Dataset,
    test_dir: str | None,
    dest: Destination,
    extra: dict | None = None,
) -> dict:
    """Run (or resume) the rounds, then the statistics round, validation, test and export.

    ``server_set`` is the server's own labelled faces (validation, model choice, int8
    calibration); ``test_dir`` a folder whose ``test/`` split scores the result (optional).
    ``extra`` lands in the report's ``federated`` section.
    """
    import keras

    from edgefer.train.models import build, count_flops

    out, log = Path(dest.out_dir), dest.log
    out.mkdir(parents=True, exist_ok=True)
    settings = run_config(recipe, cfg)
    refuse_centralized_only(recipe)
    if len(server_set) == 0:
        raise ValueError("the server needs faces of its own to validate on; its set is empty")
    log(f"server: its own faces {len(server_set)} {server_set.class_counts()} (no client data)")
    state = _load_state(out, settings)
    keras.utils.set_random_seed(recipe.seed)
    model = build(recipe.arch)
    if state and (out / "global.npz").exists():
        with np.load(out / "global.npz") as z:
            set_arrays(model, dict(z))
        log(f"resuming from {out / 'global.npz'} after round {state['round']}")
    else:
        start_from(model, recipe, log)  # e.g. fine-tuning a centrally trained model on the devices
        state = {"settings": settings, "round": 0, "history": [], "best_val": -1.0, "best_round": 0}
    done = int(state["round"])
    log(
        f"{recipe.arch}: {model.count_params():,} parameters, {count_flops(model) / 1e6:.1f} MFLOPs; "
        f"{cfg.clients} clients, rounds {done + 1}..{cfg.rounds} of {cfg.local_epochs} local epochs, "
        f"partition {cfg.partition}, DP {cfg.dp}"
    )
    strategy, inner = make_strategy(cfg, done)
    if dest.strategy_hook:
        dest.strategy_hook(inner)
    config = ConfigRecord(
        {
            "recipe": json.dumps(asdict(recipe)),
            "rounds": cfg.rounds,
            "local-epochs": cfg.local_epochs,
            "partition": cfg.partition,
            "alpha": float(cfg.alpha),
        }
    )
    if done < cfg.rounds:
        with fed_report.quiet_flower():
            strategy.start(
                grid=grid,
                initial_arrays=model_arrays(model),
                num_rounds=cfg.rounds - done,
                timeout=ROUND_TIMEOUT_S,
                train_config=config,
                evaluate_fn=_evaluator(model, inner, cfg, state, server_set, out, log),
            )
    return _finish(grid, model, recipe, cfg, state, server_set, test_dir, dest, config, extra or {})


def _finish(grid, model, recipe, cfg, state, server_set, test_dir, dest: Destination, config, extra) -> dict:
    """Best round -> client statistics -> validation, test, figures, TFLite and report.json."""
    from edgefer.train import fed_privacy
    from edgefer.train.finalize import evaluate_and_export
    from edgefer.train.models import count_flops

    out, log = Path(dest.out_dir), dest.log
    with np.load(out / "best.npz") as z:
        set_arrays(model, dict(z))
    fed_report.write_round_files(state["history"], out, recipe, cfg, log)
    report = fed_report.base_report(model, recipe, cfg, state, count_flops(model), extra)
    if cfg.dp == "central":
        report["dp"] = fed_privacy.dp_report(cfg, state["round"])
        log(f"DP: epsilon {report['dp']['epsilon']:.4g} at delta {report['dp']['delta']:g} "
            f"after {state['round']} rounds (noise multiplier {cfg.dp_noise}, clip {cfg.dp_clip})")  # fmt: skip
        # The statistics round would be a release the accountant does not cover: skipped.
        report["client_bn"] = {"skipped": "under DP the statistics round would release unaccounted statistics"}
        report["validation"] = validate(model, server_set)
    else:
        report["client_bn"], report["validation"] = pooled_bn_if_better(grid, model, config, server_set, log)
    finite = all(np.isfinite(w).all() for w in model.get_weights())
    if not finite or not np.isfinite(predict_probs(model, server_set.images)).all():
        # Noise or a diverged round left weights that give NaN outputs: TFLite's int8
        # calibration crashes the process on them, so the run is reported without files.
        report["diverged"] = "the shipped round gives non-finite outputs; nothing exported"
        log(f"{out}: {report['diverged']}")
        fed_report.write_json(out / "report.json", report)
        return report
    model.save(out / "best.keras")
    files = Path(dest.export_to) if dest.export_to else out
    # The int8 grid is set on the server's own faces (tr=server_set), never on client data.
    evaluate_and_export(model, f"{recipe.arch}-federated", server_set, server_set, test_dir, out, files, report, log)
    fed_report.write_json(out / "report.json", report)
    log(f"best round {state['best_round']} (val_acc {state['best_val']:.4f})")
    return report
