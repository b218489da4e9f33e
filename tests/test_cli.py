"""The command line end to end on tiny problems (a few patients, one or two cycles): regimens as
bundled ids, event-table CSVs and spec strings, patients tables with covariates left out,
option errors that name the option, the run log and --quiet.  The report's HTML is tested in
tests/test_report.py."""

import json
import os

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import lenapk
from lenapk.cli import app

runner = CliRunner()
FILLED = ["ffm", "anc0", "plt0", "igg0", "igm0", "iga0", "del17p", "ighv_unmutated", "relapsed", "bulky"]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_every_subcommand_has_help_and_brackets_survive():
    for cmd in ("simulate", "fit", "cohort", "compare", "report"):
        res = run(cmd, "--help")
        assert res.exit_code == 0 and "--out" in res.output and "--quiet" in res.output, cmd
    text = " ".join(run("cohort", "--help").output.split())  # help is wrapped to the terminal
    assert "e.g. [cohort] with n = 1000" in text
    assert "--fill drawn|typical" in text


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


def test_options_from_toml_and_command_line_wins_and_the_run_log_records_them(tmp_path):
    cfg = tmp_path / "opts.toml"
    cfg.write_text('[simulate]\ncycles = 1\nregimen = "early_2p5_then_5_cont"\n')
    res = run("simulate", "--config", cfg, "--out", tmp_path / "a")
    assert res.exit_code == 0, res.output
    assert len(pd.read_csv(tmp_path / "a" / "simulation.csv")) == 29
    res = run("simulate", "--config", cfg, "--cycles", "2", "--out", tmp_path / "b")
    assert res.exit_code == 0 and len(pd.read_csv(tmp_path / "b" / "simulation.csv")) == 57
    log = json.loads((tmp_path / "b" / "run.json").read_text())
    assert log["status"] == "finished" and log["command"] == "simulate"
    assert log["options"]["cycles"] == 2 and log["options"]["regimen"] == "early_2p5_then_5_cont"
    assert log["option_sources"]["cycles"] == "command line" and log["option_sources"]["regimen"] == "config"
    assert log["option_sources"]["rules"] == "default" and log["options"]["rules"] == "none"
    assert "--cycles 2" in log["command_line"] and log["command_line"].startswith("lenapk simulate")
    assert {"lenapk", "jax", "diffrax", "python"} <= set(log["versions"])
    assert log["versions"]["lenapk"] == lenapk.__version__
    outputs = [tmp_path / "b" / f for f in ("simulation.csv", "simulation.png")]
    assert sorted(log["outputs"]) == sorted(str(p) for p in outputs)
    # the log was started before the outputs were written and finished after
    assert all(log["started_unix"] <= os.path.getmtime(p) for p in outputs)
    assert 0 <= log["elapsed_s"] < 600


def test_run_log_is_written_before_the_work_starts(tmp_path, monkeypatch):
    seen = {}

    def broken_simulate(*args, **kwargs):
        seen.update(json.loads((tmp_path / "o" / "run.json").read_text()))
        raise RuntimeError("boom")

    monkeypatch.setattr(lenapk, "simulate", broken_simulate)
    res = run("simulate", "--cycles", "1", "--out", tmp_path / "o")
    assert isinstance(res.exception, RuntimeError)
    assert seen["status"] == "running" and "finished" not in seen and seen["options"]["cycles"] == 1
    log = json.loads((tmp_path / "o" / "run.json").read_text())
    assert log["status"] == "failed" and "boom" in log["error"] and log["finished"] >= log["started"]
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["run.json"]


# ---------------------------------------------------------------------------------- regimens
def test_regimen_specs_through_the_command_line(tmp_path):
    res = run("simulate", "--regimen", "10mg d1-21/28 x1", "--out", tmp_path / "a")
    assert res.exit_code == 0, res.output
    df = pd.read_csv(tmp_path / "a" / "simulation.csv")
    assert len(df) == 29  # days 0..28 of one 28-day cycle
    np.testing.assert_array_equal(df["dose_mg"].to_numpy()[:28], [10.0] * 21 + [0.0] * 7)
    res = run("simulate", "--regimen", "2.5mg c1; 5mg c2-24 continuous", "--cycles", "2", "--out", tmp_path / "b")
    assert res.exit_code == 0, res.output
    df = pd.read_csv(tmp_path / "b" / "simulation.csv")
    assert len(df) == 57
    np.testing.assert_array_equal(df["dose_mg"].to_numpy()[:56], [2.5] * 28 + [5.0] * 28)
    # an open-ended spec runs for --cycles cycles
    res = run("simulate", "--regimen", "15mg q48h", "--cycles", "2", "--out", tmp_path / "c")
    assert res.exit_code == 0, res.output
    df = pd.read_csv(tmp_path / "c" / "simulation.csv")
    np.testing.assert_array_equal(df["dose_mg"].to_numpy()[:56], [15.0, 0.0] * 28)


