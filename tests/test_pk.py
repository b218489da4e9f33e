"""Closed-form PK (lenapk.OneCompartment, lenapk.TwoCompartment) against a tight scipy solve of the
linear PK ODE; smoothness through ka = decay rate; mass balance; the CLL model's covariates."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference_cll
from scipy.integrate import quad, solve_ivp

import lenapk
from lenapk import OneCompartment, PKConstants, TwoCompartment
from lenapk._core import exprel

K, V = 12.0 / 68.8, 68.8
ONE = OneCompartment()
TWO = TwoCompartment()
# two-compartment micro-constants (1/h) and V1 (L); decay rates from numpy's eigenvalues below
K10, K12, K21, V1 = 0.25, 0.15, 0.075, 20.0


def _decay_rates(k10, k12, k21):
    """(alpha, beta) of the central/peripheral block, from numpy (independent of lenapk's formula)."""
    lam = np.sort(-np.linalg.eigvals(np.array([[-(k10 + k12), k21], [k12, -k21]])).real)
    return lam[1], lam[0]


ALPHA, BETA = _decay_rates(K10, K12, K21)

# (time_h, compartment index, amount mg, infusion duration h): depot doses, central boluses and a
# zero-order infusion into the central compartment (overlapping a depot dose)
EVENTS = [
    (0.0, 0, 10.0, 0.0),
    (7.5, 1, 4.0, 0.0),
    (12.0, 0, 10.0, 0.0),
    (20.0, 1, 30.0, 2.5),
    (21.0, 0, 5.0, 0.0),
    (36.0, 1, 2.0, 0.0),
    (40.0, 0, 25.0, 0.0),
]
T_OUT = np.concatenate([np.arange(0.0, 60.0, 0.7), [7.5, 20.0, 20.01, 21.5, 22.5, 22.49]])
T_OUT = np.unique(T_OUT)


def _pk(ka, two):
    if two:
        return PKConstants(ka=ka, k=K10, v=V1, k12=K12, k21=K21)
    return PKConstants(ka=ka, k=K, v=V)


def _ode_amounts(events, ka, two, t_out):
    """Amounts (depot, central[, peripheral]) at ``t_out`` (h); a bolus at an output time is
    given after it.  DOP853 at rtol 1e-12 on the linear ODE."""
    k, k12, k21 = (K10, K12, K21) if two else (K, 0.0, 0.0)

    def rhs(t, y, rate):
        d = [-ka * y[0], ka * y[0] - (k + k12) * y[1] + (k21 * y[2] if two else 0.0) + rate]
        return d + ([k12 * y[1] - k21 * y[2]] if two else [])

    bounds = sorted({0.0, *[e[0] for e in events], *[e[0] + e[3] for e in events if e[3] > 0], t_out[-1]})
    y = np.zeros(3 if two else 2)
    out = [y.copy() for _ in t_out[t_out <= 0]]
    a = 0.0
    for b in bounds:
        if b > a:
            rate = sum(e[2] / e[3] for e in events if e[3] > 0 and e[0] <= a < e[0] + e[3])
            ts = t_out[(t_out > a) & (t_out <= b)]
            sol = solve_ivp(
                rhs,
                (a, b),
                y,
                method="DOP853",
                rtol=1e-12,
                atol=1e-14,
                args=(rate,),
                t_eval=np.unique(np.append(ts, b)),
            )
            assert sol.success
            out += list(sol.y[:, : ts.size].T)
            y, a = sol.y[:, -1], b
        for e in events:
            if e[0] == b and e[3] == 0:
                y = y.copy()
                y[e[1]] += e[2]
    return np.array(out)


@functools.partial(jax.jit, static_argnums=(0,))
def _advance(two, x, tau, pk, rate):
    return (TWO if two else ONE).advance(x, tau, pk, rate)


@functools.partial(jax.jit, static_argnums=(0,))
def _outputs(two, x, tau, pk, rate):
    """Amounts and concentration at the times ``tau`` (h) after the state ``x``."""
    model = TWO if two else ONE
    return jax.vmap(lambda s: model.advance(x, s, pk, rate))(tau), model.concentration(x, tau, pk, rate)


def _closed_form(events, ka, two, t_out):
    """(amounts, concentration) at ``t_out`` from lenapk's closed form, advancing the state from
    one event (dose or infusion start/end) to the next; an output at a dose time is pre-dose."""
    pk = _pk(float(ka), two)
    bounds = sorted({0.0, *[e[0] for e in events], *[e[0] + e[3] for e in events if e[3] > 0], t_out[-1]})
    x = jnp.zeros(3 if two else 2)
    amounts, conc = [list(np.asarray(x)) for t in t_out if t == 0.0], [0.0 for t in t_out if t == 0.0]
    for a, b in zip(bounds[:-1], bounds[1:]):
        for e in events:
            if e[0] == a and e[3] == 0:
                x = x.at[e[1]].add(e[2])
        rate = sum(e[2] / e[3] for e in events if e[3] > 0 and e[0] <= a < e[0] + e[3])
        rate = None if rate == 0 else rate  # the bolus-only formula, or the one with an infusion
        tau = np.array([t - a for t in t_out if a < t <= b])
        if tau.size:
            padded = np.zeros(t_out.size)  # one shape for every call: one compilation
            padded[: tau.size] = tau
            got = _outputs(two, x, jnp.asarray(padded), pk, rate)
            amounts += list(np.asarray(got[0])[: tau.size])
            conc += list(np.asarray(got[1])[: tau.size])
        x = _advance(two, x, float(b - a), pk, rate)
    return np.array(amounts), np.array(conc)


KA_CASES = [
    ("one", 3.0),
    ("one", 0.5),
    ("one", K),
    ("one", K * (1 + 1e-9)),
    ("one", K * (1 - 1e-7)),
    ("two", 1.0),
    ("two", ALPHA),
    ("two", BETA),
    ("two", BETA * (1 + 1e-9)),
    ("two", ALPHA * (1 - 1e-8)),
]


@pytest.mark.parametrize("kind, ka", KA_CASES)
def test_closed_form_matches_ode(kind, ka):
    """Depot doses, central boluses and a 2.5 h infusion overlapping a depot dose; amounts in every
    compartment and the concentration (ng/mL = 1000 A_c / V) against DOP853 at rtol 1e-12."""
    two = kind == "two"
    ref = _ode_amounts(EVENTS, ka, two, T_OUT)
    got, conc = _closed_form(EVENTS, ka, two, T_OUT)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-10)  # mg; doses of 2-30 mg
    np.testing.assert_allclose(conc, 1000.0 * ref[:, 1] / (V1 if two else V), rtol=1e-9, atol=1e-8)  # ng/mL


