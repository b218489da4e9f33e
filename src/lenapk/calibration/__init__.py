"""Calibration: fit a model's typical parameters to summary data (means, rates, response
proportions) by gradient optimisation, with standard errors and every observed row beside its
prediction.  A model declares its summary vocabulary and defaults in a :class:`CalibrationSpec`.
"""

from ._designs import Schedule, StudyDesign, standard_visits
from ._fit import fit, predict_observations
from ._intervals import PredictionIntervals, Span, observed_inside, prediction_intervals, prediction_intervals_at
from ._likelihood import Likelihood
from ._objective import DEFAULT_TEMPERATURE, FIT_SETTINGS, Objective
from ._observations import (
    DatasetError,
    Observations,
    read_observations,
    validate_dose_level_table,
    validate_observation_table,
)
from ._optimise import DEFAULT_DOSE_TOL, default_optimizer
from ._result import FitResult
from ._uncertainty import covariance, hessian_fd, temperature_check
from ._vocabulary import (
    CalibrationSpec,
    FractionBelow,
    HazardEvent,
    MeanOf,
    NotModelled,
    Prior,
    ResponseEvent,
    SummaryEndpoint,
    ToleratedDose,
    calibration_of,
)

__all__ = [
    "CalibrationSpec",
    "DEFAULT_DOSE_TOL",
    "DEFAULT_TEMPERATURE",
    "DatasetError",
    "FIT_SETTINGS",
    "FitResult",
    "FractionBelow",
    "HazardEvent",
    "Likelihood",
    "MeanOf",
    "NotModelled",
    "Objective",
    "Observations",
    "PredictionIntervals",
    "Prior",
    "ResponseEvent",
    "Schedule",
    "Span",
    "StudyDesign",
    "SummaryEndpoint",
    "ToleratedDose",
    "calibration_of",
    "covariance",
    "default_optimizer",
    "fit",
    "hessian_fd",
    "observed_inside",
    "predict_observations",
    "prediction_intervals",
    "prediction_intervals_at",
    "read_observations",
    "standard_visits",
    "temperature_check",
    "validate_dose_level_table",
    "validate_observation_table",
]
