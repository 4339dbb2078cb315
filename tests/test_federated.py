"""Federated training: the partitioners, the settings plumbing, and real Flower rounds.

The end-to-end test runs two simulated Flower clients on a few hundred FER2013 faces and
recomputes FedAvg by hand from the weights the clients actually returned, so a change in
Flower's aggregation (or in how edgefer reports example counts) cannot pass unnoticed.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, fields
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from edgefer.train import partition as part


@pytest.fixture(autouse=True)
def _keep_environment():
    """Flower's simulation starts Ray, which writes PYTHONPATH (this venv's site-packages
    among it) and more into the process environment; later tests that start a fresh Python
    must not inherit that."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def _labels(n: int = 4000, seed: int = 0) -> np.ndarray:
    # FER2013-like imbalance over the four classes.
    return np.random.default_rng(seed).choice(4, size=n, p=[0.25, 0.45, 0.15, 0.15])


def _assert_exact_cover(parts: list[np.ndarray], n: int) -> None:
    every = np.concatenate(parts)
    assert len(every) == n, "an index is missing or used twice"
    assert np.array_equal(np.sort(every), np.arange(n))


@pytest.mark.parametrize("n,clients", [(1003, 4), (10, 3), (7, 7)])
def test_iid_sizes_differ_by_at_most_one_and_cover_everything(n: int, clients: int) -> None:
    parts = part.iid(n, clients, seed=3)
    sizes = [len(p) for p in parts]
    assert len(parts) == clients
    assert max(sizes) - min(sizes) <= 1
    _assert_exact_cover(parts, n)


@pytest.mark.parametrize("alpha", [0.05, 0.5, 5.0])
def test_dirichlet_uses_every_index_once_and_leaves_no_client_empty(alpha: float) -> None:
    labels = _labels()
    parts = part.dirichlet(labels, 6, alpha, seed=11)
    _assert_exact_cover(parts, len(labels))
    assert min(len(p) for p in parts) >= 1


def test_dirichlet_skews_labels_and_alpha_controls_how_much() -> None:
    labels = _labels()
    skew = {a: part.label_skew(labels, part.dirichlet(labels, 3, a, seed=5), 4) for a in (0.1, 1.0, 1000.0)}
    iid = part.label_skew(labels, part.iid(len(labels), 3, seed=5), 4)
    assert iid < 0.05
    assert skew[0.1] > 0.3, skew
    assert skew[0.1] > skew[1.0] > skew[1000.0]
    assert skew[1000.0] < 0.05
    # Under strong skew some client's dominant class differs from the overall majority (happy).
    mixes = [np.bincount(labels[p], minlength=4) / len(p) for p in part.dirichlet(labels, 3, 0.1, seed=5)]
    assert any(int(np.argmax(m)) != 1 for m in mixes)


@pytest.mark.parametrize("scheme", part.SCHEMES)
def test_partitions_are_reproducible_by_seed(scheme: str) -> None:
    labels = _labels()
    a = part.partition(labels, 3, scheme, 0.3, seed=42)
    b = part.partition(labels, 3, scheme, 0.3, seed=42)
    c = part.partition(labels, 3, scheme, 0.3, seed=43)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_partition_rejects_impossible_requests() -> None:
    with pytest.raises(ValueError):
        part.iid(2, 3, seed=0)
    with pytest.raises(ValueError):
        part.dirichlet(_labels(), 3, 0.0, seed=0)
    with pytest.raises(ValueError):
        part.partition(_labels(), 3, "shards", 0.5, seed=0)


def test_settings_round_trip_through_a_flower_run_config() -> None:
    federated = pytest.importorskip("edgefer.train.federated")
    from edgefer.train.recipe import Recipe

    recipe = Recipe(arch="paper", lr=1e-3, limit_per_class=None, flip=False)
    cfg = federated.FedConfig(clients=6, rounds=4, local_epochs=2, partition="dirichlet", alpha=0.3, dp="central")
    values = federated.run_config(recipe, cfg)
    assert all(isinstance(v, bool | int | float | str) for v in values.values())
    assert federated.from_run_config(values) == (recipe, cfg)
    tuned = Recipe(init_from="models/edgefer.keras", teachers=["a.keras", "b.hdf5:signed"], distill=0.5)
    values = federated.run_config(tuned, cfg)
    assert all(isinstance(v, bool | int | float | str) for v in values.values())
    assert federated.from_run_config(values) == (tuned, cfg)
    with pytest.raises(ValueError):
        federated.FedConfig(partition="by-user")


