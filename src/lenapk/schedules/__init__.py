"""Dose schedules: comparison on common random numbers, figures, and optimisation under a limit
on the model's limiting toxicity."""

from ._compare import COMPARE_ID_COLUMNS, compare, resolve_regimens, resolve_rules
from ._deliverable import DEFAULT_DAYS_ON, deliverable_regimen, describe_doses
from ._optimise import SCHEDULE_FIELDS, ScheduleOptimum, optimise_schedule
from ._plots import plot_comparison, plot_tradeoff
from ._relax import Relax, relaxed_doses

__all__ = [
    "COMPARE_ID_COLUMNS",
    "DEFAULT_DAYS_ON",
    "Relax",
    "SCHEDULE_FIELDS",
    "ScheduleOptimum",
    "compare",
    "deliverable_regimen",
    "describe_doses",
    "optimise_schedule",
    "plot_comparison",
    "plot_tradeoff",
    "relaxed_doses",
    "resolve_regimens",
    "resolve_rules",
]
