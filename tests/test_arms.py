"""Calibration studies of several arms (a cohort split across regimens) and the designs of the
bundled calibration studies (settings, arms, assumed regimens, dose rules).

Kept fast: the arm plans are checked without solving; one tiny two-arm cohort (4 patients,
one 42-day cycle) is solved once."""

import numpy as np
import pandas as pd
import pytest

import lenapk
from lenapk.calibration import Objective, StudyDesign, standard_visits
from lenapk.models.cll import default_designs, load_observations
from lenapk.population import sample_covariates

HIGH = lenapk.Regimen.cycles(20.0, n_cycles=2, cycle_days=42, days_on=21, name="20 mg d1-21/42")
LOW = lenapk.Regimen.cycles(10.0, n_cycles=2, cycle_days=42, days_on=21, name="10 mg d1-21/42")
# the same 42-day cycles, dosed twice a day: an event plan with its own segments
SPLIT = lenapk.Regimen.every(2.5, 12.0, n_days=84, cycle_days=42, name="2.5 mg every 12 h")


def _design(arms, n_days=84, **kw):
    return StudyDesign(
        "two_arms", arms[0][0], "relapsed", n_days, standard_visits(n_days, 42), 0, cycle_days=42, arms=arms, **kw
    )


@pytest.mark.parametrize(
    "weights, n, sizes",
    [
        ((10, 23), 33, (10, 23)),
        ((10, 23), 8, (2, 6)),  # quotas 2.42 / 5.58: the larger remainder gets the spare patient
        ((10, 23), 2, (1, 1)),
        ((1, 1), 5, (3, 2)),  # a tie goes to the earlier arm
        ((1, 100), 4, (1, 3)),  # every arm keeps at least one patient
        ((0.3, 0.3, 0.4), 10, (3, 3, 4)),
    ],
)
def test_arm_sizes_split_the_cohort_by_largest_remainder(weights, n, sizes):
    regs = [HIGH, LOW, HIGH.renamed("again")][: len(weights)]
    design = _design(tuple(zip(regs, weights)))
    assert design.arm_sizes(n) == sizes and sum(sizes) == n
    assert design.arm_index(n).tolist() == [i for i, k in enumerate(sizes) for _ in range(k)]
    assert design.regimens == tuple(regs)


def test_patients_get_their_arms_planned_doses(model):
    design = _design(((HIGH, 10), (LOW, 23)))
    plan = design.plan(model, 8)
    planned = np.asarray(plan.planned)
    assert planned.shape == (8, 84) and plan.one_segment_per_day
    high, low = np.asarray(HIGH.doses), np.asarray(LOW.doses)
    assert all(np.array_equal(planned[i], high) for i in range(2))
    assert all(np.array_equal(planned[i], low) for i in range(2, 8))
    assert np.asarray(plan.amounts)[:, :, 0].sum(axis=1).tolist() == [high.sum()] * 2 + [low.sum()] * 6
    # a one-arm design broadcasts its regimen to every patient
    single = StudyDesign("one", LOW, "relapsed", 84, standard_visits(84, 42), 0, cycle_days=42)
    assert single.regimens == (LOW,) and single.arm_sizes(5) == (5,)
    assert np.array_equal(np.asarray(single.plan(model, 5).planned), np.broadcast_to(low, (5, 84)))


def test_arms_with_different_segments_get_per_patient_plans(model):
    design = _design(((LOW, 1), (SPLIT, 1)))
    plan = design.plan(model, 3)
    assert np.ndim(plan.t0) == 2 and plan.t0.shape[0] == 3 and not plan.one_segment_per_day
    planned = np.asarray(plan.planned)
    assert np.array_equal(planned[:2], np.broadcast_to(np.asarray(LOW.doses), (2, 84)))
    assert np.array_equal(planned[2], np.asarray(SPLIT.doses)) and planned[2, 0] == pytest.approx(5.0)
    # every patient's doses sum to their regimen's, whatever the padding
    totals = np.asarray(plan.amounts).sum(axis=(1, 2))
    assert totals.tolist() == pytest.approx([float(LOW.doses.sum())] * 2 + [float(SPLIT.doses.sum())])


def test_bad_arms_are_refused_naming_the_study():
    other_cycle = lenapk.Regimen.cycles(10.0, n_cycles=3, cycle_days=28, name="28-day")
    with pytest.raises(ValueError, match=r"two_arms: every arm must have the design's cycle_days \(42\).*28-day"):
        _design(((HIGH, 1), (other_cycle, 1)))
    with pytest.raises(ValueError, match=r"two_arms: arms\[1\] .*weight must be a finite number > 0"):
        _design(((HIGH, 1), (LOW, 0)))
    with pytest.raises(ValueError, match="weight must be"):
        _design(((HIGH, 1), (LOW, float("nan"))))
    with pytest.raises(ValueError, match=r"arms\[1\] must be a \(regimen, weight\) pair"):
        _design(((HIGH, 1), LOW))
    with pytest.raises(ValueError, match=r"arms\[0\] regimen must be a lenapk.Regimen"):
        StudyDesign("two_arms", HIGH, "relapsed", 84, (0, 84), 0, cycle_days=42, arms=(("20 mg", 1), (LOW, 1)))
    with pytest.raises(ValueError, match=r"regimen \(10 mg d1-21/42\) must be the first arm's \(20 mg d1-21/42\)"):
        StudyDesign("two_arms", LOW, "relapsed", 84, (0, 84), 0, cycle_days=42, arms=((HIGH, 1), (LOW, 1)))
    with pytest.raises(ValueError, match="two_arms: a cohort of 1 patients cannot cover its 2 arms"):
        _design(((HIGH, 1), (LOW, 1))).arm_sizes(1)


