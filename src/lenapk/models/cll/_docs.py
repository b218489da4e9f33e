"""``docs/model.md`` of the lenalidomide-CLL model, rendered from its declarations (a test checks
that the file in the repository is what this renders, so the document cannot drift)."""

from __future__ import annotations

from pathlib import Path

from ...report import render_model_doc
from ._model import LenalidomideCLL

NOTES = """
- Response is judged on blood lymphocytes and lymph nodes (iwCLL 2008 without spleen, liver and
  marrow, which the model lacks): PR needs the ALC and the node burden both below half their
  baselines, PD either up by half, CR also nodes below a tenth of baseline (assumed for "no
  node above 1.5 cm").  ALC = clone + a constant non-clonal lymphocyte count.  The node burden is
  relative to each patient's baseline (no absolute node size is modelled): it shares the blood
  clone's proliferation, and the drug kills it at a rate that rises as the `h_node`-th power of
  the blood kill, `f_node` times the blood kill where that is `node_kill_ref` (`f_node` and
  `h_node` calibrated, `node_kill_ref` chosen; the spread of `f_node` between patients is
  assumed).  One proportional node kill (`h_node` = 1) could not give both the early-stage
  trial's 26% PR at 5 mg over two years and the relapsed trials' node responses at 10-25 mg
  within months.  Burden is finite through the clone's carrying capacity (logistic growth).
  Flare-driven node swelling is not modelled.
- Renal function: CL/F = CL ((1 - f_r) + f_r CrCl/90) with f_r = 0.784, the log-scale
  least-squares fit to the six renal rows of `data/pk_summaries.csv` (urinary recovery 0.84, 0.69,
  0.38, 0.43 by CrCl group, AUC ratios 2.85 moderate and 5.2 end-stage), each group represented
  by an assumed CrCl (> 80 -> 100, 50-80 -> 65, 30-50 -> 40, < 30 -> 20, end-stage -> 5 mL/min).
  The linear model cannot meet every row: it gives AUC ratios 1.93 and 4.18 and a moderate-group
  recovery of 0.62 (`tests/test_renal.py`).  AUC(CrCl 30) / AUC(CrCl 90) = 2.09; the label's
  10 mg start at CrCl 30-60 gives 0.54-0.84x the exposure of 25 mg at normal function (13.5-21 mg
  at normal function).  Hughes'
  CrCl exponent 0.224 (AUC x1.28 at CrCl 30) is replaced.
- Neutrophils: the drug acts on the proliferating pool with a sigmoid effect (Hill exponent
  `hill_n`).  The IMiD maturation block was considered and not used: a block of transit that
  holds cells back leaves the steady state unchanged (only a transient dip), and a block that
  kills maturing cells is fully compensated by the feedback at steady state (Circ returns to
  Circ0 once the proliferating pool has expanded), so neither gives the sustained, dose-dependent
  grade 3-4 neutropenia of continuous dosing without a further, unsourced limit on the
  proliferating pool.
- Platelets: megakaryocyte maturation 5 days and a circulating lifespan of 9 days (Harker &
  Finch 1969) instead of the leukocyte values; the feedback exponent is still the leukocyte one.
- Immunoglobulin synthesis saturates toward the class's upper limit of normal (a smooth maximum
  of the ULN and the patient's baseline), so IgM cannot climb to five times normal.
- Tumour flare / cytokine release is a hazard, not a severity: the endpoint is the probability of
  at least one event (by a day, or per course).  Its drive saturates at low concentrations
  (`ec50_flare` 5 ng/mL), so the model has almost no dose dependence of first-dose flare between
  10 and 20 mg; resensitisation is slow (a year), so flare stays an early event.
- Dexamethasone (the `untreated_len_dex` study) is not modelled: only that study's toxicity rows
  are fitted; its response rows are shown (dexamethasone lowers lymphocytes on its own).
- Toxicity rows are counted as the trials count adverse events, treatment-emergent: a course or a
  patient counts when a visit value reaches a grade of the row's band worse than the patient's
  day-0 grade (part of the virtual relapsed cohort starts below the lower limit of normal),
  on *measured* counts: a visit's ANC or platelet count scatters around the model's value with a
  log-scale SD of 0.17 and 0.10 (`LAB_NOISE_SD`: published within-subject biological variation
  plus an assumed analytical CV of 4%), independent between visits, and the rows predict the
  expected count.  A count that hovers just above a limit over two years of visits is measured
  below it at least once, so the early-stage trial's any-grade rows at 2.5-5 mg rise without a
  flatter concentration-effect curve, which would overpredict the maintenance trial's grade 3.
  The dose rules act on the model's values, not on noisy ones.
  The relapsed trial's per-course grade 1-2 rows (11% and 16% of courses, beside 41% and 15%
  grade 3-4) describe a few patients with repeated grade 3-4 and many with none; the model
  spreads marrow sensitivity over patients only through the between-patient variance of the
  EC50s (assumed, not fitted), so it predicts those rows too high, and they are not fitted.
- Tumour lysis and infections are not modelled.
- PK absorption is first order (the brief's simpler acceptable structure) rather than Hughes'
  transit chain; the transit-rate variability is used for ka.
"""


def render(calibration_doc: Path | None = None) -> str:
    """The text of ``docs/model.md``; ``calibration_doc``: the ``docs/calibration.md`` whose
    fit-quality tables it includes."""
    return render_model_doc(
        LenalidomideCLL(),
        title="The lenalidomide-CLL model",
        generated_by="python -m lenapk.docs",
        calibration_doc=calibration_doc,
        notes=NOTES,
    )
