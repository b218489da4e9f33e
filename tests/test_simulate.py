"""The lenalidomide-CLL system: reference solves, invariants, the simulate() contract."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import lenapk
from lenapk import Regimen, SolverSettings
from lenapk.solve import solve_days_jit

import reference_cll

COLUMNS = ["day", "dose_mg", "conc_ng_ml", "alc", "anc", "platelets", "igg", "igm", "iga"]
# order of reference_cll's states after (depot, central)
REF_COLUMNS = {"alc": 2, "anc": 8, "platelets": 13, "igg": 14, "igm": 15, "iga": 16}


@pytest.fixture(scope="module")
def short_regimen():
    return Regimen.cycles(10, n_cycles=2, escalation_mg=5, escalate_every_days=28, max_mg=15)


def _reference_frame(p, doses):
    ys = reference_cll.solve_daily(p, doses, method="DOP853", rtol=1e-11, atol=1e-13)
    out = {name: ys[:, j] for name, j in REF_COLUMNS.items()}
    out["alc"] = out["alc"] + p["normal_lymph"]
    return out


@pytest.mark.parametrize("regimen_id", ["rr_10_to_25_cont"])
def test_full_system_matches_scipy_over_24_cycles(regimens, typical, regimen_id):
    """24 cycles of the escalating relapsed regimen; lenapk at rtol 1e-9 vs DOP853 at 1e-11,
    with PK as ODE states in the reference (independent of the closed form)."""
    reg = regimens[regimen_id]
    p = typical.replace(relapsed=1.0, anc0=3.0, plt0=120.0, ka=1.7)
    df = lenapk.simulate(reg, p, settings=SolverSettings(rtol=1e-9, atol=1e-11, max_steps_per_day=4096))
    ref = _reference_frame(p.as_floats(), np.asarray(reg.doses))
    for name in REF_COLUMNS:
        np.testing.assert_allclose(df[name].to_numpy(), ref[name], rtol=1e-5, err_msg=name)


@pytest.mark.slow
def test_full_system_matches_radau_over_24_cycles(regimens, typical):
    reg = regimens["rr_10_to_25_cont"]
    p = typical.replace(relapsed=1.0)
    df = lenapk.simulate(reg, p, settings=SolverSettings(rtol=1e-9, atol=1e-11, max_steps_per_day=4096))
    ys = reference_cll.solve_daily(p.as_floats(), np.asarray(reg.doses), method="Radau", rtol=1e-10, atol=1e-12)
    for name, j in REF_COLUMNS.items():
        ref = ys[:, j] + (p.as_floats()["normal_lymph"] if name == "alc" else 0.0)
        np.testing.assert_allclose(df[name].to_numpy(), ref, rtol=1e-5, err_msg=name)


def test_default_tolerance_close_to_tight(short_regimen, typical):
    loose = lenapk.simulate(short_regimen, typical)
    tight = lenapk.simulate(short_regimen, typical, settings=SolverSettings(rtol=1e-9, atol=1e-11, max_steps_per_day=4096))
    for name in ["anc", "platelets", "alc", "igg"]:
        np.testing.assert_allclose(loose[name], tight[name], rtol=2e-5, err_msg=name)


def test_columns_and_rows(regimens):
    for rid, reg in regimens.items():
        df = lenapk.simulate(reg)
        assert list(df.columns[: len(COLUMNS)]) == COLUMNS
        assert len(df) == reg.n_days + 1
        assert df["day"].iloc[-1] == reg.n_days
        assert np.all(np.isfinite(df[COLUMNS].to_numpy()))


def test_no_drug_stays_at_baseline(typical):
    zero = Regimen.from_daily_doses(np.zeros(56))
    p = typical.replace(growth=1e-12)
    df = lenapk.simulate(zero, p)
    for name, base in [("anc", p["anc0"]), ("platelets", p["plt0"]), ("igg", p["igg0"]), ("igm", p["igm0"]),
                       ("iga", p["iga0"]), ("alc", p["alc0"])]:
        np.testing.assert_allclose(df[name], float(base), rtol=1e-9, err_msg=name)


def test_no_drug_clone_grows_at_net_rate(typical):
    zero = Regimen.from_daily_doses(np.zeros(56))
    df = lenapk.simulate(zero, typical)
    clone = df["alc"] - float(typical["normal_lymph"])
    expected = (float(typical["alc0"]) - float(typical["normal_lymph"])) * np.exp(float(typical["growth"]) * df["day"])
    np.testing.assert_allclose(clone, expected, rtol=1e-6)


def test_concentration_matches_closed_form_within_day(typical):
    reg = Regimen.cycles(10, n_cycles=1)
    times = [0.0, 0.5 / 24, 1.0 / 24, 3.5, 3.5 + 6 / 24, 10.0]
    df = lenapk.simulate(reg, typical, times=times)
    k = 12.0 / 68.8
    ka = 3.0
    # superposition of daily 10 mg doses, oral 1-compartment
    def conc(t_h):
        n = int(t_h // 24) + 1
        tau = t_h - 24 * np.arange(n)
        tau = tau[tau > 0]
        return 1000 * np.sum(10 * ka / (ka - k) * (np.exp(-k * tau) - np.exp(-ka * tau))) / 68.8
    expected = [conc(t * 24) if abs(t - round(t)) > 1e-9 else conc(t * 24 - 1e-12) for t in times]
    np.testing.assert_allclose(df["conc_ng_ml"], expected, rtol=1e-9, atol=1e-12)
    assert df["conc_ng_ml"].iloc[0] == 0.0


def test_clinical_picture_with_drug(regimens, typical):
    df = lenapk.simulate(regimens["rr_10_to_25_cont"], typical.replace(relapsed=1.0, anc0=3.0))
    anc = df["anc"].to_numpy()
    assert anc[:56].min() < 0.7 * anc[0]  # ANC falls in cycles 1-2
    assert np.argmin(anc[:84]) < 84
    early = lenapk.simulate(regimens["early_2p5_then_5_cont"], typical)
    assert early["alc"].iloc[336] < early["alc"].iloc[0] and early["alc"].iloc[672] < early["alc"].iloc[336]
    for ig in ("igg", "igm", "iga"):
        v = early[ig].to_numpy()
        assert v[336] > v[0] and v[672] > v[336], ig


def test_exposure_proportional_to_dose(typical):
    a = lenapk.simulate(Regimen.cycles(5, n_cycles=2), typical)
    b = lenapk.simulate(Regimen.cycles(20, n_cycles=2), typical)
    np.testing.assert_allclose(b["conc_ng_ml"], 4 * a["conc_ng_ml"], rtol=1e-12)


def test_higher_dose_deeper_anc_nadir(typical):
    nadirs = [lenapk.simulate(Regimen.cycles(d, n_cycles=2), typical)["anc"].min() for d in (2.5, 10, 25)]
    assert nadirs[0] > nadirs[1] > nadirs[2]


def test_ig_synthesis_never_negative(model, typical):
    """Synthesis k_deg Ig0 exp(beta R) is positive for any capacity R, and R stays finite when
    the clone is driven to extremes (near-eradication and unchecked growth)."""
    from lenapk.solve import solve_days_jit

    reg = Regimen.cycles(25, n_cycles=2)
    c = model.derive(typical)
    y = solve_days_jit(model, typical, reg.doses).final_state
    for capacity in (-50.0, -1.0, 0.0, 1.0, 50.0):
        assert np.all(np.asarray(model.ig_synthesis(y.at[model.state_names.index("ig_capacity")].set(capacity), c)) > 0)
    for p in (typical.replace(kill=0.2, e_help=0.5, beta_igm=3.0), typical.replace(kill=1e-5, growth=0.05)):
        final = np.asarray(solve_days_jit(model, p, reg.doses).final_state)
        assert np.all(np.isfinite(final)) and np.all(final[12:15] > 0)
        assert np.all(np.asarray(model.ig_synthesis(jnp.asarray(final), model.derive(p))) > 0)


def test_second_call_with_new_parameters_does_not_recompile(short_regimen, typical):
    lenapk.simulate(short_regimen, typical)
    before = solve_days_jit._cached._cache_size()
    lenapk.simulate(short_regimen, typical.replace(cl=9.0, ec50_n=100.0, alc0=50.0))
    assert solve_days_jit._cached._cache_size() == before


def test_vmap_and_grad_go_through(model, typical, short_regimen):
    from lenapk.solve import solve_days

    doses = short_regimen.doses[:14]

    @jax.jit
    def final_anc(cl):
        return solve_days(model, typical.replace(cl=cl), doses).day_obs["anc"][-1]

    g = jax.jit(jax.grad(final_anc))(12.0)
    fd = (final_anc(12.0 * (1 + 1e-5)) - final_anc(12.0 * (1 - 1e-5))) / (2e-5 * 12.0)
    assert np.isfinite(float(g)) and float(g) == pytest.approx(float(fd), rel=1e-3)
    cls = jnp.array([8.0, 12.0])
    batched = jax.vmap(final_anc)(cls)
    assert float(batched[1]) == pytest.approx(float(final_anc(12.0)), rel=1e-10)


def test_batch_as_one_ode_matches_single(model, typical, short_regimen):
    p_batch = lenapk.ParameterSet({k: jnp.full(3, v) for k, v in typical.as_floats().items()}).replace(
        cl=jnp.array([6.0, 12.0, 20.0])
    )
    traj = solve_days_jit(model, p_batch, jnp.broadcast_to(short_regimen.doses, (3, short_regimen.n_days)))
    for i, cl in enumerate([6.0, 12.0, 20.0]):
        single = solve_days_jit(model, typical.replace(cl=cl), short_regimen.doses)
        for name in ("anc", "alc", "igg"):
            np.testing.assert_allclose(traj.day_obs[name][i], single.day_obs[name], rtol=1e-5)


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
    from lenapk.solve import solve_checked

    p = lenapk.ParameterSet({k: jnp.full(3, v) for k, v in typical.as_floats().items()}).replace(
        growth=jnp.array([0.001, 0.001, 50.0])
    )
    with pytest.raises(lenapk.SolverError, match="patient 42 on day 0"):
        solve_checked(model, p, jnp.broadcast_to(short_regimen.doses, (3, short_regimen.n_days)),
                      settings=SolverSettings(max_steps_per_day=64), patient_ids=[40, 41, 42])


def test_batch_with_scalar_initial_state(model, typical, short_regimen):
    """Only a PK parameter varies: the initial state has no batch axis and must be broadcast."""
    p = typical.replace(cl=jnp.array([8.0, 12.0]))
    traj = solve_days_jit(model, p, jnp.broadcast_to(short_regimen.doses, (2, short_regimen.n_days)))
    single = solve_days_jit(model, typical.replace(cl=8.0), short_regimen.doses)
    np.testing.assert_allclose(traj.day_obs["anc"][0], single.day_obs["anc"], rtol=1e-5)
