"""Closed-form linear PK for estimation (lenapk.estimation._closed_form, ADVAN1-4) against a tight
scipy solve of the compartment ODEs, explicit dose trains (steady state), finite differences
(gradients, also at ka == k and ka == alpha) and the textbook bolus formula."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

import lenapk  # noqa: F401  (float64)
from lenapk.estimation._closed_form import PK_STRUCTURES, two_compartment_rates
from lenapk.estimation._subjects import Subjects


class Dose(NamedTuple):
    time: float
    amt: float
    cmt: int
    dur: float = 0.0  # 0: bolus
    ii: float = 0.0
    ss: bool = False
    epoch: int = 0


def _arrays(obs, doses, m=None, k=None, obs_epoch=None):
    """One subject's arrays, padded to m observations and k doses (padding: amount 0, epoch -1)."""
    m, k = m or len(obs), k or len(doses)
    pad_o, pad_d = m - len(obs), k - len(doses)
    d = np.array([tuple(x) for x in doses], dtype=float).reshape(-1, 7)
    epoch = np.zeros(len(obs), int) if obs_epoch is None else np.asarray(obs_epoch)
    return {
        "obs_time": np.r_[obs, np.full(pad_o, 1e6)],  # far-away padding: must stay finite
        "dv": np.zeros(m),
        "obs_mask": np.r_[np.ones(len(obs), bool), np.zeros(pad_o, bool)],
        "obs_cmt": np.ones(m, int),
        "obs_output": np.zeros(m, int),
        "obs_epoch": np.r_[epoch, np.full(pad_o, -1)],
        "obs_row": np.r_[np.arange(len(obs)), np.full(pad_o, -1)],
        "dose_time": np.r_[d[:, 0], np.zeros(pad_d)],
        "dose_amt": np.r_[d[:, 1], np.zeros(pad_d)],
        "dose_cmt": np.r_[d[:, 2].astype(int), np.ones(pad_d, int)],
        "dose_duration": np.r_[d[:, 3], np.zeros(pad_d)],
        "dose_ii": np.r_[d[:, 4], np.zeros(pad_d)],
        "dose_ss": np.r_[d[:, 5].astype(bool), np.zeros(pad_d, bool)],
        "dose_epoch": np.r_[d[:, 6].astype(int), np.full(pad_d, -1)],
    }


def _subjects(*arrays, ids):
    """One subject's arrays (one given) or a batch of subjects (several, stacked)."""
    join = np.stack if len(arrays) > 1 else lambda xs: xs[0]
    return Subjects(**{key: jnp.asarray(join([a[key] for a in arrays])) for key in arrays[0]}, covariates={}, ids=ids)


# one padded size for every subject below: each structure's prediction compiles once
M, K = 96, 208


def subject(obs, doses, m=M, k=K, **kw):
    """One subject as ``vmap`` passes it (arrays without the subject axis)."""
    return _subjects(_arrays(np.asarray(obs, float), doses, m=m, k=k, **kw), ids=(1,))


def _p(**kw):
    return {key: jnp.asarray(float(v)) for key, v in kw.items()}


NO_LAG = _p(F=1.0, ALAG=0.0)  # the defaults, given so that all calls share one compilation


PARAMS = {
    "one_cmt_iv": _p(CL=3.0, V=20.0, **NO_LAG),
    "one_cmt_oral": _p(CL=3.0, V=20.0, KA=0.9, **NO_LAG),
    "two_cmt_iv": _p(CL=3.0, V=20.0, Q=4.0, VP=50.0, **NO_LAG),
    "two_cmt_oral": _p(CL=3.0, V=20.0, Q=4.0, VP=50.0, KA=0.9, **NO_LAG),
}
CENTRAL = {"one_cmt_iv": 1, "one_cmt_oral": 2, "two_cmt_iv": 1, "two_cmt_oral": 2}


def _matrix(name, p):
    """The compartment ODE's rate matrix (amounts by CMT), independent of the module's modes."""
    p = {key: float(v) for key, v in p.items()}
    k = p["CL"] / p["V"]
    if name.startswith("one"):
        block = np.array([[-k]])
    else:
        k12, k21 = p["Q"] / p["V"], p["Q"] / p["VP"]
        block = np.array([[-(k + k12), k21], [k12, -k21]])
    if name.endswith("iv"):
        return block
    n = block.shape[0] + 1
    a = np.zeros((n, n))
    a[1:, 1:] = block
    a[0, 0], a[1, 0] = -p["KA"], p["KA"]
    return a


