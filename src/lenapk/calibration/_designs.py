"""How a study is simulated: regimen, population, horizon, lab visits, courses, dose rules."""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from .._core import AbstractDoseRules, AbstractModel, DosePlan, Regimen, plan_for
from .._core._plan import broadcast_plan, plan_rows, stack_plans
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
    simplifications, for the report.

    ``arms``: a study that mixes several regimens, as ``((regimen, weight), ...)`` (weight: the
    arm's number of patients, or any positive share).  The study's virtual cohort is split across
    the arms in proportion to the weights (:meth:`arm_sizes`: largest remainder, at least one
    patient per arm; patients in arm order) and each patient gets their arm's planned doses;
    ``regimen`` must then be the first arm's (the primary one), and every arm must share the
    design's ``cycle_days``.  Dose rules, when given, act on each patient's own planned doses.

    ``assumed_n``: the patients behind a proportion row of the study that gives neither ``n`` nor
    a denominator (an assumption the study's note states); ``None``: such rows are not fitted."""

    study: str
    regimen: Regimen
    setting: str
    n_days: int
    visits: tuple[int, ...]
    n_courses: int
    rules: AbstractDoseRules | None = None
    cycle_days: int = 28
    note: str = ""
    arms: tuple[tuple[Regimen, float], ...] = ()
    assumed_n: int | None = None

    @property
    def schedule(self) -> Schedule:
        return Schedule(self.visits, self.n_courses, self.cycle_days)

    @property
    def regimens(self) -> tuple[Regimen, ...]:
        """The regimen of each arm (``(regimen,)`` for a one-arm study)."""
        return tuple(r for r, _ in self.arms) if self.arms else (self.regimen,)

    def arm_sizes(self, n: int) -> tuple[int, ...]:
        """Patients of each arm in a cohort of ``n``: ``n`` split in proportion to the weights,
        rounded by largest remainder (ties to the earlier arm), every arm at least one patient."""
        if not self.arms:
            return (int(n),)
        k = len(self.arms)
        if not (isinstance(n, (int, np.integer)) and n >= k):
            raise ValueError(
                f"design {self.study}: a cohort of {n!r} patients cannot cover its {k} arms (at least one patient each)"
            )
        w = np.array([wt for _, wt in self.arms], dtype=float)
        quota = n * w / w.sum()
        sizes = np.floor(quota).astype(int)
        order = sorted(range(k), key=lambda i: (-(quota[i] - sizes[i]), i))
        for i in order[: n - int(sizes.sum())]:
            sizes[i] += 1
        for i in range(k):  # an arm rounded to nobody takes a patient from the largest arm
            if sizes[i] == 0:
                sizes[int(np.argmax(sizes))] -= 1
                sizes[i] = 1
        return tuple(int(x) for x in sizes)

    def arm_index(self, n: int) -> np.ndarray:
        """The arm of each of ``n`` patients (``(n,)`` ints; arms in order, contiguous)."""
        return np.repeat(np.arange(len(self.regimens)), self.arm_sizes(n))

    def plan(self, model: AbstractModel, n: int) -> DosePlan:
        """The planned doses of a cohort of ``n`` patients over the horizon, compiled for
        ``model``: batch axis ``(n,)``, each patient with their arm's regimen."""
        if not self.arms:
            return broadcast_plan(plan_for(model, self.regimen, self.n_days), (int(n),))
        plans = [plan_for(model, r, self.n_days) for r in self.regimens]
        return plan_rows(stack_plans(plans)[0], jnp.asarray(self.arm_index(n)))

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
        self._check_arms()
        if self.n_courses * self.cycle_days > self.n_days:
            raise ValueError(
                f"design {self.study}: n_courses x cycle_days ({self.n_courses} x {self.cycle_days}) "
                f"must fit in the horizon of {self.n_days} days"
            )

    def _check_arms(self) -> None:
        if not isinstance(self.arms, (tuple, list)):
            raise ValueError(
                f"design {self.study}: arms must be a sequence of (regimen, weight) pairs, "
                f"got {type(self.arms).__name__}"
            )
        arms = []
        for i, arm in enumerate(self.arms):
            if not (isinstance(arm, (tuple, list)) and len(arm) == 2):
                raise ValueError(f"design {self.study}: arms[{i}] must be a (regimen, weight) pair, got {arm!r}")
            reg, wt = arm
            if not isinstance(reg, Regimen):
                raise ValueError(f"design {self.study}: arms[{i}] regimen must be a lenapk.Regimen, got {reg!r}")
            if (
                isinstance(wt, bool)
                or not isinstance(wt, (int, float, np.integer, np.floating))
                or not (np.isfinite(wt) and wt > 0)
            ):
                raise ValueError(
                    f"design {self.study}: arms[{i}] ({reg.name}) weight must be a finite number > 0 "
                    f"(its patients), got {wt!r}"
                )
            if reg.cycle_days != self.cycle_days:
                raise ValueError(
                    f"design {self.study}: every arm must have the design's cycle_days ({self.cycle_days}); "
                    f"arms[{i}] ({reg.name}) has {reg.cycle_days}"
                )
            arms.append((reg, float(wt)))
        if arms and not _same_regimen(arms[0][0], self.regimen):
            raise ValueError(
                f"design {self.study}: regimen ({self.regimen.name}) must be the first arm's ({arms[0][0].name})"
            )
        object.__setattr__(self, "arms", tuple(arms))


def _same_regimen(a: Regimen, b: Regimen) -> bool:
    if a is b:
        return True
    return (
        a.name == b.name
        and a.n_days == b.n_days
        and a.time_h == b.time_h
        and a.compartment == b.compartment
        and a.duration_h == b.duration_h
        and np.array_equal(np.asarray(a.amount_mg), np.asarray(b.amount_mg))
    )
