"""lenapk: longitudinal pharmacometric ODE models on JAX, with lenalidomide in CLL as flagship.

Data flow: regimen -> exposure (closed-form PK) -> model (ODEs) -> solve (diffrax, scan over
days, dose rules) -> cohort -> endpoints -> fit -> report.

lenapk turns on JAX's float64 mode when imported: the pharmacometric checks need it.
"""

import jax

jax.config.update("jax_enable_x64", True)

from .cll import LenalidomideCLL  # noqa: E402
from .model import Model  # noqa: E402
from .parameters import ParameterSet, ParameterSpec, parameter_table  # noqa: E402
from .population import VirtualPopulation, virtual_population  # noqa: E402
from .regimen import Regimen, load_regimens  # noqa: E402
from .rules import DoseModificationRules, DoseRules, LabVisits, NoRules, label_rule  # noqa: E402
from .simulate import simulate  # noqa: E402
from .solve import SolverError, SolverSettings, Trajectory, solve_days  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "DoseModificationRules",
    "DoseRules",
    "LabVisits",
    "LenalidomideCLL",
    "Model",
    "NoRules",
    "ParameterSet",
    "ParameterSpec",
    "Regimen",
    "SolverError",
    "SolverSettings",
    "Trajectory",
    "VirtualPopulation",
    "label_rule",
    "load_regimens",
    "parameter_table",
    "simulate",
    "solve_days",
    "virtual_population",
]
