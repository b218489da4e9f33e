"""The lenalidomide-CLL system: reference solves, invariants, the simulate() contract."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference_cll

import lenapk
from lenapk import Regimen, SolverSettings
from lenapk._core import broadcast_plan, plan_for, solve_checked, solve_days, solve_days_jit

COLUMNS = [
    "day",
    "dose_mg",
    "conc_ng_ml",
    "alc",
    "anc",
    "platelets",
    "igg",
    "igm",
    "iga",
    "cd3",
    "activation",
    "flare_hazard",
    "nodes",
]
# index of each observable's state in reference_cll's state vector (depot, central first)
REF_COLUMNS = {"alc": 2, "anc": 8, "platelets": 13, "igg": 14, "igm": 15, "iga": 16, "flare_hazard": 19, "nodes": 20}
TIGHT = SolverSettings(rtol=1e-9, atol=1e-11, max_steps=4096)
N_REF_CYCLES = 6  # the escalating regimen reaches 25 mg in cycle 4


@pytest.fixture(scope="module")
def short_regimen():
    return Regimen.cycles(10, n_cycles=2, escalation_mg=5, escalate_every_days=28, max_mg=15)


def _reference_frame(p, doses, method="DOP853", rtol=1e-11, atol=1e-13):
    ys = reference_cll.solve_daily(p, doses, method=method, rtol=rtol, atol=atol)
    out = {name: ys[:, j] for name, j in REF_COLUMNS.items()}
    out["alc"] = out["alc"] + p["normal_lymph"]
    out["nodes"] = np.exp(out["nodes"])  # the reference integrates log node burden, as lenapk does
    return out


@pytest.fixture(scope="module")
def relapsed(typical):
    return typical.replace(relapsed=1.0, anc0=3.0, plt0=120.0, ka=1.7)


@pytest.fixture(scope="module")
def rr_reference(regimens, relapsed):
    """DOP853 at rtol 1e-11 (PK as ODE states) over the first cycles of the escalating relapsed regimen."""
    reg = regimens["rr_10_to_25_cont"].first_cycles(N_REF_CYCLES)
    return reg, _reference_frame(relapsed.as_floats(), np.asarray(reg.doses))


def test_full_system_matches_scipy(rr_reference, relapsed):
    """10 -> 25 mg escalation over 6 cycles: lenapk at rtol 1e-9 against the independent scipy
    statement of the equations (PK as ODE states, not the closed form)."""
    reg, ref = rr_reference
    df = lenapk.simulate(reg, relapsed, settings=TIGHT)
    assert len(df) == reg.n_days + 1
    for name in REF_COLUMNS:
        np.testing.assert_allclose(df[name].to_numpy(), ref[name], rtol=1e-6, err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("method, rtol", [("DOP853", 1e-11), ("Radau", 1e-10)])
def test_full_system_matches_scipy_over_24_cycles(regimens, relapsed, method, rtol):
    reg = regimens["rr_10_to_25_cont"]
    p = relapsed.replace(ka=3.0)
    df = lenapk.simulate(reg, p, settings=TIGHT)
    ref = _reference_frame(p.as_floats(), np.asarray(reg.doses), method=method, rtol=rtol, atol=rtol * 1e-2)
    for name in REF_COLUMNS:
        np.testing.assert_allclose(df[name].to_numpy(), ref[name], rtol=1e-5, err_msg=name)


def test_default_tolerance_close_to_tight(short_regimen, typical):
    loose = lenapk.simulate(short_regimen, typical)
    tight = lenapk.simulate(short_regimen, typical, settings=TIGHT)
    for name in ["anc", "platelets", "alc", "igg"]:
        np.testing.assert_allclose(loose[name], tight[name], rtol=2e-5, err_msg=name)


def test_columns_and_rows(regimens):
    for reg in regimens.values():
        df = lenapk.simulate(reg)
        assert list(df.columns) == COLUMNS
        assert len(df) == reg.n_days + 1
        np.testing.assert_array_equal(df["day"].to_numpy(), np.arange(reg.n_days + 1))
        np.testing.assert_array_equal(df["dose_mg"].to_numpy()[:-1], np.asarray(reg.doses))
        assert df["dose_mg"].iloc[-1] == 0.0  # the end of the horizon: no dose
        assert np.all(np.isfinite(df[COLUMNS].to_numpy()))


def test_no_drug_stays_at_baseline(typical):
    zero = Regimen.from_daily_doses(np.zeros(56))
    p = typical.replace(growth=1e-12)
    df = lenapk.simulate(zero, p)
    for name, base in [
        ("anc", p["anc0"]),
        ("platelets", p["plt0"]),
        ("igg", p["igg0"]),
        ("igm", p["igm0"]),
        ("iga", p["iga0"]),
        ("alc", p["alc0"]),
        ("cd3", p["cd3_0"]),
        ("activation", 1.0),
    ]:
        np.testing.assert_allclose(df[name], float(base), rtol=1e-9, err_msg=name)
    assert np.all(df["conc_ng_ml"].to_numpy() == 0.0)


def test_no_drug_clone_grows_at_net_rate(typical):
    zero = Regimen.from_daily_doses(np.zeros(56))
    df = lenapk.simulate(zero, typical)
    clone = df["alc"] - float(typical["normal_lymph"])
    x0 = float(typical["alc0"]) - float(typical["normal_lymph"])
    growth, cap = float(typical["growth"]), float(typical["clone_max"])
    rise = np.exp(growth * df["day"])
    np.testing.assert_allclose(clone, cap * x0 * rise / (cap + x0 * (rise - 1.0)), rtol=1e-6)  # logistic


def test_concentration_matches_closed_form_within_day(typical):
    """Oral one-compartment superposition of daily 10 mg doses, written out here; an output at a
    dose time is pre-dose."""
    reg = Regimen.cycles(10, n_cycles=1)
    times = [0.0, 0.5 / 24, 1.0 / 24, 3.5, 3.5 + 6 / 24, 10.0]
    df = lenapk.simulate(reg, typical, times=times)
    k, ka, v = 12.0 / 68.8, 3.0, 68.8

    def conc(t_h):
        tau = t_h - 24.0 * np.arange(int(t_h // 24) + 1)
        tau = tau[tau > 0]
        return 1000 * np.sum(10 * ka / (ka - k) * (np.exp(-k * tau) - np.exp(-ka * tau))) / v

    expected = [conc(t * 24) if abs(t - round(t)) > 1e-9 else conc(t * 24 - 1e-12) for t in times]
    np.testing.assert_allclose(df["conc_ng_ml"], expected, rtol=1e-9, atol=1e-12)
    assert df["conc_ng_ml"].iloc[0] == 0.0
    assert list(df["day"]) == times and list(df["dose_mg"]) == [10.0] * 6


def test_clinical_picture_with_drug(rr_reference, relapsed):
    """The escalating relapsed regimen (10 mg, +5 mg each 28-day cycle) at default tolerances,
    against the scipy reference, and the shape of the ANC course it must show: a cycle-1 nadir
    in the third week, recovery by Friberg feedback before the next escalation, and deeper
    nadirs as the dose rises, the cycle-3 nadir inside cycle 3 with ANC recovering after it."""
    reg, ref = rr_reference
    df = lenapk.simulate(reg, relapsed)
    anc, ref_anc = df["anc"].to_numpy(), ref["anc"]
    np.testing.assert_allclose(anc, ref_anc, rtol=2e-5)
    nadir_day = [int(np.argmin(anc[28 * c : 28 * (c + 1)])) + 28 * c for c in range(3)]
    assert nadir_day == [int(np.argmin(ref_anc[28 * c : 28 * (c + 1)])) + 28 * c for c in range(3)]
    nadir = anc[nadir_day]
    assert 10 <= nadir_day[0] <= 21 and nadir[0] < 0.7 * anc[0]  # ANC falls by > 30% in cycle 1
    assert anc[28] > 1.03 * nadir[0]  # and recovers by > 3% before the escalation to 15 mg
    # deeper at 20 mg than at 10 mg (a shallow dose response: the calibrated Hill exponent is 0.3)
    assert nadir[2] < nadir[1] < nadir[0] and nadir[2] < 0.95 * nadir[0]
    assert 56 < nadir_day[2] < 84 and anc[:85].min() == nadir[2]  # the nadir of cycles 1-3 is in cycle 3
    assert anc[84] > nadir[2]  # ANC has turned up again by day 84


def test_clinical_picture_early_stage(regimens, typical):
    """Early-stage regimen (2.5 then 5 mg daily): the typical ALC halves within 12 cycles (a blood
    response), while the node burden stays between half and 1.5 times its baseline through 24
    cycles (the trial's 68% SD and 26% PR by iwCLL: the typical patient is SD, held back by the
    nodes, which the low dose barely touches); every immunoglobulin rises in both years."""
    early = lenapk.simulate(regimens["early_2p5_then_5_cont"], typical)
    alc, nodes = early["alc"].to_numpy(), early["nodes"].to_numpy()
    assert alc[336] < 0.5 * alc[0] and alc[672] < alc[336]
    assert 0.5 < nodes[336] < 1.5 and 0.5 < nodes[672] < 1.5
    for ig, rise in (("igg", 1.05), ("igm", 1.2), ("iga", 1.02)):
        v = early[ig].to_numpy()
        assert v[336] > rise * v[0] and v[672] > rise * v[336], ig


def test_exposure_proportional_to_dose(typical):
    a = lenapk.simulate(Regimen.cycles(5, n_cycles=2), typical)
    b = lenapk.simulate(Regimen.cycles(20, n_cycles=2), typical)
    np.testing.assert_allclose(b["conc_ng_ml"], 4 * a["conc_ng_ml"], rtol=1e-12)


def test_higher_dose_deeper_anc_nadir(typical):
    nadirs = [lenapk.simulate(Regimen.cycles(d, n_cycles=2), typical)["anc"].min() for d in (2.5, 10, 25)]
    assert nadirs[0] > nadirs[1] > nadirs[2]


def test_ig_synthesis_and_extreme_clones_against_reference(model, typical):
    """Synthesis k_deg Ig0 e / (1 + (Ig0 / M*) (e - 1)), e = exp(beta R), M* = (ULN^4 + Ig0^4)^(1/4),
    against its formula for any capacity R (it tends to k_deg M* for large R and to 0 for very
    negative R); and at extreme
    parameters (strong kill with strong help; no kill with fast growth) the course matches the
    scipy reference."""
    reg = Regimen.cycles(25, n_cycles=2)
    c = model.derive(typical)
    y = solve_days_jit(model, typical, reg.doses).final_state
    cap = model.state_names.index("ig_capacity")
    for capacity in (-50.0, -1.0, 0.0, 1.0, 50.0):
        got = np.asarray(model.ig_synthesis(y.at[cap].set(capacity), c))
        want = []
        for ig in ("igg", "igm", "iga"):
            kdeg, base = np.log(2) / float(typical[f"t_half_{ig}"]), float(typical[f"{ig}0"])
            ceiling = (float(typical[f"uln_{ig}"]) ** 4 + base**4) ** 0.25
            e = np.exp(float(typical[f"beta_{ig}"]) * capacity)
            want.append(kdeg * base * e / (1 + base / ceiling * (e - 1)))
        np.testing.assert_allclose(got, want, rtol=1e-12)
        if capacity == 50.0:  # saturated: synthesis at the ceiling k_deg M*, M* within 2% of the ULN
            names = ("igg", "igm", "iga")
            ulns = np.array([float(typical[f"uln_{ig}"]) for ig in names])
            kdeg = np.log(2) / np.array([float(typical[f"t_half_{ig}"]) for ig in names])
            np.testing.assert_allclose(got / kdeg, ulns, rtol=0.02)
    cases = (
        typical.replace(kill=0.2, e_help=0.5, beta_igm=3.0),
        typical.replace(kill=1e-5, growth=0.05),
        # steep neutrophil effect, short platelet life, a clone at its carrying capacity, fast
        # flare kinetics and IgM above its ULN at baseline
        typical.replace(hill_n=2.5, ec50_n=60.0, t_life_p=4.0, clone_max=40.0, growth=0.05, igm0=400.0, k_resens=0.2),
    )
    for p in cases:
        df = lenapk.simulate(reg, p, settings=TIGHT)
        ref = _reference_frame(p.as_floats(), np.asarray(reg.doses))
        for name in REF_COLUMNS:
            np.testing.assert_allclose(df[name].to_numpy(), ref[name], rtol=1e-6, err_msg=name)


def test_bulky_nodes_multiply_the_flare_hazard(typical):
    """Bulky nodes multiply the flare hazard's scale by f_bulky_flare: the cumulative hazard of a
    bulky patient is exactly f_bulky_flare times that of the same patient without (the
    desensitisation state does not depend on the scale), and matches the SciPy reference."""
    reg = Regimen.cycles(10, n_cycles=2)
    p = typical.replace(relapsed=1.0)
    plain = lenapk.simulate(reg, p, settings=TIGHT)["flare_hazard"].to_numpy()
    bulky = lenapk.simulate(reg, p.replace(bulky=1.0), settings=TIGHT)["flare_hazard"].to_numpy()
    assert plain[-1] > 0.01  # the first course flares: the check is not made on zeros
    np.testing.assert_allclose(bulky, float(p["f_bulky_flare"]) * plain, rtol=1e-7)
    ref = _reference_frame(p.replace(bulky=1.0).as_floats(), np.asarray(reg.doses))
    np.testing.assert_allclose(bulky, ref["flare_hazard"], rtol=1e-6)


def test_second_call_with_new_parameters_does_not_recompile(short_regimen, typical):
    """A second simulate() with other parameter values (same regimen) compiles nothing: counted
    with jax.monitoring's backend-compile events (checked to fire on a fresh jit first)."""
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    lenapk.simulate(short_regimen, typical)
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        jax.jit(lambda x: x * 3.0 + 1.0)(np.arange(7.0))  # a new function: one compile
        assert len(compiles) == 1
        lenapk.simulate(short_regimen, typical.replace(cl=9.0, ec50_n=100.0, alc0=50.0, relapsed=1.0))
        assert len(compiles) == 1
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def test_vmap_and_grad_go_through(model, typical, short_regimen):
    """Reverse-mode d(final ANC)/d(CL) against a central difference of vmapped solves; the
    vmapped solve against a single one."""
    doses = short_regimen.doses

    def final_anc(cl):
        return solve_days(model, typical.replace(cl=cl), doses).day_obs["anc"][-1]

    g = jax.jit(jax.grad(final_anc))(12.0)
    h = 1e-5
    batched = jax.jit(jax.vmap(final_anc))(jnp.array([8.0, 12.0, 12.0 * (1 + h), 12.0 * (1 - h)]))
    fd = (batched[2] - batched[3]) / (2 * h * 12.0)
    assert np.isfinite(float(g)) and float(g) == pytest.approx(float(fd), rel=1e-3)
    single = solve_days_jit(model, typical.replace(cl=12.0), doses).day_obs["anc"][-1]
    assert float(batched[1]) == pytest.approx(float(single), rel=1e-8)
    assert float(batched[0]) < 0.9 * float(batched[1])  # lower clearance: more exposure, lower ANC


