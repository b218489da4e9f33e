"""ODE predictions (lenapk.estimation._ode): exact solutions, vmap, gradients, engine models and
the FOCE-I objective."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy.integrate import solve_ivp

import lenapk
from lenapk.estimation._error import ResidualError
from lenapk.estimation._model import PopulationModel, Theta
from lenapk.estimation._objective import subject_objectives
from lenapk.estimation._ode import OdeStructure, model_structure
from lenapk.estimation._subjects import Subjects
from lenapk.models.turnover import TwoCompartmentTurnover

# XLA's backend optimisation costs more compile time than these small solves ever run.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _arrays(obs, doses, m=None, k=None, dose_epoch=None, obs_epoch=None, ss=False):
    """One subject's arrays, padded to ``m`` observations and ``k`` doses.  ``doses``: rows
    (time, amount, cmt, duration)."""
    m, k = m or len(obs), k or len(doses)
    pad = lambda a, n, fill=0: np.concatenate([np.asarray(a, float), np.full(n - len(a), fill)])  # noqa: E731
    d = np.asarray(doses, float).reshape(-1, 4)
    ep = np.zeros(len(d)) if dose_epoch is None else np.asarray(dose_epoch)
    oep = np.zeros(len(obs)) if obs_epoch is None else np.asarray(obs_epoch)
    return dict(
        obs_time=pad(obs, m),
        dv=pad(np.ones(len(obs)), m),
        obs_mask=pad(np.ones(len(obs)), m).astype(bool),
        obs_cmt=np.ones(m, int),
        obs_output=np.zeros(m, int),
        obs_epoch=pad(oep, m).astype(int),
        obs_row=pad(np.arange(len(obs)), m, -1).astype(int),
        dose_time=pad(d[:, 0], k),
        dose_amt=pad(d[:, 1], k),
        dose_cmt=pad(d[:, 2], k, 1).astype(int),
        dose_duration=pad(d[:, 3], k),
        dose_ii=np.zeros(k),
        dose_ss=np.full(k, ss),
        dose_epoch=pad(ep, k, -1).astype(int),
    )


def make_subjects(*arrays, ids=None):
    """Stack per-subject arrays (same padded shapes) into :class:`Subjects`."""
    stacked = {key: jnp.asarray(np.stack([a[key] for a in arrays])) for key in arrays[0]}
    return Subjects(**stacked, covariates={}, ids=tuple(range(1, len(arrays) + 1)) if ids is None else ids)


def one(arrays):
    return make_subjects(arrays).subject(0)


IV = OdeStructure(
    rhs=lambda t, y, p: -p["CL"] / p["V"] * y,
    initial_state=lambda p: jnp.zeros(1),
    dose_states=(0,),
    output=lambda y, p: y[0] / p["V"],
    parameter_names=("CL", "V"),
    rtol=1e-9,
    atol=1e-12,
    max_steps=256,
)
P_IV = {"CL": 2.0, "V": 10.0}
M, K = 7, 4  # the padded shapes of every IV subject below: one compilation serves them all
PREDICT_IV = jit(IV.predict)


def iv_closed_form(p, subject):
    """C = sum_d A_d / V exp(-CL/V (t - t_d)) over doses at or before t."""
    tau = subject.obs_time[:, None] - subject.dose_time[None, :]
    on = (tau >= 0) & (subject.dose_epoch[None, :] >= 0)
    e = jnp.exp(-p["CL"] / p["V"] * jnp.where(on, tau, 0.0))
    return jnp.sum(jnp.where(on, subject.dose_amt * e, 0.0), axis=1) / p["V"]


# Doses every 24 h; observations between, at a dose time (post-dose) and unsorted with padding.
DOSES_24 = [(0.0, 100.0, 1, 0.0), (24.0, 100.0, 1, 0.0), (48.0, 100.0, 1, 0.0)]
SUBJECT_A = _arrays([1.0, 24.0, 5.0, 30.0, 50.5, 71.0], DOSES_24, m=M, k=K)
SUBJECT_B = _arrays([0.5, 12.0, 36.0], DOSES_24[:2], m=M, k=K)
SUBJECT_C = _arrays([2.0, 3.0, 8.0, 26.0, 47.0, 49.0, 60.0], [(0.0, 80.0, 1, 0.0), (46.0, 50.0, 1, 0.0)], m=M, k=K)
THREE = make_subjects(SUBJECT_A, SUBJECT_B, SUBJECT_C)


@pytest.fixture(scope="module")
def iv_vmapped():
    return jit(jax.vmap(IV.predict, in_axes=(None, 0)))(P_IV, THREE)


def test_iv_bolus_matches_the_closed_form(iv_vmapped):
    for i in range(3):
        subject = THREE.subject(i)
        mask = np.asarray(subject.obs_mask)
        ref = np.asarray(iv_closed_form(P_IV, subject))[mask]
        np.testing.assert_allclose(np.asarray(iv_vmapped[i])[mask], ref, rtol=1e-7)


def test_vmap_equals_per_subject_calls(iv_vmapped):
    for i in range(3):
        np.testing.assert_allclose(iv_vmapped[i], PREDICT_IV(P_IV, THREE.subject(i)), rtol=1e-12, atol=1e-14)


def test_oral_with_infusion_matches_solve_ivp():
    """Depot (CMT 1, F and ALAG) -> central; a 2 h infusion into central (CMT 2) at 30 h."""
    oral = OdeStructure(
        rhs=lambda t, y, p: jnp.stack([-p["KA"] * y[0], p["KA"] * y[0] - p["CL"] / p["V"] * y[1]]),
        initial_state=lambda p: jnp.zeros(2),
        dose_states=(0, 1),
        output=lambda y, p: y[1] / p["V"],
        max_steps=256,
    )
    p = {"CL": 3.0, "V": 20.0, "KA": 0.8, "F": 0.7, "ALAG": 0.5}
    obs = [0.25, 1.0, 3.0, 12.0, 24.5, 30.0, 31.0, 32.0, 40.0]
    subject = one(_arrays(obs, [(0.0, 100.0, 1, 0.0), (24.0, 100.0, 1, 0.0), (30.0, 50.0, 2, 2.0)]))
    got = np.asarray(jit(oral.predict)(p, subject))

    def rhs(t, y):
        rate = 25.0 if 30.0 <= t < 32.0 else 0.0
        return [-p["KA"] * y[0], p["KA"] * y[0] - p["CL"] / p["V"] * y[1] + rate]

    y, t_prev, ref = np.zeros(2), 0.0, []
    breaks = [(0.5, 70.0), (24.5, 70.0), (30.0, 0.0), (32.0, 0.0), (41.0, 0.0)]
    for t_next, bolus in breaks:
        inside = [t for t in obs if t_prev <= t < t_next]
        sol = solve_ivp(rhs, (t_prev, t_next), y, t_eval=[*inside, t_next], rtol=1e-11, atol=1e-13, method="LSODA")
        ref += [c / p["V"] for c in sol.y[1][:-1]]
        y = sol.y[:, -1] + np.array([bolus, 0.0])
        t_prev = t_next
    np.testing.assert_allclose(got, ref, rtol=1e-6)


def test_grad_matches_finite_differences():
    subject = THREE.subject(0)
    f = jit(jax.value_and_grad(lambda cl: jnp.sum(IV.predict({"CL": cl, "V": 10.0}, subject) * subject.obs_mask)))
    h = 1e-4
    fd = (float(f(2.0 + h)[0]) - float(f(2.0 - h)[0])) / (2 * h)
    assert float(f(2.0)[1]) == pytest.approx(fd, rel=1e-5)


def test_steady_state_dose_predicts_nan():
    subject = one(_arrays([1.0, 2.0], [(0.0, 100.0, 1, 0.0)], m=M, k=K, ss=True))
    assert np.all(np.isnan(np.asarray(PREDICT_IV(P_IV, subject))))


def test_reset_with_a_dose_restarts_from_the_initial_state():
    """EVID 4 (epoch 1 dose at 10 h): the earlier dose no longer counts after it."""
    doses = [(0.0, 100.0, 1, 0.0), (10.0, 50.0, 1, 0.0)]
    arrays = _arrays([5.0, 12.0], doses, m=M, k=K, dose_epoch=[0, 1], obs_epoch=[0, 1])
    got = np.asarray(PREDICT_IV(P_IV, one(arrays)))[:2]
    np.testing.assert_allclose(got, [10.0 * np.exp(-1.0), 5.0 * np.exp(-0.4)], rtol=1e-7)


# ---------------------------------------------------------------------- engine models

DAILY = [24.0 * d for d in range(7)]


def _engine_check(model, observable, times_model, params=None):
    """model_structure vs lenapk.simulate for 10 mg orally once daily for 7 days."""
    regimen = lenapk.Regimen.from_events(DAILY, [10.0] * 7, compartment="depot", n_days=8)
    settings = lenapk.SolverSettings(rtol=1e-10, atol=1e-12, max_steps=8192)
    ref = lenapk.simulate(regimen, params, times=np.asarray(times_model), model=model, settings=settings)[observable]
    structure = model_structure(model, observable, max_steps=512)
    hours = np.asarray(times_model) * model.time_unit_h
    subject = one(_arrays(hours, [(t, 10.0, 1, 0.0) for t in DAILY]))
    given = {} if params is None else {k: params[k] for k in params.keys()}
    got = np.asarray(jit(structure.predict)(given, subject))
    np.testing.assert_allclose(got, ref.to_numpy(), rtol=1e-5)


def test_engine_model_with_closed_form_pk():
    model = TwoCompartmentTurnover()
    assert model.pk.closed_form
    _engine_check(model, "biomarker", [3.0, 30.0, 100.5, 160.0, 180.0])


def test_engine_flagship_model_with_three_outputs():
    """ANC, ALC and IgG observations of one subject (DVID indices 0, 1, 2, interleaved), each
    against lenapk.simulate's trajectory of that observable."""
    model = lenapk.LenalidomideCLL()
    params = model.default_params().replace(ka=2.0)
    names, times, outputs = ("anc", "alc", "igg"), [0.5, 2.25, 6.5, 7.5, 7.5], [0, 1, 2, 0, 1]
    regimen = lenapk.Regimen.from_events(DAILY, [10.0] * 7, compartment="depot", n_days=8)
    settings = lenapk.SolverSettings(rtol=1e-10, atol=1e-12, max_steps=8192)
    distinct = np.unique(times)
    ref = lenapk.simulate(regimen, params, times=distinct, model=model, settings=settings)
    expected = [ref[names[k]].to_numpy()[np.searchsorted(distinct, t)] for t, k in zip(times, outputs)]
    arrays = _arrays(np.asarray(times) * model.time_unit_h, [(t, 10.0, 1, 0.0) for t in DAILY])
    subject = one({**arrays, "obs_output": np.asarray(outputs)})
    structure = model_structure(model, names, max_steps=512)
    got = np.asarray(jit(structure.predict)({k: params[k] for k in params.keys()}, subject))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    with pytest.raises(ValueError, match="observable"):
        model_structure(model, [])


