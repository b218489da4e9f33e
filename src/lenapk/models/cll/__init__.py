"""The flagship model: lenalidomide in chronic lymphocytic leukaemia (CLL)."""

from ._calibration import CALIBRATION, default_designs, load_observations
from ._data import load_regimens
from ._endpoints import ANC, ENDPOINTS, PLATELETS, RESPONSE, label_rule, trial_rule
from ._model import LenalidomideCLL

__all__ = ["ANC", "CALIBRATION", "ENDPOINTS", "LenalidomideCLL", "PLATELETS", "RESPONSE", "default_designs",
           "label_rule", "load_observations", "load_regimens", "trial_rule"]
