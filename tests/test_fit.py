"""Calibration: data loading and validation, observation models, gradients, parameter recovery.

Kept fast: one small synthetic study (8 virtual patients, 4 courses) is compiled once and
shared by the gradient, recovery, temperature and optimiser tests (module-scoped fixtures; the
compiled solve is cached across Objectives with the same structure).
"""

import math

import numpy as np
import pandas as pd
import pytest

import lenapk
from lenapk.fit import Objective, _covariance, fit, hessian_fd, predict_observations
from lenapk.observations import DatasetError, load_observations, validate_observation_table
from lenapk.observe import StudyDesign, standard_visits
from lenapk.solve import SolverSettings

# ---------------------------------------------------------------------------- loading and validation


def test_bundled_tables_load_and_are_tidy():
    obs = lenapk.load_observations()
    t = obs.observations
    assert len(t) == 30 and t["row"].tolist() == list(range(1, 31))
    assert set(t["statistic"]) == {"mean", "proportion", "incidence", "per_course"}
    assert t.loc[t["endpoint"] == "neutropenia_grade3_4", "denominator"].iloc[0] == 333
    assert obs.dose_levels["patients"].sum() == 44


GOOD = "study,regimen_id,endpoint,statistic,day,value,unit,n,numerator,denominator,note\n"
ROWS = [
    "s,r,IgG,mean,0,722,mg/dL,49,,,",
    "s,r,partial_remission,proportion,672,0.26,fraction,34,9,34,",
    "s,r,neutropenia_grade3_4,per_course,,0.41,fraction,44,135,333,",
]


@pytest.mark.parametrize(
    "bad_row, field, words",
    [
        ("s,r,IgQ,mean,10,5,mg/dL,10,,,", "endpoint", "unknown endpoint"),
        ("s,r,IgG,median,10,5,mg/dL,10,,,", "statistic", "unknown statistic"),
        ("s,r,IgG,mean,10,5,,10,,,", "unit", "missing"),
        ("s,r,IgG,mean,10,5,g/L,10,,,", "unit", "mg/dL"),
        ("s,r,stable_disease,proportion,10,1.2,fraction,10,,,", "value", "[0, 1]"),
        ("s,r,stable_disease,proportion,10,0.5,fraction,10,12,10,", "numerator", "exceeds"),
        ("s,r,IgG,mean,-7,5,mg/dL,10,,,", "day", ">= 0"),
        ("s,r,IgG,mean,,5,mg/dL,10,,,", "day", "missing"),
        ("s,r,stable_disease,proportion,10,0.9,fraction,10,5,10,", "value", "disagrees"),
        ("s,r,IgG,proportion,10,0.5,fraction,10,,,", "statistic", "cannot be"),
    ],
)
def test_bad_observation_rows_name_file_row_and_field(tmp_path, bad_row, field, words):
    path = tmp_path / "obs.csv"
    path.write_text(GOOD + "\n".join(ROWS + [bad_row]) + "\n")
    with pytest.raises(DatasetError) as err:
        load_observations(path)
    msg = str(err.value)
    assert "obs.csv" in msg and "row 4 (line 5)" in msg and repr(field) in msg and words in msg
    assert err.value.row == 4 and err.value.field == field


def test_bad_tables_structure_and_dose_levels(tmp_path):
    path = tmp_path / "obs.csv"
    path.write_text("study,endpoint\ns,IgG\n")
    with pytest.raises(DatasetError, match="missing column"):
        load_observations(path)
    (tmp_path / "observations.csv").write_text(GOOD + "\n".join(ROWS) + "\n")
    (tmp_path / "dose_level_response.csv").write_text(
        "study,regimen_id,dose_mg_per_day,responders,patients\ns,r,5,3,11\ns,r,10,17,16\n")
    with pytest.raises(DatasetError, match=r"dose_level_response.csv row 2 .*'responders'"):
        load_observations(tmp_path)
    frame = pd.read_csv(tmp_path / "observations.csv")
    frame.loc[1, "numerator"] = 40
    with pytest.raises(DatasetError, match=r"row 2 .*'numerator'"):
        validate_observation_table(frame)


# ---------------------------------------------------------------------------- a small synthetic study
STUDY = "synthetic"
TRUTH = {"beta_igg": 1.0, "beta_igm": 2.2, "beta_iga": 0.67, "kill": 0.01, "ec50_n": 250.0}
FREE = tuple(TRUTH)
N_DAYS = 112
T_FIT = 0.1
SETTINGS = SolverSettings(rtol=1e-7, atol=1e-9)


def _design():
    regimen = lenapk.Regimen.cycles(10.0, n_cycles=4, name="10 mg continuous")
    return {STUDY: StudyDesign(STUDY, regimen, "relapsed", N_DAYS, standard_visits(N_DAYS), n_courses=4)}


