"""Federated training with Flower: FedAvg over client nodes that keep their faces.

One ClientApp (:mod:`edgefer.train.fed_client`) and one ServerApp
(:mod:`edgefer.train.fed_server`) serve both ways of running a federation:

* :func:`run` (``edgefer-train --federated``) emulates the clients on one machine with
  Flower's Simulation Runtime; FER2013 train is cut into a hold-out the server owns and
  per-client shards of the rest (IID or Dirichlet label skew).
* A deployment: a Flower SuperLink on a server, one SuperNode per device, and ``flwr run``
  on the Flower App folder that :func:`write_app` produces (docs/federated.md).

The server opens no client's data. It owns a labelled set of its own, disjoint from the
clients' faces, on which it validates each round, keeps the best and calibrates the int8
export; batch-norm statistics come from the clients in a final statistics round.

The model recipe is the centralized :class:`~edgefer.train.recipe.Recipe`. Its ``epochs``
and ``patience`` are not used here (``rounds`` x ``local_epochs`` replace them); its
one-cycle learning rate is applied at round granularity by :func:`round_lr`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from edgefer import LABELS, __version__
from edgefer.datasets import Dataset, load_fer2013, stratified_split
from edgefer.train import partition as part
from edgefer.train.fed_client import ENV_DATA, ENV_THREADS, _clip_when_asked, client_app, local_shard
from edgefer.train.fed_config import (
    DP_DELTA,
    DP_MODES,
    FedConfig,
    from_run_config,
    refuse_centralized_only,
    round_lr,
    run_config,
)
from edgefer.train.fed_records import model_arrays, pool_bn_statistics, set_arrays, to_numpy
from edgefer.train.fed_report import quiet_flower
from edgefer.train.fed_server import ROUND_TIMEOUT_S, Destination, RecordingFedAvg, make_strategy, serve
from edgefer.train.recipe import Recipe

__all__ = [
    "DP_DELTA",
    "DP_MODES",
    "ENV_DATA",
    "ENV_THREADS",
    "ROUND_TIMEOUT_S",
    "Destination",
    "FedConfig",
    "RecordingFedAvg",
    "_clip_when_asked",
    "client_app",
    "from_run_config",
    "local_shard",
    "make_strategy",
    "model_arrays",
    "pool_bn_statistics",
    "refuse_centralized_only",
    "round_lr",
    "run",
    "run_config",
    "serve",
    "server_app",
    "set_arrays",
    "to_numpy",
    "write_app",
    "write_server_set",
]

server_app = ServerApp()


@server_app.main()
def _deployed_main(grid: Grid, context: Context) -> None:
    """ServerApp of a deployment: every setting comes from the Flower App's run config.

    ``data-dir`` on the server is the server's own folder: all of its ``train/`` faces are
    the server's held-out set (disjoint from every device's), its ``test/`` scores the result.
    """
    recipe, cfg = from_run_config(dict(context.run_config))
    rc = context.run_config
    data_dir = str(rc.get("data-dir", "")) or None
    serve(
        grid,
        recipe,
        cfg,
        load_fer2013(data_dir, "train"),
        data_dir,
        Destination(
            str(rc.get("out", "")) or "runs/federated",
            log=lambda m: print(m, flush=True),
            export_to=str(rc.get("export-to", "")) or None,
        ),
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


def emulate(recipe: Recipe, cfg: FedConfig, root: Path, log) -> tuple[Dataset, dict]:
    """Play the devices' part of the data: cut FER2013 train into the server's hold-out and
    the clients' shards. Returns the hold-out and the shard description for the report.

    The simulated clients cut their own shard the same way (a pure function of the labels
    and the seed); nothing but the hold-out is handed to the server.
    """
    full = load_fer2013(root, "train", limit_per_class=recipe.limit_per_class)
    keep, held = stratified_split(full.labels, recipe.val_fraction, recipe.seed)
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
    return full.subset(held), extra


def run(recipe: Recipe, cfg: FedConfig, data_dir: str | None, dest: Destination) -> dict:
    """Simulate the federation on this machine (Flower Simulation Runtime); returns the report.

    Clients run in worker processes, ``cfg.threads`` TensorFlow threads each, as many at
    once as the cores allow; the server side runs in this process.
    """
    from flwr.simulation import run_simulation

    from edgefer.datasets import find_root

    refuse_centralized_only(recipe)
    root = find_root(data_dir)
    held, extra = emulate(recipe, cfg, root, dest.log)
    parallel = max(1, min(cfg.clients, (os.cpu_count() or 1) // cfg.threads))
    result: dict = {}
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        result["report"] = serve(grid, recipe, cfg, held, str(root), dest, extra)

    env = {
        ENV_DATA: str(root),
        ENV_THREADS: str(cfg.threads),
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
    }
    backend = {
        "client_resources": {"num_cpus": cfg.threads, "num_gpus": 0.0},
        "init_args": {"num_cpus": parallel * cfg.threads, "num_gpus": 0, "include_dashboard": False},
    }
    with _environ(env), quiet_flower():
        run_simulation(server, client_app, num_supernodes=cfg.clients, backend_config=backend)
    if "report" not in result:
        raise RuntimeError("the federated run ended without a report; see the errors logged above")
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
    ``data_dir`` is the server's own folder (see :func:`_deployed_main`).
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


def write_server_set(data_dir: str | Path, dest: str | Path, recipe: Recipe | None = None) -> int:
    """Write the server's own folder for a FER2013 rehearsal of a deployment.

    ``dest/train/<emotion>/`` receives exactly the hold-out that simulated clients and
    SuperNodes started with ``partition-id``/``num-partitions`` leave out (the same
    stratified split of ``recipe``), as PNG files; ``dest/test`` links to FER2013's test
    split. The server of the rehearsal is then given ``dest`` and nothing else, so it holds
    no face any device trains on. Returns the number of faces written.
    """
    import cv2

    from edgefer.datasets import find_root

    recipe = recipe or Recipe()
    root = find_root(data_dir)
    full = load_fer2013(root, "train", limit_per_class=recipe.limit_per_class)
    _, held = stratified_split(full.labels, recipe.val_fraction, recipe.seed)
    out = Path(dest)
    for i in held:
        folder = out / "train" / LABELS[int(full.labels[i])]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:06d}.png"
        if not cv2.imwrite(str(path), full.images[i]):
            raise OSError(f"{path}: could not write the image")
    if (root / "test").is_dir() and not (out / "test").exists():
        (out / "test").symlink_to((root / "test").resolve(), target_is_directory=True)
    return len(held)


def main(argv: list[str] | None = None) -> int:
    """``python -m edgefer.train.federated server-set --data-dir FER2013 --out DIR``."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m edgefer.train.federated")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("server-set", help="write the server's own hold-out folder for a FER2013 rehearsal")
    s.add_argument("--data-dir", required=True, help="FER2013 folder (train/ and test/)")
    s.add_argument("--out", required=True, help="the server's folder to create")
    s.add_argument("--limit-per-class", type=int, default=None, help="as given to the clients' recipe")
    args = p.parse_args(argv)
    n = write_server_set(args.data_dir, args.out, Recipe(limit_per_class=args.limit_per_class))
    print(f"wrote {n} held-out faces to {Path(args.out) / 'train'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
