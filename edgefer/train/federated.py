"""Federated training with Flower: FedAvg over client nodes that keep their faces.

One ClientApp and one ServerApp serve both ways of running a federation:

* :func:`run` (``edgefer-train --federated``) emulates the clients on one machine with
  Flower's Simulation Runtime; FER2013 train is cut into per-client shards (IID or
  Dirichlet label skew) after the same validation hold-out as the centralized trainer.
* A deployment: a Flower SuperLink on a server, one SuperNode per device, and ``flwr run``
  on the Flower App folder that :func:`write_app` produces (docs/federated.md).

A client receives the global weights and the training settings, trains on its own faces and
answers with its weights, its number of images and a few scalars (loss, accuracy, update
norm): never an image or a label. The server validates the global model after every round
on its own held-out faces, checkpoints it (a stopped run resumes at the next round) and
exports the best round to TFLite exactly as the centralized trainer does.

The model recipe is the centralized :class:`~edgefer.train.trainer.Recipe`. Its ``epochs``
and ``patience`` are not used here (``rounds`` x ``local_epochs`` replace them); its
one-cycle learning rate is applied at round granularity by :func:`round_lr`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from importlib.metadata import version
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import fixedclipping_mod
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping, FedAvg, Strategy
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from edgefer import LABELS, __version__
from edgefer.datasets import Dataset, load_fer2013, stratified_split
from edgefer.metrics import summary
from edgefer.train import partition as part
from edgefer.train.trainer import (
    Recipe,
    evaluate_and_export,
    make_dataset,
    precise_bn_if_better,
    predict_probs,
    start_from,
)

DP_MODES = ("none", "central")
#: A Pi may need an hour or more for a round of local epochs; a reply that takes longer
#: than this is treated as lost.
ROUND_TIMEOUT_S = 24 * 3600
#: Environment variables a simulated client inherits from :func:`run`.
ENV_DATA = "EDGEFER_FER2013"
ENV_THREADS = "EDGEFER_TRAIN_THREADS"


@dataclass
class FedConfig:
    """How the federation is run (the model recipe is a separate :class:`Recipe`)."""

    clients: int = 3
    rounds: int = 10
    local_epochs: int = 3
    partition: str = "iid"
    alpha: float = 0.5
    dp: str = "none"
    dp_noise: float = 0.1
    dp_clip: float = 5.0
    threads: int = 1

    def __post_init__(self) -> None:
        if self.clients < 1 or self.rounds < 1 or self.local_epochs < 1 or self.threads < 1:
            raise ValueError("clients, rounds, local_epochs and threads must be at least 1")
        if self.partition not in part.SCHEMES:
            raise ValueError(f"unknown partition {self.partition!r} (known: {', '.join(part.SCHEMES)})")
        if self.dp not in DP_MODES:
            raise ValueError(f"unknown dp mode {self.dp!r} (known: {', '.join(DP_MODES)})")
        if self.alpha <= 0 or self.dp_clip <= 0 or self.dp_noise < 0:
            raise ValueError("alpha and dp_clip must be positive, dp_noise non-negative")


# --- configuration as Flower run config (flat, TOML-typed) -----------------------------------


def _key(name: str) -> str:
    return name.replace("_", "-")


def run_config(recipe: Recipe, cfg: FedConfig) -> dict[str, bool | int | float | str]:
    """Recipe and federation settings as one flat dict with Flower's dashed key style."""
    out: dict[str, bool | int | float | str] = {}
    for obj in (recipe, cfg):
        for k, v in asdict(obj).items():
            if isinstance(v, list):
                v = ",".join(v)  # run configs hold scalars only
            out[_key(k)] = 0 if v is None else v  # run configs have no null; 0 means "unset"
    return out


def from_run_config(values: dict) -> tuple[Recipe, FedConfig]:
    """Inverse of :func:`run_config`; unknown keys are ignored, missing ones keep defaults."""

    def build(cls):
        kw = {}
        for f in fields(cls):
            if _key(f.name) not in values:
                continue
            v = values[_key(f.name)]
            default = getattr(cls(), f.name)
            if f.name == "limit_per_class":
                v = int(v) or None
            elif f.name == "init_from":
                v = str(v) if v else None
            elif f.name == "teachers":
                v = [t for t in str(v).split(",") if t]
            elif isinstance(default, bool):
                v = bool(v)
            elif isinstance(default, (int, float, str)):
                v = type(default)(v)
            kw[f.name] = v
        return cls(**kw)

    return build(Recipe), build(FedConfig)


