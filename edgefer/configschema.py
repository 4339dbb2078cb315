"""The configuration's schema: one typed dataclass per TOML table, and each key described once.

The ``#:`` comment above a field is that key's description: ``docs/configuration.md``'s
reference ("Every key") is generated from these comments and the defaults
(``python -m edgefer.configdocs --write``), and a test fails when the docs or the example
``deploy/edgefer.toml`` disagree with the schema. Reading a TOML file into these classes,
with errors that name the file, the line and the key, is ``edgefer.config``.

A number key's accepted values are part of its declaration (``Annotated[int, Range(1, 16)]``)
and :meth:`Table.validate` checks every such range the same way, with the same wording; a
table's own ``check()`` adds what relates keys to each other or is more than a range, and
fills in what an empty value means. Those checks are about values, but ``Config.check`` also
reads the host name and ``$STATE_DIRECTORY`` for the defaults, looks at the state directory's
path, and ``MqttConfig.check`` checks that named files exist.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import socket
from dataclasses import dataclass, field
from functools import cached_property, reduce
from pathlib import Path
from typing import Annotated, Any, get_type_hints

ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DURATION_RE = re.compile(r"^(\d+)\s*([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> int:
    """Seconds from an int or a string like '90', '15m', '1h', '24h', '7d'."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 60, '15m', '1h'")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError("must be positive")
        return value
    m = DURATION_RE.match(str(value).strip())
    if not m or int(m.group(1)) <= 0:
        raise ValueError(f"expected a duration such as 60, '15m', '1h', got {value!r}")
    return int(m.group(1)) * _UNITS[m.group(2)]


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _seconds(key: str, value: float, low: float, high: float, low_name: str = "") -> None:
    """A finite number of seconds in [low, high]: inf or nan would switch off what the key
    protects (a watchdog that never fires, a retry that never comes)."""
    lowest = f"{low_name} ({low:g})" if low_name else f"{low:g}"
    _check(
        math.isfinite(value) and low <= value <= high,
        f"{key} must be a finite number of seconds from {lowest} to {high:g}, got {value!r}",
    )


def _duration(key: str, value: Any, low: int, high: int) -> int:
    """A duration (parse_duration) within [low, high] seconds; the error starts with ``key``."""
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None
    _check(low <= seconds <= high, f"{key} must lie between {_span(low)} and {_span(high)}, got {value!r}")
    return seconds


