"""Population estimation on the classic data sets, against published NONMEM / nlmixr2 results.

    python benchmarks/estimation.py            # all five fits, FOCE-I; writes estimation.json
    python benchmarks/estimation.py theo pheno # a subset

Each fit runs twice in one process: the first call includes compiling the objective (most of
its time), the second reuses the compiled functions (``lenapk.estimation`` caches them per model
and method), so it is the time the optimisation itself takes.  Wall and CPU (process, all
threads) times are both recorded.  The covariance step (sandwich, R by central differences of the
exact gradient, and also by automatic differentiation for the first data set) is timed apart.
Published values (``tests/data/nonmem/SOURCES.md`` and the README of the reference data):

- Bolus_1CPT (single-dose part): NONMEM 7.4.3 FOCE-I OFV 20058.5041, THETA 1.36625, 4.20753,
  0.197518, OMEGA 0.072567, 0.0914065, SEs 0.0249, 0.0282, 0.00291, 0.00918, 0.0120; NONMEM took
  21 s + 4 s (covariance) on unreported hardware; nlmixr2 2.1.4 reached 20058.49 in 0.46 s.
- Theophylline: nlmixr2 FOCE-I OBJF 116.8044, tka 0.464, tcl 1.01, tv 3.46, add.sd 0.693.
- Phenobarbital: NONMEM's pheno_real.ext as read by pharmpy's tests: OFV 586.27605628188053
  (587.36644134661617 at the initial estimates), THETA(1) 0.00469555, OMEGA(1,1) 0.0293508.
- Warfarin PK: no published fit of the same model was found; the estimates are reported only.
- large: 2000 simulated subjects on the theophylline design (20,000 observations), fitted to
  check speed at scale and recovery of the simulation's parameters.
- two_cmt_100, two_cmt_1000: 100 and 1,000 subjects simulated from a two-compartment oral model
  with a weight covariate (ten samples each): the issue's scaling test (the warm fit's time per
  outer iteration, each iteration being one objective-and-gradient evaluation plus the line
  search's values).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd

import lenapk  # noqa: F401
from lenapk.estimation import (
    PK_STRUCTURES,
    PopulationModel,
    PopulationParameters,
    ResidualError,
    Theta,
    builtin_model,
    estimate,
    read_nonmem,
    simulate_observations,
)
from lenapk.estimation._covariance import covariance_step

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "tests" / "data" / "nonmem"


def _lognormal(names_thetas: dict[str, str]):
    return lambda th, e, c: {p: jnp.exp(th[t] + e[f"eta_{t[1:]}"]) for p, t in names_thetas.items()}


def theo():
    model = PopulationModel(
        thetas=[Theta("tka", 0.45), Theta("tcl", 1.0), Theta("tv", 3.45)],
        etas=["eta_ka", "eta_cl", "eta_v"],
        omega=np.diag([0.6, 0.3, 0.1]),
        individual=_lognormal({"KA": "tka", "CL": "tcl", "V": "tv"}),
        predict=PK_STRUCTURES["one_cmt_oral"].predict,
        error=ResidualError("additive"),
        sigma=[Theta("add_sd", 0.7)],
        name="theophylline",
    )
    published = {"ofv": 116.8044, "estimates": {"tka": 0.464, "tcl": 1.01, "tv": 3.46, "add_sd": 0.693}}
    return model, read_nonmem(DATA / "nlmixr2data_theo_sd.csv"), published


def bolus():
    model = PopulationModel(
        thetas=[Theta("tcl", 1.6), Theta("tv", 4.5)],
        etas=["eta_cl", "eta_v"],
        omega=np.diag([0.15, 0.15]),
        individual=_lognormal({"CL": "tcl", "V": "tv"}),
        predict=PK_STRUCTURES["one_cmt_iv"].predict,
        error=ResidualError("proportional"),
        sigma=[Theta("prop_sd", 0.3)],
        name="bolus_1cpt",
    )
    data = read_nonmem(DATA / "nlmixr2data_Bolus_1CPT.csv", drop=("SS",), ignore="SD == 0")
    published = {
        "ofv": 20058.5041,
        "estimates": {
            "tcl": 1.36625,
            "tv": 4.20753,
            "omega(eta_cl,eta_cl)": 0.072567,
            "omega(eta_v,eta_v)": 0.0914065,
            "prop_sd": 0.197518,
        },
        "se": {
            "tcl": 0.0249,
            "tv": 0.0282,
            "omega(eta_cl,eta_cl)": 0.00918,
            "omega(eta_v,eta_v)": 0.0120,
            "prop_sd": 0.00291,
        },
    }
    return model, data, published


def pheno_individual(th, e, c):
    """CL = THETA1 WGT e^ETA1; V = THETA2 WGT (1 + THETA3 [APGR < 5]) e^ETA2 (pheno_real.mod)."""
    v = th["THETA2"] * c["WGT"] * jnp.where(c["APGR"] < 5, 1.0 + th["THETA3"], 1.0)
    return {"CL": th["THETA1"] * c["WGT"] * jnp.exp(e["ETA1"]), "V": v * jnp.exp(e["ETA2"])}


def pheno():
    model = PopulationModel(
        thetas=[Theta("THETA1", 0.00469307, 0.0), Theta("THETA2", 1.00916, 0.0), Theta("THETA3", 0.1, -0.99)],
        etas=["ETA1", "ETA2"],
        omega=np.diag([0.0309626, 0.031128]),
        individual=pheno_individual,
        predict=PK_STRUCTURES["one_cmt_iv"].predict,
        error=ResidualError("proportional"),
        sigma=[Theta("prop_sd", 0.013241**0.5)],
        covariates=("WGT", "APGR"),
        name="phenobarbital",
    )
    data = read_nonmem(DATA / "pheno.dta", covariates=("WGT", "APGR"))
    published = {"ofv": 586.27605628188053, "estimates": {"THETA1": 0.00469555, "omega(ETA1,ETA1)": 0.0293508}}
    return model, data, published


def warfarin():
    def individual(th, e, c):
        return {**_lognormal({"CL": "tcl", "V": "tv", "KA": "tka"})(th, e, c), "ALAG": jnp.exp(th["tlag"])}

    model = PopulationModel(
        thetas=[Theta("tcl", np.log(0.13)), Theta("tv", np.log(8.0)), Theta("tka", 0.0), Theta("tlag", np.log(0.8))],
        etas=["eta_cl", "eta_v", "eta_ka"],
        omega=np.diag([0.1, 0.1, 0.3]),
        individual=individual,
        predict=PK_STRUCTURES["one_cmt_oral"].predict,
        error=ResidualError("combined2"),
        sigma=[Theta("add_sd", 0.3), Theta("prop_sd", 0.1)],
        name="warfarin_pk",
    )
    return model, read_nonmem(DATA / "nlmixr2data_warfarin.csv", ignore="DVID == 'pca'"), {}


def large(n_subjects: int = 2000):
    """A simulated large data set: the theophylline design (12 sampling times, one oral dose of
    320 mg) for ``n_subjects`` subjects, simulated from the theophylline model at nlmixr2's
    estimates (seed 0), then fitted from the same initial values as theophylline."""
    model, _, _ = theo()
    times = [0.25, 0.5, 1, 2, 3.5, 5, 7, 9, 12, 24]
    rows = []
    for i in range(1, n_subjects + 1):
        rows.append({"ID": i, "TIME": 0.0, "AMT": 320.0, "EVID": 1, "CMT": 1, "DV": 0.0})
        rows += [{"ID": i, "TIME": t, "AMT": 0.0, "EVID": 0, "CMT": 2, "DV": 1.0} for t in times]
    design = read_nonmem(pd.DataFrame(rows))
    truth = PopulationParameters(
        theta={"tka": jnp.asarray(0.464), "tcl": jnp.asarray(1.01), "tv": jnp.asarray(3.46)},
        omega=jnp.diag(jnp.array([0.4, 0.07, 0.02])),
        sigma={"add_sd": jnp.asarray(0.693)},
    )
    sim = simulate_observations(model, truth, design.subjects, 1, seed=0)[0]
    table = pd.DataFrame(rows)
    obs = table["EVID"] == 0
    table.loc[obs, "DV"] = sim[np.asarray(design.subjects.obs_mask)]
    published = {"truth": {"tka": 0.464, "tcl": 1.01, "tv": 3.46, "add_sd": 0.693}}
    return model, read_nonmem(table), published


TWO_CMT_TIMES = (0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 24.0, 48.0)
TWO_CMT_CONFIG = {
    "covariates": ["WT"],
    "model": {"error": "proportional", "name": "two_cmt_wt"},
    "theta": {"tcl": 1.4, "tv": 3.7, "tq": 2.5, "tvp": 4.4, "tka": 0.2, "cl_wt": 0.5},
    "omega": {"eta_cl": 0.15, "eta_v": 0.1, "eta_ka": 0.3},
    "sigma": {"prop_sd": 0.2},
    "parameters": {
        "CL": "exp(tcl + eta_cl) * (WT / 70) ** cl_wt",
        "V": "exp(tv + eta_v) * WT / 70",
        "Q": "exp(tq)",
        "VP": "exp(tvp)",
        "KA": "exp(tka + eta_ka)",
    },
}
TWO_CMT_TRUTH = PopulationParameters(
    theta={
        k: jnp.asarray(v)
        for k, v in {
            "tcl": np.log(5.0),
            "tv": np.log(50.0),
            "tq": np.log(10.0),
            "tvp": np.log(100.0),
            "tka": np.log(1.5),
            "cl_wt": 0.75,
        }.items()
    },
    omega=jnp.diag(jnp.array([0.09, 0.04, 0.16])),
    sigma={"prop_sd": jnp.asarray(0.15)},
)


def two_cmt_model():
    """Two-compartment oral model (ADVAN4) with weight on CL (estimated exponent ``cl_wt``) and
    on V (proportional), log-normal CL, V, KA, proportional error; initial values off the truth."""
    return builtin_model("two_cmt_oral", TWO_CMT_CONFIG)


def two_cmt_data(n_subjects: int, seed: int = 0):
    """``n_subjects`` simulated from :data:`TWO_CMT_TRUTH`: 100 mg oral at 0, ten samples to 48 h,
    weight log-normal (median 70 kg, CV 20%), all drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    weights = 70.0 * np.exp(0.2 * rng.standard_normal(n_subjects))
    rows = []
    for i, wt in enumerate(weights, start=1):
        rows.append({"ID": i, "TIME": 0.0, "AMT": 100.0, "EVID": 1, "CMT": 1, "DV": 0.0, "WT": wt})
        rows += [{"ID": i, "TIME": t, "AMT": 0.0, "EVID": 0, "CMT": 2, "DV": 1.0, "WT": wt} for t in TWO_CMT_TIMES]
    table = pd.DataFrame(rows)
    design = read_nonmem(table, covariates=("WT",))
    sim = simulate_observations(two_cmt_model(), TWO_CMT_TRUTH, design.subjects, 1, seed=seed)[0]
    table.loc[table["EVID"] == 0, "DV"] = sim[np.asarray(design.subjects.obs_mask)]
    return read_nonmem(table, covariates=("WT",))