# ---------------------------------------------------------------------- FOCE-I objective


def _population_model(predict):
    def individual(theta, eta, covariates):
        return {"CL": jnp.exp(theta["tcl"] + eta["eta_cl"]), "V": jnp.exp(theta["tv"] + eta["eta_v"])}

    return PopulationModel(
        thetas=[Theta("tcl", np.log(2.0)), Theta("tv", np.log(10.0))],
        etas=["eta_cl", "eta_v"],
        omega=np.diag([0.1, 0.05]),
        individual=individual,
        predict=predict,
        error=ResidualError("proportional"),
        sigma=[Theta("prop_sd", 0.1)],
    )


@pytest.mark.slow  # ~25 s of compiling; test_estimation.py's slow ODE fit covers it end to end
def test_focei_objective_equals_the_closed_form():
    rng = np.random.default_rng(0)
    arrays = []
    for a in (SUBJECT_A, SUBJECT_B, SUBJECT_C):
        a = dict(a)
        a["dv"] = np.where(a["obs_mask"], rng.uniform(2.0, 10.0, a["dv"].shape), 0.0)
        arrays.append(a)
    subjects = make_subjects(*arrays)
    ode, closed = _population_model(IV.predict), _population_model(iv_closed_form)
    got = jit(lambda s: subject_objectives(ode, "focei", ode.initial(), s))(subjects)
    ref = jit(lambda s: subject_objectives(closed, "focei", closed.initial(), s))(subjects)
    np.testing.assert_allclose(got[0], ref[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(got[1], ref[1], atol=1e-6)


def test_more_outputs_in_the_data_than_observables_is_refused():
    """Two DVIDs against a one-observable structure: named before any computation."""
    from lenapk.estimation import EstimationError, estimate, read_nonmem

    model = lenapk.LenalidomideCLL()
    rows = [
        {"ID": 1, "TIME": 0.0, "AMT": 10.0, "EVID": 1, "CMT": 1, "DV": 0.0, "DVID": "alc"},
        {"ID": 1, "TIME": 24.0, "AMT": 0.0, "EVID": 0, "CMT": 2, "DV": 30.0, "DVID": "alc"},
        {"ID": 1, "TIME": 24.0, "AMT": 0.0, "EVID": 0, "CMT": 2, "DV": 5.0, "DVID": "anc"},
    ]
    data = read_nonmem(pd.DataFrame(rows))
    population = PopulationModel(
        thetas=[Theta("tkill", -3.3)],
        etas=["eta_kill"],
        omega=[[0.1]],
        individual=lambda th, e, c: {"kill": jnp.exp(th["tkill"] + e["eta_kill"])},
        predict=model_structure(model, "alc").predict,
        error=ResidualError("proportional"),
        sigma=[Theta("prop_sd", 0.1)],
    )
    with pytest.raises(EstimationError, match=r"2 outputs \(DVID\) but the model predicts 1 \(\['alc'\]\)"):
        estimate(population, data)
