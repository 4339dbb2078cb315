"""Benchmarks beside edgefer-bench, and what their scripts share: progress on stderr (the
table goes to stdout) and one way of saving a result."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def save_results(out: str | Path, name: str, table: str, result: dict) -> Path:
    """``name``.md (the table) and ``name``.json (every figure) in ``out``, created if need be;
    the table is printed too. Returns the folder, for the plot beside them."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(table)
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    print(table)
    return out