def test_two_compartment_decay_rates_match_eigenvalues():
    """Sum and product of lenapk's (alpha, beta), and the closed form with one central bolus,
    against the eigen-decomposition: A_c(t) = A0 (a e^{-alpha t} + b e^{-beta t}) with
    a = (alpha - k21)/(alpha - beta), b = (k21 - beta)/(alpha - beta)."""
    t = np.linspace(0.0, 100.0, 41)
    a, b = (ALPHA - K21) / (ALPHA - BETA), (K21 - BETA) / (ALPHA - BETA)
    want = 7.0 * (a * np.exp(-ALPHA * t) + b * np.exp(-BETA * t))
    got = TWO.central_amount(jnp.array([0.0, 7.0, 0.0]), jnp.asarray(t), _pk(1.0, True))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("two", [False, True])
def test_mass_balance(two):
    """Input = amounts left + eliminated, where eliminated = k10 * integral of A_c (quad of the
    closed form), for a depot dose plus an infusion over 30 h; and with k10 = 0 the total is
    conserved exactly."""
    pk = _pk(0.8, two)
    model = TWO if two else ONE
    x0 = jnp.array([10.0, 3.0, 1.0] if two else [10.0, 3.0])
    rate = 2.0
    for tau in (0.5, 4.0, 30.0):
        left = float(jnp.sum(model.advance(x0, tau, pk, rate)))
        eliminated = (
            pk.k * quad(lambda s: float(model.central_amount(x0, s, pk, rate)), 0.0, tau, epsabs=1e-13, epsrel=1e-12)[0]
        )
        assert left + eliminated == pytest.approx(float(jnp.sum(x0)) + rate * tau, rel=1e-10)
    closed = PKConstants(ka=0.8, k=0.0, v=V1, k12=K12, k21=K21) if two else PKConstants(ka=0.8, k=0.0, v=V)
    for tau in (0.5, 4.0, 30.0):
        total = float(jnp.sum(model.advance(x0, tau, closed, rate)))
        assert total == pytest.approx(float(jnp.sum(x0)) + rate * tau, rel=1e-12)


def _fd(f, x, h):
    return (f(x + h) - f(x - h)) / (2 * h)


