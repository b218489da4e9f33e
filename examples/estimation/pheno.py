"""Phenobarbital in neonates (Grasela and Donn 1985), NONMEM's classic pheno_real model:

    lenapk estimate --data tests/data/nonmem/pheno.dta --model examples/estimation/pheno.py \
        --covariates WGT,APGR --method focei --out pheno-fit

CL = THETA1 * WGT * exp(ETA1); V = THETA2 * WGT * (1 + THETA3 if APGR < 5) * exp(ETA2); IV boluses
(ADVAN1); proportional error.  NONMEM's fit (pheno_real.ext): OFV 586.27606.
"""

import jax.numpy as jnp
import numpy as np

from lenapk.estimation import PK_STRUCTURES, PopulationModel, ResidualError, Theta


def individual(theta, eta, covariates):
    """Individual CL (L/h) and V (L) from body weight (kg) and the Apgar score."""
    low_apgar = jnp.where(covariates["APGR"] < 5, 1.0 + theta["THETA3"], 1.0)
    return {
        "CL": theta["THETA1"] * covariates["WGT"] * jnp.exp(eta["ETA1"]),
        "V": theta["THETA2"] * covariates["WGT"] * low_apgar * jnp.exp(eta["ETA2"]),
    }


model = PopulationModel(
    thetas=[Theta("THETA1", 0.0047, 0.0), Theta("THETA2", 1.0, 0.0), Theta("THETA3", 0.1, -0.99)],
    etas=["ETA1", "ETA2"],
    omega=np.diag([0.03, 0.03]),
    individual=individual,
    predict=PK_STRUCTURES["one_cmt_iv"].predict,
    error=ResidualError("proportional"),
    sigma=[Theta("prop_sd", 0.1)],
    covariates=("WGT", "APGR"),
    name="phenobarbital",
)
