"""Renal + non-renal clearance of the lenalidomide-CLL model against the renal-impairment
summaries of ``data/pk_summaries.csv`` (Chen et al., J Clin Pharmacol 2007).

The model: CL/F = CL ((1 - f_r) + f_r CrCl / 90).  The fraction of the dose excreted unchanged at
creatinine clearance c is ``f_r (c/90) / ((1 - f_r) + f_r c/90)`` (complete absorption), and the
AUC ratio of group c to the normal group is ``CL(c_normal) / CL(c)``.  Each group is represented
by an assumed CrCl: > 80 -> 100, 50-80 -> 65, 30-50 -> 40, < 30 -> 20, end-stage -> 5 mL/min.
"""

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize_scalar

import lenapk
from lenapk._core import data_path

GROUP_CRCL = {
    "CrCl > 80 mL/min": 100.0,
    "CrCl 50-80 mL/min (mild)": 65.0,
    "CrCl 30-50 mL/min (moderate)": 40.0,
    "CrCl < 30 mL/min (severe)": 20.0,
    "moderate impairment": 40.0,
    "end-stage renal disease": 5.0,
}
NORMAL = 100.0


def _renal_rows():
    t = pd.read_csv(data_path("pk_summaries.csv"))
    t = t[t["study"] == "renal_impairment_25mg"]
    return [(GROUP_CRCL[r.population], r.endpoint, float(r.value)) for r in t.itertuples()]


def _predicted(f_r, crcl, endpoint):
    cl = lambda c: (1 - f_r) + f_r * c / 90.0  # noqa: E731
    if endpoint == "fraction_unchanged_urine":
        return f_r * crcl / 90.0 / cl(crcl)
    return cl(NORMAL) / cl(crcl)  # auc_ratio_vs_normal


def test_renal_fraction_is_the_least_squares_fit_of_the_summaries():
    """f_renal in the parameter table = the log-scale least-squares fit to the six renal rows
    (four urinary recoveries, two AUC ratios), refitted here with scipy."""
    rows = _renal_rows()
    assert len(rows) == 6

    def sse(f_r):
        return sum(np.log(_predicted(f_r, c, e) / v) ** 2 for c, e, v in rows)

    fit = minimize_scalar(sse, bounds=(0.05, 0.99), method="bounded", options={"xatol": 1e-8})
    shipped = float(lenapk.LenalidomideCLL().default_params()["f_renal"])
    assert shipped == pytest.approx(fit.x, abs=1e-3)
    # every fitted row within a factor 1.7 of the report (moderate fe 0.38 is the worst: the
    # linear model gives 0.62; the AUC ratios 1.93 and 4.18 against 2.85 and 5.2)
    for c, e, v in rows:
        assert 1 / 1.7 < _predicted(fit.x, c, e) / v < 1.7, (c, e, v)


def _auc_0_120(params):
    """AUC (ng h/mL) of one 25 mg dose over 0-120 h by the trapezoid rule on simulate()'s output."""
    reg = lenapk.Regimen.from_daily_doses([25.0, 0.0, 0.0, 0.0, 0.0])
    days = np.linspace(0.0, 5.0, 6001)
    conc = lenapk.simulate(reg, params, times=days)["conc_ng_ml"].to_numpy()
    return float(np.sum(np.diff(days * 24.0) * (conc[1:] + conc[:-1]) / 2.0))


@pytest.fixture(scope="module")
def typical():
    return lenapk.LenalidomideCLL().default_params()


def test_auc_ratio_at_crcl_30_and_label_starting_dose(typical):
    """AUC(CrCl 30) / AUC(CrCl 90) from simulated profiles lies in the reported 2-3x for moderate
    impairment and equals the closed form 1 / ((1 - f_r) + f_r / 3); the label's 10 mg start at
    CrCl 30-60 gives 0.54-0.84x the exposure of 25 mg at normal function (13.5-21 mg)."""
    f_r = float(typical["f_renal"])
    auc = {c: _auc_0_120(typical.replace(crcl=c)) for c in (30.0, 45.0, 60.0, 90.0)}
    ratio = auc[30.0] / auc[90.0]
    assert 2.0 <= ratio <= 3.0
    # 120 h is 14 half-lives at CrCl 30 (t1/2 about 8 h): the truncation is below 1e-4
    assert ratio == pytest.approx(1.0 / ((1 - f_r) + f_r / 3.0), rel=2e-3)
    assert auc[90.0] == pytest.approx(25_000.0 / 12.0, rel=2e-3)  # dose / CL at the reference
    label = [0.4 * auc[c] / auc[90.0] for c in (30.0, 45.0, 60.0)]  # 10 mg vs 25 mg
    assert 0.5 < min(label) and max(label) < 0.9
