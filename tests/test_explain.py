"""Grad-CAM++, the perturbation metrics and the bootstrap intervals of edgefer-explain.

Every metric is checked against a value worked out by hand on 2x2 "images" with a linear
model written in numpy; Grad-CAM++ against a hand-worked 2x2 example and against a toy
network whose salient regions are known by construction; the bootstrap against the coverage
it promises on data whose mean is known; the command end to end on a few real FER2013
PublicTest faces.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from edgefer import LABELS
from edgefer.train import explain as ex
from edgefer.train import explain_maps, explain_stats

# ---------------------------------------------------------------------------------------------
# Metrics on a hand-written model
# ---------------------------------------------------------------------------------------------

# s = 0.5*x00 + 0.3*x01 + 0.2*x10 + 0*x11; probabilities (1 - s, s).
WEIGHTS = np.array([[0.5, 0.3], [0.2, 0.0]])


def linear_model(images: np.ndarray) -> np.ndarray:
    s = (np.asarray(images, dtype=np.float64) * WEIGHTS).sum(axis=(1, 2))
    return np.stack([1.0 - s, s], axis=1)


# Image 1: s = 0.4 + 0.12 + 0.04 = 0.56, label 1, saliency order 00, 01, 10, 11.
# Image 2: s = 0.3 + 0.1 = 0.4 (p0 = 0.6), label 0, saliency order 10, 11, 01, 00.
IMAGES = np.array([[[0.8, 0.4], [0.2, 0.6]], [[0.0, 1.0], [0.5, 0.2]]], dtype=np.float32)
SALIENCY = np.array([[[1.0, 0.5], [0.25, 0.0]], [[0.0, 0.2], [0.9, 0.6]]], dtype=np.float32)
LABELS_2 = np.array([1, 0])


def curves(f, images, maps, targets, steps: int = 4, baseline: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The insertion and deletion curves evaluate_maps computes (pixels revealed into a blank
    face, or removed from the face, most salient first)."""
    raw = ex.evaluate_maps(f, images, maps, targets, steps=steps, baseline=baseline)
    return raw["ins_curve"], raw["del_curve"]


def test_insertion_and_deletion_curves_by_hand():
    ins, dele = curves(linear_model, IMAGES, SALIENCY, LABELS_2)
    # Image 1 reveals x00 (+0.4), x01 (+0.12), x10 (+0.04), x11 (+0).
    np.testing.assert_allclose(ins[0], [0.0, 0.4, 0.52, 0.56, 0.56], atol=1e-6)
    np.testing.assert_allclose(dele[0], [0.56, 0.16, 0.04, 0.0, 0.0], atol=1e-6)
    # Image 2 scores class 0 = 1 - s: reveals x10 (s 0.1), x11, x01 (s 0.4), x00.
    np.testing.assert_allclose(ins[1], [1.0, 0.9, 0.9, 0.6, 0.6], atol=1e-6)
    np.testing.assert_allclose(dele[1], [0.6, 0.7, 0.7, 1.0, 1.0], atol=1e-6)
    # Trapezoids of width 1/4: 0.25 * (0.2 + 0.46 + 0.54 + 0.56) = 0.44, and so on.
    np.testing.assert_allclose(ex.curve_auc(ins), [0.44, 0.8], atol=1e-6)
    np.testing.assert_allclose(ex.curve_auc(dele), [0.12, 0.8], atol=1e-6)


