"""Virtual cohorts at scale: reproducibility, exact chunk/first-k/device/Dask invariance,
resume after a kill, clear errors, per-patient regimens, endpoints and the trial summary.

Exactness: patients are solved in fixed blocks of ``block_size`` (one shared-step ODE each,
block j = patients jB..jB+B-1 whatever n, chunk_size, devices or scheduler), so all the
invariance tests compare bit for bit (``assert_frame_equal`` with ``check_exact=True``).

Speed: one short regimen (2 cycles), blocks of 8 and the same rules/settings everywhere, so the
in-process tests share one compiled round; the run on another device count happens in a
subprocess started at the beginning and collected at the end.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import lenapk
from lenapk import Regimen, SolverError, SolverSettings
from lenapk.endpoints import (
    Assessment,
    clopper_pearson_interval,
    patient_table,
    wilson_interval,
)
from lenapk.models.cll import ANC, ENDPOINTS
from lenapk.population import sample_covariates
from lenapk.rules import DoseModificationRules, LabVisits

RUN = importlib.import_module("lenapk.cohorts._run")  # the chunk loop (lenapk.cohort is the function)
LOCAL = importlib.import_module("lenapk.cohorts._local")  # the local scheduler (chunks in flight)
ENGINE = importlib.import_module("lenapk.cohorts._engine")  # the compiled rounds
PLATFORM = importlib.import_module("lenapk.cohorts._platform")

MODEL = lenapk.LenalidomideCLL()
REG = Regimen.cycles(10, n_cycles=2, escalation_mg=5, escalate_every_days=28, max_mg=15, name="test_2c")
N, SEED, B = 24, 7, 8
# 128 steps per segment is ample here (about 20 are used) and keeps a failing solve cheap
SETTINGS = SolverSettings(max_steps=128)
ANC_LIMITS = (2.0, 1.5, 1.0, 0.5)  # CTCAE v5 lower limits of ANC grades 1..4 (x10^9/L)


class HoldBelow(lenapk.AbstractDoseRules):
    """Test rule: hold the dose on days that start with ANC below a threshold."""

    threshold: float = 1.0

    @property
    def observables_read(self):
        return ("anc",)

    def init(self, batch_shape):
        return jnp.zeros(batch_shape)

    def step(self, state, day, planned_dose, obs):
        held = (obs["anc"] < self.threshold) & (planned_dose > 0)
        return state, jnp.where(held, 0.0, planned_dose), {"held": held.astype(jnp.float64)}


KW = dict(setting="relapsed", rules=HoldBelow(), block_size=B, settings=SETTINGS, progress=False)
KW_TABLE = {k: v for k, v in KW.items() if k != "setting"}


def table(n, seed=SEED, setting="relapsed"):
    """A table of n patients drawn as cohort() draws them (blocks of B: no new eager
    compiles, which cost seconds per new array shape)."""
    parts = [sample_covariates(MODEL, B, seed, setting=setting, start=s) for s in range(0, n, B)]
    return pd.concat(parts, ignore_index=True).iloc[:n]


def run(n=N, seed=SEED, **kw):
    return lenapk.cohort(REG, n=n, seed=seed, **{**KW, **kw})


def same(a, b):
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_exact=True)


def close(got, expected, rtol=1e-5):
    """Frames equal column by column: floats to ``rtol``, everything else exactly.  Probabilities
    of a measured grade also to ``40 rtol`` absolute: a relative change ``d`` of the counts moves
    each visit's ``Phi(log(x / c) / s)`` by up to ``d / (s sqrt(2 pi))``, 4 d for the platelets'
    s = 0.1, so 40 d allows about ten visits near the threshold."""
    assert list(got.columns) == list(expected.columns)
    for c in got.columns:
        g, e = got[c].reset_index(drop=True), expected[c].reset_index(drop=True)
        if pd.api.types.is_float_dtype(g):
            measured = "_p_severe" in c
            tol = dict(rtol=rtol, atol=40 * rtol) if measured else dict(rtol=rtol, atol=1e-9)
            np.testing.assert_allclose(g, e, **tol, equal_nan=True, err_msg=c)
        else:
            assert list(g.astype(str)) == list(e.astype(str)), c


OTHER_DEVICES_SCRIPT = textwrap.dedent(
    """
    import importlib, os, sys
    sys.path.insert(0, sys.argv[1])
    import lenapk
    import jax
    k = int(sys.argv[3])
    assert jax.local_device_count() == k, jax.local_devices()
    assert "--xla_cpu_prefer_vector_width" not in os.environ["XLA_FLAGS"]  # untuned (LENAPK_CPU_SETUP=0)
    import test_cohort as T
    T.run(chunk_size=16, out=sys.argv[2], collect=False)
    E = importlib.import_module("lenapk.cohorts._engine")
    assert [len(key[0]) for key in E._ROUND_FNS] == [k], E._ROUND_FNS  # the sharded round was used
    """
)


@pytest.fixture(scope="module")
def other_devices_run(tmp_path_factory):
    """The same cohort on another number of host devices (3, or 2 if this process has 3) and
    without lenapk's XLA CPU tuning flags, in a subprocess started now (runs alongside).  This
    process has what ``import lenapk`` gave it (one device per core, tuned), so the comparison
    also checks that neither the device count nor the flags change results."""
    import jax

    k = 2 if jax.local_device_count() == 3 else 3
    out = tmp_path_factory.mktemp("other_devices") / "cohort"
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={k}",
        "LENAPK_CPU_SETUP": "0",
        "JAX_PLATFORMS": "cpu",
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", OTHER_DEVICES_SCRIPT, str(Path(__file__).parent), str(out), str(k)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    yield proc, out
    if proc.poll() is None:
        proc.kill()


@pytest.fixture(scope="module")
def ref(other_devices_run):
    """The reference: N patients in 3 chunks of 8."""
    return run(chunk_size=8)


# ----------------------------------------------------------------------------- reproducibility
def test_same_seed_identical_and_columns(ref):
    same(run(chunk_size=8), ref)
    assert list(ref["patient"]) == list(range(N))
    cycles = [f"{p}_grade_c{c}" for p in ("anc", "plt") for c in (1, 2)]
    ig = [f"{g}_c{c}" for g in ("igg", "igm", "iga") for c in (12, 24)]
    for col in [
        "crcl",
        "alc0",
        "relapsed",
        "anc_grade",
        "plt_grade",
        "anc_nadir",
        "anc_nadir_day",
        "dose_intensity",
        "days_held",
        "best_response",
        "time_to_response",
        "alc_change_c12",
        "alc_change_c24",
        *cycles,
        *ig,
    ]:
        assert col in ref.columns, col
    assert ref[ig + ["alc_change_c12", "alc_change_c24"]].isna().all().all()  # 2-cycle regimen
    assert ref["anc_grade"].between(0, 4).all() and ref["plt_grade"].between(0, 4).all()
    assert (ref["anc_grade"] == ref[["anc_grade_c1", "anc_grade_c2"]].max(axis=1)).all()
    # the grade of the nadir, counted by hand from the CTCAE limits (and by the package's scale)
    by_hand = (ref["anc_nadir"].to_numpy()[:, None] < np.array(ANC_LIMITS)).sum(axis=1)
    assert (ref["anc_grade"].to_numpy() == by_hand).all()
    assert (ref["anc_grade"].to_numpy() == np.asarray(ANC.grade(ref["anc_nadir"].to_numpy()))).all()
    assert ((ref["dose_intensity"] > 0) & (ref["dose_intensity"] <= 1)).all()
    planned = 28 * 10.0 + 28 * 15.0  # cycle 1 at 10 mg, cycle 2 at 15 mg, every day
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
    got = lenapk.cohort(REG, patients=t, seed=SEED, chunk_size=16, **KW_TABLE)
    assert list(got["patient"]) == list(t["patient"])
    same(got.drop(columns="patient"), ref.drop(columns="patient"))
    same(lenapk.cohort(REG, patients=t, seed=SEED, chunk_size=16, out=tmp_path / "t", **KW_TABLE), got)


# ----------------------------------------------------------------------------- resume
def test_resume_after_a_kill_loses_and_duplicates_nothing(ref, tmp_path, monkeypatch):
    out = tmp_path / "cohort"

    def killed_at_chunk_1(index):
        if index == 1:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(RUN, "_chunk_hook", killed_at_chunk_1)
    with pytest.raises(KeyboardInterrupt):
        run(chunk_size=8, out=out)
    assert sorted(p.name for p in out.glob("chunk-*")) == ["chunk-000000.parquet"]
    first_mtime = (out / "chunk-000000.parquet").stat().st_mtime_ns
    with pytest.raises(ValueError, match="2 of 3 chunks missing"):
        lenapk.read_cohort(out)

    computed = []
    original = RUN.run_chunk
    monkeypatch.setattr(RUN, "_chunk_hook", lambda index: None)
    monkeypatch.setattr(RUN, "run_chunk", lambda spec, i, o: computed.append(i) or original(spec, i, o))
    resumed = run(chunk_size=8, out=out)
    assert computed == [1, 2]
    assert (out / "chunk-000000.parquet").stat().st_mtime_ns == first_mtime
    same(resumed, ref)
    assert sorted(p.name for p in out.iterdir()) == [
        lenapk.cohorts.MANIFEST,
        "chunk-000000.parquet",
        "chunk-000001.parquet",
        "chunk-000002.parquet",
    ]
    computed.clear()
    same(run(chunk_size=8, out=out), ref)  # complete: nothing recomputed
    assert computed == []
    # a plain Parquet dataset, in patient order
    plain = pd.read_parquet(out)
    plain["best_response"] = plain["best_response"].astype(str).astype(ref["best_response"].dtype)
    same(plain, ref)


def test_chunks_in_flight_at_once_give_identical_results(ref, tmp_path, monkeypatch):
    """The accelerator path (several chunks in flight on threads, endpoint tables on the host),
    forced on the CPU: the same rows in patient order, in memory and in a resumable dataset."""
    monkeypatch.setenv(LOCAL.CHUNKS_ENV, "3")
    threads = {}
    original = RUN.run_chunk
    monkeypatch.setattr(
        RUN, "run_chunk", lambda spec, i, o: threads.setdefault(i, threading.current_thread()) and original(spec, i, o)
    )
    same(run(chunk_size=8), ref)
    main = threading.main_thread()
    assert sorted(threads) == [0, 1, 2] and threads[0] is main  # the first chunk alone (compiles once)
    assert threads[1] is not main and threads[2] is not main
    same(run(chunk_size=8, out=tmp_path / "threads"), ref)


def test_an_error_in_a_chunk_in_flight_reaches_the_caller_and_resume_completes(ref, tmp_path, monkeypatch):
    monkeypatch.setenv(LOCAL.CHUNKS_ENV, "2")
    out = tmp_path / "cohort"

    def fails_at_chunk_2(index):
        if index == 2:
            raise RuntimeError("chunk 2 failed")

    monkeypatch.setattr(RUN, "_chunk_hook", fails_at_chunk_2)
    with pytest.raises(RuntimeError, match="chunk 2 failed"):
        run(chunk_size=8, out=out)
    assert "chunk-000002.parquet" not in {p.name for p in out.iterdir()}
    monkeypatch.setattr(RUN, "_chunk_hook", lambda index: None)
    same(run(chunk_size=8, out=out), ref)


@pytest.mark.parametrize("bad", ["0", "two", "-1"])
def test_chunks_in_flight_variable_is_checked(bad, monkeypatch):
    monkeypatch.setenv(LOCAL.CHUNKS_ENV, bad)
    with pytest.raises(ValueError, match=f"LENAPK_CHUNKS_IN_FLIGHT must be a whole number >= 1, got '{bad}'"):
        run(n=8, chunk_size=8)


def test_resume_refuses_other_arguments(ref, tmp_path):
    out = tmp_path / "cohort"
    run(n=8, chunk_size=8, out=out)
    with pytest.raises(ValueError, match=r"different arguments.*seed: directory has 7, this call has 8"):
        run(n=8, seed=SEED + 1, chunk_size=8, out=out)
    with pytest.raises(ValueError, match=r"different arguments.*\bn: directory has 8, this call has 16"):
        run(n=16, chunk_size=8, out=out)
    with pytest.raises(ValueError, match=r"rules"):
        run(n=8, chunk_size=8, out=out, rules=HoldBelow(threshold=0.5))
    clock = r"settings.clock: directory has \{'linear_h': 1.5, 'max_step_h': 3.0, 'tau_h': 0.05\}, this call has None"
    with pytest.raises(ValueError, match=clock):
        run(n=8, chunk_size=8, out=out, settings=lenapk.SolverSettings(clock=None))  # another solve
    with pytest.raises(ValueError, match=r"settings.error_norm: directory has 'rms', this call has 'max'"):
        run(n=8, chunk_size=8, out=out, settings=lenapk.SolverSettings(max_steps=128, error_norm="max"))
    same(run(n=16, chunk_size=8, out=out, overwrite=True), ref.iloc[:16])
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a lenapk cohort dataset"):
        run(n=8, chunk_size=8, out=junk)


# ----------------------------------------------------------------------------- Dask, devices
def test_dask_equals_local(ref, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None
    ) as cluster:
        with distributed.Client(cluster) as client:
            same(lenapk.cohort_dask(REG, n=N, seed=SEED, client=client, chunk_size=8, **KW), ref)
            out = tmp_path / "dask"
            same(run(chunk_size=8, scheduler="dask", client=client, out=out), ref)
            assert len(list(out.glob("chunk-*.parquet"))) == 3


def test_other_device_counts_give_identical_results(ref, other_devices_run):
    proc, out = other_devices_run
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log
    same(lenapk.read_cohort(out), ref)


# ----------------------------------------------------------------------------- per-patient regimens
AMOUNTS = (5.0, 10.0, 15.0)


def _daily(amount):
    return Regimen.cycles(
        amount, n_cycles=2, escalation_mg=5, escalate_every_days=28, max_mg=amount + 5, name=f"{amount:g} mg"
    )


def test_per_patient_daily_regimens_equal_each_regimen_alone(monkeypatch):
    """Different amounts, the same dose days: one batched ODE per block with per-patient amounts.
    Each patient equals the cohort of its own regimen (same global rows: same covariates and
    random effects) to the solver's tolerance (the shared step depends on the block-mates)."""
    n = 16
    t = table(n)
    regs = [_daily(AMOUNTS[i % 3]) for i in range(n)]
    with monkeypatch.context() as m:  # an empty cache: the rounds this run compiles
        m.setattr(ENGINE, "_ROUND_FNS", {})
        got = lenapk.cohort(regs, patients=t, seed=SEED, chunk_size=16, **KW_TABLE)
        assert [k[2:] for k in ENGINE._ROUND_FNS] == [(True, False)]  # per-patient plans, one batched ODE
    assert list(got["patient"]) == list(t["patient"])
    for k, amount in enumerate(AMOUNTS):
        alone = lenapk.cohort(_daily(amount), patients=t, seed=SEED, chunk_size=16, **KW_TABLE)
        rows = np.arange(k, n, 3)
        close(got.iloc[rows], alone.iloc[rows])
        # planned totals: 28 days at the amount, 28 at the escalated amount
        np.testing.assert_allclose(got["planned_mg"].iloc[rows], 28 * amount + 28 * (amount + 5), rtol=1e-12)
    # (iii) planned = the sum of each regimen's dose events; delivered = planned unless held
    np.testing.assert_allclose(got["planned_mg"], [float(np.sum(r.amount_mg)) for r in regs], rtol=1e-12)
    free = got["days_held"] == 0
    assert free.any() and (~free).any()
    np.testing.assert_allclose(got.loc[free, "delivered_mg"], got.loc[free, "planned_mg"], rtol=1e-12)
    assert (got.loc[~free, "delivered_mg"] < got.loc[~free, "planned_mg"]).all()
    assert len(set(got["planned_mg"])) == 3  # the regimens differ