@pytest.mark.parametrize(
    "spec, caret, words",
    [
        ("10mg d1-30/28 x1", 5, "must lie within the 28-day cycle"),
        ("10mg x0", 6, "the number of cycles must be a whole number >= 1, got '0'"),
        ("10mg d1-21/28 fortnightly", 14, "unknown word 'fortnightly'"),
        ("10mg c1; 5mg c2 x1", 16, "x1 is fewer cycles than the parts name (2)"),
    ],
)
def test_a_bad_spec_shows_the_caret_under_the_offending_character(tmp_path, spec, caret, words):
    res = run("simulate", "--regimen", spec, "--out", tmp_path / "o")
    assert res.exit_code == 2 and words in res.output
    lines = res.output.splitlines()
    i = lines.index("  " + spec)
    assert lines[i + 1] == " " * (2 + caret) + "^"
    assert not (tmp_path / "o").exists()


def test_nonmem_event_table_with_two_daily_doses(tmp_path):
    events = tmp_path / "events.csv"
    events.write_text("ID,TIME,AMT,EVID,CMT\n1,0,10,1,1\n1,24,10,1,1\n")
    res = run("simulate", "--regimen", events, "--out", tmp_path / "o")
    assert res.exit_code == 0, res.output
    df = pd.read_csv(tmp_path / "o" / "simulation.csv")
    assert list(df["day"]) == [0, 1, 2]
    np.testing.assert_array_equal(df["dose_mg"], [10.0, 10.0, 0.0])
    # linear PK: the two-dose concentration is the sum of single doses 24 h apart
    one = lenapk.simulate(lenapk.Regimen.from_events(np.array([0.0]), np.array([10.0]), n_days=2))
    c1 = one["conc_ng_ml"].to_numpy()
    np.testing.assert_allclose(df["conc_ng_ml"], [0.0, c1[1], c1[2] + c1[1]], rtol=1e-9, atol=1e-12)
    # simulate takes one patient
    two = tmp_path / "two.csv"
    two.write_text("ID,TIME,AMT\n1,0,10\n2,0,5\n")
    res = run("simulate", "--regimen", two, "--out", tmp_path / "x")
    assert res.exit_code == 2 and "holds 2 IDs (1, 2)" in res.output and "one ID" in res.output
    assert not (tmp_path / "x").exists()


def test_compare_two_spec_regimens_and_a_bundled_one(tmp_path):
    res = run(
        "compare",
        "--regimens",
        "early_2p5_then_5_cont",
        "--regimen",
        "10mg d1-21/28 x1",
        "--regimen",
        "5mg continuous x1",
        "--n",
        4,
        "--cycles",
        1,
        "--rules",
        "none",
        "--out",
        tmp_path / "k",
    )
    assert res.exit_code == 0, res.output
    table = pd.read_csv(tmp_path / "k" / "comparison.csv")
    assert list(table["regimen"]) == ["early_2p5_then_5_cont", "10mg d1-21/28 x1", "5mg continuous x1"]
    assert "[2/3] 10mg d1-21/28 x1" in res.output  # a line per regimen
    assert (table["n"] == 4).all() and (table["n_cycles"] == 1).all() and (table["rules"] == "none").all()
    # without rules every planned dose is given
    assert np.allclose(table["dose_intensity"], 1.0) and np.allclose(table["days_held"], 0.0)
    assert table["g3_neutropenia"].between(0, 1).all() and table["response_c24"].isna().all()
    assert (tmp_path / "k" / "comparison.png").stat().st_size > 10_000
    log = json.loads((tmp_path / "k" / "run.json").read_text())
    assert log["details"]["regimens"]["10mg d1-21/28 x1"] == dict(
        source="spec", given="10mg d1-21/28 x1", n_days=28, cycle_days=28, n_events=21
    )