def test_masking_metrics_by_hand():
    assert ex.active_pixel_ratio(SALIENCY, 0.5).tolist() == [0.5, 0.5]
    removed = ex.remove_salient(IMAGES, SALIENCY, 0.5)
    np.testing.assert_allclose(removed, [[[0, 0], [0.2, 0.6]], [[0, 1], [0, 0]]])
    kept = ex.keep_salient(IMAGES, SALIENCY, 0.5)  # rest on the image mean: 0.5 and 0.425
    np.testing.assert_allclose(kept, [[[0.8, 0.4], [0.5, 0.5]], [[0.425, 0.425], [0.5, 0.2]]], atol=1e-6)

    full, rem, kep = linear_model(IMAGES), linear_model(removed), linear_model(kept)
    y, r, o = full[[0, 1], LABELS_2], rem[[0, 1], LABELS_2], kep[[0, 1], LABELS_2]
    np.testing.assert_allclose(y, [0.56, 0.6])
    np.testing.assert_allclose(r, [0.04, 0.7])  # image 2 gains confidence without its region
    np.testing.assert_allclose(o, [0.62, 0.56])
    # AD: image 1 drops (0.56 - 0.04) / 0.56; image 2 rises, clipped to 0 (unclipped -0.1 / 0.6).
    assert ex.average_drop(y, r) == pytest.approx((0.52 / 0.56 + 0.0) / 2)
    assert ex.average_drop(y, r, clip=False) == pytest.approx((0.52 / 0.56 - 0.1 / 0.6) / 2)
    assert ex.increase_in_confidence(y, o) == pytest.approx(0.5)  # only image 1: 0.62 > 0.56
    # Both right on the full image; image 1 turns to class 0 (p 0.96) once masked.
    pred_full, pred_rem = full.argmax(1), rem.argmax(1)
    assert pred_full.tolist() == [1, 0] and pred_rem.tolist() == [0, 0]
    assert ex.average_drop_in_accuracy(LABELS_2, pred_full, pred_rem) == pytest.approx(0.5)


def test_evaluate_maps_matches_the_hand_values():
    raw = ex.evaluate_maps(linear_model, IMAGES, SALIENCY, LABELS_2, steps=4, threshold=0.5, chunk=1)
    np.testing.assert_allclose(raw["iauc"], [0.44, 0.8], atol=1e-6)
    np.testing.assert_allclose(raw["dauc"], [0.12, 0.8], atol=1e-6)
    s = ex.summarise(raw, LABELS_2)
    assert s["n"] == 2
    assert s["IAUC"] == pytest.approx(0.62)
    assert s["DAUC"] == pytest.approx(0.46)
    assert s["AD"] == pytest.approx(0.52 / 0.56 / 2)
    assert s["IC"] == pytest.approx(0.5)
    assert s["ADA"] == pytest.approx(0.5)
    assert s["active_pixels"] == pytest.approx(0.5)
    assert s["accuracy"] == pytest.approx(1.0)
    assert s["masked_accuracy"] == pytest.approx(0.5)
    one = ex.summarise(raw, LABELS_2, np.array([1]))
    assert one["IAUC"] == pytest.approx(0.8) and one["ADA"] == 0.0


def test_ada_counts_recovered_images_against_the_score():
    # Wrong before, right after masking: the paper's formula gives -1 for that image.
    assert ex.average_drop_in_accuracy(np.array([0, 1]), np.array([1, 1]), np.array([0, 1])) == pytest.approx(-0.5)


def test_ranks_steps_and_normalisation():
    ranks = ex.saliency_ranks(np.array([[[0.5, 0.5], [1.0, 0.0]]]))
    assert ranks.tolist() == [[1, 2, 0, 3]]  # ties keep raster order
    assert ex.step_counts(48 * 48, 16).tolist() == list(range(0, 2305, 144))
    m = ex.normalise_maps(np.array([[[2.0, 4.0], [3.0, 6.0]], [[5.0, 5.0], [5.0, 5.0]]]))
    np.testing.assert_allclose(m[0], [[0.0, 0.5], [0.25, 1.0]])
    assert not m[1].any()
    r = ex.random_maps(2, (48, 48), 0, grid=(6, 6))
    assert r.shape == (2, 48, 48) and r.min() == 0.0 and r.max() == 1.0
    assert np.abs(np.diff(r, axis=2)).max() < 0.2  # smooth blobs, not pixel noise
    c = ex.centre_maps(1, (48, 48))[0]
    assert c.max() == pytest.approx(1.0) and c[23:25, 23:25].min() > 0.99 and c[0, 0] < 0.01