def round_lr(recipe: Recipe, rnd: int, rounds: int) -> float:
    """Learning rate for round ``rnd`` (1-based) of ``rounds``.

    The centralized one-cycle shape (warm-up from lr/25, cosine decay to 1 %) sampled at
    the middle of each round: a client starts every round with a fresh optimizer, so a
    constant rate within the round keeps the clients of a round comparable.
    """
    t = (rnd - 0.5) / rounds
    lo, w = recipe.lr / 25, recipe.warmup_fraction
    if w > 0 and t < w:
        return lo + (recipe.lr - lo) * t / w
    u = (t - w) / max(1.0 - w, 1e-9)
    return recipe.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(u, 1.0))))


# --- weights <-> Flower records ---------------------------------------------------------------


def model_arrays(model) -> ArrayRecord:
    """The model's weights (trainable and batch-norm statistics) keyed by variable path."""
    return ArrayRecord({w.path: Array(np.asarray(v)) for w, v in zip(model.weights, model.get_weights(), strict=True)})


def set_arrays(model, arrays: ArrayRecord | dict[str, np.ndarray]) -> None:
    """Load weights by variable path, so a reordered or foreign record fails loudly.

    Batch-norm variances are floored at zero: differential-privacy noise added to an
    average can push a small variance negative, which would turn every output into NaN.
    """
    values = []
    for w in model.weights:
        a = arrays[w.path]
        a = a.numpy() if isinstance(a, Array) else np.asarray(a)
        if a.shape != tuple(w.shape):
            raise ValueError(f"{w.path}: shape {a.shape} does not fit the model's {tuple(w.shape)}")
        values.append(np.maximum(a, 0) if w.path.endswith("moving_variance") else a)
    model.set_weights(values)


def to_numpy(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in arrays.items()}


# --- the client ---------------------------------------------------------------------------------

_DATA: dict[tuple, Dataset] = {}
_MODELS: dict[str, object] = {}


def _limit_threads() -> None:
    """Pin TensorFlow to the thread count :func:`run` chose, before it starts any pool."""
    n = int(os.environ.get(ENV_THREADS, "0") or 0)
    if not n:
        return
    import tensorflow as tf

    with contextlib.suppress(RuntimeError):  # already initialised in this process
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)


def local_shard(node_config: dict, recipe: Recipe, scheme: str, alpha: float) -> Dataset:
    """The faces this client trains on.

    With ``partition-id`` and ``num-partitions`` in the node config (always so in a
    simulation) the client takes its shard of FER2013 train minus the validation part the
    server holds. Without them (a device with its own faces) it trains on all of
    ``data-dir``.
    """
    data_dir = str(node_config.get("data-dir", "") or "") or None
    key = (data_dir, os.environ.get(ENV_DATA), recipe.limit_per_class)
    if key not in _DATA:  # loading FER2013 takes a while; a simulation worker serves many rounds
        _DATA[key] = load_fer2013(data_dir, "train", limit_per_class=recipe.limit_per_class)
    full = _DATA[key]
    if "partition-id" not in node_config or "num-partitions" not in node_config:
        return full
    keep, _ = stratified_split(full.labels, recipe.val_fraction, recipe.seed)
    shards = part.partition(full.labels[keep], int(node_config["num-partitions"]), scheme, alpha, recipe.seed)
    return full.subset(keep[shards[int(node_config["partition-id"])]])


def _compiled_model(recipe: Recipe):
    """One compiled model per worker process, reused every round.

    Compiling anew each round would retrace the training step each time, which costs
    more than a small shard's epoch; the optimizer is restarted instead (see
    :func:`_restart_optimizer`).
    """
    import keras

    key = (recipe.arch, recipe.weight_decay, recipe.label_smoothing)
    if key not in _MODELS:
        from edgefer.train.models import build

        model = build(recipe.arch)
        model.compile(
            optimizer=keras.optimizers.AdamW(recipe.lr, weight_decay=recipe.weight_decay),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing),
            metrics=["accuracy"],
        )
        _MODELS[key] = model
    return _MODELS[key]


def _restart_optimizer(optimizer, lr: float) -> None:
    """Zero the step count and moment estimates and set this round's learning rate.

    Optimizer state stays on the client and starts fresh each round, as in FedAvg; a
    moment estimate from another shard (a worker serves several clients) must not leak in.
    """
    for v in optimizer.variables:
        v.assign(np.zeros(v.shape, dtype=v.dtype))
    optimizer.learning_rate = lr