def test_a_federation_refuses_settings_it_cannot_honour() -> None:
    from edgefer.train.federated import refuse_centralized_only
    from edgefer.train.recipe import Recipe

    refuse_centralized_only(Recipe(mixup=0.4))  # clients do mix their own faces
    with pytest.raises(SystemExit, match=r"centralized training only: --average-from, --lr-floor"):
        refuse_centralized_only(Recipe(average_from=3, lr_floor=1.0))
    with pytest.raises(SystemExit, match="--teacher"):
        refuse_centralized_only(Recipe(teachers=["t.keras"], distill=0.5))


def test_round_learning_rate_warms_up_then_decays() -> None:
    federated = pytest.importorskip("edgefer.train.federated")
    from edgefer.train.recipe import Recipe

    recipe = Recipe(lr=2e-3, warmup_fraction=0.15)
    lrs = [federated.round_lr(recipe, r, 20) for r in range(1, 21)]
    peak = int(np.argmax(lrs))
    assert 0 < peak < 5
    assert all(a <= b for a, b in pairwise(lrs[: peak + 1]))
    assert all(a >= b for a, b in pairwise(lrs[peak:]))
    assert max(lrs) <= recipe.lr and lrs[-1] < 0.05 * recipe.lr


def test_written_flower_app_passes_flowers_own_validation(tmp_path: Path) -> None:
    federated = pytest.importorskip("edgefer.train.federated")
    import tomllib

    from flwr.common.config import validate_config

    from edgefer.train.recipe import Recipe

    toml = federated.write_app(tmp_path / "app", Recipe(), federated.FedConfig(clients=3), data_dir="fer2013")
    doc = tomllib.loads(toml.read_text())
    ok, errors, _ = validate_config(doc, check_module=True, project_dir=toml.parent)
    assert ok, errors
    config = doc["tool"]["flwr"]["app"]["config"]
    # The SuperLink starts the ServerApp elsewhere, so paths are made absolute.
    assert config["clients"] == 3 and config["data-dir"] == str(Path("fer2013").resolve())
    assert federated.from_run_config(config)[1] == federated.FedConfig(clients=3)


def test_cli_federated_defaults_are_the_fedconfig_defaults() -> None:
    federated = pytest.importorskip("edgefer.train.federated")
    from edgefer.train.cli import parser

    args = parser().parse_args(["federated"])
    for f in fields(federated.FedConfig):
        if f.name != "threads":  # --threads 0 means one thread per simulated client
            assert getattr(args, f.name) == getattr(federated.FedConfig(), f.name), f.name


def _train_message(config: dict, monkeypatch: pytest.MonkeyPatch):
    from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    # Messages are stamped with the identity of the running task; outside a run, set one.
    for name in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, name, 1)
    sent = ArrayRecord({"a": Array(np.zeros(4, np.float32)), "b": Array(np.zeros((2, 2), np.float32))})
    return Message(
        RecordDict({"arrays": sent, "config": ConfigRecord(config)}), dst_node_id=1, message_type=MessageType.TRAIN
    )


@pytest.mark.parametrize("dp", [True, False])
def test_client_update_is_clipped_exactly_when_the_server_runs_central_dp(
    dp: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    federated = pytest.importorskip("edgefer.train.federated")
    from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict

    msg = _train_message({"clipping_norm": 1.0} if dp else {}, monkeypatch)
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})

    def trained(m: Message, _: Context) -> Message:
        arrays = ArrayRecord({"a": Array(np.full(4, 3.0, np.float32)), "b": Array(np.full((2, 2), 4.0, np.float32))})
        return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": 5})}), reply_to=m)

    reply = federated._clip_when_asked(msg, context, trained)
    returned = federated.to_numpy(reply.content["arrays"]).values()
    norm = np.sqrt(sum(float((v.astype(np.float64) ** 2).sum()) for v in returned))
    assert norm == pytest.approx(1.0 if dp else 10.0, rel=1e-5)