def test_area_matched_baselines_keep_the_pixel_order():
    maps = np.concatenate([ex.random_maps(3, (48, 48), 7), ex.centre_maps(1, (48, 48)), np.zeros((1, 48, 48))])
    ratios = np.array([0.1, 0.0, 1.0, 0.25, 0.3])
    matched = ex.match_active_ratio(maps, ratios, 0.5)
    np.testing.assert_allclose(ex.active_pixel_ratio(matched, 0.5), np.round(ratios * 2304) / 2304)
    np.testing.assert_array_equal(ex.saliency_ranks(matched), ex.saliency_ranks(maps))
    assert matched.min() > 0.0 and matched.max() <= 1.0
    # Same order, so the same curves: only the masking metrics change.
    f, t = linear_model, np.zeros(5, np.int64)
    small = maps[:, :2, :2]
    np.testing.assert_allclose(
        curves(f, np.ones((5, 2, 2)), small, t)[1],
        curves(f, np.ones((5, 2, 2)), ex.match_active_ratio(small, ratios), t)[1],
    )


# ---------------------------------------------------------------------------------------------
# Bootstrap intervals
# ---------------------------------------------------------------------------------------------


def test_per_image_metrics_average_to_the_summary():
    raw = ex.evaluate_maps(linear_model, IMAGES, SALIENCY, LABELS_2, steps=4, threshold=0.5, chunk=1)
    per = ex.per_image_metrics(raw, LABELS_2)
    s = ex.summarise(raw, LABELS_2)
    assert per["AD"].tolist() == pytest.approx([0.52 / 0.56, 0.0])
    assert per["IC"].tolist() == [1.0, 0.0] and per["ADA"].tolist() == [1.0, 0.0]
    for key, values in per.items():
        assert values.shape == (2,) and values.mean() == pytest.approx(s[key])


def test_bootstrap_interval_covers_a_known_mean_at_about_the_nominal_rate():
    # 400 samples of 150 skewed values (exponential, mean 0.3); the 95 % interval should hold
    # the mean about 95 % of the time. Binomial sd of the rate over 400 trials is 0.011, and the
    # percentile interval runs a little short on skewed data, so accept 0.90-0.985.
    rng = np.random.default_rng(11)
    trials, hits = 400, 0
    groups = np.repeat([0, 1, 2], 50)
    for t in range(trials):
        sample = rng.exponential(0.3, 150)
        means = explain_stats.bootstrap_means(sample, groups, 1000, seed=t)
        lo, hi = explain_stats.percentile_interval(means)[:, 0]
        hits += lo <= 0.3 <= hi
    assert 0.90 <= hits / trials <= 0.985


def test_bootstrap_resamples_within_each_group():
    # Group 0 holds only 0s and group 1 only 1s: any resample that keeps the group sizes has
    # mean exactly 1/4, so the interval collapses to a point.
    values = np.array([0.0, 0.0, 0.0, 1.0])
    means = explain_stats.bootstrap_means(values, np.array([0, 0, 0, 1]), 500, seed=0)
    assert np.all(means == 0.25)
    # Without groups the same values do move.
    assert explain_stats.bootstrap_means(values, np.zeros(4), 500, seed=0).std() > 0.1


def test_paired_difference_of_identical_maps_is_exactly_zero_and_a_tie():
    rng = np.random.default_rng(2)
    per_face = {k: rng.random(40) for k in explain_stats.INTERVALS}
    per = {"gradcam++/fb3": per_face, "same": {k: v.copy() for k, v in per_face.items()}}
    out = explain_stats.paired_bootstrap(per, np.repeat([0, 1], 20), [("gradcam++/fb3", "same")], n_boot=300)
    diff = out["differences"]["gradcam++/fb3 - same"]
    assert set(diff) == set(explain_stats.JUDGED)
    for row in diff.values():
        assert row["estimate"] == 0.0 and row["ci"] == [0.0, 0.0] and row["verdict"] == "tie"
    assert out["maps"]["gradcam++/fb3"] == out["maps"]["same"]
    lo, hi = out["maps"]["same"]["IAUC"]
    assert lo < per_face["IAUC"].mean() < hi


