"""The flagship model: lenalidomide in chronic lymphocytic leukaemia.

Concentration ``C`` (ng/mL) comes from the closed-form one-compartment oral PK
(:class:`lenapk.OneCompartment`).  Time in days.

PK covariates (Hughes et al., Br J Clin Pharmacol 2019)::

    CL/F = CL (FFM / 55 kg)^0.75 (CrCl / 90 mL/min)^0.224,   V/F = V (FFM / 55 kg)

Immune activation (dimensionless, 1 at baseline; T-cell synapse repair, slow onset)::

    E_act = Emax_act C / (EC50_act + C)
    dA/dt = k_act (1 + E_act - A)

Leukaemic clone (x10^9/L; ALC = clone + non-clonal lymphocytes)::

    dX/dt = (g f_rel^relapsed - k_kill f_17p^del17p f_ighv^ighv_unmutated (A - 1)) X

Neutrophils and platelets, Friberg et al. (J Clin Oncol 2002), k_tr = 4 / MTT::

    dP/dt  = k_tr P (1 - E) (B / Circ)^gamma - k_tr P,  E = C / (EC50 + C)
    dT1/dt = k_tr (P - T1), dT2/dt = k_tr (T1 - T2), dT3/dt = k_tr (T2 - T3)
    dCirc/dt = k_tr (T3 - Circ)

Immunoglobulins (mg/dL), turnover with synthesis following normal B-cell help ``H`` (1 at
baseline), which the clone suppresses and immune activation restores::

    H = (1 + e_help (A - 1)) (K_supp + X0) / (K_supp + X)

Antibody-secreting capacity ``R`` (log scale, 0 at baseline) follows log H with a first-order
delay ``t_rec``: new plasma cells come from a normal B-cell compartment that is rebuilt only
months after the clone recedes, which is why every class keeps rising between 12 and 24 cycles::

    dR/dt = (log H - R) / t_rec
    dIg/dt = k_deg (Ig0 exp(beta R) - Ig),  k_deg = ln 2 / t_half

Synthesis ``k_deg Ig0 exp(beta R)`` is positive for every state.  Circulating CD3+ T cells
(cells/uL) are an observable: ``CD3 = CD3_0 (1 + e_cd3 (A - 1))``.

Values marked "calibrated" are the estimates of ``examples/calibrate.py`` (``docs/calibration.md``);
values marked "assumed" have no published source and are not identifiable from the bundled data.
"""

from __future__ import annotations

import math
from typing import ClassVar

import jax.numpy as jnp
import numpy as np

from ..._core import AbstractModel, ObservableSpec, OneCompartment, PKConstants, fastmath
from ._calibration import CALIBRATION
from ._endpoints import DOSE_LEVELS, ENDPOINTS
from ._parameters import PARAMETER_SPECS, P
from ._population import POPULATIONS

FFM_REF_KG = 55.0
CRCL_REF_ML_MIN = 90.0
LN2 = math.log(2.0)
IG_CLASSES = ("igg", "igm", "iga")
CAPACITY = 15  # index of "ig_capacity" in LenalidomideCLL.state_names

OBSERVABLES = (
    ObservableSpec("conc_ng_ml", "ng/mL", "lenalidomide plasma concentration"),
    ObservableSpec("alc", "x10^9/L", "absolute lymphocyte count (clone + non-clonal lymphocytes)"),
    ObservableSpec("anc", "x10^9/L", "absolute neutrophil count"),
    ObservableSpec("platelets", "x10^9/L", "platelet count"),
    ObservableSpec("igg", "mg/dL", "serum IgG"),
    ObservableSpec("igm", "mg/dL", "serum IgM"),
    ObservableSpec("iga", "mg/dL", "serum IgA"),
    ObservableSpec("cd3", "cells/uL", "circulating CD3+ T cells"),
    ObservableSpec("activation", "-", "immune activation (1 at baseline)"),
)


def _friberg(y5, effect, ktr, gamma, log_base):
    """Friberg chain derivatives; ``y5`` = (proliferating, 3 transit, circulating) on axis 0."""
    prol, t1, t2, t3, circ = y5[0], y5[1], y5[2], y5[3], y5[4]
    feedback = jnp.exp(gamma * (log_base - fastmath.log(circ)))
    return [
        ktr * prol * ((1.0 - effect) * feedback - 1.0),
        ktr * (prol - t1),
        ktr * (t1 - t2),
        ktr * (t2 - t3),
        ktr * (t3 - circ),
    ]


