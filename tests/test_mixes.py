"""The clips of benchmarks.mixes: faces drawn in a random mix, as many as asked, repeats only
when a class runs short; and the settings scored there are ones the daemon accepts."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.estimators import SETTINGS
from benchmarks.mixes import mixed_faces
from edgefer.config import ConfigError, parse


def test_a_mixed_clip_holds_the_faces_of_its_mix_and_repeats_only_a_short_class() -> None:
    labels = np.repeat(np.arange(4), [50, 50, 50, 5])  # neutral runs short
    seen_skewed = False
    for seed in range(20):
        idx, mix = mixed_faces(labels, 40, np.random.default_rng(seed))
        assert len(idx) == 40 and np.isclose(mix.sum(), 1.0)
        counts = np.bincount(labels[idx], minlength=4)
        assert np.array_equal(counts / 40, mix)  # the mix reported is the clip's own
        for c in range(3):  # classes with enough faces are never repeated
            assert len(set(idx[labels[idx] == c])) == counts[c]
        seen_skewed |= mix.max() >= 0.5
    assert seen_skewed  # flat Dirichlet mixes are far from uniform, often
    a, _ = mixed_faces(labels, 40, np.random.default_rng(3))
    b, _ = mixed_faces(labels, 40, np.random.default_rng(3))
    assert np.array_equal(a, b)  # seeded


def test_the_scored_settings_are_ones_the_daemon_accepts() -> None:
    for t, b in SETTINGS.values():
        c = parse(f"[classifier]\ntemperature = {t}\nbalance = {b}\n").classifier
        assert (c.temperature, c.balance) == (t, b)
    assert len(SETTINGS) == 12  # four temperatures, each with three balances
    with pytest.raises(ConfigError, match="temperature"):
        parse("[classifier]\ntemperature = 0.1\n")
    with pytest.raises(ConfigError, match="balance"):
        parse("[classifier]\nbalance = 1.5\n")