def test_pairing_separates_maps_whose_own_intervals_overlap():
    # Faces differ a lot (sd 0.2) but map a beats map b on every face by 0.02 +- 0.01: the two
    # maps' intervals overlap, the paired difference's does not contain 0. Higher IAUC wins,
    # higher DAUC loses.
    rng = np.random.default_rng(5)
    face = rng.normal(0.5, 0.2, 200)
    better = face + 0.02 + rng.normal(0, 0.01, 200)
    a = {k: better for k in explain_stats.INTERVALS}
    b = {k: face for k in explain_stats.INTERVALS}
    out = explain_stats.paired_bootstrap({"a": a, "b": b}, np.zeros(200), [("a", "b")], n_boot=2000, seed=1)
    (a_lo, a_hi), (b_lo, b_hi) = out["maps"]["a"]["IAUC"], out["maps"]["b"]["IAUC"]
    assert a_lo < b_hi and b_lo < a_hi
    diff = out["differences"]["a - b"]
    assert 0.0 < diff["IAUC"]["ci"][0] < diff["IAUC"]["estimate"] < diff["IAUC"]["ci"][1] < 0.03
    assert diff["IAUC"]["verdict"] == "win" and diff["DAUC"]["verdict"] == "loss"


def test_verdicts_and_bad_bootstrap_input():
    assert explain_stats.verdict(0.01, 0.05, True) == "win"
    assert explain_stats.verdict(0.01, 0.05, False) == "loss"
    assert explain_stats.verdict(-0.05, -0.01, False) == "win"
    assert explain_stats.verdict(-0.01, 0.02, True) == "tie"
    with pytest.raises(ValueError, match="group labels"):
        explain_stats.bootstrap_means(np.zeros(5), np.zeros(4), 10, 0)
    with pytest.raises(ValueError, match="n_boot"):
        explain_stats.bootstrap_means(np.zeros(5), np.zeros(5), 0, 0)
    with pytest.raises(ValueError, match="level"):
        explain_stats.percentile_interval(np.zeros((3, 1)), 95)


# ---------------------------------------------------------------------------------------------
# Grad-CAM++
# ---------------------------------------------------------------------------------------------


def test_gradcampp_formula_by_hand():
    # Channel 0: sum(A) = 4; g = 0.5 gives alpha = 0.25 / (0.5 + 4 * 0.125) = 0.25; g = -0.25 gives
    # alpha = 0.0625 / (0.125 - 0.0625) = 1 but relu(g) = 0, so w0 = 3 * 0.25 * 0.5 = 0.375.
    # Channel 1: sum(A) = 1, g = 1: alpha = 1 / 3, w1 = 4 / 3.
    a = np.zeros((1, 2, 2, 2), np.float32)
    g = np.zeros((1, 2, 2, 2), np.float32)
    a[0, :, :, 0], g[0, :, :, 0] = [[1, 2], [0, 1]], [[0.5, 0.5], [0.5, -0.25]]
    a[0, :, :, 1], g[0, :, :, 1] = [[1, 0], [0, 0]], 1.0
    cam = np.asarray(ex.gradcampp_map(a, g))[0]
    np.testing.assert_allclose(cam, [[0.375 + 4 / 3, 0.75], [0.0, 0.375]], rtol=1e-5)
    # A channel that argues against the class gets no weight; the map never goes negative.
    assert not np.asarray(ex.gradcampp_map(a, -np.abs(g))).any()


@pytest.fixture(scope="module")
def keras_mod():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return pytest.importorskip("keras")


def toy_model(keras):
    """Channel 0 fires on bright pixels, channel 1 on dark ones; class 1 = mean of channel 0,
    class 0 = mean of channel 1 (global pooling, as in Grad-CAM's derivation)."""
    from keras import layers

    inp = keras.Input((16, 16, 1))
    conv = layers.Conv2D(2, 3, padding="same", name="fb1_conv")
    x = layers.Activation("relu", name="fb1_relu")(conv(inp))
    x = layers.GlobalAveragePooling2D()(x)
    dense = layers.Dense(2, activation="softmax", name="emotion")
    out = dense(x)
    kernel = np.zeros((3, 3, 1, 2), np.float32)
    kernel[1, 1, 0] = [2.0, -2.0]
    conv.set_weights([kernel, np.array([-1.0, 1.0], np.float32)])
    dense.set_weights([np.array([[0.0, 40.0], [40.0, 0.0]], np.float32), np.zeros(2, np.float32)])
    return keras.Model(inp, out)