def _clip_when_asked(msg: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
    """Flower's client-side clipping, applied only when the server runs central DP.

    Flower's own mod rejects rounds without a clipping norm, which would make one client
    build unusable for federations without DP.
    """
    config = msg.content.config_records.get("config")
    if config is not None and KEY_CLIPPING_NORM in config:
        return fixedclipping_mod(msg, context, call_next)
    return call_next(msg, context)


def _recipe_from_server(text: str) -> Recipe:
    """The server's recipe, refused if it names settings this edgefer does not know.

    A device running an older edgefer than the server would otherwise train with a
    silently different recipe.
    """
    values = json.loads(text)
    unknown = set(values) - {f.name for f in fields(Recipe)}
    if unknown:
        raise ValueError(
            f"the server's recipe has settings edgefer {__version__} does not know: "
            f"{', '.join(sorted(unknown))}; update edgefer on this device"
        )
    return Recipe(**values)


client_app = ClientApp()


@client_app.train(mods=[_clip_when_asked])
def _client_train(msg: Message, context: Context) -> Message:
    """One round on this client: load the global weights, train locally, send weights back."""
    from dataclasses import replace

    import keras

    _limit_threads()
    config = msg.content["config"]
    recipe = _recipe_from_server(str(config["recipe"]))
    rnd, rounds, epochs = int(config["server-round"]), int(config["rounds"]), int(config["local-epochs"])
    data = local_shard(context.node_config, recipe, str(config["partition"]), float(config["alpha"]))
    who = int(context.node_config.get("partition-id", context.node_id % 1000))
    # A fresh shuffle and augmentation stream per round and client, still reproducible.
    local = replace(recipe, seed=recipe.seed + 1000 * rnd + who)
    keras.utils.set_random_seed(local.seed)

    model = _compiled_model(recipe)
    received = msg.content["arrays"]
    set_arrays(model, received)
    _restart_optimizer(model.optimizer, round_lr(recipe, rnd, rounds))
    onehot = np.eye(len(LABELS), dtype=np.float32)[data.labels]
    t0 = time.monotonic()
    ds = make_dataset(data.images, onehot, local, train=True)
    hist = model.fit(ds, epochs=epochs, shuffle=False, verbose=0).history
    sent = model_arrays(model)
    before, after = to_numpy(received), to_numpy(sent)
    norm = math.sqrt(sum(float(np.sum((after[k] - before[k]) ** 2)) for k in after))
    metrics = MetricRecord(
        {
            "num-examples": len(data),
            "train-loss": float(hist["loss"][-1]),
            "train-accuracy": float(hist["accuracy"][-1]),
            "update-norm": norm,
            "fit-seconds": time.monotonic() - t0,
        }
    )
    return Message(RecordDict({"arrays": sent, "metrics": metrics}), reply_to=msg)


# --- the server ---------------------------------------------------------------------------------


class RecordingFedAvg(FedAvg):
    """Flower's FedAvg with per-round bookkeeping and a round offset for resumed runs.

    ``keep_updates`` additionally keeps every client's returned weights and the weights
    sent out, so a test can recompute the average by hand.
    """

    def __init__(self, clients: int, round_offset: int = 0, keep_updates: bool = False) -> None:
        with _quiet_flower(logging.ERROR):  # it warns that client-side evaluation is off, which is the point
            super().__init__(
                fraction_train=1.0,
                fraction_evaluate=0.0,
                min_train_nodes=clients,
                min_evaluate_nodes=0,
                min_available_nodes=clients,
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


def _strategy(cfg: FedConfig, offset: int) -> tuple[Strategy, RecordingFedAvg]:
    inner = RecordingFedAvg(cfg.clients, round_offset=offset)
    if cfg.dp == "central":
        # Clients clip their update to dp_clip (L2); the server adds Gaussian noise of
        # std dp_noise * dp_clip / clients to the average.
        return DifferentialPrivacyClientSideFixedClipping(inner, cfg.dp_noise, cfg.dp_clip, cfg.clients), inner
    return inner, inner


@contextlib.contextmanager
def _quiet_flower(level: int = logging.WARNING) -> Iterator[None]:
    """Keep Flower's per-message INFO lines out of the way of edgefer's per-round progress."""
    logger = logging.getLogger("flwr")
    old = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(old)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


def _same_run(settings: dict) -> dict:
    """Settings that define a run; the thread count may change when a run is resumed elsewhere,
    and settings added after a run started count at their defaults (older runs still resume)."""
    full = {**run_config(Recipe(), FedConfig()), **settings}
    return {k: v for k, v in full.items() if k != "threads"}


def _val_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0))))


