"""Population estimation against published NONMEM / nlmixr2 results and independent references.

- Wang (2007) suite: the objective at fixed parameters for FOCE-I, FOCE and FO under five
  residual error models, published NONMEM 7.5.1 values (``tests/data/nonmem/SOURCES.md``).
- Laplace against an independent scipy computation (bounded scalar search and a finite
  difference second derivative).
- A model linear in eta with additive error: every method equals the exact Gaussian marginal
  likelihood (closed form by numpy), and the R matrix equals a finite-difference Hessian of it.
- Theophylline, one-compartment oral, FOCE-I: nlmixr2's published fit.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import scipy.optimize as so

import lenapk  # noqa: F401  (float64)
from lenapk.estimation import (
    PK_STRUCTURES,
    EstimationError,
    OutputErrors,
    PopulationModel,
    PopulationParameters,
    ResidualError,
    Theta,
    covariance_step,
    estimate,
    load_model,
    observation_table,
    read_nonmem,
    shrinkage,
    subject_objectives,
    vpc,
)
from lenapk.estimation._compiled import compiled_objective
from lenapk.estimation._estimate import newton_step
from lenapk.estimation._parameters import ParameterLayout

DATA = Path(__file__).parent / "data" / "nonmem"
SD = 0.1**0.5
WANG_SIGMA = {
    "proportional": [Theta("prop_sd", SD)],
    "additive": [Theta("add_sd", SD)],
    "combined2": [Theta("add_sd", SD), Theta("prop_sd", SD)],
    "combined1": [Theta("add_sd", SD), Theta("prop_sd", SD)],
    "power": [Theta("pow_sd", SD), Theta("pow_exponent", 0.5)],
}
# Published objective values (NONMEM 7.5.1; nlmixr2est test-focei-wang2007.R): FOCE-I, FOCE, FO.
WANG_OFV = {
    "proportional": (39.458, 39.207, 39.207),
    "additive": (-2.059, -2.059, 0.026),
    "combined2": (39.735, 39.499, 39.499),
    "combined1": (43.554, 43.394, 43.394),
    "power": (9.966, 9.331, 9.651),
}


def wang_model(kind: str) -> PopulationModel:
    return PopulationModel(
        thetas=[Theta("tke", 0.5)],
        etas=["eta_ke"],
        omega=[[0.04]],
        individual=lambda th, e, c: {"KE": th["tke"] * jnp.exp(e["eta_ke"])},
        predict=lambda p, s: 10.0 * jnp.exp(-p["KE"] * s.obs_time),
        error=ResidualError(kind),
        sigma=WANG_SIGMA[kind],
    )


@pytest.fixture(scope="module")
def wang_data():
    return read_nonmem(DATA / "nlmixr2data_Wang2007.csv", rename={"Y": "DV"})


def total_ofv(model, method, data, params=None):
    params = model.initial() if params is None else params
    return float(jnp.sum(subject_objectives(model, method, params, data.subjects)[0]))


@pytest.mark.parametrize("kind", list(WANG_OFV))
@pytest.mark.parametrize("method", ["focei", "foce", "fo"])
def test_wang2007_objective_matches_nonmem(wang_data, kind, method):
    expected = WANG_OFV[kind][("focei", "foce", "fo").index(method)]
    got = total_ofv(wang_model(kind), method, wang_data)
    if method == "fo" and kind in ("proportional", "combined1", "combined2"):
        # The published FO values of these three equal the FOCE ones to the last digit; ours,
        # the FO approximation as Wang defines it (variance at eta = 0, no conditional step),
        # is 0.004-0.006 above (see docs/estimation.md): checked to 0.01 here, 1e-3 elsewhere.
        assert got == pytest.approx(expected, abs=0.01)
    else:
        assert got == pytest.approx(expected, abs=1e-3)


def _laplace_reference(model: PopulationModel, data) -> float:
    """Independent Laplace objective: scipy's bounded search for the mode and a finite-difference
    second derivative of l(eta) written in numpy."""
    s = data.subjects
    total = 0.0
    for i in range(s.n_subjects):
        t, y = np.asarray(s.obs_time[i]), np.asarray(s.dv[i])

        def ell(eta):
            f = 10.0 * np.exp(-0.5 * np.exp(eta) * t)
            v = 0.1 * f**2
            return np.sum(np.log(v) + (y - f) ** 2 / v) + eta**2 / 0.04

        e = so.minimize_scalar(ell, bounds=(-3, 3), method="bounded", options={"xatol": 1e-12}).x
        h = 1e-4
        d2 = (ell(e + h) - 2 * ell(e) + ell(e - h)) / h**2
        total += ell(e) + np.log(0.04) + np.log(0.5 * d2)
    return total


def test_laplace_matches_an_independent_computation(wang_data):
    model = wang_model("proportional")
    assert total_ofv(model, "laplace", wang_data) == pytest.approx(_laplace_reference(model, wang_data), abs=1e-5)


# ---------------------------------------------------------------------- a model linear in eta
def linear_model():
    """y = a + b t + eta_1 + eta_2 t + eps: Gaussian, so every method is exact."""
    return PopulationModel(
        thetas=[Theta("a", 1.0), Theta("b", 0.5)],
        etas=["e1", "e2"],
        omega=[[0.3, 0.05], [0.05, 0.2]],
        omega_blocks=[("e1", "e2")],
        individual=lambda th, e, c: {"A": th["a"] + e["e1"], "B": th["b"] + e["e2"]},
        predict=lambda p, s: p["A"] + p["B"] * s.obs_time,
        error=ResidualError("additive"),
        sigma=[Theta("add_sd", 0.4)],
    )


@pytest.fixture(scope="module")
def linear_data():
    rng = np.random.default_rng(3)
    rows = []
    for i in range(1, 9):
        e = rng.multivariate_normal([0, 0], [[0.3, 0.05], [0.05, 0.2]])
        for t in np.sort(rng.uniform(0, 4, 2 + i % 3)):
            rows.append({"ID": i, "TIME": t, "DV": 1.1 + e[0] + (0.45 + e[1]) * t + 0.4 * rng.normal()})
    return read_nonmem(pd.DataFrame(rows))


def exact_subject_ofv(x, data) -> np.ndarray:
    """Per-subject -2 log L of the linear Gaussian model without the 2 pi constant, by numpy;
    x = (a, b, omega11, omega21, omega22, add_sd)."""
    a, b, o11, o21, o22, sd = x
    omega = np.array([[o11, o21], [o21, o22]])
    table = data.table[data.table["EVID"] == 0]
    out = []
    for _, g in table.groupby("ID", sort=False):
        t, y = g["TIME"].to_numpy(), g["DV"].to_numpy()
        z = np.column_stack([np.ones_like(t), t])
        c = z @ omega @ z.T + sd**2 * np.eye(len(t))
        r = y - a - b * t
        out.append(np.linalg.slogdet(c)[1] + r @ np.linalg.solve(c, r))
    return np.array(out)


def exact_ofv(x, data) -> float:
    return float(exact_subject_ofv(x, data).sum())


def test_one_error_per_output_is_the_exact_likelihood_with_each_outputs_sd(linear_data):
    """Half the observations made output 1 (DVID "b") with its own additive SD: every method
    equals the Gaussian marginal likelihood with C = Z Omega Z' + diag(sd of each output^2)."""
    table = linear_data.table.drop(columns="ROW")
    table["DVID"] = np.where(np.arange(len(table)) % 2 == 0, "a", "b")
    data = read_nonmem(table)
    base = linear_model()
    model = dataclasses.replace(
        base,
        error=OutputErrors((ResidualError("additive"), ResidualError("additive")), ("a", "b")),
        sigma=[Theta("add_sd_a", 0.4), Theta("add_sd_b", 0.9)],
    )
    sd = {"a": 0.4, "b": 0.9}
    expected = []
    for _, g in table[table["EVID"] == 0].groupby("ID", sort=False):
        t, y = g["TIME"].to_numpy(), g["DV"].to_numpy()
        z = np.column_stack([np.ones_like(t), t])
        c = z @ base.omega @ z.T + np.diag([sd[o] ** 2 for o in g["DVID"]])
        r = y - 1.0 - 0.5 * t
        expected.append(np.linalg.slogdet(c)[1] + r @ np.linalg.solve(c, r))
    for method in ("focei", "fo"):
        got = np.asarray(subject_objectives(model, method, model.initial(), data.subjects)[0])
        np.testing.assert_allclose(got, expected, rtol=1e-8, err_msg=method)
    with pytest.raises(EstimationError, match="2 outputs"):
        single = OutputErrors((ResidualError("additive"),), ("a",))
        estimate(dataclasses.replace(model, error=single, sigma=[Theta("add_sd_a", 0.4)]), data)