def test_gradcampp_finds_the_region_that_drives_each_class(keras_mod):
    rng = np.random.default_rng(0)
    img = 0.5 + rng.uniform(-0.02, 0.02, (16, 16)).astype(np.float32)  # faint noise fires both channels a little
    img[2:6, 2:6] = 1.0  # bright patch, top-left: evidence for class 1
    img[10:14, 9:13] = 0.0  # dark patch, bottom-right: evidence for class 0
    model = toy_model(keras_mod)
    cam = ex.GradCamPlusPlus(model, [ex.resolve_layer(model, "fb1")])
    assert cam.layer_names == ["fb1_relu"]
    maps = cam(np.stack([img, img]), np.array([1, 0]))["fb1_relu"]
    assert maps.shape == (2, 16, 16) and maps.min() >= 0.0 and maps.max() == pytest.approx(1.0)
    top_left, bottom_right = (slice(0, 8), slice(0, 8)), (slice(8, 16), slice(8, 16))
    assert maps[0][top_left].sum() / maps[0].sum() > 0.8
    assert maps[1][bottom_right].sum() / maps[1].sum() > 0.8
    assert np.unravel_index(maps[0].argmax(), (16, 16)) in {(r, c) for r in range(2, 6) for c in range(2, 6)}
    # The metrics agree: deleting the class-1 map's pixels first hurts more than random order.
    f = ex.keras_prob_fn(model)
    x = np.stack([img])
    dauc = ex.curve_auc(curves(f, x, maps[:1], np.array([1]), steps=16, baseline=0.5)[1])
    dauc_rand = ex.curve_auc(curves(f, x, ex.random_maps(1, (16, 16), 1), np.array([1]), 16, 0.5)[1])
    assert dauc[0] < dauc_rand[0]


def test_a_cropped_network_maps_cover_what_it_sees(keras_mod):
    """A network that drops the face's border first has maps over the centre only: they are
    laid on the pixels it read, and the border, which cannot move its answer, scores zero."""
    from keras import layers

    keras_mod.utils.set_random_seed(0)
    inp = keras_mod.Input((48, 48, 1))
    x = layers.Cropping2D(4, name="crop")(inp)
    x = layers.Activation("relu", name="fb1_relu")(layers.Conv2D(4, 3, padding="same", name="fb1_conv")(x))
    x = layers.GlobalAveragePooling2D()(x)
    head = layers.Dense(4, activation="softmax", name="emotion")
    net = keras_mod.Model(inp, head(x), name="cropped")
    # Every channel argues for every class, so no class's map is flat by chance of the init.
    head.set_weights([np.linspace(0.5, 1.0, 16, dtype=np.float32).reshape(4, 4), np.zeros(4, np.float32)])
    assert explain_maps._input_crop(net) == ((4, 4), (4, 4))
    assert explain_maps._input_crop(toy_model(keras_mod)) == ((0, 0), (0, 0))
    rng = np.random.default_rng(3)
    faces = rng.uniform(0, 1, (2, 48, 48)).astype(np.float32)
    cam = ex.GradCamPlusPlus(net, ["fb1_relu"])
    maps = cam(faces, np.array([0, 1]))["fb1_relu"]
    assert maps.shape == (2, 48, 48)
    ring = np.ones((48, 48), bool)
    ring[4:44, 4:44] = False
    assert np.all(maps[:, ring] == 0) and np.all(maps[:, 4:44, 4:44].sum(axis=(1, 2)) > 0)


def test_resolve_layer_prefers_relu_then_conv(keras_mod):
    from keras import layers

    inp = keras_mod.Input((8, 8, 1))
    x = layers.Conv2D(2, 3, name="fb1_conv")(inp)
    x = layers.Activation("relu", name="fb1_relu")(x)
    x = layers.Conv2D(2, 3, name="fb2_conv")(x)
    model = keras_mod.Model(inp, x)
    assert ex.resolve_layer(model, "fb1") == "fb1_relu"
    assert ex.resolve_layer(model, "fb2") == "fb2_conv"
    with pytest.raises(ValueError, match="fb3"):
        ex.resolve_layer(model, "fb3")