def refuse_centralized_only(recipe: Recipe) -> None:
    """Refuse recipe settings a federation cannot honour, before any data is loaded: silently
    training without them would report a recipe that was not run."""
    unsupported = []
    if recipe.teachers and recipe.distill > 0:
        unsupported.append("--teacher (clients would need the teachers)")
    if recipe.average_from:
        unsupported.append("--average-from")
    if recipe.lr_floor != Recipe.lr_floor:
        unsupported.append("--lr-floor (the rounds follow round_lr's own schedule)")
    if unsupported:
        raise SystemExit(f"for centralized training only: {', '.join(unsupported)}")


def serve(
    grid: Grid,
    recipe: Recipe,
    cfg: FedConfig,
    data_dir: str | None,
    out_dir: str | Path,
    log: Callable[[str], None] = print,
    export_to: str | Path | None = None,
    strategy_hook: Callable[[RecordingFedAvg], None] | None = None,
    *,
    train_set: Dataset | None = None,
    extra: dict | None = None,
) -> dict:
    """The ServerApp's work: run (or resume) the rounds, then validate, test and export.

    ``train_set`` spares a second load when the caller already holds FER2013 train;
    ``extra`` lands in the report's ``federated`` section.
    """
    import keras

    from edgefer.train.models import build, count_flops

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state_path, global_path, best_path = out / "state.json", out / "global.npz", out / "best.npz"
    settings = run_config(recipe, cfg)
    refuse_centralized_only(recipe)

    if train_set is None:
        train_set = load_fer2013(data_dir, "train", limit_per_class=recipe.limit_per_class)
    full = train_set
    keep, held = stratified_split(full.labels, recipe.val_fraction, recipe.seed)
    va = full.subset(held)
    log(f"server: validation {len(va)} images {va.class_counts()}")

    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    if state and _same_run(state.get("settings", {})) != _same_run(settings):
        raise SystemExit(f"{state_path}: checkpoint was made with other settings; use a fresh --out")
    keras.utils.set_random_seed(recipe.seed)
    model = build(recipe.arch)
    if state and global_path.exists():
        with np.load(global_path) as z:
            set_arrays(model, dict(z))
        log(f"resuming from {global_path} after round {state['round']}")
    else:
        start_from(model, recipe, log)  # e.g. fine-tuning a centrally trained model on the devices
        state = {"settings": settings, "round": 0, "history": [], "best_val": -1.0, "best_round": 0}
    done = int(state["round"])
    log(
        f"{recipe.arch}: {model.count_params():,} parameters, {count_flops(model) / 1e6:.1f} MFLOPs; "
        f"{cfg.clients} clients, rounds {done + 1}..{cfg.rounds} of {cfg.local_epochs} local epochs, "
        f"partition {cfg.partition}, DP {cfg.dp}"
    )

    strategy, inner = _strategy(cfg, done)
    if strategy_hook:
        strategy_hook(inner)
    clock = {"t": time.monotonic(), "per": []}

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        rnd = server_round + done
        if server_round == 0 and done:
            return None  # a resumed run evaluated this model before it stopped
        if server_round and inner.aggregated_round != rnd:
            failures = inner.rounds.get(rnd, {}).get("failures", [])
            raise RuntimeError(
                f"round {rnd}: no client update was aggregated "
                f"({'; '.join(failures) or 'see the client errors logged above'})"
            )
        for failure in inner.rounds.get(rnd, {}).get("failures", []):
            log(f"round {rnd}: client failed: {failure}")
        set_arrays(model, arrays)
        probs = predict_probs(model, va.images)
        res = summary(va.labels, probs.argmax(1), LABELS)
        info = inner.rounds.get(rnd, {})
        m = info.get("metrics", {})
        row = {
            "round": rnd,
            "val_accuracy": res["accuracy"],
            "val_macro_f1": res["macro_f1"],
            "val_loss": _val_loss(probs, va.labels),
            "train_loss": m.get("train-loss"),
            "train_accuracy": m.get("train-accuracy"),
            "update_norm": m.get("update-norm"),
            "clients": info.get("clients", 0),
            "failures": len(info.get("failures", [])),
            "examples": sum(info.get("examples", [])),
        }
        state["history"].append(row)
        state["round"] = rnd
        _save_npz(global_path, to_numpy(arrays))
        if row["val_accuracy"] >= state["best_val"]:  # on a tie the later, longer-trained model wins
            state["best_val"], state["best_round"] = row["val_accuracy"], rnd
            _save_npz(best_path, to_numpy(arrays))
        _write_json(state_path, state)
        now = time.monotonic()
        if server_round:
            clock["per"].append(now - clock["t"])
        clock["t"] = now
        if server_round:
            per = float(np.mean(clock["per"]))
            eta = per * (cfg.rounds - rnd) / 60
            log(
                f"round {rnd}/{cfg.rounds} val_acc {row['val_accuracy']:.4f} val_loss {row['val_loss']:.4f} "
                f"train_loss {row['train_loss'] or 0:.4f} clients {row['clients']} ({row['failures']} failed) "
                f"update_norm {row['update_norm'] or 0:.2f} ({per:.0f} s/round, ETA {eta:.0f} min)"
            )
        else:
            log(f"round 0 (initial model) val_acc {row['val_accuracy']:.4f} val_loss {row['val_loss']:.4f}")
        return MetricRecord({"accuracy": row["val_accuracy"], "loss": row["val_loss"]})

    if done < cfg.rounds:
        train_config = ConfigRecord(
            {
                "recipe": json.dumps(asdict(recipe)),
                "rounds": cfg.rounds,
                "local-epochs": cfg.local_epochs,
                "partition": cfg.partition,
                "alpha": float(cfg.alpha),
            }
        )
        with _quiet_flower():
            strategy.start(
                grid=grid,
                initial_arrays=model_arrays(model),
                num_rounds=cfg.rounds - done,
                timeout=ROUND_TIMEOUT_S,
                train_config=train_config,
                evaluate_fn=evaluate,
            )

    return _finish(model, recipe, cfg, state, full.subset(keep), va, data_dir, out, log, export_to, extra or {})


