"""The documentation's links: every relative link in the project's Markdown points at a file
that exists, and every figure and result file kept in the repository is reachable from the
docs. A result nobody can find from the README, the model card or the benchmark pages is
either lost work or a leftover of an earlier generation; git keeps deleted ones."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

from tests.conftest import REPO

#: where the project's Markdown lives (README.md at the top, then these folders, recursively)
DOC_DIRS = ("docs", "models", "benchmarks")
#: folders whose every file must be linked from a doc
LINKED_DIRS = ("models/figures", "benchmarks/results")

# [text](target "title"), ![alt](target) and reference definitions "[id]: target"
_INLINE = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
_CODE_SPAN = re.compile(r"`[^`\n]*`")


def markdown_files(repo: Path = REPO) -> list[Path]:
    """README.md and every .md under the doc folders."""
    files = [repo / "README.md"] if (repo / "README.md").is_file() else []
    for folder in DOC_DIRS:
        files += sorted((repo / folder).rglob("*.md"))
    return files


def links(text: str) -> list[str]:
    """The link targets of a Markdown text, as written; code blocks and spans are not links."""
    text = _CODE_SPAN.sub("", _FENCE.sub("", text))
    return _INLINE.findall(text) + _REFERENCE.findall(text)


def local_target(doc: Path, target: str, repo: Path = REPO) -> Path | None:
    """The file or folder a relative link of ``doc`` names, or None for a URL or an anchor in
    the same page. Fragments and queries are dropped; ``/x`` is taken from the repository root,
    as GitHub renders it."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
        return None
    path = unquote(target.split("#", 1)[0].split("?", 1)[0])
    if not path:
        return None
    base = repo if path.startswith("/") else doc.parent
    return (base / path.lstrip("/")).resolve()


def broken_links(repo: Path = REPO) -> list[str]:
    """``doc: target`` for each relative link whose file or folder does not exist."""
    out = []
    for doc in markdown_files(repo):
        for target in links(doc.read_text(encoding="utf-8")):
            path = local_target(doc, target, repo)
            if path is not None and not path.exists():
                out.append(f"{doc.relative_to(repo)}: {target}")
    return out


def anchors(page: Path) -> set[str]:
    """The fragment ids GitHub gives a page's headings: lower case, punctuation dropped, spaces
    as hyphens, a repeated heading numbered from -1."""
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    out: set[str] = set()
    counts: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", re.sub(r"[`*_]", "", heading.lower())).replace(" ", "-")
        n = counts.get(slug, 0)
        out.add(slug if n == 0 else f"{slug}-{n}")
        counts[slug] = n + 1
    return out


def broken_anchors(repo: Path = REPO) -> list[str]:
    """``doc: target`` for each link to a heading of a Markdown page that has no such heading, so
    that a section moved to another page does not leave links pointing at nothing."""
    out = []
    for doc in markdown_files(repo):
        for target in links(doc.read_text(encoding="utf-8")):
            if "#" not in target or re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
                continue
            path = doc.resolve() if target.startswith("#") else local_target(doc, target, repo)
            if path is None or path.suffix != ".md" or not path.is_file():
                continue
            if target.split("#", 1)[1] not in anchors(path):
                out.append(f"{doc.relative_to(repo)}: {target}")
    return out


def reachable(repo: Path = REPO) -> set[Path]:
    """Files linked, directly or through a linked Markdown page, from a doc that is not itself
    a kept result (README.md, docs/, the model card and history, the benchmark pages). A result
    page linked from nowhere does not make the files it links reachable."""
    kept = tuple((repo / d).resolve() for d in LINKED_DIRS)
    pages = [d.resolve() for d in markdown_files(repo) if not any(d.resolve().is_relative_to(k) for k in kept)]
    seen: set[Path] = set(pages)
    while pages:
        doc = pages.pop()
        for target in links(doc.read_text(encoding="utf-8")):
            path = local_target(doc, target, repo)
            if path is None or path in seen or not path.is_file():
                continue
            seen.add(path)
            if path.suffix == ".md":
                pages.append(path)
    return seen


def unlinked(repo: Path = REPO) -> list[str]:
    """Files under the linked folders that no doc reaches, relative to the repository."""
    seen = reachable(repo)
    files = [f for d in LINKED_DIRS for f in sorted((repo / d).rglob("*")) if f.is_file()]
    return [str(f.relative_to(repo)) for f in files if f.resolve() not in seen]


def test_every_relative_link_points_at_a_file_that_exists() -> None:
    assert broken_links() == []


def test_every_link_to_a_heading_finds_it() -> None:
    assert broken_anchors() == []


def test_every_figure_and_result_file_is_linked_from_a_doc() -> None:
    assert unlinked() == []


def test_the_checks_see_what_they_claim(tmp_path: Path) -> None:
    """On a small tree: a broken link, a link in code (not a link), a result linked only from an
    unlinked result page, and one linked through a linked page."""
    (tmp_path / "docs").mkdir()
    results = tmp_path / "benchmarks" / "results"
    (results / "a").mkdir(parents=True)
    (tmp_path / "models" / "figures").mkdir(parents=True)
    (tmp_path / "README.md").write_text(
        "# Top `level`\n\nSee [a](benchmarks/results/a/a.md#a-page), [gone](docs/gone.md), [web](https://example.org),\n"
        "[here](#top-level), [nowhere](#no-such-part),\n"
        "`[code](docs/code.md)` and\n```\n[fenced](docs/fenced.md)\n```\n[ref]: models/figures/f.png\n"
    )
    (results / "a" / "a.md").write_text("## A page\n\n![plot](a.png)\n")
    (results / "a" / "a.png").write_bytes(b"")
    (results / "b.md").write_text("[json](b.json)\n")
    (results / "b.json").write_text("{}")
    (tmp_path / "models" / "figures" / "f.png").write_bytes(b"")
    assert broken_links(tmp_path) == ["README.md: docs/gone.md"]
    assert broken_anchors(tmp_path) == ["README.md: #no-such-part"]
    assert unlinked(tmp_path) == ["benchmarks/results/b.json", "benchmarks/results/b.md"]
