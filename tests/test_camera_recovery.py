"""Camera recovery in process: the feed's reader threads and the picamera2 stand-in.

Fast tests: a source that blocks on demand stands in for a driver call that does not
return, and tests/fakes/picamera2 for the Pi camera (checked here against the real
library's behaviour that recovery depends on)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib.util
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from edgefer import config as configmod
from edgefer.config import ConfigError, SourceConfig
from edgefer.sources import (
    MAX_STUCK_READERS,
    Feed,
    Picamera2Source,
    SourceError,
    SourceFactory,
)
from tests.conftest import REPO


def wait_for(pred: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


def watching(feed: Feed, pred: Callable[[], bool], timeout: float = 10.0) -> bool:
    """wait_for() while calling feed.get(), which is where the feed watches its readers
    (as the daemon's loop does four times a second)."""
    return wait_for(lambda: (feed.get(0.05), pred())[1], timeout)


def drain(feed: Feed, seconds: float) -> list[int]:
    """Frames' first pixel (which source made them) for ``seconds``, through feed.get()."""
    got: list[int] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        f = feed.get(0.05)
        if f is not None:
            got.append(int(f.gray[0, 0]))
    return got


# -- a source whose read blocks on demand ----------------------------------------------------


class Blocking:
    """A live source numbered ``ident`` (its frames are filled with it). While ``hold`` is
    clear a read blocks; releasing it returns a frame, or raises when ``fail`` is set. It
    records which thread closed it and whether a read was still inside it at the time."""

    finite, stills, fps = False, False, 100.0

    def __init__(self, ident: int) -> None:
        self.ident = ident
        self.name = f"blocking:{ident}"
        self.hold = threading.Event()
        self.hold.set()
        self.fail = False
        self.reading = False
        self.opened_by: int | None = None
        self.closed_by: int | None = None
        self.closed_during_read = False

    def open(self) -> None:
        self.opened_by = threading.get_ident()

    def read(self) -> np.ndarray:
        self.reading = True
        try:
            self.hold.wait()
            if self.fail:
                raise SourceError(f"{self.name}: read failed after the stall")
            time.sleep(0.01)
            return np.full((32, 32), self.ident, np.uint8)
        finally:
            self.reading = False

    def position(self) -> None:
        return None

    def close(self) -> None:
        self.closed_during_read = self.reading
        self.closed_by = threading.get_ident()


class Factory:
    def __init__(self) -> None:
        self.made: list[Blocking] = []

    def __call__(self) -> Blocking:
        self.made.append(Blocking(len(self.made) + 1))
        return self.made[-1]


@contextlib.contextmanager
def started(stall: float) -> Iterator[tuple[Factory, Feed]]:
    """A running feed over fake cameras; at the end every held read is let go, then it stops."""
    factory = Factory()
    feed = Feed(factory, stall_seconds=stall, retry_initial=0.1, retry_max=0.2)
    feed.start()
    try:
        yield factory, feed
    finally:
        for s in factory.made:
            s.hold.set()
        feed.stop()


def test_a_stalled_reader_is_abandoned_not_closed_under_it_and_never_writes_again() -> None:
    with started(0.3) as (factory, feed):
        assert 1 in drain(feed, 0.3)
        first = factory.made[0]
        first.hold.clear()  # the read blocks, as inside a driver call
        assert watching(feed, lambda: len(factory.made) == 2 and feed.state == "running", 5), feed.state
        assert feed.restarts == 1 and "did not return" in (feed.last_error or "")
        assert first.closed_by is None  # never closed from another thread while blocked
        assert set(drain(feed, 0.3)) == {2}
        frames = feed.frames
        first.fail = True  # the stuck call returns with an error...
        first.hold.set()
        assert wait_for(lambda: first.closed_by is not None, 5)
        assert first.closed_by == first.opened_by and not first.closed_during_read
        # ...which the abandoned reader must not write over the running feed
        assert (feed.state, feed.error) == ("running", None)
        assert feed.restarts == 1 and feed.frames > frames and feed.stuck_readers() == 0
        assert 1 not in drain(feed, 0.2)


def test_a_frame_from_an_abandoned_reader_is_not_handed_over() -> None:
    with started(0.3) as (factory, feed):
        drain(feed, 0.2)
        first = factory.made[0]
        first.hold.clear()
        assert watching(feed, lambda: len(factory.made) == 2, 5)
        factory.made[1].hold.clear()  # the new reader stalls too, not yet abandoned
        drain(feed, 0.1)
        frames, dropped = feed.frames, feed.dropped
        first.hold.set()  # the old read returns a frame
        assert wait_for(lambda: first.closed_by is not None, 5)
        assert (feed.frames, feed.dropped) == (frames, dropped) and feed.get(0.05) is None


def test_stuck_readers_are_capped_and_the_state_says_so() -> None:
    with started(0.2) as (factory, feed):
        for n in range(1, MAX_STUCK_READERS + 1):
            assert watching(feed, lambda n=n: len(factory.made) == n and feed.state == "running", 5)
            drain(feed, 0.1)
            factory.made[-1].hold.clear()
        assert watching(feed, lambda: feed.state == "wedged, restart needed", 5), feed.state
        drain(feed, 2.0)  # far beyond stall_seconds: no fourth reader is started
        assert len(factory.made) == MAX_STUCK_READERS and feed.stuck_readers() == MAX_STUCK_READERS
        assert "stuck in the camera driver" in (feed.error or "")
        factory.made[0].hold.set()  # one call returns: its reader closes, exits, and makes room
        assert watching(feed, lambda: len(factory.made) == MAX_STUCK_READERS + 1, 5)
        assert set(drain(feed, 0.3)) == {MAX_STUCK_READERS + 1} and feed.state == "running"


# -- the picamera2 stand-in and Picamera2Source ------------------------------------------------


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModuleType, Path]]:
    """The fake picamera2 module, importable as ``picamera2``, and its control file."""
    frames = tmp_path / "frames"
    frames.mkdir()
    import cv2

    for i in range(3):
        cv2.imwrite(str(frames / f"{i}.png"), np.full((120, 160), 60 + 60 * i, np.uint8))
    control = tmp_path / "camera"
    control.write_text("ok")
    monkeypatch.setenv("EDGEFER_FAKE_CAMERA_FRAMES", str(frames))
    monkeypatch.setenv("EDGEFER_FAKE_CAMERA_CONTROL", str(control))
    spec = importlib.util.spec_from_file_location("picamera2", REPO / "tests" / "fakes" / "picamera2" / "__init__.py")
    assert spec is not None and spec.loader is not None
    picamera2 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(picamera2)
    monkeypatch.setitem(sys.modules, "picamera2", picamera2)  # removed again after the test
    yield picamera2, control
    control.write_text("ok")  # lets any thread still blocked in the fake return
    time.sleep(0.1)
    picamera2.release_all()


