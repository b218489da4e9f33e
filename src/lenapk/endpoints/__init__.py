"""Endpoints: toxicity grades, response criteria, values at cycles, events with a cumulative
hazard, smooth relaxations and confidence intervals, each defined once and configured by the model as data."""

from ._grades import GradeScale
from ._hazard import HazardEventSpec, event_probability
from ._intervals import RATE_INTERVALS, clopper_pearson_interval, mean_interval, wilson_interval
from ._response import CATEGORIES, ResponseCriteria
from ._smooth import (
    VISIT_SHARPNESS,
    any_below,
    below,
    indicator,
    margin_below,
    noisy_any_below,
    noisy_none_below,
    safe_log,
    smooth_max,
)
from ._summary import trial_summary
from ._table import RESPONSE_DTYPE, Assessment, EndpointSet, ValueAtCycles, dosing_columns, endpoints_of, patient_table

__all__ = [
    "Assessment",
    "CATEGORIES",
    "EndpointSet",
    "GradeScale",
    "HazardEventSpec",
    "RATE_INTERVALS",
    "RESPONSE_DTYPE",
    "ResponseCriteria",
    "VISIT_SHARPNESS",
    "ValueAtCycles",
    "any_below",
    "below",
    "clopper_pearson_interval",
    "dosing_columns",
    "endpoints_of",
    "event_probability",
    "indicator",
    "margin_below",
    "mean_interval",
    "patient_table",
    "safe_log",
    "noisy_any_below",
    "noisy_none_below",
    "smooth_max",
    "trial_summary",
    "wilson_interval",
]
