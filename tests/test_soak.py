"""The short soak: one minute at full rate with two broker outages."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.soak import soak

pytestmark = pytest.mark.slow


def test_short_soak_loses_nothing_and_leaks_nothing(tmp_path: Path) -> None:
    res = soak(tmp_path, seconds=60, flap_every=20, down_for=6, log=lambda m: None)
    assert res["exit_code"] == 0
    assert res["flaps"] >= 2
    assert res["summaries"]["produced"] >= 10
    assert res["summaries"]["lost"] == []
    assert res["fds"]["end"] <= res["fds"]["start"] + 3
    assert res["threads"]["end"] <= res["threads"]["start"] + 2