@pytest.mark.parametrize("method", ["focei", "foce", "fo", "laplace"])
def test_every_method_is_exact_for_a_model_linear_in_eta(linear_data, method):
    x0 = [1.0, 0.5, 0.3, 0.05, 0.2, 0.4]
    assert total_ofv(linear_model(), method, linear_data) == pytest.approx(exact_ofv(x0, linear_data), abs=1e-8)


def _fixed(model: PopulationModel, **changes) -> PopulationModel:
    """``model`` with every parameter fixed (no optimisation: estimate() only evaluates)."""
    fix = lambda ts: [Theta(t.name, t.init, t.lower, t.upper, True) for t in ts]  # noqa: E731
    return PopulationModel(
        **{**model.__dict__, "thetas": fix(model.thetas), "sigma": fix(model.sigma), "omega_fixed": True, **changes}
    )


@pytest.mark.parametrize("method", ["focei", "fo"])
def test_ebes_equal_the_gaussian_posterior_mean(linear_data, method):
    """For the linear model the EBE is the posterior mean (Z'Z/s^2 + Omega^-1)^-1 Z'(y - a - b t)/s^2,
    by numpy; after FO the table's EBEs are the POSTHOC ones, not zero."""
    fit = estimate(_fixed(linear_model()), linear_data, method)
    omega_inv = np.linalg.inv([[0.3, 0.05], [0.05, 0.2]])
    table = linear_data.table[linear_data.table["EVID"] == 0]
    for i, (_, g) in enumerate(table.groupby("ID", sort=False)):
        t, y = g["TIME"].to_numpy(), g["DV"].to_numpy()
        z = np.column_stack([np.ones_like(t), t])
        expected = np.linalg.solve(z.T @ z / 0.16 + omega_inv, z.T @ (y - 1.0 - 0.5 * t) / 0.16)
        np.testing.assert_allclose(fit.etas[i], expected, atol=1e-7)


