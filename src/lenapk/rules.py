"""Dose decisions taken inside the simulation, day by day.

The solver (:mod:`lenapk.solve`) scans over days.  At the start of each day, before the dose,
it hands the rule object the planned dose and the patient's observables at that moment (ANC,
platelets, ...), and the rule returns the dose actually given.  Rules are pure functions of a
small state PyTree, so they compile with the rest, run under ``vmap`` and need no Python loop
per patient or per day.

:class:`DoseRules` is the interface; :class:`NoRules` gives every planned dose unchanged.
:class:`DoseModificationRules` is the declarative label-style rule set (hold / reduce / stop at
lab visits, escalation only without grade >= 3 toxicity), acting on the days of a
:class:`LabVisits` schedule; :func:`label_rule` builds the label's rule.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


class DoseRules(eqx.Module):
    """Interface: ``init(batch_shape) -> state`` and
    ``step(state, day, planned_dose, obs) -> (state, dose, record)``.

    ``obs`` maps observable names to arrays of the batch shape; ``record`` is a dict of arrays
    of the batch shape that the solver stacks over days (for example whether the day was a
    visit or a hold), returned in the trajectory's ``rule_records``.
    """

    def init(self, batch_shape):
        raise NotImplementedError

    def step(self, state, day, planned_dose, obs):
        raise NotImplementedError


class NoRules(DoseRules):
    """Every planned dose is given."""

    def init(self, batch_shape):
        return jnp.zeros(batch_shape)

    def step(self, state, day, planned_dose, obs):
        return state, planned_dose, {}


# ==================================================================== lab visits and dose modification
#
# Everything below is pure jnp on the traced day and observables (no Python branching on traced
# values), so the rules run for one patient (batch shape ()), under ``vmap`` and for a batch
# solved as one ODE (obs of shape (n,)).  Validation happens once, in Python, at construction.

_EPS_MG = 1e-9  # tolerance when matching a planned dose (mg) to a dose level


def _is_tracer(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def _as_float(x):
    """Converter for threshold fields: a float64 JAX array, or the value unchanged when it is
    not numeric (so that ``__check_init__`` can refuse it with a clear message)."""
    if _is_tracer(x):
        return x
    if isinstance(x, (bool, np.bool_)):
        return x  # refused in __check_init__: a bool is not a threshold
    try:
        return jnp.asarray(x, dtype=jnp.float64)
    except (TypeError, ValueError):
        return x


def _as_levels(x):
    """Converter for ``dose_levels``: a list or array of numbers becomes a tuple of floats (static,
    hashable); anything else is left for ``__check_init__`` to refuse."""
    if isinstance(x, (list, tuple, np.ndarray)) and not _is_tracer(x):
        try:
            return tuple(float(v) for v in np.asarray(x, dtype=float).reshape(-1))
        except (TypeError, ValueError):
            return tuple(x) if isinstance(x, list) else x
    return x


def _check_threshold(owner: str, name: str, value, unit: str) -> None:
    """A threshold must be a finite number >= 0 (scalar or one per patient)."""
    if _is_tracer(value):
        return
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(
            f"{owner}.{name} must be a finite number >= 0 ({unit}), got {value!r}"
        ) from None
    if isinstance(value, (bool, np.bool_)) or arr.dtype == object:
        raise ValueError(f"{owner}.{name} must be a finite number >= 0 ({unit}), got {value!r}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        shown = float(arr) if arr.ndim == 0 else arr.tolist()
        raise ValueError(f"{owner}.{name} must be a finite number >= 0 ({unit}), got {shown!r}")


def _whole(owner: str, name: str, value, *, minimum: int, allow_none: bool = False):
    """A whole number >= minimum (ints, or floats with integral value); returns an int."""
    if value is None and allow_none:
        return None
    ok = isinstance(value, (int, np.integer, float, np.floating)) and not isinstance(value, (bool, np.bool_))
    if ok:
        ok = math.isfinite(float(value)) and float(value) == int(value) and int(value) >= minimum
    if not ok:
        extra = " or None" if allow_none else ""
        raise ValueError(f"{owner}.{name} must be a whole number >= {minimum}{extra}, got {value!r}")
    return int(value)


class LabVisits(eqx.Module):
    """When labs are drawn: a boolean per day (``mask``), plus an optional open-ended tail.

    Day ``d`` (0-based; day 0 is the first dose) is a visit if ``mask[d]`` for ``d <
    len(mask)``, and for later days if ``tail_every > 0`` and ``(d - tail_start) % tail_every
    == 0``.  Labs at a visit are the pre-dose values of that day, and the rule acting on them
    changes that day's dose.

    Build with :meth:`schedule` (intervals ``(from_day, to_day, every_days)``), :meth:`on_days`
    (explicit days) or :meth:`standard` (weekly in the first cycles, then once per cycle).
    """

    mask: jnp.ndarray  # bool, (horizon,)
    tail_start: int = eqx.field(static=True, default=0)
    tail_every: int = eqx.field(static=True, default=0)

    def __check_init__(self):
        if _is_tracer(self.mask):
            return
        m = np.asarray(self.mask)
        if m.ndim != 1 or m.dtype != bool:
            raise ValueError(
                f"visits.mask must be a 1-D boolean array (one entry per day), got dtype {m.dtype} "
                f"and shape {m.shape}"
            )
        _whole("visits", "tail_every", self.tail_every, minimum=0)
        _whole("visits", "tail_start", self.tail_start, minimum=0)
        if not m.any() and self.tail_every == 0:
            raise ValueError("visits: the schedule has no visit day; expected at least one")

    # ---------------------------------------------------------------- constructors
    @classmethod
    def schedule(cls, intervals) -> "LabVisits":
        """Visits on ``from_day, from_day + every_days, ...`` while ``< to_day``, for each
        ``(from_day, to_day, every_days)``.  Intervals must be in order and must not overlap;
        the last may have ``to_day=None`` (visits continue for as long as the simulation)."""
        try:
            items = [tuple(iv) for iv in intervals]
        except TypeError:
            raise ValueError(
                f"visits.intervals must be a sequence of (from_day, to_day, every_days), got {intervals!r}"
            ) from None
        if not items:
            raise ValueError("visits.intervals must contain at least one (from_day, to_day, every_days)")
        horizon, tail_start, tail_every = 0, 0, 0
        rows = []
        prev_end = 0
        for i, iv in enumerate(items):
            if len(iv) != 3:
                raise ValueError(
                    f"visits.intervals[{i}] must be (from_day, to_day, every_days), got {iv!r}"
                )
            start = _whole("visits", f"intervals[{i}].from_day", iv[0], minimum=0)
            last = i == len(items) - 1
            end = _whole("visits", f"intervals[{i}].to_day", iv[1], minimum=start + 1, allow_none=last)
            every = _whole("visits", f"intervals[{i}].every_days", iv[2], minimum=1)
            if start < prev_end:
                raise ValueError(
                    f"visits.intervals[{i}].from_day must be >= the previous interval's to_day "
                    f"({prev_end}): intervals in order, not overlapping; got {start}"
                )
            if end is None:
                tail_start, tail_every = start, every
                horizon = max(horizon, start)
            else:
                rows.append((start, end, every))
                horizon = max(horizon, end)
                prev_end = end
        mask = np.zeros(horizon, dtype=bool)
        for start, end, every in rows:
            mask[start:end:every] = True
        return cls(mask=jnp.asarray(mask), tail_start=tail_start, tail_every=tail_every)

    @classmethod
    def on_days(cls, days) -> "LabVisits":
        """Visits on the given days (whole numbers >= 0; 0 is the first day of treatment)."""
        try:
            arr = np.asarray(days, dtype=float).reshape(-1)
        except (TypeError, ValueError):
            raise ValueError(f"visits.days must be whole days >= 0, got {days!r}") from None
        if arr.size == 0:
            raise ValueError("visits.days must contain at least one day, got an empty list")
        bad = ~np.isfinite(arr) | (arr < 0) | (arr != np.round(arr))
        if bad.any():
            raise ValueError(f"visits.days must be whole days >= 0, got {arr[bad][0]!r}")
        mask = np.zeros(int(arr.max()) + 1, dtype=bool)
        mask[arr.astype(int)] = True
        return cls(mask=jnp.asarray(mask))

    @classmethod
    def standard(cls, *, cycle_days: int = 28, weekly_cycles: int = 2, every_days: int | None = None) -> "LabVisits":
        """Weekly labs during the first ``weekly_cycles`` cycles (days 0, 7, 14, ...), then every
        ``every_days`` (default ``cycle_days``, i.e. on day 1 of each later cycle)."""
        cycle_days = _whole("visits", "cycle_days", cycle_days, minimum=1)
        weekly_cycles = _whole("visits", "weekly_cycles", weekly_cycles, minimum=0)
        every = cycle_days if every_days is None else _whole("visits", "every_days", every_days, minimum=1)
        end = weekly_cycles * cycle_days
        return cls.schedule(([(0, end, 7)] if end > 0 else []) + [(end, None, every)])

    # ---------------------------------------------------------------- queries
    def is_visit(self, day) -> jnp.ndarray:
        """Whether ``day`` (int, traced or not) is a visit day (bool array of day's shape)."""
        return self._is_visit(jnp.asarray(day), jnp, self.mask)

    def days(self, n_days: int) -> np.ndarray:
        """The visit days in ``[0, n_days)`` as a NumPy array (computed in NumPy)."""
        d = np.arange(int(n_days))
        return d[self._is_visit(d, np, np.asarray(self.mask))]

    def _is_visit(self, day, xp, mask):
        n = mask.shape[0]
        in_mask = (mask[xp.clip(day, 0, max(n - 1, 0))] & (day < n)) if n > 0 else False
        if self.tail_every > 0:
            in_tail = (day >= max(n, self.tail_start)) & ((day - self.tail_start) % self.tail_every == 0)
        else:
            in_tail = False
        return (day >= 0) & (in_mask | in_tail)


_DEFAULT_LEVELS = (2.5, 5.0, 10.0, 15.0, 20.0, 25.0)


class DoseModificationRules(DoseRules):
    """Hold / reduce / stop / escalate at lab visits, label style.

    At each visit (``visits``), with the pre-dose labs of that day:

    - **hold**: if ANC < ``anc_hold_below`` or platelets < ``platelet_hold_below`` the dose is
      withheld from that day on (also on later days between visits);
    - **resume**: at the first visit with ANC >= ``anc_resume_at`` and platelets >=
      ``platelet_resume_at`` dosing resumes that day, at one dose level below the level last
      given before the hold.  That lower level becomes a cap for the rest of the course: the dose
      given is ``min(planned, cap)`` (a *reduction*, counted in the record ``reductions``).  The
      reduced level is decided when the hold starts (it is shown in ``dose_cap_mg`` during the
      hold).  A hold with no dose given since the previous reduction (or since the start)
      lowers nothing;
    - **stop**: if that reduction would go below the lowest level or below ``min_dose_mg``, or
      would be reduction number ``max_reductions + 1``, treatment stops for good on the day of
      the hold (``stopped`` = 1, dose 0 from then on, ``held`` = 0);
    - **escalation** (``escalate_only_if_no_grade3``): on the first day of each cycle after the
      first, a dose increase is allowed only if no visit of the previous cycle, nor the visit of
      that day (the end-of-cycle labs), saw grade >= 3 toxicity (ANC < ``grade3_anc_below``
      or platelets < ``grade3_platelets_below``).  When an increase is refused the patient stays
      at the previous cycle's level; after a cycle without such toxicity the ceiling rises one
      level per cycle (so a deferred escalation catches up one level at a time).

    Planned doses are first capped at the nearest dose level at or below them (a planned dose
    above the top level gets the top level); a positive planned dose below the lowest level is
    given as planned (it cannot be reduced further, so a hold on it stops treatment).  Planned
    zero-dose days (the off week of a 21/28 schedule) stay zero, and the labs are still read at
    visits on them.

    Thresholds are JAX float arrays (a scalar, or one value per patient broadcasting against the
    batch), so changing them does not recompile.  Records per day (``Trajectory.rule_records``,
    extra columns of :func:`lenapk.simulate`): ``visit``, ``held``, ``stopped`` (0/1),
    ``dose_cap_mg`` (the level cap in force; 0 once stopped) and ``reductions`` (count).
    """

    dose_levels: tuple = eqx.field(static=True, default=_DEFAULT_LEVELS, converter=_as_levels)
    visits: LabVisits = eqx.field(default_factory=LabVisits.standard)
    anc_hold_below: jnp.ndarray = eqx.field(default=1.0, converter=_as_float)
    anc_resume_at: jnp.ndarray = eqx.field(default=1.0, converter=_as_float)
    platelet_hold_below: jnp.ndarray = eqx.field(default=50.0, converter=_as_float)
    platelet_resume_at: jnp.ndarray = eqx.field(default=50.0, converter=_as_float)
    min_dose_mg: float = eqx.field(static=True, default=2.5)
    max_reductions: int | None = eqx.field(static=True, default=None)
    escalate_only_if_no_grade3: bool = eqx.field(static=True, default=False)
    grade3_anc_below: jnp.ndarray = eqx.field(default=1.0, converter=_as_float)
    grade3_platelets_below: jnp.ndarray = eqx.field(default=50.0, converter=_as_float)
    cycle_days: int = eqx.field(static=True, default=28)

    def __check_init__(self):
        owner = "rules"
        # dose levels: non-empty, positive, finite, strictly increasing
        levels = self.dose_levels
        if not isinstance(levels, tuple) or len(levels) == 0:
            raise ValueError(
                f"{owner}.dose_levels must be a non-empty tuple of doses in mg, in increasing "
                f"order, got {levels!r}"
            )
        for i, x in enumerate(levels):
            if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, float, np.integer, np.floating)):
                raise ValueError(f"{owner}.dose_levels[{i}] must be a dose in mg, got {x!r}")
            if not (math.isfinite(x) and x > 0):
                raise ValueError(f"{owner}.dose_levels[{i}] must be a finite dose > 0 mg, got {x!r}")
        if any(b <= a for a, b in zip(levels, levels[1:])):
            raise ValueError(
                f"{owner}.dose_levels must be strictly increasing (mg), got {levels!r}"
            )
        if not isinstance(self.visits, LabVisits):
            raise ValueError(
                f"{owner}.visits must be a lenapk.LabVisits schedule, got {type(self.visits).__name__}"
            )
        for name, unit in (
            ("anc_hold_below", "x10^9/L"),
            ("anc_resume_at", "x10^9/L"),
            ("platelet_hold_below", "x10^9/L"),
            ("platelet_resume_at", "x10^9/L"),
            ("grade3_anc_below", "x10^9/L"),
            ("grade3_platelets_below", "x10^9/L"),
        ):
            _check_threshold(owner, name, getattr(self, name), unit)
        for hold, resume in (("anc_hold_below", "anc_resume_at"), ("platelet_hold_below", "platelet_resume_at")):
            h, r = getattr(self, hold), getattr(self, resume)
            if not (_is_tracer(h) or _is_tracer(r)) and np.any(np.asarray(r) < np.asarray(h)):
                raise ValueError(
                    f"{owner}.{resume} must be >= {hold} ({np.asarray(h).tolist()}), got "
                    f"{np.asarray(r).tolist()}"
                )
        m = self.min_dose_mg
        if isinstance(m, (bool, np.bool_)) or not isinstance(m, (int, float, np.integer, np.floating)) \
                or not math.isfinite(m) or m < 0:
            raise ValueError(f"{owner}.min_dose_mg must be a finite dose >= 0 mg, got {m!r}")
        if m > levels[-1]:
            raise ValueError(
                f"{owner}.min_dose_mg must be <= the top dose level ({levels[-1]} mg), got {m!r}"
            )
        _whole(owner, "max_reductions", self.max_reductions, minimum=0, allow_none=True)
        if not isinstance(self.escalate_only_if_no_grade3, (bool, np.bool_)):
            raise ValueError(
                f"{owner}.escalate_only_if_no_grade3 must be True or False, got "
                f"{self.escalate_only_if_no_grade3!r}"
            )
        _whole(owner, "cycle_days", self.cycle_days, minimum=1)

    # ---------------------------------------------------------------- helpers
    @property
    def _levels(self) -> jnp.ndarray:
        return jnp.asarray(self.dose_levels, dtype=jnp.float64)

    @property
    def _lowest_allowed(self) -> int:
        """Index of the lowest level a reduction may reach (>= min_dose_mg)."""
        return int(sum(1 for x in self.dose_levels if x < self.min_dose_mg - _EPS_MG))

    def level_index(self, dose_mg) -> jnp.ndarray:
        """Index of the highest level <= ``dose_mg`` (-1 if below the lowest level)."""
        d = jnp.asarray(dose_mg, dtype=jnp.float64)[..., None]
        return jnp.sum(self._levels <= d + _EPS_MG, axis=-1) - 1

    # ---------------------------------------------------------------- DoseRules interface
    def init(self, batch_shape):
        n = len(self.dose_levels)
        ints = lambda v: jnp.full(batch_shape, v, dtype=jnp.int32)  # noqa: E731
        return {
            "held": jnp.zeros(batch_shape, dtype=bool),
            "stopped": jnp.zeros(batch_shape, dtype=bool),
            "cap": ints(n - 1),  # reduction cap (level index)
            "esc": ints(n - 1),  # escalation ceiling (level index)
            "last_given": ints(n),  # level index of the last dose given; n = none since last reduction
            "prev_allowed": ints(-2),  # level allowed on the last day with a planned dose; -2 = none yet
            "tox": jnp.zeros(batch_shape, dtype=bool),  # grade >= 3 at a visit in this cycle
            "reductions": ints(0),
        }

    def step(self, state, day, planned_dose, obs):
        n = len(self.dose_levels)
        levels = self._levels
        shape = state["held"].shape
        planned = jnp.broadcast_to(jnp.asarray(planned_dose, dtype=jnp.float64), shape)
        anc = jnp.broadcast_to(obs["anc"], shape)
        plt = jnp.broadcast_to(obs["platelets"], shape)
        day = jnp.asarray(day)
        visit = jnp.broadcast_to(self.visits.is_visit(day), shape)

        held, stopped = state["held"], state["stopped"]
        cap, esc, last_given = state["cap"], state["esc"], state["last_given"]
        prev_allowed, tox, reductions = state["prev_allowed"], state["tox"], state["reductions"]
        i32 = lambda x: jnp.asarray(x, dtype=jnp.int32)  # noqa: E731

        # --- escalation control at the start of a cycle (day > 0), before today's hold decision
        grade3_today = visit & ((anc < self.grade3_anc_below) | (plt < self.grade3_platelets_below))
        if self.escalate_only_if_no_grade3:
            cycle_start = (day > 0) & (day % self.cycle_days == 0)
            tox_prev = tox | grade3_today
            frozen = jnp.where(prev_allowed >= 0, jnp.minimum(esc, prev_allowed), esc)
            new_esc = jnp.where(tox_prev, frozen, jnp.minimum(esc + 1, n - 1))
            esc = i32(jnp.where(cycle_start, new_esc, esc))
            tox = jnp.where(cycle_start, False, tox | grade3_today)
        else:
            tox = tox | grade3_today

        # --- hold / resume / stop at visits
        low = (anc < self.anc_hold_below) | (plt < self.platelet_hold_below)
        recovered = (anc >= self.anc_resume_at) & (plt >= self.platelet_resume_at)
        start_hold = visit & ~stopped & ~held & low
        end_hold = visit & ~stopped & held & recovered
        target = jnp.where(last_given >= n, cap, jnp.minimum(cap, last_given - 1))
        is_reduction = start_hold & (target < cap)
        too_low = target < self._lowest_allowed
        too_many = (
            (reductions + 1 > self.max_reductions) if self.max_reductions is not None else False
        )
        stop_now = is_reduction & (too_low | too_many)
        apply = is_reduction & ~stop_now
        cap = i32(jnp.where(apply, target, cap))
        reductions = i32(reductions + apply)
        last_given = i32(jnp.where(apply, n, last_given))
        stopped = stopped | stop_now
        held = (held | start_hold) & ~end_hold & ~stopped

        # --- today's dose
        planned_idx = self.level_index(planned)
        allowed_idx = jnp.minimum(planned_idx, esc)
        eff_idx = jnp.minimum(allowed_idx, cap)
        on_level = levels[jnp.clip(eff_idx, 0, n - 1)]
        dose_plan = jnp.where(planned_idx < 0, planned, on_level)
        give = (planned > 0) & ~held & ~stopped
        dose = jnp.where(give, dose_plan, 0.0)
        last_given = i32(jnp.where(give, eff_idx, last_given))
        prev_allowed = i32(jnp.where(planned > 0, allowed_idx, prev_allowed))

        new_state = {
            "held": held,
            "stopped": stopped,
            "cap": cap,
            "esc": esc,
            "last_given": last_given,
            "prev_allowed": prev_allowed,
            "tox": tox,
            "reductions": reductions,
        }
        record = {
            "visit": visit.astype(jnp.int32),
            "held": held.astype(jnp.int32),
            "dose_cap_mg": jnp.where(stopped, 0.0, levels[jnp.minimum(cap, esc)]),
            "reductions": reductions,
            "stopped": stopped.astype(jnp.int32),
        }
        return new_state, dose, record


def label_rule(
    *,
    dose_levels: tuple = _DEFAULT_LEVELS,
    visits: LabVisits | None = None,
    cycle_days: int = 28,
) -> DoseModificationRules:
    """The label-style rule: hold when ANC < 1.0 x10^9/L or platelets < 50 x10^9/L, resume at
    one dose level lower once ANC >= 1.0 and platelets >= 50 (never below 2.5 mg: a reduction
    below it stops treatment); labs weekly in cycles 1-2, then on day 1 of each cycle."""
    return DoseModificationRules(
        dose_levels=dose_levels,
        visits=LabVisits.standard(cycle_days=cycle_days) if visits is None else visits,
        anc_hold_below=1.0,
        anc_resume_at=1.0,
        platelet_hold_below=50.0,
        platelet_resume_at=50.0,
        min_dose_mg=2.5,
        cycle_days=cycle_days,
    )
