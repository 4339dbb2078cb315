"""What the frame path does to each face's probabilities before they are counted: the training
mix's lean taken out (``classifier.balance``), then sharpened (``classifier.temperature``)."""

from __future__ import annotations

import numpy as np

from edgefer.config import parse
from edgefer.framepath import FER2013_TRAIN_MIX, Calibration, calibrate

ORDER = ("angry", "happy", "sad", "neutral")
MIX = np.array([FER2013_TRAIN_MIX[lab] for lab in ORDER], float)


def test_no_temperature_and_no_balance_leave_the_probabilities_as_they_are() -> None:
    p = np.array([[0.1, 0.6, 0.2, 0.1]], np.float32)
    assert calibrate(p, 1.0) is p
    assert calibrate(p, 1.0, MIX, 0.0) is p


def test_sharpening_keeps_the_order_and_raises_the_top() -> None:
    p = np.array([[0.1, 0.5, 0.3, 0.1], [0.25, 0.25, 0.25, 0.25]], np.float32)
    q = calibrate(p, 0.2)
    assert np.allclose(q.sum(axis=1), 1)
    assert q[0].argmax() == 1 and q[0, 1] > 0.9  # (0.5/0.3)^5 = 12.9 times the runner-up
    assert np.allclose(q[1], 0.25)  # a tie stays a tie


def test_full_balance_turns_the_training_mix_into_no_preference() -> None:
    """A face the network reads exactly as the training mix says nothing about which emotion it
    shows; with the mix divided out it is read as such, every emotion equally likely."""
    p = (MIX / MIX.sum())[None].astype(np.float32)
    assert np.allclose(calibrate(p, 1.0, MIX, 1.0), 0.25, atol=1e-6)
    half = calibrate(p, 1.0, MIX, 0.5)[0]
    # half the lean is left: the order of the mix, flatter
    assert list(np.argsort(half)) == list(np.argsort(MIX))
    assert half.max() - half.min() < (MIX / MIX.sum()).max() - (MIX / MIX.sum()).min()


def test_balance_moves_a_doubtful_face_toward_the_rarer_emotion() -> None:
    """Happy is the commonest training emotion (0.34), angry the rarest (0.19): a face the network
    finds equally angry and happy is angry once the training mix is taken out."""
    p = np.array([[0.45, 0.45, 0.05, 0.05]], np.float32)
    assert calibrate(p, 0.2, MIX, 0.5)[0].argmax() == 0
    assert calibrate(p, 0.2)[0, 0] == calibrate(p, 0.2)[0, 1]


def test_the_configured_calibration_follows_the_classifier_label_order() -> None:
    cfg = parse("[classifier]\ntemperature = 0.5\nbalance = 1\n").classifier
    labels = ("neutral", "sad", "happy", "angry")  # a model whose outputs come in another order
    cal = Calibration.of(cfg, labels)
    assert cal.mix == tuple(float(FER2013_TRAIN_MIX[lab]) for lab in labels)
    p = np.array([[0.4, 0.1, 0.4, 0.1]], np.float32)  # neutral and happy alike
    q = cal(p)[0]
    assert q[0] > q[2]  # neutral (0.24 of training faces) over happy (0.34)
    assert np.allclose(q, calibrate(p, 0.5, np.array(cal.mix), 1.0)[0])


def test_the_daemon_defaults_are_the_ones_the_benchmark_chose() -> None:
    """benchmarks/results/mixes.json records the rule's choice; the defaults must be it."""
    import json
    from pathlib import Path

    chosen = json.loads((Path(__file__).parents[1] / "benchmarks/results/mixes.json").read_text())["chosen"]
    c = parse("").classifier
    assert (c.temperature, c.balance) == (chosen["temperature"], chosen["balance"])