def _template(values=None):
    rows = []
    for ig, base in (("IgG", 600.0), ("IgM", 50.0), ("IgA", 50.0)):
        for day in (0, 56, 112):
            rows.append((ig, "mean", day, base, "mg/dL", 1000))
    rows += [("neutropenia_grade3_4", "per_course", None, 0.3, "fraction", 10000),
             ("lymphocyte_reduction_gt50pct", "proportion", None, 0.3, "fraction", 10000)]
    df = pd.DataFrame(rows, columns=["endpoint", "statistic", "day", "value", "unit", "n"])
    df.insert(0, "study", STUDY)
    df.insert(1, "regimen_id", "r")
    df["numerator"], df["denominator"] = None, None
    if values is not None:
        df["value"] = values
    return df


# The synthetic studies use fixed values (the pre-calibration defaults) for the parameters they
# do not fit, so they do not move when the calibrated defaults change.
SYNTHETIC_BASE = {"growth": 0.001, "f_relapsed": 3.0, "k_act": 0.02, "ec50_act": 10.0, "e_help": 0.02,
                  "ec50_p": 350.0, "e_cd3": 0.1, "kill": 0.0018, "ec50_n": 250.0,
                  "beta_igg": 1.0, "beta_igm": 2.2, "beta_iga": 0.67, "t_rec": 20.0}


@pytest.fixture(scope="module")
def typical(model):
    return model.default_params().replace(**SYNTHETIC_BASE)


@pytest.fixture(scope="module")
def truth_params(typical):
    return typical.replace(**TRUTH)


@pytest.fixture(scope="module")
def synthetic_table(truth_params):
    """Summaries generated from known parameters (smooth values at T_FIT: the exact optimum)."""
    obj = Objective(_template(), free=FREE, params=truth_params, n_patients=8, seed=0, designs=_design(),
                    temperature=T_FIT, settings=SETTINGS)
    pred = obj.table_at(obj.x0)["predicted_smooth"].to_numpy()
    assert np.all(np.isfinite(pred))
    assert 0.02 < pred[-2] < 0.98 and 0.02 < pred[-1] < 0.98  # rates informative
    assert pred[2] / pred[0] > 1.01  # IgG rises
    return _template(np.round(pred, 10))


@pytest.fixture(scope="module")
def objective(synthetic_table, typical):
    start = typical.replace(**{k: 1.5 * v for k, v in TRUTH.items()})
    return Objective(synthetic_table, free=FREE, params=start, n_patients=8, seed=0, designs=_design(),
                     temperature=T_FIT, settings=SETTINGS)


def test_gradient_matches_central_differences(objective):
    x = objective.x0 + 0.03 * np.array([1, -1, 2, -2, 1])
    _assert_gradient_matches_central_differences(objective, x, rel=2e-5)


def _assert_gradient_matches_central_differences(obj, x, *, rel, h=1e-5):
    _, g = obj.value_and_grad(x)
    for j in range(len(x)):
        e = np.zeros_like(x)
        e[j] = h
        fd = (obj(x + e) - obj(x - e)) / (2 * h)
        assert g[j] == pytest.approx(fd, rel=rel, abs=1e-6), obj.free[j]


def test_parameter_recovery_from_50_percent_off(synthetic_table, typical):
    start = typical.replace(**{k: 1.5 * v for k, v in TRUTH.items()})
    res = fit(synthetic_table, params=start, free=FREE, n_patients=8, seed=0, designs=_design(),
              temperature=T_FIT, settings=SETTINGS, steps=100, gtol=1e-5, progress=False)
    assert res.converged, res.message
    est = dict(zip(res.estimates["parameter"], res.estimates["estimate"]))
    close = [k for k in TRUTH if abs(est[k] / TRUTH[k] - 1) < 0.05]
    assert set(close) >= {"beta_igg", "beta_igm", "beta_iga"} and len(close) >= 3, est
    # the result carries SEs, correlations and every observed row beside its prediction
    assert np.all(np.isfinite(res.estimates["se"])) and res.correlation.shape == (5, 5)
    assert np.allclose(np.diag(res.correlation), 1.0)
    ovp = res.observed_vs_predicted
    assert len(ovp) == len(synthetic_table) and ovp["fitted"].sum() == 8  # 3 anchored baselines
    assert res.trace["objective"].iloc[-1] <= res.trace["objective"].iloc[0]
    assert "beta_igg" in res.summary() and "| `beta_igg` |" in res.to_markdown()


def test_smooth_predictions_converge_to_hard_counts(objective):
    x = objective.x0
    tables = {T: objective.table_at(x, temperature=T) for T in (0.2, 0.02, 0.002)}
    rate_rows = tables[0.2]["statistic"] != "mean"
    gaps = [np.max(np.abs(t["predicted_smooth"] - t["predicted"])[rate_rows]) for t in tables.values()]
    assert gaps[2] <= gaps[1] <= gaps[0] and gaps[2] < 0.05
    means = ~rate_rows
    assert np.allclose(tables[0.2]["predicted_smooth"][means], tables[0.2]["predicted"][means])


