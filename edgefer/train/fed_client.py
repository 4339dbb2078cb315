"""The ClientApp: what runs on each device (or each simulated client) of a federation.

A client answers two kinds of message. A *train* message carries the global weights and the
training settings; the client trains on its own faces and answers with its weights, its
number of images and a few scalars (loss, accuracy, update norm). A *query* message, sent
once after the last round, carries the chosen global weights; the client answers with the
per-channel batch-norm means and variances of those weights on its own faces and their
number. Never an image, a face crop, a label or a file name.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import fields, replace

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import fixedclipping_mod
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from edgefer import LABELS, __version__
from edgefer.datasets import Dataset, load_fer2013, stratified_split
from edgefer.train import partition as part
from edgefer.train.average import recalibrate_bn
from edgefer.train.data import make_dataset
from edgefer.train.fed_config import round_lr
from edgefer.train.fed_records import bn_statistics, model_arrays, require_all, set_arrays, to_numpy
from edgefer.train.recipe import Recipe

#: Environment variables a simulated client inherits from the simulation runner.
ENV_DATA = "EDGEFER_FER2013"
ENV_THREADS = "EDGEFER_TRAIN_THREADS"
#: Faces a client passes through the network for its batch-norm statistics (recalibrate_bn's
#: default of 120 batches of 128).
BN_FACES = 120 * 128

_DATA: dict[tuple, Dataset] = {}
_MODELS: dict[tuple, object] = {}


def _limit_threads() -> None:
    """Pin TensorFlow to the thread count the runner chose, before it starts any pool."""
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
    server owns. Without them (a device with its own faces) it trains on all of
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


def _setup(msg: Message, context: Context) -> tuple[Recipe, Dataset, object]:
    """This client's recipe, faces and model loaded with the weights the server sent."""
    _limit_threads()
    config = msg.content["config"]
    recipe = _recipe_from_server(str(config["recipe"]))
    data = local_shard(context.node_config, recipe, str(config["partition"]), float(config["alpha"]))
    model = _compiled_model(recipe)
    require_all(model, msg.content["arrays"])
    set_arrays(model, msg.content["arrays"])
    return recipe, data, model


client_app = ClientApp()


@client_app.train(mods=[_clip_when_asked])
def _client_train(msg: Message, context: Context) -> Message:
    """One round on this client: load the global weights, train locally, send weights back."""
    import keras

    recipe, data, model = _setup(msg, context)
    config = msg.content["config"]
    rnd, rounds, epochs = int(config["server-round"]), int(config["rounds"]), int(config["local-epochs"])
    who = int(context.node_config.get("partition-id", context.node_id % 1000))
    # A fresh shuffle and augmentation stream per round and client, still reproducible.
    local = replace(recipe, seed=recipe.seed + 1000 * rnd + who)
    keras.utils.set_random_seed(local.seed)
    _restart_optimizer(model.optimizer, round_lr(recipe, rnd, rounds))
    onehot = np.eye(len(LABELS), dtype=np.float32)[data.labels]
    t0 = time.monotonic()
    hist = model.fit(make_dataset(data.images, onehot, local, train=True), epochs=epochs, shuffle=False, verbose=0)
    sent = model_arrays(model)
    before, after = to_numpy(msg.content["arrays"]), to_numpy(sent)
    norm = math.sqrt(sum(float(np.sum((after[k] - before[k]) ** 2)) for k in after))
    metrics = MetricRecord(
        {
            "num-examples": len(data),
            # Every client weighs the same under DP: the accountant's sensitivity assumes it.
            "unit-weight": 1,
            "train-loss": float(hist.history["loss"][-1]),
            "train-accuracy": float(hist.history["accuracy"][-1]),
            "update-norm": norm,
            "fit-seconds": time.monotonic() - t0,
        }
    )
    return Message(RecordDict({"arrays": sent, "metrics": metrics}), reply_to=msg)


@client_app.query()
def _client_bn_statistics(msg: Message, context: Context) -> Message:
    """Batch-norm statistics of the received weights on this client's clean faces.

    The server pools them (:func:`~edgefer.train.fed_records.pool_bn_statistics`) instead
    of recomputing them on faces it must not hold. What this releases beyond a train
    reply: per channel, the mean and variance of each layer's input over this client's
    faces (a few thousand numbers, aggregates over at least one batch of faces).
    """
    recipe, data, model = _setup(msg, context)
    who = int(context.node_config.get("partition-id", context.node_id % 1000))
    recalibrate_bn(model, data.images, seed=recipe.seed + who)
    stats = ArrayRecord({k: Array(v) for k, v in bn_statistics(model).items()})
    faces = min(len(data), BN_FACES)
    return Message(RecordDict({"bn": stats, "metrics": MetricRecord({"num-examples": faces})}), reply_to=msg)
