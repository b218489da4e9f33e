"""The lenalidomide-CLL parameter table: value, unit, variability and source of every parameter.

Values marked "calibrated" are the estimates of ``examples/calibrate.py`` (``docs/calibration.md``);
values marked "assumed" have no published source and are not identifiable from the bundled data.
"""

from __future__ import annotations

from ..._core import ParameterSpec as P

HUGHES = "Hughes et al., Br J Clin Pharmacol 2019"
FRIBERG = "Friberg et al., J Clin Oncol 2002"
KLOFT = "Kloft et al. 2006 (docetaxel), via Friberg model"
ASSUMED = "assumed (no published value; not identifiable from the bundled summaries)"
CALIBRATED = "calibrated: examples/calibrate.py, joint fit to data/observations.csv (docs/calibration.md)"
BRIEF_IG = "domain brief: IgG 21-23 d, IgA ~6 d, IgM ~5 d"
EARLY = "early-stage high-risk trial baseline (data/observations.csv)"

PARAMETER_SPECS: tuple[P, ...] = (
    # --- PK (closed form, lenapk.OneCompartment)
    P("cl", 12.0, "L/h", "apparent clearance CL/F at FFM 55 kg, CrCl 90 mL/min", HUGHES, omega2=0.296),
    P("v", 68.8, "L", "apparent volume V/F at FFM 55 kg", HUGHES, omega2=0.284),
    P(
        "ka",
        3.0,
        "1/h",
        "first-order absorption rate (tmax about 1 h)",
        "assumed from tmax ~1 h (label); BSV of Hughes' ktr",
        omega2=0.367,
    ),
    # --- immune activation
    P(
        "k_act",
        0.01,
        "1/day",
        "turnover of immune activation (slow onset)",
        "assumed: onset half-time ~70 days, slow enough for the accelerating Ig rise of the early-stage trial; "
        "not identifiable from summaries (a fit that freed it ran to its bound)",
        omega2=0.1,
    ),
    P("emax_act", 2.0, "-", "maximal drug-induced rise of immune activation", ASSUMED),
    P(
        "ec50_act",
        100.0,
        "ng/mL",
        "concentration for half-maximal activation",
        "assumed: above the steady-state mean concentration of 25 mg/day (~90 ng/mL), so activation "
        "rises with dose over 2.5-25 mg as the responses by dose level do (Ferrajoli 2008: 27% at 5 mg, "
        "67% at 25 mg); not identifiable from summaries (only its ratio with emax_act x kill is)",
    ),
    # --- leukaemic clone
    P(
        "growth",
        0.001402,
        "1/day",
        "net growth rate of the clone without treatment",
        CALIBRATED + " (RSE 26%); Messmer, JCI 2005 (birth 0.1->1 %/day) for scale",
        omega2=0.5,
    ),
    P(
        "kill",
        0.03675,
        "1/day",
        "clone kill rate per unit rise of immune activation",
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
    P(
        "ec50_n",
        545.3,
        "ng/mL",
        "concentration for half-maximal block of granulopoiesis",
        CALIBRATED + " (RSE 4%)",
        omega2=0.3,
    ),
    # --- platelets (Friberg structure)
    P(
        "mtt_p",
        124.0 / 24.0,
        "day",
        "platelet-lineage mean transit time (124 h, leukocyte value)",
        FRIBERG + " (assumed for platelets)",
        omega2=0.05,
    ),
    P("gamma_p", 0.239, "-", "platelet feedback exponent (leukocyte value)", FRIBERG + " (assumed for platelets)"),
    P(
        "ec50_p",
        1053.0,
        "ng/mL",
        "concentration for half-maximal block of thrombopoiesis",
        CALIBRATED + " (RSE 14%)",
        omega2=0.3,
    ),
    # --- immunoglobulins
    P("t_half_igg", 22.0, "day", "IgG half-life", BRIEF_IG),
    P("t_half_igm", 5.0, "day", "IgM half-life", BRIEF_IG),
    P("t_half_iga", 6.0, "day", "IgA half-life", BRIEF_IG),
    P("k_supp", 20.0, "x10^9/L", "clone count that halves normal B-cell help", ASSUMED),
    P(
        "t_rec",
        274.6,
        "day",
        "mean delay of antibody-secreting capacity behind B-cell help",
        CALIBRATED + " (flagged as not identifiable: it shares a flat direction with e_help, correlation -0.98; "
        "the two Ig means per class fix the shape of the rise, not each parameter)",
    ),
    P(
        "e_help",
        0.0199,
        "-",
        "rise of B-cell help per unit rise of immune activation",
        CALIBRATED + " (not identifiable: a flat direction of the objective; it stayed at its start, 0.02)",
        omega2=0.2,
    ),
    P(
        "beta_igg",
        0.4913,
        "-",
        "sensitivity of IgG synthesis to antibody-secreting capacity",
        CALIBRATED + " (RSE 46%)",
    ),
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
    P(
        "relapsed",
        0.0,
        "0/1",
        "relapsed/refractory setting (0 = untreated)",
        "covariate",
        kind="covariate",
        positive=False,
    ),
)
