"""What the frame path does to each face's probabilities before they are counted: averaged along
its track (``classifier.smoothing``), the training mix's lean taken out (``classifier.balance``),
then sharpened (``classifier.temperature``)."""

from __future__ import annotations

import numpy as np

from edgefer.config import parse
from edgefer.framepath import FER2013_TRAIN_MIX, Calibration, TrackMemory, calibrate

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
    assert (c.temperature, c.balance, c.smoothing) == (chosen["temperature"], chosen["balance"], chosen["smoothing"])


def test_a_face_reading_is_averaged_along_its_track_and_only_its_own() -> None:
    memory = TrackMemory(0.75)
    a, b = np.array([1.0, 0, 0, 0], np.float32), np.array([0, 1.0, 0, 0], np.float32)
    assert np.allclose(memory.update(np.stack([a, b]), [1, 2]), [a, b])  # a new track starts from its frame
    out = memory.update(np.stack([b, b]), [1, 2])
    assert np.allclose(out[0], 0.25 * b + 0.75 * a)  # track 1 changed: a quarter of the way
    assert np.allclose(out[1], b)  # track 2 did not
    out = memory.update(b[None], [1])
    assert np.allclose(out[0], 0.25 * b + 0.75 * (0.25 * b + 0.75 * a))


def test_a_poor_crop_leaves_the_memory_alone_and_an_ended_track_is_forgotten() -> None:
    memory = TrackMemory(0.5)
    a, b = np.array([1.0, 0, 0, 0], np.float32), np.array([0, 1.0, 0, 0], np.float32)
    memory.update(a[None], [7])
    assert np.allclose(memory.update(b[None], [7], keep=np.array([False]))[0], b)  # passed through
    assert np.allclose(memory.update(b[None], [7])[0], 0.5 * a + 0.5 * b)  # remembered a, not b
    memory.forget({8})
    assert np.allclose(memory.update(b[None], [7])[0], b)  # track 7 ended: a new start
    assert memory.update(np.zeros((0, 4), np.float32), []).shape == (0, 4)


def test_no_smoothing_returns_each_frame_as_it_is() -> None:
    p = np.array([[0.1, 0.6, 0.2, 0.1]], np.float32)
    q = p[:, ::-1].copy()
    memory = TrackMemory(0.0)
    assert memory.update(p, [1]) is p
    assert memory.update(q, [1]) is q  # nothing of the last frame


def test_the_frame_path_averages_a_face_along_its_track_but_never_a_folder_of_photos() -> None:
    """Through the daemon's own frame path on a real photograph: the second reading of the same
    face is the configured mix of its own frame and the first reading; photos of a folder are
    read each on its own."""
    from pathlib import Path

    from edgefer.bench.faces import find_photos, load_photo
    from edgefer.faces import build_face_stage
    from edgefer.framepath import FramePath
    from edgefer.service import build_classifier

    real_posed = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "real-posed"
    gray = load_photo(find_photos(real_posed)[0][2])
    brighter = np.clip(gray.astype(np.int16) + 25, 0, 255).astype(np.uint8)  # the same face, other light
    cfg = parse("[classifier]\ntemperature = 1\nbalance = 0\nsmoothing = 0.6\n")
    clf = build_classifier(cfg)
    for stills in (False, True):
        path = FramePath.of(build_face_stage(cfg.faces), clf, cfg.classifier, stills=stills)
        first, second = path.process(gray), path.process(brighter)
        assert len(first.faces) == len(second.faces) == 1
        own = clf.predict(path.stage.crops(brighter, second.faces))[0]
        assert not np.allclose(own, first.probs[0], atol=1e-3)  # the two frames read differently
        assert path.counting() == {"smoothing": 0.0 if stills else 0.6, "balance": 0.0, "temperature": 1.0}
        if stills:
            assert second.tracks != first.tracks and np.allclose(second.probs[0], own, atol=1e-6)
        else:
            assert second.tracks == first.tracks
            assert np.allclose(second.probs[0], 0.4 * own + 0.6 * first.probs[0], atol=1e-6)
