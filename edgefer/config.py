"""One typed configuration, read from TOML, that refuses what it does not know.

Every error names the file, the line and the dotted key, because the person reading it is
an operator over SSH who just edited ``/etc/edgefer/edgefer.toml`` and wants to know which
line to fix. Validation is pure (text in, Config or ConfigError out) so reloads can check a
new file completely before anything running is touched.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field
from functools import cached_property, reduce
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

DEFAULT_PATH = Path("/etc/edgefer/edgefer.toml")
ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DURATION_RE = re.compile(r"^(\d+)\s*([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class ConfigError(ValueError):
    """Invalid configuration; ``str()`` is ready to print (file:line: key: reason)."""


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
class SourceConfig:
    #: auto | picamera2 | opencv | folder | demo. auto: the Pi camera when one is attached,
    #: else a folder when device is a directory, else OpenCV on device (retried until it
    #: appears). Never the demo: its photograph's mood must not pass for a real one.
    kind: str = "auto"
    #: opencv: camera index ("0"), device path ("/dev/video0"), file or stream URL;
    #: folder: a directory of images.
    device: str = "0"
    width: int = 640
    height: int = 480
    fps: float = 15.0
    #: finite sources (file, folder, demo): true = native frame rate, false = as fast as possible.
    pace: bool = True
    #: finite sources: start again at the end instead of finishing.
    loop: bool = False
    #: a live source with no frame for this long is reopened.
    stall_seconds: float = 5.0
    retry_initial_seconds: float = 1.0
    retry_max_seconds: float = 60.0
    #: the watchdog policy: without frames, systemd's watchdog is fed for this long after the
    #: last frame (or the start), then no more, so systemd restarts the process, which frees
    #: a camera wedged in the kernel.
    watchdog_grace_seconds: float = 300.0

    def validate(self) -> None:
        _check(
            self.kind in ("auto", "picamera2", "opencv", "folder", "demo"),
            "kind must be one of auto, picamera2, opencv, folder, demo",
        )
        _check(16 <= self.width <= 4096 and 16 <= self.height <= 4096, "width and height must lie in 16..4096")
        _check(0 < self.fps <= 120, "fps must lie in (0, 120]")
        _seconds("stall_seconds", self.stall_seconds, 0.1, 600)
        _seconds("retry_initial_seconds", self.retry_initial_seconds, 0.1, 600)
        _seconds("retry_max_seconds", self.retry_max_seconds, self.retry_initial_seconds, 3600, "retry_initial_seconds")
        _check(
            self.stall_seconds <= self.watchdog_grace_seconds <= 86400,
            "watchdog_grace_seconds must lie in [stall_seconds, 86400]",
        )


@dataclass
class FacesConfig:
    #: auto | blazeface-full | blazeface | haar | mediapipe. auto: BlazeFace full range through
    #: LiteRT when a runtime loads, else Haar (edgefer.faces.available_detectors says why).
    detector: str = "auto"
    #: detection runs on the frame scaled by this factor; crops come from the full frame.
    detect_scale: float = 0.5
    #: run the detector every N frames and track boxes in between.
    detect_every: int = 3
    #: smallest face side in full-frame pixels.
    min_face: int = 40
    #: how the classifier's crop frames a detected box: "auto" = the framing measured for the
    #: detector in use (reproduces FER2013's tight crops, benchmarks/results/framing.md), or a
    #: number: a border of that fraction of the box's side on every edge (-0.2 to 1).
    margin: Any = "auto"
    max_faces: int = 8
    #: mediapipe score threshold.
    min_score: float = 0.5

    def validate(self) -> None:
        _check(
            self.detector in ("auto", "haar", "mediapipe", "blazeface", "blazeface-full"),
            "detector must be one of auto, haar, mediapipe, blazeface, blazeface-full",
        )
        _check(0.1 <= self.detect_scale <= 1.0, "detect_scale must lie in [0.1, 1]")
        _check(1 <= self.detect_every <= 60, "detect_every must lie in 1..60")
        _check(8 <= self.min_face <= 2048, "min_face must lie in 8..2048")
        number = isinstance(self.margin, int | float) and not isinstance(self.margin, bool)
        _check(self.margin == "auto" or (number and -0.2 <= self.margin <= 1), 'margin must be "auto" or -0.2..1')
        _check(1 <= self.max_faces <= 64, "max_faces must lie in 1..64")
        _check(0 < self.min_score < 1, "min_score must lie in (0, 1)")


@dataclass
class ClassifierConfig:
    #: a .tflite file; empty = the shipped default (edgefer-dense-int8.tflite); a bare file name
    #: names a shipped model (edgefer-int8.tflite, paper-int8.tflite, ...), anything else is a path.
    model: str = ""
    #: one label per line in output order; empty = labels.txt beside the model.
    labels: str = ""
    #: interpreter threads; on a Pi 4 leave a core for capture and detection.
    threads: int = 2
    #: faces below this top probability are counted as uncertain in ``counts`` (the shares
    #: use every face's probabilities, so no emotion is dropped more than another).
    min_confidence: float = 0.4
    #: probabilities are calibrated as softmax(log p / temperature) before they are averaged
    #: into shares; measured for the shipped default on validation faces through the face
    #: path (benchmarks/results/estimators.md). 1 leaves them as the model gives them.
    temperature: float = 1.0
    #: at most this many classification rounds per second (0 = every frame with faces).
    max_rate: float = 5.0
    #: also classify the mirrored face and average: more accurate, two inferences per face
    #: (one for a model that is mirror-invariant by construction: it is recognised on loading).
    flip_average: bool = True
    #: mirror only faces whose two likeliest emotions lie closer than this in probability
    #: (1 = every face). 0.14, chosen on validation faces for the shipped default (the largest
    #: margin that mirrors at most 15 % of them), mirrors about one face in seven and keeps
    #: nearly all of flip averaging's accuracy.
    flip_margin: float = 0.14

    def validate(self) -> None:
        _check(1 <= self.threads <= 16, "threads must lie in 1..16")
        _check(0 <= self.min_confidence < 1, "min_confidence must lie in [0, 1)")
        _check(0.2 <= self.temperature <= 5, "temperature must lie in 0.2..5")
        _check(0 <= self.flip_margin <= 1, "flip_margin must lie in [0, 1]")
        _check(0 <= self.max_rate <= 120, "max_rate must lie in [0, 120]")


@dataclass
class MoodConfig:
    #: rolling windows, each a duration ("1m", "15m", "1h", "24h").
    windows: list[Any] = field(default_factory=lambda: ["1m", "15m", "1h", "24h"])
    #: how often each window's summary is published (a window shorter than this is
    #: published once per its own length).
    publish_every: Any = "1m"
    #: how often the rolling state is saved, so a restart resumes it.
    persist_every: Any = "30s"

    def validate(self) -> None:
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
class MqttConfig:
    #: false: summaries go to standard output as JSON lines instead.
    enabled: bool = True
    host: str = "localhost"
    port: int = 1883
    #: topics are <prefix>/<device_id>/...
    prefix: str = "edgefer"
    #: empty = edgefer-<device_id>; must be unique per broker.
    client_id: str = ""
    username: str = ""
    #: name of a systemd credential (LoadCredential=) holding the password; read from
    #: $CREDENTIALS_DIRECTORY. The password itself never belongs in this file.
    password_credential: str = "mqtt_password"
    #: a file holding the password, for runs outside systemd.
    password_file: str = ""
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    #: skip the hostname check (never on an untrusted network).
    tls_insecure: bool = False
    keepalive: int = 30
    qos: int = 1
    #: summaries kept on disk while the broker is unreachable; beyond this the oldest
    #: are dropped and counted.
    queue_max: int = 10000
    stats_every: Any = "30s"

    @cached_property
    def stats_seconds(self) -> int:
        return parse_duration(self.stats_every)

    def validate(self) -> None:
        _check(
            not self.enabled or (bool(self.host) and not any(c.isspace() for c in self.host)),
            "host must name the broker (a host name or address, no spaces)",
        )
        _check(1 <= self.port <= 65535, "port must lie in 1..65535")
        _topic_prefix("prefix", self.prefix)
        _check(not self.client_id or len(self.client_id) <= 64, "client_id at most 64 characters")
        _check(self.qos in (0, 1, 2), "qos must be 0, 1 or 2")
        _check(5 <= self.keepalive <= 3600, "keepalive must lie in 5..3600")
        _check(10 <= self.queue_max <= 1_000_000, "queue_max must lie in 10..1000000")
        _duration("stats_every", self.stats_every, 1, 3600)
        for key in ("ca_file", "cert_file", "key_file", "password_file"):
            value = getattr(self, key)
            _check(not value or Path(value).is_file(), f"{key}: no such file {value!r}")
        _check(bool(self.cert_file) == bool(self.key_file), "cert_file and key_file go together")
        _ = self.stats_seconds  # parsed once, here, at load


@dataclass
class HomeAssistantConfig:
    #: publish MQTT discovery so the sensors appear as one device; false removes them.
    enabled: bool = True
    prefix: str = "homeassistant"

    def validate(self) -> None:
        _topic_prefix("prefix", self.prefix)


@dataclass
class HistoryConfig:
    #: published summaries kept locally for ``edgefer report`` (aggregates only).
    keep_days: int = 30

    def validate(self) -> None:
        _check(0 <= self.keep_days <= 3650, "keep_days must lie in 0..3650")


@dataclass
class Config:
    #: names this device in topics and Home Assistant; default: the host name.
    device_id: str = ""
    #: the summary queue, rolling state, history and status live here. Empty:
    #: $STATE_DIRECTORY (set by systemd), else ~/.local/state/edgefer.
    state_dir: str = ""
    #: debug | info | warning | error
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

    def validate(self) -> None:
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


SECTIONS = {f.name for f in dataclasses.fields(Config) if dataclasses.is_dataclass(f.default_factory)}  # type: ignore[arg-type]


def _line_of(text: str, table: str, key: str) -> int | None:
    """Line number (1-based) of ``key`` inside ``[table]`` ('' = top level) in TOML text."""
    current = ""
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        m = re.match(r"^\[\s*([A-Za-z0-9_.-]+)\s*\]$", line)
        if m:
            current = m.group(1)
            if current == (f"{table}.{key}" if table and key else key or table):
                return n
            continue
        if key and current == table and re.match(rf"^\"?{re.escape(key)}\"?\s*=", line):
            return n
    return None


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check a TOML value against the dataclass type hint; ints are accepted for floats."""
    if hint is Any:
        return value
    origin = get_origin(hint)
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {type(value).__name__}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        return value
    if get_args(hint):
        return value
    return value


