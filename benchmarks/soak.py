"""Soak: the daemon at full rate against a broker that goes away every few minutes.

Samples the daemon's RSS, open file descriptors and threads from /proc, and at the end
checks that every summary it produced reached a subscriber. Writes a JSON and a PNG.

    python -m benchmarks.soak --minutes 30 --flap-every 180 --out benchmarks/results/soak

The test suite checks the same things over one outage (tests/test_daemon.py, the broker
outage test, with the same /proc sampling); this runs them for as long as asked.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import (
    Broker,
    Collector,
    Daemon,
    config_text,
    fer_root,
    make_clip,
    mood_payloads,
    proc_sample,
    produced_keys,
    wait_until,
)


def soak(workdir: Path, seconds: float, flap_every: float, down_for: float, log=print) -> dict:
    frames, _ = make_clip(fer_root(), workdir / "clip", per_class=10, repeat=2)
    broker = Broker(workdir).start()
    state = workdir / "state"
    cfg = config_text(broker.port, state, str(frames), **{
        "source.loop": "true", "source.pace": "false", "mood.windows": '["5s", "1m", "15m"]',
        "mood.publish_every": '"5s"', "mqtt.stats_every": '"10s"',
    })  # fmt: skip
    subs = [Collector(broker.port)]
    d = Daemon(workdir, cfg).start()
    assert d.proc is not None
    t0 = time.monotonic()
    samples: list[dict] = []
    flaps = 0
    next_flap = t0 + flap_every
    try:
        while (now := time.monotonic()) - t0 < seconds:
            if d.proc.poll() is not None:
                raise RuntimeError(f"daemon died:\n{d.logs()[-2000:]}")
            st = d.status(state)
            samples.append({"t": now - t0, **proc_sample(d.proc.pid), "frames": st.get("frames", 0),
                            "queue": st.get("queue_depth", 0)})  # fmt: skip
            if now >= next_flap:
                broker.stop()
                flaps += 1
                log(f"[{now - t0:6.0f}s] broker down for {down_for:.0f}s (flap {flaps})")
                time.sleep(down_for)
                broker.start()
                subs.append(Collector(broker.port))
                next_flap = time.monotonic() + flap_every
            s = samples[-1]
            log(f"[{s['t']:6.0f}s] rss {s['rss_mb']:.1f} MB, fds {s['fds']}, threads {s['threads']}, "
                f"frames {s['frames']}, queue {s['queue']}")  # fmt: skip
            time.sleep(min(10.0, max(0.5, seconds / 60)))
        # let the outbox drain after the last flap, then stop
        wait_until(lambda: d.status(state).get("queue_depth", 1) == 0, 60, 0.5)
    finally:
        code = d.stop()
        try:
            # every summary the daemon produced reaches a subscriber, or 10 s pass
            produced = produced_keys(state)
            wait_until(lambda: set(produced) <= {p["key"] for s in subs for p in mood_payloads(s.messages)}, 10)
        finally:
            for s in subs:
                s.stop()
            broker.stop()
    keys = [p["key"] for s in subs for p in mood_payloads(s.messages)]
    t = np.array([s["t"] for s in samples])
    rss = np.array([s["rss_mb"] for s in samples])
    warm = t > min(60.0, seconds / 4)  # ignore start-up growth (imports, allocator warm-up)
    base = next(i for i, w in enumerate(warm) if w) if warm.any() else 0  # connections are open by then
    slope = float(np.polyfit(t[warm] / 3600, rss[warm], 1)[0]) if warm.sum() > 2 else float("nan")
    return {
        "seconds": seconds,
        "flaps": flaps,
        "exit_code": code,
        "frames": samples[-1]["frames"] if samples else 0,
        "rss_mb": {"start": float(rss[0]), "end": float(rss[-1]), "max": float(rss.max()), "slope_mb_per_hour": slope},
        "fds": {"start": samples[base]["fds"], "end": samples[-1]["fds"], "max": max(s["fds"] for s in samples)},
        "threads": {
            "start": samples[base]["threads"],
            "end": samples[-1]["threads"],
            "max": max(s["threads"] for s in samples),
        },
        "summaries": {
            "produced": len(produced),
            "delivered_unique": len(set(keys)),
            "deliveries": len(keys),
            "lost": sorted(set(produced) - set(keys)),
        },
        "samples": samples,
    }


def plot(result: dict, path: Path) -> None:
    from edgefer.figures import pyplot

    plt = pyplot()

    s = result["samples"]
    t = [x["t"] / 60 for x in s]
    fig, (a, b) = plt.subplots(2, 1, figsize=(8, 5), sharex=True, dpi=100)
    a.plot(t, [x["rss_mb"] for x in s])
    a.set_ylabel("RSS (MB)")
    a.set_title(f"soak: {result['seconds'] / 60:.0f} min, {result['flaps']} broker outages, "
                f"slope {result['rss_mb']['slope_mb_per_hour']:.2f} MB/h")  # fmt: skip
    b.plot(t, [x["fds"] for x in s], label="open fds")
    b.plot(t, [x["threads"] for x in s], label="threads")
    b.plot(t, [x["queue"] for x in s], label="outbox depth")
    b.set_xlabel("minutes")
    b.legend()
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--flap-every", type=float, default=180, help="seconds between broker outages")
    p.add_argument("--down-for", type=float, default=20, help="seconds each outage lasts")
    p.add_argument("--out", default="benchmarks/results/soak")
    p.add_argument("--workdir", default=None)
    args = p.parse_args(argv)
    import tempfile

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        res = soak(Path(args.workdir or tmp), args.minutes * 60, args.flap_every, args.down_for,
                   log=lambda m: print(m, file=sys.stderr, flush=True))  # fmt: skip
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    plot(res, out.with_suffix(".png"))
    brief = {k: v for k, v in res.items() if k != "samples"}
    print(json.dumps(brief, indent=1))
    return 0 if not res["summaries"]["lost"] and res["exit_code"] == 0 else 1


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    raise SystemExit(main())
