"""The daemon's code stays in rooms a reader can take in: no module over 500 lines, no function
over 80, the frame sources one per module, and the modules split out of the service loop,
the MQTT output, the sources and the config under the same layering rule as the rest of the
daemon (never the benchmark or training). Read from the source with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.test_layering import PACKAGE, REPO, forbidden, import_graph, imports

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def daemon_modules() -> list[Path]:
    """Every module of the daemon: the package's top level and its subpackages other than the
    benchmark, training and the shipped models."""
    out = [p for p in sorted(PACKAGE.rglob("*.py")) if p.relative_to(PACKAGE).parts[0] not in ("bench", "train")]
    return [p for p in out if "models" not in p.relative_to(PACKAGE).parts[:-1]]


def test_the_daemons_modules_are_found() -> None:
    names = {str(p.relative_to(PACKAGE)) for p in daemon_modules()}
    assert {"service.py", "publish.py", "config.py", "sources/feed.py", "timers.py", "acks.py"} <= names
    assert not any(n.startswith(("bench/", "train/")) for n in names)


@pytest.mark.parametrize("path", daemon_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
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


@pytest.mark.parametrize("path", daemon_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_daemon_module_imports_the_benchmark_or_training(path: Path) -> None:
    """test_layering names the daemon's modules one by one; this covers every one, the
    modules split out of the service, the output, the sources and the config included
    (cli.py's entry points are test_layering's to allow)."""
    if path.name == "cli.py" and path.parent == PACKAGE:
        return
    wrong = [f"line {line}: {target}" for target, _, line, _ in imports(path) if forbidden(target)]
    assert not wrong, f"{path.relative_to(REPO)} imports " + ", ".join(wrong)


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