def _build(
    cls: type, data: dict[str, Any], table: str, text: str, origin: str, flags: dict[str, str] | None = None
) -> Any:
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}

    def where(key: str) -> str:
        dotted = f"{table}.{key}" if table else key
        if flags and dotted in flags:
            return flags[dotted]
        line = _line_of(text, table, key)
        return f"{origin}:{line}: {dotted}" if line else f"{origin}: {dotted}"

    for key, value in data.items():
        if key not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"{where(key)}: unknown key (known here: {known})")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{where(key)}: expected a [{key}] table")
            kwargs[key] = _build(hint, value, key if not table else f"{table}.{key}", text, origin, flags)
            continue
        try:
            kwargs[key] = _coerce(value, hint, where(key))
        except ValueError as exc:
            raise ConfigError(f"{where(key)}: {exc}") from None
    for key in names - kwargs.keys():  # a table the file leaves out is validated too (and its durations parsed)
        if dataclasses.is_dataclass(hints[key]):
            kwargs[key] = _build(hints[key], {}, key if not table else f"{table}.{key}", text, origin, flags)
    obj = cls(**kwargs)
    try:
        obj.validate()
    except ValueError as exc:
        msg = str(exc)
        # Every validation message starts with the key it is about.
        key = msg.replace(":", " ").split()[0] if msg else ""
        key = key if key in names else ""
        msg = msg.removeprefix(f"{key}: ") if key else msg
        loc = where(key) if key else (f"{origin}:{_line_of(text, table, '')}: [{table}]" if table else origin)
        raise ConfigError(f"{loc}: {msg}") from None
    return obj


