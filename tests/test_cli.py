"""The command line end to end on tiny problems, and the report."""

import base64
import re

import pandas as pd
import pytest
from typer.testing import CliRunner

from lenapk.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_every_subcommand_has_help():
    for cmd in ("simulate", "fit", "cohort", "compare", "report"):
        res = run(cmd, "--help")
        assert res.exit_code == 0 and "--out" in res.output, cmd


def test_simulate_writes_csv_and_png_and_never_overwrites(tmp_path):
    res = run("simulate", "--cycles", "2", "--out", tmp_path)
    assert res.exit_code == 0, res.output
    df = pd.read_csv(tmp_path / "simulation.csv")
    assert len(df) == 57 and list(df.columns[:2]) == ["day", "dose_mg"] and {"anc", "igg"} <= set(df.columns)
    assert list(df["day"]) == list(range(57)) and (df["dose_mg"].iloc[:56] > 0).all()
    assert "ANC nadir" in res.output
    assert (tmp_path / "simulation.png").stat().st_size > 10_000
    again = run("simulate", "--cycles", "2", "--out", tmp_path)
    assert again.exit_code == 2 and "exists" in again.output
    assert run("simulate", "--cycles", "2", "--out", tmp_path, "--overwrite").exit_code == 0


def test_options_from_toml_and_command_line_wins(tmp_path):
    cfg = tmp_path / "opts.toml"
    cfg.write_text('[simulate]\ncycles = 1\nregimen = "early_2p5_then_5_cont"\n')
    res = run("simulate", "--config", cfg, "--out", tmp_path / "a")
    assert res.exit_code == 0, res.output
    assert len(pd.read_csv(tmp_path / "a" / "simulation.csv")) == 29
    res = run("simulate", "--config", cfg, "--cycles", "2", "--out", tmp_path / "b")
    assert res.exit_code == 0 and len(pd.read_csv(tmp_path / "b" / "simulation.csv")) == 57


@pytest.mark.parametrize(
    "args, message",
    [
        (["simulate", "--regimen", "nope"], "unknown regimen 'nope'"),
        (["simulate", "--rules", "strict"], "--rules must be"),
        (["simulate", "--config", "missing.toml"], "does not exist"),
        (["cohort", "--patients", "missing.csv", "--cycles", "1"], "does not exist"),
    ],
)
def test_bad_input_exits_non_zero_with_message(tmp_path, args, message):
    res = run(*args, "--out", tmp_path / "o")
    assert res.exit_code == 2
    assert message in res.output


def test_bad_toml_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[simulate\ncycles = 2\n")
    res = run("simulate", "--config", bad, "--out", tmp_path / "o")
    assert res.exit_code == 2 and "not valid TOML" in res.output
    bad.write_text("[simulate]\nspeed = 2\n")
    res = run("simulate", "--config", bad, "--out", tmp_path / "o")
    assert res.exit_code == 2 and "unknown option(s) ['speed']" in res.output


def test_cohort_and_compare_on_a_tiny_cohort(tmp_path):
    res = run("cohort", "--n", 4, "--block-size", 4, "--cycles", 1, "--out", tmp_path / "c")
    assert res.exit_code == 0, res.output
    summary = pd.read_csv(tmp_path / "c" / "summary.csv")
    assert len(summary) > 0
    res = run("compare", "--n", 4, "--cycles", 1, "--out", tmp_path / "k")
    assert res.exit_code == 0, res.output
    table = pd.read_csv(tmp_path / "k" / "comparison.csv")
    assert list(table["regimen"]) == ["early_2p5_then_5_cont", "rr_10_to_25_cont"]
    assert (table["rules"] == "label rule").all() and (table["n"] == 4).all()
    assert (table["n_cycles"] == 1).all()
    assert table["g3_neutropenia"].between(0, 1).all() and table["response_c24"].isna().all()
    assert (tmp_path / "k" / "comparison.png").stat().st_size > 10_000


def test_report_quick_is_self_contained_with_real_figures(tmp_path):
    res = run("report", "--quick", "--out", tmp_path)
    assert res.exit_code == 0, res.output
    html = (tmp_path / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) >= 4
    for b64 in images:
        png = base64.b64decode(b64, validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    # self-contained: every image inline, nothing fetched from elsewhere
    assert len(re.findall(r"<img\b", html)) == len(images)
    assert not re.search(r'(src|href)="(?!data:|#)', html) and "<link" not in html
    for heading in (
        "Fit diagnostics",
        "Observed vs predicted",
        "Typical-patient trajectories",
        "Prediction bands",
        "Schedule comparison",
        "trade-off",
    ):
        assert heading in html