def ode_concentrations(name, p, doses, obs):
    """Central concentration at ``obs`` by LSODA (rtol 1e-11) on the compartment ODEs, piecewise
    between dose events; F scales CMT 1 amounts (an infusion keeps its rate), ALAG delays them; a
    bolus at an observation time is given before it."""
    a, f, lag = _matrix(name, p), float(p.get("F", 1.0)), float(p.get("ALAG", 0.0))
    events = []  # (start, end, cmt index, amount)
    for d in doses:
        start, amt, dur = d.time + (lag if d.cmt == 1 else 0.0), d.amt * (f if d.cmt == 1 else 1.0), d.dur
        dur = dur * (f if d.cmt == 1 else 1.0)
        events.append((start, start + dur, d.cmt - 1, amt))
    scale = sum(e[3] for e in events)
    cuts = sorted({0.0, *(e[0] for e in events), *(e[1] for e in events), max(obs) + 1.0})
    y, out = np.zeros(a.shape[0]), {}
    for t0, t1 in zip(cuts[:-1], cuts[1:]):
        rate = np.zeros_like(y)
        for start, end, c, amt in events:
            if end > start and start <= t0 < end:
                rate[c] += amt / (end - start)
            if end == start == t0:
                y[c] += amt
        out.update((t, y[CENTRAL[name] - 1]) for t in obs if t == t0)
        t_eval = [t for t in obs if t0 < t < t1]
        sol = solve_ivp(
            lambda t, x: a @ x + rate,
            (t0, t1),
            y,
            method="LSODA",
            jac=lambda t, x: a,
            t_eval=[t0, *t_eval, t1],
            rtol=1e-11,
            atol=1e-12 * scale,
        )
        out.update(zip(t_eval, sol.y[CENTRAL[name] - 1, 1:-1]))
        y = sol.y[:, -1]
    return np.array([out[t] for t in obs]) / float(p["V"])


OBS = np.unique(np.r_[np.arange(0.7, 60.0, 0.9), 0.5, 12.0, 12.5, 20.5, 21.0, 22.9, 23.1, 40.0])

# doses by structure: boluses, an infusion overlapping a bolus, doses into every compartment
DOSES = {
    "one_cmt_iv": [Dose(0.0, 100.0, 1), Dose(12.0, 50.0, 1), Dose(20.0, 80.0, 1, 3.0), Dose(21.0, 30.0, 1)],
    "one_cmt_oral": [
        Dose(0.0, 100.0, 1),
        Dose(12.0, 50.0, 2),
        Dose(20.0, 80.0, 2, 3.0),
        Dose(21.0, 30.0, 1),
        Dose(30.0, 60.0, 1, 4.0),
    ],
    "two_cmt_iv": [
        Dose(0.0, 100.0, 1),
        Dose(12.0, 50.0, 2),
        Dose(20.0, 80.0, 1, 3.0),
        Dose(21.0, 30.0, 1),
        Dose(30.0, 60.0, 2, 4.0),
    ],
    "two_cmt_oral": [
        Dose(0.0, 100.0, 1),
        Dose(12.0, 50.0, 2),
        Dose(20.0, 80.0, 2, 3.0),
        Dose(21.0, 30.0, 1),
        Dose(30.0, 60.0, 1, 4.0),
        Dose(40.0, 40.0, 3),
    ],
}


JIT = {name: jax.jit(s.predict) for name, s in PK_STRUCTURES.items()}
JACOBIAN = {name: jax.jit(jax.jacfwd(s.predict)) for name, s in PK_STRUCTURES.items()}


def predict(name, p, subj):
    """The prediction at the subject's real (unpadded) observations."""
    return np.asarray(JIT[name](p, subj))[np.asarray(subj.obs_mask)]


