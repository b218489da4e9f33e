"""Population estimation on individual data: NONMEM-style FO, FOCE, FOCE-I and Laplace.

Data flow: a NONMEM data set (:func:`read_nonmem`) -> padded per-subject arrays
(:class:`Subjects`) -> a :class:`PopulationModel` (closed-form PK structures in
:data:`PK_STRUCTURES`, ODE models (:class:`OdeStructure`; :func:`model_structure` adapts a model
on lenapk's engine interface), or any prediction function; :func:`builtin_model` and
:func:`load_model` build one by name, TOML or Python file) -> :func:`estimate` (EBEs by
batched BFGS, the population objective by automatic differentiation, optimistix's BFGS outside)
-> the covariance step, diagnostics (:func:`observation_table`, :func:`shrinkage`) and the VPC
(:func:`vpc`).  Objective values are NONMEM's: -2 log-likelihood without ``n log(2 pi)``.
"""

from ._builtin import builtin_model, load_model
from ._closed_form import PK_STRUCTURES
from ._covariance import CovarianceStep, covariance_step
from ._dataset import NonmemData, read_nonmem
from ._diagnostics import observation_table, shrinkage
from ._error import OutputErrors, ResidualError
from ._estimate import EstimationError, EstimationResult, estimate
from ._model import PopulationModel, PopulationParameters, Theta
from ._objective import METHODS, subject_objectives
from ._ode import OdeStructure, model_structure
from ._subjects import Subjects
from ._vpc import simulate_observations, vpc

__all__ = [
    "METHODS",
    "PK_STRUCTURES",
    "CovarianceStep",
    "EstimationError",
    "EstimationResult",
    "NonmemData",
    "OdeStructure",
    "PopulationModel",
    "PopulationParameters",
    "OutputErrors",
    "ResidualError",
    "Subjects",
    "Theta",
    "builtin_model",
    "covariance_step",
    "estimate",
    "load_model",
    "model_structure",
    "observation_table",
    "read_nonmem",
    "shrinkage",
    "simulate_observations",
    "subject_objectives",
    "vpc",
]