def test_uninformative_data_shrink_the_ebes_to_zero(linear_data):
    """With a residual SD of 100 the data say nothing: eta-shrinkage is near 1."""
    model = _fixed(linear_model(), sigma=(Theta("add_sd", 100.0, fixed=True),))
    sh = shrinkage(estimate(model, linear_data, "focei"))
    assert sh["eta_shrinkage(e1)"] > 0.99 and sh["eta_shrinkage(e2)"] > 0.99


def test_log_additive_is_the_linear_model_on_the_log_scale(linear_data):
    """log y = a + b t + eta_1 + eta_2 t + eps: the log_additive objective of f = exp(...) equals
    the exact Gaussian objective of the log data (numpy)."""
    table = linear_data.table.copy()
    table["DV"] = np.exp(table["DV"])
    data = read_nonmem(table.drop(columns=["ROW", "EVID", "MDV"]))
    base = linear_model()
    model = PopulationModel(
        **{
            **base.__dict__,
            "predict": lambda p, s: jnp.exp(p["A"] + p["B"] * s.obs_time),
            "error": ResidualError("log_additive"),
        }
    )
    x0 = [1.0, 0.5, 0.3, 0.05, 0.2, 0.4]
    for method in ("focei", "foce", "fo"):
        assert total_ofv(model, method, data) == pytest.approx(exact_ofv(x0, linear_data), abs=1e-8)
    bad = table.drop(columns=["ROW", "EVID", "MDV"])
    bad.loc[bad.index[3], "DV"] = 0.0
    with pytest.raises(EstimationError, match="DV > 0.*DV 0"):
        estimate(model, read_nonmem(bad))