@pytest.mark.parametrize("lag", [False, True], ids=["plain", "F_ALAG"])
@pytest.mark.parametrize("name", list(PK_STRUCTURES))
def test_matches_the_ode(name, lag):
    p = {**PARAMS[name], **(_p(F=0.7, ALAG=0.5) if lag else {})}
    got = predict(name, p, subject(OBS, DOSES[name]))
    want = ode_concentrations(name, p, DOSES[name], OBS)
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10 * want.max())


def test_bolus_textbook_formula():
    t = np.linspace(0.0, 48.0, 25)
    subj = subject(t, [Dose(0.0, 100.0, 1)])
    got = predict("one_cmt_iv", PARAMS["one_cmt_iv"], subj)
    np.testing.assert_allclose(got, 100.0 / 20.0 * np.exp(-3.0 / 20.0 * t), rtol=1e-13, atol=0)
    # F and ALAG absent: their defaults 1 and 0
    plain = jax.jit(PK_STRUCTURES["one_cmt_iv"].predict)(_p(CL=3.0, V=20.0), subj)
    np.testing.assert_array_equal(np.asarray(plain)[: len(t)], got)


def _alpha_beta(p):
    return [float(x) for x in two_compartment_rates(p["CL"], p["V"], p["Q"], p["VP"])[:2]]


def _jacobian_fd(name, p, subj, rel=1e-5):
    out = {}
    for key in p:
        h = rel * max(abs(float(p[key])), 1.0)
        up, down = ({**p, key: p[key] + s} for s in (h, -h))
        out[key] = (predict(name, up, subj) - predict(name, down, subj)) / (2 * h)
    return out


def _check_gradients(name, p, subj):
    jac = JACOBIAN[name](p, subj)
    assert all(np.all(np.isfinite(v)) for v in jac.values())  # padding included
    jac = {key: np.asarray(v)[np.asarray(subj.obs_mask)] for key, v in jac.items()}
    fd = _jacobian_fd(name, p, subj)
    for key in p:
        np.testing.assert_allclose(jac[key], fd[key], rtol=1e-6, atol=1e-6 * np.abs(fd[key]).max(), err_msg=key)


# F and ALAG on; observations away from the lagged dose times (the prediction jumps there)
GRAD_OBS = np.array([0.3, 1.1, 4.0, 13.0, 21.7, 23.9, 31.0, 33.0, 45.0])


@pytest.mark.parametrize("name", list(PK_STRUCTURES))
def test_gradients_match_finite_differences(name):
    p = {**PARAMS[name], **_p(F=0.7, ALAG=0.5)}
    _check_gradients(name, p, subject(GRAD_OBS, DOSES[name]))


@pytest.mark.parametrize("name, which", [("one_cmt_oral", 0), ("two_cmt_oral", 0), ("two_cmt_oral", 1)])
def test_ka_equal_to_a_decay_rate(name, which):
    """KA == k (one compartment), KA == alpha or beta (two): the exact limit, finite gradients."""
    base = PARAMS[name]
    rate = float(base["CL"] / base["V"]) if name == "one_cmt_oral" else _alpha_beta(base)[which]
    p = {**base, "KA": jnp.asarray(rate)}
    subj = subject(OBS, DOSES[name])
    at = predict(name, p, subj)
    near = predict(name, {**p, "KA": jnp.asarray(rate * (1 + 1e-7))}, subj)
    assert np.all(np.isfinite(at))
    np.testing.assert_allclose(at, near, rtol=1e-6)
    # near the tie, no cancellation: the step from the tie is its first-order Taylor term (a
    # difference quotient of the rates would be off by ~1e-16 / 1e-7 here)
    slope = np.asarray(JACOBIAN[name](p, subj)["KA"])[np.asarray(subj.obs_mask)]
    np.testing.assert_allclose(near, at + slope * rate * 1e-7, rtol=1e-12)
    want = ode_concentrations(name, p, DOSES[name], OBS)
    np.testing.assert_allclose(at, want, rtol=1e-8, atol=1e-10 * want.max())
    _check_gradients(name, {**p, **_p(F=0.7)}, subject(GRAD_OBS, DOSES[name]))


SS_CASES = {
    "one_cmt_iv": [Dose(100.0, 100.0, 1)],
    "one_cmt_iv_inf": [Dose(100.0, 100.0, 1, 2.0)],
    "two_cmt_iv": [Dose(100.0, 100.0, 1, 2.0)],
    "one_cmt_oral": [Dose(100.0, 100.0, 1)],
    "two_cmt_oral": [Dose(100.0, 100.0, 1, 2.0)],
    "two_cmt_oral_central": [Dose(100.0, 100.0, 2, 2.0)],
}


