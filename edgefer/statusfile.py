"""Where the daemon's status file lives, so that ``edgefer status`` stays current whatever
the state directory's disk does.

The status goes to ``status.json`` in the state directory. When that cannot be written (the
disk is full, read-only, gone) it goes to a runtime directory instead, which is memory
(``/run`` is a tmpfs), under a name derived from the state directory so that several
daemons on one host keep theirs apart:

1. ``$RUNTIME_DIRECTORY`` (systemd's ``RuntimeDirectory=edgefer``: ``/run/edgefer``),
2. ``$XDG_RUNTIME_DIR/edgefer`` (a user's session: ``/run/user/<uid>/edgefer``),
3. ``/run/user/<uid>/edgefer`` when that user directory exists,
4. ``<temporary directory>/edgefer-<uid>`` otherwise.

``edgefer status`` reads every one of those that exists (and ``/run/edgefer``, for
``sudo edgefer status`` beside the service) and shows the newest. Deliberately light: no
imports beyond the standard library, so ``edgefer status`` stays instant.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

NAME = "status.json"
SERVICE_RUNTIME = Path("/run/edgefer")


def runtime_name(state_dir: str | os.PathLike[str]) -> str:
    """The runtime status file's name for a state directory (its absolute path, hashed)."""
    digest = hashlib.sha256(os.path.abspath(state_dir).encode()).hexdigest()[:16]
    return f"status-{digest}.json"


def _user_dirs() -> list[Path]:
    uid = os.getuid()
    dirs = []
    if os.environ.get("XDG_RUNTIME_DIR"):
        dirs.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "edgefer")
    if Path(f"/run/user/{uid}").is_dir():
        dirs.append(Path(f"/run/user/{uid}/edgefer"))
    dirs.append(Path(tempfile.gettempdir()) / f"edgefer-{uid}")
    return dirs


def runtime_dirs() -> list[Path]:
    """Where the daemon may write a status the state directory refuses, first choice first."""
    dirs = [Path(d) for d in os.environ.get("RUNTIME_DIRECTORY", "").split(":") if d]
    return list(dict.fromkeys(dirs + _user_dirs()))


def candidates(state_dir: str | os.PathLike[str]) -> list[Path]:
    """Every place a status for ``state_dir`` may be, the state directory first."""
    name = runtime_name(state_dir)
    dirs = list(dict.fromkeys([*runtime_dirs(), SERVICE_RUNTIME]))
    return [Path(state_dir) / NAME, *(d / name for d in dirs)]


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


class StatusWriter:
    """Writes the status to the state directory or, when that fails, the runtime directory.

    ``on_fail`` and ``on_ok`` are told how the state directory's write went (the daemon
    reports them into the directory's health). ``where`` is the file written last."""

    def __init__(self, state_dir: str | os.PathLike[str], on_fail=None, on_ok=None) -> None:
        self.primary = Path(state_dir) / NAME
        self.name = runtime_name(state_dir)
        self.on_fail = on_fail or (lambda exc: None)
        self.on_ok = on_ok or (lambda: None)
        self.where: Path | None = None
        self.error: str | None = None
        self._fallback: Path | None = None

    def write(self, status: dict[str, Any], refresh=None) -> Path | None:
        """Write ``status``; ``refresh(status)``, when given, updates it after the state
        directory refused it (so the fallback copy already says so). Returns where it went."""
        try:
            _atomic_write(self.primary, json.dumps(status, indent=1))
        except OSError as exc:
            self.on_fail(exc)
            if refresh is not None:
                refresh(status)
            self.where = self._write_fallback(json.dumps(status, indent=1))
            self.error = f"{self.primary}: {exc}"
            return self.where
        self.on_ok()
        self.where, self.error = self.primary, None
        if self._fallback is not None:  # a stale copy would only mislead
            with contextlib.suppress(OSError):
                self._fallback.unlink()
            self._fallback = None
        return self.where

    def _write_fallback(self, text: str) -> Path | None:
        for directory in runtime_dirs():
            path = directory / self.name
            try:
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                _atomic_write(path, text)
            except OSError:
                continue
            self._fallback = path
            return path
        return None


def read(state_dir: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]] | None:
    """The newest status for ``state_dir`` and where it was found; None when there is none.
    Raises ValueError (naming the file) when statuses exist but none can be read."""
    found: list[tuple[float, Path, dict]] = []
    errors = []
    for path in candidates(state_dir):
        try:
            st = json.loads(path.read_text())
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            errors.append(f"{path}: {exc}")
            continue
        if isinstance(st, dict):
            found.append((float(st.get("updated") or 0), path, st))
    if not found:
        if errors:
            raise ValueError("; ".join(errors))
        return None
    _, path, st = max(found, key=lambda f: f[0])
    return path, st
