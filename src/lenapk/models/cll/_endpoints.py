"""What the lenalidomide-CLL model reports, and the dose rules of its trials, as data.

Grades (CTCAE v5 / iwCLL 2008): ANC G1 < 2.0 (LLN), G2 < 1.5, G3 < 1.0, G4 < 0.5 x10^9/L;
platelets G1 < 150, G2 < 75, G3 < 50, G4 < 25 x10^9/L.  Response, blood and nodes (iwCLL 2008
without spleen, liver and marrow, which the model lacks): PR = ALC and node burden both fell by
>= 50% from baseline; CR = PR with ALC < 4 x10^9/L, ANC > 1.5, platelets > 100 and node burden
below ``NODES_CR_RATIO`` of baseline; PD = ALC or node burden rose by >= 50%; SD otherwise.
Every threshold below is stated once; rules and calibration read them from here.
"""

from __future__ import annotations

from ...endpoints import EndpointSet, GradeScale, HazardEventSpec, ResponseCriteria, ValueAtCycles
from ...rules import DoseModificationRules, LabVisits

#: Lenalidomide capsule strengths (mg): the dose levels of rules and deliverable schedules.
DOSE_LEVELS = (2.5, 5.0, 10.0, 15.0, 20.0, 25.0)

#: SD on the log scale of a measured blood count around the model's value, wherever grades are
#: counted at lab visits (calibration rows, comparison rates, the schedule optimiser's toxicity):
#: the within-subject biological variation of healthy adults (CV 16.1% for neutrophils, 9.1% for
#: platelets; Ricos et al., Scand J Clin Lab Invest 1999;59:491, the desirable-specification
#: database) combined with an analytical CV of about 4% (assumed, automated counters):
#: sqrt(0.161^2 + 0.04^2) = 0.17 and sqrt(0.091^2 + 0.04^2) = 0.10.  The model's counts are smooth
#: trajectories; a visit's measurement scatters around them.
LAB_NOISE_SD = {"anc": 0.17, "platelets": 0.10}
ANC = GradeScale(
    "anc",
    (2.0, 1.5, 1.0, 0.5),
    label="anc",
    event="neutropenia",
    unit="x10^9/L",
    title="ANC",
    noise_sd=LAB_NOISE_SD["anc"],
)
PLATELETS = GradeScale(
    "platelets",
    (150.0, 75.0, 50.0, 25.0),
    label="plt",
    event="thrombocytopenia",
    unit="x10^9/L",
    title="platelets",
    noise_sd=LAB_NOISE_SD["platelets"],
)
#: Node burden (relative to baseline) below which the nodes count as normal for CR: iwCLL 2008
#: asks for no node above 1.5 cm; assumed to be a fall of burden by more than 90% from baseline.
NODES_CR_RATIO = 0.1
RESPONSE = ResponseCriteria(
    "alc",
    pr_ratio=0.5,
    pd_ratio=1.5,
    normal_below=4.0,
    cr_above=(("anc", 1.5), ("platelets", 100.0)),
    also=("nodes",),
    also_cr_ratio=NODES_CR_RATIO,
)
IG_TITLES = {"igg": "IgG", "igm": "IgM", "iga": "IgA"}
FLARE = HazardEventSpec("flare_hazard", title="tumour flare", cycles=(1,))

ENDPOINTS = EndpointSet(
    grades=(ANC, PLATELETS),
    response=RESPONSE,
    values=(
        ValueAtCycles("alc", (12, 24), percent_change=True, unit="%", title="ALC"),
        ValueAtCycles("nodes", (12, 24), percent_change=True, unit="%", title="node burden"),
        *(ValueAtCycles(ig, (12, 24), baseline_column=f"{ig}0", unit="mg/dL", title=t) for ig, t in IG_TITLES.items()),
    ),
    limiting="anc",
    compare_response_cycles=(6, 12, 24),
    events=(FLARE,),
)


def _grade_limits(grade: int) -> dict:
    return {"anc": ANC.limit(grade), "platelets": PLATELETS.limit(grade)}