def _finish(model, recipe, cfg, state, tr, va, data_dir, out, log, export_to, extra: dict) -> dict:
    """Best round -> validation, test, figures, TFLite and report.json, as the centralized path."""
    from edgefer.train.models import count_flops

    with np.load(out / "best.npz") as z:
        set_arrays(model, dict(z))
    model.save(out / "best.keras")
    history = state["history"]
    _rounds_table(history, out / "rounds.csv")
    dp = f", DP z={cfg.dp_noise} C={cfg.dp_clip}" if cfg.dp != "none" else ""
    _rounds_png(history, out / "rounds.png", f"{recipe.arch}: FedAvg, {cfg.clients} clients, {cfg.partition}{dp}")
    for line in _table_lines(history):
        log(line)
    e = cfg.local_epochs
    report: dict = {
        "arch": recipe.arch,
        "params": model.count_params(),
        "flops": count_flops(model),
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
            **extra,
            "history": history,
        },
    }
    # As in the centralized path: batch-norm statistics recomputed on the training split the
    # server holds (the faces it also calibrates int8 on), kept only if validation improves.
    report["precise_bn"], report["validation"] = precise_bn_if_better(model, tr, va, log)
    dest = Path(export_to) if export_to else out
    evaluate_and_export(model, f"{recipe.arch}-federated", tr, va, data_dir, out, dest, report, log)
    _write_json(out / "report.json", report)
    log(f"best round {state['best_round']} (val_acc {state['best_val']:.4f})")
    return report


_COLUMNS = ("round", "val_accuracy", "val_macro_f1", "val_loss", "train_loss", "update_norm", "clients", "examples")


def _rounds_table(history: list[dict], path: Path) -> None:
    lines = [",".join(_COLUMNS)]
    lines += [",".join("" if r.get(c) is None else str(r[c]) for c in _COLUMNS) for r in history]
    path.write_text("\n".join(lines) + "\n")


def _table_lines(history: list[dict]) -> list[str]:
    out = ["round  val_acc  macro_f1  val_loss  train_loss  clients"]
    for r in history:
        tl = "" if r.get("train_loss") is None else f"{r['train_loss']:.4f}"
        out.append(
            f"{r['round']:5d}  {r['val_accuracy']:.4f}  {r['val_macro_f1']:.4f}    "
            f"{r['val_loss']:.4f}  {tl:>10}  {r['clients']:7d}"
        )
    return out


def _rounds_png(history: list[dict], path: Path, title: str) -> None:
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


