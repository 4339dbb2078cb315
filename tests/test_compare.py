"""The run comparison behind the model card's centralized-vs-federated table, read from the
committed reports of the shipped runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgefer.train import cli
from edgefer.train.compare import compare, load_report, markdown_table, run_row, with_gaps

FIGURES = Path(__file__).resolve().parents[1] / "models" / "figures"
CENTRAL = FIGURES / "edgefer-stage1-report.json"
FEDERATED = FIGURES / "edgefer-federated-report.json"


def _row(kind: str, clients: int, f32: float, i8: float) -> dict:
    return {
        "name": f"{kind}{clients}",
        "kind": kind,
        "clients": clients,
        "partition": "iid" if kind == "federated" else "",
        "dp": "none",
        "epochs": 30,
        "best": "round 1",
        "validation": 0.7,
        "float32": f32,
        "float32_f1": f32 - 0.02,
        "int8": i8,
        "int8_f1": i8 - 0.02,
        "flip": None,
        "int8_validation": None,
        "int8_agreement": None,
    }


def test_gaps_are_measured_against_the_first_centralized_run():
    rows = with_gaps(
        [_row("federated", 3, 0.69, 0.68), _row("centralized", 1, 0.72, 0.71), _row("federated", 6, 0.70, 0.715)]
    )
    assert rows[1]["gap_float32"] is None
    assert rows[0]["gap_float32"] == pytest.approx(3.0) and rows[0]["gap_int8"] == pytest.approx(3.0)
    assert rows[2]["gap_float32"] == pytest.approx(2.0) and rows[2]["gap_int8"] == pytest.approx(-0.5)


def test_without_a_centralized_run_there_is_no_gap():
    rows = with_gaps([_row("federated", 3, 0.69, 0.68)])
    assert rows[0]["gap_float32"] is None and rows[0]["gap_int8"] is None


def test_real_reports_give_the_card_row():
    central, fed = load_report(CENTRAL), load_report(FEDERATED)
    c, f = run_row(central, "central"), run_row(fed, "fed")
    assert (c["kind"], c["clients"]) == ("centralized", 1)
    assert (f["kind"], f["clients"], f["partition"]) == ("federated", fed["federated"]["clients"], "iid")
    # A federation's compute is rounds x local epochs, as its clients together pass over the data.
    assert f["epochs"] == fed["rounds_run"] * fed["federated"]["local_epochs"]
    assert f["best"] == f"round {fed['best_round']}"
    table = markdown_table([c, f])
    gap = 100 * (central["files"]["float32"]["test"]["accuracy"] - fed["files"]["float32"]["test"]["accuracy"])
    fed_line = table.splitlines()[-1]
    assert fed_line.startswith("| fed | federated, iid | 3 |")
    assert f"{gap:.1f} / " in fed_line
    assert f"{100 * fed['files']['int8']['test']['accuracy']:.2f}" in fed_line
    assert fed_line.split("|")[7] == "  "  # this report predates int8 validation figures


def test_the_int8_file_chosen_on_validation_shows_its_validation_and_agreement():
    report = load_report(FIGURES / "edgefer-qat-soup-report.json")
    val = report["files"]["int8"]["validation"]
    line = markdown_table([run_row(report, "qat")]).splitlines()[-1]
    assert line.split("|")[7].strip() == f"{100 * val['accuracy']:.2f} ({100 * val['argmax_agreement_with_keras']:.2f})"


def test_cli_prints_the_table_and_draws_the_plot(tmp_path, capsys):
    png = tmp_path / "clients.png"
    assert cli.main(["compare", str(CENTRAL), str(FEDERATED), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 4  # header, separator, two runs
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert compare([str(CENTRAL)]) in out


def test_a_run_folder_without_a_report_is_named(tmp_path, capsys):
    assert cli.main(["--compare", str(tmp_path)]) == 2
    assert f"{tmp_path / 'report.json'}: no report" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "expected"),
    [('{\n  "arch": \n', "line 3: not JSON"), (json.dumps({"arch": "edgefer"}), "missing files, validation")],
)
def test_broken_reports_are_refused_with_the_file_named(tmp_path, text, expected):
    bad = tmp_path / "report.json"
    bad.write_text(text)
    with pytest.raises(ValueError, match=expected) as e:
        load_report(tmp_path)
    assert str(bad) in str(e.value)