def label_rule(
    *, dose_levels: tuple = DOSE_LEVELS, visits: LabVisits | None = None, cycle_days: int = 28
) -> DoseModificationRules:
    """The label-style rule: hold at grade >= 3 (ANC < 1.0 or platelets < 50 x10^9/L), resume at
    one dose level lower once both recover above the grade-3 limits (never below 2.5 mg: a
    reduction below it stops treatment); labs weekly in cycles 1-2, then on day 1 of each cycle."""
    return DoseModificationRules(
        hold_below=_grade_limits(3),
        resume_at=_grade_limits(3),
        dose_levels=dose_levels,
        visits=LabVisits.standard(cycle_days=cycle_days, every_days=cycle_days) if visits is None else visits,
        min_dose_mg=2.5,
        cycle_days=cycle_days,
        label="label rule",
    )


def trial_rule(
    dose_levels: tuple,
    visits: LabVisits,
    cycle_days: int = 28,
    *,
    stop_at_progression: bool = True,
    escalate_if_responding: bool = False,
    escalation_block_grade: int = 3,
) -> DoseModificationRules:
    """Ferrajoli-style dose modification for an escalating regimen: hold at grade 4 (ANC < 0.5
    or platelets < 25), resume one level lower once ANC >= 1.0 and platelets >= 50, escalation
    only after a course without toxicity of grade >= ``escalation_block_grade`` (3: ANC < 1.0 or
    platelets < 50; 2: ANC < 1.5 or platelets < 75), labs at ``visits``.

    Why grade 4 and not the label's grade 3: the trial reports grade 3-4 neutropenia in 41% of
    courses yet a median tolerated dose of 10 mg with 25% of patients at 5 mg; a virtual cohort
    that matches the 41% under the grade-3 hold ends with ~90% of patients at 5 mg.  Holding
    only at < 0.5 is one of the protocol variants the domain brief names (the protocol's exact
    rule is not in the data).

    Response, as in the trial (``data/regimens.csv``, Ferrajoli et al., Blood 2008;111:5291:
    "+5 mg/d every 28 days up to 25 mg/d by tolerance and response"), on the markers of
    :data:`RESPONSE`, relative to their values at the first visit (day 0):

    - ``stop_at_progression`` (default): treatment stops for good at the first visit where the
      ALC or the node burden is >= ``RESPONSE.pd_ratio`` (1.5) x baseline (progressive disease);
    - ``escalate_if_responding=False`` (default): the dose is escalated only while the patient
      has not yet responded in the blood, i.e. while the ALC stays above ``RESPONSE.pr_ratio``
      (0.5) x baseline; from the first visit at or below it the dose stays at its level (it can
      still be reduced for toxicity).  ``True`` escalates by tolerance alone.  The blood count
      alone is read here: it is what a lab visit shows, and the rule's freeze reads a fall of any
      one observable, not of all of them.

    The protocol's exact response rule is not in the data; these read "by tolerance and
    response" as: escalate a patient who tolerates the dose but has not responded, stop at
    progression.

    "Tolerated" is not defined further in the data either: ``escalation_block_grade`` is a
    study's reading of it (``escalation_block_grade`` in ``data/study_designs.csv``)."""
    if escalation_block_grade not in (1, 2, 3, 4):
        raise ValueError(f"escalation_block_grade must be a CTCAE grade 1-4, got {escalation_block_grade!r}")
    return DoseModificationRules(
        hold_below=_grade_limits(4),
        resume_at=_grade_limits(3),
        escalation_blocked_below=_grade_limits(escalation_block_grade),
        stop_above={k: RESPONSE.pd_ratio for k in RESPONSE.markers} if stop_at_progression else None,
        escalate_only_below=None if escalate_if_responding else {RESPONSE.marker: RESPONSE.pr_ratio},
        dose_levels=dose_levels,
        visits=visits,
        min_dose_mg=dose_levels[0],
        cycle_days=cycle_days,
        label=f"trial rule (hold at grade 4, escalate without grade >= {escalation_block_grade})",
    )