def _event_table(ids):
    """A NONMEM table: each ID doses twice a day on days 0..9 at its own clock times and amount
    (written out row by row, or as one record per clock time with ADDL/II)."""
    rows = [dict(ID=ids[0], TIME=0.0, AMT=0.0, EVID=0, CMT=2, ADDL=0, II=0.0)]  # an observation: ignored
    for k, pid in enumerate(ids):
        patterns = [((8.0, 20.0), 5.0), ((6.0, 18.0), 2.5), ((4.0, 16.0), 7.5), ((10.0, 14.0), 5.0)]
        hours, amount = patterns[k % 4]
        if k % 2:
            rows += [dict(ID=pid, TIME=h, AMT=amount, EVID=1, CMT=1, ADDL=9, II=24.0) for h in hours]
        else:
            rows += [
                dict(ID=pid, TIME=24.0 * d + h, AMT=amount, EVID=1, CMT=1, ADDL=0, II=0.0)
                for d in range(10)
                for h in hours
            ]
    return pd.DataFrame(rows)


def test_per_patient_event_table_regimens_match_simulate(monkeypatch):
    """Regimens from a NONMEM table with doses at different clock times (different segments:
    solved per patient with vmap) against lenapk.simulate of each patient with that patient's
    parameters (typical values and its covariates: variability=False)."""
    ids = list(range(101, 101 + B))
    regs = lenapk.read_event_table(_event_table(ids), n_days=14)
    assert list(regs) == ids
    t = table(B)
    t["patient"] = ids
    with monkeypatch.context() as m:  # an empty cache: the rounds this run compiles
        m.setattr(ENGINE, "_ROUND_FNS", {})
        got = lenapk.cohort(regs, patients=t.iloc[::-1], seed=SEED, variability=False, **KW_TABLE)
        assert [k[2:] for k in ENGINE._ROUND_FNS] == [(True, True)]  # per-patient plans, vmapped
    got = got.set_index("patient")
    assert list(got.index) == ids[::-1]
    typical = MODEL.default_params()
    for _, row in t.iterrows():
        pid = int(row["patient"])
        params = typical.replace(**{c: float(row[c]) for c in MODEL.covariate_names})
        sim = lenapk.simulate(regs[pid], params, rules=HoldBelow())
        assert len(sim) == 15
        on = sim.iloc[1:]  # the on-treatment visits: days 1..14
        g = got.loc[pid]
        i = int(np.argmin(on["anc"].to_numpy()))
        np.testing.assert_allclose(g["anc_nadir"], on["anc"].iloc[i], rtol=1e-5, err_msg=str(pid))
        assert g["anc_nadir_day"] == on["day"].iloc[i]
        np.testing.assert_allclose(g["plt_nadir"], on["platelets"].min(), rtol=1e-5, err_msg=str(pid))
        assert g["anc_grade"] == (on["anc"].min() < np.array(ANC_LIMITS)).sum()
        assert g["days_held"] == sim["held"].sum()
        np.testing.assert_allclose(g["delivered_mg"], sim["dose_mg"].sum(), rtol=1e-12)
        # (iii) planned: every event of the table for that ID
        np.testing.assert_allclose(g["planned_mg"], float(np.sum(regs[pid].amount_mg)), rtol=1e-12)
    planned_by_hand = {0: 100.0, 1: 50.0, 2: 150.0, 3: 100.0}  # 10 days of 2 x 5, 2.5, 7.5 and 5 mg
    np.testing.assert_allclose(got.loc[ids, "planned_mg"], [planned_by_hand[k % 4] for k in range(B)])
    assert (got["days_held"] > 0).any() and (got["days_held"] == 0).any()


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.drop(columns="anc0"), r"missing covariate column\(s\) \['anc0'\]"),
        (lambda t: t.assign(crcl=["x"] + [80.0] * (len(t) - 1)), r"patients\.crcl: row 0 must be a finite number"),
        (lambda t: t.assign(plt0=np.r_[150.0, -1.0, [150.0] * (len(t) - 2)]), r"patients\.plt0: row 1 must be > 0"),
        (
            lambda t: t.assign(del17p=np.r_[0.0, 0.0, 0.5, [0.0] * (len(t) - 3)]),
            r"patients\.del17p: row 2 must be 0 or 1",
        ),
        (lambda t: t.assign(patient=[1, 2, 2] + list(range(3, len(t)))), r"patients\.patient: duplicate patient id 2"),
        (lambda t: t.iloc[:0], r"patients: the table has no rows"),
    ],
)
def test_bad_patient_tables_name_the_column(change, message):
    with pytest.raises(ValueError, match=message):
        lenapk.cohort(REG, patients=change(table(4)), **KW_TABLE)


