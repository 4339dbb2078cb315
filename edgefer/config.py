"""One typed configuration, read from TOML, that refuses what it does not know.

Every error names the file, the line and the dotted key, because the person reading it is
an operator over SSH who just edited ``/etc/edgefer/edgefer.toml`` and wants to know which
line to fix. A new file is read and validated completely, into a new ``Config``, before
anything running is touched, so a reload that fails keeps the old one. Validation is not
pure: it reads the host name and ``$STATE_DIRECTORY`` for the defaults and checks that
named files exist (``edgefer.configschema``, where the keys and their checks live).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from pathlib import Path
from typing import Any, get_origin, get_type_hints

from edgefer.configschema import (
    MAX_BUCKETS,
    MIN_BUCKET,
    ClassifierConfig,
    Config,
    FacesConfig,
    HistoryConfig,
    HomeAssistantConfig,
    MoodConfig,
    MqttConfig,
    SourceConfig,
    parse_duration,
)

__all__ = [
    "DEFAULT_PATH",
    "MAX_BUCKETS",
    "MIN_BUCKET",
    "ClassifierConfig",
    "Config",
    "ConfigError",
    "FacesConfig",
    "HistoryConfig",
    "HomeAssistantConfig",
    "MoodConfig",
    "MqttConfig",
    "SourceConfig",
    "apply_overrides",
    "load",
    "parse",
    "parse_duration",
]

DEFAULT_PATH = Path("/etc/edgefer/edgefer.toml")


class ConfigError(ValueError):
    """Invalid configuration; ``str()`` is ready to print (file:line: key: reason)."""


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
    return value  # a union or a parametrised type: the table's validate() checks it


def _build(
    cls: type, data: dict[str, Any], table: str, text: str, origin: str, flags: dict[str, str] | None = None
) -> Any:
    """``cls`` from one TOML table: unknown keys and wrong types refused, nested tables built
    the same way, then ``validate()``; every error is located in ``text`` (file:line: key)."""
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
