"""The likelihood of summary rows (lenapk.calibration.Likelihood) against scipy.stats: Gaussian
means, binomial proportions, the beta-binomial of per-course counts (courses correlated within
patients) and a multinomial group of response categories; with the virtual cohort's Monte Carlo
error (n_virtual): the beta-binomial and Dirichlet-multinomial of scipy and the inflated Gaussian
SE; the standardised residuals.  No ODE is solved: rows come from a small table through
build_row_models, predictions are given numbers."""

import math
from dataclasses import replace

import jax
import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

import lenapk
from lenapk.calibration import (
    FractionBelow,
    Likelihood,
    MeanOf,
    NotModelled,
    ResponseEvent,
    StudyDesign,
    SummaryEndpoint,
    validate_observation_table,
)
from lenapk.calibration._rows import COURSE_CORRELATION, RHO_MAX, RowModel, build_row_models

VOCABULARY = {
    "IgG": SummaryEndpoint("serum IgG", ("mean",), MeanOf("igg"), "mg/dL"),
    "neutropenia": SummaryEndpoint("ANC < 1", ("incidence", "per_course"), FractionBelow("anc", 1.0)),
    "complete_remission": SummaryEndpoint("CR", ("proportion",), ResponseEvent("cr")),
    "partial_remission": SummaryEndpoint("PR", ("proportion",), ResponseEvent("pr")),
    "stable_disease": SummaryEndpoint("SD", ("proportion",), ResponseEvent("sd")),
    "progressive_disease": SummaryEndpoint("PD", ("proportion",), ResponseEvent("pd")),
    "flare": SummaryEndpoint("tumour flare", ("incidence",), NotModelled("not represented")),
}
CV = {"IgG": 0.3}
COLUMNS = ["study", "regimen_id", "endpoint", "statistic", "day", "value", "unit", "n", "numerator", "denominator"]
ROWS = [
    ("s", "r", "IgG", "mean", 0, 700.0, "mg/dL", 40, None, None),  # 0 gaussian, n = 40
    ("s", "r", "IgG", "mean", 84, 800.0, "mg/dL", None, None, None),  # 1 gaussian, n assumed (40)
    ("s", "r", "neutropenia", "incidence", 84, 0.3, "fraction", 40, 12, None),  # 2 binomial 12/40
    ("s", "r", "neutropenia", "per_course", None, 0.25, "fraction", 40, 30, 120),  # 3 binomial 30/120
    ("s", "r", "partial_remission", "proportion", 84, 0.33, "fraction", 30, None, None),  # 4 binomial 10/30
    ("s", "r", "complete_remission", "proportion", 168, 0.1, "fraction", 40, 4, 40),  # 5-8 multinomial
    ("s", "r", "partial_remission", "proportion", 168, 0.25, "fraction", 40, 10, 40),
    ("s", "r", "stable_disease", "proportion", 168, 0.4, "fraction", 40, 16, 40),
    ("s", "r", "progressive_disease", "proportion", 168, 0.25, "fraction", 40, 10, 40),
    ("s", "r", "flare", "incidence", 84, 0.1, "fraction", 40, 4, 40),  # 9 not modelled
]
# predictions: means in mg/dL, probabilities (the multinomial's do not add up to 1: normalised)
PRED = np.array([650.0, 870.0, 0.21, 0.32, 0.4, 0.12, 0.2, 0.33, 0.2, 0.5])
GROUP = [5, 6, 7, 8]
R = COURSE_CORRELATION  # intra-patient correlation of courses (0.3)
RHO_3 = (120 / 40 - 1) * R / (120 - 1)  # per-course row: m = N / n = 3 courses per patient


def _rows(**kw):
    table = validate_observation_table(pd.DataFrame(ROWS, columns=COLUMNS), VOCABULARY)
    regimen = lenapk.Regimen.cycles(10.0, n_cycles=6)
    design = StudyDesign("s", regimen, "relapsed", 168, tuple(range(0, 169, 14)), n_courses=6)
    return build_row_models(table, {"s": design}, VOCABULARY, cv=CV, **kw)


@pytest.fixture(scope="module")
def rows():
    return _rows()


