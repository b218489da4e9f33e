"""The flagship model: lenalidomide in chronic lymphocytic leukaemia.

Concentration ``C`` (ng/mL) comes from the closed-form one-compartment oral PK
(:class:`lenapk.OneCompartment`).  Time in days.

PK covariates: renal plus non-renal clearance, fitted to the renal-impairment summaries of
``data/pk_summaries.csv`` (Chen et al., J Clin Pharmacol 2007; ``docs/model.md``); size as in
Hughes et al. (Br J Clin Pharmacol 2019)::

    CL/F = CL ((1 - f_r) + f_r CrCl / 90 mL/min) (FFM / 55 kg)^0.75,   V/F = V (FFM / 55 kg)

Immune activation (dimensionless, 1 at baseline; T-cell synapse repair, slow onset)::

    E_act = Emax_act C / (EC50_act + C)
    dA/dt = k_act (1 + E_act - A)

Leukaemic clone (x10^9/L; ALC = clone + non-clonal lymphocytes), logistic growth to the
carrying capacity ``K`` (the clone never exceeds ``max(X0, K)``)::

    dX/dt = (g f_rel^relapsed (1 - X / K) - k_kill f_17p^del17p f_ighv^ighv_unmutated (A - 1)) X

Lymph-node burden ``Q`` (relative to baseline, 1 at day 0; log scale ``L = log Q``): the clone in
the nodes shares the blood clone's proliferation; immune activation kills it at a rate that rises
more steeply with exposure than the blood kill ``k`` (``h_node > 1``), ``f_node`` times the blood
kill where the typical blood kill ``k_typ`` is ``k_ref`` (so ``Q = X / X0`` exactly when
``f_node = h_node = 1``)::

    k = k_kill f_17p^del17p f_ighv^ighv_unmutated (A - 1),  k_typ = k_kill max(A - 1, 1e-12)
    dL/dt = g f_rel^relapsed (1 - X / K) - f_node k (k_typ / k_ref)^(h_node - 1)

Response (iwCLL 2008, blood and nodes): PR or better needs both the ALC and ``Q`` below half their
baselines; progression is either rising by half (``lenapk.models.cll._endpoints``).

Neutrophils and platelets, Friberg et al. (J Clin Oncol 2002), k_tr = 4 / MTT, sigmoid effect
on the proliferating pool; the platelet lineage has its own circulating lifespan ``t_life``
(states scaled so that every compartment equals ``Circ0`` at baseline)::

    dP/dt  = k_tr P (1 - E) (B / Circ)^gamma - k_tr P,  E = C^h / (EC50^h + C^h)
    dT1/dt = k_tr (P - T1), dT2/dt = k_tr (T1 - T2), dT3/dt = k_tr (T2 - T3)
    dCirc/dt = k_circ (T3 - Circ),  k_circ = k_tr (neutrophils), 1 / t_life (platelets)

Immunoglobulins (mg/dL), turnover with synthesis following normal B-cell help ``H`` (1 at
baseline), which the clone suppresses and immune activation restores::

    H = (1 + e_help (A - 1)) (K_supp + X0) / (K_supp + X)

Antibody-secreting capacity ``R`` (log scale, 0 at baseline) follows log H with a first-order
delay ``t_rec``; synthesis saturates toward the class's upper limit of normal ``M`` (the steady
state ``S`` is ``Ig0`` at R = 0 and tends to ``M* = (M^4 + Ig0^4)^(1/4)``, a smooth maximum of
``M`` and the baseline, as R grows)::

    dR/dt = (log H - R) / t_rec
    S = Ig0 exp(beta R) / (1 + (Ig0 / M*) (exp(beta R) - 1))
    dIg/dt = k_deg (S - Ig),  k_deg = ln 2 / t_half

Tumour flare / cytokine release: a hazard driven by exposure and burden, in patients still
sensitive (``N``, 1 before the first dose; desensitised by exposure, resensitised off drug).
The cumulative hazard ``Hf`` gives a patient's probability of a flare by day d,
``1 - exp(-Hf(d))``::

    E_f = C / (EC50_f + C)
    dN/dt = k_res (1 - N) - k_tol E_f N
    dHf/dt = k_flare f_bulky^bulky E_f N X / (X + K_f)

Circulating CD3+ T cells (cells/uL) are an observable: ``CD3 = CD3_0 (1 + e_cd3 (A - 1))``.

Values marked "calibrated" are the estimates of ``examples/calibrate.py`` (``docs/calibration.md``);
values marked "assumed" have no published source and are not identifiable from the bundled data.
"""

from __future__ import annotations

import math
from typing import ClassVar

import jax
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
FLARE_NAIVE, FLARE_HAZARD = 16, 17
LOG_NODES = 18

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
    ObservableSpec("flare_hazard", "-", "cumulative hazard of tumour flare / cytokine release"),
    ObservableSpec("nodes", "-", "lymph-node burden relative to baseline (1 at day 0)"),
)


def _friberg(y5, effect, ktr, gamma, log_base, kcirc):
    """Friberg chain derivatives; ``y5`` = (proliferating, 3 transit, circulating) on axis 0,
    ``kcirc`` the circulating cells' elimination rate (``ktr`` in Friberg's original)."""
    prol, t1, t2, t3, circ = y5[0], y5[1], y5[2], y5[3], y5[4]
    feedback = jnp.exp(gamma * (log_base - fastmath.log(circ)))
    return [
        ktr * prol * ((1.0 - effect) * feedback - 1.0),
        ktr * (prol - t1),
        ktr * (t1 - t2),
        ktr * (t2 - t3),
        kcirc * (t3 - circ),
    ]


