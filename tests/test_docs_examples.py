"""Documentation and examples never rot: docs/model.md is what the code renders, examples run.

(examples/compare_schedules.py runs in tests/test_schedules.py.)
"""

import argparse
import hashlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import lenapk
from lenapk.models.cll._calibration import BOUNDS
from lenapk.models.cll._docs import render

ROOT = Path(__file__).resolve().parents[1]


def _run_example(name: str, *args, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    res = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_model_doc_generated_from_code():
    on_disk = (ROOT / "docs" / "model.md").read_text()
    rendered = render(ROOT / "docs" / "calibration.md")
    assert on_disk == rendered, "docs/model.md is stale: run `python -m lenapk.docs` from the repository root"


def test_model_doc_reflects_the_declarations():
    """The rendered document carries the model's declarations (it can drift only with them)."""
    text = render(ROOT / "docs" / "calibration.md")
    model = lenapk.LenalidomideCLL()
    for spec in model.parameter_specs:
        assert f"`{spec.name}`" in text or f"| {spec.name} |" in text, spec.name
    for obs in model.observable_specs:
        assert obs.name in text, obs.name


def test_quickstart_example_runs(tmp_path):
    res = _run_example("quickstart.py", "--out", tmp_path, "--cycles", "2")
    regimens = lenapk.load_regimens()
    assert res.stdout.count("ANC nadir") == len(regimens) == 6  # every bundled regimen
    table = pd.read_csv(tmp_path / "trajectories.csv")
    assert list(table.columns[:3]) == ["regimen_id", "day", "dose_mg"]
    rows = sum(2 * reg.cycle_days + 1 for reg in regimens.values())  # 2 cycles each (28 or 42 days)
    assert len(table) == rows and {"anc", "alc", "igg", "igm", "flare_hazard"} <= set(table.columns)
    assert (tmp_path / "trajectories.png").stat().st_size > 10_000


@pytest.mark.slow  # about 35 s: a fresh process compiles every step
def test_second_model_example_runs(tmp_path):
    """The second model end to end (simulate, cohort with a hold rule, fit to synthetic summaries,
    comparison), with nothing of the flagship model in its output."""
    res = _run_example("second_model.py", "--quick", "--out", tmp_path)
    out = res.stdout
    for needle in (
        "1. typical patient",
        "2. virtual cohort",
        "3. fit of ic50 and kout",
        "SYNTHETIC data",
        "4. comparison of two regimens",
        "100 mg q12h",
        "200 mg q24h",
    ):
        assert needle in out, needle
    assert not re.search(r"\b(cll|lenalidomide|anc|alc|platelets|igg)\b", out, re.IGNORECASE), out
    sim = pd.read_csv(tmp_path / "simulation.csv")
    assert list(sim.columns[:4]) == ["hour", "dose_mg", "conc_ng_ml", "biomarker"]
    assert set(sim["regimen"]) == {"100 mg oral q12h", "200 mg IV over 1 h q24h"}
    cohort = pd.read_csv(tmp_path / "cohort.csv")
    assert len(cohort) == 8 and (cohort["days_held"] > 0).any()
    est = pd.read_csv(tmp_path / "fit_estimates.csv").set_index("parameter")
    assert list(est.index) == ["ic50", "kout"]
    # synthetic data at the model's defaults (ic50 400 ng/mL, kout 0.05 1/h); the fit starts at x2, /2
    assert est.loc["ic50", "start"] == pytest.approx(800.0)
    assert est.loc["kout", "start"] == pytest.approx(0.025)
    assert est.loc["ic50", "estimate"] == pytest.approx(400.0, rel=0.05)
    assert est.loc["kout", "estimate"] == pytest.approx(0.05, rel=0.05)
    table = pd.read_csv(tmp_path / "comparison.csv")
    assert list(table["regimen"]) == ["100 mg q12h", "200 mg q24h"]
    assert {"g3_suppression", "biomarker_change_c1"} <= set(table.columns)
    for name in ("simulation.png", "comparison.png"):
        assert (tmp_path / name).stat().st_size > 10_000, name


def test_calibrate_starts_from_start_with_kill_fixed_at_its_bound():
    """kill is fixed (not free) at the upper bound of its calibration range, where the fits that
    freed it ended; START puts ec50_act at its upper bound and every other free parameter at its
    pre-calibration value."""
    spec = importlib.util.spec_from_file_location("calibrate_example", ROOT / "examples" / "calibrate.py")
    calibrate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(calibrate)
    model = lenapk.LenalidomideCLL()
    assert "kill" not in calibrate.FREE and "kill" in calibrate.FIXED
    p = calibrate.calibration_start(model)
    assert p["kill"] == BOUNDS["kill"][1] == 0.2
    assert p["ec50_act"] == BOUNDS["ec50_act"][1] == 1000.0
    assert all(p[f] == calibrate.START[f] for f in calibrate.FREE)
    assert set(calibrate.FREE) <= set(calibrate.START)


@pytest.mark.slow  # about a minute
def test_calibrate_quick_runs_and_writes_nothing_into_docs(tmp_path, capsys, monkeypatch):
    """Run in this process (so that the report text of the full mode is rendered and checked too,
    without the 9-minute fits that would write it)."""
    before = _snapshot(ROOT / "docs")
    spec = importlib.util.spec_from_file_location("calibrate_example", ROOT / "examples" / "calibrate.py")
    calibrate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(calibrate)
    monkeypatch.chdir(tmp_path)
    res = calibrate.main(["--quick"])
    out = capsys.readouterr().out
    assert "PARAMETER_SPECS values" in out and "largest relative error of the Ig means" in out
    assert "wrote" not in out
    assert _snapshot(ROOT / "docs") == before, "calibrate.py --quick changed docs/"
    assert not any(tmp_path.iterdir())
    assert list(res.estimates["parameter"]) == list(calibrate.FREE) and len(res.free) == len(calibrate.FREE)
    # the full mode's report: header (method, data, run) and the result's tables
    args = argparse.Namespace(part="joint", n_patients=8, seed=0)
    text = calibrate._header(args, res, lenapk.load_observations(), 12.0, 34.0) + res.to_markdown()
    for needle in (
        "# Calibration of the lenalidomide-CLL model",
        "`kill`",
        "seeds 0 to\n  4",
        "IgG 30%",
        "12 s wall clock",
        "## Estimates",
    ):
        assert needle in text, needle