def in_thread(fn: Callable[[], object]) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def test_fake_picamera2_keeps_the_real_ones_rules(fake) -> None:
    mod, control = fake
    cam = mod.Picamera2(0)
    with pytest.raises(RuntimeError):
        mod.Picamera2(0)  # one instance per camera
    config = cam.create_video_configuration(main={"size": (320, 240)}, lores={"size": (160, 120), "format": "YUV420"})
    cam.configure(config)
    cam.start()
    assert cam.capture_array("lores", wait=1.0).shape == (180, 192)  # YUV420 rows, stride-padded
    assert cam.capture_request(wait=1.0).make_array("lores").shape == (180, 192)
    control.write_text("stall")
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        cam.capture_array("lores", wait=0.2)
    with pytest.raises(TimeoutError):
        cam.capture_request(wait=0.2)
    assert 0.35 < time.monotonic() - t0 < 1.5
    control.write_text("hang")
    with pytest.raises(TimeoutError):
        cam.capture_array("lores", wait=0.2)
    control.write_text("ok")  # the hung capture stays hung, and holds up the ones behind it
    with pytest.raises(TimeoutError):
        cam.capture_array("lores", wait=0.2)
    cam.stop()
    closing = in_thread(cam.close)
    closing.join(0.5)
    assert closing.is_alive()  # close() blocks behind the hung capture...
    cam.cancel_all_and_flush()
    closing.join(2)
    assert not closing.is_alive() and mod.held() == {}  # ...until it is cancelled
    waiting: list[BaseException] = []
    cam = mod.Picamera2(0)
    cam.configure(config)
    cam.start()
    control.write_text("hang")

    def capture_forever() -> None:
        try:
            cam.capture_array("lores")
        except BaseException as exc:
            waiting.append(exc)

    blocked = in_thread(capture_forever)
    blocked.join(0.3)
    assert blocked.is_alive()  # wait=None: as long as it takes
    cam.cancel_all_and_flush()
    blocked.join(2)
    assert isinstance(waiting[0], concurrent.futures.CancelledError)
    control.write_text("wedge")
    closing = in_thread(cam.close)
    closing.join(0.5)
    assert closing.is_alive()  # wedged: close blocks even with nothing queued
    control.write_text("ok")
    closing.join(2)
    assert not closing.is_alive() and mod.held() == {}
    control.write_text("usb")
    assert mod.Picamera2.global_camera_info()[0]["Model"] == "fake-uvc-webcam"
    cam = mod.Picamera2(0)
    with pytest.raises(RuntimeError):
        cam.configure(config)  # one stream only: no lores
    cam.close()


