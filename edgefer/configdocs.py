"""The configuration reference, made from the schema: each key is described once.

A key's description is the ``#:`` comment above its field in ``edgefer/configschema.py``
(the convention Sphinx's autodoc reads); its default is the field's. From these this module
writes the "Every key" section of ``docs/configuration.md`` and checks the example
``deploy/edgefer.toml`` (every key present, none unknown, each at its default), so neither
can drift from what the daemon accepts::

    python -m edgefer.configdocs            # print the reference
    python -m edgefer.configdocs --write    # rewrite it in docs/configuration.md
    python -m edgefer.configdocs --check    # exit 1 naming what disagrees (docs and example)
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_type_hints

from edgefer import configschema
from edgefer.configschema import Config

BEGIN = (
    "<!-- generated from the schema (edgefer/configschema.py) by `python -m edgefer.configdocs --write`: "
    "edit the descriptions there -->"
)
END = "<!-- end of the generated reference -->"
ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "configuration.md"
EXAMPLE = ROOT / "deploy" / "edgefer.toml"


@dataclass(frozen=True)
class Key:
    table: str  # "" for the top level
    name: str
    default: Any
    description: str

    @property
    def dotted(self) -> str:
        return f"{self.table}.{self.name}" if self.table else self.name


def _comments() -> dict[tuple[str, str], str]:
    """(class name, field name) -> the ``#:`` lines right above the field, joined."""
    source = inspect.getsource(configschema)
    lines = source.splitlines()
    found: dict[tuple[str, str], str] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for stmt in node.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                above, i = [], stmt.lineno - 2
                while i >= 0 and lines[i].strip().startswith("#:"):
                    above.insert(0, lines[i].strip()[2:].strip())
                    i -= 1
                found[(node.name, stmt.target.id)] = " ".join(above)
    return found


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def keys() -> list[Key]:
    """Every key in the order of the schema: the top level first, then each table."""
    comments = _comments()
    tables: list[tuple[str, type]] = [("", Config)]
    hints = get_type_hints(Config)
    tables += [(f.name, hints[f.name]) for f in dataclasses.fields(Config) if dataclasses.is_dataclass(hints[f.name])]
    out = []
    for table, cls in tables:
        inner = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(inner[f.name]):
                continue
            out.append(Key(table, f.name, _default(f), comments.get((cls.__name__, f.name), "")))
    return out


def toml_value(value: Any) -> str:
    """A default as it is written in TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def reference() -> str:
    """The generated Markdown: one table of key, default and description per TOML table."""
    ks = keys()
    sections = []
    for table in dict.fromkeys(k.table for k in ks):
        heading = f"`[{table}]`" if table else "Top level"
        rows = [f"| `{k.name}` | `{toml_value(k.default)}` | {k.description} |" for k in ks if k.table == table]
        sections.append("\n".join([f"### {heading}", "", "| key | default | meaning |", "|---|---|---|", *rows]))
    return "\n\n".join(sections) + "\n"


def _generated() -> str:
    """What stands between the markers."""
    return f"\n{reference()}"


def _split(text: str, where: Path) -> tuple[str, str, str]:
    """The docs around and between the markers."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"{where}: expected the markers {BEGIN!r} and {END!r} once each, in that order")
    head, rest = text.split(BEGIN)
    body, tail = rest.split(END)
    return head, body, tail


def write_docs(path: Path = DOCS) -> bool:
    """Rewrite the generated section; returns whether it changed."""
    head, body, tail = _split(path.read_text(), path)
    if body == _generated():
        return False
    path.write_text(f"{head}{BEGIN}{_generated()}{END}{tail}")
    return True


def check_docs(path: Path = DOCS) -> list[str]:
    """What in the docs' reference disagrees with the schema (nothing: [])."""
    try:
        _, body, _ = _split(path.read_text(), path)
    except (OSError, ValueError) as exc:
        return [str(exc)]
    if body == _generated():
        return []
    return [f"{path}: the key reference differs from the schema; run python -m edgefer.configdocs --write"]


def _flatten(data: dict[str, Any], table: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in data.items():
        dotted = f"{table}.{name}" if table else name
        if isinstance(value, dict):
            flat.update(_flatten(value, dotted))
        else:
            flat[dotted] = value
    return flat


def check_example(path: Path = EXAMPLE) -> list[str]:
    """What in the example file disagrees with the schema: a key missing or unknown, a value
    that is not the default (the file promises every key with its default)."""
    try:
        given = _flatten(tomllib.loads(path.read_text()))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        return [f"{path}: {exc}"]
    schema = {k.dotted: k.default for k in keys()}
    problems = [f"{path}: {k}: missing (every key is listed with its default)" for k in schema if k not in given]
    problems += [f"{path}: {k}: not a key of the schema" for k in given if k not in schema]
    for k, value in given.items():
        if k in schema and (type(value) is not type(schema[k]) or value != schema[k]):
            problems.append(f"{path}: {k} = {toml_value(value)}, but the default is {toml_value(schema[k])}")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgefer.configdocs", description=__doc__.split("\n\n")[0])
    p.add_argument("--write", action="store_true", help=f"rewrite the reference in {DOCS.relative_to(ROOT)}")
    p.add_argument("--check", action="store_true", help="exit 1 when the docs or the example disagree")
    args = p.parse_args(argv)
    if args.write:
        print(f"{DOCS.relative_to(ROOT)}: {'rewritten' if write_docs() else 'already up to date'}")
        return 0
    if args.check:
        problems = check_docs() + check_example()
        for line in problems:
            print(line, file=sys.stderr)
        return 1 if problems else 0
    sys.stdout.write(reference())
    return 0


if __name__ == "__main__":
    sys.exit(main())
