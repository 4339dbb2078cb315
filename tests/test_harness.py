"""The harness the end-to-end tests share with the benchmarks: its waits, and the rule that
keeps the two apart (tests import benchmarks, never the reverse)."""

from __future__ import annotations

import ast
import itertools
import time

from benchmarks.harness import wait_until
from tests.conftest import REPO


def test_wait_until_returns_the_first_truthy_value_without_waiting_longer() -> None:
    """The predicate's own value comes back on the poll that makes it true (the third here),
    long before the timeout."""
    calls = itertools.count(1)
    t0 = time.monotonic()
    assert wait_until(lambda: next(calls) >= 3 and "ready", timeout=30, interval=0.01) == "ready"
    assert next(calls) == 4 and time.monotonic() - t0 < 5


def test_wait_until_gives_up_after_the_timeout_with_none() -> None:
    """A condition that never holds returns None once the timeout has passed, not before."""
    t0 = time.monotonic()
    assert wait_until(lambda: 0, timeout=0.2, interval=0.05) is None
    assert time.monotonic() - t0 >= 0.2


def test_no_benchmark_imports_the_test_suite() -> None:
    """benchmarks/ runs on its own (python -m benchmarks.soak): a helper it needs lives in
    benchmarks/harness.py or the product, never in tests/, or the two would import each other."""
    offenders = []
    for path in sorted((REPO / "benchmarks").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(REPO)}:{node.lineno} {n}" for n in names if n.split(".")[0] == "tests"]
    assert offenders == []