def test_adam_lowers_the_objective(synthetic_table, typical):
    start = typical.replace(**{k: 1.5 * v for k, v in TRUTH.items()})
    res = fit(synthetic_table, params=start, free=FREE, n_patients=8, seed=0, designs=_design(),
              temperature=T_FIT, settings=SETTINGS, optimizer="adam", steps=8, learning_rate=0.1,
              progress=False, standard_errors=False)
    assert res.objective < res.trace["objective"].iloc[0]


def test_hessian_is_symmetric_and_flags_confounded_directions(objective):
    H = hessian_fd(objective, objective.x0)
    assert np.allclose(H, H.T)
    # a Hessian with a (near-)null direction shared by two parameters flags both
    Hs = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
    cov, se, w, flagged = _covariance(Hs, ("a", "b", "c"))
    assert flagged == {"a", "b"} and math.isinf(se[0]) and np.isfinite(se[2])


def test_pk_parameters_cannot_be_free(synthetic_table):
    with pytest.raises(ValueError, match="closed-form PK"):
        Objective(synthetic_table, free=("cl",), n_patients=8, designs=_design())


# ---------------------------------------------------------------------------- the calibrated defaults


def test_calibrated_defaults_reproduce_the_ig_means():
    obs = load_observations()
    ig = obs.select(obs.observations["endpoint"].isin(["IgG", "IgM", "IgA"]))
    table = predict_observations(ig, n_patients=64, seed=0)
    later = table[table["day"] > 0]
    rel = (later["predicted"] / later["observed"] - 1).abs()
    assert (rel < 0.05).all(), later[["endpoint", "day", "observed", "predicted"]]


# ---------------------------------------------------------------------------- fitting through dose rules
RULES_FREE = ("kill", "ec50_n")
RULES_DAYS = 56


def _rules_design():
    from lenapk.observe import study_rules

    regimen = lenapk.Regimen.cycles(25.0, n_cycles=2, name="25 mg continuous")
    visits = standard_visits(RULES_DAYS)
    return {STUDY: StudyDesign(STUDY, regimen, "relapsed", RULES_DAYS, visits, n_courses=2,
                               rules=study_rules(None, visits))}


def _rules_template(values=None):
    df = _template()
    df = df[df["statistic"] != "mean"].reset_index(drop=True)
    if values is not None:
        df["value"] = values
    return df


@pytest.fixture(scope="module")
def rules_table(typical):
    truth = typical.replace(kill=0.01, ec50_n=600.0)
    obj = Objective(_rules_template(), free=RULES_FREE, params=truth, n_patients=8, seed=0,
                    designs=_rules_design(), temperature=T_FIT, settings=SETTINGS)
    assert obj.freeze_doses(obj.x0) == 1.0  # first freeze: every patient-day is new
    doses = obj.studies[0].frozen_doses
    planned = obj.studies[0].planned
    assert np.any(np.asarray(doses) < np.asarray(planned) - 1e-9)  # the rules hold or reduce doses
    assert obj.freeze_doses(obj.x0) == 0.0  # the same point gives the same doses back
    pred = obj.table_at(obj.x0)["predicted_smooth"].to_numpy()
    assert np.all((pred > 0.02) & (pred < 0.98))
    return _rules_template(np.round(pred, 10)), obj


def test_frozen_dose_objective_is_smooth_and_matches_the_rules(rules_table):
    table, obj = rules_table
    x = obj.x0 + np.array([0.02, -0.02])
    obj.freeze_doses(x)
    with_rules = obj.studies[0].predict(obj.studies[0].solve(x, tangents=False, rules=True))
    frozen = obj.studies[0].predict(obj.studies[0].solve(x, tangents=False))
    np.testing.assert_allclose(frozen, with_rules, rtol=1e-12, atol=1e-12)
    _assert_gradient_matches_central_differences(obj, x, rel=1e-4)


def test_fit_with_dose_rules_reaches_a_self_consistent_dose_history(rules_table, typical):
    table, _ = rules_table
    start = typical.replace(kill=0.013, ec50_n=750.0)
    res = fit(table, params=start, free=RULES_FREE, n_patients=8, seed=0, designs=_rules_design(),
              temperature=T_FIT, settings=SETTINGS, steps=40, gtol=1e-4, progress=False,
              standard_errors=False, dose_refresh=3)
    assert res.converged, res.message
    assert res.dose_changed <= 0.002
    est = dict(zip(res.estimates["parameter"], res.estimates["estimate"]))
    assert est["ec50_n"] == pytest.approx(600.0, rel=0.05)
    assert not res.estimates["at_bound"].any()
