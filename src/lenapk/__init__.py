"""lenapk: longitudinal pharmacometric ODE models on JAX, with lenalidomide in CLL as flagship.

Data flow: dose events (:class:`Regimen`) -> exposure (closed-form PK) -> model (ODEs) -> solve
(diffrax, segments between doses, dose rules at lab visits) -> population and cohort ->
endpoints -> calibration -> schedules -> report.

lenapk turns on JAX's float64 mode when imported: the pharmacometric checks need it.
"""

import jax

jax.config.update("jax_enable_x64", True)

from ._core import (  # noqa: E402
    AbstractDoseRules,
    AbstractModel,
    Bernoulli,
    EventTableError,
    LogNormal,
    NoRules,
    ObservableSpec,
    OdeDosing,
    OneCompartment,
    ParameterSet,
    ParameterSpec,
    PKConstants,
    Regimen,
    SolverError,
    SolverSettings,
    Trajectory,
    TwoCompartment,
    parameter_table,
    read_event_table,
    resolve_model,
    set_default_model,
    simulate,
    solve,
    write_event_table,
)
from .cohorts import cohort, cohort_dask, read_cohort, set_host_device_count  # noqa: E402
from .endpoints import trial_summary  # noqa: E402
from .models import LenalidomideCLL, label_rule  # noqa: E402
from .population import VirtualPopulation, virtual_population  # noqa: E402
from .rules import DoseModificationRules, LabVisits  # noqa: E402

set_default_model(LenalidomideCLL())


def default_model() -> AbstractModel:
    """The model used when a function is given none (the lenalidomide-CLL flagship unless
    :func:`set_default_model` chose another)."""
    return resolve_model(None)


__version__ = "0.2.0"