def _betabinom_nll(k, N, p, rho):
    """scipy's beta-binomial with mean p and intra-class correlation rho."""
    s = (1 - rho) / rho
    return -stats.betabinom.logpmf(k, N, p * s, (1 - p) * s)


def test_rows_get_their_observation_model(rows):
    assert [r.likelihood for r in rows[:9]] == ["gaussian"] * 2 + ["binomial"] * 3 + ["multinomial"] * 4
    assert [r.fitted for r in rows] == [True] * 9 + [False]
    # the unfitted row has no likelihood
    assert Likelihood.from_rows(rows).code.tolist() == [1, 1, 2, 2, 2, 3, 3, 3, 3, 0]
    assert rows[9].reason == "not represented"
    # SE of a mean = CV * observed / sqrt(n); a missing n is the study's smallest for that endpoint
    assert rows[0].se == pytest.approx(0.3 * 700 / math.sqrt(40)) and not rows[0].n_assumed
    assert rows[1].se == pytest.approx(0.3 * 800 / math.sqrt(40)) and rows[1].n_assumed
    assert (rows[2].k, rows[2].N) == (12, 40) and (rows[3].k, rows[3].N) == (30, 120)
    assert (rows[4].k, rows[4].N) == (round(0.33 * 30), 30)  # k from value and n
    assert len({rows[i].group for i in GROUP}) == 1
    kinds = ["mean", "mean", "incidence", "per_course"] + ["at_day"] * 5 + ["none"]
    assert [r.kind for r in rows] == kinds


def test_per_row_negative_log_likelihood_against_scipy(rows):
    lik = Likelihood.from_rows(rows)
    nll = np.asarray(lik.per_row(PRED))
    for i in (0, 1):
        r = rows[i]
        assert nll[i] == pytest.approx(-stats.norm.logpdf(r.observed, PRED[i], r.se), rel=1e-12), i
    for i in (2, 4):
        r = rows[i]
        assert nll[i] == pytest.approx(-stats.binom.logpmf(r.k, r.N, PRED[i]), rel=1e-10), i
    # per course: courses of one patient correlated -> beta-binomial, rho = (m - 1) r / (N - 1)
    assert lik.rho[3] == pytest.approx(RHO_3, rel=1e-14) and rows[3].rho == pytest.approx(RHO_3, rel=1e-14)
    assert nll[3] == pytest.approx(_betabinom_nll(30, 120, PRED[3], RHO_3), rel=1e-10)
    assert nll[3] < -stats.binom.logpmf(30, 120, PRED[3])  # a misfit costs less than independent courses
    ks, ps = [rows[i].k for i in GROUP], PRED[GROUP]
    expected = -stats.multinomial.logpmf(ks, 40, ps / ps.sum())
    assert nll[GROUP].sum() == pytest.approx(expected, rel=1e-10)
    assert nll[9] == 0.0  # not fitted: no likelihood
    assert float(lik.nll(PRED)) == pytest.approx(nll.sum(), rel=1e-14)
    # the multinomial depends only on the categories' shares
    scaled = PRED.copy()
    scaled[GROUP] *= 0.7
    assert np.asarray(lik.per_row(scaled))[GROUP].sum() == pytest.approx(expected, rel=1e-10)


def test_gradient_of_the_likelihood_in_the_predictions(rows):
    lik = Likelihood.from_rows(rows)
    g = np.asarray(jax.grad(lik.nll)(PRED))
    for i in (0, 1):  # -(obs - pred) / se^2
        assert g[i] == pytest.approx(-(rows[i].observed - PRED[i]) / rows[i].se ** 2, rel=1e-10)
    for i in (2, 4):  # -(k / p - (N - k) / (1 - p))
        k, N, p = rows[i].k, rows[i].N, PRED[i]
        assert g[i] == pytest.approx(-(k / p - (N - k) / (1 - p)), rel=1e-10)
    # beta-binomial: -s [psi(k + a) - psi(a) - psi(N - k + b) + psi(b)], a = p s, b = (1 - p) s
    s, p = (1 - RHO_3) / RHO_3, PRED[3]
    a, b, psi = p * s, (1 - p) * s, special.digamma
    assert g[3] == pytest.approx(-s * (psi(30 + a) - psi(a) - psi(120 - 30 + b) + psi(b)), rel=1e-9)
    total = PRED[GROUP].sum()  # -k_i / p_i + N / sum(p)
    for i in GROUP:
        assert g[i] == pytest.approx(-rows[i].k / PRED[i] + 40 / total, rel=1e-10)
    assert g[9] == 0.0


