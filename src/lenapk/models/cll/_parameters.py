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
RENAL = (
    "fitted to data/pk_summaries.csv (Chen et al., J Clin Pharmacol 2007: urinary recovery by CrCl group and "
    "AUC ratios; docs/model.md, tests/test_renal.py)"
)
PLATELET_KINETICS = "Harker & Finch, J Clin Invest 1969 (megakaryocyte maturation ~5 days, platelet lifespan 8-10 days)"
IG_RANGE = "adult laboratory reference range (upper limit of normal); assumed for a ceiling of synthesis"

PARAMETER_SPECS: tuple[P, ...] = (
    # --- PK (closed form, lenapk.OneCompartment)
    P("cl", 12.0, "L/h", "apparent clearance CL/F at FFM 55 kg, CrCl 90 mL/min", HUGHES, omega2=0.296),
    P("f_renal", 0.784, "-", "renal fraction of CL/F at CrCl 90 mL/min (CL_r = f_r CL CrCl / 90)", RENAL),
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
        1000.0,
        "ng/mL",
        "concentration for half-maximal activation",
        CALIBRATED + " (on its upper bound, RSE 14% with kill fixed; correlation 0.72 with f_node): above the "
        "concentrations of every dose (Cmax about 300 ng/mL at 25 mg), so the drive C / (EC50 + C) stays within "
        "about 25% of proportional to concentration and mostly kill / EC50 is seen",
    ),
    # --- leukaemic clone
    P(
        "growth",
        0.0002381,
        "1/day",
        "net growth rate of the clone without treatment (below the carrying capacity)",
        CALIBRATED + " (RSE 33%, correlation -0.88 with f_relapsed); Messmer, JCI 2005 (birth 0.1->1 %/day) for scale",
        omega2=0.5,
    ),
    P(
        "kill",
        0.2,
        "1/day",
        "clone kill rate per unit rise of immune activation",
        "fixed at the upper bound of its calibration range, where the calibrations that freed it ended from two "
        "starts (RSE 515%, correlation 1 with ec50_act: only kill / ec50_act is identifiable, and ec50_act now "
        "carries it); Wodarz, Blood 2014 (death 1.7-2.7 %/day on ibrutinib) for scale",
        omega2=0.5,
    ),
    P(
        "clone_max",
        800.0,
        "x10^9/L",
        "carrying capacity of the clone (logistic growth; bounds the blood count)",
        "assumed: lymphocyte counts above ~800 x10^9/L are rare in CLL; not identifiable from the summaries",
    ),
    P("normal_lymph", 1.5, "x10^9/L", "non-clonal lymphocytes (constant)", "assumed, adult reference"),
    P("f_del17p", 0.3, "-", "kill multiplier for del(17p)", "domain brief (del(17p) responds poorly); value assumed"),
    P("f_ighv", 1.0, "-", "kill multiplier for unmutated IGHV", "domain brief (responds at least as well); 1 assumed"),
    P("f_relapsed", 7.838, "-", "growth multiplier in relapsed/refractory disease", CALIBRATED + " (RSE 37%)"),
    P(
        "f_node",
        0.4692,
        "-",
        "kill in lymph nodes relative to blood where the blood kill is node_kill_ref (iwCLL response needs both "
        "to fall)",
        CALIBRATED + " (flagged as not identifiable: infinite SE, correlation 0.97 with h_node and 0.72 with "
        "ec50_act; the early-stage PR of 26% against a blood response near 70%); its spread between patients "
        "assumed as kill's (bulky nodes respond less, Ferrajoli 2008)",
        omega2=0.5,
    ),
    P(
        "h_node",
        5.0,
        "-",
        "steepness of the node kill in the blood kill rate (1: proportional)",
        CALIBRATED + " (on its upper bound 5, not identifiable beside f_node: a node kill proportional to the "
        "blood's (1) cannot give both the early-stage PR at 5 mg and the relapsed trials' node responses at 10-25 mg)",
    ),
    P(
        "node_kill_ref",
        0.02,
        "1/day",
        "blood kill rate at which f_node is the node-to-blood kill ratio",
        "chosen: about the typical blood kill at 10-15 mg/d, where the node responses are observed",
    ),
    # --- neutrophils (Friberg)
    P("mtt_n", 84.2 / 24.0, "day", "neutrophil mean transit time (84.2 h)", KLOFT, omega2=0.05),
    P("gamma_n", 0.145, "-", "neutrophil feedback exponent", KLOFT),
    P(
        "ec50_n",
        152.3,
        "ng/mL",
        "concentration for half-maximal block of granulopoiesis",
        CALIBRATED + " (RSE 25%, correlation -0.96 with hill_n: the data fix the effect over 50-500 ng/mL "
        "better than either parameter)",
        omega2=0.3,
    ),
    P(
        "hill_n",
        1.995,
        "-",
        "Hill exponent of the block of granulopoiesis",
        CALIBRATED + " (RSE 42%; the maintenance trial's 17% grade 3 at up to 10 mg d1-20/28 against 61% grade "
        "3-4 at up to 25 mg daily in untreated patients asks for a steep effect)",
    ),
    # --- platelets (Friberg structure)
    P(
        "mtt_p",
        5.0,
        "day",
        "megakaryocyte maturation time (proliferating pool and 3 transit compartments)",
        PLATELET_KINETICS,
        omega2=0.05,
    ),
    P("t_life_p", 9.0, "day", "mean lifespan of circulating platelets", PLATELET_KINETICS),
    P(
        "gamma_p",
        0.239,
        "-",
        "platelet feedback exponent",
        FRIBERG + " leukocyte value (assumed: no platelet value for this structure was sourced)",
    ),
    P(
        "ec50_p",
        741.8,
        "ng/mL",
        "concentration for half-maximal block of thrombopoiesis",
        CALIBRATED + " (RSE 20%)",
        omega2=0.3,
    ),
    # --- immunoglobulins
    P("t_half_igg", 22.0, "day", "IgG half-life", BRIEF_IG),
    P("t_half_igm", 5.0, "day", "IgM half-life", BRIEF_IG),
    P("t_half_iga", 6.0, "day", "IgA half-life", BRIEF_IG),
    P("uln_igg", 1600.0, "mg/dL", "IgG upper limit of normal (ceiling of synthesis)", IG_RANGE),
    P("uln_igm", 290.0, "mg/dL", "IgM upper limit of normal (ceiling of synthesis)", IG_RANGE),
    P("uln_iga", 400.0, "mg/dL", "IgA upper limit of normal (ceiling of synthesis)", IG_RANGE),
    P("k_supp", 20.0, "x10^9/L", "clone count that halves normal B-cell help", ASSUMED),
    P(
        "t_rec",
        493.0,
        "day",
        "mean delay of antibody-secreting capacity behind B-cell help",
        CALIBRATED + " (flagged as not identifiable: it shares a flat direction with e_help and the betas; "
        "the two Ig means per class fix the shape of the rise, not each parameter)",
    ),
    P(
        "e_help",
        0.01995,
        "-",
        "rise of B-cell help per unit rise of immune activation",
        CALIBRATED + " (not identifiable: a flat direction of the objective (infinite SE); it stayed near its start "
        "of 0.02)",
        omega2=0.2,
    ),
    P(
        "beta_igg",
        1.447,
        "-",
        "sensitivity of IgG synthesis to antibody-secreting capacity",
        CALIBRATED + " (not identifiable: RSE 149%, on the Ig flat direction)",
    ),
    P(
        "beta_igm",
        3.043,
        "-",
        "sensitivity of IgM synthesis to antibody-secreting capacity",
        CALIBRATED + " (not identifiable: RSE 158%, on the Ig flat direction)",
    ),
    P(
        "beta_iga",
        0.4652,
        "-",
        "sensitivity of IgA synthesis to antibody-secreting capacity",
        CALIBRATED + " (not identifiable: RSE 164%, on the Ig flat direction)",
    ),
    # --- tumour flare / cytokine release (hazard)
    P(
        "k_flare",
        6.569,
        "1/day",
        "flare hazard at full effect, full sensitivity and saturating burden",
        CALIBRATED + " (not identifiable apart from k_tol: correlation 1; two flare rows fix their ratio)",
    ),
    P(
        "k_tol",
        6.150,
        "1/day",
        "desensitisation rate of flare at full effect (flare comes with the first doses)",
        CALIBRATED + " (not identifiable apart from k_flare: correlation 1)",
    ),
    P(
        "k_resens",
        1.0 / 365.0,
        "1/day",
        "return of flare sensitivity (mean one year)",
        "assumed: slow, so that flare stays a first-course event under continuous dosing (Ferrajoli 2008: 12% of "
        "courses); not identifiable from the summaries",
    ),
    P(
        "ec50_flare",
        5.0,
        "ng/mL",
        "concentration for half-maximal flare drive",
        "assumed: low (flare within 8-72 h of a first 10 or 20 mg dose in 83%, Aue 2009); only its product with "
        "k_flare is seen",
    ),
    P(
        "k_burden_flare",
        30.0,
        "x10^9/L",
        "clone count of half-maximal flare hazard (more flare with more disease)",
        "assumed (domain brief: more flare with bulky disease; Ferrajoli 2008: 53% with nodes > 5 cm vs 15%)",
    ),
    P(
        "f_bulky_flare",
        4.6,
        "-",
        "flare hazard multiplier with bulky nodes (> 5 cm)",
        "Ferrajoli 2008: flare in 53% with nodes > 5 cm against 15% without, as a ratio of cumulative hazards "
        "(-ln 0.47 / -ln 0.85)",
    ),
    # --- T cells (observable)
    P("cd3_0", 880.0, "cells/uL", "baseline circulating CD3+ T cells", "Ferrajoli, Blood 2008 (data/observations.csv)"),
    P(
        "e_cd3",
        2.403,
        "-",
        "rise of CD3+ count per unit rise of immune activation",
        CALIBRATED + " (RSE 97%, with kill fixed)",
    ),
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
    P("bulky", 0.0, "0/1", "bulky lymph nodes (> 5 cm) at baseline", "covariate", kind="covariate", positive=False),
)
