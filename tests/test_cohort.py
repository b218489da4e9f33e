"""Virtual cohorts at scale: reproducibility, exact chunk/first-k/device/Dask invariance,
resume after a kill, clear errors, endpoints and the trial summary.

Exactness: patients are solved in fixed blocks of ``block_size`` (one shared-step ODE each,
block j = patients jB..jB+B-1 whatever n, chunk_size, devices or scheduler), so all the
invariance tests compare bit for bit (``assert_frame_equal`` with ``check_exact=True``).

Speed: one short regimen (2 cycles), blocks of 8 and the same rules/settings everywhere, so the
in-process tests share one compiled round; the 2-device run happens in a subprocess started at
the beginning and collected at the end.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import lenapk
from lenapk import Regimen, SolverError, SolverSettings
from lenapk.population import sample_covariates
from lenapk.summary import clopper_pearson_interval, wilson_interval

C = importlib.import_module("lenapk.cohort")  # the module (lenapk.cohort is the function)

REG = Regimen.cycles(10, n_cycles=2, escalation_mg=5, escalate_every_days=28, max_mg=15, name="test_2c")
N, SEED, B = 24, 7, 8
# 128 steps/day is ample here (about 20 are used) and keeps a failing solve cheap
SETTINGS = SolverSettings(max_steps_per_day=128)


class HoldBelow(lenapk.DoseRules):
    """Test rule: hold the dose on days that start with ANC below a threshold."""

    threshold: float = 1.0

    def init(self, batch_shape):
        return jnp.zeros(batch_shape)

    def step(self, state, day, planned_dose, obs):
        held = (obs["anc"] < self.threshold) & (planned_dose > 0)
        return state, jnp.where(held, 0.0, planned_dose), {"held": held.astype(jnp.float64)}


KW = dict(setting="relapsed", rules=HoldBelow(), block_size=B, settings=SETTINGS, progress=False)


def table(n, seed=SEED, setting="relapsed"):
    """A table of n patients drawn as cohort() draws them (blocks of B: no new eager
    compiles, which cost seconds per new array shape)."""
    parts = [sample_covariates(B, seed, setting=setting, start=s) for s in range(0, n, B)]
    return pd.concat(parts, ignore_index=True).iloc[:n]


def run(n=N, seed=SEED, **kw):
    return lenapk.cohort(REG, n=n, seed=seed, **{**KW, **kw})


def same(a, b):
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_exact=True)


TWO_DEVICE_SCRIPT = textwrap.dedent(
    """
    import importlib, os, sys
    sys.path.insert(0, sys.argv[1])
    import lenapk
    lenapk.set_host_device_count(2)  # with the CPU tuning flags: results must not change
    import jax
    assert jax.local_device_count() == 2, jax.local_devices()
    assert "--xla_cpu_prefer_vector_width=512" in os.environ["XLA_FLAGS"]
    import test_cohort as T
    T.run(chunk_size=16, out=sys.argv[2], collect=False)
    C = importlib.import_module("lenapk.cohort")
    assert [len(k) for k in C._ROUND_FNS] == [2], C._ROUND_FNS  # the sharded round was used
    """
)


@pytest.fixture(scope="module")
def two_device_run(tmp_path_factory):
    """The same cohort with 2 host devices and lenapk's XLA CPU tuning flags, in a subprocess
    started now (runs alongside).  This process keeps the XLA_FLAGS it was given (none in CI), so
    the comparison also checks that the flags do not change results."""
    out = tmp_path_factory.mktemp("two_devices") / "cohort"
    env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen(
        [sys.executable, "-c", TWO_DEVICE_SCRIPT, str(Path(__file__).parent), str(out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    yield proc, out
    if proc.poll() is None:
        proc.kill()


@pytest.fixture(scope="module")
def ref(two_device_run):
    """The reference: N patients in 3 chunks of 8."""
    return run(chunk_size=8)


# ----------------------------------------------------------------------------- reproducibility
def test_same_seed_identical_and_columns(ref):
    same(run(chunk_size=8), ref)
    assert list(ref["patient"]) == list(range(N))
    cycles = [f"{p}_grade_c{c}" for p in ("anc", "plt") for c in (1, 2)]
    ig = [f"{g}_c{c}" for g in ("igg", "igm", "iga") for c in (12, 24)]
    for col in ["crcl", "alc0", "relapsed", "anc_grade", "plt_grade", "anc_nadir", "anc_nadir_day",
                "dose_intensity", "days_held", "best_response", "time_to_response",
                "alc_change_c12", "alc_change_c24", *cycles, *ig]:
        assert col in ref.columns, col
    assert ref[ig + ["alc_change_c12", "alc_change_c24"]].isna().all().all()  # 2-cycle regimen
    assert ref["anc_grade"].between(0, 4).all() and ref["plt_grade"].between(0, 4).all()
    assert (ref["anc_grade"] == ref[["anc_grade_c1", "anc_grade_c2"]].max(axis=1)).all()
    assert (ref["anc_grade"] == lenapk.endpoints.grade(ref["anc_nadir"], lenapk.endpoints.ANC_LIMITS)).all()
    assert ((ref["dose_intensity"] > 0) & (ref["dose_intensity"] <= 1)).all()
    planned = float(np.asarray(REG.doses).sum())
    assert np.allclose(ref["planned_mg"], planned)
    held = ref["days_held"] > 0
    assert held.any(), "the test rule should hold some doses"
    assert (ref.loc[held, "dose_intensity"] < 1).all() and (ref.loc[~held, "dose_intensity"] == 1).all()
    assert (ref["relapsed"] == 1).all()
    other = run(seed=SEED + 1, n=8)
    assert not np.allclose(other["anc_nadir"], ref["anc_nadir"][:8])


def test_chunk_size_does_not_change_results(ref):
    # 5 rounds up to one block; 16 mixes full and partial chunks; 1000 is one padded chunk
    for chunk in (5, 16, 1000):
        same(run(chunk_size=chunk), ref)


def test_first_k_patients_equal_the_k_cohort(ref):
    for k in (1, 13):
        same(run(n=k, chunk_size=16), ref.iloc[:k])


def test_table_of_patients_equals_the_drawn_cohort(ref, tmp_path):
    t = table(N).drop(columns="patient")
    t.insert(0, "patient", [f"P{i:03d}" for i in range(N)])
    kw = {k: v for k, v in KW.items() if k != "setting"}
    got = lenapk.cohort(REG, patients=t, seed=SEED, chunk_size=16, **kw)
    assert list(got["patient"]) == list(t["patient"])
    same(got.drop(columns="patient"), ref.drop(columns="patient"))
    same(lenapk.cohort(REG, patients=t, seed=SEED, chunk_size=16, out=tmp_path / "t", **kw), got)


# ----------------------------------------------------------------------------- resume
def test_resume_after_a_kill_loses_and_duplicates_nothing(ref, tmp_path, monkeypatch):
    out = tmp_path / "cohort"

    def killed_at_chunk_1(index):
        if index == 1:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(C, "_chunk_hook", killed_at_chunk_1)
    with pytest.raises(KeyboardInterrupt):
        run(chunk_size=8, out=out)
    assert sorted(p.name for p in out.glob("chunk-*")) == ["chunk-000000.parquet"]
    first_mtime = (out / "chunk-000000.parquet").stat().st_mtime_ns
    with pytest.raises(ValueError, match="3 chunks missing|2 of 3 chunks missing"):
        C.read_cohort(out)

    computed = []
    original = C._run_chunk
    monkeypatch.setattr(C, "_chunk_hook", lambda index: None)
    monkeypatch.setattr(C, "_run_chunk", lambda spec, i, o: computed.append(i) or original(spec, i, o))
    resumed = run(chunk_size=8, out=out)
    assert computed == [1, 2]
    assert (out / "chunk-000000.parquet").stat().st_mtime_ns == first_mtime
    same(resumed, ref)
    assert sorted(p.name for p in out.iterdir()) == [
        "_cohort.json", "chunk-000000.parquet", "chunk-000001.parquet", "chunk-000002.parquet"
    ]
    computed.clear()
    same(run(chunk_size=8, out=out), ref)  # complete: nothing recomputed
    assert computed == []
    same(C._normalize(pd.read_parquet(out)), ref)  # a plain Parquet dataset, in patient order


def test_resume_refuses_other_arguments(ref, tmp_path):
    out = tmp_path / "cohort"
    run(n=8, chunk_size=8, out=out)
    with pytest.raises(ValueError, match=r"different arguments.*seed: directory has 7, this call has 8"):
        run(n=8, seed=SEED + 1, chunk_size=8, out=out)
    with pytest.raises(ValueError, match=r"different arguments.*\bn: directory has 8, this call has 16"):
        run(n=16, chunk_size=8, out=out)
    with pytest.raises(ValueError, match=r"rules"):
        run(n=8, chunk_size=8, out=out, rules=HoldBelow(threshold=0.5))
    same(run(n=16, chunk_size=8, out=out, overwrite=True), ref.iloc[:16])
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a lenapk cohort dataset"):
        run(n=8, chunk_size=8, out=junk)


# ----------------------------------------------------------------------------- Dask, devices
def test_dask_equals_local(ref, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            same(lenapk.cohort_dask(REG, n=N, seed=SEED, client=client, chunk_size=8, **KW), ref)
            out = tmp_path / "dask"
            same(run(chunk_size=8, scheduler="dask", client=client, out=out), ref)
            assert len(list(out.glob("chunk-*.parquet"))) == 3


def test_two_devices_give_identical_results(ref, two_device_run):
    proc, out = two_device_run
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log
    same(C.read_cohort(out), ref)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.drop(columns="anc0"), r"missing covariate column\(s\) \['anc0'\]"),
        (lambda t: t.assign(crcl=["x"] + [80.0] * (len(t) - 1)), r"patients\.crcl: row 0 must be a finite number"),
        (lambda t: t.assign(plt0=np.r_[150.0, -1.0, [150.0] * (len(t) - 2)]), r"patients\.plt0: row 1 must be > 0"),
        (lambda t: t.assign(del17p=np.r_[0.0, 0.0, 0.5, [0.0] * (len(t) - 3)]), r"patients\.del17p: row 2 must be 0 or 1"),
        (lambda t: t.assign(patient=[1, 2, 2] + list(range(3, len(t)))), r"patients\.patient: duplicate patient id 2"),
        (lambda t: t.iloc[:0], r"patients: the table has no rows"),
    ],
)
def test_bad_patient_tables_name_the_column(change, message):
    with pytest.raises(ValueError, match=message):
        lenapk.cohort(REG, patients=change(table(4)), **KW)


def test_bad_arguments():
    with pytest.raises(ValueError, match="n must be a whole number"):
        lenapk.cohort(REG, n=0, **KW)
    with pytest.raises(ValueError, match="setting must be one of"):
        lenapk.cohort(REG, n=4, **{**KW, "setting": "smouldering"})
    with pytest.raises(ValueError, match=r"n \(5\) differs from the number of patients"):
        lenapk.cohort(REG, n=5, patients=table(4), **KW)
    with pytest.raises(ValueError, match="visits: cycle 2"):
        lenapk.cohort(REG, n=4, visits=[7, 14], **KW)
    with pytest.raises(ValueError, match="scheduler"):
        lenapk.cohort(REG, n=4, scheduler="spark", **KW)


def test_solver_failure_names_the_global_patient(ref):
    """Patient 111 (row 11: chunk 1, block 1) overflows; its block-mates solve fine alone."""
    t = table(16)
    t["patient"] = np.arange(100, 116)
    t.loc[11, "alc0"] = 1.79e308  # the clone overflows float64 within days
    with pytest.raises(SolverError, match=r"patient 111\b.*fails when solved alone"):
        lenapk.cohort(REG, patients=t, seed=SEED, chunk_size=8, **{k: v for k, v in KW.items() if k != "setting"})


# ----------------------------------------------------------------------------- endpoints
def test_endpoint_definitions_on_known_arrays():
    """Grades, nadir, per-cycle grades, holds, response and time to it on hand-made arrays."""
    spec = C._make_spec(REG, 2, 0, None, "untreated", HoldBelow(), None, 8, 8, "daily", C.DEFAULT_MODEL, SETTINGS, True)
    days = REG.n_days + 1
    anc = np.full((2, days), 3.0)
    anc[0, 10], anc[0, 40] = 0.4, 0.9  # G4 in cycle 1, G3 in cycle 2: nadir day 10
    plt = np.full((2, days), 200.0)
    plt[1, 30] = 60.0  # G2 in cycle 2
    alc = np.full((2, days), 40.0)
    alc[0, 20:] = 10.0  # PR from day 20
    alc[1, 5:] = 3.0  # CR from day 5 (ALC < 4, ANC > 1.5, platelets > 100)
    alc[1, 30] = 3.0  # (platelets 60 on day 30: not CR that day, still PR)
    a = {f"obs.{k}": np.full((2, days), 500.0) for k in ("igg", "igm", "iga")}
    a.update({"obs.alc": alc, "obs.anc": anc, "obs.platelets": plt})
    doses = np.tile(np.asarray(REG.doses), (2, 1))
    held = np.zeros_like(doses)
    held[0, [11, 12, 13]] = 1
    doses[0, [11, 12, 13]] = 0
    a.update({"doses": doses, "ok": np.ones_like(doses, bool), "records.held": held})
    df = C._endpoints(spec, table(2), a)
    assert list(df["anc_grade"]) == [4, 0] and list(df["anc_grade_c1"]) == [4, 0] and list(df["anc_grade_c2"]) == [3, 0]
    assert list(df["plt_grade"]) == [0, 2] and list(df["plt_grade_c2"]) == [0, 2]
    assert list(df["anc_nadir"]) == [0.4, 3.0] and list(df["anc_nadir_day"]) == [10, 1]
    assert list(df["days_held"]) == [3, 0] and list(df["last_dose_mg"]) == [15.0, 15.0]
    np.testing.assert_allclose(df["dose_intensity"], [1 - 30.0 / doses[1].sum(), 1.0])
    assert list(df["best_response"].astype(str)) == ["PR", "CR"]
    assert list(df["time_to_response"]) == [20.0, 5.0] and list(df["time_to_best_response"]) == [20.0, 5.0]


def test_cycle_12_and_24_columns_on_a_long_regimen():
    long = Regimen.cycles(10, n_cycles=13)
    spec = C._make_spec(long, 1, 0, None, "untreated", None, None, 8, 8, "protocol", C.DEFAULT_MODEL, SETTINGS, True)
    days = long.n_days + 1
    a = {f"obs.{k}": np.linspace(100.0, 50.0, days)[None] for k in C.LAB_OBSERVABLES}
    a.update({"doses": np.asarray(long.doses)[None], "ok": np.ones((1, days - 1), bool)})
    df = C._endpoints(spec, table(1), a)
    d12 = 12 * 28
    assert df["igg_c12"][0] == pytest.approx(100.0 - 50.0 * d12 / (days - 1))
    assert df["alc_change_c12"][0] == pytest.approx(-50.0 * d12 / (days - 1))
    assert np.isnan(df["igg_c24"][0]) and np.isnan(df["alc_change_c24"][0])
    assert [c for c in df.columns if c.startswith("anc_grade_c")] == [f"anc_grade_c{c}" for c in range(1, 14)]
    assert df["days_held"][0] == 0  # no rules


# ----------------------------------------------------------------------------- summary
def test_interval_formulas():
    lo, hi = wilson_interval(5, 20)
    assert (round(lo, 4), round(hi, 4)) == (0.1119, 0.4687)
    lo, hi = clopper_pearson_interval(5, 20)
    assert (round(lo, 4), round(hi, 4)) == (0.0866, 0.4910)
    assert clopper_pearson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0 and wilson_interval(0, 10)[0] == 0.0


def test_trial_summary(ref):
    s = lenapk.trial_summary(ref)
    assert {"endpoint", "statistic", "n", "events", "estimate", "ci_low", "ci_high", "method"} <= set(s.columns)
    rates = s[s["statistic"] == "rate"]
    assert (rates["method"] == "Wilson score").all()
    assert ((rates["ci_low"] <= rates["estimate"]) & (rates["estimate"] <= rates["ci_high"])).all()
    g3 = rates.set_index("endpoint").loc["ANC grade >= 3"]
    assert g3["events"] == (ref["anc_grade"] >= 3).sum() and g3["n"] == N
    assert "ANC grade >= 3, cycle 2" in set(rates["endpoint"])
    means = s[s["statistic"] == "mean"].set_index("column")
    assert means.loc["anc_nadir", "estimate"] == pytest.approx(ref["anc_nadir"].mean())
    assert means.loc["anc_nadir", "ci_low"] < means.loc["anc_nadir", "estimate"] < means.loc["anc_nadir", "ci_high"]
    assert means.loc["igg_c12", "n"] == 0 and np.isnan(means.loc["igg_c12", "estimate"])
    cp = lenapk.trial_summary(ref, method="clopper-pearson")
    assert (cp[cp["statistic"] == "rate"]["ci_low"] <= rates["ci_low"].to_numpy() + 1e-12).all()
    with pytest.raises(ValueError, match="lacks the column"):
        lenapk.trial_summary(ref.drop(columns="anc_grade"))


def test_set_host_device_count_gives_jax_that_many_cpu_devices():
    import subprocess
    import sys

    code = (
        "import lenapk, jax; n = lenapk.set_host_device_count(3); "
        "print(n, jax.device_count(), jax.devices()[0].platform)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["3", "3", "cpu"]
    with pytest.raises(ValueError, match="positive integer"):
        lenapk.set_host_device_count(0)


@pytest.mark.parametrize("version, minor", [("0.10.2", (0, 10)), ("0.10.2.dev20260101", (0, 10)), ("0.11.0", (0, 11)), ("1", None)])
def test_jaxlib_minor_parses_versions(monkeypatch, version, minor):
    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "version", lambda name: version)
    assert importlib.import_module("lenapk.cohort")._jaxlib_minor() == minor


def test_set_host_device_count_flags(monkeypatch):
    cohort_module = importlib.import_module("lenapk.cohort")  # lenapk.cohort is the function

    monkeypatch.setattr(cohort_module, "_jaxlib_minor", lambda: (0, 10))
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=7 --xla_dump_to=x")
    lenapk.set_host_device_count(2)
    assert os.environ["XLA_FLAGS"].split() == [
        "--xla_dump_to=x", "--xla_force_host_platform_device_count=2",
        "--xla_cpu_prefer_vector_width=512", "--xla_cpu_use_fusion_emitters=false",
    ]
    # the user's own value stays; a jaxlib the flag was not measured on does not get it
    monkeypatch.setattr(cohort_module, "_jaxlib_minor", lambda: (0, 11))
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_prefer_vector_width=256")
    lenapk.set_host_device_count(1)
    assert os.environ["XLA_FLAGS"].split() == ["--xla_cpu_prefer_vector_width=256", "--xla_force_host_platform_device_count=1"]
    monkeypatch.setenv("XLA_FLAGS", "")
    lenapk.set_host_device_count(1, tune=False)
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=1"
