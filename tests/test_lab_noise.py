"""Grade counts of measured values (lab noise, ``FractionBelow.noise_sd``) against a closed form
and a Monte Carlo count of noisy measurements drawn with numpy."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from lenapk.calibration import FractionBelow
from lenapk.calibration._designs import Schedule
from lenapk.calibration._predict import predict_rows
from lenapk.calibration._rows import RowModel
from lenapk.endpoints import Assessment, EndpointSet, GradeScale

LIMITS = (2.0, 1.5, 1.0, 0.5)  # ANC grade 1-4 lower limits (x10^9/L)
VISITS = (0, 7, 14, 28, 35, 42)  # course 1: days 0-14, course 2: days 28-42
SCHEDULE = Schedule(VISITS, 2, 28)
SD = 0.17
ANC = np.array(
    [
        [4.0, 3.0, 1.8, 3.5, 0.8, 2.5],  # baseline grade 0
        [1.8, 1.7, 1.9, 1.6, 1.2, 1.7],  # baseline grade 1
        [1.2, 1.1, 1.3, 1.2, 0.9, 1.1],  # baseline grade 2
        [3.0, 2.6, 2.2, 2.4, 2.1, 2.3],  # baseline grade 0, never below 2.0 without noise
    ]
)


def _predict(predictor, kind: str, day: int = -1, temperature: float = 0.0, values=ANC, schedule=SCHEDULE):
    rows = [RowModel(0, 1, "s", "e", kind, kind, predictor, day=day, fitted=True)]
    return float(predict_rows({"anc": values}, rows, schedule, schedule.visits, temperature)[0])


def _monte_carlo(upper, lower, kind, day=42, n=200_000, seed=1):
    """Count events among noisy copies of the cohort: each visit after day 0 measured as
    x exp(e), e ~ N(0, SD^2); the threshold of a patient is the first grade limit at or below the
    (true) baseline, capped at ``upper`` (treatment-emergent, as in the calibration)."""
    rng = np.random.default_rng(seed)
    base = ANC[:, 0]
    thr = np.array([min(upper, max([lim for lim in LIMITS if lim <= b], default=0.0)) for b in base])
    if lower is not None:
        thr = np.maximum(thr, lower)
    days = np.asarray(VISITS)
    cols = np.flatnonzero((days > 0) & (days <= day))
    measured = ANC[None, :, cols] * np.exp(SD * rng.standard_normal((n, *ANC.shape))[:, :, cols])
    below_up = measured < thr[None, :, None]
    below_lo = measured < lower if lower is not None else np.zeros_like(below_up)
    if kind == "incidence":
        hit = below_up.any(-1) & ~below_lo.any(-1) & (thr > (lower or 0))[None, :]
        return hit.mean()
    course = days[cols] // 28
    rates = [
        (below_up[..., course == c].any(-1) & ~below_lo[..., course == c].any(-1) & (thr > (lower or 0))[None, :])
        for c in (0, 1)
    ]
    return np.mean(rates)


@pytest.mark.parametrize(("upper", "lower"), [(2.0, None), (1.0, None), (2.0, 1.0)])
@pytest.mark.parametrize("kind", ["incidence", "per_course"])
def test_noisy_counts_match_a_monte_carlo_count_of_measured_values(upper, lower, kind):
    p = FractionBelow("anc", upper, lower, grade_limits=LIMITS, noise_sd=SD)
    got = _predict(p, kind, day=42)
    mc = _monte_carlo(upper, lower, kind)
    se = math.sqrt(max(mc * (1 - mc), 1e-4) / 200_000)
    assert got == pytest.approx(mc, abs=5 * se + 1e-4)
    # the expectation does not depend on the temperature of the smooth fit
    assert _predict(p, kind, day=42, temperature=0.05) == pytest.approx(got, abs=1e-12)


def test_a_constant_value_over_many_visits_closed_form():
    """x = 1.1 at 30 visits, threshold 1.0: P(event) = 1 - Phi(log 1.1 / s)^30, where the
    noise-free count is 0."""
    visits = tuple(range(0, 30 * 7 + 1, 7))
    schedule = Schedule(visits, 1, 7 * 31)
    values = np.full((1, len(visits)), 1.1)
    p = FractionBelow("anc", 1.0, noise_sd=SD)
    got = _predict(p, "incidence", visits[-1], values=values, schedule=schedule)
    assert got == pytest.approx(1 - norm.cdf(math.log(1.1) / SD) ** 30, rel=1e-10)
    assert _predict(FractionBelow("anc", 1.0), "incidence", visits[-1], values=values, schedule=schedule) == 0.0


def test_noise_sd_is_validated():
    with pytest.raises(ValueError, match="noise_sd"):
        FractionBelow("anc", 1.0, noise_sd=-0.1)
    with pytest.raises(ValueError, match="noise_sd"):
        FractionBelow("anc", 1.0, noise_sd=float("nan"))


def test_cohort_columns_give_the_probability_of_a_measured_severe_grade():
    """A grade scale with lab noise: ``anc_p_severe`` = 1 - Phi(log(x / 1.0) / s)^V over the
    on-treatment visits, per cycle over the cycle's visits, and the comparison's grade rate is
    their mean; the ``anc_grade`` column stays the grade of the model's values."""
    scale = GradeScale("anc", LIMITS, label="anc", event="neutropenia", noise_sd=SD)
    level = np.array([1.2, 1.05, 3.0])  # constant ANC of three patients, never below 1.0
    daily = {"anc": np.repeat(level[:, None], 57, axis=1)}
    visits = np.array([7, 14, 28, 35, 56])  # cycle 1: 7, 14; cycle 2: 28, 35, 56 (the last day counts in it)
    before, after = EndpointSet(grades=(scale,)).columns(Assessment(daily, visits, 28))
    phi = norm.cdf(np.log(level / 1.0) / SD)
    log_phi = norm.logcdf(np.log(level / 1.0) / SD)  # 1 - phi^V without cancellation: -expm1(V log phi)
    np.testing.assert_allclose(before["anc_p_severe"], -np.expm1(5 * log_phi), rtol=1e-10)
    np.testing.assert_allclose(after["anc_p_severe_c1"], -np.expm1(2 * log_phi), rtol=1e-10)
    np.testing.assert_allclose(after["anc_p_severe_c2"], -np.expm1(3 * log_phi), rtol=1e-10)
    assert list(before["anc_grade"]) == [2, 2, 0]  # below 1.5, never below 1.0
    got = {}
    df = pd.DataFrame({**before, **after})
    EndpointSet(grades=(scale,)).metrics(
        df,
        56,
        28,
        rate=lambda *a: pytest.fail("a noisy scale reports expected counts, not event counts"),
        mean=lambda col, label, panel, values, clip=None: got.update({col: float(np.mean(values))}),
        missing=lambda *a: None,
    )
    assert got["g3_neutropenia"] == pytest.approx(np.mean(1 - phi**5), rel=1e-10)
    assert got["g3_neutropenia_per_course"] == pytest.approx(np.mean((2 - phi**2 - phi**3) / 2), rel=1e-10)


def test_grade_scale_noise_sd_is_validated():
    with pytest.raises(ValueError, match="noise_sd"):
        GradeScale("anc", LIMITS, label="anc", event="neutropenia", noise_sd=-1.0)