def test_bad_arguments():
    with pytest.raises(ValueError, match="n must be a whole number"):
        lenapk.cohort(REG, n=0, **KW)
    with pytest.raises(ValueError, match="setting must be one of"):
        lenapk.cohort(REG, n=4, **{**KW, "setting": "smouldering"})
    with pytest.raises(ValueError, match=r"n \(5\) differs from the number of patients"):
        lenapk.cohort(REG, n=5, patients=table(4), **KW_TABLE)
    with pytest.raises(ValueError, match="visits: cycle 2"):
        lenapk.cohort(REG, n=4, visits=[7, 14], **KW)
    with pytest.raises(ValueError, match="scheduler"):
        lenapk.cohort(REG, n=4, scheduler="spark", **KW)
    # per-patient regimens: one per patient
    with pytest.raises(ValueError, match=r"3 regimens for 4 patients"):
        lenapk.cohort([REG] * 3, patients=table(4), **KW_TABLE)
    with pytest.raises(ValueError, match=r"no regimen for patient\(s\) \[3\]"):
        lenapk.cohort({i: REG for i in range(3)}, patients=table(4), **KW_TABLE)


def test_rules_reading_observables_the_model_lacks_are_refused():
    """The rule's observables are checked against the model's before anything is solved."""
    turnover = importlib.import_module("lenapk.models.turnover").TwoCompartmentTurnover()
    with pytest.raises(
        ValueError,
        match=r"rules HoldBelow reads the observable\(s\) \['anc'\].*"
        r"TwoCompartmentTurnover.*'biomarker'",
    ):
        lenapk.cohort(REG, n=4, model=turnover, **{**KW, "setting": None})
    made_up = DoseModificationRules(hold_below={"anc": 1.0, "tumour_marker": 5.0}, dose_levels=(5.0, 10.0))
    with pytest.raises(ValueError, match=r"reads the observable\(s\) \['tumour_marker'\].*LenalidomideCLL"):
        lenapk.cohort(REG, n=4, **{**KW, "rules": made_up})


