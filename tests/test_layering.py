"""Which part of edgefer may import which, read from the source (``ast``) without importing it.

The daemon runs on a Pi: it must not load the benchmark (``edgefer.bench``) or the training
package (``edgefer.train``, TensorFlow), except through the ``edgefer-bench``,
``edgefer-train`` and ``edgefer-explain`` entry points, which import them inside their own
functions in ``edgefer/cli.py``. The benchmark measures what the daemon ships, so it never
imports training code. And no two modules import each other, directly or round a loop, when
they are loaded.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "edgefer"

#: the packages inside edgefer/ that only their own entry points load
OUTSIDE_THE_DAEMON = ("bench", "train")
#: the functions of edgefer/cli.py that start the benchmark and the training tools
ENTRY_POINTS = {"bench_main", "train_main", "explain_main"}
FORBIDDEN = ("edgefer.bench", "edgefer.train")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(name: str) -> bool:
    """Whether ``name`` is a module or package of edgefer in this checkout."""
    base = REPO.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(path: Path) -> Iterator[tuple[str, list[str], int, bool]]:
    """Every import in the file: (module imported, the functions it sits in, outermost first,
    line, whether it runs only for type checkers). ``from pkg import name`` yields
    ``pkg.name`` where that is a module, else ``pkg``; relative imports are resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(node: ast.AST, funcs: list[str], typing_only: bool) -> Iterator[tuple[str, list[str], int, bool]]:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, funcs, node.lineno, typing_only
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield (sub if is_module(sub) else base), funcs, node.lineno, typing_only
        elif isinstance(node, ast.Call) and _dynamic_target(node):
            yield _dynamic_target(node), funcs, node.lineno, typing_only  # type: ignore[misc]
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.body:
                yield from visit(child, funcs, True)
            for child in node.orelse:
                yield from visit(child, funcs, typing_only)
            return
        inner = funcs
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            inner = [*funcs, node.name]
        elif isinstance(node, ast.Lambda):
            inner = [*funcs, "<lambda>"]
        for child in ast.iter_child_nodes(node):
            yield from visit(child, inner, typing_only)

    yield from visit(ast.parse(path.read_text(), str(path)), [], False)


def _dynamic_target(call: ast.Call) -> str | None:
    """The module named by ``importlib.import_module("...")`` or ``__import__("...")``."""
    f = call.func
    named = (isinstance(f, ast.Attribute) and f.attr == "import_module") or (
        isinstance(f, ast.Name) and f.id in ("import_module", "__import__")
    )
    if named and call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str):
        return call.args[0].value
    return None


def forbidden(target: str, banned: tuple[str, ...] = FORBIDDEN) -> bool:
    return any(target == b or target.startswith(b + ".") for b in banned)


def daemon_files() -> list[Path]:
    """Every module of the daemon: all of edgefer/ but the benchmark and training packages,
    so a module added or split out is checked without being named here."""
    return [p for p in sorted(PACKAGE.rglob("*.py")) if p.relative_to(PACKAGE).parts[0] not in OUTSIDE_THE_DAEMON]


def test_the_daemons_modules_are_found() -> None:
    """A renamed or moved package must not leave these tests checking nothing."""
    names = {str(p.relative_to(PACKAGE)) for p in daemon_files()}
    assert {"service.py", "publish.py", "config.py", "sources/feed.py", "framepath.py", "models/__init__.py"} <= names
    assert not any(n.startswith(("bench/", "train/")) for n in names)
    assert (PACKAGE / "cli.py").is_file() and (PACKAGE / "bench" / "__init__.py").is_file()


@pytest.mark.parametrize("path", daemon_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_daemon_never_imports_the_benchmark_or_training(path: Path) -> None:
    wrong = []
    for target, funcs, line, _ in imports(path):
        if not forbidden(target):
            continue
        if path.name == "cli.py" and funcs and funcs[0] in ENTRY_POINTS:
            continue  # edgefer-bench / edgefer-train / edgefer-explain start here
        where = f"in {'.'.join(funcs)}()" if funcs else "at module level"
        wrong.append(f"{path.relative_to(REPO)}:{line} imports {target} {where}")
    assert not wrong, "\n".join(wrong)


def test_the_entry_points_do_import_what_they_start() -> None:
    """The allowance above is used, and used only by the three entry points."""
    found = {
        (funcs[0], target.split(".")[1])
        for target, funcs, _, _ in imports(PACKAGE / "cli.py")
        if forbidden(target) and funcs
    }
    assert found == {("bench_main", "bench"), ("train_main", "train"), ("explain_main", "train")}


def test_the_benchmark_never_imports_training() -> None:
    files = sorted((PACKAGE / "bench").rglob("*.py"))
    assert len(files) > 10
    wrong = [
        f"{p.relative_to(REPO)}:{line} imports {target}"
        for p in files
        for target, _, line, _ in imports(p)
        if forbidden(target, ("edgefer.train",))
    ]
    assert not wrong, "\n".join(wrong)


def import_graph() -> dict[str, set[str]]:
    """Module -> the edgefer modules it imports when it is loaded (not inside functions, not
    for type checkers only)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        graph[module_name(path)] = {
            t
            for t, funcs, _, typing_only in imports(path)
            if not funcs and not typing_only and (t == "edgefer" or t.startswith("edgefer.")) and is_module(t)
        }
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One loop through each strongly connected group of modules (Tarjan), as a path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in graph.get(v, ()):
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return groups


def test_cycles_finds_a_loop_and_nothing_else() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"a"}}) == [["a"]]
    assert cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_no_import_cycle_among_edgefers_modules() -> None:
    graph = import_graph()
    # the graph is the real one: load-time imports in, imports inside functions out
    assert {"edgefer.bench.dataset", "edgefer.bench.report"} <= graph["edgefer.bench.cli"]
    assert "edgefer.framepath" in graph["edgefer.service"]
    assert "edgefer.service" not in graph["edgefer.bench.lanes"]  # DaemonLane imports it when built
    loops = cycles(graph)
    assert not loops, "modules that import each other when loaded: " + "; ".join(" <-> ".join(g) for g in loops)