def test_directly_built_rows_and_the_constants():
    """RowModels built by hand: a single binomial's minimum is at p = k / N, where its value is
    the binomial log-probability of the observed count."""
    rows = [
        RowModel(
            index=0,
            row=1,
            study="s",
            endpoint="e",
            statistic="proportion",
            kind="best",
            predictor=ResponseEvent("overall"),
            fitted=True,
            likelihood="binomial",
            observed=0.3,
            k=3.0,
            N=10.0,
        ),
        RowModel(
            index=1,
            row=2,
            study="s",
            endpoint="m",
            statistic="mean",
            kind="mean",
            predictor=MeanOf("x"),
            day=7,
            fitted=True,
            likelihood="gaussian",
            observed=2.0,
            se=0.5,
        ),
    ]
    assert rows[1].observable == "x" and rows[0].observable == ""
    lik = Likelihood.from_rows(rows)
    p = np.linspace(0.05, 0.95, 181)
    values = np.array([float(lik.per_row(np.array([q, 2.0]))[0]) for q in p])
    assert p[np.argmin(values)] == pytest.approx(0.3)
    assert values.min() == pytest.approx(-stats.binom.logpmf(3, 10, 0.3), rel=1e-12)
    assert float(lik.per_row(np.array([0.3, 2.0]))[1]) == pytest.approx(-stats.norm.logpdf(0.0, 0.0, 0.5))


def test_residuals(rows):
    lik = Likelihood.from_rows(rows)
    res = lik.residuals(PRED)
    for i in (0, 1):  # (observed - predicted) / SE
        assert res[i] == pytest.approx((rows[i].observed - PRED[i]) / rows[i].se, rel=1e-12)
    assert res[0] == pytest.approx((700 - 650) / (0.3 * 700 / math.sqrt(40)), rel=1e-12)
    for i in (2, 4, *GROUP):  # (k / N - p) / sqrt(p (1 - p) / N)
        k, N, p = rows[i].k, rows[i].N, PRED[i]
        assert res[i] == pytest.approx((k / N - p) / math.sqrt(p * (1 - p) / N), rel=1e-12), i
    # per course: the design effect 1 + (m - 1) r of 3 courses per patient
    p = PRED[3]
    assert res[3] == pytest.approx((0.25 - p) / math.sqrt(p * (1 - p) * (1 + 2 * R) / 120), rel=1e-12)
    assert res[2] == pytest.approx((0.3 - 0.21) / math.sqrt(0.21 * 0.79 / 40), rel=1e-12)
    assert math.isnan(res[9])
    # zero residual where the prediction equals the observation
    exact = PRED.copy()
    exact[:2] = [700.0, 800.0]
    exact[2:9] = [rows[i].k / rows[i].N for i in range(2, 9)]
    np.testing.assert_allclose(lik.residuals(exact)[:9], 0.0, atol=1e-12)


# ---------------------------------------------------------------- the virtual cohort's Monte Carlo error
N_V = 50  # virtual patients of the study; the design counts m_v = 6 courses each


def test_monte_carlo_terms_of_the_rows():
    """rho_mc = v_mc / (p (1 - p)) with v_mc the variance of a mean over the virtual cohort:
    1 / n_v for patients, [1 + (m_v - 1) r] / (n_v m_v) for courses; se_mc = CV mean / sqrt(n_v)."""
    rows = _rows(n_virtual={"s": N_V})
    assert [r.n_virtual for r in rows[2:9]] == [N_V] * 7
    for i in (2, 4, *GROUP):
        assert rows[i].rho == 0.0 and rows[i].rho_mc == pytest.approx(1 / N_V, rel=1e-14), i
    assert rows[3].rho_mc == pytest.approx((1 + 5 * R) / (N_V * 6), rel=1e-14)
    assert rows[3].rho == pytest.approx(RHO_3, rel=1e-14)
    for i in (0, 1):
        assert rows[i].se_mc == pytest.approx(0.3 * rows[i].observed / math.sqrt(N_V), rel=1e-14)
    # an int is every study's cohort; no n_virtual: no Monte Carlo term
    assert _rows(n_virtual=N_V)[3].rho_mc == rows[3].rho_mc
    assert _rows()[3].rho_mc == 0.0 and _rows()[0].se_mc == 0.0
    with pytest.raises(ValueError, match="course_correlation"):
        _rows(course_correlation=1.0)