def test_batch_as_one_ode_matches_single(model, typical, short_regimen):
    p_batch = lenapk.ParameterSet({k: jnp.full(3, v) for k, v in typical.as_floats().items()}).replace(
        cl=jnp.array([6.0, 12.0, 20.0])
    )
    traj = solve_days_jit(model, p_batch, jnp.broadcast_to(short_regimen.doses, (3, short_regimen.n_days)))
    for i, cl in enumerate([6.0, 12.0, 20.0]):
        single = solve_days_jit(model, typical.replace(cl=cl), short_regimen.doses)
        for name in ("anc", "alc", "igg"):
            # two solves at rtol 1e-6 on different step sequences (the batch's worst patient sets
            # its step); measured 1.5e-5 apart, each within 2e-5 of a tight solve (tests/test_clock.py)
            np.testing.assert_allclose(traj.day_obs[name][i], single.day_obs[name], rtol=3e-5)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(cl=-1.0), "params.cl must be > 0"),
        (dict(ec50_n=float("nan")), "params.ec50_n must be finite"),
        (dict(del17p=-1.0), "params.del17p must be >= 0"),
    ],
)
def test_bad_parameters_refused(typical, short_regimen, change, match):
    with pytest.raises(ValueError, match=match):
        lenapk.simulate(short_regimen, typical.replace(**change))


