"""``edgefer report``: mood over time as one PNG, for people without a dashboard.

Drawn from the local history of published summaries (aggregates only), so it shows
exactly what was sent and nothing that was not.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from edgefer import LABELS

COLOURS = {"angry": "#d62728", "happy": "#2ca02c", "sad": "#1f77b4", "neutral": "#7f7f7f"}


def draw_report(rows: list[dict], out: str | Path, title: str = "edgefer mood") -> Path:
    """Three stacked panels: positivity ratio with the 3:1 line, emotion shares, faces seen.

    With several windows in ``rows`` the shortest one is drawn (it has the most points).
    """
    from edgefer.figures import pyplot, save

    plt = pyplot()
    import matplotlib.dates as mdates

    window = min(r["window_seconds"] for r in rows)
    rows = sorted((r for r in rows if r["window_seconds"] == window), key=lambda r: r["end"])
    t = [datetime.strptime(r["end"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) for r in rows]
    fig, (a, b, c) = plt.subplots(3, 1, figsize=(9, 7.5), dpi=100, sharex=True)
    ratio = [r["positivity_ratio"] if r["positivity_ratio"] is not None else float("nan") for r in rows]
    a.plot(t, ratio, marker=".", color="#2ca02c")
    a.axhline(3.0, color="black", ls="--", lw=1, label="3:1 flourishing line")
    a.set_yscale("log")
    a.set_ylabel("positivity ratio\n(happy+1)/(angry+sad+1)")
    a.legend(loc="upper left", fontsize=8)
    bottom = [0.0] * len(rows)
    for lab in LABELS:
        share = [r["shares"].get(lab, 0.0) for r in rows]
        b.bar(t, share, bottom=bottom, width=window / 86400 * 0.9, color=COLOURS[lab], label=lab)
        bottom = [x + y for x, y in zip(bottom, share, strict=True)]
    b.set_ylim(0, 1)
    b.set_ylabel("emotion shares")
    b.legend(loc="upper left", ncol=4, fontsize=8)
    c.plot(t, [r["faces"] for r in rows], color="#9467bd", marker=".")
    c.set_ylabel(f"faces seen per {rows[0]['window']}")
    c.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
    for ax in (a, b, c):
        ax.grid(alpha=0.3)
    fig.suptitle(f"{title} ({rows[0]['device']}, {len(rows)} windows of {rows[0]['window']}, UTC)")
    fig.autofmt_xdate()
    return save(fig, out)
