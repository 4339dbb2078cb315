"""The daemon's own cost on a 640x480 source at 15 FPS: CPU % of one core, FPS, peak RSS.

Runs the real ``edgefer run`` (a looping clip of FER2013 test faces composited into
640x480 frames, paced at 15 FPS, a real mosquitto) once per configuration, and reads the
process's CPU time and peak RSS (VmHWM) from /proc. Configurations differ in the detector
and in the work-saving options, so their costs can be read side by side.

    python -m benchmarks.daemon_load --seconds 60 --out benchmarks/results/daemon-load
    python -m benchmarks.daemon_load --python /opt/mp-venv/bin/python --detector mediapipe
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import Broker, Daemon, config_text, fer_root, make_clip

CONFIGS = {
    "haar, detect every frame, full-res detection, classify every frame": {
        "faces.detect_every": "1", "faces.detect_scale": "1.0", "classifier.max_rate": "0"},
    "haar, defaults (detect every 3rd frame at half size, classify <= 5/s)": {},
    "haar, detect every frame at half size, classify <= 5/s": {"faces.detect_every": "1"},
}  # fmt: skip


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(workdir: Path, frames: Path, extra: dict, seconds: float, python: str | None) -> dict:
    broker = Broker(workdir).start()
    state = workdir / "state"
    base = {"source.loop": "true", "source.pace": "true", "source.fps": "15.0", "faces.detector": '"haar"',
            "faces.detect_every": "3", "classifier.max_rate": "5.0", "classifier.threads": "2"}  # fmt: skip
    cfg = config_text(broker.port, state, str(frames), **{**base, **extra})
    d = Daemon(workdir, cfg)
    if python:
        d.env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    d.proc = None
    import subprocess

    exe = python or sys.executable
    d.proc = subprocess.Popen([exe, "-m", "edgefer.cli", "run", "--config", str(d.config)],
                              stdout=subprocess.DEVNULL, stderr=d.log.open("ab"), env=d.env, cwd=workdir)  # fmt: skip
    try:
        st = d.wait_status(state, lambda s: s.get("frames", 0) > 30, 60)
        c0, t0, f0 = cpu_seconds(d.proc.pid), time.monotonic(), st["frames"]
        time.sleep(seconds)
        c1, t1 = cpu_seconds(d.proc.pid), time.monotonic()
        st = d.status(state)
        peak = peak_rss_mb(d.proc.pid)
    finally:
        d.stop()
        broker.stop()
    return {
        "cpu_percent_of_one_core": round(100 * (c1 - c0) / (t1 - t0), 1),
        "fps": round((st["frames"] - f0) / (t1 - t0), 2),
        "peak_rss_mb": round(peak, 1),
        "ms": st["ms"],
        "detector": st["detector"],
        "dropped_frames": st["dropped_frames"],
        "faces_classified": st["classified"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--python", help="another interpreter with edgefer installed (e.g. one with mediapipe)")
    p.add_argument("--detector", default=None, help="only this detector, with the default options")
    p.add_argument("--out", default="benchmarks/results/daemon-load")
    args = p.parse_args(argv)
    configs = CONFIGS if not args.detector else {
        f"{args.detector}, defaults": {"faces.detector": f'"{args.detector}"'}}  # fmt: skip
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        frames, _ = make_clip(fer_root(), Path(tmp) / "clip", per_class=10, repeat=3)
        for name, extra in configs.items():
            work = Path(tmp) / str(len(results))
            work.mkdir()
            print(f"measuring: {name} ({args.seconds:.0f} s)", file=sys.stderr, flush=True)
            results[name] = measure(work, frames, extra, args.seconds, args.python)
            print(f"  {results[name]}", file=sys.stderr, flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else {}
    existing.update(results)
    out.with_suffix(".json").write_text(json.dumps(existing, indent=1))
    print("| configuration | CPU % of one core | FPS | peak RSS (MB) | ms/frame |")
    print("|---|---|---|---|---|")
    for name, r in existing.items():
        print(f"| {name} | {r['cpu_percent_of_one_core']} | {r['fps']} | {r['peak_rss_mb']} | {r['ms']['total']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