def test_solver_failure_names_the_global_patient(ref):
    """Patient 111 (row 11: chunk 1, block 1) overflows; its block-mates solve fine alone."""
    t = table(16)
    t["patient"] = np.arange(100, 116)
    t.loc[11, "alc0"] = 1.79e308  # the clone overflows float64 within days
    with pytest.raises(SolverError, match=r"patient 111\b.*fails when solved alone"):
        lenapk.cohort(REG, patients=t, seed=SEED, chunk_size=8, **KW_TABLE)


# ----------------------------------------------------------------------------- endpoints
def test_endpoint_definitions_on_known_arrays():
    """Grades, nadir, per-cycle grades, holds, response and time to it on hand-made arrays."""
    days = REG.n_days + 1
    anc = np.full((2, days), 3.0)
    anc[0, 10], anc[0, 40] = 0.4, 0.9  # G4 in cycle 1, G3 in cycle 2: nadir day 10
    plt = np.full((2, days), 200.0)
    plt[1, 30] = 60.0  # G2 in cycle 2
    alc = np.full((2, days), 40.0)
    alc[0, 20:] = 10.0  # PR from day 20
    alc[1, 5:] = 3.0  # CR from day 5 (ALC < 4, ANC > 1.5, platelets > 100)
    alc[1, 30] = 3.0  # (platelets 60 on day 30: not CR that day, still PR)
    daily = {k: np.full((2, days), 500.0) for k in ("igg", "igm", "iga")}
    hazard = np.outer([0.0, 0.1], np.arange(days))  # cumulative flare hazard: none, 0.1 per day
    nodes = np.ones((2, days))  # node burden relative to baseline: halved with the blood PR, gone with the CR
    nodes[0, 20:], nodes[1, 5:] = 0.4, 0.05
    daily.update({"alc": alc, "anc": anc, "platelets": plt, "flare_hazard": hazard, "nodes": nodes})
    planned = np.asarray(REG.doses)
    doses = np.tile(planned, (2, 1))
    held = np.zeros_like(doses)
    held[0, [11, 12, 13]] = 1
    doses[0, [11, 12, 13]] = 0
    cov = table(2)
    visits = np.arange(1, days)  # daily on-treatment visits
    df = patient_table(
        ENDPOINTS,
        [0, 1],
        cov[list(MODEL.covariate_names)],
        Assessment(daily, visits, 28),
        doses,
        planned,
        {"held": held},
        True,
    )
    assert list(df["anc_grade"]) == [4, 0] and list(df["anc_grade_c1"]) == [4, 0]
    assert list(df["anc_grade_c2"]) == [3, 0]
    assert list(df["plt_grade"]) == [0, 2] and list(df["plt_grade_c2"]) == [0, 2]
    assert list(df["anc_nadir"]) == [0.4, 3.0] and list(df["anc_nadir_day"]) == [10, 1]
    assert list(df["days_held"]) == [3, 0] and list(df["last_dose_mg"]) == [15.0, 15.0]
    np.testing.assert_allclose(df["dose_intensity"], [1 - 30.0 / doses[1].sum(), 1.0])
    assert list(df["best_response"].astype(str)) == ["PR", "CR"]
    assert list(df["time_to_response"]) == [20.0, 5.0] and list(df["time_to_best_response"]) == [20.0, 5.0]
    # flare: 1 - exp(-H) by the end of cycle 1 (day 28) and of the regimen (day days - 1)
    np.testing.assert_allclose(df["flare_probability_c1"], [0.0, 1 - np.exp(-2.8)], rtol=1e-12)
    np.testing.assert_allclose(df["flare_probability"], [0.0, 1 - np.exp(-0.1 * (days - 1))], rtol=1e-12)
    # without a 'held' record, days held are planned-dose days with nothing given
    df2 = patient_table(
        ENDPOINTS, [0, 1], cov[list(MODEL.covariate_names)], Assessment(daily, visits, 28), doses, planned, {}, True
    )
    assert list(df2["days_held"]) == [3, 0]