def test_padding_never_changes_a_subject(wang_data):
    """A subject alone and padded among longer subjects: same objective and gradient."""
    rows = pd.DataFrame(
        {"ID": [1, 1, 2, 2, 2, 2, 2], "TIME": [0, 1, 0, 0.5, 1, 2, 3], "DV": [9.1, 4.0, 11, 7, 5, 2, 0.9]}
    )
    model = wang_model("proportional")
    alone, padded = read_nonmem(rows[rows["ID"] == 1]), read_nonmem(rows)
    for method in ("focei", "laplace", "fo"):
        a = total_ofv(model, method, alone)
        b = float(subject_objectives(model, method, model.initial(), padded.subjects)[0][0])
        assert a == pytest.approx(b, rel=1e-13, abs=1e-12)


def test_a_fixed_theta_must_lie_inside_its_bounds():
    with pytest.raises(ValueError, match="strictly inside"):
        Theta("tcl", 0.0, lower=0.0, fixed=True)


def test_fit_and_r_matrix_of_the_linear_model_match_the_exact_likelihood(linear_data):
    model = linear_model()
    fit = estimate(model, linear_data, "focei", covariance="r")
    exact = so.minimize(
        exact_ofv,
        [1.0, 0.5, 0.3, 0.05, 0.2, 0.4],
        args=(linear_data,),
        method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000, "maxfev": 40000},
    )
    assert fit.converged
    assert fit.ofv == pytest.approx(exact.fun, abs=1e-5)
    est = fit.estimates()["estimate"].to_numpy()
    np.testing.assert_allclose(est, exact.x, rtol=2e-3, atol=2e-4)
    # R = 1/2 Hessian of the objective in (theta, omega elements, sd): central differences
    h = 1e-4
    x = est
    hess = np.zeros((6, 6))
    for i in range(6):
        for j in range(6):
            ei, ej = np.eye(6)[i] * h, np.eye(6)[j] * h
            hess[i, j] = (
                exact_ofv(x + ei + ej, linear_data)
                - exact_ofv(x + ei - ej, linear_data)
                - exact_ofv(x - ei + ej, linear_data)
                + exact_ofv(x - ei - ej, linear_data)
            ) / (4 * h * h)
    np.testing.assert_allclose(fit.covariance.r_matrix, 0.5 * hess, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fit.covariance.covariance, np.linalg.inv(0.5 * hess), rtol=1e-3)
    sandwich = covariance_step(model, "focei", fit.params, linear_data.subjects, hessian="fd")
    np.testing.assert_allclose(sandwich.r_matrix, 0.5 * hess, rtol=1e-4, atol=1e-4)
    # S = sum of (1/2 grad OFV_i)(1/2 grad OFV_i)': per-subject gradients by central differences
    grads = np.column_stack(
        [
            (
                exact_subject_ofv(x + np.eye(6)[k] * h, linear_data)
                - exact_subject_ofv(x - np.eye(6)[k] * h, linear_data)
            )
            / (2 * h)
            for k in range(6)
        ]
    )
    s = 0.25 * grads.T @ grads
    np.testing.assert_allclose(sandwich.s_matrix, s, rtol=1e-5, atol=1e-6)
    r_inv = np.linalg.inv(0.5 * hess)
    np.testing.assert_allclose(sandwich.covariance, r_inv @ s @ r_inv, rtol=1e-3, atol=1e-8)


