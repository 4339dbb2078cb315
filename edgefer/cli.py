"""Command lines: ``edgefer`` (run, check-config, status, report), ``edgefer-bench``,
``edgefer-train`` and ``edgefer-explain``. Heavy imports happen inside each command so
``edgefer status`` stays instant on a Pi."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from edgefer import __version__
from edgefer import config as configmod


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _source_overrides(value: str | None) -> dict:
    if value is None:
        return {}
    if value in ("demo", "picamera2"):
        return {"source.kind": value}
    if Path(value).is_dir():
        return {"source.kind": "folder", "source.device": value}
    # a camera that is not plugged in yet or a stream is waited for; a missing file is a typo
    if not (value.isdigit() or value.startswith("/dev/") or "://" in value or Path(value).exists()):
        raise configmod.ConfigError(
            f"--source: {value}: no such file or directory "
            "(give demo, picamera2, a camera index, a device path, a video file, a folder or a stream URL)"
        )
    return {"source.kind": "opencv", "source.device": value}


#: the option of ``edgefer run`` that sets each key, so that errors name what was typed
RUN_FLAGS = {
    "mqtt.host": "--mqtt-host",
    "mqtt.port": "--mqtt-port",
    "device_id": "--device-id",
    "state_dir": "--state-dir",
    "log_level": "--log-level",
    "source.kind": "--source",
    "source.device": "--source",
}


def cmd_run(args: argparse.Namespace) -> int:
    from edgefer.classifier import ModelError
    from edgefer.service import Service

    try:
        overrides: dict = {
            "mqtt.host": args.mqtt_host,
            "mqtt.port": args.mqtt_port,
            "device_id": args.device_id,
            "state_dir": args.state_dir,
            "log_level": args.log_level,
            **_source_overrides(args.source),
        }
        flags = {k: RUN_FLAGS[k] for k, v in overrides.items() if v is not None}
        if args.demo:
            overrides.update({"source.kind": "demo", "mood.windows": ["10s", "1m"], "mood.publish_every": "10s"})
            if args.mqtt_host is None:
                overrides["mqtt.enabled"] = False
        if args.stdout:
            overrides["mqtt.enabled"] = False
        if args.fast:
            overrides["source.pace"] = False
        cfg = configmod.apply_overrides(configmod.load(args.config), overrides, flags)
    except configmod.ConfigError as exc:
        print(f"edgefer: {exc}", file=sys.stderr)
        return 2
    _setup_logging(cfg.log_level)
    try:
        service = Service(cfg, args.config, overrides=overrides)
    except (ModelError, RuntimeError, ImportError, ValueError) as exc:
        logging.getLogger("edgefer").error("cannot start: %s", exc)
        return 1
    return service.run()


def cmd_check_config(args: argparse.Namespace) -> int:
    if args.file is None and not configmod.DEFAULT_PATH.exists():
        # the daemon would run on built-in defaults, but there is no file here to call valid
        print(
            f"invalid: {configmod.DEFAULT_PATH}: no such file (the default); "
            "name the file to check: edgefer check-config FILE",
            file=sys.stderr,
        )
        return 1
    try:
        cfg = configmod.load(args.file or configmod.DEFAULT_PATH)
    except configmod.ConfigError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 1
    if not args.no_model:
        # what a reload would load: a file that passes here is not refused by the daemon
        from edgefer.classifier import ModelError
        from edgefer.faces import make_detector
        from edgefer.service import build_classifier

        try:
            clf = build_classifier(cfg)
            det = make_detector(cfg.faces.detector, cfg.faces.min_score)
        except (ModelError, RuntimeError, ImportError, ValueError) as exc:
            print(f"invalid: {args.file or configmod.DEFAULT_PATH}: {exc}", file=sys.stderr)
            return 1
        print(f"model {clf.path} ({clf.runtime}), detector {det.name}", file=sys.stderr)
    if not args.quiet:
        print(json.dumps(cfg.to_dict(), indent=2))
    print(f"ok: {args.file or configmod.DEFAULT_PATH}", file=sys.stderr)
    return 0


SERVICE_STATE = Path("/var/lib/edgefer")


def _state_dir(args: argparse.Namespace) -> Path:
    """Where the daemon keeps its state: the option, the config's explicit state_dir, the
    service's directory when it has a status (so `sudo edgefer status` finds it), else
    the default for this user."""
    from edgefer import statusfile

    if args.state_dir:
        return Path(args.state_dir)
    try:
        cfg = configmod.load(args.config)
    except configmod.ConfigError:
        cfg = configmod.parse("")
    explicit = cfg.state_dir != configmod.parse("").state_dir
    if not explicit and any(p.exists() for p in statusfile.candidates(SERVICE_STATE)):
        return SERVICE_STATE
    return Path(cfg.state_dir)


#: ``edgefer status`` exit codes, as an init script's ``status`` gives them (LSB)
RUNNING, STALE, STOPPED, UNKNOWN = 0, 1, 3, 4
#: a status older than this (five of the daemon's 2-second status periods) is stale
STALE_AFTER = 10.0


def _pid_alive(pid: object) -> bool | None:
    """Whether process ``pid`` exists here (None: cannot tell)."""
    import os

    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, as another user
    return True


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "never"


def _state_line(st: dict, age: float) -> tuple[str, int]:
    """The ``state:`` line's text and the exit code: running, stale or stopped."""
    if st.get("state") == "stopped":
        return f"stopped (at {_when(st.get('updated'))})", STOPPED
    if age > STALE_AFTER:
        alive = _pid_alive(st.get("pid"))
        why = {
            True: f"pid {st.get('pid')} still runs: hung?",
            False: f"pid {st.get('pid')} is gone: killed, crashed or the machine restarted",
            None: "stopped or hung?",
        }[alive]
        return f"not updated for {age:.0f}s ({why})", STALE
    state = st.get("state") or "running"
    wait = (st.get("clock") or {}).get("waiting_for")
    return (f"{state}: {wait}" if wait and state != "running" else state), RUNNING