def test_cycle_12_and_24_columns_on_a_long_regimen():
    long = Regimen.cycles(10, n_cycles=13)
    days = long.n_days + 1
    daily = {k: np.linspace(100.0, 50.0, days)[None] for k in ENDPOINTS.observables_read}
    v = LabVisits.standard(cycle_days=28).with_last_day(long.n_days)
    v = v[v > 0]  # the protocol's on-treatment visits
    df = patient_table(
        ENDPOINTS,
        [0],
        table(1)[list(MODEL.covariate_names)],
        Assessment(daily, v, 28),
        np.asarray(long.doses)[None],
        np.asarray(long.doses),
        {},
        False,
    )
    d12 = 12 * 28
    assert df["igg_c12"][0] == pytest.approx(100.0 - 50.0 * d12 / (days - 1))
    assert df["alc_change_c12"][0] == pytest.approx(-50.0 * d12 / (days - 1))
    assert np.isnan(df["igg_c24"][0]) and np.isnan(df["alc_change_c24"][0])
    assert [c for c in df.columns if c.startswith("anc_grade_c")] == [f"anc_grade_c{c}" for c in range(1, 14)]
    assert df["days_held"][0] == 0  # no rules
    assert df["planned_mg"][0] == df["delivered_mg"][0] == 13 * 28 * 10.0  # every day at 10 mg


