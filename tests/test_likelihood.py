"""The likelihood of summary rows (lenapk.calibration.Likelihood) against scipy.stats: Gaussian
means, binomial proportions and a multinomial group of response categories, and the
standardised residuals.  No ODE is solved: rows come from a small table through
build_row_models, predictions are given numbers."""

import math

import jax
import numpy as np
import pandas as pd
import pytest
from scipy import stats

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
from lenapk.calibration._rows import RowModel, build_row_models

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


@pytest.fixture(scope="module")
def rows():
    table = validate_observation_table(pd.DataFrame(ROWS, columns=COLUMNS), VOCABULARY)
    regimen = lenapk.Regimen.cycles(10.0, n_cycles=6)
    design = StudyDesign("s", regimen, "relapsed", 168, tuple(range(0, 169, 14)), n_courses=6)
    return build_row_models(table, {"s": design}, VOCABULARY, cv=CV)


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
    for i in (2, 3, 4):
        r = rows[i]
        assert nll[i] == pytest.approx(-stats.binom.logpmf(r.k, r.N, PRED[i]), rel=1e-10), i
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
    for i in (2, 3, 4):  # -(k / p - (N - k) / (1 - p))
        k, N, p = rows[i].k, rows[i].N, PRED[i]
        assert g[i] == pytest.approx(-(k / p - (N - k) / (1 - p)), rel=1e-10)
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
    for i in (2, 3, 4, *GROUP):  # (k / N - p) / sqrt(p (1 - p) / N)
        k, N, p = rows[i].k, rows[i].N, PRED[i]
        assert res[i] == pytest.approx((k / N - p) / math.sqrt(p * (1 - p) / N), rel=1e-12), i
    assert res[2] == pytest.approx((0.3 - 0.21) / math.sqrt(0.21 * 0.79 / 40), rel=1e-12)
    assert math.isnan(res[9])
    # zero residual where the prediction equals the observation
    exact = PRED.copy()
    exact[:2] = [700.0, 800.0]
    exact[2:9] = [rows[i].k / rows[i].N for i in range(2, 9)]
    np.testing.assert_allclose(lik.residuals(exact)[:9], 0.0, atol=1e-12)