def test_central_dp_wraps_fedavg_with_flowers_noise_strategy() -> None:
    federated = pytest.importorskip("edgefer.train.federated")
    from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping

    cfg = federated.FedConfig(clients=3, dp="central", dp_noise=0.5, dp_clip=2.0)
    outer, inner = federated.make_strategy(cfg, offset=4)
    assert isinstance(outer, DifferentialPrivacyClientSideFixedClipping) and outer.strategy is inner
    assert (outer.noise_multiplier, outer.clipping_norm, outer.num_sampled_clients) == (0.5, 2.0, 3)
    assert inner.round_offset == 4 and inner.min_available_nodes == 3
    plain, same = federated.make_strategy(federated.FedConfig(), offset=0)
    assert plain is same


@pytest.mark.train
@pytest.mark.slow
def test_flower_rounds_produce_the_example_weighted_average_of_client_updates(
    fer2013: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two real Flower rounds with two clients; the global model must be their FedAvg, and
    the server side (this process) must finish and export without reading a training face."""
    federated = pytest.importorskip("edgefer.train.federated")
    import tensorflow as tf

    from edgefer.train.recipe import Recipe

    try:  # the server side runs in this process; keep it to one core like the clients
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass
    data = tmp_path / "fer2013"
    data.mkdir()
    (data / "train").symlink_to(fer2013 / "train")  # no test split: the run skips the test-set pass
    recipe = Recipe(limit_per_class=50, batch_size=32, seed=7)
    # Dirichlet shards differ in size, so an unweighted mean would not pass for FedAvg.
    cfg = federated.FedConfig(clients=2, rounds=2, local_epochs=1, partition="dirichlet", alpha=1.0, threads=1)
    strategies = []

    def keep(strategy) -> None:
        strategy.keep_updates = True
        strategies.append(strategy)

    lines: list[str] = []
    out = tmp_path / "run"
    opened = _forbid_client_data_in_server(monkeypatch, federated, data / "train")
    report = federated.run(recipe, cfg, str(data), federated.Destination(out, lines.append, strategy_hook=keep))
    assert opened == [], f"the server opened client training data: {opened[:3]}"
    (s,) = strategies

    final = dict(np.load(out / "global.npz"))
    sizes = report["federated"]["partition_sizes"]
    assert len(set(sizes)) == 2, "the test needs unequal shards"
    for rnd in (1, 2):
        updates = s.updates[rnd]
        assert sorted(n for n, _ in updates) == sorted(sizes)
        sent = s.sent[rnd]
        names = list(sent)
        for _, w in updates:
            assert list(w) == names
            assert any(not np.allclose(w[k], sent[k]) for k in names), "a client returned the weights unchanged"
        total = sum(n for n, _ in updates)
        expected = {k: sum(n * w[k].astype(np.float64) for n, w in updates) / total for k in names}
        unweighted = {k: np.mean([w[k].astype(np.float64) for _, w in updates], axis=0) for k in names}
        got = s.sent[rnd + 1] if rnd == 1 else final
        err = max(float(np.abs(got[k] - expected[k]).max()) for k in names)
        err_unweighted = max(float(np.abs(got[k] - unweighted[k]).max()) for k in names)
        assert err < 1e-5, f"round {rnd}: global model is not the FedAvg of the client updates ({err})"
        assert err_unweighted > 100 * max(err, 1e-9), "the average ignored the example counts"
    assert any(not np.allclose(final[k], s.sent[1][k]) for k in final), "the global model never changed"

    # Progress per round, a resumable checkpoint, the per-round table and plot, the export.
    assert any(line.startswith("round 1/2 ") for line in lines) and any(line.startswith("round 2/2 ") for line in lines)
    state = json.loads((out / "state.json").read_text())
    assert state["round"] == 2 and [r["round"] for r in state["history"]] == [0, 1, 2]
    assert (out / "rounds.png").stat().st_size > 0
    assert (out / "rounds.csv").read_text().count("\n") == 4
    centralized_fields = {"arch", "params", "flops", "best_epoch", "epochs_run", "recipe", "validation", "files"}
    saved = json.loads((out / "report.json").read_text())
    assert centralized_fields <= set(saved)
    assert saved["federated"]["clients"] == 2 and saved["federated"]["partition"] == "dirichlet"
    assert saved["recipe"] == asdict(recipe)
    for entry in saved["files"].values():
        assert Path(entry["path"]).stat().st_size > 10_000
        if "test" in entry:  # this run's data copy may hold no test split
            assert entry["test"]["argmax_agreement_with_keras"] > 0.9

    # Batch-norm statistics came from the clients' statistics round, not from the server.
    bn = saved["client_bn"]
    assert bn["clients"] == 2 and bn["faces"] == sum(sizes)
    assert saved["federated"]["server_data"].startswith("its own held-out faces")


def _forbid_client_data_in_server(monkeypatch: pytest.MonkeyPatch, federated, train_dir: Path) -> list[str]:
    """From the moment the server starts serving, any image read under ``train_dir`` in this
    process (the server's; simulated clients run in Ray worker processes) raises and is
    recorded. Returns the list of offending reads."""
    import cv2

    from edgefer import datasets

    opened: list[str] = []
    serving = {"on": False}
    real_imread, real_csv, real_serve = cv2.imread, datasets._load_csv, federated.serve
    roots = (str(train_dir.absolute()), str(train_dir.resolve()))

    def under_train(path) -> bool:
        p = Path(path)
        return str(p.absolute()).startswith(roots) or str(p.resolve()).startswith(roots)

    def imread(path, *args, **kwargs):
        if serving["on"] and under_train(path):
            opened.append(str(path))
            raise PermissionError(f"server process read client training data: {path}")
        return real_imread(path, *args, **kwargs)

    def load_csv(path, *args, **kwargs):
        if serving["on"]:
            opened.append(str(path))
            raise PermissionError(f"server process read a dataset file: {path}")
        return real_csv(path, *args, **kwargs)

    def serve(*args, **kwargs):
        serving["on"] = True
        try:
            return real_serve(*args, **kwargs)
        finally:
            serving["on"] = False

    monkeypatch.setattr(cv2, "imread", imread)
    monkeypatch.setattr(datasets, "_load_csv", load_csv)
    monkeypatch.setattr(federated, "serve", serve)
    return opened


def test_the_server_guard_catches_a_server_that_reads_training_faces(
    few_faces: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guard of the end-to-end test is not vacuous: a server that loads the training
    split (as the server once did for batch-norm statistics) is stopped and named, while
    reading PublicTest stays allowed."""
    federated = pytest.importorskip("edgefer.train.federated")
    from edgefer.datasets import load_fer2013

    def pooling_server(data_dir: Path) -> int:
        return len(load_fer2013(data_dir, "test")) + len(load_fer2013(data_dir, "train"))

    monkeypatch.setattr(federated, "serve", pooling_server)
    opened = _forbid_client_data_in_server(monkeypatch, federated, few_faces / "train")
    assert len(load_fer2013(few_faces, "train")) > 0  # outside serving the harness may read
    with pytest.raises(PermissionError, match="client training data"):
        federated.serve(few_faces)
    assert len(opened) == 1 and "train" in opened[0]


def test_pooled_batch_norm_statistics_equal_those_of_all_clients_faces_together() -> None:
    """Pooling per-client means and variances must give the statistics of the union, with
    the spread between client means counted (label-skewed clients differ in mean)."""
    from edgefer.train.fed_records import pool_bn_statistics

    rng = np.random.default_rng(0)
    clients = [
        rng.normal(loc, scale, size=(n, 5)) for loc, scale, n in ((0.0, 1.0, 40), (3.0, 0.5, 200), (-1.0, 2.0, 7))
    ]
    key = "block/bn/moving_"
    parts = [(len(x), {key + "mean": x.mean(0), key + "variance": x.var(0)}) for x in clients]
    pooled = pool_bn_statistics(parts)
    union = np.concatenate(clients)
    assert np.allclose(pooled[key + "mean"], union.mean(0), atol=1e-5)
    assert np.allclose(pooled[key + "variance"], union.var(0), rtol=1e-5)
    within_only = sum(n * s[key + "variance"] for n, s in parts) / len(union)
    assert np.all(pooled[key + "variance"] > within_only + 0.5), "the spread of client means was left out"
    with pytest.raises(ValueError, match="without its moving_variance"):
        pool_bn_statistics([(3, {key + "mean": np.zeros(5)})])
    with pytest.raises(ValueError, match="different statistics"):
        pool_bn_statistics([parts[0], (5, {"other/moving_mean": np.zeros(5), "other/moving_variance": np.ones(5)})])
    with pytest.raises(ValueError, match="no client statistics"):
        pool_bn_statistics([])


def test_exact_epsilon_respects_the_classical_gaussian_mechanism_bound() -> None:
    """Dwork and Roth (2014), Theorem A.1: noise sigma = sqrt(2 ln(1.25 / delta)) / eps on a
    sensitivity-1 query gives (eps, delta)-DP for eps < 1. The exact curve must find an epsilon
    no larger, and not vacuously small either."""
    from edgefer.train.fed_privacy import exact_epsilon, gaussian_delta

    for eps in (0.2, 0.5, 0.9):
        sigma = math.sqrt(2 * math.log(1.25 / 1e-5)) / eps
        got = exact_epsilon(sigma, 1, 1e-5)
        assert 0.5 * eps < got <= eps
    # At epsilon 0, delta is the total-variation distance of N(0,1) and N(mu,1).
    mu = 1.3
    assert gaussian_delta(0.0, mu) == pytest.approx(math.erf(mu / (2 * math.sqrt(2))), rel=1e-9)
    # T rounds at noise z compose to one round at z / sqrt(T).
    assert exact_epsilon(2.0, 16) == pytest.approx(exact_epsilon(0.5, 1), rel=1e-6)
    # More noise, fewer rounds: less privacy spent.
    assert exact_epsilon(1.0, 6) < exact_epsilon(0.3, 6) and exact_epsilon(1.0, 3) < exact_epsilon(1.0, 6)


def test_exact_epsilon_agrees_with_google_dp_accounting_and_flowers_rdp_bound() -> None:
    """The privacy-loss-distribution accountant of Google's dp-accounting is tight for the
    Gaussian mechanism; Flower's RDP accountant (dp-accounting underneath) only bounds it."""
    pytest.importorskip("dp_accounting")
    from dp_accounting import dp_event
    from dp_accounting.pld import pld_privacy_accountant

    from edgefer.train.fed_privacy import exact_epsilon, rdp_epsilon

    for z, rounds in ((1.0, 6), (0.3, 6), (3.0, 20)):
        pld = pld_privacy_accountant.PLDAccountant()
        pld.compose(dp_event.GaussianDpEvent(z), rounds)
        exact = exact_epsilon(z, rounds, 1e-5)
        assert exact == pytest.approx(pld.get_epsilon(1e-5), rel=1e-4)
        assert exact < rdp_epsilon(z, rounds, clients=3, delta=1e-5) < 1.2 * exact


def test_dp_report_states_epsilon_and_delta() -> None:
    from edgefer.train.fed_config import DP_DELTA, FedConfig
    from edgefer.train.fed_privacy import dp_report, exact_epsilon

    cfg = FedConfig(clients=3, dp="central", dp_noise=1.0, dp_clip=4.0)
    report = dp_report(cfg, rounds=6)
    assert report["delta"] == DP_DELTA == 1e-5
    assert report["epsilon"] == pytest.approx(exact_epsilon(1.0, 6, 1e-5))
    assert (report["noise_multiplier"], report["clip"], report["rounds"]) == (1.0, 4.0, 6)
    with pytest.raises(ValueError, match="positive --dp-noise"):
        FedConfig(dp="central", dp_noise=0.0)


def test_the_rehearsal_server_folder_holds_exactly_the_faces_no_client_trains_on(
    few_faces: Path, tmp_path: Path
) -> None:
    federated = pytest.importorskip("edgefer.train.federated")
    from edgefer.datasets import load_fer2013, stratified_split
    from edgefer.train.recipe import Recipe

    recipe = Recipe(val_fraction=0.25)
    n = federated.write_server_set(few_faces, tmp_path / "server", recipe)
    server = load_fer2013(tmp_path / "server", "train")
    full = load_fer2013(few_faces, "train")
    keep, held = stratified_split(full.labels, recipe.val_fraction, recipe.seed)
    assert n == len(held) == len(server) > 0
    # Same faces, pixel for pixel (PNG is lossless), and none of the clients'.
    server_faces = {img.tobytes() for img in server.images}
    assert server_faces == {full.images[i].tobytes() for i in held}
    node = {"partition-id": 0, "num-partitions": 1, "data-dir": str(few_faces)}
    client = federated.local_shard(node, recipe, "iid", 0.5)
    assert len(client) == len(keep)
    assert not server_faces & {img.tobytes() for img in client.images}
    assert len(load_fer2013(tmp_path / "server", "test")) == len(load_fer2013(few_faces, "test"))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


@pytest.mark.train
@pytest.mark.slow
def test_a_real_superlink_with_two_supernodes_trains_and_exports(few_faces: Path, tmp_path: Path) -> None:
    """The deployment of docs/federated.md on one machine: a SuperLink, two SuperNodes each
    given its own shard, the server given only the rehearsal hold-out folder, ``flwr run``."""
    import subprocess
    import sys
    import time

    federated = pytest.importorskip("edgefer.train.federated")
    from edgefer.train.recipe import Recipe

    bindir = Path(sys.executable).parent
    home = tmp_path / "flwr-home"
    home.mkdir()
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}", "FLWR_HOME": str(home)}
    env.update({"EDGEFER_TRAIN_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"})
    recipe = Recipe(batch_size=16, seed=7)
    server_dir = tmp_path / "server"
    federated.write_server_set(few_faces, server_dir, recipe)
    out = tmp_path / "run"
    cfg = federated.FedConfig(clients=2, rounds=1, local_epochs=1)
    app = federated.write_app(tmp_path / "app", recipe, cfg, data_dir=str(server_dir), out=str(out))
    port = _free_port()
    (home / "config.toml").write_text(f'[superlink.local]\naddress = "127.0.0.1:{port}"\ninsecure = true\n')
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = []

    def start(name: str, *args: str) -> None:
        fh = (logs / f"{name}.log").open("w")
        procs.append(subprocess.Popen([str(bindir / args[0]), *args[1:]], env=env, stdout=fh, stderr=subprocess.STDOUT))

    try:
        start("superlink", "flower-superlink", "--insecure", "--port", str(port),
              "--disable-runtime-dependency-installation")  # fmt: skip
        # The SuperLink has no readiness signal of its own; its HTTP server listens once it has
        # started (SuperNodes retry anyway, `flwr run` does not).
        deadline = time.monotonic() + 60
        while not _listening(port):
            alive = procs[0].poll() is None and time.monotonic() < deadline
            assert alive, f"the SuperLink is not listening: {(logs / 'superlink.log').read_text()[-2000:]}"
            time.sleep(0.1)
        for i in range(2):
            node = f'data-dir="{few_faces}" partition-id={i} num-partitions=2'
            start(f"supernode{i}", "flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{port}",
                  "--port", str(_free_port()), "--node-config", node)  # fmt: skip
        done = subprocess.run(
            [str(bindir / "flwr"), "run", str(app.parent), "local", "--stream"],
            env=env, capture_output=True, text=True, timeout=1200,
        )  # fmt: skip
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    where = f"flwr run said: {done.stdout[-2000:]}{done.stderr[-2000:]}; logs in {logs}"
    assert (out / "report.json").exists(), where
    report = json.loads((out / "report.json").read_text())
    assert report["rounds_run"] == 1
    assert report["client_bn"]["clients"] == 2, report["client_bn"]
    assert report["client_bn"]["faces"] == len(
        federated.local_shard({"data-dir": str(few_faces)}, recipe, "iid", 0.5)
    ) - len(federated.load_fer2013(server_dir, "train"))
    assert all(Path(f["path"]).stat().st_size > 10_000 for f in report["files"].values())
    assert "test" in report["files"]["int8"], "the server's folder links PublicTest"
