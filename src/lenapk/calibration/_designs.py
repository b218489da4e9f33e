"""How a study is simulated: regimen, population, horizon, lab visits, courses, dose rules."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._core import AbstractDoseRules, Regimen
from ..rules import LabVisits


def standard_visits(n_days: int, cycle_days: int = 28) -> tuple[int, ...]:
    """Assessment days of a study: the standard lab schedule (:meth:`LabVisits.standard`: weekly
    in cycles 1-2, then every 14 days) and the last day (pre-dose days)."""
    return tuple(int(d) for d in LabVisits.standard(cycle_days=cycle_days).with_last_day(n_days))


@dataclass(frozen=True)
class Schedule:
    """The hashable part of a design that endpoints read: lab visits (pre-dose days) and the
    courses counted by per-course rates."""

    visits: tuple[int, ...]
    n_courses: int
    cycle_days: int = 28


@dataclass(frozen=True)
class StudyDesign:
    """How a study is simulated.

    ``regimen``: the planned doses; ``setting``: the population its patients are drawn from (one
    of the model's ``populations``); ``n_days``: horizon; ``visits``: lab visit days (pre-dose,
    from day 0), read by every visit-based endpoint; ``n_courses``: courses counted by per-course
    rates; ``rules``: dose modification (``None``: every planned dose given); ``note``: the
    simplifications, for the report."""

    study: str
    regimen: Regimen
    setting: str
    n_days: int
    visits: tuple[int, ...]
    n_courses: int
    rules: AbstractDoseRules | None = None
    cycle_days: int = 28
    note: str = ""

    @property
    def schedule(self) -> Schedule:
        return Schedule(self.visits, self.n_courses, self.cycle_days)

    def __post_init__(self):
        if not (isinstance(self.n_days, int) and self.n_days >= 1):
            raise ValueError(f"design {self.study}: n_days must be a whole number >= 1, got {self.n_days!r}")
        v = np.asarray(self.visits)
        if v.size == 0 or v[0] != 0 or np.any(np.diff(v) <= 0) or v[-1] > self.n_days:
            raise ValueError(f"design {self.study}: visits must start at day 0, increase and end by day {self.n_days}")
        if self.regimen.cycle_days != self.cycle_days:
            raise ValueError(
                f"design {self.study}: cycle_days ({self.cycle_days}) must be the regimen's ({self.regimen.cycle_days})"
            )
        if self.n_courses * self.cycle_days > self.n_days:
            raise ValueError(
                f"design {self.study}: n_courses x cycle_days ({self.n_courses} x {self.cycle_days}) "
                f"must fit in the horizon of {self.n_days} days"
            )