def test_bad_call_arguments_refused(typical, short_regimen):
    with pytest.raises(ValueError, match="regimen must be a lenapk.Regimen"):
        lenapk.simulate([10, 10], typical)
    with pytest.raises(ValueError, match="times must lie in"):
        lenapk.simulate(short_regimen, typical, times=[0, 1000])
    with pytest.raises(ValueError, match="strictly increasing"):
        lenapk.simulate(short_regimen, typical, times=[2, 1])
    with pytest.raises(ValueError, match="days must be"):
        lenapk.simulate(short_regimen, typical, days=0)
    with pytest.raises(ValueError, match="unknown parameter"):
        typical.replace(not_a_parameter=1.0)


def test_solver_failure_names_patient(model, typical, short_regimen):
    """In a batch solved as one ODE the shared step fails for all; the error must still name the
    patient whose own solve fails (here the one with an absurd growth rate), by its id."""
    p = lenapk.ParameterSet({k: jnp.full(3, v) for k, v in typical.as_floats().items()}).replace(
        growth=jnp.array([0.001, 0.001, 50.0]), clone_max=jnp.array([800.0, 800.0, 1e300])
    )
    plan = broadcast_plan(plan_for(model, short_regimen), (3,))
    with pytest.raises(lenapk.SolverError, match="patient 42 on day 0"):
        solve_checked(model, p, plan, settings=SolverSettings(max_steps=64), patient_ids=[40, 41, 42])


