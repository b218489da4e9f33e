"""The flagship model: lenalidomide in chronic lymphocytic leukaemia (CLL)."""

from ._endpoints import ANC, ENDPOINTS, PLATELETS, RESPONSE, label_rule, trial_rule
from ._model import LenalidomideCLL

__all__ = ["ANC", "ENDPOINTS", "LenalidomideCLL", "PLATELETS", "RESPONSE", "label_rule", "trial_rule"]
