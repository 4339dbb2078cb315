"""Settings of a federated run and how they travel as a Flower run config.

A Flower run config holds flat scalars with dashed keys; the centralized
:class:`~edgefer.train.recipe.Recipe` and the federation's :class:`FedConfig` are packed
into one such dict (and unpacked on the server of a deployment) by the functions here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from edgefer.train import partition as part
from edgefer.train.recipe import Recipe

DP_MODES = ("none", "central")
#: The delta at which a run's epsilon is reported. Client-level DP over a federation of
#: 3 to 15 devices: delta must stay far below 1 / (number of clients).
DP_DELTA = 1e-5


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
    #: Ship the last round instead of the best on validation. On a small budget the
    #: averaged moving batch-norm statistics lag far behind the weights, so per-round
    #: validation is near chance and "best" picks a round at random; the last round, with
    #: the clients' statistics, is then the model to compare.
    keep_last: bool = False
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
        if self.dp == "central" and self.dp_noise <= 0:
            raise ValueError("--dp central needs a positive --dp-noise: without noise there is no epsilon to state")


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


def _typed(name: str, v, default):
    """One run-config value back in the type of the dataclass field it came from."""
    if name == "limit_per_class":
        return int(v) or None
    if name == "init_from":
        return str(v) if v else None
    if name == "teachers":
        return [t for t in str(v).split(",") if t]
    if isinstance(default, bool):
        return bool(v)
    if isinstance(default, (int, float, str)):
        return type(default)(v)
    return v


def from_run_config(values: dict) -> tuple[Recipe, FedConfig]:
    """Inverse of :func:`run_config`; unknown keys are ignored, missing ones keep defaults."""

    def build(cls):
        defaults = cls()
        kw = {
            f.name: _typed(f.name, values[_key(f.name)], getattr(defaults, f.name))
            for f in fields(cls)
            if _key(f.name) in values
        }
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


def same_run(settings: dict) -> dict:
    """Settings that define a run; the thread count may change when a run is resumed elsewhere,
    and settings added after a run started count at their defaults (older runs still resume)."""
    full = {**run_config(Recipe(), FedConfig()), **settings}
    return {k: v for k, v in full.items() if k != "threads"}


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