def test_the_newton_decrement_is_twice_the_ofv_left_to_gain(linear_data):
    """The convergence test's Newton decrement g' H^-1 g, a little off the optimum, against
    twice the exact OFV above the exact minimum (numpy closed form); the Newton step goes most of
    the way to the optimum."""
    model = linear_model()
    fit = estimate(model, linear_data, "focei", covariance=None)
    minimum = exact_ofv(fit.estimates()["estimate"].to_numpy(), linear_data)
    layout = ParameterLayout(model)
    fns = compiled_objective(model, "focei")
    u_all = layout.unconstrained(fit.params)
    free = jnp.asarray(fns.free)
    u = u_all[free] + 0.01 * jnp.linspace(-1.0, 1.0, free.size)
    grad = jnp.sum(fns.jacobian(u, u_all, linear_data.subjects)[1], axis=0)
    step, decrement = newton_step(fns, u, u_all, linear_data.subjects, grad)
    moved = np.asarray(layout.natural(layout.from_unconstrained(u_all.at[free].set(u))))
    assert decrement == pytest.approx(2 * (exact_ofv(moved, linear_data) - minimum), rel=0.02)
    before, after = (np.linalg.norm(np.asarray(x - u_all[free])) for x in (u, u + step))
    assert after < 0.2 * before  # quadratic convergence: 1e-2 off becomes about 1e-3 off


def test_a_singular_r_matrix_is_reported_not_hidden(linear_data):
    """Two thetas that enter only as their sum: R is singular and the step says so."""
    model = PopulationModel(
        thetas=[Theta("a1", 0.5), Theta("a2", 0.5), Theta("b", 0.5)],
        etas=["e1"],
        omega=[[0.3]],
        individual=lambda th, e, c: {"A": th["a1"] + th["a2"] + e["e1"], "B": th["b"]},
        predict=lambda p, s: p["A"] + p["B"] * s.obs_time,
        error=ResidualError("additive"),
        sigma=[Theta("add_sd", 0.4)],
    )
    step = covariance_step(model, "focei", model.initial(), linear_data.subjects, hessian="fd")
    assert not step.ok and "singular" in step.message
    assert np.all(np.isnan(step.standard_errors))


# ---------------------------------------------------------------------- theophylline
def theo_model() -> PopulationModel:
    return PopulationModel(
        thetas=[Theta("tka", 0.45), Theta("tcl", 1.0), Theta("tv", 3.45)],
        etas=["eta_ka", "eta_cl", "eta_v"],
        omega=np.diag([0.6, 0.3, 0.1]),
        individual=lambda th, e, c: {
            "KA": jnp.exp(th["tka"] + e["eta_ka"]),
            "CL": jnp.exp(th["tcl"] + e["eta_cl"]),
            "V": jnp.exp(th["tv"] + e["eta_v"]),
        },
        predict=PK_STRUCTURES["one_cmt_oral"].predict,
        error=ResidualError("additive"),
        sigma=[Theta("add_sd", 0.7)],
    )


@pytest.fixture(scope="module")
def theo_fit():
    return estimate(theo_model(), read_nonmem(DATA / "nlmixr2data_theo_sd.csv"), "focei", hessian="fd")


def test_theophylline_focei_reproduces_nlmixr2(theo_fit):
    """nlmixr2's FOCE-I (vignette 'running_nlmixr'): OBJF 116.8044, tka 0.464, tcl 1.01,
    tv 3.46, add.sd 0.693, BSV CV% 70.6 / 26.8 / 13.9."""
    assert theo_fit.converged, theo_fit.message
    assert theo_fit.ofv == pytest.approx(116.8044, abs=0.01)
    est = theo_fit.estimates().set_index("parameter")["estimate"]
    assert est["tka"] == pytest.approx(0.464, abs=0.0015)
    assert est["tcl"] == pytest.approx(1.01, abs=0.005)
    assert est["tv"] == pytest.approx(3.46, abs=0.005)
    assert est["add_sd"] == pytest.approx(0.693, abs=0.0025)
    omega = np.diag(np.asarray(theo_fit.params.omega))
    np.testing.assert_allclose(100 * np.sqrt(np.expm1(omega)), [70.6, 26.8, 13.9], atol=0.6)