def test_beta_binomial_with_monte_carlo_error_against_scipy():
    """Each count row is scipy's beta-binomial with the same mean and rho = rho_data + rho_mc; its
    variance is N p (1 - p) [1 + (m - 1) r] (courses within patients) + N (N - 1) v_mc (the
    cohort's Monte Carlo variance v_mc of p)."""
    rows = _rows(n_virtual={"s": N_V})
    lik = Likelihood.from_rows(rows)
    nll = np.asarray(lik.per_row(PRED))
    for i in (2, 3, 4):
        r = rows[i]
        rho = r.rho + r.rho_mc
        assert lik.rho[i] == pytest.approx(rho, rel=1e-14)
        assert nll[i] == pytest.approx(_betabinom_nll(r.k, r.N, PRED[i], rho), rel=1e-10), i
    # the variance by hand: per course (m = 3 observed, m_v = 6 virtual courses per patient)
    p, N, s = PRED[3], 120, (1 - lik.rho[3]) / lik.rho[3]
    v_mc = p * (1 - p) * (1 + 5 * R) / (N_V * 6)
    expected = N * p * (1 - p) * (1 + 2 * R) + N * (N - 1) * v_mc
    assert stats.betabinom.var(N, p * s, (1 - p) * s) == pytest.approx(expected, rel=1e-12)
    # an incidence counts patients: v_mc = p (1 - p) / n_v, nothing from courses
    p, N, s = PRED[2], 40, (1 - lik.rho[2]) / lik.rho[2]
    expected = N * p * (1 - p) + N * (N - 1) * p * (1 - p) / N_V
    assert stats.betabinom.var(N, p * s, (1 - p) * s) == pytest.approx(expected, rel=1e-12)
    # residuals are standardised by that total variance
    res = lik.residuals(PRED)
    for i in (2, 3, 4):
        r, p = rows[i], PRED[i]
        sd = math.sqrt(p * (1 - p) * (1 + (r.N - 1) * lik.rho[i]) / r.N)
        assert res[i] == pytest.approx((r.k / r.N - p) / sd, rel=1e-12), i
    # the overdispersed row is flatter than the binomial: its minimum is still at k / N
    binomial = Likelihood.from_rows(_rows(course_correlation=0.0))
    grid = np.linspace(0.1, 0.5, 401)
    preds = np.tile(PRED, (len(grid), 1))
    preds[:, 3] = grid
    curve = np.stack([np.asarray(jax.vmap(f.per_row)(preds))[:, 3] for f in (lik, binomial)], axis=1)
    curve = curve - curve.min(axis=0)
    assert grid[np.argmin(curve[:, 0])] == pytest.approx(0.25, abs=5e-3)  # near k / N, not exactly
    assert grid[np.argmin(curve[:, 1])] == pytest.approx(0.25, abs=1e-9)
    # ~ 1 / design effect = 1 / (1 + (N - 1) rho) = 0.39 of the binomial's rise away from it
    effect = 1 + 119 * lik.rho[3]
    for end in (0, -1):
        assert 0.8 / effect < curve[end, 0] / curve[end, 1] < 1.2 / effect


