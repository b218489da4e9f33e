"""Covariate distributions of virtual CLL patients, per setting (untreated, relapsed, and the
settings of the other calibration studies: relapsed_bulky, untreated_symptomatic, maintenance).

Medians follow the trials in ``data/`` where they report a value; everything else is an
assumption stated here and in ``docs/model.md``.  The order of the covariates is part of the
draws (patient ``i``'s ``j``-th uniform and normal number go to the ``j``-th covariate).
"""

from __future__ import annotations

from ..._core import Bernoulli, LogNormal

_UNTREATED = {
    "crcl": LogNormal(85.0, 0.30, 20.0, 200.0, source="assumed; median age 59 (early-stage trial)"),
    "ffm": LogNormal(55.0, 0.15, 30.0, 100.0, source="Hughes 2019 reference FFM; CV assumed"),
    "alc0": LogNormal(30.0, 0.80, 5.0, 400.0, source="assumed, early-stage CLL"),
    "anc0": LogNormal(4.0, 0.35, 1.5, 15.0, source="assumed (normal-range ANC)"),
    "plt0": LogNormal(180.0, 0.30, 60.0, 500.0, source="assumed"),
    "igg0": LogNormal(690.0, 0.30, 150.0, 2500.0, source="early-stage trial mean 722 mg/dL; CV assumed"),
    "igm0": LogNormal(90.0, 0.60, 10.0, 1000.0, source="early-stage trial mean 109 mg/dL; CV assumed"),
    "iga0": LogNormal(40.0, 0.65, 5.0, 500.0, source="early-stage trial mean 49 mg/dL; CV assumed"),
    "del17p": Bernoulli(0.15, source="assumed, high-risk early-stage"),
    "ighv_unmutated": Bernoulli(0.65, source="assumed, high-risk early-stage"),
    "relapsed": Bernoulli(0.0, source="setting"),
    "bulky": Bernoulli(0.2, source="assumed (nodes > 5 cm; not reported by the untreated trials)"),
}

_RELAPSED = {
    "crcl": LogNormal(75.0, 0.35, 20.0, 200.0, source="assumed, older pretreated patients"),
    "ffm": LogNormal(55.0, 0.15, 30.0, 100.0, source="Hughes 2019 reference FFM; CV assumed"),
    "alc0": LogNormal(40.0, 1.0, 5.0, 500.0, source="assumed, relapsed CLL"),
    "anc0": LogNormal(2.8, 0.45, 1.0, 15.0, source="assumed (pretreated marrow)"),
    "plt0": LogNormal(120.0, 0.45, 30.0, 500.0, source="assumed (pretreated marrow)"),
    "igg0": LogNormal(550.0, 0.40, 100.0, 2500.0, source="assumed"),
    "igm0": LogNormal(40.0, 0.70, 5.0, 1000.0, source="assumed"),
    "iga0": LogNormal(45.0, 0.70, 5.0, 500.0, source="assumed"),
    "del17p": Bernoulli(0.3, source="assumed, Ferrajoli cohort"),
    "ighv_unmutated": Bernoulli(0.7, source="assumed"),
    "relapsed": Bernoulli(1.0, source="setting"),
    "bulky": Bernoulli(0.3, source="assumed (nodes > 5 cm; the relapsed trial's share is not in data/)"),
}

#: Settings of the other calibration studies override the base setting's distributions
#: (the order of the covariates, which is part of the draws, stays the base one).
POPULATIONS = {
    "untreated": _UNTREATED,
    "relapsed": _RELAPSED,
    "relapsed_bulky": {
        **_RELAPSED,
        "crcl": LogNormal(75.0, 0.35, 20.0, 200.0, source="assumed, older pretreated patients (median age 64)"),
        "alc0": LogNormal(40.0, 1.0, 5.0, 500.0, source="assumed, as relapsed (bulky nodes: covariate bulky)"),
        "del17p": Bernoulli(0.43, source="pulsed-dosing trial (Aue 2009): 43% del(17p)"),
        "bulky": Bernoulli(0.7, source="pulsed-dosing trial (Aue 2009): 70% bulky nodes"),
    },
    "untreated_symptomatic": {
        **_UNTREATED,
        "crcl": LogNormal(85.0, 0.30, 20.0, 200.0, source="assumed; median age 59 (lenalidomide-dexamethasone trial)"),
        "alc0": LogNormal(
            185.0,
            0.80,
            10.0,
            800.0,
            source="lenalidomide-dexamethasone trial median ALC 185 x10^9/L; CV, range assumed",
        ),
        "anc0": LogNormal(
            3.2, 0.40, 1.0, 15.0, source="assumed: Rai III-IV in 58% (marrow infiltration), below early-stage"
        ),
        "plt0": LogNormal(
            110.0, 0.45, 20.0, 450.0, source="assumed: Rai III-IV in 58% (Rai IV: platelets < 100), below early-stage"
        ),
        "igg0": LogNormal(
            600.0, 0.35, 100.0, 2500.0, source="assumed: advanced disease, more hypogammaglobulinaemia than early-stage"
        ),
        "igm0": LogNormal(50.0, 0.70, 5.0, 1000.0, source="assumed, below early-stage"),
        "iga0": LogNormal(40.0, 0.70, 5.0, 500.0, source="assumed"),
        "del17p": Bernoulli(0.07, source="assumed (typical of untreated symptomatic CLL; not reported)"),
        "ighv_unmutated": Bernoulli(0.6, source="assumed"),
    },
    "maintenance": {
        **_UNTREATED,
        "crcl": LogNormal(80.0, 0.30, 20.0, 200.0, source="assumed (age not reported)"),
        "alc0": LogNormal(
            2.0,
            0.40,
            1.55,
            6.0,
            source="assumed: low residual disease after chemoimmunotherapy, just above the non-clonal 1.5 x10^9/L",
        ),
        "anc0": LogNormal(3.0, 0.40, 1.0, 12.0, source="assumed (marrow recovering after chemoimmunotherapy)"),
        "plt0": LogNormal(160.0, 0.35, 50.0, 450.0, source="assumed (marrow recovering after chemoimmunotherapy)"),
        "igg0": LogNormal(600.0, 0.35, 100.0, 2500.0, source="assumed (hypogammaglobulinaemia after rituximab)"),
        "igm0": LogNormal(40.0, 0.70, 5.0, 1000.0, source="assumed"),
        "iga0": LogNormal(50.0, 0.70, 5.0, 500.0, source="assumed"),
        "del17p": Bernoulli(0.0, source="maintenance trial: no del(17p)"),
        "ighv_unmutated": Bernoulli(0.6, source="assumed"),
        "relapsed": Bernoulli(0.0, source="setting (first-line)"),
        "bulky": Bernoulli(0.0, source="assumed: low residual disease after chemoimmunotherapy"),
    },
}
