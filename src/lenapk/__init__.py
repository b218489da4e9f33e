"""lenapk: longitudinal pharmacometric ODE models on JAX, with lenalidomide in CLL as flagship.

Data flow, one subpackage per step: dose events (``_core``: :class:`Regimen`, NONMEM event
tables) -> exposure (closed-form PK) -> model (:class:`AbstractModel`) -> solve (diffrax, segments
between dose events) with dose rules (:mod:`lenapk.rules`) -> virtual patients
(:mod:`lenapk.population`) and cohorts (:mod:`lenapk.cohorts`) -> endpoints
(:mod:`lenapk.endpoints`) -> calibration (:mod:`lenapk.calibration`) -> schedules
(:mod:`lenapk.schedules`) -> report (:mod:`lenapk.report`).  Population estimation on individual
data (NONMEM data sets, FO/FOCE/FOCE-I/Laplace) is :mod:`lenapk.estimation`.  The generic layers name no model;
the flagship lives in :mod:`lenapk.models.cll` and is the default model.

lenapk turns on JAX's float64 mode when imported: the pharmacometric checks need it.  Imported
before JAX has run anything, it also gives JAX one CPU device per core with lenapk's CPU
code-generation flags (:func:`set_host_device_count`), so cohorts use every core with no setup;
a device count the user put in ``XLA_FLAGS`` is kept, and ``LENAPK_CPU_SETUP=0`` turns it off.
"""

import jax

from .cohorts._platform import setup_at_import

jax.config.update("jax_enable_x64", True)
setup_at_import()

from . import estimation as estimation  # noqa: E402  (lenapk.estimation after import lenapk)
from ._core import (  # noqa: E402
    AbstractModel,
    Bernoulli,
    EventTableError,
    LogNormal,
    ObservableSpec,
    OdeDosing,
    OneCompartment,
    ParameterSet,
    ParameterSpec,
    PKConstants,
    Regimen,
    RegimenSpecError,
    SegmentClock,
    SolverError,
    SolverSettings,
    Trajectory,
    TwoCompartment,
    parameter_table,
    parse_regimen,
    read_event_table,
    resolve_model,
    set_default_model,
    simulate,
    solve,
    write_event_table,
)
from ._version import __version__ as __version__  # noqa: E402
from .calibration import DatasetError, FitResult, Objective, Observations, fit, read_observations  # noqa: E402
from .cohorts import cohort, cohort_dask, read_cohort, set_host_device_count  # noqa: E402
from .endpoints import trial_summary  # noqa: E402
from .models.cll import LenalidomideCLL, label_rule, load_observations, load_regimens  # noqa: E402
from .population import VirtualPopulation, virtual_population  # noqa: E402
from .rules import AbstractDoseRules, DoseModificationRules, LabVisits, NoRules  # noqa: E402
from .schedules import ScheduleOptimum, compare, optimise_schedule, plot_comparison, plot_tradeoff  # noqa: E402

set_default_model(LenalidomideCLL())


def default_model() -> AbstractModel:
    """The model used when a function is given none: the lenalidomide-CLL flagship, unless
    :func:`set_default_model` chose another."""
    return resolve_model(None)


__all__ = [
    "AbstractDoseRules",
    "AbstractModel",
    "Bernoulli",
    "DatasetError",
    "DoseModificationRules",
    "EventTableError",
    "FitResult",
    "LabVisits",
    "LenalidomideCLL",
    "LogNormal",
    "NoRules",
    "Objective",
    "ObservableSpec",
    "Observations",
    "OdeDosing",
    "OneCompartment",
    "PKConstants",
    "ParameterSet",
    "ParameterSpec",
    "Regimen",
    "RegimenSpecError",
    "ScheduleOptimum",
    "SegmentClock",
    "SolverError",
    "SolverSettings",
    "Trajectory",
    "TwoCompartment",
    "VirtualPopulation",
    "cohort",
    "cohort_dask",
    "compare",
    "default_model",
    "fit",
    "label_rule",
    "load_observations",
    "load_regimens",
    "optimise_schedule",
    "parameter_table",
    "parse_regimen",
    "plot_comparison",
    "plot_tradeoff",
    "read_cohort",
    "read_event_table",
    "read_observations",
    "set_default_model",
    "set_host_device_count",
    "simulate",
    "solve",
    "trial_summary",
    "virtual_population",
    "write_event_table",
]
