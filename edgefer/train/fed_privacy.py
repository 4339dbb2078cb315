"""The privacy budget of a federated run under central DP with client-side clipping.

Each round every one of the ``clients`` clients clips its update to L2 norm C and the
server adds Gaussian noise of std z * C / clients to their uniform average, i.e. noise of
std z * C to the sum, whose sensitivity to adding or removing one client is C: one
Gaussian mechanism with noise multiplier z per round, without sampling amplification (all
clients take part in every round). The guarantee is client-level (a whole device's faces),
for the released global models; the per-round metrics the clients report are not covered.

Two accountants: Flower's RDP accountant (Google's ``dp-accounting`` underneath), and the
exact curve of the composed Gaussian mechanism. T rounds of noise multiplier z compose to
one Gaussian mechanism of noise multiplier z / sqrt(T), i.e. mu-GDP with mu = sqrt(T) / z
(composition of Gaussian mechanisms: Dong, Roth and Su, "Gaussian Differential Privacy",
2022), whose (epsilon, delta) curve is
delta(eps) = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2) (the analytic Gaussian
mechanism of Balle and Wang, ICML 2018). RDP's conversion only bounds that epsilon from above.
"""

from __future__ import annotations

import math

from scipy.optimize import brentq
from scipy.stats import norm

from edgefer.train.fed_config import DP_DELTA, FedConfig


def gaussian_delta(epsilon: float, mu: float) -> float:
    """delta(epsilon) of a mu-GDP mechanism (exact, not a bound)."""
    if mu <= 0:
        raise ValueError(f"mu must be positive, got {mu}")
    # e^eps * Phi(x) computed in log space: e^eps overflows for large epsilon.
    tail = math.exp(epsilon + norm.logcdf(-epsilon / mu - mu / 2))
    return float(norm.cdf(-epsilon / mu + mu / 2) - tail)


def gaussian_epsilon(mu: float, delta: float) -> float:
    """The smallest epsilon with delta(epsilon) <= ``delta`` for a mu-GDP mechanism."""
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if gaussian_delta(0.0, mu) <= delta:
        return 0.0
    hi = 1.0
    while gaussian_delta(hi, mu) > delta:
        hi *= 2
        if hi > 1e9:
            return math.inf
    return float(brentq(lambda e: gaussian_delta(e, mu) - delta, 0.0, hi, xtol=1e-10, rtol=1e-10))


def exact_epsilon(noise_multiplier: float, rounds: int, delta: float = DP_DELTA) -> float:
    """Epsilon at ``delta`` of ``rounds`` full-participation rounds at ``noise_multiplier``."""
    if noise_multiplier <= 0 or rounds < 1:
        raise ValueError("need a positive noise multiplier and at least one round")
    return gaussian_epsilon(math.sqrt(rounds) / noise_multiplier, delta)


def rdp_epsilon(noise_multiplier: float, rounds: int, clients: int, delta: float = DP_DELTA) -> float:
    """Epsilon at ``delta`` from Flower's RDP accountant for the same releases."""
    from flwr.supercore.privacy_accounting import (
        GaussianPrivacyEvent,
        NeighboringRelation,
        PrivacyConfig,
        SamplingMethod,
    )
    from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

    config = PrivacyConfig(
        target_delta=delta,
        population_size=clients,
        neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
        sampling_method=SamplingMethod.NO_AMPLIFICATION,
    )
    accountant = RdpAccountant(config)
    accountant.compose(GaussianPrivacyEvent(noise_multiplier, clients, clients), count=rounds)
    return float(accountant.get_epsilon(delta))


def dp_report(cfg: FedConfig, rounds: int, delta: float = DP_DELTA) -> dict:
    """The ``dp`` section of a run's report: the budget spent by ``rounds`` released rounds."""
    try:
        rdp: float | None = rdp_epsilon(cfg.dp_noise, rounds, cfg.clients, delta)
    except ImportError:  # Flower's accountant needs dp-accounting; the exact curve does not
        rdp = None
    return {
        "mechanism": "Gaussian, client-level, add/remove one client, every client in every round",
        "noise_multiplier": cfg.dp_noise,
        "clip": cfg.dp_clip,
        "rounds": rounds,
        "delta": delta,
        "epsilon": exact_epsilon(cfg.dp_noise, rounds, delta),
        "epsilon_rdp": rdp,
    }