def test_default_blocks_are_fb1_to_fb3_else_the_last_relu_of_each_deepest_resolution(keras_mod):
    from edgefer.train.models import dense_cnn, edgefer_cnn, paper_cnn

    assert ex.default_blocks(paper_cnn()) == ["fb1", "fb2", "fb3"]
    assert ex.default_blocks(edgefer_cnn(width=8)) == ["fb1", "fb2", "fb3"]
    # edgefer-dense names stages, not fb blocks: the end of its 24, 12 and 6 px stages.
    dense = dense_cnn()
    assert ex.default_blocks(dense) == ["s2b", "s3c", "s4b"]
    sizes = [dense.get_layer(ex.resolve_layer(dense, b)).output.shape[1] for b in ex.default_blocks(dense)]
    assert sizes == [24, 12, 6]
    inp = keras_mod.Input((8, 8, 1))
    plain = keras_mod.Model(inp, keras_mod.layers.Conv2D(2, 3, name="c")(inp))
    with pytest.raises(ValueError, match="pass --blocks"):
        ex.default_blocks(plain)


# ---------------------------------------------------------------------------------------------
# The command, end to end on real faces
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_model(keras_mod, tmp_path_factory):
    from edgefer.train.models import edgefer_cnn

    model = edgefer_cnn(width=8)
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(path)
    return path


def test_cli_end_to_end(keras_mod, small_model, fer2013, tmp_path, capsys):
    out = tmp_path / "explain"
    argv = ["--model", str(small_model), "--data-dir", str(fer2013), "--out", str(out)]
    quick = ["--limit-per-class", "3", "--baseline-limit-per-class", "2", "--steps", "4", "--overlays", "3"]
    quick += ["--bootstrap", "200"]
    rc = ex.main([*argv, *quick, "--seed", "1"])
    assert rc == 0
    table = (out / "table.md").read_text()
    for heading in ("IAUC ↑", "DAUC ↓", "AD ↑", "IC ↑", "ADA ↑", "Active pixels ↓", "Literature range"):
        assert heading in table
    for name in ("Angry", "Happy", "Sad", "Neutral", "FB1", "FB2", "FB3", "random", "centre", "0.195–0.598"):
        assert name in table
    report = json.loads((out / "metrics.json").read_text())
    assert report["dataset"]["n"] == 12 and report["dataset"]["counts"] == dict.fromkeys(LABELS, 3)
    assert report["layers"] == {"fb1": "fb1_relu", "fb2": "fb2_relu", "fb3": "fb3_relu"}
    assert set(report["results"]) == {"gradcam++/fb1", "gradcam++/fb2", "gradcam++/fb3", "random", "centre"}
    for method, res in report["results"].items():
        per_class = 2 if method in ("random", "centre") else 3
        assert res["all"]["n"] == 4 * per_class and all(res[name]["n"] == per_class for name in LABELS)
        for key in ("IAUC", "DAUC", "AD", "IC", "active_pixels"):
            assert 0.0 <= res["all"][key] <= 1.0
        assert len(res["curves"]["all"]["insertion"]) == 5
    # The baseline comparison puts every map on the same 8 images.
    comp = report["comparison"]
    assert comp["n"] == 8 and set(comp["results"]) == set(report["results"])
    assert all(r["all"]["n"] == 8 for r in comp["results"].values())
    assert "Against baseline saliency maps (8 images" in table
    assert report["settings"]["baselines_area_matched_to"] == "fb3"
    assert sum(report["settings"]["baseline_image_probs"].values()) == pytest.approx(1.0, abs=1e-4)
    # Area matching: the baselines' important regions are as large as Grad-CAM++ FB3's.
    fb3_area = comp["results"]["gradcam++/fb3"]["all"]["active_pixels"]
    assert comp["results"]["random"]["all"]["active_pixels"] == pytest.approx(fb3_area, abs=1e-3)
    # The curves end on the full image: its mean probability of the true emotion, per emotion.
    from edgefer.datasets import load_fer2013

    data = load_fer2013(fer2013, "test")
    data = data.subset(ex.stratified_sample(data.labels, 3, 1))
    probs = ex.keras_prob_fn(keras_mod.models.load_model(small_model))(data.images / 255.0)
    for i, name in enumerate(LABELS):
        curves = report["results"]["gradcam++/fb2"]["curves"][name]
        expected = probs[data.labels == i, i].mean()
        assert curves["insertion"][-1] == pytest.approx(expected, abs=1e-5)
        assert curves["deletion"][0] == pytest.approx(expected, abs=1e-5)
    pngs = sorted(p.name for p in (out / "overlays").glob("*.png"))
    assert pngs == sorted(f"{b}_{e}.png" for b in ("fb1", "fb2", "fb3") for e in LABELS)
    assert (out / "curves.png").stat().st_size > 1000
    assert all((out / p).stat().st_size > 1000 for p in report["figures"])
    assert "Grad-CAM++ at FB3" in capsys.readouterr().out
    # Intervals for every map and Grad-CAM++ minus each baseline, paired on the same 8 faces.
    assert report["settings"]["bootstrap"]["resamples"] == 200
    for res in comp["results"].values():
        for key in ("IAUC", "DAUC", "AD", "IC", "ADA"):
            lo, hi = res["all"]["ci95"][key]
            assert lo <= res["all"][key] + 1e-9 and res["all"][key] <= hi + 1e-9
    pairs = {f"gradcam++/{b} - {m}" for b in ("fb1", "fb2", "fb3") for m in ("random", "centre")}
    assert set(comp["differences"]) == pairs
    row = comp["differences"]["gradcam++/fb3 - centre"]["DAUC"]
    fb3, centre = comp["results"]["gradcam++/fb3"]["all"], comp["results"]["centre"]["all"]
    assert row["estimate"] == pytest.approx(fb3["DAUC"] - centre["DAUC"])
    assert row["verdict"] in {"win", "tie", "loss"}
    assert "95 % interval" in table and "Grad-CAM++ FB3 − centre" in table