@pytest.mark.parametrize("kind, at", [("one", "k"), ("two", "alpha"), ("two", "beta")])
def test_gradient_finite_through_ka_equal_decay_rate(kind, at):
    """d conc / d ka (reverse mode) at ka = k (one compartment) or ka = alpha, beta (two), against
    a central finite difference; also d/dk and d/dk12 through the same point."""
    two = kind == "two"
    ka0 = {"k": K, "alpha": ALPHA, "beta": BETA}[at]
    model = TWO if two else ONE
    x0 = jnp.array([10.0, 1.0, 0.5] if two else [10.0, 1.0])

    def conc(ka, k=K10 if two else K, k12=K12):
        pk = PKConstants(ka=ka, k=k, v=V1, k12=k12, k21=K21) if two else PKConstants(ka=ka, k=k, v=V)
        return model.concentration(x0, 5.0, pk, 0.7)

    g = jax.grad(conc)(ka0)
    fd = _fd(lambda a: float(conc(a)), ka0, 1e-5)
    assert np.isfinite(float(g)) and float(g) == pytest.approx(fd, rel=1e-6)
    gk = jax.grad(conc, argnums=1)(ka0, K10 if two else K)
    fdk = _fd(lambda k: float(conc(ka0, k)), K10 if two else K, 1e-6)
    assert np.isfinite(float(gk)) and float(gk) == pytest.approx(fdk, rel=1e-6)
    if two:
        g12 = jax.grad(conc, argnums=2)(ka0, K10, K12)
        fd12 = _fd(lambda k12: float(conc(ka0, K10, k12)), K12, 1e-6)
        assert np.isfinite(float(g12)) and float(g12) == pytest.approx(fd12, rel=1e-6)


def test_exprel_smooth_through_zero():
    xs = jnp.array([-1e-3, -1e-7, 0.0, 1e-7, 1e-3, -30.0, 5.0])
    ref = np.array([np.expm1(x) / x if x != 0 else 1.0 for x in np.asarray(xs)])
    np.testing.assert_allclose(np.asarray(exprel(xs)), ref, rtol=1e-12)
    grads = jax.vmap(jax.grad(exprel))(xs)
    # d/dx (e^x - 1)/x = (x e^x - e^x + 1) / x^2, limit 1/2 at 0
    x = np.asarray(xs)
    with np.errstate(invalid="ignore", divide="ignore"):
        want = np.where(x == 0, 0.5, (x * np.exp(x) - np.expm1(x)) / x**2)
    np.testing.assert_allclose(np.asarray(grads), want, rtol=1e-6)


def test_exposure_proportional_to_dose():
    pk = _pk(3.0, False)
    t = jnp.linspace(0.1, 24, 20)
    c5 = ONE.concentration(jnp.array([5.0, 0.0]), t, pk)
    c25 = ONE.concentration(jnp.array([25.0, 0.0]), t, pk)
    np.testing.assert_allclose(np.asarray(c25), 5 * np.asarray(c5), rtol=1e-13)


@pytest.mark.parametrize("ffm, crcl", [(40.0, 90.0), (70.0, 90.0), (40.0, 45.0), (70.0, 120.0), (55.0, 45.0)])
def test_cll_pk_covariates_follow_hughes(model, typical, ffm, crcl):
    """LenalidomideCLL.pk_constants away from the 55 kg / 90 mL/min reference:
    CL/F = 12 (FFM/55)^0.75 ((1 - f_r) + f_r CrCl/90) L/h with f_r = 0.784 (renal + non-renal),
    V/F = 68.8 FFM/55 L (Hughes 2019)."""
    pk = model.pk_constants(typical.replace(ffm=ffm, crcl=crcl))
    cl = 12.0 * (ffm / 55.0) ** 0.75 * (0.216 + 0.784 * crcl / 90.0)
    v = 68.8 * ffm / 55.0
    assert float(pk.v) == pytest.approx(v, rel=1e-14)
    assert float(pk.k) == pytest.approx(cl / v, rel=1e-14)
    assert float(pk.ka) == pytest.approx(3.0, rel=1e-14)


def test_cll_concentration_at_40_kg_matches_reference(typical):
    """simulate() at FFM 40 kg, CrCl 45 mL/min: sub-day concentrations over 3 daily 10 mg doses
    against the scipy reference (PK as ODE states, its own statement of the covariates)."""
    p = typical.replace(ffm=40.0, crcl=45.0)
    times = np.array([0.0, 0.02, 0.1, 0.5, 1.0, 1.04, 1.7, 2.0, 2.3, 2.99])
    df = lenapk.simulate(lenapk.Regimen.cycles(10, n_cycles=1).with_days(3), p, times=times)
    ys = reference_cll.solve_events(p.as_floats(), [0.0, 24.0, 48.0], [10.0] * 3, times)
    conc = 1000.0 * ys[:, 1] / (68.8 * 40.0 / 55.0)
    np.testing.assert_allclose(df["conc_ng_ml"].to_numpy(), conc, rtol=1e-8, atol=1e-12)
    heavier = lenapk.simulate(lenapk.Regimen.cycles(10, n_cycles=1).with_days(3), typical, times=times)
    assert df["conc_ng_ml"].iloc[2] > 1.2 * heavier["conc_ng_ml"].iloc[2]  # smaller V: higher peak