def test_small_rho_is_the_binomial():
    """rho -> 0: the beta-binomial tends to the binomial; below RHO_BINOMIAL (or with r = 0 and
    no cohort term) the row is the binomial exactly."""
    binomial = Likelihood.from_rows(_rows(course_correlation=0.0))
    assert binomial.rho[3] == 0.0
    nll = float(binomial.per_row(PRED)[3])
    assert nll == pytest.approx(-stats.binom.logpmf(30, 120, PRED[3]), rel=1e-12)

    def row(rho):
        r = RowModel(0, 1, "s", "e", "per_course", "per_course", FractionBelow("x", 1.0), fitted=True)
        r = replace(r, likelihood="binomial", observed=0.25, k=30.0, N=120.0, rho=rho)
        return float(Likelihood.from_rows([r]).per_row(np.array([PRED[3]]))[0])

    ref = -stats.binom.logpmf(30, 120, PRED[3])
    assert row(1e-7) == pytest.approx(ref, rel=1e-4) and row(1e-7) != pytest.approx(ref, rel=1e-9)
    assert row(1e-7) == pytest.approx(_betabinom_nll(30, 120, PRED[3], 1e-7), rel=1e-6)  # gammaln of 1e7
    assert row(1e-9) == pytest.approx(ref, rel=1e-12)  # below RHO_BINOMIAL
    assert abs(row(1e-4) - ref) < abs(row(1e-3) - ref) < abs(row(1e-2) - ref)  # converges
    # rho is capped below 1
    assert Likelihood.from_rows([replace(rows_template := _rows()[3], rho=2.0)]).rho[0] == RHO_MAX
    assert rows_template.likelihood == "binomial"


def test_dirichlet_multinomial_against_scipy():
    """The response categories with the cohort's Monte Carlo error: scipy's Dirichlet-multinomial
    with the predicted shares and precision alpha0 = 1 / rho - 1 = n_v - 1."""
    rows = _rows(n_virtual={"s": N_V})
    lik = Likelihood.from_rows(rows)
    assert np.allclose(lik.rho[GROUP], 1 / N_V, rtol=1e-14)
    nll = np.asarray(lik.per_row(PRED))
    ks, ps = [rows[i].k for i in GROUP], PRED[GROUP]
    expected = -stats.dirichlet_multinomial.logpmf(ks, (N_V - 1) * ps / ps.sum(), 40)
    assert nll[GROUP].sum() == pytest.approx(expected, rel=1e-10)
    multinomial = -stats.multinomial.logpmf(ks, 40, ps / ps.sum())
    assert nll[GROUP].sum() != pytest.approx(multinomial, rel=1e-2)
    large = np.asarray(Likelihood.from_rows(_rows(n_virtual=10**6)).per_row(PRED))[GROUP].sum()
    assert large == pytest.approx(multinomial, rel=1e-4)  # n_v -> infinity: the multinomial
    scaled = PRED.copy()
    scaled[GROUP] *= 0.7  # still depends only on the shares
    assert np.asarray(lik.per_row(scaled))[GROUP].sum() == pytest.approx(expected, rel=1e-10)
    # the gradient of the group's shares against central differences
    g = np.asarray(jax.grad(lik.nll)(PRED))
    for i in GROUP:
        h = 1e-6
        up, dn = PRED.copy(), PRED.copy()
        up[i] += h
        dn[i] -= h
        fd = (float(lik.nll(up)) - float(lik.nll(dn))) / (2 * h)
        assert g[i] == pytest.approx(fd, rel=1e-6), i


def test_gaussian_se_with_the_cohorts_monte_carlo_error():
    """SE_total^2 = SE^2 + (CV mean)^2 / n_v: the predicted mean of n_v virtual patients scatters."""
    rows = _rows(n_virtual={"s": N_V})
    lik = Likelihood.from_rows(rows)
    nll = np.asarray(lik.per_row(PRED))
    res = lik.residuals(PRED)
    for i, obs in ((0, 700.0), (1, 800.0)):
        se = 0.3 * obs * math.sqrt(1 / 40 + 1 / N_V)  # n = 40 (row 1: assumed)
        assert rows[i].se == pytest.approx(0.3 * obs / math.sqrt(40), rel=1e-14)  # the data's SE unchanged
        assert lik.se[i] == pytest.approx(se, rel=1e-12)
        assert nll[i] == pytest.approx(-stats.norm.logpdf(obs, PRED[i], se), rel=1e-12), i
        assert res[i] == pytest.approx((obs - PRED[i]) / se, rel=1e-12)
