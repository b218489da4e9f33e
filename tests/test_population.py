"""Virtual populations (lenapk.population): random effects against the model's Omega,
covariate draws against their (truncated) distributions, typical patients, reproducibility by
patient index, individual parameters, and the checks of a user's table of patients.

Monte Carlo tolerances are 4 standard errors of the statistic compared (the draws are seeded,
so each check is deterministic; 4 SE leaves a false-alarm chance of about 6e-5 per statistic
for a correct sampler)."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lenapk import Bernoulli, LogNormal
from lenapk._core import omega_matrix
from lenapk.models.turnover import TwoCompartmentTurnover
from lenapk.population import (
    draw_etas,
    individual_parameters,
    sample_covariates,
    validate_patients,
    virtual_population,
)

N_MC = 20000
Z = 4.0


@pytest.fixture(scope="module")
def turnover():
    return TwoCompartmentTurnover()


# ---------------------------------------------------------------------------- random effects


def test_the_models_omega(model, turnover):
    """Hughes 2019: omega^2 of CL 0.296 and of V 0.284, cov(CL, V) = 0.247 (correlation 0.85)."""
    names, omega = omega_matrix(model)
    i, j = names.index("cl"), names.index("v")
    assert omega[i, i] == 0.296 and omega[j, j] == 0.284 and omega[i, j] == omega[j, i] == 0.247
    assert np.count_nonzero(omega - np.diag(np.diag(omega))) == 2  # the only covariance
    names, omega = omega_matrix(turnover)
    assert names == ("cl", "v1", "ic50", "kout")
    np.testing.assert_array_equal(omega, np.diag([0.09, 0.04, 0.1, 0.04]))


@pytest.mark.parametrize("which", ["cll", "turnover"])
def test_random_effects_have_the_models_covariance(model, turnover, which):
    m = model if which == "cll" else turnover
    names, omega = omega_matrix(m)
    drawn_names, etas = draw_etas(m, N_MC, 11)
    etas = np.asarray(etas)
    assert drawn_names == names and etas.shape == (N_MC, len(names))
    # mean 0: SE sqrt(omega_jj / n)
    se_mean = np.sqrt(np.diag(omega) / N_MC)
    assert np.all(np.abs(etas.mean(axis=0)) < Z * se_mean), etas.mean(axis=0) / se_mean
    # covariance: for normal draws Var(s_ij) = (omega_ii omega_jj + omega_ij^2) / n
    S = np.cov(etas, rowvar=False)
    se_cov = np.sqrt((np.outer(np.diag(omega), np.diag(omega)) + omega**2) / N_MC)
    assert np.all(np.abs(S - omega) < Z * se_cov), (S - omega) / se_cov
    if which == "cll":
        i, j = names.index("cl"), names.index("v")
        assert S[i, j] == pytest.approx(0.247, abs=Z * se_cov[i, j])  # se_cov[i, j] = 0.0027
        corr = S[i, j] / math.sqrt(S[i, i] * S[j, j])
        assert corr == pytest.approx(0.247 / math.sqrt(0.296 * 0.284), abs=0.02)


# ---------------------------------------------------------------------------- covariates


def _check_lognormal(x, d: LogNormal, name):
    n = len(x)
    assert np.all((x >= d.low) & (x <= d.high)), name
    sigma = math.sqrt(math.log1p(d.cv**2))
    a = (math.log(d.low) - math.log(d.median)) / sigma if d.low > 0 else -np.inf
    b = (math.log(d.high) - math.log(d.median)) / sigma
    # truncation clips: the shares at the limits are the normal tails beyond them
    for share, p in ((np.mean(x == d.low), stats.norm.cdf(a)), (np.mean(x == d.high), stats.norm.sf(b))):
        assert abs(share - p) < Z * math.sqrt(p * (1 - p) / n) + 1e-12, (name, share, p)
    # clipping leaves the median where it was: SE of a normal sample's median sigma sqrt(pi / 2n)
    assert abs(math.log(np.median(x)) - math.log(d.median)) < Z * sigma * math.sqrt(math.pi / (2 * n)), name
    # the values strictly inside are the log-normal restricted to (low, high)
    inside = np.log(x[(x > d.low) & (x < d.high)])
    m = len(inside)
    tn = stats.truncnorm(a, b, loc=math.log(d.median), scale=sigma)
    assert abs(inside.mean() - tn.mean()) < Z * tn.std() / math.sqrt(m), name
    assert abs(inside.std() - tn.std()) < Z * tn.std() / math.sqrt(2 * m), name


@pytest.mark.parametrize("setting", ["relapsed", "untreated"])
def test_cll_covariates_follow_their_distributions(model, setting):
    dists = model.populations[setting]
    df = sample_covariates(model, N_MC, 5, setting=setting)
    assert list(df.columns) == ["patient", *dists] and df["patient"].tolist() == list(range(N_MC))
    for name, d in dists.items():
        x = df[name].to_numpy()
        if isinstance(d, LogNormal):
            _check_lognormal(x, d, name)
        else:
            assert isinstance(d, Bernoulli)
            assert set(np.unique(x)) <= {0.0, 1.0}
            p = d.probability
            assert abs(x.mean() - p) <= Z * math.sqrt(p * (1 - p) / N_MC), (name, x.mean(), p)
    # the stated settings: relapsed patients are relapsed; del(17p) in 30% of them
    assert df["relapsed"].eq(1.0 if setting == "relapsed" else 0.0).all()
    if setting == "relapsed":
        alc0 = dists["alc0"]
        assert dists["del17p"].probability == 0.3
        assert (alc0.median, alc0.cv, alc0.low, alc0.high) == (40, 1, 5, 500)


def test_turnover_covariates_follow_their_distributions(turnover):
    df = sample_covariates(turnover, N_MC, 3)  # "adults", its only population
    assert list(df.columns) == ["patient", "wt", "r0"]
    for name, d in turnover.populations["adults"].items():
        _check_lognormal(df[name].to_numpy(), d, name)
    assert abs(np.corrcoef(df["wt"], df["r0"])[0, 1]) < Z / math.sqrt(N_MC)  # drawn independently


def test_unknown_setting_is_refused(model, turnover):
    known = r"\['maintenance', 'relapsed', 'relapsed_bulky', 'untreated', 'untreated_symptomatic'\]"
    with pytest.raises(ValueError, match=r"setting must be one of " + known):
        virtual_population(model, 4, 0, setting="adults")
    with pytest.raises(ValueError, match=r"setting must be one of \['adults'\]"):
        sample_covariates(turnover, 4, 0, setting="relapsed")


# ---------------------------------------------------------------------------- patients and their parameters


def _assert_parameters(model, typical, pop, p):
    """theta_i = theta exp(eta_i) for the parameters with variability, the table's covariates, the
    typical value for the rest (computed here in NumPy)."""
    etas = np.asarray(pop.etas)
    cov_names = set(model.covariate_names)
    for name in typical.keys():
        got = np.asarray(p[name])
        assert got.shape == (pop.n,), name
        if name in cov_names:
            np.testing.assert_array_equal(got, pop.covariates[name].to_numpy(float), err_msg=name)
        elif name in pop.eta_names:
            want = float(typical[name]) * np.exp(etas[:, pop.eta_names.index(name)])
            np.testing.assert_allclose(got, want, rtol=1e-14, atol=0, err_msg=name)
        else:
            np.testing.assert_array_equal(got, np.full(pop.n, float(typical[name])), err_msg=name)


@pytest.mark.parametrize("which", ["cll", "turnover"])
def test_individual_parameters_are_typical_times_exp_eta(model, turnover, which):
    m = model if which == "cll" else turnover
    typical = m.default_params()
    pop = virtual_population(m, 7, 2)
    assert np.all(np.asarray(pop.etas) != 0)
    p = individual_parameters(m, typical, pop.covariates, pop.eta_names, pop.etas)
    _assert_parameters(m, typical, pop, p)
    _assert_parameters(m, typical, pop, pop.parameters(m, typical))


def test_without_variability_patients_are_typical_but_for_their_covariates(model):
    typical = model.default_params()
    pop = virtual_population(model, 6, 4, setting="relapsed", variability=False)
    varied = virtual_population(model, 6, 4, setting="relapsed")
    assert pop.eta_names == varied.eta_names and np.all(np.asarray(pop.etas) == 0.0)
    pd.testing.assert_frame_equal(pop.covariates, varied.covariates)  # variability only moves the etas
    p = pop.parameters(model, typical)
    for name in typical.keys():
        want = pop.covariates[name].to_numpy(float) if name in model.covariate_names else float(typical[name])
        np.testing.assert_array_equal(np.asarray(p[name]), np.broadcast_to(want, (6,)), err_msg=name)
    assert np.asarray(p["relapsed"]).tolist() == [1.0] * 6


@pytest.mark.parametrize("which", ["cll", "turnover"])
def test_patient_draws_depend_only_on_seed_and_index(model, turnover, which):
    m = model if which == "cll" else turnover
    ten = virtual_population(m, 10, 7)
    part = virtual_population(m, 5, 7, start=3)
    first = virtual_population(m, 4, 7)
    assert part.covariates["patient"].tolist() == [3, 4, 5, 6, 7]
    expected = ten.covariates.iloc[3:8].reset_index(drop=True)
    pd.testing.assert_frame_equal(part.covariates, expected)
    np.testing.assert_array_equal(np.asarray(part.etas), np.asarray(ten.etas)[3:8])
    pd.testing.assert_frame_equal(first.covariates, ten.covariates.iloc[:4])
    np.testing.assert_array_equal(np.asarray(first.etas), np.asarray(ten.etas)[:4])
    np.testing.assert_array_equal(np.asarray(draw_etas(m, 5, 7, start=3)[1]), np.asarray(ten.etas)[3:8])
    # another seed gives other patients
    other = virtual_population(m, 10, 8)
    assert not np.any(np.asarray(other.etas) == np.asarray(ten.etas))
    assert not np.any(other.covariates[m.covariate_names[0]] == ten.covariates[m.covariate_names[0]])


# ---------------------------------------------------------------------------- a user's table of patients


@pytest.fixture
def patients(model):
    return sample_covariates(model, 6, 1, setting="relapsed")


def test_a_table_of_patients_is_used_as_given(model, patients):
    table = patients.drop(columns="patient")
    checked = validate_patients(table, model)
    assert checked["patient"].tolist() == list(range(6))  # ids added
    pd.testing.assert_frame_equal(checked.drop(columns="patient"), table.astype(float))
    pop = virtual_population(model, patients=patients, seed=9)
    pd.testing.assert_frame_equal(pop.covariates[list(table.columns)], table.astype(float))
    np.testing.assert_array_equal(np.asarray(pop.etas), np.asarray(draw_etas(model, 6, 9)[1]))
    with pytest.raises(ValueError, match=r"n \(5\) differs from the number of patients in the table \(6\)"):
        virtual_population(model, 5, patients=patients)


@pytest.mark.parametrize(
    "column, row, value, message",
    [
        ("crcl", 2, np.nan, r"patients.crcl: row 2 must be a finite number, got nan"),
        ("anc0", 0, "high", r"patients.anc0: row 0 must be a finite number, got 'high'"),
        ("del17p", 1, 2.0, r"patients.del17p: row 1 must be 0 or 1, got 2.0"),
        ("igg0", 3, -5.0, r"patients.igg0: row 3 must be > 0 mg/dL, got -5.0"),
        ("ffm", 5, 0.0, r"patients.ffm: row 5 must be > 0 kg, got 0.0"),
        # the clone starts at alc0 minus the non-clonal lymphocytes (1.5): model.check_covariates
        ("alc0", 4, 1.2, r"patients.alc0: row 4 must exceed the non-clonal lymphocyte count 1.5 x10\^9/L, got 1.2"),
        ("patient", 3, 1, r"patients.patient: duplicate patient id 1 \(row 3\)"),
    ],
)
def test_bad_patient_tables_name_column_and_row(model, patients, column, row, value, message):
    bad = patients.astype(object) if isinstance(value, str) else patients.copy()
    bad.loc[row, column] = value
    with pytest.raises(ValueError, match=message):
        validate_patients(bad, model)
    with pytest.raises(ValueError, match=message):
        virtual_population(model, patients=bad)


def test_missing_columns_and_other_models(model, turnover, patients):
    with pytest.raises(ValueError, match=r"patients: missing covariate column\(s\) \['ffm', 'igm0'\]"):
        validate_patients(patients.drop(columns=["igm0", "ffm"]), model)
    with pytest.raises(ValueError, match="no rows"):
        validate_patients(patients.iloc[:0], model)
    adults = pd.DataFrame({"wt": [70.0, 55.0, 90.0], "r0": [100.0, 80.0, 120.0]})
    assert validate_patients(adults, turnover)["patient"].tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match=r"patients: missing covariate column\(s\) \['r0'\]"):
        validate_patients(adults[["wt"]], turnover)
    with pytest.raises(ValueError, match=r"patients.wt: row 1 must be > 0 kg, got -55.0"):
        validate_patients(adults.assign(wt=[70.0, -55.0, 90.0]), turnover)
    low = adults.assign(r0=[100.0, 1.0, 120.0])  # the turnover model has no check on r0 but its sign
    assert validate_patients(low, turnover)["r0"].tolist() == [100.0, 1.0, 120.0]