# --- entry points -------------------------------------------------------------------------------

server_app = ServerApp()


@server_app.main()
def _deployed_main(grid: Grid, context: Context) -> None:
    """ServerApp of a deployment: every setting comes from the Flower App's run config."""
    recipe, cfg = from_run_config(dict(context.run_config))
    rc = context.run_config
    serve(
        grid,
        recipe,
        cfg,
        str(rc.get("data-dir", "")) or None,
        str(rc.get("out", "")) or "runs/federated",
        log=lambda m: print(m, flush=True),
        export_to=str(rc.get("export-to", "")) or None,
    )


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run(
    recipe: Recipe,
    cfg: FedConfig,
    data_dir: str | None,
    out_dir: str | Path,
    log: Callable[[str], None] = print,
    export_to: str | Path | None = None,
    strategy_hook: Callable[[RecordingFedAvg], None] | None = None,
) -> dict:
    """Simulate the federation on this machine (Flower Simulation Runtime); returns the report.

    Clients run in worker processes, ``cfg.threads`` TensorFlow threads each, as many at
    once as the cores allow; the server side runs in this process.
    """
    from flwr.simulation import run_simulation

    from edgefer.datasets import find_root

    root = find_root(data_dir)
    full = load_fer2013(root, "train", limit_per_class=recipe.limit_per_class)
    keep, _ = stratified_split(full.labels, recipe.val_fraction, recipe.seed)
    shards = part.partition(full.labels[keep], cfg.clients, cfg.partition, cfg.alpha, recipe.seed)
    skew = part.label_skew(full.labels[keep], shards, len(LABELS))
    for i, s in enumerate(shards):
        counts = np.bincount(full.labels[keep][s], minlength=len(LABELS))
        log(f"client {i}: {len(s)} images " + " ".join(f"{n}={c}" for n, c in zip(LABELS, counts, strict=True)))
    log(
        f"partition {cfg.partition}"
        + (f" (alpha {cfg.alpha})" if cfg.partition == "dirichlet" else "")
        + f": label skew {skew:.3f} (mean total-variation distance from the overall mix)"
    )
    extra = {"engine": "flower-simulation", "partition_sizes": [len(s) for s in shards], "label_skew": skew}

    parallel = max(1, min(cfg.clients, (os.cpu_count() or 1) // cfg.threads))
    result: dict = {}
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        result["report"] = serve(
            grid, recipe, cfg, str(root), out_dir, log, export_to, strategy_hook, train_set=full, extra=extra
        )

    env = {
        ENV_DATA: str(root),
        ENV_THREADS: str(cfg.threads),
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
    }
    backend = {
        "client_resources": {"num_cpus": cfg.threads, "num_gpus": 0.0},
        "init_args": {"num_cpus": parallel * cfg.threads, "num_gpus": 0, "include_dashboard": False},
    }
    with _environ(env), _quiet_flower():
        run_simulation(server, client_app, num_supernodes=cfg.clients, backend_config=backend)
    return result["report"]


def write_app(
    dest: str | Path,
    recipe: Recipe,
    cfg: FedConfig,
    *,
    data_dir: str | None = None,
    out: str = "runs/federated",
    export_to: str | None = None,
) -> Path:
    """A Flower App folder (just ``pyproject.toml``) for ``flwr run`` against a SuperLink.

    The app's code is the installed edgefer package on the server and on every device, so
    the bundle carries settings only; SuperNodes need not install anything at run time.
    """
    import tomli_w

    # The ServerApp runs in a process of the SuperLink, whose working folder is not the caller's.
    absolute = {"data-dir": data_dir, "out": out, "export-to": export_to}
    config = {k: str(Path(v).resolve()) if v else "" for k, v in absolute.items()}
    config.update(run_config(recipe, cfg))
    doc = {
        "project": {
            "name": "edgefer-federated",
            "version": __version__,
            "license": "Apache-2.0",
            "description": "edgefer FedAvg training (code from the installed edgefer package)",
            "dependencies": [],
        },
        "tool": {
            "flwr": {
                "app": {
                    "publisher": "edgefer",
                    "components": {
                        "serverapp": "edgefer.train.federated:server_app",
                        "clientapp": "edgefer.train.federated:client_app",
                    },
                    "config": config,
                }
            }
        },
    }
    path = Path(dest)
    path.mkdir(parents=True, exist_ok=True)
    (path / "pyproject.toml").write_text(tomli_w.dumps(doc))
    return path / "pyproject.toml"