def _health_line(st: dict) -> str | None:
    sd = st.get("state_dir")
    if not isinstance(sd, dict):
        return None
    text = f"{sd.get('health')}  ({sd.get('path')})"
    if sd.get("health") != "ok":
        since = f", since {_when(sd['since'])}" if sd.get("since") else ""
        text += f": {sd.get('error')}{since}; {st.get('queue_in_memory', 0)} summaries held in memory"
    return text


def _clock_line(st: dict) -> str | None:
    clock = st.get("clock")
    if not isinstance(clock, dict) or clock.get("now") is None:
        return None
    text = f"{clock.get('now')}" + (" (waiting for the clock)" if clock.get("state") == "waiting" else "")
    step = clock.get("last_step")
    if step:
        text += f"; {clock.get('steps')} step(s), last {step['seconds']:+g} s ({step['from']} -> {step['to']})"
    return text


def cmd_status(args: argparse.Namespace) -> int:
    """Print the daemon's status; exit 0 running, 1 stale (hung or died), 3 stopped or never
    run here, 4 unreadable."""
    from edgefer import statusfile

    state_dir = _state_dir(args)
    try:
        found = statusfile.read(state_dir)
    except ValueError as exc:
        print(f"unreadable status ({exc})", file=sys.stderr)
        return UNKNOWN
    if found is None:
        print(f"no status for {state_dir}: the daemon has not run with this state directory", file=sys.stderr)
        return STOPPED
    path, st = found
    age = time.time() - float(st.get("updated") or 0)
    state, code = _state_line(st, age)
    if args.json:
        print(json.dumps(st, indent=1))
        return code
    out = st.get("output") or {}
    lines = [
        f"state:         {state}",
        f"device:        {st.get('device')}  (pid {st.get('pid')}, up {st.get('uptime')} s, v{st.get('version')})",
    ]
    if code == RUNNING:
        lines += _running_lines(st)
    elif code == STALE:
        lines.append(f"last known:    {_when(st.get('updated'))}; what follows is from then")
    lines += [
        f"last publish:  {_when(out.get('last_publish'))}",
        f"queue depth:   {st.get('queue_depth')}   dropped summaries: {st.get('dropped_summaries')}"
        + ("   (left for the next start)" if code == STOPPED and st.get("queue_depth") else ""),
    ]
    for label, text in (("state dir:", _health_line(st)), ("clock:", _clock_line(st) if code == RUNNING else None)):
        if text:
            lines.append(f"{label:<15}{text}")
    if path.parent != state_dir:
        lines.append(f"status file:   {path} (the state directory refused it)")
    if code == RUNNING and (out.get("session_takeovers") or 0) + (out.get("instance_conflicts") or 0) > 0:
        lines.append(
            f"conflicts:     {out.get('instance_conflicts', 0)} other-instance sightings, "
            f"{out.get('session_takeovers', 0)} session takeovers (two daemons share a device_id)"
        )
    if st.get("store_fault"):
        lines.append(f"store fault:   {st['store_fault']}")
    if st.get("last_reload"):
        r = st["last_reload"]
        lines.append(f"last reload:   {'ok' if r.get('ok') else 'refused: ' + str(r.get('error'))}")
    print("\n".join(lines))
    return code


