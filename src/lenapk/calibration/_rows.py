"""Each observation row's observation model: what predicts it, whether it is fitted, its likelihood.

Likelihood (negative log-likelihood, constants included; formulas in
:mod:`lenapk.calibration._likelihood`):

- **means**: Gaussian on the mean with ``SE = CV * observed / sqrt(n)``.  Dispersion is rarely
  reported, so the between-patient CV is an assumption (``CalibrationSpec.cv``); ``n`` is the
  row's, or when missing the smallest ``n`` reported for that study and endpoint (stated in the
  table as ``n_assumed``).  The prediction is the mean of ``n_v`` virtual patients, so its Monte
  Carlo SE ``se_mc = CV * observed / sqrt(n_v)`` is added: ``SE_total^2 = SE^2 + se_mc^2``.
- **proportions** (any statistic but ``mean``): binomial with ``k = numerator`` and ``N =
  denominator`` (or ``n``, or without either the study design's ``assumed_n``, stated in the
  table as ``n_assumed``); with only a fraction and ``n``, ``k = round(value * n)``; in fact a
  **beta-binomial** with mean ``p`` (the prediction) and intra-class correlation ``rho`` (its Beta
  mixing variance is ``rho p (1 - p)``, so ``Var k = N p (1 - p) [1 + (N - 1) rho]``), where
  ``rho = rho_data + rho_mc`` (capped at :data:`RHO_MAX`):

  - ``rho_data``: **per-course** rates count courses, ``m = N / n`` per patient (``n`` patients;
    without ``n``, the design's ``n_courses``), and courses of one patient are correlated.  With
    an intra-patient correlation ``r`` of courses (:data:`COURSE_CORRELATION` = 0.3 by default,
    an assumption: no trial reports it; a patient whose counts fall in one course tends to fall
    in the next), ``Var k = N p (1 - p) [1 + (m - 1) r]`` (the design effect of a cluster
    sample), i.e. a beta-binomial with ``rho_data = (m - 1) r / (N - 1)``.  Other proportions
    count patients: ``rho_data = 0``.
  - ``rho_mc``: the **Monte Carlo error** of the virtual cohort.  The prediction is a mean over
    ``n_v`` virtual patients (``n_v * m_v`` courses, ``m_v`` = the design's ``n_courses``), so it
    scatters around the model's population value with ``v_mc = p (1 - p) / n_v`` (per course:
    ``p (1 - p) [1 + (m_v - 1) r] / (n_v m_v)``).  Folded into the Beta mixing variance,
    ``rho_mc = v_mc / (p (1 - p))`` = ``1 / n_v`` (per course ``[1 + (m_v - 1) r] / (n_v m_v)``),
    which does not depend on ``p``.  The cohort is fixed (common random numbers), so this error is
    a fixed bias of the whole fit rather than noise that changes between evaluations; the
    variance term makes the likelihood no more certain than the cohort allows.  For smooth
    indicators (``T > 0``) ``p (1 - p) / n_v`` is an upper bound of the variance.
- **response categories** of one assessment (CR/PR/SD/PD rows of one study and day, all fitted,
  whose counts add up to the common N) form one **multinomial** instead of separate binomials,
  which would count the same patients twice; with the cohort's Monte Carlo error it is the
  **Dirichlet-multinomial** analogue: the predicted shares of ``n_v`` virtual patients have the
  covariance ``(diag q - q q') / n_v`` of a Dirichlet with precision ``alpha0 = 1 / rho - 1 =
  n_v - 1`` (``rho = 1 / n_v``; patients are independent, so no ``rho_data``).

``n_v`` reaches the rows through :func:`build_row_models` (``n_virtual``: the number of virtual
patients of each study); without it (``None``) there is no Monte Carlo term.

**Lab noise.**  Thresholds (a blood count below a grade limit) are counted in the trials on *measured* values, which
scatter around the true value (analytical error plus the day-to-day biological variation a smooth model does not
represent); the model predicts true values.  A :class:`FractionBelow` row with ``noise_sd`` = s > 0 is predicted as
the expected count of measurements ``x exp(e)``, ``e ~ N(0, s^2)`` independent between visits (a patient at 10%
above a limit at 30 visits has an event with probability ``1 - Phi(log 1.1 / s)^30``, 0.99 at s = 0.17), the same at
every temperature: the rows are smooth in the parameters without a relaxation.  s is the model's (declared with its
grade scales, from published biological variation), not estimated.  Rows without noise use the smooth
relaxation of :mod:`lenapk.endpoints._smooth`, whose width is no noise model: "below at any visit" is a smooth maximum
of the margins, not ``1 - prod(1 - P(below at visit))``.  The dose rules act on the model's values, not on noisy
ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import pandas as pd

from ._designs import StudyDesign
from ._vocabulary import (
    FractionBelow,
    HazardEvent,
    MeanOf,
    NotModelled,
    Predictor,
    ResponseEvent,
    SummaryEndpoint,
    ToleratedDose,
)

CATEGORY_EVENTS = ("cr", "pr", "sd", "pd")  # response categories that can form a multinomial
NOT_FITTED_TOLERATED = (
    "not fitted: a count of dose-rule decisions (discrete, no gradient); predicted under the "
    "study's dose-modification rule for comparison"
)
NO_RULES = "not predicted: needs dose-modification rules in the study design"
NO_DAY = (
    "no day given: predicted as the incidence over the design's horizon ({days} days), which may be shorter "
    "or longer than the study's follow-up"
)
BASELINE = "baseline: the virtual cohort is anchored to it (anchor_baselines=True), not fitted"
COURSE_CORRELATION = 0.3  # intra-patient correlation of per-course events (an assumption; see above)
RHO_MAX = 0.99  # the beta-binomial's intra-class correlation is capped below 1


@dataclass(frozen=True)
class RowSpec:
    """What :func:`predict_rows` reads of a row (hashable, free of data values)."""

    kind: str  # mean | at_day | best | per_course | incidence | tolerated | none
    predictor: Predictor
    day: int = -1
    cr_reported: bool = False  # the study reports CR at the same assessment (PR then excludes CR)


@dataclass(frozen=True)
class RowModel:
    """How one observation row is predicted and weighted."""

    index: int  # position in the table
    row: int  # source row (1-based)
    study: str
    endpoint: str
    statistic: str
    kind: str
    predictor: Predictor
    day: int = -1
    fitted: bool = False
    reason: str = ""
    likelihood: str = ""  # gaussian | binomial | multinomial | ""
    observed: float = math.nan
    k: float = math.nan
    N: float = math.nan
    se: float = math.nan  # SE of the observed mean (the data's)
    se_mc: float = 0.0  # Monte Carlo SE of the predicted mean (the virtual cohort's)
    rho: float = 0.0  # beta-binomial correlation of the data (courses within patients)
    rho_mc: float = 0.0  # Monte Carlo term of the beta-binomial / Dirichlet-multinomial
    n_virtual: float = math.nan  # virtual patients predicting the row
    n_used: float = math.nan
    n_assumed: bool = False
    group: int = -1
    cr_reported: bool = False

    @property
    def spec(self) -> RowSpec:
        return RowSpec(self.kind, self.predictor, self.day, self.cr_reported)

    @property
    def observable(self) -> str:
        return getattr(self.predictor, "observable", "")


def _kind(rec, endpoint: SummaryEndpoint, design: StudyDesign) -> tuple[str, str]:
    """(kind, reason if it cannot be predicted) of a row."""
    p, statistic, no_day = endpoint.predictor, rec["statistic"], math.isnan(rec["day"])
    if isinstance(p, NotModelled):
        return "none", p.reason
    if isinstance(p, MeanOf):
        return "mean", ""
    if isinstance(p, ToleratedDose):
        return ("tolerated", "") if design.rules is not None else ("none", NO_RULES)
    if isinstance(p, ResponseEvent):
        return ("best" if no_day or p.category.startswith("marker") else "at_day"), ""
    if isinstance(p, (FractionBelow, HazardEvent)):
        if statistic == "per_course":
            return (
                ("per_course", "")
                if design.n_courses >= 1
                else ("none", "not predicted: the design counts no courses (n_courses = 0)")
            )
        return "incidence", ""
    return "none", "not represented by the model"


def _status(kind: str, endpoint: SummaryEndpoint, reason: str) -> tuple[bool, str]:
    """(fitted, reason) of a predictable row."""
    if kind == "none":
        return False, reason
    if kind == "tolerated":
        return False, NOT_FITTED_TOLERATED
    if kind in endpoint.not_fitted:
        return False, endpoint.not_fitted[kind]
    return True, endpoint.caveat.get(kind, "")


def _cr_reported(table: pd.DataFrame, rec, vocabulary) -> bool:
    same_time = (table["study"] == rec["study"]) & (
        table["day"].isna() if math.isnan(rec["day"]) else (table["day"] == rec["day"])
    )
    is_cr = table["endpoint"].map(lambda e: vocabulary[e].predictor == ResponseEvent("cr"))
    return bool((is_cr & same_time).any())


def _weights(rec, table: pd.DataFrame, cv, design: StudyDesign, n_v: float, r: float) -> dict:
    """The likelihood of a row: Gaussian on a mean or (beta-)binomial on a fraction; ``n_v``
    virtual patients (NaN: no Monte Carlo term), ``r`` the intra-patient course correlation."""
    ep = rec["endpoint"]
    mc = math.isfinite(n_v)
    if rec["statistic"] == "mean":
        n, assumed = rec["n"], pd.isna(rec["n"])
        if assumed:
            same = table[(table["study"] == rec["study"]) & (table["endpoint"] == ep) & table["n"].notna()]
            others = table[(table["study"] == rec["study"]) & table["n"].notna()]
            n = same["n"].min() if len(same) else (others["n"].max() if len(others) else 1)
        if ep not in cv:
            raise ValueError(f"no between-patient CV for {ep}; pass cv={{{ep!r}: ...}}")
        return dict(
            likelihood="gaussian",
            se=cv[ep] * float(rec["value"]) / math.sqrt(float(n)),
            se_mc=abs(cv[ep] * float(rec["value"])) / math.sqrt(n_v) if mc else 0.0,
            n_used=float(n),
            n_assumed=bool(assumed),
        )
    N = rec["denominator"] if not pd.isna(rec["denominator"]) else rec["n"]
    assumed = pd.isna(N) and design.assumed_n is not None
    if assumed:
        N = float(design.assumed_n)
    if pd.isna(N):
        return dict(fitted=False, reason="not fitted: neither denominator nor n is given")
    k = rec["numerator"] if not pd.isna(rec["numerator"]) else round(float(rec["value"]) * float(N))
    rho, rho_mc = 0.0, (1.0 / n_v if mc else 0.0)
    if rec["statistic"] == "per_course":
        m = float(N) / float(rec["n"]) if not pd.isna(rec["n"]) else float(design.n_courses)
        m = min(max(m, 1.0), float(N))
        rho = (m - 1.0) * r / (float(N) - 1.0) if N > 1 else 0.0
        m_v = max(design.n_courses, 1)
        rho_mc = (1.0 + (m_v - 1) * r) / (n_v * m_v) if mc else 0.0
    return dict(
        likelihood="binomial",
        k=float(k),
        N=float(N),
        n_used=float(N),
        n_assumed=bool(assumed),
        rho=rho,
        rho_mc=rho_mc,
        n_virtual=n_v,
    )


def build_row_models(
    table: pd.DataFrame,
    designs: dict[str, StudyDesign],
    vocabulary,
    *,
    cv,
    anchored: frozenset = frozenset(),
    n_virtual: int | Mapping[str, int] | None = None,
    course_correlation: float = COURSE_CORRELATION,
) -> list[RowModel]:
    """Observation model, fit status and likelihood of every row.  ``anchored``: row indices of
    baselines the cohort is anchored to (reported, not fitted).  ``n_virtual``: the virtual
    patients of each study's cohort (an int, or one per study; ``None``: no Monte Carlo term);
    ``course_correlation``: the intra-patient correlation of per-course events."""
    if not 0.0 <= course_correlation < 1.0:
        raise ValueError(f"course_correlation must lie in [0, 1), got {course_correlation!r}")
    out: list[RowModel] = []
    for i, rec in enumerate(table.to_dict("records")):
        design, endpoint = designs[rec["study"]], vocabulary[rec["endpoint"]]
        n_v = n_virtual.get(rec["study"]) if isinstance(n_virtual, Mapping) else n_virtual
        n_v = math.nan if n_v is None else float(n_v)
        kind, reason = _kind(rec, endpoint, design)
        day = -1 if math.isnan(rec["day"]) else int(round(rec["day"]))
        if kind == "incidence" and day < 0:
            day = design.n_days
        if day > design.n_days:
            kind, reason = "none", f"not predicted: day {day} is beyond the design's horizon ({design.n_days} days)"
        fitted, reason = _status(kind, endpoint, reason)
        if kind == "incidence" and math.isnan(rec["day"]) and fitted and not reason:
            reason = NO_DAY.format(days=design.n_days)
        if i in anchored:
            fitted, reason = False, BASELINE
        if kind == "mean" and day > 0 and rec["value"] <= 0:
            fitted, reason = False, "not fitted: a mean of 0 has no relative standard error"
        kw = dict(
            index=i,
            row=int(rec["row"]),
            study=rec["study"],
            endpoint=rec["endpoint"],
            statistic=rec["statistic"],
            kind=kind,
            predictor=endpoint.predictor,
            day=day,
            fitted=fitted,
            reason=reason,
            observed=float(rec["value"]),
            cr_reported=_cr_reported(table, rec, vocabulary),
        )
        weights = _weights(rec, table, cv, design, n_v, course_correlation)
        out.append(RowModel(**{**kw, **weights}))
    return _group_multinomials(out)


def _group_multinomials(rows: list[RowModel]) -> list[RowModel]:
    """Response-category rows of one assessment whose counts add up to N -> one multinomial."""
    by_key: dict = {}
    for r in rows:
        category = getattr(r.predictor, "category", None)
        if r.fitted and category in CATEGORY_EVENTS and r.kind in ("at_day", "best"):
            by_key.setdefault((r.study, r.day), []).append(r)
    out = list(rows)
    for g, members in enumerate(by_key.values()):
        Ns = {m.N for m in members}
        if len(members) < 2 or len(Ns) != 1 or sum(m.k for m in members) != next(iter(Ns)):
            continue
        for m in members:
            out[m.index] = replace(m, likelihood="multinomial", group=g)
    return out