# ---------------------------------------------------------------------------------- patients
@pytest.fixture
def crcl_alc0(tmp_path):
    path = tmp_path / "p.csv"
    pd.DataFrame({"crcl": [60.0, 80.0, 45.0], "alc0": [20.0, 50.0, 100.0]}).to_csv(path, index=False)
    return path


def _cohort(out, *args):
    return run("cohort", "--cycles", 1, "--rules", "none", "--block-size", 4, *args, "--out", out)


def test_patients_with_only_crcl_and_alc0_typical_fill(tmp_path, crcl_alc0, model, typical):
    out = tmp_path / "t"
    res = _cohort(out, "--patients", crcl_alc0, "--fill", "typical", "--quiet")
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines() == [
        f"wrote {out / 'patients'} and {out / 'summary.csv'} (run log {out / 'run.json'})"
    ]  # --quiet: no bars, no table, no messages
    df = lenapk.read_cohort(out / "patients").sort_values("patient")
    np.testing.assert_array_equal(df["crcl"], [60.0, 80.0, 45.0])
    np.testing.assert_array_equal(df["alc0"], [20.0, 50.0, 100.0])
    # the relapsed population's medians (log-normal) and most likely values (0/1), not the
    # model's typical (untreated) patient
    expected = dict(ffm=55.0, anc0=2.8, plt0=120.0, igg0=550.0, igm0=40.0, iga0=45.0, del17p=0.0)
    expected.update(ighv_unmutated=1.0, relapsed=1.0, bulky=0.0)
    assert set(expected) == set(FILLED)
    for c in FILLED:
        np.testing.assert_array_equal(df[c], expected[c], err_msg=c)
    summary = pd.read_csv(out / "summary.csv")
    assert (summary.loc[summary["statistic"] == "rate", "n"] == 3).all()
    log = json.loads((out / "run.json").read_text())
    assert log["details"]["patients"]["filled"] == {c: "typical" for c in FILLED}


def test_patients_with_only_crcl_and_alc0_drawn_fill(tmp_path, crcl_alc0, model, typical):
    res = _cohort(tmp_path / "d", "--patients", crcl_alc0, "--verbose")
    assert res.exit_code == 0, res.output
    assert f"covariates not in the table, drawn from the 'relapsed' setting (seed 0): {', '.join(FILLED)}" in res.output
    assert "cohort: 3 patients" in res.output and "patient/s" in res.output  # a step message and the bar
    df = lenapk.read_cohort(tmp_path / "d" / "patients").sort_values("patient")
    np.testing.assert_array_equal(df["crcl"], [60.0, 80.0, 45.0])
    np.testing.assert_array_equal(df["alc0"], [20.0, 50.0, 100.0])
    population = model.populations["relapsed"]
    for c in ("ffm", "anc0", "plt0", "igg0", "igm0", "iga0"):
        v = df[c].to_numpy()
        assert len(set(v)) == 3 and not np.any(v == float(typical[c])), c  # drawn: one value per patient
        assert np.all((v >= population[c].low) & (v <= population[c].high)), c
    assert (df["relapsed"] == 1.0).all()  # Bernoulli(p = 1) in the relapsed setting; typical is 0
    log = json.loads((tmp_path / "d" / "run.json").read_text())
    assert log["details"]["patients"]["filled"] == {c: "drawn" for c in FILLED}