def _running_lines(st: dict) -> list[str]:
    """What only a running daemon can claim: its source, output and rates now."""
    out = st.get("output") or {}
    src = st.get("source") or {}
    return [
        f"source:        {src.get('name')}: {src.get('state')}" + (f" ({src['error']})" if src.get("error") else ""),
        f"detector:      {st.get('detector')}   model: {st.get('model')} on {st.get('runtime')}",
        "counting:      " + ", ".join(f"{k} {v:g}" for k, v in (st.get("counting") or {}).items()),
        f"fps:           {st.get('fps')}   ms/frame: {(st.get('ms') or {}).get('total')}",
        f"output:        {out.get('kind')} {out.get('broker', '')} {out.get('state', '')}"
        + (f" ({out['error']})" if out.get("error") else ""),
        f"cpu/rss:       {st.get('cpu_percent')} % of one core, {st.get('rss_mb')} MB",
    ]


def cmd_report(args: argparse.Namespace) -> int:
    import importlib.util

    from edgefer.report import draw_report
    from edgefer.store import Store

    if importlib.util.find_spec("matplotlib") is None:
        print(
            "edgefer report draws with matplotlib, which the daemon's install leaves out: "
            "pip install 'edgefer[report]' (on a Pi: deploy/install.sh --extras report)",
            file=sys.stderr,
        )
        return 2

    since = time.time() - configmod.parse_duration(args.since)
    store = Store(_state_dir(args) / "edgefer.db")
    window = configmod.parse_duration(args.window) if args.window else None
    rows = store.history(since, window)
    store.close()
    if not rows:
        print(f"no summaries since {args.since} ago in {_state_dir(args)}", file=sys.stderr)
        return 3
    out = draw_report(rows, args.out, title=f"edgefer mood, last {args.since}")
    print(f"wrote {out} from {len(rows)} summaries")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgefer", description="On-device facial-emotion mood monitor.")
    p.add_argument("--version", action="version", version=f"edgefer {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run the daemon (what the systemd service runs)")
    r.add_argument("--config", help=f"TOML config (default {configmod.DEFAULT_PATH} when it exists)")
    r.add_argument("--source", help="demo, picamera2, a camera index, a device path, a video file or a folder")
    r.add_argument("--mqtt-host")
    r.add_argument("--mqtt-port", type=int)
    r.add_argument("--device-id")
    r.add_argument("--state-dir")
    r.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    r.add_argument("--demo", action="store_true", help="embedded demo: moving astronaut, summaries every 10 s")
    r.add_argument("--stdout", action="store_true", help="summaries as JSON lines on stdout instead of MQTT")
    r.add_argument("--fast", action="store_true", help="finite sources as fast as possible (no pacing)")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("check-config", help="validate a config file and print the effective config")
    c.add_argument("file", nargs="?")
    c.add_argument("-q", "--quiet", action="store_true")
    c.add_argument("--no-model", action="store_true", help="skip loading the model and the detector")
    c.set_defaults(func=cmd_check_config)

    for name, func, text in (
        ("status", cmd_status, "the running daemon's last status"),
        ("report", cmd_report, "draw mood over time from the local history (PNG)"),
    ):
        s = sub.add_parser(name, help=text)
        s.add_argument("--config")
        s.add_argument("--state-dir")
        s.set_defaults(func=func)
        if name == "status":
            s.add_argument("--json", action="store_true")
        else:
            s.add_argument("--since", default="24h")
            s.add_argument("--window", help="which window's summaries to draw (default: all)")
            s.add_argument("--out", default="mood.png")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


def bench_main(argv: list[str] | None = None) -> int:
    from edgefer.bench.cli import main as bench

    return bench(argv)


def _train_tool(load: Callable[[], Callable[[list[str] | None], int]], name: str, argv: list[str] | None) -> int:
    """Run a tool of the train extra, or say how to install it when its imports fail."""
    try:
        tool = load()
    except ImportError as exc:
        print(f"{name} needs the train extra: pip install 'edgefer[train]' ({exc})", file=sys.stderr)
        return 2
    return tool(argv)


def train_main(argv: list[str] | None = None) -> int:
    return _train_tool(lambda: importlib.import_module("edgefer.train.cli").main, "edgefer-train", argv)


def explain_main(argv: list[str] | None = None) -> int:
    return _train_tool(lambda: importlib.import_module("edgefer.train.explain").main, "edgefer-explain", argv)


if __name__ == "__main__":
    raise SystemExit(main())
