"""Splitting one labelled training set into per-client shards for federated experiments.

Real federations get their shards from the devices themselves; these partitioners emulate
them from FER2013 so that IID and label-skewed (non-IID) federations can be compared with
the centralized model on the same images. Every partitioner is a pure function of the
labels and a seed, so each simulated client can compute its own shard independently and
all of them agree on who holds which image.
"""

from __future__ import annotations

import numpy as np

SCHEMES = ("iid", "dirichlet")


def iid(n: int, num_clients: int, seed: int) -> list[np.ndarray]:
    """Shuffled, near-equal shards (sizes differ by at most one)."""
    _check(n, num_clients)
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, num_clients)]


def dirichlet(
    labels: np.ndarray, num_clients: int, alpha: float, seed: int, *, min_size: int = 1, max_tries: int = 1000
) -> list[np.ndarray]:
    """Label-skewed shards: each class is spread over the clients in Dirichlet(alpha) proportions.

    Small ``alpha`` (0.1) gives clients dominated by one or two emotions; large ``alpha``
    (100) approaches IID. Draws are repeated until every client holds at least
    ``min_size`` images, since an empty client would stall a FedAvg round.
    """
    labels = np.asarray(labels)
    _check(len(labels), num_clients)
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    if min_size * num_clients > len(labels):
        raise ValueError(f"{len(labels)} images cannot give {num_clients} clients {min_size} each")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(max_tries):
        shards: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            share = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(share)[:-1] * len(idx)).astype(int)
            for k, part in enumerate(np.split(idx, cuts)):
                shards[k].append(part)
        parts = [np.sort(np.concatenate(s)) for s in shards]
        if min(len(p) for p in parts) >= min_size:
            return parts
    raise ValueError(f"no Dirichlet({alpha}) draw in {max_tries} tries gave every client {min_size} images")


def partition(labels: np.ndarray, num_clients: int, scheme: str, alpha: float, seed: int) -> list[np.ndarray]:
    """Indices into ``labels`` for each client, by scheme name (see :data:`SCHEMES`)."""
    if scheme == "iid":
        return iid(len(labels), num_clients, seed)
    if scheme == "dirichlet":
        return dirichlet(labels, num_clients, alpha, seed)
    raise ValueError(f"unknown partition scheme {scheme!r} (known: {', '.join(SCHEMES)})")


def label_skew(labels: np.ndarray, parts: list[np.ndarray], num_classes: int) -> float:
    """Mean total-variation distance between each client's label mix and the overall mix.

    0 means every client sees the global class balance; 1 would mean disjoint classes.
    Reported with each federated run so IID and Dirichlet runs can be told apart at a glance.
    """
    labels = np.asarray(labels)
    overall = np.bincount(labels, minlength=num_classes) / max(len(labels), 1)
    dists = []
    for p in parts:
        mix = np.bincount(labels[p], minlength=num_classes) / max(len(p), 1)
        dists.append(0.5 * np.abs(mix - overall).sum())
    return float(np.mean(dists)) if dists else 0.0


def _check(n: int, num_clients: int) -> None:
    if num_clients < 1:
        raise ValueError(f"need at least one client, got {num_clients}")
    if n < num_clients:
        raise ValueError(f"{n} images cannot be shared by {num_clients} clients")
