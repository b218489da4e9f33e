"""The flagship model: lenalidomide in chronic lymphocytic leukaemia (CLL), with its bundled data,
endpoints, dose rules, calibration and report."""

from ._calibration import CALIBRATION, default_designs, load_observations
from ._data import load_regimens
from ._endpoints import ANC, DOSE_LEVELS, ENDPOINTS, PLATELETS, RESPONSE, label_rule, trial_rule
from ._model import LenalidomideCLL
from ._report import build_report, standard_schedules

__all__ = [
    "ANC",
    "CALIBRATION",
    "DOSE_LEVELS",
    "ENDPOINTS",
    "LenalidomideCLL",
    "PLATELETS",
    "RESPONSE",
    "build_report",
    "default_designs",
    "label_rule",
    "load_observations",
    "load_regimens",
    "standard_schedules",
    "trial_rule",
]
