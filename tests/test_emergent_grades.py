"""Treatment-emergent grade counts and the smooth incidence of summary rows, against counts
worked out by hand for a small cohort and a closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lenapk.calibration import FractionBelow
from lenapk.calibration._designs import Schedule
from lenapk.calibration._predict import emergent_upper, predict_rows
from lenapk.calibration._rows import RowModel
from lenapk.endpoints import VISIT_SHARPNESS

LIMITS = (2.0, 1.5, 1.0, 0.5)  # ANC grade 1-4 lower limits (x10^9/L)
VISITS = (0, 7, 14, 28, 35, 42)  # course 1: days 0-14, course 2: days 28-42
SCHEDULE = Schedule(VISITS, 2, 28)
# Four patients, ANC at the visits:
ANC = np.array(
    [
        [4.0, 3.0, 1.8, 3.5, 0.8, 2.5],  # grade 0 at baseline; grade 1 in course 1, grade 3 in course 2
        [1.8, 1.7, 1.9, 1.6, 1.2, 1.7],  # grade 1 at baseline; grade 1 (no worse) in course 1, grade 2 in course 2
        [1.2, 1.1, 1.3, 1.2, 0.9, 1.1],  # grade 2 at baseline; grade 2 in course 1, grade 3 in course 2
        [0.4, 0.3, 0.35, 0.4, 0.3, 0.3],  # grade 4 at baseline: nothing can be worse
    ]
)


def _row(predictor, kind: str, day: int = -1) -> RowModel:
    return RowModel(0, 1, "s", "e", kind, kind, predictor, day=day, fitted=True)


def _predict(predictor, kind: str, day: int = -1, temperature: float = 0.0, values=ANC, schedule=SCHEDULE):
    rows = [_row(predictor, kind, day)]
    return float(predict_rows({"anc": values}, rows, schedule, schedule.visits, temperature)[0])


def emergent(upper, lower=None):
    return FractionBelow("anc", upper, lower, grade_limits=LIMITS)


def test_the_threshold_of_each_patient_is_the_first_grade_limit_below_baseline():
    """min(upper, max{l <= baseline}), floored at lower: 4.0 -> 2.0, 1.8 -> 1.5, 1.2 -> 1.0, 0.4 -> none."""
    base = ANC[:, 0]
    np.testing.assert_allclose(np.asarray(emergent_upper(emergent(2.0), base))[:, 0][:3], [2.0, 1.5, 1.0])
    assert float(emergent_upper(emergent(2.0), base)[3, 0]) < 1e-100
    np.testing.assert_allclose(np.asarray(emergent_upper(emergent(2.0, 1.0), base))[:, 0], [2.0, 1.5, 1.0, 1.0])
    np.testing.assert_allclose(np.asarray(emergent_upper(emergent(1.0), base))[:, 0][:3], [1.0, 1.0, 1.0])
    np.testing.assert_allclose(np.asarray(emergent_upper(FractionBelow("anc", 2.0), base))[:, 0], [2.0] * 4)


@pytest.mark.parametrize(
    ("predictor", "expected"),
    [
        # grade 1-2 per course: patient 0 course 1, patient 1 course 2 -> 2 of 8 courses
        (emergent(2.0, 1.0), 2 / 8),
        # counting every value in the band: also patient 1 course 1 and patient 2 course 1 -> 4 of 8
        (FractionBelow("anc", 2.0, 1.0), 4 / 8),
        # grade 3-4: patient 0 and patient 2 in course 2 (patient 3 starts at grade 4) -> 2 of 8
        (emergent(1.0), 2 / 8),
        (FractionBelow("anc", 1.0), 4 / 8),
    ],
)
def test_per_course_rates_count_only_grades_worse_than_baseline(predictor, expected):
    assert _predict(predictor, "per_course") == pytest.approx(expected, abs=1e-15)
    # the smooth relaxation tends to the count (no value lies within 5% of a threshold)
    assert _predict(predictor, "per_course", temperature=1e-3) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    ("predictor", "day", "expected"),
    [
        (emergent(2.0), 42, 3 / 4),  # any grade: patients 0, 1 (1.2 < 1.5), 2 (0.9 < 1.0)
        (FractionBelow("anc", 2.0), 42, 4 / 4),
        (emergent(2.0), 14, 1 / 4),  # by day 14 only patient 0 (1.8 < 2.0)
        (emergent(1.0, 0.5), 42, 2 / 4),  # grade 3 band: patients 0 (0.8) and 2 (0.9)
    ],
)
def test_incidence_counts_only_grades_worse_than_baseline(predictor, day, expected):
    assert _predict(predictor, "incidence", day) == pytest.approx(expected, abs=1e-15)
    assert _predict(predictor, "incidence", day, temperature=1e-3) == pytest.approx(expected, abs=1e-6)


def test_smooth_incidence_over_many_visits_keeps_a_small_bias():
    """A patient whose value sits 10% above the threshold at 30 visits has no event; the smooth
    incidence is sigmoid(m / T) with m = log(1 / 1.1) + (T / VISIT_SHARPNESS) log 30 (closed
    form of the smooth maximum of equal margins), below 1/2, where a plain smooth maximum
    (m = log(1 / 1.1) + T log 30 > 0) would count the patient as more likely than not."""
    visits = tuple(range(0, 30 * 7 + 1, 7))
    schedule = Schedule(visits, 1, 7 * 31)
    values = np.full((1, len(visits)), 1.1)
    T = 0.05
    got = _predict(FractionBelow("anc", 1.0), "incidence", visits[-1], T, values, schedule)
    m = math.log(1 / 1.1) + (T / VISIT_SHARPNESS) * math.log(30)
    assert got == pytest.approx(1 / (1 + math.exp(-m / T)), rel=1e-12)
    assert got < 0.5 < 1 / (1 + math.exp(-(math.log(1 / 1.1) + T * math.log(30)) / T))


def test_grade_limits_must_decrease():
    with pytest.raises(ValueError, match="grade_limits"):
        FractionBelow("anc", 2.0, grade_limits=(1.0, 2.0))
    with pytest.raises(ValueError, match="grade_limits"):
        FractionBelow("anc", 2.0, grade_limits=(2.0, 0.0))


def test_a_band_out_of_reach_has_no_smooth_incidence():
    """A patient at grade 2 at baseline cannot have a treatment-emergent grade 1-2 event (upper =
    lower): no smooth incidence either, even with values near the band's lower limit, where the
    minimum of the two margins alone would give sigmoid(-|M| / T) of up to 1/2."""
    grade2 = np.array([[1.2, 1.02, 1.05, 1.2, 1.02, 1.1]])
    assert _predict(emergent(2.0, 1.0), "incidence", 42, temperature=0.05, values=grade2) == 0.0
    # the same values counted without the baseline rule: every one is in the band
    assert _predict(FractionBelow("anc", 2.0, 1.0), "incidence", 42, values=grade2) == 1.0


def test_a_baseline_just_above_a_grade_limit_is_not_a_smooth_per_course_event():
    """Baseline 1.51 (grade 1, threshold 1.5) and every later visit at 1.9 or above: no grade 1-2
    event worse than baseline.  The hard count is 0, and the smooth rate at T = 0.05 is the
    smooth count of the later visits alone, sigmoid of the closed-form smooth maximum of their
    margins log(1.5 / v) (each course's visits reduced with T / VISIT_SHARPNESS), 0.007;
    counting the day-0 value as a visit would give 0.24."""
    values = np.array([[1.51, 1.9, 2.0, 2.1, 1.95, 2.0]])
    assert _predict(emergent(2.0, 1.0), "per_course", values=values) == 0.0
    T = 0.05
    got = _predict(emergent(2.0, 1.0), "per_course", temperature=T, values=values)
    t = T / VISIT_SHARPNESS

    def course(vs, upper):
        m = t * math.log(sum(math.exp(math.log(upper / v) / t) for v in vs))
        return 1 / (1 + math.exp(-m / T))

    # band [1.0, 1.5): rate below 1.5 minus rate below 1.0, per course, mean of the two courses
    expected = sum(course(vs, 1.5) - course(vs, 1.0) for vs in ([1.9, 2.0], [2.1, 1.95, 2.0])) / 2
    assert got == pytest.approx(expected, rel=1e-9)
    assert got < 0.01


def test_a_course_with_only_the_baseline_visit_is_refused_for_an_emergent_row():
    """Course 1 visited only on day 0: a treatment-emergent per-course row has no visit there
    (the baseline is not an event) and says so; the plain row still counts day 0."""
    schedule = Schedule((0, 28, 35), 2, 28)
    values = np.array([[1.8, 2.5, 0.8]])
    with pytest.raises(ValueError, match="course 1 has no visit.*day 0"):
        _predict(emergent(1.0), "per_course", values=values, schedule=schedule)
    assert _predict(FractionBelow("anc", 1.0), "per_course", values=values, schedule=schedule) == 0.5