def test_theophylline_diagnostics(theo_fit):
    table = observation_table(theo_fit)
    assert len(table) == 132 and table["ID"].nunique() == 12
    # IWRES by hand: (DV - IPRED) / add_sd
    sd = float(theo_fit.params.sigma["add_sd"])
    np.testing.assert_allclose(table["IWRES"], (table["DV"] - table["IPRED"]) / sd, rtol=1e-12)
    # an observation at the dose time (t = 0) has PRED = IPRED = 0 and CWRES = IWRES
    t0 = table[table["TIME"] == 0]
    np.testing.assert_allclose(t0[["PRED", "IPRED"]], 0.0, atol=1e-12)
    np.testing.assert_allclose(t0["CWRES"], t0["IWRES"], rtol=1e-10)
    # CWRES of a correct model are roughly standard normal
    assert abs(table["CWRES"].mean()) < 0.3 and 0.7 < table["CWRES"].std() < 1.3
    sh = shrinkage(theo_fit, table)
    assert all(0 < sh[f"eta_shrinkage({n})"] < 0.3 for n in theo_fit.model.etas)  # rich data: little
    assert 0 < sh["epsilon_shrinkage"] < 0.5


def test_vpc_brackets_the_observed_median(theo_fit):
    table = vpc(theo_fit, n_replicates=100, n_bins=6, seed=1)
    assert len(table) == 6 and table["n_obs"].sum() == 132
    inside = (table["obs_p50"] >= table["sim_p50_lo"]) & (table["obs_p50"] <= table["sim_p50_hi"])
    assert inside.mean() >= 4 / 6


def test_missing_covariate_is_refused_before_fitting(wang_data):
    model = wang_model("additive")
    model = PopulationModel(**{**model.__dict__, "covariates": ("WT",)})
    with pytest.raises(EstimationError, match="WT"):
        estimate(model, wang_data)


# ---------------------------------------------------------------------- phenobarbital, Bolus_1CPT
def test_phenobarbital_focei_reproduces_nonmem():
    """The example model file (examples/estimation/pheno.py, NONMEM's pheno_real.mod) against
    NONMEM's pheno_real.ext (as pharmpy's tests read it): OFV 586.27605628188053,
    THETA(1) 0.00469555, OMEGA(1,1) 0.0293508, SIGMA 0.013241 (a variance)."""
    data = read_nonmem(DATA / "pheno.dta", covariates=("WGT", "APGR"))
    assert (data.n_subjects, data.n_observations) == (59, 155)
    model = load_model(str(Path(__file__).parents[1] / "examples" / "estimation" / "pheno.py"))
    fit = estimate(model, data, "focei", covariance=None)
    assert fit.converged, fit.message
    assert fit.ofv == pytest.approx(586.27605628188053, abs=1e-3)
    est = fit.estimates().set_index("parameter")["estimate"]
    assert est["THETA1"] == pytest.approx(0.00469555, rel=1e-3)
    assert est["omega(ETA1,ETA1)"] == pytest.approx(0.0293508, rel=2e-3)
    assert est["prop_sd"] ** 2 == pytest.approx(0.013241, rel=2e-3)