# ----------------------------------------------------------------------------- summary
def test_interval_formulas():
    lo, hi = wilson_interval(5, 20)
    assert (round(lo, 4), round(hi, 4)) == (0.1119, 0.4687)
    lo, hi = clopper_pearson_interval(5, 20)
    assert (round(lo, 4), round(hi, 4)) == (0.0866, 0.4910)
    assert clopper_pearson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 10)[0] == 0.0


def test_trial_summary(ref):
    s = lenapk.trial_summary(ref)
    columns = {"endpoint", "statistic", "n", "events", "estimate", "ci_low", "ci_high", "method"}
    assert columns <= set(s.columns)
    rates = s[s["statistic"] == "rate"]
    # expected incidences, not counts: flare (a hazard) and the grades of measured values (lab noise)
    events = rates["endpoint"].str.startswith("tumour flare") | rates["endpoint"].str.contains("measured")
    assert events.sum() == 4 and (rates.loc[events, "method"] == "mean probability, Student t").all()
    measured = rates.set_index("column").loc["anc_p_severe"]
    assert measured["estimate"] == pytest.approx(ref["anc_p_severe"].mean(), rel=1e-12)
    assert (rates.loc[~events, "method"] == "Wilson score").all()
    assert ((rates["ci_low"] <= rates["estimate"]) & (rates["estimate"] <= rates["ci_high"])).all()
    g3 = rates.set_index("endpoint").loc["ANC grade >= 3"]
    assert g3["events"] == (ref["anc_grade"] >= 3).sum() and g3["n"] == N
    assert (g3["ci_low"], g3["ci_high"]) == pytest.approx(wilson_interval(int(g3["events"]), N))
    assert "ANC grade >= 3, cycle 2" in set(rates["endpoint"])
    means = s[s["statistic"] == "mean"].set_index("column")
    assert means.loc["anc_nadir", "estimate"] == pytest.approx(ref["anc_nadir"].mean())
    nadir = means.loc["anc_nadir"]
    assert nadir["ci_low"] < nadir["estimate"] < nadir["ci_high"]
    assert means.loc["igg_c12", "n"] == 0 and np.isnan(means.loc["igg_c12", "estimate"])
    cp = lenapk.trial_summary(ref, method="clopper-pearson")
    assert (cp[cp["statistic"] == "rate"]["ci_low"] <= rates["ci_low"].to_numpy() + 1e-12).all()
    with pytest.raises(ValueError, match="lacks the column"):
        lenapk.trial_summary(ref.drop(columns="anc_grade"))


