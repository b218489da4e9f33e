"""The core engine: parameters, the model interface, PK, dose events, the solve and simulate().

Nothing here names a particular model (default compartment names follow NONMEM's ADVAN2/ADVAN4
numbering; cycles default to 28 days).  Upper layers (rules, population,
endpoints, cohort, calibration, schedules, report) build on it.
"""

from . import fastmath
from ._clock import SegmentClock
from ._covariates import Bernoulli, CovariateDistribution, LogNormal
from ._data import data_path
from ._events import EventTableError, read_event_table, write_event_table
from ._model import (
    AbstractModel,
    ObservableSpec,
    omega_matrix,
    resolve_model,
    set_default_model,
)
from ._parameters import ParameterSet, ParameterSpec, parameter_table, parameter_table_markdown
from ._pk import (
    AbstractClosedFormPK,
    AbstractPK,
    OdeDosing,
    OneCompartment,
    PKConstants,
    TwoCompartment,
    exprel,
)
from ._plan import (
    DosePlan,
    broadcast_plan,
    daily_plan,
    plan_regimen,
    plan_rows,
    stack_plans,
    with_given_doses,
)
from ._regimen import HOURS_PER_DAY, Regimen
from ._regimen_spec import RegimenSpecError, parse_regimen
from ._regimen_table import regimens_from_table
from ._rules import AbstractDoseRules, NoRules
from ._simulate import gather_outputs, output_grid, plan_for, simulate
from ._solve import (
    SolverError,
    SolverSettings,
    Trajectory,
    check_trajectory,
    failed_patients,
    solve,
    solve_checked,
    solve_days,
    solve_days_jit,
    solve_jit,
)

__all__ = [
    "AbstractClosedFormPK",
    "AbstractDoseRules",
    "AbstractModel",
    "AbstractPK",
    "Bernoulli",
    "CovariateDistribution",
    "DosePlan",
    "EventTableError",
    "HOURS_PER_DAY",
    "LogNormal",
    "NoRules",
    "ObservableSpec",
    "OdeDosing",
    "OneCompartment",
    "PKConstants",
    "ParameterSet",
    "ParameterSpec",
    "Regimen",
    "SegmentClock",
    "SolverError",
    "SolverSettings",
    "Trajectory",
    "TwoCompartment",
    "broadcast_plan",
    "check_trajectory",
    "daily_plan",
    "data_path",
    "exprel",
    "failed_patients",
    "fastmath",
    "gather_outputs",
    "omega_matrix",
    "output_grid",
    "parameter_table",
    "parameter_table_markdown",
    "plan_for",
    "plan_regimen",
    "plan_rows",
    "read_event_table",
    "regimens_from_table",
    "parse_regimen",
    "RegimenSpecError",
    "resolve_model",
    "set_default_model",
    "simulate",
    "solve",
    "solve_checked",
    "solve_days",
    "solve_days_jit",
    "solve_jit",
    "stack_plans",
    "with_given_doses",
    "write_event_table",
]
