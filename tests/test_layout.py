"""The code stays in rooms a reader can take in: no module of the product (edgefer/, the
benchmarks) over 500 lines, no function over 80, and the frame sources one per module. Read
from the source with ``ast``; which module may import which is tests/test_layering.py's."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.test_layering import PACKAGE, REPO, import_graph

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def product_modules() -> list[Path]:
    """Every Python module of the product: the package (daemon, benchmark, training) and the
    benchmarks."""
    return sorted(PACKAGE.rglob("*.py")) + sorted((REPO / "benchmarks").rglob("*.py"))


def test_the_product_modules_are_found() -> None:
    names = {str(p.relative_to(REPO)) for p in product_modules()}
    assert {"edgefer/service.py", "edgefer/sources/feed.py", "edgefer/bench/cli.py", "edgefer/train/fit.py"} <= names
    assert "benchmarks/estimators.py" in names


@pytest.mark.parametrize("path", product_modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_over_500_lines_and_no_function_over_80(path: Path) -> None:
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path.relative_to(REPO)}: {len(text.splitlines())} lines"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{path.relative_to(REPO)}: " + ", ".join(long)


def test_each_source_has_its_module_and_the_pure_parts_import_no_source() -> None:
    graph = import_graph()
    sources = {m for m in graph if m.startswith("edgefer.sources.")}
    assert {"edgefer.sources.opencv", "edgefer.sources.folder", "edgefer.sources.picamera"} <= sources
    # the base knows no backend, and the feed runs whatever source it is given
    for module in ("edgefer.sources.base", "edgefer.sources.feed"):
        assert not graph[module] & (sources - {"edgefer.sources.base"}), (module, graph[module])
    # the demo needs the sources' error only, and the sources load the demo only when asked for it
    assert "edgefer.demo" not in set().union(*(graph[m] for m in sources | {"edgefer.sources"}))
    # the loop's and the output's rules import neither the loop nor paho's wrapper
    for module in ("edgefer.timers", "edgefer.status", "edgefer.acks", "edgefer.conflicts"):
        assert not graph[module] & {"edgefer.service", "edgefer.publish"}, (module, graph[module])
