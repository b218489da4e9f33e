"""lenapk: longitudinal pharmacometric ODE models on JAX, with lenalidomide in CLL as flagship.

Data flow: regimen -> exposure (closed-form PK) -> model (ODEs) -> solve (diffrax, scan over
days, dose rules) -> cohort -> endpoints -> fit -> report.

lenapk turns on JAX's float64 mode when imported: the pharmacometric checks need it.
"""

import jax

jax.config.update("jax_enable_x64", True)

from .cll import LenalidomideCLL  # noqa: E402
from .cohort import cohort, cohort_dask, read_cohort, set_host_device_count  # noqa: E402
from .fit import FitResult, fit  # noqa: E402
from .model import Model  # noqa: E402
from .observations import DatasetError, Observations, load_observations  # noqa: E402
from .parameters import ParameterSet, ParameterSpec, parameter_table  # noqa: E402
from .population import VirtualPopulation, virtual_population  # noqa: E402
from .regimen import Regimen, load_regimens  # noqa: E402
from .rules import DoseModificationRules, DoseRules, LabVisits, NoRules, label_rule  # noqa: E402
from .schedules import ScheduleOptimum, compare, optimise_schedule, plot_comparison, plot_tradeoff  # noqa: E402
from .simulate import simulate  # noqa: E402
from .solve import SolverError, SolverSettings, Trajectory, solve_days  # noqa: E402
from .summary import trial_summary  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "DatasetError",
    "DoseModificationRules",
    "DoseRules",
    "FitResult",
    "LabVisits",
    "LenalidomideCLL",
    "Model",
    "NoRules",
    "Observations",
    "ParameterSet",
    "ParameterSpec",
    "Regimen",
    "ScheduleOptimum",
    "SolverError",
    "SolverSettings",
    "Trajectory",
    "VirtualPopulation",
    "cohort",
    "cohort_dask",
    "compare",
    "fit",
    "label_rule",
    "load_observations",
    "load_regimens",
    "optimise_schedule",
    "parameter_table",
    "plot_comparison",
    "plot_tradeoff",
    "read_cohort",
    "set_host_device_count",
    "simulate",
    "solve_days",
    "trial_summary",
    "virtual_population",
]