def _sigmoid(conc, ec50, hill):
    """``C^h / (EC50^h + C^h)`` as ``sigmoid(h (log C - log EC50))``: exactly 0 at C = 0, and
    finite with finite derivatives for any C >= 0 and exponent."""
    positive = conc > 0.0
    log_c = fastmath.log(jnp.where(positive, conc, 1.0))
    return jnp.where(positive, jax.nn.sigmoid(hill * (log_c - jnp.log(ec50))), 0.0)


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
        "flare_naive",
        "flare_hazard",
        "log_nodes",
    )
    assert state_names[CAPACITY] == "ig_capacity" and state_names[FLARE_HAZARD] == "flare_hazard"
    assert state_names[LOG_NODES] == "log_nodes"
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
        """CL/F = CL ((1 - f_r) + f_r CrCl/90) (FFM/55)^0.75 (renal + non-renal), V/F by FFM/55."""
        ffm = p["ffm"] / FFM_REF_KG
        renal = 1.0 - p["f_renal"] + p["f_renal"] * p["crcl"] / CRCL_REF_ML_MIN
        cl = p["cl"] * ffm**0.75 * renal
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
        c["k_flare_eff"] = p["k_flare"] * p["f_bulky_flare"] ** p["bulky"]
        c["node_power"] = p["h_node"] - 1.0
        c["log_kill_over_ref"] = jnp.log(p["kill"] / p["node_kill_ref"])
        c["ktr_n"], c["ktr_p"] = 4.0 / p["mtt_n"], 4.0 / p["mtt_p"]
        c["kcirc_p"] = 1.0 / p["t_life_p"]
        c["log_anc0"], c["log_plt0"] = jnp.log(p["anc0"]), jnp.log(p["plt0"])
        c["supp0"] = p["k_supp"] + c["clone0"]
        c["k_rec"] = 1.0 / p["t_rec"]
        for ig in IG_CLASSES:
            c[f"kdeg_{ig}"] = LN2 / p[f"t_half_{ig}"]
            c[f"ksyn0_{ig}"] = c[f"kdeg_{ig}"] * p[f"{ig}0"]
            ceiling = (p[f"uln_{ig}"] ** 4 + p[f"{ig}0"] ** 4) ** 0.25
            c[f"sat_{ig}"] = p[f"{ig}0"] / ceiling
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
                one,
                0.0 * one,
                0.0 * one,
            ]
        )

    def log_help(self, clone, act, c):
        """log of normal B-cell help H (0 at baseline), one logarithm per evaluation: f64 ``log``
        is the costliest operation of the batched right-hand side (benchmarks/HISTORY.md), hence
        also :func:`lenapk.fastmath.log`, which XLA vectorises."""
        return fastmath.log((1.0 + c["e_help"] * (act - 1.0)) * c["supp0"] / (c["k_supp"] + clone))

    def ig_synthesis(self, y, c):
        """Ig synthesis rates (mg/dL/day) of IgG, IgM, IgA on axis 0: ``k_deg S`` (module
        docstring), positive and below ``k_deg M*`` by construction."""
        return jnp.stack([self._synthesis(y[CAPACITY], c, ig) for ig in IG_CLASSES])

    @staticmethod
    def _synthesis(capacity, c, ig):
        rise = jnp.exp(c[f"beta_{ig}"] * capacity)
        return c[f"ksyn0_{ig}"] * rise / (1.0 + c[f"sat_{ig}"] * (rise - 1.0))

    def rhs(self, t, y, conc, c):
        clone, act = y[0], y[1]
        d_act = c["k_act"] * (1.0 + c["emax_act"] * conc / (c["ec50_act"] + conc) - act)
        growth = c["growth_eff"] * (1.0 - clone / c["clone_max"])
        kill = c["kill_eff"] * (act - 1.0)
        d_clone = (growth - kill) * clone
        d_log_nodes = growth - self.node_kill(act, kill, c)
        e_n = _sigmoid(conc, c["ec50_n"], c["hill_n"])
        d_neut = _friberg(y[2:7], e_n, c["ktr_n"], c["gamma_n"], c["log_anc0"], c["ktr_n"])
        e_p = conc / (c["ec50_p"] + conc)
        d_plt = _friberg(y[7:12], e_p, c["ktr_p"], c["gamma_p"], c["log_plt0"], c["kcirc_p"])
        capacity = y[CAPACITY]
        d_capacity = (self.log_help(clone, act, c) - capacity) * c["k_rec"]
        d_ig = [self._synthesis(capacity, c, ig) - c[f"kdeg_{ig}"] * y[12 + i] for i, ig in enumerate(IG_CLASSES)]
        naive, e_f = y[FLARE_NAIVE], conc / (c["ec50_flare"] + conc)
        d_naive = c["k_resens"] * (1.0 - naive) - c["k_tol"] * e_f * naive
        d_hazard = c["k_flare_eff"] * e_f * naive * clone / (clone + c["k_burden_flare"])
        return jnp.stack([d_clone, d_act, *d_neut, *d_plt, *d_ig, d_capacity, d_naive, d_hazard, d_log_nodes])

    @staticmethod
    def node_kill(act, kill, c):
        """The node kill rate (1/day): ``f_node k (k_typ / k_ref)^(h_node - 1)`` for the blood kill
        ``k``, with ``k_typ / k_ref = exp(log(k_kill / k_ref) + log(A - 1))`` (the constant part
        from :meth:`derive`; ``A - 1`` floored at 1e-12, so the power and its derivative stay
        finite at baseline, where activation is exactly 1)."""
        log_ratio = c["log_kill_over_ref"] + fastmath.log(jnp.maximum(act - 1.0, 1e-12))
        return c["f_node"] * kill * jnp.exp(c["node_power"] * log_ratio)

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
            "flare_hazard": y[FLARE_HAZARD],
            "nodes": jnp.exp(y[LOG_NODES]),
        }
