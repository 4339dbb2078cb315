"""The clips of benchmarks.mixes: faces drawn in a random mix, as many as asked, repeats only
when a class runs short; the settings scored there are ones the daemon accepts; and the
smoothing rule keeps a weight only when it pays."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.estimators import SETTINGS, ClipRun
from benchmarks.mixes import SMOOTHING, choose_smoothing, mixed_faces
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


def clip_of_readings(rng: np.random.Generator, wrong: float) -> ClipRun:
    """60 faces of 8 frames each, one track a face; a frame is read as another emotion with
    probability ``wrong``, each reading a confident 0.85 on the emotion it names."""
    truth = rng.integers(0, 4, 60).repeat(8)
    named = np.where(rng.random(len(truth)) < wrong, (truth + rng.integers(1, 4, len(truth))) % 4, truth)
    probs = np.full((len(truth), 4), 0.05, np.float32)
    probs[np.arange(len(truth)), named] = 0.85
    tracks = np.arange(60).repeat(8)
    empty = np.zeros((0, 4))
    return ClipRun(probs, tracks, truth, truth, np.ones(len(truth), bool), np.zeros(len(truth), int), empty, tracks)


def test_smoothing_is_kept_when_frames_err_alone_and_not_when_they_do_not() -> None:
    rng = np.random.default_rng(0)
    noisy = [clip_of_readings(rng, 0.4) for _ in range(3)]
    l1, weight = choose_smoothing(noisy, 0.2, 0.0)
    assert set(l1) == set(SMOOTHING)
    assert weight > 0 and l1[weight] <= l1[0.0] - 0.01  # the frames' own errors average out
    clean = [clip_of_readings(rng, 0.0) for _ in range(3)]
    l1, weight = choose_smoothing(clean, 0.2, 0.0)
    assert weight == 0.0 and max(l1.values()) < 0.01  # nothing to average away: no weight is kept