def parse(text: str, origin: str = "<config>") -> Config:
    """Config from TOML text; ``origin`` names the file in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML: {exc}") from None
    return _build(Config, data, "", text, origin)


def load(path: str | os.PathLike[str] | None) -> Config:
    """Config from a file; None or a missing default file gives the built-in defaults."""
    if path is None:
        if not DEFAULT_PATH.exists():
            return parse("", "<defaults>")
        path = DEFAULT_PATH
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read ({exc})") from None
    return parse(text, str(p))


def apply_overrides(cfg: Config, overrides: dict[str, Any], flags: dict[str, str] | None = None) -> Config:
    """Apply dotted-key overrides (from the command line) and validate the result again.

    Values that ``cfg`` derived (the client id from the device id, the state directory)
    are derived again from the result, so ``--device-id`` also moves a derived client id;
    a value set in the file is kept. ``flags`` maps dotted keys to the option that set
    them, so that errors name the option the user typed."""
    data = cfg.to_dict()
    for dotted in cfg.derived:
        *parents, last = dotted.split(".")
        node = data
        for p in parents:
            node = node[p]
        node[last] = ""
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, last = dotted.split(".")
        for p in parents:
            node = node[p]
        if last not in node:
            raise ConfigError(f"{(flags or {}).get(dotted, '--' + dotted)}: unknown key")
        node[last] = value
    return _build(Config, data, "", "", "command line", flags)