def test_picamera2_source_times_out_then_cancels_before_closing(fake) -> None:
    mod, control = fake
    src = Picamera2Source(160, 120, 30.0, timeout=0.3)
    src.open()
    assert src.read().shape == (120, 160)
    control.write_text("hang")
    t0 = time.monotonic()
    with pytest.raises(SourceError, match=r"no frame for 0.3s \(capture timed out\)"):
        src.read()
    assert time.monotonic() - t0 < 1.5
    closing = in_thread(src.close)
    closing.join(2)
    assert not closing.is_alive() and mod.held() == {}  # cancelled first, so close completed
    control.write_text("ok")
    again = Picamera2Source(160, 120, 30.0, timeout=0.3)
    again.open()
    assert again.read().shape == (120, 160)
    again.close()


def picamera2_feed(kind: str = "picamera2", device: str = "0", stall: float = 0.5) -> tuple[Feed, SourceFactory]:
    cfg = SourceConfig(kind=kind, device=device, width=160, height=120, fps=30.0, stall_seconds=stall)
    factory = SourceFactory(cfg)
    return Feed(factory, stall_seconds=stall, retry_initial=0.1, retry_max=0.2), factory


def count_refusals(mod: ModuleType, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How often a second instance was tried while one held the camera."""
    refusals: list[int] = []
    real_init = mod.Picamera2.__init__

    def init(self, camera_num: int = 0) -> None:
        if camera_num in mod.held():
            refusals.append(camera_num)
        real_init(self, camera_num)

    monkeypatch.setattr(mod.Picamera2, "__init__", init)
    return refusals


@contextlib.contextmanager
def capturing(fake, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Feed, Path, list[int]]]:
    """A picamera2 feed delivering frames, its control file, and the refused second openings."""
    mod, control = fake
    refusals = count_refusals(mod, monkeypatch)
    feed, _ = picamera2_feed()
    feed.start()
    try:
        assert drain(feed, 0.5)
        yield feed, control, refusals
    finally:
        feed.stop()


def test_a_hung_picamera2_capture_is_recovered_in_the_reader(fake, monkeypatch: pytest.MonkeyPatch) -> None:
    with capturing(fake, monkeypatch) as (feed, control, refusals):
        restarts = feed.restarts
        control.write_text("hang")
        timed_out = lambda: feed.state.startswith("retrying") and "capture timed out" in (feed.error or "")  # noqa: E731
        assert watching(feed, timed_out, 5)
        control.write_text("ok")
        assert watching(feed, lambda: feed.state == "running", 5) and drain(feed, 0.5)
        assert feed.restarts > restarts and refusals == [] and feed.stuck_readers() == 0


def test_a_wedged_picamera2_is_reported_and_never_opened_twice(fake, monkeypatch: pytest.MonkeyPatch) -> None:
    with capturing(fake, monkeypatch) as (feed, control, refusals):
        control.write_text("wedge")  # the capture hangs, then close() blocks in the "kernel"
        assert watching(feed, lambda: feed.state == "held by a stuck reader", 8), feed.state
        assert "did not close" in (feed.error or "") and "no second instance" in (feed.error or "")
        drain(feed, 1.5)  # several stall periods: still no second Picamera2(0)
        assert feed.state == "held by a stuck reader" and refusals == []
        control.write_text("ok")  # the close completes: the camera is free, a new reader opens it
        assert watching(feed, lambda: feed.state == "running", 8), feed.state
        assert drain(feed, 0.5) and refusals == [] and feed.stuck_readers() == 0


def test_auto_falls_back_to_opencv_when_picamera2_cannot_configure(
    fake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks.mjpeg_stream import MjpegHttpServer, jpeg_frames

    mod, control = fake
    control.write_text("usb")  # libcamera lists the USB webcam; its single stream has no lores
    opened: list[int] = []
    real_init = mod.Picamera2.__init__
    monkeypatch.setattr(mod.Picamera2, "__init__", lambda self, n=0: (opened.append(n), real_init(self, n))[1])
    camera = MjpegHttpServer(jpeg_frames(tmp_path / "frames")).start()
    feed, factory = picamera2_feed(kind="auto", device=camera.url, stall=1.0)
    feed.start()
    try:
        assert watching(feed, lambda: feed.state == "running", 15), (feed.state, feed.error)
        assert drain(feed, 0.5)
        assert feed.name == f"opencv:{camera.url}" and mod.held() == {}  # the failed instance was closed
        assert "picamera2 cannot configure camera 0" in (feed.last_error or "")
        assert "using OpenCV" in (factory.picamera2_refused or "")
        assert opened == [0]  # tried once, not retried forever
    finally:
        feed.stop()
        camera.stop()


def test_watchdog_grace_is_bounded() -> None:
    assert configmod.parse("").source.watchdog_grace_seconds == 300.0
    with pytest.raises(ConfigError, match=r"f.toml:2: source.watchdog_grace_seconds: .*\[stall_seconds, 86400\]"):
        configmod.parse("[source]\nwatchdog_grace_seconds = 2\n", "f.toml")  # shorter than a stall
    with pytest.raises(ConfigError, match="watchdog_grace_seconds"):
        configmod.parse("[source]\nwatchdog_grace_seconds = 100000\n", "f.toml")
