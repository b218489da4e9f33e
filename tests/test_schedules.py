"""Schedule comparison and optimisation (lenapk.schedules) and the example script.

Kept fast: every cohort here is 16 patients over 2 cycles (56 days), so the comparison, the
cross-check of the optimiser's answer and the optimiser's own hard evaluations reuse a handful
of compiled functions (module-scoped fixtures); the optimiser takes a few Adam steps only.  The
example script runs in a subprocess with ``--quick``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import optax
import pandas as pd
import pytest
from scipy.special import expit, logsumexp

import lenapk
from lenapk import schedules as S
from lenapk.endpoints import VISIT_SHARPNESS, any_below
from lenapk.models.cll import ANC, DOSE_LEVELS, RESPONSE
from lenapk.schedules._relax import _pack, _unpack

N = 16
CYCLES = 2
SEED = 3
LIMIT = 0.30
ROOT = Path(__file__).resolve().parents[1]
# The comparison table of the lenalidomide-CLL model, as documented (API notes): identifiers, then
# each metric with its 95% CI.
METRICS = (
    "g3_neutropenia",
    "g3_neutropenia_per_course",
    "g3_thrombocytopenia",
    "g3_thrombocytopenia_per_course",
    "response_c6",
    "response_c12",
    "response_c24",
    "response",
    *(f"{ig}_change_c{c}" for c in (12, 24) for ig in ("igg", "igm", "iga")),
    "flare_probability_c1",
    "flare_probability",
    "dose_intensity",
    "days_held",
)
RATES = {m for m in METRICS if m.startswith(("g3_", "response"))}  # fractions in [0, 1]
COLUMNS = ["regimen", "rules", "n", "n_cycles"] + [f"{m}{s}" for m in METRICS for s in ("", "_lo", "_hi")]


@pytest.fixture(scope="module")
def table():
    reg10 = lenapk.Regimen.cycles(10, n_cycles=CYCLES, name="cont_10mg")
    return S.compare(
        {
            "cont_10mg": reg10,
            "cont_10mg again": reg10,
            "25mg_d1_21": lenapk.Regimen.cycles(25, n_cycles=CYCLES, days_on=21),
            "early": lenapk.load_regimens()["early_2p5_then_5_cont"],  # 24 cycles, cut to CYCLES
        },
        n=N,
        seed=SEED,
        n_cycles=CYCLES,
    )


@pytest.fixture(scope="module")
def optimum():
    return S.optimise_schedule(
        LIMIT,
        constraint_levels=(0.15,),
        n=N,
        seed=SEED,
        n_cycles=CYCLES,
        steps=6,
        inner_steps=2,
    )


# ------------------------------------------------------------------ compare
def test_compare_documented_columns(table):
    assert list(table.columns) == COLUMNS
    assert [m["column"] for m in table.attrs["metrics"]] == list(METRICS)
    assert list(table["regimen"]) == ["cont_10mg", "cont_10mg again", "25mg_d1_21", "early"]
    assert (table["n"] == N).all() and (table["n_cycles"] == CYCLES).all()
    assert (table["rules"] == "none").all()
    # endpoints beyond the 2-cycle horizon are NaN, the rest are numbers
    for col in ("response_c6", "response_c12", "response_c24", "igg_change_c12", "iga_change_c24"):
        assert table[col].isna().all(), col
    for col in ("g3_neutropenia", "g3_neutropenia_per_course", "response", "dose_intensity", "days_held"):
        assert table[col].notna().all(), col


def test_compare_cis_contain_estimates(table):
    for col in METRICS:
        est, lo, hi = (table[c].to_numpy(dtype=float) for c in (col, f"{col}_lo", f"{col}_hi"))
        ok = np.isfinite(est)
        assert np.all(lo[ok] <= est[ok] + 1e-12) and np.all(est[ok] <= hi[ok] + 1e-12), col
        if col in RATES:
            assert np.all((lo[ok] >= 0) & (hi[ok] <= 1)), col
    # more drug, more neutropenia; no rules: every dose given
    g3 = table.set_index("regimen")["g3_neutropenia"]
    assert g3["25mg_d1_21"] >= g3["cont_10mg"] >= g3["early"]
    assert np.allclose(table["dose_intensity"], 1.0) and np.allclose(table["days_held"], 0.0)


def test_compare_common_random_numbers(table):
    """Every regimen of a comparison is given to the same patients: a row equals the summary of
    a cohort of that regimen drawn with the comparison's seed, whichever other regimens it was
    compared with, and cohorts of two different regimens have the same covariates."""
    a, b = (table.iloc[i].drop("regimen") for i in (0, 1))  # the same regimen under two names
    pd.testing.assert_series_equal(a, b, check_names=False)
    reg25 = lenapk.Regimen.cycles(25, n_cycles=CYCLES, days_on=21)
    kw = dict(n=N, seed=SEED, visits="protocol", block_size=N, progress=False)
    c25 = lenapk.cohort(reg25, **kw)
    c10 = lenapk.cohort(lenapk.Regimen.cycles(10, n_cycles=CYCLES), **kw)
    covariates = list(lenapk.default_model().covariate_names)
    pd.testing.assert_frame_equal(c25[["patient", *covariates]], c10[["patient", *covariates]], check_exact=True)
    assert not np.allclose(c25["anc_nadir"], c10["anc_nadir"])  # different regimens, different outcomes
    row = table.set_index("regimen").loc["25mg_d1_21"]
    # the comparison's grade rate: the expected count of measured values (lab noise)
    assert row["g3_neutropenia"] == pytest.approx(float(c25["anc_p_severe"].mean()), rel=1e-12)
    assert row["response"] == pytest.approx(
        float(c25["best_response"].astype(str).isin(["CR", "PR"]).mean()), abs=1e-15
    )


def test_plot_comparison(table, tmp_path):
    path = S.plot_comparison(table, tmp_path / "cmp.png")
    assert path.exists() and path.stat().st_size > 10_000
    with pytest.raises(ValueError, match="table lacks"):
        S.plot_comparison(table.drop(columns="days_held"), tmp_path / "x.png")


# ------------------------------------------------------------------ optimise
def test_optimiser_meets_constraint(optimum):
    opt = optimum
    assert opt.feasible and opt.constraint == LIMIT
    assert opt.metrics["toxicity"] <= LIMIT and opt.metrics["n"] == N
    # deliverable: capsule strengths, days 1-21 or 1-28 of each 28-day cycle
    doses = np.asarray(opt.regimen.doses)
    assert doses.size == CYCLES * 28
    assert set(np.unique(doses)) <= {0.0, *DOSE_LEVELS}
    on = (doses.reshape(CYCLES, 28) > 0).sum(axis=1)
    assert set(on) <= {21, 28} and opt.schedule["days_on"] in (21, 28)
    # the trade-off curve: one row per level, each meeting its level, monotone in the level
    t = opt.tradeoff.set_index("constraint")
    assert list(t.index) == [0.15, LIMIT]
    assert t["feasible"].all() and (t["toxicity"] <= t.index.to_numpy()).all()
    assert t.loc[LIMIT, "response"] >= t.loc[0.15, "response"]
    expected = {"schedule", *S.SCHEDULE_FIELDS, "relaxed_start_mg", "relaxed_top_mg", "smooth_toxicity"}
    assert expected <= set(t.columns)
    # the relaxed optimisation ran: a history per level, within the relaxation's bounds
    h = opt.history
    assert set(h["constraint"]) == {0.15, LIMIT} and len(h) == 2 * 6
    assert h["start_mg"].between(2.5, 25).all() and h["days_on"].between(14, 29).all()
    assert (h["top_mg"] >= h["start_mg"]).all() and (h["top_mg"] <= 25).all()
    # every deliverable schedule evaluated is in the candidates, with its hard metrics
    c = opt.candidates
    assert len(c) >= len(DOSE_LEVELS) and c["toxicity"].between(0, 1).all()
    assert opt.schedule["start_mg"] in DOSE_LEVELS
    assert opt.schedule["top_mg"] >= opt.schedule["start_mg"]
    # the answer is the best candidate meeting the limit (response first, then deeper marker fall)
    ok = c[c["toxicity"] <= LIMIT]
    assert opt.metrics["response"] == pytest.approx(ok["response"].max())
    best = ok[np.isclose(ok["response"], ok["response"].max())]
    assert opt.metrics["mean_log_marker_ratio"] == pytest.approx(best["mean_log_marker_ratio"].min())


def test_optimiser_answer_checked_by_cohort(optimum):
    """An independent hard check of the answer: the same 16 patients in lenapk.cohort, labs at
    the protocol visits."""
    df = lenapk.cohort(optimum.regimen, n=N, seed=SEED, progress=False, block_size=N, visits="protocol")
    inc = float((df["anc_grade"] >= 3).mean())
    assert inc == pytest.approx(optimum.metrics["toxicity"])
    assert inc <= LIMIT
    resp = float(df["best_response"].astype(str).isin(["CR", "PR"]).mean())
    assert resp == pytest.approx(optimum.metrics["response"])
    assert np.allclose(df["dose_intensity"], 1.0) and optimum.metrics["dose_intensity"] == pytest.approx(1.0)


def test_optimiser_marker_ratio_checked_by_simulation(optimum, model, typical):
    """mean_log_marker_ratio: mean over the same 16 patients of log(ALC at the end / ALC at day
    0), recomputed from one simulate() per patient."""
    pop = lenapk.virtual_population(model, N, SEED)  # the default setting, as in the optimiser
    p = pop.parameters(model, typical)
    logs = []
    for i in range(N):
        pi = lenapk.ParameterSet({k: v[i] for k, v in p.values.items()})
        alc = lenapk.simulate(optimum.regimen, pi, model=model)["alc"].to_numpy()
        logs.append(np.log(alc[-1] / alc[0]))
    assert len(alc) == CYCLES * 28 + 1
    assert optimum.metrics["mean_log_marker_ratio"] == pytest.approx(np.mean(logs), rel=1e-4, abs=1e-6)


def test_optimiser_marker_objective_and_any_optax_transformation():
    """objective="marker_reduction" picks the feasible candidate with the deepest mean log fall of
    the marker; the optimizer is the optax transformation given (a zero learning rate never moves
    the relaxed schedule, a positive one does)."""
    kw = dict(n=N, seed=SEED, n_cycles=CYCLES, steps=3, inner_steps=1, objective="marker_reduction")
    frozen = S.optimise_schedule(LIMIT, optimizer=optax.sgd(0.0), **kw)
    moved = S.optimise_schedule(LIMIT, optimizer=optax.sgd(1.0), **kw)
    for opt in (frozen, moved):
        assert opt.feasible and opt.metrics["toxicity"] <= LIMIT
        assert opt.settings["objective"] == "marker_reduction"
        ok = opt.candidates[opt.candidates["toxicity"] <= LIMIT]
        assert opt.metrics["mean_log_marker_ratio"] == pytest.approx(ok["mean_log_marker_ratio"].min())
        assert opt.metrics["mean_log_marker_ratio"] < 0  # the marker fell
        assert len(opt.history) == 3
    design = list(S.SCHEDULE_FIELDS)
    assert np.ptp(frozen.history[design].to_numpy(), axis=0) == pytest.approx(np.zeros(4), abs=1e-12)
    assert np.ptp(moved.history[design].to_numpy(), axis=0).max() > 1e-3


def test_relaxed_schedule_is_smooth_and_deliverable_rounding():
    spec = S.Relax(
        n_days=84,
        cycle_days=28,
        escalate_every_days=28,
        min_mg=2.5,
        max_mg=25.0,
        max_step_mg=22.5,
        min_days_on=14.0,
        days_on_width=0.5,
        visits=(0, 7, 84),
        objective="response",
        toxicity=ANC,
        response=RESPONSE,
    )
    theta = _pack(10.0, 5.0, 21.0, 15.0, spec)
    design = tuple(float(x) for x in _unpack(theta, spec))
    assert design == pytest.approx((10.0, 5.0, 21.0, 15.0))
    d = np.asarray(S.relaxed_doses(theta, spec))
    # 10 mg, +5 mg per cycle, plateau at 15 mg
    assert d[0] == pytest.approx(10.0, rel=1e-6) and d[28] == pytest.approx(15.0, rel=1e-6)
    assert d[56] == pytest.approx(15.0, rel=1e-6)
    assert d[18] > 9.9 and d[23] < 0.1 and 0 < d[21] < 5 < d[20] < 10  # sigmoid edge at day 21
    assert d[:28].sum() == pytest.approx(21 * 10.0, rel=1e-3)  # about 21 days' worth of drug
    # gradients reach every design parameter
    g = np.asarray(jax.grad(lambda th: S.relaxed_doses(th, spec).sum())(theta))
    assert np.all(np.abs(g) > 0)
    reg = S.deliverable_regimen(2.5, 2.5, 21, n_cycles=4, capsules=DOSE_LEVELS)
    per_cycle = np.asarray(reg.doses).reshape(4, 28).max(axis=1)
    assert list(per_cycle) == [2.5, 5.0, 5.0, 10.0]  # 7.5 mg rounds down to a 5 mg capsule
    assert reg.name == "d1-21/28: 2.5 mg c1, 5 mg c2-3, 10 mg c4"
    on = (np.asarray(reg.doses).reshape(4, 28) > 0).sum(axis=1)
    assert list(on) == [21] * 4


def test_smooth_any_below_tracks_the_hard_indicator():
    """The optimiser's relaxed "any visit below the limit" (a smooth maximum VISIT_SHARPNESS
    times sharper than the threshold sigmoid) against its formula in numpy/scipy, the plain smooth
    maximum and the hard indicator."""
    x = np.array([[1.4] * 20, [0.9] + [2.0] * 19, [1.1] * 3 + [2.0] * 17])
    hard = (x < 1.0).any(axis=1)
    k = VISIT_SHARPNESS
    soft = np.asarray(any_below(x, 1.0, 0.1, sharpness=k))
    loose = np.asarray(any_below(x, 1.0, 0.1))
    m = -np.log(x)  # log margin of x < 1
    np.testing.assert_allclose(soft, expit(logsumexp(m / (0.1 / k), axis=1) / k), rtol=1e-12)
    np.testing.assert_allclose(loose, expit(logsumexp(m / 0.1, axis=1)), rtol=1e-12)
    assert k > 1
    assert np.all(soft[~hard] <= loose[~hard])  # less upward bias from many visits near the limit
    assert soft[0] < 0.1 < 0.4 < loose[0]  # 20 visits at 1.4: the plain smooth max reads 41% toxic
    assert soft[1] > 0.7  # one visit at 0.9: clearly toxic in both
    np.testing.assert_allclose(any_below(x, 1.0, 1e-3, sharpness=k), hard, atol=1e-9)
    np.testing.assert_array_equal(any_below(x, 1.0, 0.0), hard * 1.0)  # T = 0: the hard count


# ------------------------------------------------------------------ bad input
REG = lenapk.Regimen.cycles(5, n_cycles=1, name="5mg")


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: S.compare({}, n=4), r"regimens must contain at least one regimen"),
        (lambda: S.compare([], n=4), r"regimens must contain at least one regimen"),
        # regimen ids are not resolved by compare: Regimen objects only
        (
            lambda: S.compare(["early_2p5_then_5_cont"], n=4),
            r"regimens\[0\] must be a lenapk.Regimen, got the name 'early_2p5_then_5_cont'",
        ),
        (lambda: S.compare({"a": "nope"}, n=4), r"regimens\['a'\] must be a lenapk.Regimen, got the name 'nope'"),
        (lambda: S.compare([REG, 5], n=4), r"regimens\[1\] must be a lenapk.Regimen"),
        (lambda: S.compare([REG, REG], n=4), r"two regimens named '5mg'"),
        (lambda: S.compare([REG], n=0), r"n must be a whole number >= 1, got 0"),
        (lambda: S.compare([REG], n=4, rules={"x": None}), r"rules: unknown regimen name\(s\) \['x'\]"),
        (
            lambda: S.compare([REG], n=4, setting="moon"),
            r"setting must be one of \['maintenance', 'relapsed', 'relapsed_bulky', 'untreated', "
            r"'untreated_symptomatic'\]",
        ),
        (lambda: S.compare([REG], n=4, rules="label"), r"rules must be None or"),
        (lambda: S.optimise_schedule(1.5), r"constraint must be a number in \(0, 1\), got 1.5"),
        (lambda: S.optimise_schedule(0.0), r"constraint must be a number in \(0, 1\), got 0.0"),
        (lambda: S.optimise_schedule(0.3, constraint_levels=(0.2, 1.0)), r"constraint_levels\[1\] must be .* got 1.0"),
        (lambda: S.optimise_schedule(0.3, n=0), r"n must be a whole number >= 1, got 0"),
        (lambda: S.optimise_schedule(0.3, objective="cure"), r"objective must be one of"),
        (lambda: S.optimise_schedule(0.3, days_on_options=(21, 35)), r"days_on_options must be"),
        (lambda: S.optimise_schedule(0.3, init={"speed": 1.0}), r"init: unknown key\(s\) \['speed'\]"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ------------------------------------------------------------------ example
@pytest.fixture(scope="module", autouse=True)
def example_run(request, tmp_path_factory):
    """Start the example script (--quick) in a subprocess when this module starts, so that its
    compilation overlaps the tests above; test_example_script_quick waits for it.  Nothing is
    started when that test is not selected."""
    if not any(item.name == "test_example_script_quick" for item in request.session.items):
        yield None
        return
    work = tmp_path_factory.mktemp("example")
    log = open(work / "stdout.txt", "w+")
    err = open(work / "stderr.txt", "w+")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "compare_schedules.py"), "--quick", "--out", str(work / "out")],
        cwd=work,
        stdout=log,
        stderr=err,
        text=True,
    )
    yield proc, work
    if proc.poll() is None:  # the example test was deselected or failed early
        proc.kill()
        proc.wait()
    log.close()
    err.close()


def test_example_script_quick(example_run):
    proc, work = example_run
    rc = proc.wait(timeout=300)
    assert rc == 0, (work / "stderr.txt").read_text()[-3000:]
    table = pd.read_csv(work / "out" / "comparison.csv")
    assert len(table) == 14 and list(table.columns) == COLUMNS  # 4 bundled 28-day regimens + 3, each +/- rule
    labelled = table["regimen"].str.endswith("+ label rule")
    assert labelled.sum() == 7 and (table.loc[labelled, "rules"] == "label rule").all()
    assert (table.loc[~labelled, "rules"] == "none").all()
    assert np.allclose(table.loc[~labelled, "dose_intensity"], 1.0)
    assert (work / "out" / "comparison.png").stat().st_size > 10_000
    assert "25mg_d1_21_of_28 + label rule" in (work / "stdout.txt").read_text()