def test_a_two_arm_study_solves_each_arm_on_its_doses(model):
    table = pd.DataFrame(
        {
            "study": ["two_arms"] * 2,
            "regimen_id": ["20 mg;10 mg"] * 2,
            "endpoint": ["ALC", "neutropenia_grade3_4"],
            "statistic": ["mean", "incidence"],
            "day": [42, 42],
            "value": [30.0, 0.2],
            "unit": ["x10^9/L", "fraction"],
            "n": [20, 20],
            "numerator": [None, None],
            "denominator": [None, None],
        }
    )
    design = _design(((HIGH, 1), (LOW, 3)), n_days=42)
    obj = Objective(table, free=("kill",), n_patients=4, designs={"two_arms": design}, anchor_baselines=False)
    study = obj.studies[0]
    assert np.asarray(study.plan.planned)[:, 0].tolist() == [20.0, 10.0, 10.0, 10.0]
    values, _, doses, ok = study.solve(obj.x0, tangents=False)
    assert ok and np.asarray(doses)[:, 0].tolist() == [20.0, 10.0, 10.0, 10.0]
    assert all(np.all(np.isfinite(np.asarray(v))) for v in values.values())


# ---------------------------------------------------------------------------- the bundled studies


@pytest.fixture(scope="module")
def bundled_designs():
    return default_designs(load_observations().observations)


def test_default_designs_cover_the_five_bundled_studies(bundled_designs, model):
    d = bundled_designs
    assert set(d) == {
        "early_stage_high_risk",
        "relapsed_refractory_continuous",
        "relapsed_pulsed_42d",
        "untreated_len_dex",
        "maintenance_after_cit",
    }
    settings = {k: v.setting for k, v in d.items()}
    assert settings == {
        "early_stage_high_risk": "untreated",
        "relapsed_refractory_continuous": "relapsed",
        "relapsed_pulsed_42d": "relapsed_bulky",
        "untreated_len_dex": "untreated_symptomatic",
        "maintenance_after_cit": "maintenance",
    }
    assert set(settings.values()) <= set(model.populations)
    for name in ("relapsed_bulky", "untreated_symptomatic", "maintenance"):
        assert list(model.populations[name]) == list(model.populations["untreated"])  # the draws' order
    assert d["early_stage_high_risk"].rules is None and d["relapsed_refractory_continuous"].rules is not None


def test_pulsed_study_is_two_arms_from_arms_csv(bundled_designs, model):
    pulsed = bundled_designs["relapsed_pulsed_42d"]
    # data/arms.csv: 10 patients on 20 mg, 23 on 10 mg (Aue 2009)
    assert [(r.name, w) for r, w in pulsed.arms] == [("pulse_20mg_d1_21_of_42", 10.0), ("pulse_10mg_d1_21_of_42", 23.0)]
    assert pulsed.regimen.name == "pulse_20mg_d1_21_of_42" and pulsed.cycle_days == 42
    assert pulsed.n_days == 168 and pulsed.n_courses == 0 and pulsed.rules is None
    assert pulsed.arm_sizes(33) == (10, 23) and pulsed.arm_sizes(16) == (5, 11)
    planned = np.asarray(pulsed.plan(model, 16).planned)
    assert set(planned[:5].max(axis=1)) == {20.0} and set(planned[5:].max(axis=1)) == {10.0}
    assert (planned[:, :21] > 0).all() and (planned[:, 21:42] == 0).all()
    assert "10 patients" in pulsed.note and "23 patients" in pulsed.note


def test_untreated_len_dex_escalates_under_the_trial_rule(bundled_designs):
    dex = bundled_designs["untreated_len_dex"]
    doses = np.asarray(dex.regimen.doses)
    assert dex.n_days == 18 * 28 and dex.n_courses == 0
    assert [doses[28 * k] for k in range(6)] == [5.0, 10.0, 15.0, 20.0, 25.0, 25.0]
    assert dex.rules is not None and dex.rules.dose_levels == (5.0, 10.0, 15.0, 20.0, 25.0)
    assert "dexamethasone" in dex.note and "trial rule" in dex.note


def test_maintenance_uses_the_assumed_escalation(bundled_designs):
    m = bundled_designs["maintenance_after_cit"]
    doses = np.asarray(m.regimen.doses)
    assert m.n_days == 6 * 28 and m.cycle_days == 28
    assert [doses[28 * k] for k in range(6)] == [2.5, 5.0, 10.0, 10.0, 10.0, 10.0]
    assert (doses.reshape(6, 28)[:, :20] > 0).all() and (doses.reshape(6, 28)[:, 20:] == 0).all()
    assert m.rules is not None and m.rules.dose_levels == (2.5, 5.0, 10.0)
    assert "assumed" in m.note and "steps not reported" in m.note


def test_new_populations_draw_valid_patients(model):
    cov = {
        s: sample_covariates(model, 200, 0, setting=s)
        for s in ("relapsed_bulky", "untreated_symptomatic", "maintenance")
    }
    for setting, c in cov.items():
        model.check_covariates(c)
        assert (c["relapsed"] == (1.0 if setting == "relapsed_bulky" else 0.0)).all()
    assert cov["maintenance"]["alc0"].between(1.55, 6.0).all() and (cov["maintenance"]["del17p"] == 0).all()
    assert 120 < cov["untreated_symptomatic"]["alc0"].median() < 260
    assert 0.3 < cov["relapsed_bulky"]["del17p"].mean() < 0.56