def test_set_host_device_count_gives_jax_that_many_cpu_devices():
    code = (
        "import lenapk, jax; n = lenapk.set_host_device_count(3); "
        "print(n, jax.device_count(), jax.devices()[0].platform)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["3", "3", "cpu"]
    with pytest.raises(ValueError, match="positive integer"):
        lenapk.set_host_device_count(0)


def test_import_gives_jax_one_cpu_device_per_core_unless_the_user_set_a_count():
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "LENAPK_CPU_SETUP")}
    code = (
        "import os, lenapk, jax; print(jax.local_device_count(), len(os.sched_getaffinity(0)), "
        "'--xla_cpu_prefer_vector_width=512' in os.environ['XLA_FLAGS'])"
    )
    got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    devices, cores, tuned = got.stdout.split()
    assert devices == cores and tuned == "True", got.stdout
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=3"  # the user's count is kept
    got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert got.stdout.split()[0] == "3" and got.stdout.split()[2] == "True", got.stdout
    env["LENAPK_CPU_SETUP"] = "0"
    got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert got.stdout.split()[0] == "3" and got.stdout.split()[2] == "False", got.stdout


def test_warns_once_with_the_fix_when_jax_has_fewer_cpu_devices_than_cores(monkeypatch):
    import jax

    monkeypatch.delenv("LENAPK_CPU_SETUP", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "")  # as if JAX had started before lenapk set it
    monkeypatch.setattr(PLATFORM, "_warned", False)
    monkeypatch.setattr(PLATFORM, "_cores", lambda: jax.local_device_count() + 1)
    with pytest.warns(RuntimeWarning, match=r"set_host_device_count\(\) first.*device_count=\d+"):
        PLATFORM.warn_if_cores_idle("lenapk.cohort")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PLATFORM.warn_if_cores_idle("lenapk.cohort")  # once per process
        monkeypatch.setattr(PLATFORM, "_warned", False)
        monkeypatch.setattr(PLATFORM, "_cores", jax.local_device_count)
        PLATFORM.warn_if_cores_idle("lenapk.cohort")  # every core has its device: no warning