@pytest.mark.parametrize("case", list(SS_CASES))
def test_steady_state_is_an_infinite_dose_train(case):
    """SS=1 dose every II = 12 equals 200 explicit doses (F and ALAG: lagged, shortened history)."""
    name = case.removesuffix("_inf").removesuffix("_central")
    p = {**PARAMS[name], **_p(F=0.8, ALAG=1.5)}
    (d,) = SS_CASES[case]
    obs = np.r_[100.0, np.linspace(100.2, 130.0, 40)]
    steady = predict(name, p, subject(obs, [d._replace(ii=12.0, ss=True)]))
    train = [d._replace(time=d.time - 12.0 * j) for j in range(200)]
    np.testing.assert_allclose(steady, predict(name, p, subject(obs, train)), rtol=1e-9)
    assert np.all(steady > 0)


def test_epochs_separate_doses():
    """A dose in epoch 0 does not reach an observation in epoch 1."""
    obs, epochs = [2.0, 5.0, 8.0], [0, 1, 1]
    both = [Dose(0.0, 100.0, 1), Dose(4.0, 50.0, 1, epoch=1)]
    got = predict("two_cmt_oral", PARAMS["two_cmt_oral"], subject(obs, both, obs_epoch=epochs))
    first = predict("two_cmt_oral", PARAMS["two_cmt_oral"], subject(obs[:1], both[:1]))
    later = predict("two_cmt_oral", PARAMS["two_cmt_oral"], subject(obs[1:], [both[1]._replace(epoch=0)]))
    np.testing.assert_allclose(got, np.r_[first, later], rtol=1e-14)


def test_vmap_over_padded_subjects():
    name, structure = "two_cmt_oral", PK_STRUCTURES["two_cmt_oral"]
    obs = [OBS[:30], OBS[10:]]
    doses = [DOSES[name], DOSES[name][:3]]
    params = [PARAMS[name], {**PARAMS[name], **_p(CL=5.0, KA=0.3, F=0.6, ALAG=0.25)}]
    m, k = max(map(len, obs)) + 2, max(map(len, doses)) + 1
    batch = _subjects(*(_arrays(o, d, m=m, k=k) for o, d in zip(obs, doses)), ids=(1, 2))
    stacked = {key: jnp.stack([q[key] for q in params]) for key in params[0]}
    got = np.asarray(jax.jit(jax.vmap(structure.predict))(stacked, batch))  # padding included
    assert np.all(np.isfinite(got))
    for i in range(2):
        alone = predict(name, params[i], subject(obs[i], doses[i]))  # padded to (M, K) instead
        np.testing.assert_allclose(got[i, : len(obs[i])], alone, rtol=1e-13)


def test_steady_state_at_the_tie_reverse_mode():
    """KA == alpha with steady-state depot infusions and boluses: the explicit train again, and
    jax.grad (reverse mode, what an objective uses) finite and equal to the forward Jacobian."""
    name = "two_cmt_oral"
    p = {**PARAMS[name], **_p(F=0.8, ALAG=1.5), "KA": jnp.asarray(_alpha_beta(PARAMS[name])[0])}
    doses = [Dose(100.0, 100.0, 1, 2.0), Dose(100.0, 30.0, 1)]
    obs = np.r_[100.0, np.linspace(100.2, 130.0, 40)]
    subj = subject(obs, [d._replace(ii=12.0, ss=True) for d in doses])
    train = [d._replace(time=d.time - 12.0 * j) for j in range(100) for d in doses]
    np.testing.assert_allclose(predict(name, p, subj), predict(name, p, subject(obs, train)), rtol=1e-9)
    grad = jax.jit(jax.grad(lambda q, s: PK_STRUCTURES[name].predict(q, s).sum()))(p, subj)
    jac = JACOBIAN[name](p, subj)
    for key in p:
        assert np.isfinite(grad[key]), key
        np.testing.assert_allclose(grad[key], np.sum(jac[key]), rtol=1e-10, err_msg=key)
