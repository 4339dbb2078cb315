"""The one way edgefer-bench times things, whatever the mode.

Lanes (models, pipelines) are timed *interleaved*: round after round, each lane does the same
items, the lane order rotating every round. A shared or thermally throttled machine slows every
lane alike within a round, so the ratios between lanes (int8 over float32, edgefer over a peer)
hold even where absolute times drift; and no lane always runs first, on a cache another has
just warmed or cooled.

CPU use is process CPU time (all threads, ``time.process_time``) divided by wall time over each
lane's share of a round. Lanes run one after another, so each delta belongs to exactly one lane;
a sampler thread reading ``psutil.Process().cpu_percent`` would mix lanes that alternate every
few milliseconds. The per-round values give the +/- figure.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Share:
    """One lane's turn: wall-clock and process CPU seconds."""

    wall_s: float
    cpu_s: float

    @property
    def cpu_percent(self) -> float:
        """CPU time over wall time, in % of one core."""
        return 100.0 * self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0


def lane_order(k: int, lanes: int) -> list[int]:
    """The lanes' order in round ``k``: rotated by one each round."""
    shift = k % lanes
    order = list(range(lanes))
    return order[shift:] + order[:shift]


def warm_up(lanes: int, items: int, work: Callable[[int, int], object]) -> None:
    """Untimed: each lane in turn does items ``0 .. items - 1`` (``work(lane, item)``), so the
    first calls' allocations and page faults stay out of the figures."""
    for j in range(lanes):
        for i in range(items):
            work(j, i)


def interleaved(
    lanes: int,
    items: int,
    chunk: int,
    work: Callable[[int, int, int], object],
    progress: Callable[[int, int, int], None] | None = None,
) -> list[list[Share]]:
    """Rounds of ``chunk`` items: in round ``k`` every lane does items ``start .. stop - 1``
    (``work(lane, start, stop)``), in :func:`lane_order`; ``progress(k, rounds, stop)`` after
    each round. Returns each lane's :class:`Share` of each round."""
    shares: list[list[Share]] = [[] for _ in range(lanes)]
    rounds = math.ceil(items / chunk)
    for k in range(rounds):
        start, stop = k * chunk, min(items, (k + 1) * chunk)
        for j in lane_order(k, lanes):
            c0, w0 = time.process_time(), time.perf_counter()
            work(j, start, stop)
            wall = time.perf_counter() - w0
            shares[j].append(Share(wall, time.process_time() - c0))
        if progress is not None:
            progress(k, rounds, stop)
    return shares


def paced(items: int, fps: float, work: Callable[[int, float], object]) -> tuple[Share, int]:
    """Item ``i`` offered at its slot, ``i / fps`` seconds after the start, like a camera's
    frames: ``work(i, slot)`` runs once the slot has come. Returns the run's :class:`Share`
    and how many items finished after the next slot (late)."""
    period = 1.0 / fps
    late = 0
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(items):
        slot = t0 + i * period
        wait = slot - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        work(i, slot)
        if time.perf_counter() > slot + period:
            late += 1
    wall = time.perf_counter() - t0
    return Share(wall, time.process_time() - c0), late