class LenalidomideCLL(AbstractModel):
    """Lenalidomide PK (closed form) -> immune activation -> CLL clone, neutrophils,
    platelets and IgG/IgM/IgA.  See the module docstring and ``docs/model.md``."""

    state_names: ClassVar[tuple[str, ...]] = (
        "clone",
        "activation",
        "neut_prol",
        "neut_t1",
        "neut_t2",
        "neut_t3",
        "anc",
        "plt_prol",
        "plt_t1",
        "plt_t2",
        "plt_t3",
        "platelets",
        "igg",
        "igm",
        "iga",
        "ig_capacity",
    )
    assert state_names[CAPACITY] == "ig_capacity"
    parameter_specs: ClassVar[tuple[P, ...]] = PARAMETER_SPECS
    omega_covariances: ClassVar[dict[tuple[str, str], float]] = {("cl", "v"): 0.247}
    observable_specs: ClassVar[tuple[ObservableSpec, ...]] = OBSERVABLES
    pk: ClassVar[OneCompartment] = OneCompartment()
    populations: ClassVar[dict] = POPULATIONS
    time_unit: ClassVar[str] = "day"
    endpoints: ClassVar = ENDPOINTS
    calibration: ClassVar = CALIBRATION
    dose_levels: ClassVar[tuple[float, ...]] = DOSE_LEVELS

    def pk_constants(self, p):
        """Hughes 2019 covariates: CL/F scaled by (FFM/55)^0.75 (CrCl/90)^0.224, V/F by FFM/55."""
        ffm = p["ffm"] / FFM_REF_KG
        cl = p["cl"] * ffm**0.75 * (p["crcl"] / CRCL_REF_ML_MIN) ** 0.224
        v = p["v"] * ffm
        return PKConstants(ka=p["ka"], k=cl / v, v=v)

    def check_covariates(self, table):
        """The baseline ALC must exceed the non-clonal lymphocytes (the clone starts positive)."""
        normal = next(s.value for s in self.parameter_specs if s.name == "normal_lymph")
        bad = table["alc0"] <= normal
        if bad.any():
            r = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(
                f"patients.alc0: row {r} must exceed the non-clonal lymphocyte count {normal} "
                f"x10^9/L, got {float(table['alc0'].iloc[r])!r}"
            )

    def derive(self, p):
        """Rate constants and covariate factors, computed once per solve."""
        c = dict(p.values)
        c["clone0"] = jnp.maximum(p["alc0"] - p["normal_lymph"], 1e-3)
        c["growth_eff"] = p["growth"] * p["f_relapsed"] ** p["relapsed"]
        c["kill_eff"] = p["kill"] * p["f_del17p"] ** p["del17p"] * p["f_ighv"] ** p["ighv_unmutated"]
        c["ktr_n"], c["ktr_p"] = 4.0 / p["mtt_n"], 4.0 / p["mtt_p"]
        c["log_anc0"], c["log_plt0"] = jnp.log(p["anc0"]), jnp.log(p["plt0"])
        c["supp0"] = p["k_supp"] + c["clone0"]
        c["k_rec"] = 1.0 / p["t_rec"]
        for ig in IG_CLASSES:
            c[f"kdeg_{ig}"] = LN2 / p[f"t_half_{ig}"]
            c[f"ksyn0_{ig}"] = c[f"kdeg_{ig}"] * p[f"{ig}0"]
        return c

    def initial_state(self, c):
        x0 = c["clone0"]
        one = jnp.ones_like(x0)
        anc0, plt0 = c["anc0"] * one, c["plt0"] * one
        return jnp.stack(
            [
                x0,
                one,
                anc0,
                anc0,
                anc0,
                anc0,
                anc0,
                plt0,
                plt0,
                plt0,
                plt0,
                plt0,
                c["igg0"] * one,
                c["igm0"] * one,
                c["iga0"] * one,
                0.0 * one,
            ]
        )

    def log_help(self, clone, act, c):
        """log of normal B-cell help H (0 at baseline), one logarithm per evaluation: f64 ``log``
        is the costliest operation of the batched right-hand side (benchmarks/HISTORY.md), hence
        also :func:`lenapk.fastmath.log`, which XLA vectorises."""
        return fastmath.log((1.0 + c["e_help"] * (act - 1.0)) * c["supp0"] / (c["k_supp"] + clone))

    def ig_synthesis(self, y, c):
        """Ig synthesis rates (mg/dL/day) of IgG, IgM, IgA on axis 0; positive by construction."""
        return jnp.stack([c[f"ksyn0_{ig}"] * jnp.exp(c[f"beta_{ig}"] * y[CAPACITY]) for ig in IG_CLASSES])

    def rhs(self, t, y, conc, c):
        clone, act = y[0], y[1]
        d_act = c["k_act"] * (1.0 + c["emax_act"] * conc / (c["ec50_act"] + conc) - act)
        d_clone = (c["growth_eff"] - c["kill_eff"] * (act - 1.0)) * clone
        d_neut = _friberg(y[2:7], conc / (c["ec50_n"] + conc), c["ktr_n"], c["gamma_n"], c["log_anc0"])
        d_plt = _friberg(y[7:12], conc / (c["ec50_p"] + conc), c["ktr_p"], c["gamma_p"], c["log_plt0"])
        capacity = y[CAPACITY]
        d_capacity = (self.log_help(clone, act, c) - capacity) * c["k_rec"]
        d_ig = [
            c[f"ksyn0_{ig}"] * jnp.exp(c[f"beta_{ig}"] * capacity) - c[f"kdeg_{ig}"] * y[12 + i]
            for i, ig in enumerate(IG_CLASSES)
        ]
        return jnp.stack([d_clone, d_act, *d_neut, *d_plt, *d_ig, d_capacity])

    def observables(self, y, conc, c):
        act = y[1]
        return {
            "conc_ng_ml": conc,
            "alc": y[0] + c["normal_lymph"],
            "anc": y[6],
            "platelets": y[11],
            "igg": y[12],
            "igm": y[13],
            "iga": y[14],
            "cd3": c["cd3_0"] * (1.0 + c["e_cd3"] * (act - 1.0)),
            "activation": act,
        }
