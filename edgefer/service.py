"""The service loop: thin wiring of source -> faces -> classifier -> mood -> output.

All decisions live in the stages; this module only moves frames and results between
them, keeps time, answers signals (SIGHUP reload, SIGTERM/SIGINT stop) and reports what
it does (status file, sd_notify, stats topic). Frames and crops exist only as local
variables of one loop iteration: nothing here writes, logs or publishes pixels.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgefer import LABELS, __version__
from edgefer import config as configmod
from edgefer import models as shipped
from edgefer.classifier import Classifier, ModelError, read_labels
from edgefer.clock import Clock, ClockGate, iso, system_wall
from edgefer.config import Config, ConfigError
from edgefer.discovery import discovery_messages, topics
from edgefer.faces import FaceStage, build_face_stage, make_detector
from edgefer.framepath import FramePath
from edgefer.mood import MoodTracker, window_name
from edgefer.publish import MqttOutput, Output, StdoutOutput
from edgefer.sdnotify import Notifier, WatchdogGrace
from edgefer.sources import Feed, Frame, SourceFactory, is_recording
from edgefer.status import Counters, ProcessCost, Readiness, read_temperature
from edgefer.statusfile import StatusWriter
from edgefer.store import DirHealth, Item, StateDirLock, Store
from edgefer.timers import LoopTimers

log = logging.getLogger("edgefer")


def build_classifier(cfg: Config) -> Classifier:
    """The classifier ``cfg`` names; a labels file named but missing is an error rather than
    a silent fall back to the shipped labels (the counts would be mislabelled)."""
    model, labels_path = shipped.resolve(cfg.classifier.model)
    labels_file = Path(cfg.classifier.labels) if cfg.classifier.labels else labels_path
    if cfg.classifier.labels and not labels_file.exists():
        raise ModelError(f"{labels_file}: labels file not found (classifier.labels)")
    labels = read_labels(labels_file) if labels_file.exists() else LABELS
    c = cfg.classifier
    return Classifier(model, labels, threads=c.threads, flip_average=c.flip_average, flip_margin=c.flip_margin)


class Service:
    """One daemon: the stages built from a config, the loop that moves frames through them,
    and what it reports. Built whole or not at all (the state directory's lock is released
    when construction fails)."""

    def __init__(self, cfg: Config, config_path: str | None = None, *, overrides: dict | None = None) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.overrides = overrides or {}
        self.notifier = Notifier()
        self.clock = Clock(wall=system_wall())
        #: why counting and publishing wait for the clock (None: they do not)
        self.clock_wait: str | None = None
        #: the timeline's time since which frames are counted (None while waiting)
        self.counting_from: float | None = None
        self.started = time.time()
        self._stop = threading.Event()
        self._reload = threading.Event()
        self.last_reload: dict[str, Any] | None = None
        self.counters = Counters()
        self.cost = ProcessCost()
        self.readiness = Readiness(self.notifier)
        self.watchdog = WatchdogGrace(self.notifier)
        #: the frame time of the last frame that was classified (the rate cap counts from it)
        self.last_classify = 0.0
        self.timers = LoopTimers(cfg, time.monotonic())  # started again when the loop starts
        self.state_dir = Path(cfg.state_dir)
        self.health = DirHealth(self.state_dir)
        self.status_writer = StatusWriter(
            self.state_dir,
            on_fail=lambda exc: self.health.failed("status", exc),
            on_ok=lambda: self.health.recovered("status"),
        )
        # one daemon per state directory, checked before the store is touched
        self.lock = StateDirLock(self.state_dir)
        try:
            self.lock.acquire()  # StateDirBusy: another daemon has it; let it propagate
        except OSError as exc:  # an unwritable directory: the store runs from memory, unshared
            log.warning("state directory %s: no lock taken (%s)", self.state_dir, exc)
        try:
            self.store = Store(self.state_dir / "edgefer.db", queue_max=cfg.mqtt.queue_max, health=self.health)
            self._build(cfg)
        except BaseException:
            self.lock.release()
            raise
        # the clock is doubted while it reads earlier than the last summary published
        self.gate = ClockGate(max(self.tracker.last_end.values(), default=None))
        self.follow_clock()

    # -- construction and reload -----------------------------------------------------------

    def _build(self, cfg: Config) -> None:
        self.classifier = build_classifier(cfg)
        self.recording = is_recording(cfg.source)
        self.path = self._path(cfg, build_face_stage(cfg.faces))
        self.tracker = self._tracker(cfg)
        self.output = self._output(cfg)
        self.feed = self._feed(cfg)

    def _path(self, cfg: Config, stage: FaceStage) -> FramePath:
        # track ids start from the wall time in ms x 1000, so a restart never reuses an id
        # that restored counts hold (that would merge two faces into one unit)
        first = int(time.time() * 1000) * 1000
        return FramePath.of(
            stage,
            self.classifier,
            cfg.classifier,
            stills=cfg.source.kind == "folder" or (self.recording and Path(cfg.source.device).is_dir()),
            first_track=first,
        )

    def _tracker(self, cfg: Config) -> MoodTracker:
        tracker = MoodTracker(
            cfg.device_id,
            cfg.mood.window_seconds,
            cfg.mood.publish_seconds,
            labels=self.classifier.labels,
            min_confidence=cfg.classifier.min_confidence,
        )
        # a recording is analysed from nothing: never mixed with a live daemon's counts
        state = None if self.recording else self.store.load_state()
        if state and state.get("device") in (None, cfg.device_id):
            tracker.restore(state)
        now = self.clock.now()
        if self.recording:
            # the recording's second 0 sits on the latest whole publish interval, so its
            # windows cover recording time [0, every), [every, 2 every), ...
            step = math.lcm(*tracker.intervals.values())
            now = now // step * step
        self.media_anchor = self.media_now = now
        tracker.recording_start = now if self.recording else None
        tracker.start(now)
        return tracker

    def _output(self, cfg: Config) -> Output:
        if not cfg.mqtt.enabled:
            return StdoutOutput()
        ha = f"{cfg.homeassistant.prefix}/status" if cfg.homeassistant.enabled else None
        return MqttOutput(cfg.mqtt, cfg.device_id, ha_status_topic=ha, instance=self.store.instance_id())

    def _feed(self, cfg: Config) -> Feed:
        s = cfg.source
        return Feed(
            SourceFactory(s),
            pace=s.pace,
            loop=s.loop,
            stall_seconds=s.stall_seconds,
            retry_initial=s.retry_initial_seconds,
            retry_max=s.retry_max_seconds,
        )

    def request_reload(self, *_: Any) -> None:
        self._reload.set()

    def request_stop(self, *_: Any) -> None:
        self._stop.set()

    def reload(self) -> bool:
        """Apply a changed config file; a config or model that fails keeps the old one running."""
        self.notifier.reloading()
        try:
            new = configmod.apply_overrides(configmod.load(self.config_path), self.overrides)
            new_classifier = build_classifier(new)
            detector = make_detector(new.faces.detector, new.faces.min_score)
        except (ConfigError, ModelError, RuntimeError, ValueError, ImportError) as exc:
            self.last_reload = {"ok": False, "at": time.time(), "error": str(exc)}
            log.error("reload refused, keeping the running configuration: %s", exc)
            self.notifier.ready(f"reload refused: {exc}")
            return False
        old = self.cfg
        notes = [f"{k} changes need a restart" for k in ("state_dir",) if getattr(old, k) != getattr(new, k)]
        logging.getLogger().setLevel(getattr(logging, new.log_level.upper()))
        self.store.queue_max = new.mqtt.queue_max
        self.timers.configure(new)
        self.persist()
        self.classifier = new_classifier
        self.path = self._path(new, build_face_stage(new.faces, detector))
        self.cfg = new
        if (old.mood, old.device_id, old.classifier.min_confidence) != (
            new.mood,
            new.device_id,
            new.classifier.min_confidence,
        ):
            self.tracker = self._tracker(new)
        if (old.mqtt, old.homeassistant, old.device_id) != (new.mqtt, new.homeassistant, new.device_id):
            self.output.stop()
            self.output = self._output(new)
            self.output.start()
        if old.source != new.source:
            self.feed.stop()
            self.feed = self._feed(new)
            self.feed.start()
        self.last_reload = {"ok": True, "at": time.time(), "error": None, "notes": notes}
        log.info("configuration reloaded from %s", self.config_path)
        self.notifier.ready("reloaded")
        return True

    # -- the loop --------------------------------------------------------------------------

    def process(self, gray: np.ndarray, t: float, allow_classify: bool) -> int:
        """One frame through the frame path into the mood tracker at time ``t``; returns the
        faces classified (those the quality gate refused included)."""
        if gray.ndim != 2 or gray.dtype != np.uint8 or min(gray.shape) < 16:
            self.counters.bad_frames += 1
            return 0
        reading = self.path.process(gray, allow_classify)
        self.counters.add_timings(reading.ms)
        probs, tracks = reading.counted()
        self.counters.classified += len(probs)
        self.counters.poor += reading.poor_count
        self.counters.faces += len(reading.faces)
        if self.recording or self.counting_from is not None:  # not while waiting for the clock
            self.tracker.add_frame(t, None if reading.probs is None else probs, tracks, poor=reading.poor_count)
        return 0 if reading.probs is None else len(reading.probs)  # the rate cap counts every classification

    # -- the clock ---------------------------------------------------------------------

    def follow_clock(self) -> None:
        """Once per loop iteration: re-anchor the timeline when the wall clock was stepped
        (moving the counts made since the last anchor with it), and hold counting and
        publishing while the clock cannot be trusted (``clock.ClockGate``). A recording runs
        on its own clock and is left alone."""
        if self.recording:
            return
        step = self.clock.check()
        now = self.clock.now()
        wait = self.gate.reason(now)
        if step is not None:
            log.warning(
                "the wall clock stepped %+.1f s (%s -> %s): summaries follow the corrected time",
                step.seconds,
                iso(step.before),
                iso(step.after),
            )
            if self.counting_from is not None and wait is None:  # counts never move into a wrong time
                self.tracker.move(max(step.since, self.counting_from), step.before, step.seconds, now)
                if step.seconds < 0:
                    self._rewind(now)
                self.counting_from = now
        was_waiting, self.clock_wait = self.clock_wait is not None, wait
        if wait is not None:
            if not was_waiting:
                log.warning("waiting for the clock: %s; nothing is counted or published until it is right", wait)
            self.counting_from = None
        elif self.counting_from is None:
            if was_waiting:
                log.warning("the clock reads %s: counting and publishing resume", iso(now))
            self._rewind(now)
            self.counting_from = now

    def _rewind(self, now: float) -> None:
        rewound = self.tracker.rewind(now)
        if rewound:
            log.warning(
                "windows %s had published boundaries ahead of the corrected clock: they publish them again "
                "under the correct time, keys ending /r%d",
                ", ".join(window_name(w) for w in rewound),
                self.tracker.era,
            )

    def publish_due(self) -> None:
        """Queue the summaries whose boundary has passed (none while waiting for the clock)."""
        if self.recording:
            self.emit(self.tracker.due(self.media_now))
        elif self.counting_from is not None:
            self.emit(self.tracker.due(self.clock.now()))

    def clock_report(self) -> dict:
        step = self.clock.last_step
        return {
            "now": None if self.recording else iso(self.clock.now()),
            "state": "waiting" if self.clock_wait else "ok",
            "waiting_for": self.clock_wait,
            "steps": self.clock.steps,
            "last_step": None
            if step is None
            else {"seconds": round(step.seconds, 1), "from": iso(step.before), "to": iso(step.after)},
        }

    # -- output ----------------------------------------------------------------------

    def emit(self, summaries: list) -> None:
        if not summaries:
            return
        base = topics(self.cfg.mqtt.prefix, self.cfg.device_id)["mood"]
        items, hist = [], []
        for s in summaries:
            body = json.dumps(s.payload, separators=(",", ":"))
            items.append(Item(s.key, f"{base}/{s.payload['window']}", body))
            hist.append((s.key, s.window_seconds, s.end, body))
        keep = self.cfg.history.keep_days and not self.recording  # `edgefer report` shows the live device
        self.store.enqueue(items, None if self.recording else self.tracker_state(), hist if keep else None)

    def tracker_state(self) -> dict:
        return {**self.tracker.state(), "device": self.cfg.device_id}

    def persist(self) -> None:
        if not self.recording:
            self.store.save_state(self.tracker_state())

    def send_discovery(self) -> None:
        cfg = self.cfg
        msgs = discovery_messages(
            device=cfg.device_id,
            prefix=cfg.mqtt.prefix,
            ha_prefix=cfg.homeassistant.prefix,
            window=self.ha_window(),
            stats_every=cfg.mqtt.stats_seconds,
            publish_every=cfg.mood.publish_seconds,
        )
        for topic, payload in msgs:
            self.output.publish_live(topic, payload if cfg.homeassistant.enabled else "", retain=True)

    def ha_window(self) -> str:
        secs = self.cfg.mood.window_seconds
        return window_name(900 if 900 in secs else secs[0])

    def stats(self, fps: float) -> dict:
        """The stats topic's payload and the status file's body."""
        c = self.counters
        return {
            "device": self.cfg.device_id,
            "version": __version__,
            "state": "waiting for the clock" if self.clock_wait else "running",
            "uptime": round(time.time() - self.started),
            "fps": round(fps, 2),
            "ms": c.ms_report(),
            **self.cost.report(),
            "frames": c.frames,
            "faces": c.faces,
            "classified": c.classified,
            "poor": c.poor,
            "bad_frames": c.bad_frames,
            "dropped_frames": self.feed.dropped,
            "source": self.feed.report(),
            "detector": self.path.stage.detector.name,
            "runtime": self.classifier.runtime,
            "model": self.classifier.path.name,
            "inferences_per_face": round(self.classifier.inferences_per_face, 3),
            "counting": self.path.counting(),
            "queue_depth": self.store.depth(),
            "dropped_summaries": self.store.dropped,
            "queue_in_memory": self.store.memory_depth,
            "store_fault": self.store.fault,
            "state_dir": self.health.report(),
            "clock": self.clock_report(),
            "temperature_c": read_temperature(),
        }

    def write_status(self, stats: dict) -> None:
        """status.json in the state directory, or in the runtime directory when the state
        directory refuses it (edgefer.statusfile): the status stays current either way."""
        status = {
            **stats,
            "pid": os.getpid(),
            "updated": time.time(),
            "output": self.output.status(),
            "last_reload": self.last_reload,
            "config": self.config_path,
        }
        self.status_writer.write(status, refresh=lambda st: st.update(state_dir=self.health.report()))

    def watchdog_ping(self, *, got_frame: bool) -> bool:
        """Feed systemd's watchdog by the policy in ``sdnotify.WatchdogGrace``: for
        ``source.watchdog_grace_seconds`` after the last frame, then no more. Returns whether
        it was fed."""
        down = 0.0 if got_frame else self.feed.seconds_without_frames()
        return self.watchdog.ping(self.feed.name, down, self.cfg.source.watchdog_grace_seconds)

    def report_status(self, fps: float) -> dict:
        """The status file and systemd's status line (every 2 s); returns the stats."""
        stats = self.stats(fps)
        self.write_status(stats)
        self.notifier.status(
            ("waiting for the clock, " if self.clock_wait else "")
            + f"{self.feed.state}: {fps:.1f} fps, {stats['ms']['total'] or 0:.1f} ms/frame, "
            f"queue {stats['queue_depth']}, {self.output.status().get('state', 'ok')}"
        )
        return stats

    def run(self) -> int:
        """The loop until a stop signal or the end of a finite source; returns the exit code."""
        signal.signal(signal.SIGHUP, self.request_reload)
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        self._log_start()
        self.output.start()
        self.feed.start()
        self.timers = LoopTimers(self.cfg, time.monotonic())
        stats: dict = {}
        while not self._stop.is_set():
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
            frame = self.feed.get(timeout=0.25)
            mono = time.monotonic()
            self.follow_clock()
            if frame is not None:
                self.take(frame)
                del frame  # pixels live for one iteration only
            elif self.feed.ended:
                log.info("source %s ended", self.feed.name)
                break
            elif self.watchdog_ping(got_frame=False) and self.feed.error:
                # fed within the grace: up and retrying; systemd must not time the start out
                self.readiness.announce(f"waiting for source: {self.feed.error}")
            stats = self.duties(mono, stats)
        return self.shutdown(finished=self.feed.ended)

    def _log_start(self) -> None:
        c = self.classifier
        log.info(
            "edgefer %s: device %s, source %s, detector %s, model %s (%s, %d threads, mirrored: %s)",
            __version__,
            self.cfg.device_id,
            self.cfg.source.kind,
            self.path.stage.detector.name,
            c.path,
            c.runtime,
            c.threads,
            c.mirroring,
        )

    def take(self, frame: Frame) -> None:
        """One frame from the feed: timed on the recording's or the corrected wall clock,
        classified within the rate cap, counted, and the watchdog fed."""
        cap = self.cfg.classifier.max_rate
        # the rate cap spares a live camera's CPU; a recording is analysed whole
        gap = 1.0 / cap if cap and not self.recording else 0.0
        allow = frame.t - self.last_classify >= gap
        if self.recording and frame.media_t is not None:
            self.media_now = self.media_anchor + frame.media_t
            t = self.media_now
        else:
            t = self.clock.at(frame.t)
        if self.process(frame.gray, t, allow) and allow:
            self.last_classify = frame.t
        self.counters.frames += 1
        self.timers.fps.add()
        self.watchdog_ping(got_frame=True)
        self.readiness.announce(f"running: {self.feed.name}")

    def duties(self, mono: float, stats: dict) -> dict:
        """Every iteration's work besides the frame: publish what is due, save state, pump the
        outbox, answer Home Assistant, and the periodic reports. Returns the latest stats."""
        cfg, timers = self.cfg, self.timers
        self.publish_due()
        if timers.persist.due(mono):
            self.persist()
        self.output.pump(self.store)
        if self.output.take_ha_online():
            self.send_discovery()
        fps = timers.fps.update(mono)
        if timers.status.due(mono):
            stats = self.report_status(fps)
        if timers.stats.due(mono):
            self.output.publish_live(topics(cfg.mqtt.prefix, cfg.device_id)["stats"], stats or self.stats(fps))
            self.store.prune_history(cfg.history.keep_days * 86400)
        return stats

    def shutdown(self, *, finished: bool) -> int:
        self.notifier.stopping()
        self.feed.stop()
        if finished and (self.recording or self.counting_from is not None):
            end = self.media_now + 1.0 / self.cfg.source.fps if self.recording else self.clock.now()
            self.emit(self.tracker.final(end))
        self.persist()
        deadline = time.monotonic() + (15.0 if finished else 5.0)
        while self.store.depth() and time.monotonic() < deadline:
            self.output.pump(self.store)
            time.sleep(0.05)
        left = self.store.depth()
        if left:
            log.warning("%d summaries still queued; they are sent at the next start", left)
        self.output.stop()
        self.write_status({**self.stats(0.0), "state": "stopped"})
        self.store.close()
        self.lock.release()
        log.info("stopped")
        return 0
