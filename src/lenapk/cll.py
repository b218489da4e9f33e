"""The flagship model: lenalidomide in chronic lymphocytic leukaemia.

Concentration ``C`` (ng/mL) comes from :mod:`lenapk.exposure`.  Time in days.

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

from . import fastmath
from .model import Model
from .parameters import ParameterSpec as P

HUGHES = "Hughes et al., Br J Clin Pharmacol 2019"
FRIBERG = "Friberg et al., J Clin Oncol 2002"
KLOFT = "Kloft et al. 2006 (docetaxel), via Friberg model"
ASSUMED = "assumed (no published value; not identifiable from the bundled summaries)"
CALIBRATED = "calibrated: examples/calibrate.py, joint fit to data/observations.csv (docs/calibration.md)"
BRIEF_IG = "domain brief: IgG 21-23 d, IgA ~6 d, IgM ~5 d"
EARLY = "early-stage high-risk trial baseline (data/observations.csv)"

PARAMETER_SPECS: tuple[P, ...] = (
    # --- PK (closed form, lenapk.exposure)
    P("cl", 12.0, "L/h", "apparent clearance CL/F at FFM 55 kg, CrCl 90 mL/min", HUGHES, omega2=0.296),
    P("v", 68.8, "L", "apparent volume V/F at FFM 55 kg", HUGHES, omega2=0.284),
    P(
        "ka", 3.0, "1/h", "first-order absorption rate (tmax about 1 h)",
        "assumed from tmax ~1 h (label); BSV of Hughes' ktr", omega2=0.367,
    ),
    # --- immune activation
    P(
        "k_act", 0.01, "1/day", "turnover of immune activation (slow onset)",
        "assumed: onset half-time ~70 days, slow enough for the accelerating Ig rise of the early-stage trial; "
        "not identifiable from summaries (a fit that freed it ran to its bound)", omega2=0.1,
    ),
    P("emax_act", 2.0, "-", "maximal drug-induced rise of immune activation", ASSUMED),
    P(
        "ec50_act", 100.0, "ng/mL", "concentration for half-maximal activation",
        "assumed: above the steady-state mean concentration of 25 mg/day (~90 ng/mL), so activation "
        "rises with dose over 2.5-25 mg as the responses by dose level do (Ferrajoli 2008: 27% at 5 mg, "
        "67% at 25 mg); not identifiable from summaries (only its ratio with emax_act x kill is)",
    ),
    # --- leukaemic clone
    P(
        "growth", 0.001402, "1/day", "net growth rate of the clone without treatment",
        CALIBRATED + " (RSE 26%); Messmer, JCI 2005 (birth 0.1->1 %/day) for scale", omega2=0.5,
    ),
    P(
        "kill", 0.03675, "1/day", "clone kill rate per unit rise of immune activation",
        CALIBRATED + " (RSE 20%); Wodarz, Blood 2014 (death 1.7-2.7 %/day on ibrutinib) for scale",
        omega2=0.5,
    ),
    P("normal_lymph", 1.5, "x10^9/L", "non-clonal lymphocytes (constant)", "assumed, adult reference"),
    P("f_del17p", 0.3, "-", "kill multiplier for del(17p)", "domain brief (del(17p) responds poorly); value assumed"),
    P("f_ighv", 1.0, "-", "kill multiplier for unmutated IGHV", "domain brief (responds at least as well); 1 assumed"),
    P("f_relapsed", 5.246, "-", "growth multiplier in relapsed/refractory disease", CALIBRATED + " (RSE 28%)"),
    # --- neutrophils (Friberg)
    P("mtt_n", 84.2 / 24.0, "day", "neutrophil mean transit time (84.2 h)", KLOFT, omega2=0.05),
    P("gamma_n", 0.145, "-", "neutrophil feedback exponent", KLOFT),
    P("ec50_n", 545.3, "ng/mL", "concentration for half-maximal block of granulopoiesis", CALIBRATED + " (RSE 4%)", omega2=0.3),
    # --- platelets (Friberg structure)
    P("mtt_p", 124.0 / 24.0, "day", "platelet-lineage mean transit time (124 h, leukocyte value)", FRIBERG + " (assumed for platelets)", omega2=0.05),
    P("gamma_p", 0.239, "-", "platelet feedback exponent (leukocyte value)", FRIBERG + " (assumed for platelets)"),
    P("ec50_p", 1053.0, "ng/mL", "concentration for half-maximal block of thrombopoiesis", CALIBRATED + " (RSE 14%)", omega2=0.3),
    # --- immunoglobulins
    P("t_half_igg", 22.0, "day", "IgG half-life", BRIEF_IG),
    P("t_half_igm", 5.0, "day", "IgM half-life", BRIEF_IG),
    P("t_half_iga", 6.0, "day", "IgA half-life", BRIEF_IG),
    P("k_supp", 20.0, "x10^9/L", "clone count that halves normal B-cell help", ASSUMED),
    P("t_rec", 274.6, "day", "mean delay of antibody-secreting capacity behind B-cell help", CALIBRATED + " (flagged as not identifiable: it shares a flat direction with e_help, correlation -0.98; the two Ig means per class fix the shape of the rise, not each parameter)"),
    P("e_help", 0.0199, "-", "rise of B-cell help per unit rise of immune activation", CALIBRATED + " (not identifiable: a flat direction of the objective; it stayed at its start, 0.02)", omega2=0.2),
    P("beta_igg", 0.4913, "-", "sensitivity of IgG synthesis to antibody-secreting capacity", CALIBRATED + " (RSE 46%)"),
    P("beta_igm", 0.997, "-", "sensitivity of IgM synthesis to antibody-secreting capacity", CALIBRATED + " (RSE 46%)"),
    P("beta_iga", 0.3, "-", "sensitivity of IgA synthesis to antibody-secreting capacity", CALIBRATED + " (RSE 74%)"),
    # --- T cells (observable)
    P("cd3_0", 880.0, "cells/uL", "baseline circulating CD3+ T cells", "Ferrajoli, Blood 2008 (data/observations.csv)"),
    P("e_cd3", 0.2655, "-", "rise of CD3+ count per unit rise of immune activation", CALIBRATED + " (RSE 80%)"),
    # --- covariates (patient characteristics; defaults are a typical patient)
    P("crcl", 90.0, "mL/min", "creatinine clearance", HUGHES + " reference", kind="covariate"),
    P("ffm", 55.0, "kg", "fat-free mass", HUGHES + " reference", kind="covariate"),
    P("alc0", 30.0, "x10^9/L", "baseline absolute lymphocyte count", "assumed typical CLL", kind="covariate"),
    P("anc0", 5.22, "x10^9/L", "baseline ANC (Friberg Circ0)", KLOFT, kind="covariate"),
    P("plt0", 150.0, "x10^9/L", "baseline platelets", "assumed typical CLL", kind="covariate"),
    P("igg0", 722.0, "mg/dL", "baseline IgG", EARLY, kind="covariate"),
    P("igm0", 109.0, "mg/dL", "baseline IgM", EARLY, kind="covariate"),
    P("iga0", 49.0, "mg/dL", "baseline IgA", EARLY, kind="covariate"),
    P("del17p", 0.0, "0/1", "del(17p) present", "covariate", kind="covariate", positive=False),
    P("ighv_unmutated", 0.0, "0/1", "unmutated IGHV", "covariate", kind="covariate", positive=False),
    P("relapsed", 0.0, "0/1", "relapsed/refractory setting (0 = untreated)", "covariate", kind="covariate", positive=False),
)

LN2 = math.log(2.0)
IG_CLASSES = ("igg", "igm", "iga")
CAPACITY = 15  # index of "ig_capacity" in LenalidomideCLL.state_names


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


class LenalidomideCLL(Model):
    """Lenalidomide PK (closed form) -> immune activation -> CLL clone, neutrophils,
    platelets and IgG/IgM/IgA.  See the module docstring and ``docs/model.md``."""

    state_names: ClassVar[tuple[str, ...]] = (
        "clone", "activation",
        "neut_prol", "neut_t1", "neut_t2", "neut_t3", "anc",
        "plt_prol", "plt_t1", "plt_t2", "plt_t3", "platelets",
        "igg", "igm", "iga", "ig_capacity",
    )
    assert state_names[CAPACITY] == "ig_capacity"
    parameter_specs: ClassVar[tuple[P, ...]] = PARAMETER_SPECS
    omega_covariances: ClassVar[dict[tuple[str, str], float]] = {("cl", "v"): 0.247}
    observable_names: ClassVar[tuple[str, ...]] = (
        "conc_ng_ml", "alc", "anc", "platelets", "igg", "igm", "iga", "cd3", "activation",
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
            [x0, one, anc0, anc0, anc0, anc0, anc0, plt0, plt0, plt0, plt0, plt0,
             c["igg0"] * one, c["igm0"] * one, c["iga0"] * one, 0.0 * one]
        )

    def log_help(self, clone, act, c):
        """log of normal B-cell help H (0 at baseline), one logarithm per evaluation: f64 ``log``
        is the costliest operation of the batched right-hand side (benchmarks/RESULTS.md), hence
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