def _span(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class Range:
    """The values a number key accepts, declared with the key: ``low`` to ``high``, either end
    excluded when ``*_open``. A float outside it, inf and nan included, is refused."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    #: the error speaks of a number of seconds (a finite one: inf would switch off what the
    #: key protects, a watchdog that never fires, a retry that never comes)
    seconds: bool = False

    def holds(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return math.isfinite(value) and above and below

    def error(self, key: str, value: float, whole: bool) -> str:
        if self.seconds:
            return f"{key} must be a finite number of seconds from {self.low:g} to {self.high:g}, got {value!r}"
        if whole:
            return f"{key} must lie in {int(self.low)}..{int(self.high)}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"{key} must lie in {left}{self.low:g}, {self.high:g}{right}"


class Table:
    """One TOML table. :meth:`validate` checks every key declared with a :class:`Range`, then
    the table's own :meth:`check`; edgefer.config calls it once the file's values are in."""

    def validate(self) -> None:
        hints = get_type_hints(type(self), include_extras=True)
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            hint = hints[f.name]
            for bound in getattr(hint, "__metadata__", ()):
                value = getattr(self, f.name)
                _check(bound.holds(value), bound.error(f.name, value, hint.__origin__ is int))
        self.check()

    def check(self) -> None:
        """What relates this table's keys to each other, or is more than a range."""


#: the shortest bucket the mood windows may be counted in, and the most buckets the longest
#: window may hold: 1-second buckets of a 7-day window cost 7.8 MB of memory at once and
#: megabytes of state on every save
MIN_BUCKET = 5
MAX_BUCKETS = 20000


def _topic_prefix(key: str, value: str) -> None:
    """An MQTT topic prefix in normal form: levels of letters, digits, _ and - joined by
    single '/'; no leading or trailing '/' (a leading one makes a different topic tree), no
    empty level, no wildcard (+, #: a subscription's, never a topic's)."""
    clean = "/".join(level for level in value.split("/") if level)
    suggestion = f" (write {clean!r})" if clean and clean != value else ""
    _check(bool(value), f"{key} must not be empty")
    _check("+" not in value and "#" not in value, f"{key} {value!r}: + and # are MQTT wildcards, not topic levels")
    _check(value == clean, f"{key} {value!r}: no '/' at the start or end and no empty level{suggestion}")
    _check(bool(re.fullmatch(r"[A-Za-z0-9_/-]+", value)), f"{key} may hold letters, digits, _, - and /")


@dataclass
class SourceConfig(Table):
    #: `auto`, `picamera2`, `opencv`, `folder` or `demo`. `auto`: the Pi camera if picamera2 sees one, else a
    #: folder if `device` is a directory, else OpenCV on `device`; never the demo (see [the
    #: camera](#the-camera)).
    kind: str = "auto"
    #: picamera2: camera number. opencv: camera index, device path, video file or stream URL (user name and
    #: password in a URL are shown as `***` in logs, status and stats). folder: a directory of images.
    device: str = "0"
    #: frame width, 16 to 4096.
    width: Annotated[int, Range(16, 4096)] = 640
    #: frame height, 16 to 4096.
    height: Annotated[int, Range(16, 4096)] = 480
    #: frame rate requested from a camera (and used for folders), above 0 and at most 120.
    fps: Annotated[float, Range(0, 120, low_open=True)] = 15.0
    #: files and folders: play at their own frame rate; `false`: as fast as possible.
    pace: bool = True
    #: files and folders: start again at the end instead of finishing.
    loop: bool = False
    #: a live source without a frame for this long is reopened; 0.1 to 600.
    stall_seconds: Annotated[float, Range(0.1, 600, seconds=True)] = 5.0
    #: first wait before reopening a failed source; doubles on every failure; 0.1 to 600.
    retry_initial_seconds: Annotated[float, Range(0.1, 600, seconds=True)] = 1.0
    #: longest wait between reopening attempts; from `retry_initial_seconds` to 3600.
    retry_max_seconds: float = 60.0
    #: the watchdog policy: while no frame arrives, systemd's watchdog is fed for this long after the last frame
    #: (or the start), then no more, so systemd restarts the daemon, which frees a camera wedged in the kernel
    #: (see [the camera](#the-camera)). From `stall_seconds` to 86400; above a minute under the shipped unit.
    watchdog_grace_seconds: float = 300.0

    def check(self) -> None:
        _check(
            self.kind in ("auto", "picamera2", "opencv", "folder", "demo"),
            "kind must be one of auto, picamera2, opencv, folder, demo",
        )
        _seconds("retry_max_seconds", self.retry_max_seconds, self.retry_initial_seconds, 3600, "retry_initial_seconds")
        _check(
            self.stall_seconds <= self.watchdog_grace_seconds <= 86400,
            "watchdog_grace_seconds must lie in [stall_seconds, 86400]",
        )


@dataclass
class FacesConfig(Table):
    #: `auto` (`blazeface-full` when a TFLite runtime loads, else `haar`), `blazeface-full` (BlazeFace full
    #: range run through LiteRT, no mediapipe needed; faces from about 40 px wide), `blazeface` (short range:
    #: half the cost, faces from about 100 px wide), `haar` or `mediapipe`. See [The face
    #: detector](#the-face-detector).
    detector: str = "auto"
    #: detection runs on the frame scaled by this factor, 0.1 to 1; crops come from the full frame.
    detect_scale: Annotated[float, Range(0.1, 1)] = 0.5
    #: run the detector every N frames (1 to 60) and keep its boxes in between.
    detect_every: Annotated[int, Range(1, 60)] = 3
    #: smallest face side in full-frame pixels, 8 to 2048.
    min_face: Annotated[int, Range(8, 2048)] = 40
    #: how a face's crop frames the detector's box: `"auto"`, the framing measured for the detector in use (see
    #: [The face detector](#the-face-detector)), or a number from -0.2 to 1: a border of that fraction of the
    #: box's side on every edge.
    margin: Any = "auto"
    #: at most this many faces per frame (the largest), 1 to 64.
    max_faces: Annotated[int, Range(1, 64)] = 8
    #: BlazeFace and mediapipe: detection score threshold, between 0 and 1. 0.2 finds sad and
    #: angry faces nearly as often as happy ones; MediaPipe's own 0.5 misses more of them
    #: (benchmarks/results/detect-threshold.md).
    min_score: Annotated[float, Range(0, 1, low_open=True, high_open=True)] = 0.2

    def check(self) -> None:
        _check(
            self.detector in ("auto", "haar", "mediapipe", "blazeface", "blazeface-full"),
            "detector must be one of auto, haar, mediapipe, blazeface, blazeface-full",
        )
        number = isinstance(self.margin, int | float) and not isinstance(self.margin, bool)
        _check(self.margin == "auto" or (number and -0.2 <= self.margin <= 1), 'margin must be "auto" or -0.2..1')


@dataclass
class ClassifierConfig(Table):
    #: a `.tflite` model file. A bare file name names a model shipped inside the package
    #: (`edgefer-dense-int8.tflite`, `edgefer-int8.tflite`, `paper-int8.tflite` and their `-float32` forms);
    #: anything with a `/` is a path. Empty: the shipped `edgefer-dense-int8.tflite` (stage 29: trained on faces
    #: degraded as a camera degrades them and framed as the daemon's face stage frames them; x0.68 of the
    #: paper's int8 file's time; models/README.md). Its predecessor is shipped too:
    #: `model = "edgefer-int8.tflite"` with `flip_margin = 0.12`.
    model: str = ""
    #: a file with the model's labels, one per line in output order (names from angry, happy, sad, neutral).
    #: Empty: `labels.txt` beside the model, else that order.
    labels: str = ""
    #: inference threads, 1 to 16. One 48x48 face is too small a job to share: a second thread
    #: costs more CPU in hand-over than it saves in time (crop and classify on clip frames:
    #: 0.33 ms of CPU per frame with 1, 0.54 with 2), and leaves the Pi's other cores to capture
    #: and detection. Raise it only for many faces per frame.
    threads: Annotated[int, Range(1, 16)] = 1
    #: a face whose top probability (after `temperature`) is below this counts as `uncertain` in `counts`, 0 to
    #: below 1. The published `shares` use every face's probabilities.
    min_confidence: Annotated[float, Range(0, 1, high_open=True)] = 0.4
    #: probabilities are sharpened (below 1) or softened as softmax(log p / T) before they are counted and
    #: averaged into shares, 0.2 to 5. The network's probabilities are soft, and their plain mean leans toward
    #: the mix it was trained on: in a room of other mixes (a party, a single person) the shares were 0.41 L1 from
    #: the truth. 0.2 (close to counting labels) had the lowest L1 over clips of training-split faces of every
    #: kind of mix; 1 is the plain mean, best only when a room's mix is FER2013's
    #: ([benchmarks/results/mixes.md](../benchmarks/results/mixes.md)).
    temperature: Annotated[float, Range(0.2, 5)] = 0.2
    #: how much of the training mix's lean is taken out of each face's probabilities before `temperature`, 0 to 1:
    #: they are divided by FER2013's training mix (0.19 / 0.34 / 0.23 / 0.24 for angry, happy, sad, neutral) to
    #: this power. A network trained on more happy faces than angry ones calls a doubtful face happy more often
    #: than it should in a room of another mix. 0.5 had the lowest L1 over clips of training-split faces of
    #: every kind of mix, with `temperature` 0.2 ([benchmarks/results/mixes.md](../benchmarks/results/mixes.md)).
    #: `0` for a model trained on another mix.
    balance: Annotated[float, Range(0, 1)] = 0.5
    #: the weight of a face's previous reading in the one counted now, 0 to below 1: each face's probabilities are
    #: a moving average along its track, `(1 - smoothing) x this frame + smoothing x its last reading`, so one
    #: noisy frame (a box that drifted between detections, a blink) moves it less. `0`: every frame alone. 0.7
    #: had the lowest L1 over clips of training-split faces at the `temperature` and `balance` above
    #: ([benchmarks/results/mixes.md](../benchmarks/results/mixes.md)). Photos in a folder are never averaged.
    smoothing: Annotated[float, Range(0, 1, high_open=True)] = 0.7
    #: live cameras: at most this many classification rounds per second, 0 to 120; `0`: every frame with faces.
    #: A recording or folder is analysed whole.
    max_rate: Annotated[float, Range(0, 120)] = 5.0
    #: also classify each face's mirror image and average the two probabilities: a network errs differently on a
    #: face and its mirror image, so the mean is right more often (0.3 to 1.3 points on FER2013 PublicTest for
    #: the shipped files, models/README.md), for a second inference per face in the same batch.
    flip_average: bool = True
    #: mirror only the faces whose two likeliest emotions lie closer than this in probability, 0 to 1 (`1`:
    #: every face, `0`: none). A confident answer is seldom changed by the mirror image: on validation faces the
    #: shipped default mirrors 15 % of faces at 0.12 and keeps most of the gain (75.01 % against 74.44 % for no
    #: mirror and 75.15 % for every face), at 1.15 inferences per face instead of 2 (`inferences_per_face` in
    #: the status). Chosen for the shipped default as the largest margin that mirrors at most 15 % of validation
    #: faces; `edgefer-int8.tflite` was given 0.12 the same way. For another model, 1 is the safe choice.
    flip_margin: Annotated[float, Range(0, 1)] = 0.12


@dataclass
class MoodConfig(Table):
    #: rolling windows: 1 to 8 distinct durations, each from `5s` to `7d`. With `publish_every` they must allow
    #: buckets of at least 5 s, at most 20,000 of them in the longest window (see [Windows and publish
    #: interval](#windows-and-publish-interval)).
    windows: list[Any] = field(default_factory=lambda: ["1m", "15m", "1h", "24h"])
    #: how often each window is published (a shorter window: once per its own length); 5 s to 1 day.
    publish_every: Any = "1m"
    #: how often the rolling state is saved so a restart resumes it; 1 s to 1 hour.
    persist_every: Any = "30s"

    def check(self) -> None:
        _check(isinstance(self.windows, list) and 1 <= len(self.windows) <= 8, "windows must hold 1..8 durations")
        secs = [_duration("windows", w, MIN_BUCKET, 7 * 86400) for w in self.windows]
        _check(len(set(secs)) == len(secs), "windows must be distinct")
        every = _duration("publish_every", self.publish_every, 5, 86400)
        _duration("persist_every", self.persist_every, 1, 3600)
        self._check_buckets(secs, every)
        # parsed once, here, at load: the daemon reads the seconds, never the strings
        _ = self.window_seconds, self.publish_seconds, self.persist_seconds

    @staticmethod
    def _check_buckets(secs: list[int], every: int) -> None:
        """Time is counted in buckets of the greatest common divisor of the windows and their
        publish intervals (edgefer.mood); refuse what makes them too short or too many."""
        bucket = reduce(math.gcd, [*secs, *(min(w, every) for w in secs)])
        names = ", ".join(_span(w) for w in sorted(secs))
        _check(
            bucket >= MIN_BUCKET,
            f"windows {names} published every {_span(every)} are counted in {bucket}s buckets (the greatest "
            f"common divisor of the windows and the interval); buckets must be at least {MIN_BUCKET}s: make "
            f"every window and publish_every a multiple of {MIN_BUCKET}s or more",
        )
        longest = max(secs)
        step = -(-longest // MAX_BUCKETS)
        _check(
            longest // bucket <= MAX_BUCKETS,
            f"windows: the longest window, {_span(longest)}, holds {longest // bucket} buckets of {bucket}s; at "
            f"most {MAX_BUCKETS} are kept (memory, and the state saved every persist_every): make the windows and "
            f"publish_every multiples of a longer step (at least {_span(step)}), or shorten the longest window",
        )

    @cached_property
    def window_seconds(self) -> list[int]:
        """The windows in seconds, shortest first."""
        return sorted(parse_duration(w) for w in self.windows)

    @cached_property
    def publish_seconds(self) -> int:
        return parse_duration(self.publish_every)

    @cached_property
    def persist_seconds(self) -> int:
        return parse_duration(self.persist_every)


@dataclass
class MqttConfig(Table):
    #: `false`: summaries go to standard output as JSON lines instead of a broker.
    enabled: bool = True
    #: broker host name or address; must not be empty (unless `enabled = false`).
    host: str = "localhost"
    #: broker port, 1 to 65535 (TLS listeners are usually 8883).
    port: Annotated[int, Range(1, 65535)] = 1883
    #: topics are `<prefix>/<device_id>/...`; levels of letters, digits, `_` and `-` joined by single `/`: no
    #: `/` at the start or end (a leading one makes another topic tree), no empty level (`a//b`), no `+` or `#`
    #: (wildcards); the error names the form to write instead.
    prefix: str = "edgefer"
    #: MQTT client id, at most 64 characters. Empty: `edgefer-<device_id>`, with the device id in effect (also
    #: one given by `--device-id`). Must be unique on the broker.
    client_id: str = ""
    #: broker user name; empty: connect without credentials.
    username: str = ""
    #: name of the systemd credential holding the password, read from `$CREDENTIALS_DIRECTORY`.
    password_credential: str = "mqtt_password"
    #: a file holding the password, for runs outside systemd; must exist if set.
    password_file: str = ""
    #: connect with TLS.
    tls: bool = False
    #: CA certificate(s) that signed the broker's certificate; empty: the system's CAs. Must exist if set.
    ca_file: str = ""
    #: client certificate, for brokers that require one; goes together with `key_file`.
    cert_file: str = ""
    #: the client certificate's private key.
    key_file: str = ""
    #: skip the check that the broker's certificate names `host` (the certificate is still verified).
    tls_insecure: bool = False
    #: MQTT keep-alive in seconds, 5 to 3600; the broker declares the daemon gone after about 1.5 times this.
    keepalive: Annotated[int, Range(5, 3600)] = 30
    #: QoS of the summaries: 0, 1 or 2. Below 1 they can be lost (see [mqtt.md](mqtt.md#delivery-guarantees)).
    qos: int = 1
    #: summaries kept in the outbox while the broker is unreachable, 10 to 1,000,000; beyond that the oldest are
    #: dropped and counted. A reload applies it.
    queue_max: Annotated[int, Range(10, 1_000_000)] = 10000
    #: how often the stats topic is published, and the store's upkeep (history pruning, log truncation) done; 1
    #: s to 1 hour.
    stats_every: Any = "30s"

    @cached_property
    def stats_seconds(self) -> int:
        return parse_duration(self.stats_every)

    def check(self) -> None:
        _check(
            not self.enabled or (bool(self.host) and not any(c.isspace() for c in self.host)),
            "host must name the broker (a host name or address, no spaces)",
        )
        _topic_prefix("prefix", self.prefix)
        _check(not self.client_id or len(self.client_id) <= 64, "client_id at most 64 characters")
        _check(self.qos in (0, 1, 2), "qos must be 0, 1 or 2")
        _duration("stats_every", self.stats_every, 1, 3600)
        for key in ("ca_file", "cert_file", "key_file", "password_file"):
            value = getattr(self, key)
            _check(not value or Path(value).is_file(), f"{key}: no such file {value!r}")
        _check(bool(self.cert_file) == bool(self.key_file), "cert_file and key_file go together")
        _ = self.stats_seconds  # parsed once, here, at load


@dataclass
class HomeAssistantConfig(Table):
    #: publish MQTT discovery for Home Assistant; `false` removes the entities.
    enabled: bool = True
    #: Home Assistant's discovery prefix; the same form as `mqtt.prefix` (no leading or trailing `/`, no empty
    #: level, no `+` or `#`).
    prefix: str = "homeassistant"

    def check(self) -> None:
        _topic_prefix("prefix", self.prefix)


@dataclass
class HistoryConfig(Table):
    #: days of published summaries kept locally for `edgefer report`, 0 to 3650; `0` records none and deletes
    #: the existing history at the next pruning (within `mqtt.stats_every`).
    keep_days: Annotated[int, Range(0, 3650)] = 30


@dataclass
class Config(Table):
    #: names the device in topics and Home Assistant; letters, digits, `_`, `-`, at most 64. Empty: the host
    #: name (other characters replaced by `-`).
    device_id: str = ""
    #: where the outbox, rolling state, history, `status.json` and the daemon's instance id live. Empty:
    #: `$STATE_DIRECTORY` (systemd sets `/var/lib/edgefer`), else `~/.local/state/edgefer`. One daemon at a
    #: time: it holds a lock on `edgefer.lock` there (which records its pid), and a second daemon on the same
    #: directory refuses to start, naming the directory and that pid; the lock goes with the process, even one
    #: killed with SIGKILL. Restart to change (a reload keeps the old directory and says so in
    #: `last_reload.notes`).
    state_dir: str = ""
    #: `debug`, `info`, `warning` or `error`; logs go to standard error, under systemd the journal. A reload
    #: applies it.
    log_level: str = "info"
    source: SourceConfig = field(default_factory=SourceConfig)
    faces: FacesConfig = field(default_factory=FacesConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    mood: MoodConfig = field(default_factory=MoodConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    homeassistant: HomeAssistantConfig = field(default_factory=HomeAssistantConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)

    def __post_init__(self) -> None:
        #: dotted keys that validate() filled in because the file left them empty; they are
        #: derived again (not copied) when overrides are applied.
        self.derived: set[str] = set()

    def check(self) -> None:
        if not self.device_id:
            self.device_id = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:64] or "edgefer"
            self.derived.add("device_id")
        _check(bool(ID_RE.match(self.device_id)), "device_id may hold only letters, digits, _ and - (1..64)")
        levels = ("debug", "info", "warning", "error")
        _check(self.log_level in levels, "log_level must be debug, info, warning or error")
        if not self.state_dir:
            self.state_dir = os.environ.get("STATE_DIRECTORY", "").split(":")[0] or str(
                Path("~/.local/state/edgefer").expanduser()
            )
            self.derived.add("state_dir")
        blocker = _not_a_directory(Path(self.state_dir))
        _check(blocker is None, f"state_dir: {blocker} exists and is not a directory")
        if not self.mqtt.client_id:
            self.mqtt.client_id = f"edgefer-{self.device_id}"
            self.derived.add("mqtt.client_id")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _not_a_directory(path: Path) -> Path | None:
    """The first existing path among ``path`` and its parents when it is not a directory
    (so the directory can never be created there), else None."""
    for p in (path, *path.parents):
        try:
            if p.exists():
                return None if p.is_dir() else p
        except OSError:  # not allowed to look: leave it to the store, which reports faults
            return None
    return None
