"""Shared fixtures (the real FER2013 copy beside the project, the shipped models, a real
mosquitto) and the suite's split by speed.

Every test belongs to one group, a marker, so a developer can run the fast part alone:

- ``unit``: pure code and small files, seconds each;
- ``daemon``: starts real daemons, brokers or whole benchmark runs, end to end;
- ``deploy``: installs the product as users do (a wheel, the installer on a clean Debian);
- ``train``: TensorFlow training and export.

A test file names its group with a module-level ``pytestmark``, or is listed in ``GROUPS``
below (a single slow test in ``TESTS``). Any other test is a unit test, except one marked
``slow`` or asking for the ``broker`` fixture: that is a daemon test wherever it lives, so a
new end-to-end test cannot slow the quick run by accident.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.harness import Broker, Collector, fer_root, free_port, mosquitto_binary

__all__ = ["REPO", "Broker", "Collector", "fer_root", "free_port", "mosquitto_binary"]

REPO = Path(__file__).resolve().parents[1]
#: the shipped .tflite files and labels.txt (package data)
MODELS = REPO / "edgefer" / "models"
#: the Keras networks behind them, which only training needs
KERAS = REPO / "models"


@pytest.fixture(scope="session")
def fer2013() -> Path:
    root = fer_root()
    if not (root / "test").is_dir():
        pytest.fail(f"FER2013 not found at {root}; set EDGEFER_FER2013")
    return root


@pytest.fixture
def few_faces(fer2013: Path, tmp_path: Path) -> Path:
    """A FER2013 folder with 40 real faces per class in train and 15 in test (linked, not
    copied): enough for a training step's export and figures, quick to finalize."""
    few = tmp_path / "fer2013-few"
    for split, n in (("train", 40), ("test", 15)):
        for label in ("angry", "happy", "sad", "neutral"):
            (few / split / label).mkdir(parents=True)
            for face in sorted((fer2013 / split / label).iterdir())[:n]:
                (few / split / label / face.name).symlink_to(face)
    return few


@pytest.fixture
def broker(tmp_path: Path):
    b = Broker(tmp_path).start()
    yield b
    b.stop()


#: the group of each test file that is not a unit test and does not mark itself
GROUPS = {
    "daemon": {
        "test_bench_faces.py",
        "test_camera_faults.py",
        "test_daemon.py",
        "test_faults.py",
        "test_instances.py",
        "test_operations.py",
        "test_pi_faults.py",
        "test_recordings.py",
    },
    "deploy": {"test_clean_os.py", "test_deploy.py", "test_wheel.py"},
    "train": {"test_explain.py", "test_quant.py", "test_train.py"},
}
#: single tests slower than the rest of their file, by ``file::name`` (a renamed test drops to
#: ``unit``: keep these names current)
TESTS = {
    # a whole candidate-rule benchmark run on 1,200 validation faces
    "test_margins.py::test_a_candidate_rule_is_settled_on_validation_faces_as_the_daemon_runs_each_file": "daemon",
}
KINDS = ("unit", "daemon", "deploy", "train")


def group_of(item: pytest.Item) -> str:
    """The one group a test belongs to (see the module docstring)."""
    own = [k for k in KINDS if item.get_closest_marker(k)]
    if own:
        return own[0]
    name = item.path.name
    test = f"{name}::{getattr(item, 'originalname', item.name)}"
    if test in TESTS:
        return TESTS[test]
    for kind, files in GROUPS.items():
        if name in files:
            return kind
    end_to_end = item.get_closest_marker("slow") or "broker" in getattr(item, "fixturenames", ())
    return "daemon" if end_to_end else "unit"


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by these markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        kind = group_of(item)
        if not item.get_closest_marker(kind):
            item.add_marker(kind)
