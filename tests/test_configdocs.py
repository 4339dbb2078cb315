"""Each config key is described once, in the schema: the reference in docs/configuration.md is
generated from it and the example deploy/edgefer.toml is checked against it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgefer import config, configdocs
from edgefer.configdocs import check_docs, check_example, keys, reference, toml_value, write_docs


def test_the_docs_and_the_example_agree_with_the_schema() -> None:
    assert check_docs() == []
    assert check_example() == []
    assert configdocs.main(["--check"]) == 0


def test_every_key_is_described_and_the_reference_lists_each_once() -> None:
    ks = keys()
    assert len(ks) >= 50 and all(k.description for k in ks), [k.dotted for k in ks if not k.description]
    ref = reference()
    for k in ks:
        assert ref.count(f"| `{k.name}` | `{toml_value(k.default)}` |") >= 1, k.dotted
    assert ref.count("\n### ") + ref.startswith("### ") == len({k.table for k in ks})


def test_each_listed_key_is_one_the_config_accepts_with_its_default() -> None:
    """The generator's keys are the parser's: setting each to its listed default is accepted
    and leaves the configuration equal to the built-in one."""
    lines: dict[str, list[str]] = {}
    for k in keys():
        if k.name not in ("device_id", "state_dir", "client_id"):  # derived from the host; compared apart
            lines.setdefault(k.table, []).append(f"{k.name} = {toml_value(k.default)}")
    text = "\n".join(lines.pop("")) + "\n" + "".join(f"[{t}]\n" + "\n".join(v) + "\n" for t, v in lines.items())
    assert config.parse(text).to_dict() == config.parse("").to_dict()


def test_an_unknown_key_is_still_refused_naming_file_line_and_key() -> None:
    with pytest.raises(config.ConfigError, match=r"^/etc/x\.toml:3: faces\.detect_evry: unknown key \(known here: "):
        config.parse("[faces]\ndetect_every = 3\ndetect_evry = 2\n", "/etc/x.toml")


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A copy of deploy/edgefer.toml to break."""
    return Path(shutil.copy(configdocs.EXAMPLE, tmp_path))


def test_an_example_with_a_key_missing_is_caught(example: Path) -> None:
    example.write_text(example.read_text().replace("detect_every = 3\n", ""))
    assert check_example(example) == [f"{example}: faces.detect_every: missing (every key is listed with its default)"]


def test_an_example_with_an_unknown_key_is_caught(example: Path) -> None:
    example.write_text(example.read_text().replace("[faces]\n", "[faces]\ndetect_evry = 3\n"))
    assert check_example(example) == [f"{example}: faces.detect_evry: not a key of the schema"]


@pytest.mark.parametrize(
    ("line", "changed", "default"),
    [
        ("max_rate = 5.0\n", "max_rate = 4.0\n", "5.0"),
        ("pace = true\n", "pace = 1\n", "true"),  # the right value, the wrong type
        ('publish_every = "1m"\n', "publish_every = 60\n", '"1m"'),
    ],
)
def test_an_example_with_a_default_that_differs_is_caught(example: Path, line: str, changed: str, default: str) -> None:
    assert line in example.read_text()
    example.write_text(example.read_text().replace(line, changed))
    (problem,) = check_example(example)
    assert problem.endswith(f"but the default is {default}")


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    """A copy of docs/configuration.md to break."""
    return Path(shutil.copy(configdocs.DOCS, tmp_path))


def test_docs_edited_by_hand_are_caught_and_regenerated(docs: Path) -> None:
    text = docs.read_text()
    docs.write_text(text.replace("| `keepalive` | `30` |", "| `keepalive` | `60` |"))
    assert check_docs(docs) and "--write" in check_docs(docs)[0]
    assert write_docs(docs) is True
    assert docs.read_text() == text and check_docs(docs) == []
    assert write_docs(docs) is False


def test_docs_without_the_markers_are_refused(docs: Path) -> None:
    docs.write_text(docs.read_text().replace(configdocs.END, ""))
    (problem,) = check_docs(docs)
    assert "markers" in problem
    with pytest.raises(ValueError, match="markers"):
        write_docs(docs)