@pytest.mark.parametrize(
    "version, minor",
    [("0.10.2", (0, 10)), ("0.10.2.dev20260101", (0, 10)), ("0.11.0", (0, 11)), ("1", None)],
)
def test_jaxlib_minor_parses_versions(monkeypatch, version, minor):
    monkeypatch.setattr(PLATFORM, "version", lambda name: version)
    assert PLATFORM._jaxlib_minor() == minor


def test_set_host_device_count_flags(monkeypatch):
    monkeypatch.setattr(PLATFORM, "_jaxlib_minor", lambda: (0, 10))
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=7 --xla_dump_to=x")
    lenapk.set_host_device_count(2)
    assert os.environ["XLA_FLAGS"].split() == [
        "--xla_dump_to=x",
        "--xla_force_host_platform_device_count=2",
        "--xla_cpu_prefer_vector_width=512",
        "--xla_cpu_use_fusion_emitters=false",
        "--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=1000000000",
    ]
    # the user's own value stays; a jaxlib the flag was not measured on does not get it
    monkeypatch.setattr(PLATFORM, "_jaxlib_minor", lambda: (0, 11))
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_prefer_vector_width=256")
    lenapk.set_host_device_count(1)
    assert os.environ["XLA_FLAGS"].split() == [
        "--xla_cpu_prefer_vector_width=256",
        "--xla_force_host_platform_device_count=1",
    ]
    monkeypatch.setenv("XLA_FLAGS", "")
    lenapk.set_host_device_count(1, tune=False)
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=1"