@pytest.mark.slow
def test_bolus_1cpt_focei_matches_nonmem():
    """NONMEM 7.4.3 FOCE-I on the single-dose part (runODE001): OFV 20058.5041, estimates and SEs.

    At NONMEM's final estimates our objective equals NONMEM's printed OFV (to 0.01: the same
    likelihood on the same data).  Our minimum lies 0.03 below it: NONMEM (ADVAN13, its ODE
    tolerance) stopped a little short of the optimum, which nlmixr2 (20058.49) also passed.  So
    our fit is checked to lie at or below NONMEM's OFV and within 0.05 of it; estimates to 0.5%,
    SEs to 5%.  The run reports 2274 observations where the file has 2276 (NONMEM's count is not
    explained by the file; the OFV agreement at its estimates shows the data are the same)."""
    model = PopulationModel(
        thetas=[Theta("tcl", 1.6), Theta("tv", 4.5)],
        etas=["eta_cl", "eta_v"],
        omega=np.diag([0.15, 0.15]),
        individual=lambda th, e, c: {"CL": jnp.exp(th["tcl"] + e["eta_cl"]), "V": jnp.exp(th["tv"] + e["eta_v"])},
        predict=PK_STRUCTURES["one_cmt_iv"].predict,
        error=ResidualError("proportional"),
        sigma=[Theta("prop_sd", 0.3)],
    )
    data = read_nonmem(DATA / "nlmixr2data_Bolus_1CPT.csv", drop=("SS",), ignore="SD == 0")
    published = {
        "tcl": (1.36625, 0.0249),
        "tv": (4.20753, 0.0282),
        "omega(eta_cl,eta_cl)": (0.072567, 0.00918),
        "omega(eta_v,eta_v)": (0.0914065, 0.0120),
        "prop_sd": (0.197518, 0.00291),
    }
    at_nonmem = PopulationParameters(
        theta={"tcl": jnp.asarray(1.36625), "tv": jnp.asarray(4.20753)},
        omega=jnp.diag(jnp.array([0.072567, 0.0914065])),
        sigma={"prop_sd": jnp.asarray(0.197518)},
    )
    assert total_ofv(model, "focei", data, at_nonmem) == pytest.approx(20058.5041, abs=0.01)
    fit = estimate(model, data, "focei", hessian="fd")
    assert fit.converged, fit.message
    assert 20058.5041 - 0.05 < fit.ofv <= 20058.5041
    table = fit.estimates().set_index("parameter")
    for name, (value, se) in published.items():
        assert table.loc[name, "estimate"] == pytest.approx(value, rel=5e-3), name
        assert table.loc[name, "se"] == pytest.approx(se, rel=0.05), name


@pytest.mark.slow
def test_an_ode_model_fits_as_its_closed_form_does():
    """FOCE-I with the one-compartment model written as an ODE (diffrax between doses) reaches
    the closed form's estimate: same OFV to 1e-4, estimates to 1e-4 relative (8 subjects)."""
    from lenapk.estimation import OdeStructure

    data = read_nonmem(DATA / "nlmixr2data_Bolus_1CPT.csv", drop=("SS",), ignore="SD == 0 or ID > 8")
    ode = OdeStructure(
        rhs=lambda t, y, p: -p["CL"] / p["V"] * y,
        initial_state=lambda p: jnp.zeros(1),
        dose_states=(0,),
        output=lambda y, p: y[0] / p["V"],
        max_steps=64,
    )
    fits = []
    for predict in (PK_STRUCTURES["one_cmt_iv"].predict, ode.predict):
        model = PopulationModel(
            thetas=[Theta("tcl", 1.6), Theta("tv", 4.5)],
            etas=["eta_cl", "eta_v"],
            omega=np.diag([0.15, 0.15]),
            individual=lambda th, e, c: {"CL": jnp.exp(th["tcl"] + e["eta_cl"]), "V": jnp.exp(th["tv"] + e["eta_v"])},
            predict=predict,
            error=ResidualError("proportional"),
            sigma=[Theta("prop_sd", 0.3)],
        )
        fits.append(estimate(model, data, "focei", covariance=None))
    closed, ode_fit = fits
    assert ode_fit.converged and closed.converged
    assert ode_fit.ofv == pytest.approx(closed.ofv, abs=1e-4)
    np.testing.assert_allclose(ode_fit.estimates()["estimate"], closed.estimates()["estimate"], rtol=1e-4)
