"""Each observation row's observation model: what predicts it, whether it is fitted, its likelihood.

Likelihood (negative log-likelihood, constants included):

- **means**: Gaussian on the mean with ``SE = CV * observed / sqrt(n)``.  Dispersion is rarely
  reported, so the between-patient CV is an assumption (``CalibrationSpec.cv``); ``n`` is the
  row's, or when missing the smallest ``n`` reported for that study and endpoint (stated in the
  table as ``n_assumed``).
- **proportions** (any statistic but ``mean``): binomial with ``k = numerator`` and ``N =
  denominator`` (or ``n``); with only a fraction and ``n``, ``k = round(value * n)``.  Per-course
  rates count courses, as reported; courses of one patient are correlated, so this binomial
  over-states their information (no overdispersion is modelled).
- **response categories** of one assessment (CR/PR/SD/PD rows of one study and day, all fitted,
  whose counts add up to the common N) form one **multinomial** instead of separate binomials,
  which would count the same patients twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pandas as pd

from ._designs import StudyDesign
from ._vocabulary import (
    FractionBelow,
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
NO_DAY = "not predicted: no day is given; the model predicts an incidence by a stated day"
BASELINE = "baseline: the virtual cohort is anchored to it (anchor_baselines=True), not fitted"


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
    se: float = math.nan
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
    if isinstance(p, FractionBelow):
        if statistic == "per_course":
            return (
                ("per_course", "")
                if design.n_courses >= 1
                else ("none", "not predicted: the design counts no courses (n_courses = 0)")
            )
        return ("none", NO_DAY) if no_day else ("incidence", "")
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


def _weights(rec, table: pd.DataFrame, cv) -> dict:
    """The likelihood of a row: Gaussian on a mean or binomial on a fraction."""
    ep = rec["endpoint"]
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
            n_used=float(n),
            n_assumed=bool(assumed),
        )
    N = rec["denominator"] if not pd.isna(rec["denominator"]) else rec["n"]
    if pd.isna(N):
        return dict(fitted=False, reason="not fitted: neither denominator nor n is given")
    k = rec["numerator"] if not pd.isna(rec["numerator"]) else round(float(rec["value"]) * float(N))
    return dict(likelihood="binomial", k=float(k), N=float(N), n_used=float(N))


def build_row_models(
    table: pd.DataFrame, designs: dict[str, StudyDesign], vocabulary, *, cv, anchored: frozenset = frozenset()
) -> list[RowModel]:
    """Observation model, fit status and likelihood of every row.  ``anchored``: row indices of
    baselines the cohort is anchored to (reported, not fitted)."""
    out: list[RowModel] = []
    for i, rec in enumerate(table.to_dict("records")):
        design, endpoint = designs[rec["study"]], vocabulary[rec["endpoint"]]
        kind, reason = _kind(rec, endpoint, design)
        day = -1 if math.isnan(rec["day"]) else int(round(rec["day"]))
        if day > design.n_days:
            kind, reason = "none", f"not predicted: day {day} is beyond the design's horizon ({design.n_days} days)"
        fitted, reason = _status(kind, endpoint, reason)
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
        out.append(RowModel(**{**kw, **_weights(rec, table, cv)}))
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
