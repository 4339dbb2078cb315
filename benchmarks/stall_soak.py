"""Stall soak: the real daemon reading a live MJPEG camera that stops sending, again and again.

The camera is a small server in this process: MJPEG over HTTP on 127.0.0.1 (``--via http``,
what network cameras send) or the same stream written into a FIFO (``--via fifo``, an
``ffmpeg -f mpjpeg`` pipe), with real FER2013 faces composited into the frames. Each cycle
lets frames flow, then stops sending for longer than ``source.stall_seconds`` while keeping
the connection open (the reader blocks inside ``cv2.VideoCapture.read()``), then resumes.
A cycle passes when the daemon is still alive, its status reported the stall, and frames
flowed again. A daemon that dies is counted as a crash and started again.

    python -m benchmarks.stall_soak --cycles 20 --via http
    python -m benchmarks.stall_soak --cycles 20 --via fifo

tests/test_camera_faults.py runs two cycles of each.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.harness import Daemon, config_text, fer_root, make_clip
from benchmarks.mjpeg_stream import MjpegFifoWriter, MjpegHttpServer, jpeg_frames


def daemon_config(state: Path, device: str, stall: float) -> str:
    return config_text(1883, state, device, **{
        "source.kind": '"opencv"', "source.stall_seconds": f"{stall}", "source.retry_initial_seconds": "0.5",
        "source.retry_max_seconds": "1.0", "source.pace": "true", "mqtt.enabled": "false",
    })  # fmt: skip


def _poll(d: Daemon, state: Path, seconds: float, pred: Callable[[dict], bool]) -> dict | None:
    """The first status matching ``pred`` within ``seconds``; None if none did or the daemon died."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        st = d.status(state)
        if st and pred(st):
            return st
        if d.proc is not None and d.proc.poll() is not None:
            return None
        time.sleep(0.2)
    return None


def _stalled(st: dict) -> bool:
    src = st.get("source", {})
    return src.get("state") != "running" and bool(src.get("error"))


def one_cycle(d: Daemon, state: Path, camera: MjpegHttpServer | MjpegFifoWriter, stall: float) -> dict:
    """Frames, a pause of ``stall + 3`` seconds, then frames again; what the status showed."""
    flowing = _poll(d, state, 30, lambda s: s.get("source", {}).get("state") == "running" and s.get("fps", 0) > 0)
    frames0 = (flowing or {}).get("frames", 0)
    restarts0 = (flowing or {}).get("source", {}).get("restarts", 0)
    camera.pause()
    t0 = time.monotonic()
    seen = _poll(d, state, stall + 3, _stalled)
    time.sleep(max(0.0, stall + 3 - (time.monotonic() - t0)))
    camera.resume()
    t1 = time.monotonic()
    paused = d.status(state)
    back = _poll(
        d, state, 20, lambda s: s["source"]["state"] == "running" and s["frames"] > paused.get("frames", 0) + 5
    )
    return {
        "flowing_before": flowing is not None,
        "stall_reported": seen is not None,
        "state_during": (seen or paused).get("source", {}).get("state"),
        "error_during": (seen or paused).get("source", {}).get("error"),
        "restarts": (back or paused).get("source", {}).get("restarts", 0) - restarts0,
        "frames_resumed": back is not None and back["frames"] > frames0,
        "resume_seconds": round(time.monotonic() - t1, 1) if back else None,
        "alive": d.proc is not None and d.proc.poll() is None,
        "exit": None if d.proc is None else d.proc.poll(),
    }


def stall_soak(
    workdir: Path, cycles: int, via: str = "http", stall: float = 2.0, log=print, fer: Path | None = None
) -> dict:
    """``cycles`` stall cycles against one daemon (restarted after a crash); a summary."""
    frames_dir, _ = make_clip(fer or fer_root(), workdir / "clip", per_class=2, repeat=1)
    jpegs = jpeg_frames(frames_dir)
    camera: MjpegHttpServer | MjpegFifoWriter
    if via == "http":
        camera = MjpegHttpServer(jpegs).start()
        device = camera.url
    else:
        camera = MjpegFifoWriter(workdir / "camera.mjpeg", jpegs).start()
        device = str(camera.path)
    state = workdir / "state"
    d = Daemon(workdir, daemon_config(state, device, stall)).start()
    results, crashes, t_start = [], 0, time.monotonic()
    try:
        for i in range(cycles):
            r = one_cycle(d, state, camera, stall)
            r["cycle"] = i + 1
            ok = r["alive"] and r["stall_reported"] and r["frames_resumed"]
            r["ok"] = ok
            results.append(r)
            log(f"cycle {i + 1}/{cycles}: {'ok' if ok else 'FAILED'} {json.dumps(r)}")
            if not r["alive"]:
                crashes += 1
                log(f"daemon died with {r['exit']}:\n{d.logs()[-3000:]}")
                d = Daemon(workdir, daemon_config(state, device, stall), name=f"edgefer-{i + 1}").start()
        exit_code = d.stop()
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()
        camera.stop()
    return {
        "via": via,
        "stall_seconds": stall,
        "runs": cycles,
        "crashes": crashes,
        "failed_cycles": [r["cycle"] for r in results if not r["ok"]],
        "exit_code": exit_code,
        "seconds": round(time.monotonic() - t_start),
        "cycles": results,
        "abandoned_readers": d.logs().count("reader abandoned"),
        "abandoned_readers_returned": d.logs().count("an abandoned reader's call returned"),
        "log": d.logs(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--via", choices=("http", "fifo"), default="http")
    ap.add_argument("--stall-seconds", type=float, default=2.0)
    ap.add_argument("--out", type=Path, help="write the summary as JSON here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgefer-stall-") as tmp:
        res = stall_soak(Path(tmp), args.cycles, args.via, args.stall_seconds)
    res.pop("log")
    print(f"via {res['via']}: runs {res['runs']}, crashes {res['crashes']}, failed cycles {res['failed_cycles']}, "
          f"exit code {res['exit_code']}, {res['seconds']} s")  # fmt: skip
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=1) + "\n")
    return 0 if res["crashes"] == 0 and not res["failed_cycles"] else 1


if __name__ == "__main__":
    sys.exit(main())
