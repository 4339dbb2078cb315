"""Mood statistics: every published figure against a hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgefer.mood import MoodTracker, emotion_entropy, positivity_ratio, share_intervals, window_name, window_stats

HAPPY = np.array([[0.05, 0.85, 0.05, 0.05]])
SAD = np.array([[0.1, 0.1, 0.7, 0.1]])
UNSURE = np.array([[0.3, 0.3, 0.2, 0.2]])


def test_positivity_ratio_is_smoothed_and_defined_without_negatives() -> None:
    assert positivity_ratio({"happy": 0, "sad": 0, "angry": 0, "neutral": 0}) is None
    assert positivity_ratio({"happy": 8, "sad": 1, "angry": 1, "neutral": 5}) == pytest.approx(9 / 3)
    assert positivity_ratio({"happy": 5, "sad": 0, "angry": 0, "neutral": 0}) == 6.0
    assert positivity_ratio({"happy": 0, "sad": 0, "angry": 0, "neutral": 4}) == 1.0


def test_entropy_bounds() -> None:
    assert emotion_entropy([1.0, 0, 0, 0]) == 0.0
    assert emotion_entropy([0.25] * 4) == pytest.approx(1.0)
    assert emotion_entropy([0.5, 0.5, 0, 0]) == pytest.approx(math.log(2) / math.log(4))


def test_window_stats_from_a_row_and_its_tracks() -> None:
    # angry happy sad neutral | uncertain frames frames_with_faces active poor
    row = np.array([1, 6, 1, 2, 3, 40, 12, 1, 4])
    # two tracks: 10 face-frames mostly happy, 3 mostly neutral: [n, sum p per label]
    tracks = np.array([[10, 0.5, 8.0, 0.5, 1.0], [3, 0.3, 0.3, 0.3, 2.1]])
    s = window_stats(row, tracks, ("angry", "happy", "sad", "neutral"), coverage=0.5)
    assert s["counts"] == {"angry": 1, "happy": 6, "sad": 1, "neutral": 2}
    assert s["faces"] == 13 and s["uncertain"] == 3 and s["frames"] == 40 and s["tracks"] == 2 and s["poor"] == 4
    assert s["shares"] == {"angry": round(0.8 / 13, 4), "happy": round(8.3 / 13, 4), "sad": round(0.8 / 13, 4),
                           "neutral": round(3.1 / 13, 4)}  # fmt: skip
    # the ratio over expected face-frames: (8.3 + 1) / (0.8 + 0.8 + 1)
    assert s["positivity_ratio"] == pytest.approx(9.3 / 2.6, abs=1e-4)
    assert s["flourishing"] is True
    assert s["neutral_share"] == round(3.1 / 13, 4) and s["dominant"] == "happy" and s["coverage"] == 0.5
    lo, hi = s["shares_ci95"]["happy"]
    assert lo < s["shares"]["happy"] < hi


def test_nothing_seen_gives_nulls_not_zeros() -> None:
    row = np.array([0, 0, 0, 0, 0, 40, 0, 1, 0])
    s = window_stats(row, np.zeros((0, 5)), ("angry", "happy", "sad", "neutral"), coverage=1.0)
    assert s["faces"] == 0 and s["shares_ci95"] is None and s["positivity_ratio"] is None and s["dominant"] is None


def test_intervals_count_tracks_not_frames() -> None:
    """500 frames of one face say as little about the room as one frame of it: with a single
    track the interval is [0, 1]; many short tracks narrow it."""
    one = np.array([[500, 0, 500.0, 0, 0]])
    share, lo, hi = share_intervals(one)
    assert share[1] == 1.0 and lo.tolist() == [0, 0, 0, 0] and hi.tolist() == [1, 1, 1, 1]
    rng = np.random.default_rng(0)
    many = np.array([[5, *(5 * np.eye(4)[rng.integers(0, 4)])] for _ in range(400)])
    share, lo, hi = share_intervals(many)
    assert np.all(hi - lo < 0.12) and np.all((lo <= share) & (share <= hi))


def test_intervals_cover_the_truth_at_about_their_nominal_rate() -> None:
    """Tracks drawn from a known mix, each seen for a random number of frames with noisy
    probabilities: over 400 windows the 95 % intervals hold the true share 90-99 % of the time."""
    rng = np.random.default_rng(1)
    truth = np.array([0.1, 0.4, 0.2, 0.3])
    hits, trials = np.zeros(4), 400
    for _ in range(trials):
        rows = []
        for _ in range(int(rng.integers(20, 60))):
            n = int(rng.integers(1, 40))
            p = rng.dirichlet(np.eye(4)[rng.choice(4, p=truth)] * 20 + 0.01)  # sharp, right emotion
            rows.append([n, *(n * p)])
        _, lo, hi = share_intervals(np.array(rows))
        hits += (lo <= truth) & (truth <= hi)
    assert np.all(hits / trials > 0.9) and np.all(hits / trials < 0.995), hits / trials


def test_window_names() -> None:
    assert [window_name(s) for s in (10, 60, 900, 3600, 86400, 90)] == ["10s", "1m", "15m", "1h", "24h", "90s"]


def test_windows_publish_at_boundaries_with_the_right_counts() -> None:
    m = MoodTracker("dev", [60, 300], 60, min_confidence=0.5)
    m.start(1000.0)  # boundaries at multiples of 60: first at 1020
    assert m.due(1019.9) == []
    for i in range(30):  # 1000..1029.5: 15 happy frames, 15 frames without faces
        m.add_frame(1000 + i, HAPPY if i % 2 == 0 else None)
    out = {s.window_seconds: s.payload for s in m.due(1020.0)}
    assert set(out) == {60, 300}
    assert out[60]["counts"]["happy"] == 10  # frames 1000..1019, even ones
    assert out[60]["frames"] == 20 and out[60]["start"] == "1970-01-01T00:16:00Z"
    assert out[60]["key"] == "dev/60/1020"
    assert m.due(1030.0) == []  # nothing new until the next boundary
    m.add_frame(1050, SAD)
    m.add_frame(1051, UNSURE)
    nxt = {s.window_seconds: s.payload for s in m.due(1085.0)}
    assert nxt[60]["counts"] == {"angry": 0, "happy": 5, "sad": 1, "neutral": 0}
    assert nxt[60]["uncertain"] == 1
    assert nxt[300]["counts"]["happy"] == 15


def test_long_gap_publishes_only_the_latest_boundary() -> None:
    m = MoodTracker("dev", [60], 60)
    m.start(0.0)
    assert [s.end for s in m.due(3600.5)] == [3600]


def test_restart_resumes_counts_and_never_republishes() -> None:
    a = MoodTracker("dev", [60, 900], 60)
    a.start(1000.0)
    for i in range(20):
        a.add_frame(1000 + i, HAPPY)
    first = a.due(1020.0)
    state = a.state()
    b = MoodTracker("dev", [60, 900], 60)
    b.restore(state)
    b.start(1025.0)
    assert b.due(1025.0) == []  # 1020 was published before the restart
    for i in range(5):
        b.add_frame(1030 + i, SAD)
    again = {s.window_seconds: s.payload for s in b.due(1080.0)}
    assert again[900]["counts"]["happy"] == 20 and again[900]["counts"]["sad"] == 5
    assert again[60]["seq"] > max(s.payload["seq"] for s in first)


def test_restore_with_other_buckets_keeps_boundaries_but_not_counts() -> None:
    a = MoodTracker("dev", [60], 60)
    a.start(0.0)
    a.add_frame(10, HAPPY)
    a.due(60.0)
    b = MoodTracker("dev", [60, 90], 30)  # bucket 30 instead of 60
    b.restore(a.state())
    assert b.last_end[60] == 60
    assert b.window_row(0, 60)[0].sum() == 0


def test_restart_keeps_each_track_as_one_unit() -> None:
    a = MoodTracker("dev", [60], 60)
    a.start(0.0)
    for i in range(10):
        a.add_frame(i, HAPPY, tracks=[7])
    b = MoodTracker("dev", [60], 60)
    b.restore(a.state())
    b.add_frame(20, SAD, tracks=[8])
    _, tracks, _ = b.window_row(0, 60)
    assert len(tracks) == 2 and sorted(tracks[:, 0].tolist()) == [1, 10]


def test_final_summaries_close_every_window_once() -> None:
    m = MoodTracker("dev", [60, 3600], 60)
    m.start(100.0)
    m.add_frame(101, HAPPY)
    final = m.final(130.2)
    assert [(s.window_seconds, s.end) for s in final] == [(60, 131), (3600, 131)]
    assert m.final(130.2) == []