def two_cmt(n_subjects: int):
    truth = {k: float(v) for k, v in TWO_CMT_TRUTH.theta.items()}
    return two_cmt_model(), two_cmt_data(n_subjects), {"truth": {**truth, "prop_sd": 0.15}}


CASES = {
    "bolus": bolus,
    "theo": theo,
    "pheno": pheno,
    "warfarin": warfarin,
    "large": large,
    "two_cmt_100": lambda: two_cmt(100),
    "two_cmt_1000": lambda: two_cmt(1000),
}


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def run_case(name: str, with_ad: bool) -> dict:
    model, data, published = CASES[name]()
    fit, wall1, cpu1 = timed(lambda: estimate(model, data, "focei", covariance=None))
    fit, wall2, cpu2 = timed(lambda: estimate(model, data, "focei", covariance=None))
    cov, wall_cov, cpu_cov = timed(lambda: covariance_step(model, "focei", fit.params, data.subjects, hessian="fd"))
    est = fit.estimates().set_index("parameter")
    se = dict(zip(cov.names, cov.standard_errors.tolist()))
    out = {
        "n_subjects": data.n_subjects,
        "n_observations": data.n_observations,
        "ofv": fit.ofv,
        "converged": fit.converged,
        "iterations": fit.n_iterations,
        "warm_per_iteration_s": wall2 / max(fit.n_iterations, 1),
        "estimates": est["estimate"].to_dict(),
        "se": se,
        "condition_number": cov.condition_number,
        "first_fit_wall_s": wall1,
        "first_fit_cpu_s": cpu1,
        "warm_fit_wall_s": wall2,
        "warm_fit_cpu_s": cpu2,
        "covariance_fd_wall_s": wall_cov,
        "covariance_fd_cpu_s": cpu_cov,
        "published": published,
    }
    if with_ad:
        cov_ad, wall_ad, cpu_ad = timed(lambda: covariance_step(model, "focei", fit.params, data.subjects))
        out.update(
            covariance_ad_wall_s=wall_ad,
            covariance_ad_cpu_s=cpu_ad,
            se_ad=dict(zip(cov_ad.names, cov_ad.standard_errors.tolist())),
        )
    return out


def main(names: list[str]) -> None:
    path = HERE / "estimation.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    for i, name in enumerate(names):
        res = run_case(name, with_ad=i == 0)
        results[name] = res
        print(
            f"{name}: OFV {res['ofv']:.4f} (published {res['published'].get('ofv', 'none')}), "
            f"first fit {res['first_fit_wall_s']:.1f} s wall, warm {res['warm_fit_wall_s']:.2f} s"
        )
        path.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main(sys.argv[1:] or list(CASES))
