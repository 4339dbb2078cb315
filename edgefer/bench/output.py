"""Where a run's words and files go: progress and errors on stderr, the table on stdout,
the JSON, Markdown and PNG files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edgefer import LABELS
from edgefer.bench.plots import confusion_png
from edgefer.bench.report import render


def log(quiet: bool, msg: str) -> None:
    """Progress on stderr, unless ``quiet``."""
    if not quiet:
        print(f"edgefer-bench: {msg}", file=sys.stderr, flush=True)


def error(msg: object, code: int = 1) -> int:
    """An error on stderr; returns the exit code to give."""
    print(f"edgefer-bench: {msg}", file=sys.stderr)
    return code


def write_json(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")


def confusion_pngs(result: dict[str, Any], out_dir: Path) -> None:
    """A confusion-matrix PNG per model of a dataset-mode result, named in its entry."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for m in result["models"]:
        slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in m["name"]).strip("_")
        png = out_dir / f"confusion-{slug}-{m['threads']}t.png"
        title = f"{m['name']}: FER2013 {result['dataset']['split']}, {m['images']} images"
        m["confusion_png"] = str(confusion_png(np.array(m["confusion"]), LABELS, png, title))


def finish(args: argparse.Namespace, result: dict[str, Any]) -> int:
    """Dataset and pipeline modes: the table on stdout and in ``--markdown``, the result in
    ``--json``, a dataset run's confusion matrices in ``--out-dir`` (default beside the JSON)."""
    out_dir = Path(args.out_dir) if args.out_dir else (Path(args.json).parent if args.json else None)
    if out_dir is not None and result["mode"] == "dataset":
        confusion_pngs(result, out_dir)
    text = render(result)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    if args.json:
        path = Path(args.json)
        write_json(path, result)
        log(args.quiet, f"wrote {path}")
    return 0


def write_result(out: Path, stem: str, result: dict[str, Any], quiet: bool) -> None:
    """Faces and clip modes: ``<out>/<stem>.json`` and ``<out>/<stem>.md``; the Markdown is
    printed too."""
    markdown = render(result)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{stem}.json", result)
    (out / f"{stem}.md").write_text(markdown)
    print(markdown)
    if not quiet:
        print(f"edgefer-bench: wrote {out / stem}.json and .md", flush=True)