def test_event_table_with_one_regimen_per_patient(tmp_path):
    events = tmp_path / "ev.csv"
    events.write_text("ID,TIME,AMT,ADDL,II\n1,0,10,27,24\n2,0,2.5,13,48\n")
    patients = tmp_path / "p.csv"
    patients.write_text("patient,crcl,alc0\n2,30,50\n1,60,20\n")
    res = _cohort(tmp_path / "o", "--regimen", events, "--patients", patients, "-q")
    assert res.exit_code == 0, res.output
    df = lenapk.read_cohort(tmp_path / "o" / "patients").set_index("patient")
    assert df.loc[1, "planned_mg"] == 28 * 10.0 and df.loc[2, "planned_mg"] == 14 * 2.5  # AMT * (ADDL + 1)
    assert df.loc[1, "crcl"] == 60.0 and df.loc[2, "crcl"] == 30.0
    # several IDs need a patients table that names them
    res = _cohort(tmp_path / "x", "--regimen", events)
    assert res.exit_code == 2 and "holds 2 IDs (1, 2)" in res.output and "--patients" in res.output
    patients.write_text("patient,crcl,alc0\n3,30,50\n1,60,20\n")
    res = _cohort(tmp_path / "x", "--regimen", events, "--patients", patients)
    assert res.exit_code == 2 and "patient(s) [3] have no regimen" in res.output
    assert not (tmp_path / "x").exists()


def test_a_bad_covariate_value_names_the_row_and_column(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("crcl,alc0\n60,20\n-5,50\n")
    res = _cohort(tmp_path / "o", "--patients", bad)
    assert res.exit_code == 2
    assert f"--patients {bad}: patients.crcl: row 1 must be > 0" in res.output and "got -5" in res.output
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------- option errors
@pytest.mark.parametrize(
    "args, message",
    [
        (["cohort", "--n", "many"], "--n must be a whole number >= 1, got 'many'"),
        (["cohort", "--n", "0"], "--n must be a whole number >= 1, got '0'"),
        (["compare", "--seed", "-1"], "--seed must be a whole number >= 0, got '-1'"),
        (["simulate", "--days", "2.5"], "--days must be a whole number >= 1, got '2.5'"),
        (["fit", "--steps", "0"], "--steps must be a whole number >= 1, got '0'"),
        (["fit", "--observations", "missing.csv"], "--observations must be the path of an existing file"),
        (
            ["cohort", "--setting", "mars"],
            "--setting must be one of 'untreated', 'relapsed', 'relapsed_bulky', 'untreated_symptomatic', "
            "'maintenance', got 'mars'",
        ),
        (["cohort", "--fill", "mean"], "--fill must be one of 'drawn', 'typical', got 'mean'"),
        (["simulate", "--rules", "strict"], "--rules must be one of 'label', 'none', got 'strict'"),
        (["simulate", "--regimen", "nope"], "--regimen must be a bundled regimen id (early_2p5_then_5_cont"),
        (["simulate", "--regimen", "missing.csv"], "got 'missing.csv': no such file"),
        (["cohort", "--patients", "missing.csv"], "--patients must be the path of an existing file, got 'missing.csv'"),
        (["cohort", "--cpu-devices", "-2"], "--cpu-devices must be a whole number >= 0, got '-2'"),
        (["simulate", "--config", "missing.toml"], "--config missing.toml does not exist"),
        (["simulate", "--quiet", "--verbose"], "--quiet and --verbose exclude each other"),
        (["report", "--no-standard"], "--no-standard leaves nothing to compare"),
        (["compare", "--regimen", "5mg x1", "--regimen", "5mg x1"], "regimen '5mg x1' is given twice"),
    ],
)
def test_a_bad_option_names_the_option_and_writes_nothing(tmp_path, args, message):
    res = run(*args, "--out", tmp_path / "o")
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "toml, message",
    [
        ('[cohort]\nn = "many"\n', "--n (n in [cohort] of {cfg}) must be a whole number >= 1, got 'many'"),
        ("[cohort]\ncycles = 0\n", "--cycles (cycles in [cohort] of {cfg}) must be a whole number >= 1, got 0"),
        ("[cohort]\nregimen = 5\n", "--regimen (regimen in [cohort] of {cfg}) must be a non-empty string, got 5"),
        ('[cohort]\nfill = "mean"\n', "--fill (fill in [cohort] of {cfg}) must be one of 'drawn', 'typical'"),
        ('[cohort]\nquiet = "yes"\n', "--quiet (quiet in [cohort] of {cfg}) must be true or false, got 'yes'"),
        ("[cohort]\nspeed = 2\n", "--config {cfg} [cohort]: unknown option(s) ['speed']; allowed ['block_size'"),
        ("[cohrt]\nn = 2\n", "--config {cfg}: unknown table(s) ['cohrt']"),
        ("[cohort\nn = 2\n", "--config {cfg} is not valid TOML"),
    ],
)
def test_a_bad_toml_value_names_the_option_and_writes_nothing(tmp_path, toml, message):
    cfg = tmp_path / "opts.toml"
    cfg.write_text(toml)
    res = run("cohort", "--config", cfg, "--out", tmp_path / "o")
    assert res.exit_code == 2, res.output
    assert message.format(cfg=cfg) in res.output
    assert not (tmp_path / "o").exists()