def test_failed_segment_carries_no_finite_state(model, typical, short_regimen):
    """A segment that runs out of steps is marked not ok, and the state it hands to the next
    segment is inf (not the state where the solver stopped), for one patient and for a batch."""
    settings = SolverSettings(max_steps=2)
    one = solve_days_jit(model, typical, short_regimen.doses, settings=settings)
    assert not bool(np.asarray(one.ok)[0])
    assert np.all(np.isinf(np.asarray(one.final_state)))
    batch = typical.replace(cl=jnp.array([8.0, 12.0]))
    traj = solve_days_jit(
        model, batch, jnp.broadcast_to(short_regimen.doses, (2, short_regimen.n_days)), settings=settings
    )
    assert not np.asarray(traj.ok)[:, 0].any()
    assert np.all(np.isinf(np.asarray(traj.final_state)))


def test_batch_with_scalar_initial_state(model, typical, short_regimen):
    """Only a PK parameter varies: the initial state has no batch axis and must be broadcast."""
    p = typical.replace(cl=jnp.array([8.0, 12.0]))
    traj = solve_days_jit(model, p, jnp.broadcast_to(short_regimen.doses, (2, short_regimen.n_days)))
    for i, cl in enumerate((8.0, 12.0)):
        single = solve_days_jit(model, typical.replace(cl=cl), short_regimen.doses)
        np.testing.assert_allclose(traj.day_obs["anc"][i], single.day_obs["anc"], rtol=1e-5)
