r"""Observation models and likelihood: from a simulated virtual cohort to each reported summary.

A *study* (rows of :func:`lenapk.load_observations` sharing ``study``) is simulated as one virtual
cohort under its regimen (:class:`StudyDesign`: regimen, setting, horizon, lab visits, dose
rules); each row is then a statistic of that cohort.

Observation models (``temperature`` T; T = 0 is the clinical count, T > 0 the smooth relaxation
of :mod:`lenapk.endpoints` used for fitting):

- **mean** of a lab value (IgG, IgM, IgA, CD3+ T cells, ALC, ANC, platelets) at day ``d``: the
  cohort mean of the pre-dose value of day ``d``.
- **response at a day** (``partial_remission``, ``stable_disease``, ``progressive_disease``,
  ``complete_remission``, ``overall_response`` with a day): iwCLL 2008 approximated by the ALC
  (blood part only; the model has no nodes, spleen or marrow), :func:`endpoints.response_at`:
  PR-or-better = ALC/ALC0 < 0.5, PD = ALC/ALC0 >= 1.5, CR = ALC < 4 with ANC > 1.5 and
  platelets > 100.  ``partial_remission`` is PR-or-better unless the same study reports CR at
  the same time (then PR without CR).
- **best response** (the same endpoints without a day; only ``progressive_disease`` is fitted,
  the others need nodes and marrow) over the lab visits ``0 < v <=`` horizon,
  with :func:`endpoints.best_response`'s definitions: responded = PR-or-better or CR at any
  visit; PD = ALC rose >= 50% at a visit and never responded; SD = neither.
  ``lymphocyte_reduction_gt50pct``: ALC/ALC0 < 0.5 at any visit; ``lymphocyte_normalised``: ALC
  < 4 x10^9/L at any visit.
- **per-course rate** (``per_course``): fraction of the 28-day courses 1..K (K from the design)
  *given* (at least one dose in the course: courses after a patient stopped are not counted,
  as in the trial's 333 courses) in which a visit value fell below the threshold
  (:func:`endpoints.per_course_rate`): grade
  3-4 neutropenia ANC < 1.0, thrombocytopenia platelets < 50; "worst grade 1-2" courses are
  below the lower limit of normal (ANC 2.0, platelets 150) but not below the grade-3 limit.
- **incidence by a day** (``incidence`` with a day): fraction of patients with a visit value
  below the threshold at a visit ``0 < v <= day``.
- ``tolerated_25mg``: fraction of patients given >= 25 mg on at least 28 days (hard count only).

Composite events use the same relaxation as :mod:`lenapk.endpoints`: a threshold test is a
log-scale *margin* ``m`` (positive when the event holds; ``x < c`` has ``m = log c - log x``),
"and" is the minimum of margins, "or" the maximum, "at any visit" the smooth maximum
``T logsumexp(m / T)``, and the probability is ``sigmoid(m / T)``.  As T -> 0 every smooth value
converges to the hard count: a patient whose margin is ``|m|`` away from the threshold differs
from the hard indicator by at most ``exp(-|m| / T)``, and the smooth maximum over V visits exceeds
the maximum by at most ``T log V``; cohort means converge because only patients within a few T
of a threshold contribute (``docs/calibration.md`` tabulates the difference at the estimates).

Likelihood (negative log-likelihood, constants included):

- **means**: Gaussian on the mean with ``SE = CV * observed / sqrt(n)``.  Dispersion was not
  reported, so the between-patient CV is an assumption (:data:`DEFAULT_CV`: IgG 30%, IgM 60%,
  IgA 65% (the CVs of the population model's baseline distributions), CD3 50%); ``n`` is the
  row's, or when missing the smallest ``n`` reported for that study and endpoint (stated in the
  table as ``n_assumed``).
- **proportions** (any statistic but ``mean``): binomial with ``k = numerator`` and ``N =
  denominator`` (or ``n``); with only a fraction and ``n``, ``k = round(value * n)``.  Per-course
  rates count courses (N = 333 courses of 44 patients), as reported; courses of one patient are
  correlated, so this binomial over-states their information (no overdispersion is modelled).
- **response categories** of one assessment (CR/PR/SD/PD rows of one study and day, all fitted,
  whose counts add up to the common N) form one **multinomial** instead of separate binomials,
  which would count the same patients twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.scipy.special import gammaln

from . import endpoints as E
from .observations import ENDPOINTS, Observations
from .regimen import Regimen, load_regimens
from .rules import DoseModificationRules, DoseRules, LabVisits

# ---------------------------------------------------------------------------- constants
ANC_LLN, ANC_G3 = 2.0, 1.0  # x10^9/L (CTCAE v5 / iwCLL 2008)
PLT_LLN, PLT_G3 = 150.0, 50.0
PR_RATIO, PD_RATIO = 0.5, 1.5
CR_ALC, CR_ANC, CR_PLT = 4.0, 1.5, 100.0
TOLERATED_MG, TOLERATED_DAYS = 25.0, 28

DEFAULT_CV: dict[str, float] = {
    "IgG": 0.30, "IgM": 0.60, "IgA": 0.65,  # = CVs of the population model's baseline Ig distributions
    "CD3_T_cells": 0.50,  # assumed (T-cell counts in CLL are widely dispersed)
    "ALC": 1.0, "ANC": 0.45, "platelets": 0.45,  # = population model's baseline CVs (relapsed)
}

RESPONSE_CATEGORIES = ("complete_remission", "partial_remission", "stable_disease", "progressive_disease")
RESPONSE_ENDPOINTS = RESPONSE_CATEGORIES + ("overall_response",)
BEST_ONLY = ("lymphocyte_reduction_gt50pct", "lymphocyte_normalised")
THRESHOLDS = {  # endpoint -> (observable, lower threshold or None, upper threshold)
    "neutropenia_grade3_4": ("anc", None, ANC_G3),
    "neutropenia_grade1_2": ("anc", ANC_G3, ANC_LLN),
    "neutropenia_any_grade": ("anc", None, ANC_LLN),
    "thrombocytopenia_grade3_4": ("platelets", None, PLT_G3),
    "thrombocytopenia_grade1_2": ("platelets", PLT_G3, PLT_LLN),
    "thrombocytopenia_any_grade": ("platelets", None, PLT_LLN),
}

NOT_MODELLED = {
    "infection_grade3": "not represented: the model has no infection process",
    "tumour_flare_any_grade": "not represented: the model has no tumour-flare (cytokine, lymph-node) process",
}
WHY_NOT_FITTED = {
    "nci_response": (
        "not fitted: NCI-WG 1996 response needs nodes, spleen and marrow, which the model lacks; its "
        "blood part is fitted through lymphocyte_reduction_gt50pct and lymphocyte_normalised "
        "(prediction = the ALC-only proxy, for comparison)"
    ),
    "nci_pd": (
        "fitted with the ALC proxy (ALC rose >= 50% at a visit, never responded): the only information on "
        "growth in relapsed disease; clinical progression also counts nodes, spleen and Richter "
        "transformation, so the proxy is matched to a count it under-represents (biases relapsed growth up)"
    ),
    "iwcll_response": (
        "not fitted: iwCLL 2008 PR also needs a >= 50% fall of nodes and spleen, which the model lacks, so "
        "its ALC-only PR is an upper bound on PR, and SD (the rest) a lower bound; PD is fitted with the ALC "
        "proxy (prediction = the ALC-only proxy, for comparison)"
    ),
    "grade1_2": (
        "not fitted: grade 1-2 starts at the lower limit of normal and part of the virtual cohort starts "
        "below it (population model), while the trial counted treatment-emergent events; the model "
        "cannot separate the two (prediction shown for comparison)"
    ),
    "no_day": (
        "not fitted: no time is given (reported over a median 3.7 years of treatment, beyond the "
        "simulated horizon); the model predicts an incidence by a stated day"
    ),
    "tolerated": (
        "not fitted: a count of dose-rule decisions (discrete, no gradient); predicted under the "
        "study's dose-modification rule for comparison"
    ),
    "no_rules": "not predicted: needs dose-modification rules in the study design",
    "baseline": "baseline: the virtual cohort is anchored to it (anchor_baselines=True), not fitted",
}
DOSE_LEVEL_REASON = (
    "not fitted: the maintained dose level is an outcome (escalation by tolerance and response, "
    "de-escalation for toxicity), so responders by dose level confound dose with patient selection; "
    "responses are NCI-WG (nodes) while the model's are by ALC; and group membership is discrete (no "
    "gradient).  Predicted: virtual patients grouped by their modal daily dose under the study's "
    "dose rule, response = PR-or-better by ALC at any visit; 'share' compares group sizes"
)


# ---------------------------------------------------------------------------- study designs
def standard_visits(n_days: int, cycle_days: int = 28) -> tuple[int, ...]:
    """Lab visits: weekly in cycles 1-2, then every 14 days, and the last day (pre-dose days);
    :func:`endpoints.default_visits`."""
    return tuple(int(d) for d in E.default_visits(n_days, cycle_days=cycle_days))


@dataclass(frozen=True)
class Schedule:
    """Lab visits (pre-dose days) and the courses counted by per-course rates."""

    visits: tuple[int, ...]
    n_courses: int
    cycle_days: int = 28


@dataclass(frozen=True)
class StudyDesign:
    """How a study is simulated.

    ``regimen``: the planned doses; ``setting``: ``"untreated"`` or ``"relapsed"`` (the
    population model's covariate distributions); ``n_days``: horizon; ``visits``: lab visit
    days (pre-dose), used by every visit-based endpoint and, when ``rules`` are given, by the
    rule; ``n_courses``: courses counted by per-course rates; ``rules``: dose modification
    (``None``: every planned dose given); ``note``: the simplifications, for the report."""

    study: str
    regimen: Regimen
    setting: str
    n_days: int
    visits: tuple[int, ...]
    n_courses: int
    rules: DoseRules | None = None
    cycle_days: int = 28
    note: str = ""

    @property
    def schedule(self) -> "Schedule":
        """The hashable part the endpoints read (visits, courses)."""
        return Schedule(self.visits, self.n_courses, self.cycle_days)

    def __post_init__(self):
        if self.setting not in ("untreated", "relapsed"):
            raise ValueError(f"design {self.study}: setting must be 'untreated' or 'relapsed', got {self.setting!r}")
        if not (isinstance(self.n_days, int) and self.n_days >= 1):
            raise ValueError(f"design {self.study}: n_days must be a whole number >= 1, got {self.n_days!r}")
        v = np.asarray(self.visits)
        if v.size == 0 or v[0] != 0 or np.any(np.diff(v) <= 0) or v[-1] > self.n_days:
            raise ValueError(
                f"design {self.study}: visits must start at day 0, increase and end by day {self.n_days}"
            )


def study_rules(regimen_row: pd.Series | None, visits: tuple[int, ...], cycle_days: int = 28) -> DoseRules:
    """Ferrajoli-style dose modification for an escalating regimen: hold at grade 4 (ANC < 0.5
    or platelets < 25), resume one level lower once ANC >= 1.0 and platelets >= 50, on levels in
    steps of the escalation down to one step (5, 10, ..., 25 mg for 10 -> 25 mg by 5),
    escalation only after a course without grade >= 3 toxicity, labs at the design's visits.

    Why grade 4 and not the label's grade 3: the trial reports grade 3-4 neutropenia in 41% of
    courses yet a median tolerated dose of 10 mg with 25% of patients at 5 mg; a virtual cohort
    that matches the 41% under the grade-3 hold ends with ~90% of patients at 5 mg.  Holding
    only at < 0.5 is one of the protocol variants the domain brief names (the protocol's exact
    rule is not in the data)."""
    step = float(regimen_row["escalation_mg"]) if regimen_row is not None else 5.0
    top = float(regimen_row["max_mg"]) if regimen_row is not None else 25.0
    levels = tuple(float(x) for x in np.arange(step, top + 1e-9, step))
    return DoseModificationRules(
        dose_levels=levels,
        visits=LabVisits.on_days(list(visits)),
        min_dose_mg=levels[0],
        anc_hold_below=0.5, anc_resume_at=1.0, platelet_hold_below=25.0, platelet_resume_at=50.0,
        escalate_only_if_no_grade3=True,
        cycle_days=cycle_days,
    )


def default_designs(observations: Observations | pd.DataFrame, *, regimens=None, regimen_table=None,
                    rules: bool = True) -> dict[str, StudyDesign]:
    """One :class:`StudyDesign` per study of the table.

    - regimen: ``regimen_id`` among ``regimens`` (default: :func:`lenapk.load_regimens`);
    - setting: ``"relapsed"`` if the ``setting`` text says relapsed or refractory, else
      ``"untreated"``;
    - horizon: the latest day of the study's rows, and at least the mean number of courses per
      patient of its per-course rows (``round(denominator / n)``: 333 / 44 -> 8 courses = 224
      days), which is also ``n_courses``; a study without either gets its regimen's length;
    - visits: :func:`standard_visits`;
    - rules: relapsed studies on an escalating regimen get :func:`study_rules` (when ``rules``);
      the others get none (every planned dose given: stated in the design's ``note``).
    """
    table = observations.observations if isinstance(observations, Observations) else observations
    regimens = load_regimens() if regimens is None else regimens
    if regimen_table is None:
        from ._data import data_path

        regimen_table = pd.read_csv(data_path("regimens.csv"))
    designs = {}
    for study, rows in table.groupby("study", sort=False):
        rids = rows["regimen_id"].unique()
        if len(rids) != 1:
            raise ValueError(f"study {study!r} has rows for several regimens {list(rids)}; pass designs=")
        rid = rids[0]
        if rid not in regimens:
            raise ValueError(f"study {study!r}: unknown regimen_id {rid!r}; known: {sorted(regimens)}; pass designs=")
        regimen = regimens[rid]
        text = " ".join(str(s).lower() for s in rows.get("setting", pd.Series([""])).unique())
        setting = "relapsed" if ("relapsed" in text or "refractory" in text) else "untreated"
        cycle = regimen.cycle_days
        course_rows = rows[(rows["statistic"] == "per_course") & rows["denominator"].notna() & rows["n"].notna()]
        n_courses = int(round(float((course_rows["denominator"] / course_rows["n"]).max()))) if len(course_rows) else 0
        days = rows["day"].dropna()
        horizon = int(math.ceil(days.max())) if len(days) else 0
        horizon = max(horizon, n_courses * cycle)
        if horizon == 0 or rows["day"].isna().any() and n_courses == 0:
            horizon = max(horizon, regimen.n_days)
        visits = standard_visits(horizon, cycle)
        reg_row = regimen_table[regimen_table["regimen_id"] == rid]
        reg_row = reg_row.iloc[0] if len(reg_row) else None
        escalating = reg_row is not None and float(reg_row.get("escalation_mg", 0) or 0) > 0 \
            and float(reg_row["max_mg"]) > float(reg_row["start_mg"])
        use_rules = rules and setting == "relapsed" and escalating
        note = (
            f"{regimen.name}, {horizon} days ({horizon / cycle:g} courses), {setting} population; labs weekly in "
            "courses 1-2 then every 14 days; "
            + ("dose modification by study_rules() (hold at grade 4: ANC < 0.5 or platelets < 25; resume one "
               "5 mg level lower at ANC >= 1.0 and platelets >= 50; escalate only after a course without grade >= 3 "
               "toxicity)" if use_rules else
               "planned doses given throughout (no dose modification simulated)")
        )
        designs[study] = StudyDesign(
            study=str(study), regimen=regimen, setting=setting, n_days=horizon, visits=visits,
            n_courses=n_courses, rules=study_rules(reg_row, visits, cycle) if use_rules else None,
            cycle_days=cycle, note=note,
        )
    return designs


# ---------------------------------------------------------------------------- row models
@dataclass(frozen=True)
class RowModel:
    """How one observation row is predicted and weighted (hashable: it is static under jit)."""

    index: int  # position in the table
    row: int  # source row (1-based)
    study: str
    endpoint: str
    statistic: str
    kind: str  # mean | at_day | best | per_course | incidence | tolerated | none
    day: int = -1
    observable: str = ""
    fitted: bool = False
    reason: str = ""
    likelihood: str = ""  # gaussian | binomial | multinomial | ""
    observed: float = math.nan
    k: float = math.nan
    N: float = math.nan
    se: float = math.nan
    n_used: float = math.nan
    n_assumed: bool = False
    group: int = -1
    cr_reported: bool = False  # the study reports CR at the same assessment (PR then excludes CR)

    @property
    def spec(self) -> "RowSpec":
        """What :func:`predict_rows` reads (hashable, free of data values)."""
        return RowSpec(self.kind, self.endpoint, self.day, self.observable, self.cr_reported)


@dataclass(frozen=True)
class RowSpec:
    """The prediction-relevant part of a :class:`RowModel`."""

    kind: str
    endpoint: str
    day: int = -1
    observable: str = ""
    cr_reported: bool = False


def _kind(rec, design: StudyDesign) -> tuple[str, str, str]:
    """(kind, observable, reason-if-unpredictable) of a row."""
    ep, st, day = rec["endpoint"], rec["statistic"], rec["day"]
    if ep in NOT_MODELLED:
        return "none", "", NOT_MODELLED[ep]
    if st == "mean":
        return "mean", ENDPOINTS[ep].observable, ""
    if ep == "tolerated_25mg":
        return ("tolerated", "", "") if design.rules is not None else ("none", "", WHY_NOT_FITTED["no_rules"])
    if ep in RESPONSE_ENDPOINTS:
        return ("best" if math.isnan(day) else "at_day"), "", ""
    if ep in BEST_ONLY:
        return "best", "", ""
    if ep in THRESHOLDS:
        if st == "per_course":
            if design.n_courses < 1:
                return "none", "", "not predicted: the design counts no courses (n_courses = 0)"
            return "per_course", THRESHOLDS[ep][0], ""
        if math.isnan(day):
            return "none", "", WHY_NOT_FITTED["no_day"]
        return "incidence", THRESHOLDS[ep][0], ""
    return "none", "", "not represented by the model"


def build_row_models(table: pd.DataFrame, designs: dict[str, StudyDesign], *, cv=None,
                     anchored: frozenset = frozenset()) -> list[RowModel]:
    """Observation model, fit status and likelihood of every row.  ``anchored``: row indices of
    baselines the cohort is anchored to (reported, not fitted)."""
    cv = {**DEFAULT_CV, **(cv or {})}
    out: list[RowModel] = []
    for i, rec in enumerate(table.to_dict("records")):
        design = designs[rec["study"]]
        kind, observable, reason = _kind(rec, design)
        day = -1 if math.isnan(rec["day"]) else int(round(rec["day"]))
        if day > design.n_days:
            kind, reason = "none", f"not predicted: day {day} is beyond the design's horizon ({design.n_days} days)"
        fitted = kind not in ("none", "tolerated")
        ep = rec["endpoint"]
        if kind == "tolerated":
            reason = WHY_NOT_FITTED["tolerated"]
        elif kind == "best" and ep == "progressive_disease":
            reason = WHY_NOT_FITTED["nci_pd"]
        elif kind == "best" and ep in RESPONSE_ENDPOINTS:
            fitted, reason = False, WHY_NOT_FITTED["nci_response"]
        elif kind == "at_day" and ep in RESPONSE_ENDPOINTS and ep != "progressive_disease":
            fitted, reason = False, WHY_NOT_FITTED["iwcll_response"]
        elif kind == "per_course" and ep.endswith("grade1_2"):
            fitted, reason = False, WHY_NOT_FITTED["grade1_2"]
        if i in anchored:
            fitted, reason = False, WHY_NOT_FITTED["baseline"]
        if kind == "mean" and day > 0 and rec["value"] <= 0:
            fitted, reason = False, "not fitted: a mean of 0 has no relative standard error"
        same_time = (table["study"] == rec["study"]) & (
            table["day"].isna() if math.isnan(rec["day"]) else (table["day"] == rec["day"]))
        cr_reported = bool(((table["endpoint"] == "complete_remission") & same_time).any())
        kw = dict(index=i, row=int(rec["row"]), study=rec["study"], endpoint=ep, statistic=rec["statistic"],
                  kind=kind, day=day, observable=observable or "", fitted=fitted, reason=reason,
                  observed=float(rec["value"]), cr_reported=cr_reported)
        if rec["statistic"] == "mean":
            n = rec["n"]
            assumed = pd.isna(n)
            if assumed:
                same = table[(table["study"] == rec["study"]) & (table["endpoint"] == ep) & table["n"].notna()]
                others = table[(table["study"] == rec["study"]) & table["n"].notna()]
                n = same["n"].min() if len(same) else (others["n"].max() if len(others) else 1)
            c = cv.get(ep)
            if c is None:
                raise ValueError(f"no between-patient CV for {ep}; pass cv={{{ep!r}: ...}}")
            kw.update(likelihood="gaussian", se=c * float(rec["value"]) / math.sqrt(float(n)), n_used=float(n),
                      n_assumed=bool(assumed))
        else:
            N = rec["denominator"] if not pd.isna(rec["denominator"]) else rec["n"]
            if pd.isna(N):
                kw.update(fitted=False, reason="not fitted: neither denominator nor n is given")
            else:
                k = rec["numerator"] if not pd.isna(rec["numerator"]) else round(float(rec["value"]) * float(N))
                kw.update(likelihood="binomial", k=float(k), N=float(N), n_used=float(N))
        out.append(RowModel(**kw))
    return _group_multinomials(out)


def _group_multinomials(rows: list[RowModel]) -> list[RowModel]:
    """Response-category rows of one assessment whose counts add up to N -> one multinomial."""
    by_key: dict = {}
    for r in rows:
        if r.fitted and r.endpoint in RESPONSE_CATEGORIES and r.kind in ("at_day", "best"):
            by_key.setdefault((r.study, r.day), []).append(r)
    out = list(rows)
    for g, ((study, day), members) in enumerate(by_key.items()):
        Ns = {m.N for m in members}
        if len(members) < 2 or len(Ns) != 1 or sum(m.k for m in members) != next(iter(Ns)):
            continue
        for m in members:
            out[m.index] = _replace(m, likelihood="multinomial", group=g)
    return out


def _replace(r: RowModel, **kw) -> RowModel:
    from dataclasses import replace

    return replace(r, **kw)


# ---------------------------------------------------------------------------- predictions
def needed_observables(rows) -> tuple[str, ...]:
    """Model observables the rows read."""
    names = set()
    for r in rows:
        if r.kind == "mean":
            names.add(r.observable)
        elif r.kind in ("at_day", "best"):
            names |= {"alc", "anc", "platelets"}
        elif r.kind in ("per_course", "incidence"):
            names.add(r.observable)
    return tuple(sorted(names))


def selected_days(rows, design: StudyDesign) -> tuple[int, ...]:
    """Days whose pre-dose values the rows need: 0, the rows' days and the visits."""
    days = {0}
    if any(r.kind in ("best", "per_course", "incidence") for r in rows):
        days |= set(design.visits)
    days |= {r.day for r in rows if r.kind in ("mean", "at_day") and r.day >= 0}
    return tuple(sorted(days))


def _sig(m, T):
    return jax.nn.sigmoid(m / T) if T else (m > 0) * 1.0


def _smax(m, T, axis=-1):
    """Smooth maximum over ``axis`` (T logsumexp(m / T)); the maximum when T = 0."""
    return T * jax.nn.logsumexp(m / T, axis=axis) if T else jnp.max(m, axis=axis)


def _log(x):
    return jnp.log(jnp.maximum(x, 1e-300))


def predict_rows(values: dict, rows, design: StudyDesign | Schedule, sel_days: tuple[int, ...],
                 temperature: float, doses=None) -> jnp.ndarray:
    """Predicted summary of each row (NaN for rows without a model) from the cohort's pre-dose
    values at ``sel_days`` (``values[name]`` of shape (n, len(sel_days))).  Pure jnp; smooth for
    ``temperature > 0``."""
    T = float(temperature)
    col = {d: j for j, d in enumerate(sel_days)}
    visit_cols = [col[v] for v in design.visits if v > 0 and v in col]
    visit_days = np.asarray([v for v in design.visits if v in col])
    out = []
    cache = {}

    def best():
        if "best" not in cache:
            alc, anc, plt = values["alc"], values["anc"], values["platelets"]
            lr = _log(alc[:, visit_cols]) - _log(alc[:, :1])  # log ALC/ALC0 at visits > 0
            m_pr = math.log(PR_RATIO) - lr
            m_cr = jnp.minimum(jnp.minimum(math.log(CR_ALC) - _log(alc[:, visit_cols]),
                                           _log(anc[:, visit_cols]) - math.log(CR_ANC)),
                               _log(plt[:, visit_cols]) - math.log(CR_PLT))
            resp = _smax(jnp.maximum(m_pr, m_cr), T)
            prog = _smax(lr - math.log(PD_RATIO), T)
            cache["best"] = {
                "overall_response": resp,
                "complete_remission": _smax(m_cr, T),
                "partial_remission": jnp.minimum(resp, -_smax(m_cr, T)),
                "progressive_disease": jnp.minimum(prog, -resp),
                "stable_disease": jnp.minimum(-prog, -resp),
                "lymphocyte_reduction_gt50pct": _smax(m_pr, T),
                "lymphocyte_normalised": _smax(math.log(CR_ALC) - _log(alc[:, visit_cols]), T),
            }
        return cache["best"]

    for r in rows:
        if r.kind == "mean":
            out.append(jnp.mean(values[r.observable][:, col[r.day]]))
        elif r.kind == "at_day":
            st = E.response_at(values["alc"], values["anc"], values["platelets"], col[r.day], temperature=T)
            if r.endpoint == "partial_remission":
                p = st["PR"] if r.cr_reported else st["PR"] + st["CR"]
            elif r.endpoint == "overall_response":
                p = st["PR"] + st["CR"]
            else:
                p = st[{"complete_remission": "CR", "stable_disease": "SD", "progressive_disease": "PD"}[r.endpoint]]
            out.append(jnp.mean(jnp.asarray(p)))
        elif r.kind == "best":
            m = best()[r.endpoint]
            if r.endpoint == "partial_remission" and not r.cr_reported:
                m = best()["overall_response"]
            out.append(jnp.mean(_sig(m, T)))
        elif r.kind == "per_course":
            _, lower, upper = THRESHOLDS[r.endpoint]
            x = values[r.observable][:, [col[v] for v in visit_days]]
            rate = E.per_course_rate(x, visit_days, upper, cycle_days=design.cycle_days,
                                     n_courses=design.n_courses, temperature=T)
            if lower is not None:
                rate = rate - E.per_course_rate(x, visit_days, lower, cycle_days=design.cycle_days,
                                                n_courses=design.n_courses, temperature=T)
            given = courses_given(doses, design)
            out.append(jnp.sum(jnp.asarray(rate) * given) / jnp.maximum(jnp.sum(given), 1.0))
        elif r.kind == "incidence":
            _, lower, upper = THRESHOLDS[r.endpoint]
            cols = [col[v] for v in design.visits if 0 < v <= r.day]
            x = values[r.observable][:, cols]
            m = _smax(math.log(upper) - _log(x), T)
            if lower is not None:
                m = jnp.minimum(m, -_smax(math.log(lower) - _log(x), T))
            out.append(jnp.mean(_sig(m, T)))
        elif r.kind == "tolerated" and doses is not None:
            days_at = jnp.sum(jnp.asarray(doses) >= TOLERATED_MG - 1e-9, axis=-1)
            out.append(jnp.mean((days_at >= TOLERATED_DAYS) * 1.0))
        else:
            out.append(jnp.asarray(jnp.nan))
    return jnp.stack([jnp.asarray(o, dtype=jnp.float64) for o in out]) if out else jnp.zeros(0)


def courses_given(doses, design) -> np.ndarray | jnp.ndarray:
    """1 for each (patient, course) in which at least one dose was given (the courses a trial
    counts), from the doses of the simulation; all ones without dose records."""
    K, L = design.n_courses, design.cycle_days
    if doses is None:
        return 1.0
    d = doses[:, : K * L]
    return (d.reshape(d.shape[0], K, L) > 0).any(axis=-1) * 1.0


def dose_level_predictions(dose_levels: pd.DataFrame, study: str, design: StudyDesign, values: dict,
                           sel_days, doses) -> pd.DataFrame:
    """Observed vs predicted response rate and share of patients by maintained dose level
    (hard counts; see :data:`DOSE_LEVEL_REASON`)."""
    rows = dose_levels[dose_levels["study"] == study]
    if len(rows) == 0:
        return pd.DataFrame()
    d = np.asarray(doses)
    given = np.where(d > 0, d, np.nan)
    modal = []
    for g in given:
        g = g[np.isfinite(g)]
        if g.size == 0:
            modal.append(np.nan)
            continue
        vals, counts = np.unique(g, return_counts=True)
        modal.append(vals[np.argmax(counts)])
    modal = np.asarray(modal)
    best_resp = _best_response_by_patient(values, design, sel_days)
    total = rows["patients"].sum()
    out = []
    for rec in rows.to_dict("records"):
        in_group = np.isclose(modal, rec["dose_mg_per_day"])
        n_g = int(in_group.sum())
        out.append({
            "row": rec["row"], "study": study, "endpoint": f"responders at {rec['dose_mg_per_day']:g} mg/d",
            "statistic": "proportion", "observed": rec["responders"] / rec["patients"],
            "k": rec["responders"], "N": rec["patients"],
            "predicted": float(best_resp[in_group].mean()) if n_g else math.nan,
            "observed_share": rec["patients"] / total, "predicted_share": n_g / len(modal),
            "fitted": False, "status": DOSE_LEVEL_REASON,
        })
    return pd.DataFrame(out)


def _best_response_by_patient(values, design, sel_days) -> np.ndarray:
    """Hard best response (PR or better by ALC at any visit) of each patient."""
    col = {d: j for j, d in enumerate(sel_days)}
    cols = [col[v] for v in design.visits if v > 0 and v in col]
    alc = np.asarray(values["alc"])
    return np.any(alc[:, cols] / alc[:, :1] < PR_RATIO, axis=1) * 1.0


# ---------------------------------------------------------------------------- likelihood
@dataclass(frozen=True)
class Likelihood:
    """Arrays of the per-row likelihood (one entry per row; unfitted rows weigh nothing)."""

    fitted: np.ndarray
    code: np.ndarray  # 1 gaussian, 2 binomial, 3 multinomial
    observed: np.ndarray
    se: np.ndarray
    k: np.ndarray
    N: np.ndarray
    group: np.ndarray
    constant: np.ndarray = field(repr=False)

    @classmethod
    def from_rows(cls, rows) -> "Likelihood":
        codes = {"gaussian": 1, "binomial": 2, "multinomial": 3}
        fitted = np.array([r.fitted for r in rows], dtype=bool)
        code = np.array([codes.get(r.likelihood, 0) if r.fitted else 0 for r in rows])
        k = np.array([r.k for r in rows], dtype=float)
        N = np.array([r.N for r in rows], dtype=float)
        se = np.array([r.se for r in rows], dtype=float)
        group = np.array([r.group for r in rows])
        const = np.zeros(len(rows))
        for i, r in enumerate(rows):
            if code[i] == 1:
                const[i] = math.log(r.se * math.sqrt(2 * math.pi))
            elif code[i] == 2:
                const[i] = -float(gammaln(r.N + 1) - gammaln(r.k + 1) - gammaln(r.N - r.k + 1))
            elif code[i] == 3:
                const[i] = float(gammaln(r.k + 1))
        seen = set()
        for i, r in enumerate(rows):  # the multinomial's -log N! once per group
            if code[i] == 3 and r.group not in seen:
                seen.add(r.group)
                const[i] -= float(gammaln(r.N + 1))
        obs = np.array([r.observed for r in rows], dtype=float)
        return cls(fitted, code, obs, se, k, N, group, const)

    def per_row(self, pred) -> jnp.ndarray:
        """Negative log-likelihood of each row (0 for unfitted rows)."""
        pred = jnp.asarray(pred)
        safe = jnp.where(jnp.isfinite(pred), pred, 0.5)
        p = jnp.clip(safe, 1e-9, 1.0 - 1e-9)
        se = np.where(self.code == 1, self.se, 1.0)
        k, N = np.nan_to_num(self.k), np.nan_to_num(self.N)
        gauss = 0.5 * ((np.nan_to_num(self.observed) - safe) / se) ** 2
        binom = -(k * jnp.log(p) + (N - k) * jnp.log1p(-p))
        # multinomial: -k log(p_i / sum_group p)
        totals = jnp.zeros(len(self.code))
        for g in np.unique(self.group[self.code == 3]):
            members = self.code == 3
            members = members & (self.group == g)
            totals = totals + jnp.where(members, jnp.sum(jnp.where(members, p, 0.0)), 0.0)
        multi = -k * (jnp.log(p) - jnp.log(jnp.where(self.code == 3, totals, 1.0)))
        nll = jnp.where(self.code == 1, gauss, jnp.where(self.code == 2, binom, jnp.where(self.code == 3, multi, 0.0)))
        return jnp.where(self.fitted, nll + self.constant, 0.0)

    def nll(self, pred) -> jnp.ndarray:
        return jnp.sum(self.per_row(pred))

    def residuals(self, pred) -> np.ndarray:
        """Standardised residuals (observed - predicted) / SD: SE for means, sqrt(p(1-p)/N) for
        proportions (NaN for rows without a likelihood)."""
        pred = np.asarray(pred, dtype=float)
        out = np.full(pred.shape, np.nan)
        g = self.code == 1
        out[g] = (self.observed[g] - pred[g]) / self.se[g]
        b = (self.code >= 2) & np.isfinite(self.N)
        p = np.clip(pred[b], 1e-9, 1 - 1e-9)
        out[b] = (self.k[b] / self.N[b] - p) / np.sqrt(p * (1 - p) / self.N[b])
        return out
