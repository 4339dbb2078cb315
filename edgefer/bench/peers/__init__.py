"""Other packages measured beside edgefer, each run on edgefer's own runtime where it can be."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


def measurable(
    names: Iterable[str] | None, build: Callable[[str], T], say: Callable[[str], None]
) -> tuple[list[T], list[dict[str, str]]]:
    """Each peer asked for (once, in order) as ``build(name)`` makes it, and those that cannot
    be measured here (``build`` raised :class:`~edgefer.bench.peers.fer.PeerUnavailable`)
    with the reason, which ``say`` also tells the user."""
    from edgefer.bench.peers.fer import PeerUnavailable

    built: list[T] = []
    not_measured: list[dict[str, str]] = []
    for name in dict.fromkeys(names or []):
        try:
            built.append(build(name))
        except PeerUnavailable as exc:
            not_measured.append({"name": name, "reason": str(exc)})
            say(f"peer {name} not measured: {exc}")
    return built, not_measured