def test_a_regimen_list_in_toml_is_checked(tmp_path):
    cfg = tmp_path / "opts.toml"
    cfg.write_text('[compare]\nregimen = ["5mg x1", 5]\n')
    res = run("compare", "--config", cfg, "--out", tmp_path / "o")
    assert res.exit_code == 2 and "must be a string or a list of non-empty strings, got ['5mg x1', 5]" in res.output
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------- paths in the config file
def _config_beside_its_files(tmp_path, toml):
    """A config file in conf/ with an event table and a patients table beside it, and the
    working directory elsewhere/ holding a different patients table of the same name."""
    conf, elsewhere = tmp_path / "conf", tmp_path / "elsewhere"
    conf.mkdir()
    elsewhere.mkdir()
    (conf / "ev.csv").write_text("ID,TIME,AMT,ADDL,II\n1,0,10,27,24\n2,0,2.5,13,48\n")
    (conf / "p.csv").write_text("patient,crcl,alc0\n2,30,50\n1,60,20\n")
    (elsewhere / "p.csv").write_text("patient,crcl,alc0\n2,99,50\n1,99,20\n")
    (conf / "opts.toml").write_text(toml)
    return conf, elsewhere


def test_relative_paths_in_the_config_file_are_relative_to_its_folder(tmp_path, monkeypatch):
    toml = '[cohort]\nregimen = "ev.csv"\npatients = "p.csv"\ncycles = 1\nrules = "none"\nblock_size = 4\n'
    conf, elsewhere = _config_beside_its_files(tmp_path, toml)
    monkeypatch.chdir(elsewhere)
    res = run("cohort", "--config", "../conf/opts.toml", "--out", "o", "-q")
    assert res.exit_code == 0, res.output
    df = lenapk.read_cohort(elsewhere / "o" / "patients").set_index("patient")
    assert df.loc[1, "planned_mg"] == 28 * 10.0 and df.loc[2, "planned_mg"] == 14 * 2.5  # conf/ev.csv
    assert df.loc[1, "crcl"] == 60.0 and df.loc[2, "crcl"] == 30.0  # conf/p.csv, not elsewhere/p.csv
    log = json.loads((elsewhere / "o" / "run.json").read_text())
    assert log["details"]["patients"]["file"] == str((conf / "p.csv").resolve())
    assert log["details"]["regimen"]["file"] == str((conf / "ev.csv").resolve())
    # a path on the command line is relative to the working directory
    res = run("cohort", "--config", "../conf/opts.toml", "--patients", "p.csv", "--out", "o2", "-q")
    assert res.exit_code == 0, res.output
    df = lenapk.read_cohort(elsewhere / "o2" / "patients").set_index("patient")
    assert (df["crcl"] == 99.0).all() and df.loc[1, "planned_mg"] == 28 * 10.0


@pytest.mark.parametrize(
    "toml, words",
    [
        ('[cohort]\npatients = "nope.csv"\n', "--patients (patients in [cohort] of ../conf/opts.toml) must be"),
        ('[cohort]\nregimen = "nope.csv"\n', "--regimen (regimen in [cohort] of ../conf/opts.toml) must be"),
    ],
)
def test_a_missing_path_in_the_config_file_names_the_option_the_file_and_the_resolved_path(
    tmp_path, monkeypatch, toml, words
):
    conf, elsewhere = _config_beside_its_files(tmp_path, toml)
    (elsewhere / "nope.csv").write_text("ID,TIME,AMT\n1,0,10\n")  # beside the working directory: not used
    monkeypatch.chdir(elsewhere)
    res = run("cohort", "--config", "../conf/opts.toml", "--out", "o")
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert (
        words in text and f"'nope.csv' (resolved against the config file's folder: '{conf.resolve()}/nope.csv')" in text
    )
    assert not (elsewhere / "o").exists()
