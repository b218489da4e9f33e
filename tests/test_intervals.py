"""Prediction intervals (parameter uncertainty + sampling error of the reported statistic), the
leave-one-study-out script and the report's validation section."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import lenapk
from lenapk import SolverSettings
from lenapk.calibration import (
    FitResult,
    Objective,
    StudyDesign,
    _intervals,
    prediction_intervals,
    prediction_intervals_at,
    standard_visits,
)
from lenapk.calibration._intervals import count_quantiles, normal_quantiles

ROOT = Path(__file__).resolve().parents[1]
Z = stats.norm.ppf(0.95)


# ---------------------------------------------------------------------------- mixture quantiles
def test_normal_mixture_quantiles_of_a_known_gaussian_case():
    """Means drawn from N(mu, tau^2) mixed with a sampling SE sigma: the predictive distribution is
    N(mu, tau^2 + sigma^2); its 90% interval, and the coverage of fresh observations."""
    rng = np.random.default_rng(1)
    mu, tau, sigma = 10.0, 3.0, 4.0
    m = mu + tau * rng.standard_normal(4000)
    lo, hi = normal_quantiles(m, sigma, (0.05, 0.95))
    total = math.hypot(tau, sigma)
    assert lo == pytest.approx(mu - Z * total, abs=0.15) and hi == pytest.approx(mu + Z * total, abs=0.15)
    y = mu + total * rng.standard_normal(200_000)
    assert np.mean((y >= lo) & (y <= hi)) == pytest.approx(0.90, abs=0.005)
    # without parameter spread: the Normal quantiles themselves
    lo0, hi0 = normal_quantiles(np.full(5, mu), sigma, (0.05, 0.95))
    assert lo0 == pytest.approx(mu - Z * sigma, abs=1e-9) and hi0 == pytest.approx(mu + Z * sigma, abs=1e-9)


def test_count_quantiles_are_binomial_and_beta_binomial_mixtures():
    N, p = 44, 0.3
    for q in (0.05, 0.5, 0.95):
        assert count_quantiles(np.array([p]), N, (q,))[0] == stats.binom.ppf(q, N, p) / N
        r = 0.1
        a, b = p * (1 - r) / r, (1 - p) * (1 - r) / r
        assert count_quantiles(np.array([p]), N, (q,), rho=r)[0] == stats.betabinom.ppf(q, N, a, b) / N
    # a mixture of binomials over p ~ Beta(a, b) is the beta-binomial(N, a, b)
    rng = np.random.default_rng(2)
    a, b = 3.0, 7.0
    ps = rng.beta(a, b, 40_000)
    lo, hi = count_quantiles(ps, N, (0.05, 0.95))
    assert abs(lo - stats.betabinom.ppf(0.05, N, a, b) / N) <= 1 / N + 1e-12
    assert abs(hi - stats.betabinom.ppf(0.95, N, a, b) / N) <= 1 / N + 1e-12
    # wider than the binomial at the mean p
    assert hi - lo > (stats.binom.ppf(0.95, N, 0.3) - stats.binom.ppf(0.05, N, 0.3)) / N


def test_a_virtual_count_of_zero_leaves_room_for_a_small_rate():
    """With a Monte Carlo term (n = 64 virtual patients, rho_mc = 1/64), a virtual count of 0 gives
    the beta-binomial of Beta(a, b) with the Jeffreys posterior mean 0.5 / 65 and rho 1/64 (close
    to Beta(1/2, 64 + 1/2), the posterior of the rate given 0 of 64), not a point at 0."""
    n, N = 64, 44
    r = 1.0 / n
    m = 0.5 / (n + 1)
    a, b = m * (1 - r) / r, (1 - m) * (1 - r) / r
    assert (a, b) == pytest.approx((0.5, 64.5), rel=0.05)
    for q in (0.5, 0.95, 0.99):
        assert count_quantiles(np.array([0.0]), N, (q,), rho_mc=r)[0] == stats.betabinom.ppf(q, N, a, b) / N
    assert count_quantiles(np.array([0.0]), N, (0.99,), rho_mc=r)[0] >= 2 / N
    assert count_quantiles(np.array([0.0]), N, (0.99,), rho=r)[0] == 0.0  # without the term: a point
    # inside (0, 1) the shift of the mean is below 1 / (2 (n + 1)): the same interval here
    assert count_quantiles(np.array([0.3]), N, (0.05, 0.95), rho_mc=r) == count_quantiles(
        np.array([0.3]), N, (0.05, 0.95), rho=r
    )


# ---------------------------------------------------------------------------- a tiny study
STUDY = "tiny"
FREE = ("kill", "ec50_n")
BASE = {
    "growth": 0.001,
    "f_relapsed": 3.0,
    "kill": 0.03,
    "ec50_n": 250.0,
    "hill_n": 1.0,
    "ec50_act": 100.0,
    "e_help": 0.02,
    "t_rec": 20.0,
}


def _designs():
    regimen = lenapk.Regimen.cycles(10.0, n_cycles=4, name="10 mg continuous")
    return {STUDY: StudyDesign(STUDY, regimen, "relapsed", 112, standard_visits(112), n_courses=4)}


def _table():
    rows = [
        ("IgG", "mean", 0, 600.0, "mg/dL", 40, None, None),
        ("IgG", "mean", 112, 650.0, "mg/dL", 40, None, None),
        ("neutropenia_grade3_4", "per_course", None, 0.3, "fraction", 40, 48, 160),
        ("lymphocyte_reduction_gt50pct", "proportion", None, 0.3, "fraction", 40, 12, 40),
    ]
    df = pd.DataFrame(rows, columns=["endpoint", "statistic", "day", "value", "unit", "n", "numerator", "denominator"])
    df.insert(0, "study", STUDY)
    df.insert(1, "regimen_id", "r")
    return df


@pytest.fixture(scope="module")
def tiny(model):
    params = model.default_params().replace(**BASE)
    return Objective(
        _table(),
        model=model,
        free=FREE,
        params=params,
        n_patients=8,
        seed=0,
        designs=_designs(),
        temperature=0.0,
        settings=SolverSettings(rtol=1e-6, atol=1e-8),
    )


@pytest.fixture(scope="module")
def zero_and_wide(tiny):
    zero = prediction_intervals_at(tiny, tiny.x0, np.zeros((2, 2)), n_draws=4, seed=0)
    wide = prediction_intervals_at(tiny, tiny.x0, np.diag([0.5**2, 0.5**2]), n_draws=24, seed=0)
    return zero, wide


def test_zero_covariance_leaves_the_sampling_interval(tiny, zero_and_wide):
    pi, _ = zero_and_wide
    t = pi.table
    assert pi.n_draws == 4 and pi.failed == 0 and pi.varied == ()
    assert list(t["row"]) == [1, 2, 3, 4]
    for i in (2, 3):  # proportions: k ~ (beta-)binomial(N, m) / N, as scipy computes it
        p, N, rho = t["predicted"][i], t["N"][i], t["rho"][i]
        assert 0 < p < 1, f"the tiny study should predict a proportion inside (0, 1), got {p}"
        # m: the Jeffreys posterior mean of the rate behind a count over n = 1 / rho_mc virtual patients
        n = 1.0 / tiny.rows[i].rho_mc
        m = (n * p + 0.5) / (n + 1.0)
        if rho > 0:
            a, b = m * (1 - rho) / rho, (1 - m) * (1 - rho) / rho
            expected = stats.betabinom.ppf([0.05, 0.95], N, a, b) / N
        else:
            expected = stats.binom.ppf([0.05, 0.95], N, p) / N
        assert [t["lo"][i], t["hi"][i]] == pytest.approx(list(expected), abs=1e-12)
        assert t["inside"][i] == (expected[0] <= t["observed"][i] <= expected[1])
        assert t["param_lo"][i] == t["param_hi"][i] == p
    row = tiny.rows[1]  # a mean: Normal with the row's SE (and the cohort's Monte Carlo SE, if any)
    se = math.hypot(row.se, getattr(row, "se_mc", 0.0))
    m = t["predicted"][1]
    assert t["lo"][1] == pytest.approx(m - Z * se, rel=1e-9) and t["hi"][1] == pytest.approx(m + Z * se, rel=1e-9)
    assert t["inside"][1] == (m - Z * se <= t["observed"][1] <= m + Z * se)


def test_parameter_uncertainty_widens_the_interval(zero_and_wide):
    zero, wide = zero_and_wide
    z, w = zero.table, wide.table
    assert wide.varied == FREE and wide.n_draws + wide.failed == 24
    spread = (w["param_hi"] - w["param_lo"]).to_numpy()
    assert spread[1:].max() > 0  # the parameters move the predictions
    width_zero, width_wide = (z["hi"] - z["lo"]).to_numpy(), (w["hi"] - w["lo"]).to_numpy()
    tol = np.where(z["N"].notna(), 1 / z["N"].fillna(1), 1e-9)  # one count of the discrete quantiles
    assert np.all(width_wide >= width_zero - tol)
    moved = spread > 0
    assert np.sum(width_wide[moved]) > np.sum(width_zero[moved])


def _result(model, free, se_log, hessian) -> FitResult:
    params = model.default_params().replace(**BASE)
    est = pd.DataFrame({"parameter": list(free), "estimate": [float(params[f]) for f in free], "se_log": se_log})
    empty = pd.DataFrame()
    return FitResult(
        params=params,
        free=tuple(free),
        estimates=est,
        correlation=empty,
        hessian=np.asarray(hessian, dtype=float),
        eigenvalues=np.linalg.eigvalsh(hessian),
        observed_vs_predicted=empty,
        dose_level_table=empty,
        temperature_check=empty,
        trace=empty,
        objective=0.0,
        objective_prior=0.0,
        grad_max=0.0,
        iterations=0,
        evaluations=0,
        dose_changed=0.0,
        converged=True,
        message="",
        non_identifiable=(),
        designs={},
        settings={"n_patients": 8, "seed": 0},
        timings={},
        covariance=pd.DataFrame(np.linalg.pinv(hessian), index=list(free), columns=list(free)),
        model=model,
    )


def test_infinite_se_parameters_are_held_without_the_fitted_rows_and_spanned_with_them(model, monkeypatch):
    free = ("kill", "ec50_n", "growth")
    H = np.array([[40.0, 5.0, 0.0], [5.0, 10.0, 0.0], [0.0, 0.0, 0.0]])  # growth: a flat direction
    res = _result(model, free, [0.2, 0.4, math.inf], H)
    seen = {}

    def capture(obj, x, cov, **kw):
        seen.update(obj=obj, x=x, cov=cov, **kw)
        return "ok"

    class FakeObjective:  # what prediction_intervals builds (the real one compiles the study)
        def __init__(self, observations, **kw):
            self.kw, self.free, self.temperature = kw, kw["free"], kw["temperature"]
            self.x0 = np.log([float(kw["params"][f]) for f in self.free])

    monkeypatch.setattr(_intervals, "prediction_intervals_at", capture)
    monkeypatch.setattr(_intervals, "Objective", FakeObjective)
    assert prediction_intervals(res, _table(), designs=_designs(), n_draws=7, seed=3) == "ok"
    assert seen["fixed"] == ("growth",) and seen["n_draws"] == 7 and seen["seed"] == 3
    np.testing.assert_allclose(seen["cov"][:2, :2], np.linalg.inv(H[:2, :2]), rtol=1e-10)
    assert np.all(seen["cov"][2] == 0) and np.all(seen["cov"][:, 2] == 0)
    assert seen["obj"].temperature == 0.0 and seen["obj"].free == free and seen["obj"].kw["priors"] == {}
    assert seen["obj"].kw["n_patients"] == 8 and seen["obj"].kw["seed"] == 0 and seen["obj"].kw["model"] is model
    # a given covariance is used as it is, with non-finite rows held
    cov = np.diag([0.01, 0.04, math.inf])
    prediction_intervals(res, _table(), cov=cov, designs=_designs())
    assert seen["fixed"] == ("growth",)
    np.testing.assert_allclose(seen["cov"], np.diag([0.01, 0.04, 0.0]))
    with pytest.raises(ValueError, match="3 x 3"):
        prediction_intervals(res, _table(), cov=np.eye(2), designs=_designs())
    # with the fitted rows: growth's flat direction is spanned over its likelihood-ratio interval
    # (here an objective rising as 2 x_growth^2 away from the estimate), nothing is held, and an
    # uninformed parameter (t_rec, no prior) spans its bounds
    train = _Quadratic(
        np.diag([0.0, 0.0, 4.0]), np.log([0.03, 250.0, 0.001]), np.full(3, -20.0), np.full(3, 20.0), free
    )
    monkeypatch.setattr(_intervals, "_fitted_objective", lambda *a: train)
    monkeypatch.setattr(FakeObjective, "spec", model.calibration, raising=False)
    monkeypatch.setattr(FakeObjective, "lower", np.log([1e-5, 1.0, 1e-5, 1.0]), raising=False)
    monkeypatch.setattr(FakeObjective, "upper", np.log([0.2, 1e5, 0.05, 5000.0]), raising=False)
    prediction_intervals(res, _table(), designs=_designs(), fitted=_table(), uninformed=("t_rec",))
    assert seen["fixed"] == () and seen["obj"].free == (*free, "t_rec")
    np.testing.assert_allclose(seen["cov"][:2, :2], np.linalg.inv(H[:2, :2]), rtol=1e-10)
    assert np.all(seen["cov"][2:] == 0) and np.all(seen["cov"][:, 2:] == 0)
    growth, t_rec = seen["spans"]
    root = math.sqrt(0.5 * stats.chi2.ppf(0.9, 1) / 2)
    np.testing.assert_allclose(np.abs(growth.direction), [0, 0, 1, 0], atol=1e-12)
    assert root - 1 / 16 <= growth.hi <= root and -root <= growth.lo <= -root + 1 / 16
    np.testing.assert_allclose(t_rec.direction, [0, 0, 0, 1])
    assert (t_rec.lo, t_rec.hi) == pytest.approx((math.log(1.0 / 20.0), math.log(5000.0 / 20.0)))


# ---------------------------------------------------------------------------- unidentified directions
DELTA_90 = 0.5 * stats.chi2.ppf(0.9, 1)


def test_a_likelihood_interval_reaches_the_bounds_where_the_objective_is_flat_and_stops_at_the_root():
    """value(x) = 2 (x_0 - 0.3)^2, flat in x_1, on the box [-3, 2] x [-1, 5] around x = (0.3, 1):
    along x_1 the interval is the box, [-2, 4]; along x_0 the root of 2 t^2 = delta is
    sqrt(delta / 2), and the search returns a conservative end within 1/16 of it (one ladder
    step of 1/2 refined by three halvings)."""
    calls = []

    def value(x):
        calls.append(x)
        return 2.0 * (x[0] - 0.3) ** 2

    x, lower, upper = np.array([0.3, 1.0]), np.array([-3.0, -1.0]), np.array([2.0, 5.0])
    lo, hi = _intervals.likelihood_interval(value, x, np.array([0.0, 1.0]), lower, upper, DELTA_90)
    assert (lo, hi) == pytest.approx((-2.0, 4.0), abs=1e-12)
    root = math.sqrt(DELTA_90 / 2)
    lo, hi = _intervals.likelihood_interval(value, x, np.array([1.0, 0.0]), lower, upper, DELTA_90)
    assert root - 1 / 16 <= hi <= root and -root <= lo <= -root + 1 / 16
    assert len(calls) < 40
    # a direction at 45 degrees: t^2 (2 / 2) = delta at t = sqrt(delta) (bracketed by the ladder's
    # 1 and 2, so within 1/8 after three halvings); the box edges (x_0 = 2 at t = 1.7 sqrt 2,
    # x_1 = -1 at t = -2 sqrt 2) lie beyond the roots
    d = np.array([1.0, 1.0]) / math.sqrt(2)
    lo, hi = _intervals.likelihood_interval(value, x, d, lower, upper, DELTA_90)
    root = math.sqrt(DELTA_90)
    assert root - 1 / 8 <= hi <= root and -root <= lo <= -root + 1 / 8


def test_a_likelihood_interval_ignores_negligible_components_and_refines_a_first_step_crossing():
    """A direction with a 1e-17 component on a parameter at its upper bound is not stopped by that
    bound (the draws are clipped onto it anyway); an objective so steep that the first ladder step
    (1/8) already crosses delta is bisected down to 1/8 / 2^10 instead of giving no interval."""
    flat = lambda x: 0.0  # noqa: E731
    x, lower, upper = np.array([0.3, 5.0]), np.array([-3.0, -1.0]), np.array([2.0, 5.0])
    lo, hi = _intervals.likelihood_interval(flat, x, np.array([1.0, 1e-17]), lower, upper, DELTA_90)
    assert (lo, hi) == pytest.approx((-3.3, 1.7), abs=1e-12)
    steep = lambda x: 1e4 * (x[0] - 0.3) ** 2  # noqa: E731
    lo, hi = _intervals.likelihood_interval(steep, x, np.array([1.0, 0.0]), lower, upper, DELTA_90)
    root, res = math.sqrt(DELTA_90 / 1e4), 0.125 / 2**10
    assert root - res <= hi <= root and -root <= lo <= -root + res


class _Quadratic:
    """A stand-in for the fit's objective: 0.5 (x - x0)' A (x - x0) on a box (no dose rules)."""

    def __init__(self, A, x0, lower, upper, free):
        self.A, self.x0, self.lower, self.upper, self.free = A, x0, lower, upper, free
        self.has_rules = False

    def __call__(self, x):
        d = np.asarray(x) - self.x0
        return 0.5 * float(d @ self.A @ d)


def test_flat_directions_are_spanned_and_the_others_drawn_from_the_pseudo_inverse():
    """H = diag(4, 0) rotated by 45 degrees: the flat eigenvector (1, -1)/sqrt 2 spans its
    likelihood-ratio interval, here the whole box segment through x0 (the objective is H's
    quadratic, flat along it); the informed direction gets variance 1/4."""
    c = 1 / math.sqrt(2)
    R = np.array([[c, c], [c, -c]])
    H = R @ np.diag([4.0, 0.0]) @ R.T
    x0 = np.array([0.0, 0.5])
    train = _Quadratic(H, x0, np.array([-2.0, -2.0]), np.array([2.0, 2.0]), ("a", "b"))
    cov, spans = _intervals._weak_spans(train, H, 0.9)
    np.testing.assert_allclose(cov, np.linalg.pinv(H), atol=1e-12)
    (sp,) = spans
    v = sp.direction * np.sign(sp.direction[0])
    np.testing.assert_allclose(v, [c, -c], atol=1e-12)
    # along (c, -c) from (0, 0.5) the box [-2, 2]^2 ends at b = 2 (t = -1.5 / c) and a = 2 (t = 2 / c)
    ends = sorted([sp.lo, sp.hi] if sp.direction[0] > 0 else [-sp.hi, -sp.lo])
    assert ends == pytest.approx([-1.5 / c, 2.0 / c], abs=1e-12)
    assert "a" in sp.label and "b" in sp.label


def test_a_weak_direction_is_spanned_over_its_slice_and_a_strong_one_drawn_from_its_normal():
    """H = diag(4, 1) with a quadratic objective: the eigenvalue 1 is below 2 delta (a Normal SD of
    1 log unit or more), so it spans its likelihood-ratio slice, +/- sqrt(2 delta) within the ladder's
    resolution (1/8 between 1 and 2); 4 keeps its Normal draw (variance 1/4)."""
    H = np.diag([4.0, 1.0])
    train = _Quadratic(H, np.zeros(2), np.full(2, -10.0), np.full(2, 10.0), ("a", "b"))
    cov, (sp,) = _intervals._weak_spans(train, H, 0.9)
    np.testing.assert_allclose(cov, np.diag([0.25, 0.0]), atol=1e-12)
    np.testing.assert_allclose(np.abs(sp.direction), [0.0, 1.0], atol=1e-12)
    root = math.sqrt(2 * DELTA_90)
    assert root - 1 / 8 <= sp.hi <= root and -root <= sp.lo <= -root + 1 / 8


def test_uninformed_parameters_get_their_prior_or_their_bounds(model):
    """An uninformed parameter with a prior is centred at its median with the prior's variance;
    one without spans its bounds (log scale), whatever value it was kept at."""

    class Spec:
        priors = {"p": lenapk.calibration.Prior(4.0, 0.3, "test")}

    class Obj:
        free = ("a", "p", "q")
        x0 = np.array([0.1, 0.0, math.log(5.0)])
        lower = np.log([0.01, 0.1, 1.0])
        upper = np.log([10.0, 100.0, 100.0])
        spec = Spec()

    first = _intervals.Span(np.array([1.0]), -0.5, 0.5, "a")
    x, cov, spans = _intervals._with_uninformed(Obj(), np.array([[0.04]]), [first], 1)
    np.testing.assert_allclose(x, [0.1, math.log(4.0), math.log(5.0)])
    np.testing.assert_allclose(cov, np.diag([0.04, 0.09, 0.0]))
    assert [tuple(sp.direction) for sp in spans] == [(1.0, 0.0, 0.0), (0.0, 0.0, 1.0)]
    assert (spans[1].lo, spans[1].hi) == pytest.approx((-math.log(5.0), math.log(20.0)))


def test_spans_are_drawn_uniformly_on_their_intervals():
    rng = np.random.default_rng(5)
    span = _intervals.Span(np.array([0.6, 0.8]), -1.0, 3.0, "s")
    xs = _intervals._draws(np.array([1.0, 2.0]), np.zeros((2, 2)), 20_000, rng, [span])
    t = (xs[:, 0] - 1.0) / 0.6
    np.testing.assert_allclose((xs[:, 1] - 2.0) / 0.8, t, atol=1e-12)
    assert t.min() >= -1.0 and t.max() <= 3.0
    assert stats.kstest(t, stats.uniform(-1.0, 4.0).cdf).pvalue > 1e-3


def test_bad_arguments_are_refused(tiny):
    with pytest.raises(ValueError, match="shape"):
        prediction_intervals_at(tiny, tiny.x0, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        prediction_intervals_at(tiny, tiny.x0, np.diag([1.0, math.inf]))
    with pytest.raises(ValueError, match="level"):
        prediction_intervals_at(tiny, tiny.x0, np.zeros((2, 2)), level=1.5)
    with pytest.raises(ValueError, match="span"):
        prediction_intervals_at(tiny, tiny.x0, np.zeros((2, 2)), spans=[_intervals.Span(np.ones(3), 0, 1, "s")])


def test_spans_of_no_width_vary_nothing(tiny):
    """A span of width 0 (a direction held: its slice had no room) draws nothing and is not counted
    as varied; one of width 1 varies the parameters it loads on."""
    held = _intervals.Span(np.array([1.0, 0.0]), 0.0, 0.0, "held")
    pi = prediction_intervals_at(tiny, tiny.x0, np.zeros((2, 2)), n_draws=2, spans=[held])
    assert pi.varied == () and pi.spans == (held,)
    assert (pi.table["param_lo"] == pi.table["param_hi"]).all()
    moved = _intervals.Span(np.array([0.0, 1.0]), -0.5, 0.5, "ec50_n")
    assert prediction_intervals_at(tiny, tiny.x0, np.zeros((2, 2)), n_draws=2, spans=[held, moved]).varied == (
        "ec50_n",
    )


# ---------------------------------------------------------------------------- the report section
def _fake_validation(path: Path) -> Path:
    rows = [
        {
            "row": 36,
            "study": "s1",
            "endpoint": "partial_remission",
            "statistic": "proportion",
            "day": 168.0,
            "unit": "fraction",
            "observed": 0.16,
            "predicted": 0.2,
            "lo": 0.05,
            "hi": 0.4,
            "param_lo": 0.1,
            "param_hi": 0.3,
            "inside": True,
            "width": 0.35,
            "width_points": 35.0,
            "width_relative": None,
            "useful": False,
            "sampling": "binomial (N 31)",
            "status": "",
        }
    ]
    data = {
        "generated_by": "python examples/validate.py",
        "lenapk": "x",
        "config": {"level": 0.9, "n_patients": 64},
        "counts": {"held_out_rows": 1, "inside": 1, "useful": 0},
        "folds_missing": [],
        "folds": [{"study": "s1", "not_estimable": {"growth": {"value": 0.001, "source": "prior median"}}}],
        "rows": rows,
    }
    path.write_text(json.dumps(data))
    return path


def test_report_validation_section(tmp_path):
    from lenapk.models.cll._report import _validation_section
    from lenapk.report import render_page

    missing = _validation_section(tmp_path / "none.json")
    assert missing.id == "validation" and "Not run" in missing.parts[0].body
    s = _validation_section(_fake_validation(tmp_path / "v.json"))
    table = next(p for p in s.parts if p.kind == "table").body
    assert table["columns"][-4:] == ["prediction interval", "inside", "PI width", "useful"]
    assert table["rows"][0][4:] == ["16.0%", "20.0%", "5.0% to 40.0%", "yes", "35.0 points", "no"]
    facts = dict(next(p for p in s.parts if p.kind == "facts").body)
    assert facts["held-out rows inside their interval"] == "1 of 1"
    html = render_page(tmp_path / "p.html", title="t", intro="", sections=[s]).read_text()
    assert "Validation (leave-one-study-out)" in html and "growth = 0.001" in html


# ---------------------------------------------------------------------------- examples/validate.py
def _validate_module():
    spec = importlib.util.spec_from_file_location("validate_example", ROOT / "examples" / "validate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_validate_quick_refuses_to_write_into_docs():
    with pytest.raises(SystemExit):
        _validate_module().main(["--quick"])


@pytest.mark.slow
def test_validate_quick_one_fold_writes_and_resumes(tmp_path, capsys):
    validate = _validate_module()
    study = "relapsed_pulsed_42d"
    args = ["--quick", "--out-dir", str(tmp_path), "--study", study]
    summary = validate.main(args)
    assert summary["folds_done"] == [study] and len(summary["folds_missing"]) == len(summary["studies"]) - 1
    rows = summary["rows"]
    assert rows and all(r["study"] == study for r in rows)
    assert all(r["lo"] <= r["hi"] and r["useful"] <= r["inside"] for r in rows)
    assert summary["counts"] == {
        "held_out_rows": len(rows),
        "inside": sum(r["inside"] for r in rows),
        "useful": sum(r["useful"] for r in rows),
    }
    on_disk = json.loads((tmp_path / "validation.json").read_text())
    assert on_disk["counts"] == summary["counts"]
    md = (tmp_path / "validation.md").read_text()
    assert "Generated by" in md and f"of {len(rows)} held-out rows inside their 90% PI" in md
    folds = (tmp_path / "validation_folds.jsonl").read_text().splitlines()
    assert len(folds) == 1
    validate.main(args)  # resumes: the fold on file is skipped, not appended again
    assert "on file" in capsys.readouterr().out
    assert len((tmp_path / "validation_folds.jsonl").read_text().splitlines()) == 1


def test_a_count_row_is_judged_by_its_count_not_its_rounded_percentage():
    """3 of 31 patients, reported as 9.7%: inside an interval whose upper end is the count 3 of 31
    (9.68%), outside one that ends at 2 of 31; a mean is judged by its value."""
    from lenapk.calibration import observed_inside

    assert observed_inside(0.097, 0.0, 3 / 31, k=3, N=31)
    assert not observed_inside(0.097, 0.0, 2 / 31, k=3, N=31)
    assert not observed_inside(0.097, 4 / 31, 10 / 31, k=3, N=31)
    assert not observed_inside(0.097, 0.0, 3 / 31)  # no count: the reported value, above 3 / 31
    assert observed_inside(820.0, 700.0, 900.0) and not observed_inside(950.0, 700.0, 900.0)