def test_a_mirrored_network_is_explained_through_its_trunk(keras_mod, fer2013, tmp_path):
    """Its block layers hold each face twice, once mirrored; the trunk on the face as given holds
    one map per face on the face's own pixels, and its answers are one of the two views averaged."""
    from edgefer.train.models import edgefer_cnn, mirrored

    net = mirrored(edgefer_cnn(width=8, rank=2, name="trunk"), "edgefer-mirror-full")
    assert ex.one_view(net) is net.get_layer("trunk") and ex.one_view(net.get_layer("trunk")).name == "trunk"
    net.save(tmp_path / "mirror.keras")
    out = tmp_path / "explain"
    argv = ["--model", str(tmp_path / "mirror.keras"), "--data-dir", str(fer2013), "--out", str(out)]
    argv += ["--limit-per-class", "1", "--steps", "2", "--blocks", "fb1,fb3", "--no-baselines"]
    # A fresh interpreter, as the command runs: loading must not rely on this test's imports.
    cmd = "import sys; from edgefer.train.explain import main; sys.exit(main(sys.argv[1:]))"
    run = subprocess.run([sys.executable, "-c", cmd, *argv], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads((out / "metrics.json").read_text())
    assert report["layers"] == {"fb1": "fb1_relu", "fb3": "fb3_relu"}
    assert report["model"]["name"] == "edgefer-mirror-full" and report["explained"].startswith("the trunk")
    assert "explaining its trunk" in run.stderr


def test_cli_refuses_bad_input(small_model, fer2013, tmp_path, capsys):
    base = ["--data-dir", str(fer2013), "--out", str(tmp_path / "x")]
    assert ex.main(["--model", str(tmp_path / "missing.keras"), *base]) == 2
    assert "no such model file" in capsys.readouterr().err
    assert ex.main(["--model", str(small_model), *base, "--blocks", "fb1,fb9"]) == 2
    assert "fb9" in capsys.readouterr().err
    assert ex.main(["--model", str(small_model), "--data-dir", str(tmp_path), "--out", str(tmp_path / "y")]) == 2
    assert "FER2013 not found" in capsys.readouterr().err


def test_cli_predicted_target_without_baselines(small_model, fer2013, tmp_path):
    out = tmp_path / "explain"
    argv = ["--model", str(small_model), "--data-dir", str(fer2013), "--out", str(out), "--limit-per-class", "1"]
    assert ex.main([*argv, "--steps", "2", "--blocks", "fb3", "--target", "predicted", "--no-baselines"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert set(report["results"]) == {"gradcam++/fb3"} and report["settings"]["target"] == "predicted"
    assert "Against baseline" not in (out / "table.md").read_text()
    assert sorted(p.name for p in (out / "overlays").glob("*.png")) == sorted(f"fb3_{e}.png" for e in LABELS)
