"""The vocabulary of summary data: what each reported endpoint is and how a model predicts it.

A model declares a mapping endpoint name -> :class:`SummaryEndpoint` (in its
:class:`CalibrationSpec`); the observation tables are validated against it and every row is
predicted by the endpoint's *predictor*:

- :class:`MeanOf`: the cohort mean of an observable's pre-dose value at the row's day;
- :class:`FractionBelow`: patients (``incidence`` by a day) or courses (``per_course``) with a
  lab value below ``upper`` at a visit (and, with ``lower``, never below ``lower``: "worst grade
  1-2"); with ``grade_limits``, only values of a grade worse than the patient's baseline count
  (treatment-emergent); with ``noise_sd``, the values are measured with lab noise;
- :class:`ResponseEvent`: a response category of the model's response criteria, at the row's
  day or as best response over the study (``at_day`` / ``best``);
- :class:`ToleratedDose`: patients given at least ``mg`` on ``days`` days (under dose rules);
- :class:`HazardEvent`: an event with a cumulative hazard observable: patients with an event by
  the row's day (``incidence``) or courses with an event (``per_course``);
- :class:`NotModelled`: shown, never predicted, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

STATISTICS = ("mean", "proportion", "incidence", "per_course")
FRACTION_UNIT = "fraction"
RATES = ("incidence", "per_course")


@dataclass(frozen=True)
class MeanOf:
    observable: str


@dataclass(frozen=True)
class FractionBelow:
    """A lab value below ``upper`` at a visit (and, with ``lower``, never below ``lower``).

    ``grade_limits``: the observable's grade limits (decreasing, the lower limits of grades 1,
    2, ... of a :class:`~lenapk.endpoints.GradeScale`).  Given them, the event is
    *treatment-emergent*, as trials count adverse events: a value counts only when its grade is
    worse than the patient's baseline (day-0) grade.  With baseline ``b``, the effective upper
    threshold is ``min(upper, max{l in limits : l <= b})`` (floored at ``lower``); a patient
    already at the worst grade has no event.

    ``noise_sd``: SD on the log scale of a *measured* value around the model's value (analytical
    error plus the day-to-day biological variation the model does not represent), independent
    between visits.  With ``noise_sd > 0`` a row predicts the expected count of noisy
    measurements (:func:`lenapk.endpoints.noisy_none_below`); with 0, the count of the
    model's values (smooth at a temperature > 0)."""

    observable: str
    upper: float
    lower: float | None = None
    grade_limits: tuple[float, ...] = ()
    noise_sd: float = 0.0

    def __post_init__(self):
        lims = self.grade_limits
        if lims and (any(b >= a for a, b in zip(lims, lims[1:])) or min(lims) <= 0):
            raise ValueError(f"FractionBelow.grade_limits must be positive and decreasing, got {lims!r}")
        if not (isinstance(self.noise_sd, (int, float)) and 0 <= self.noise_sd < float("inf")):
            raise ValueError(
                f"FractionBelow.noise_sd must be a finite number >= 0 (log-scale SD), got {self.noise_sd!r}"
            )


@dataclass(frozen=True)
class ResponseEvent:
    """``category``: ``overall`` (PR or better), ``cr``, ``pr`` (PR without CR unless the study
    reports no CR at that time), ``pd``, ``sd``, ``marker_halved`` or ``marker_normal`` (best
    response only; :meth:`lenapk.endpoints.ResponseCriteria.best_margins`)."""

    category: str


@dataclass(frozen=True)
class ToleratedDose:
    mg: float
    days: int


@dataclass(frozen=True)
class HazardEvent:
    """An event whose cumulative hazard is the model's ``observable`` H(t) (dimensionless, 0 at
    day 0, non-decreasing): a patient has an event by day ``d`` with probability
    ``1 - exp(-H(d))`` and one in course ``k`` with ``1 - exp(-(H(end_k) - H(start_k)))``.
    Smooth already (no temperature)."""

    observable: str


@dataclass(frozen=True)
class NotModelled:
    reason: str


Predictor = MeanOf | FractionBelow | ResponseEvent | ToleratedDose | HazardEvent | NotModelled


@dataclass(frozen=True)
class SummaryEndpoint:
    """One endpoint of the vocabulary: its meaning, the statistics it may carry, the unit of a
    mean (fractions are ``"fraction"``), its predictor, and per row kind (``mean``, ``at_day``,
    ``best``, ``per_course``, ``incidence``) a reason not to fit it (``not_fitted``) or a
    caveat stated beside a fitted row (``caveat``)."""

    description: str
    statistics: tuple[str, ...]
    predictor: Predictor
    unit: str = FRACTION_UNIT
    not_fitted: Mapping[str, str] = field(default_factory=dict)
    caveat: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Prior:
    """Log-normal prior: ``log theta ~ N(log median, sd^2)``."""

    median: float
    sd: float
    source: str


@dataclass(frozen=True)
class CalibrationSpec:
    """What fitting a model to summary data needs from the model (declared by the model as its
    ``calibration`` class variable; every item can be overridden in :func:`lenapk.fit`):

    - ``vocabulary``: endpoint name -> :class:`SummaryEndpoint`;
    - ``default_designs(table, model)``: a :class:`StudyDesign` per study of an observation table
      (``None``: designs must be given);
    - ``free``: the parameters fitted by default; ``bounds``: their plausible ranges (natural
      scale; others get start x [1e-3, 1e3]); ``priors``: log-normal priors by parameter;
    - ``cv``: the between-patient CV of each mean endpoint (dispersion is rarely reported);
    - ``baseline_covariates`` / ``baseline_parameters``: observable -> the covariate rescaled
      (or parameter set) so a cohort's day-0 mean equals the reported one."""

    vocabulary: Mapping[str, SummaryEndpoint]
    default_designs: Callable | None = None
    free: tuple[str, ...] = ()
    bounds: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    priors: Mapping[str, Prior] = field(default_factory=dict)
    cv: Mapping[str, float] = field(default_factory=dict)
    baseline_covariates: Mapping[str, str] = field(default_factory=dict)
    baseline_parameters: Mapping[str, str] = field(default_factory=dict)


def calibration_of(model) -> CalibrationSpec:
    """The model's :class:`CalibrationSpec` (``model.calibration``)."""
    spec = getattr(model, "calibration", None)
    if spec is None:
        raise ValueError(
            f"model {type(model).__name__} declares no calibration (a CalibrationSpec with its summary "
            "vocabulary); give one as its `calibration` class variable"
        )
    return spec
