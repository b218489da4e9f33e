"""Label-style dose modification at lab visits, with the observables and thresholds as data.

:class:`DoseModificationRules` holds, reduces, stops and (optionally) gates escalation on the
observables it is configured with (for example ``hold_below={"biomarker": 40.0}``);
it knows nothing of any particular model.  Everything is pure jnp on the traced day and
observables, so the rules run for one patient, under ``vmap`` and for a batch solved as one ODE.
Validation happens once, in Python, at construction.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._core import AbstractDoseRules
from .._core import _validate as V
from ._visits import LabVisits, _is_tracer

_EPS_MG = 1e-9  # tolerance when matching a planned dose (mg) to a dose level


def _thresholds(x):
    """Converter: a mapping observable -> threshold becomes a dict of float64 JAX arrays (values
    that are not numbers are kept for ``__check_init__`` to refuse)."""
    if not isinstance(x, dict):
        return x
    out = {}
    for k, v in x.items():
        if _is_tracer(v) or isinstance(v, (bool, np.bool_)):
            out[k] = v
            continue
        try:
            out[k] = jnp.asarray(v, dtype=jnp.float64)
        except (TypeError, ValueError):
            out[k] = v
    return out


def _as_levels(x):
    """Converter for ``dose_levels``: numbers become a tuple of floats (static, hashable)."""
    if isinstance(x, (list, tuple, np.ndarray)) and not _is_tracer(x):
        try:
            return tuple(float(v) for v in np.asarray(x, dtype=float).reshape(-1))
        except (TypeError, ValueError):
            return tuple(x) if isinstance(x, list) else x
    return x


def _check_values(field: str, value, in_range, expected: str, *, non_empty: bool = False) -> None:
    """``value`` is a dict observable name -> number(s), each finite and ``in_range`` (an array
    predicate); ``expected`` says what is accepted in the error.  Traced values are not checked."""
    if not isinstance(value, dict) or (non_empty and not value):
        kind = "non-empty dict" if non_empty else "dict"
        raise ValueError(f"rules.{field} must be a {kind} observable name -> {expected}, got {value!r}")
    for name, v in value.items():
        if _is_tracer(v):
            continue
        arr = np.asarray(v) if not isinstance(v, (bool, np.bool_)) else np.asarray([np.nan])
        bad = arr.dtype == object or not np.issubdtype(arr.dtype, np.number)
        if not bad:
            arr = arr.astype(float)
            bad = not (np.all(np.isfinite(arr)) and np.all(in_range(arr)))
        if bad:
            shown = np.asarray(v).tolist() if isinstance(v, (jax.Array, np.ndarray, np.generic)) else v
            raise ValueError(f"rules.{field}[{name!r}] must be {expected}, got {shown!r}")


def _check_thresholds(field: str, value) -> None:
    _check_values(field, value, lambda a: a >= 0, "a finite number >= 0")


def _check_ratios(field: str, value, *, above_one: bool) -> None:
    """Ratios to baseline: > 1 (``above_one``, a rise) or strictly between 0 and 1 (a fall)."""
    if above_one:
        _check_values(field, value, lambda a: a > 1.0, "a finite ratio to baseline > 1", non_empty=True)
    else:
        in_unit = lambda a: (a > 0.0) & (a < 1.0)  # noqa: E731
        _check_values(field, value, in_unit, "a finite ratio to baseline in (0, 1)", non_empty=True)


class _State(NamedTuple):
    held: jnp.ndarray  # bool
    stopped: jnp.ndarray  # bool
    cap: jnp.ndarray  # reduction cap (level index)
    esc: jnp.ndarray  # escalation ceiling (level index)
    last_given: jnp.ndarray  # level index of the last dose given; n = none since the last reduction
    prev_allowed: jnp.ndarray  # level allowed on the last day with a planned dose; -2 = none yet
    tox: jnp.ndarray  # a visit of this cycle was below an escalation threshold
    reductions: jnp.ndarray
    base_seen: jnp.ndarray  # bool: the first visit (baseline) has been read
    baseline: dict  # observable -> its value at the first visit (only the relative-rule observables)
    progressed: jnp.ndarray  # bool: stopped for a rise over baseline (stop_above)
    responded: jnp.ndarray  # bool: a fall below baseline (escalate_only_below) was seen
    frozen: jnp.ndarray  # bool: the escalation ceiling has been frozen after the response


def _any_below(obs, thresholds: dict, shape):
    out = jnp.zeros(shape, dtype=bool)
    for name, thr in thresholds.items():
        out = out | (jnp.broadcast_to(obs[name], shape) < thr)
    return out


def _any_relative(obs, ratios: dict, baseline: dict, shape, *, at_least: bool):
    """Any observable ``>= ratio x baseline`` (``at_least``) or ``<= ratio x baseline``."""
    out = jnp.zeros(shape, dtype=bool)
    for name, r in ratios.items():
        x, limit = jnp.broadcast_to(obs[name], shape), r * baseline[name]
        out = out | ((x >= limit) if at_least else (x <= limit))
    return out


def _all_at_least(obs, thresholds: dict, shape):
    out = jnp.ones(shape, dtype=bool)
    for name, thr in thresholds.items():
        out = out & (jnp.broadcast_to(obs[name], shape) >= thr)
    return out


class DoseModificationRules(AbstractDoseRules):
    """Hold / reduce / stop / escalate at lab visits, label style.

    ``dose_levels`` are the daily totals (mg) that can be given, in increasing order (a drug's
    capsule or tablet strengths).  At each visit (``visits``; default
    ``LabVisits.standard(cycle_days=cycle_days)``), with the pre-dose observables of that day:

    - **hold**: if any observable of ``hold_below`` is below its threshold the dose is withheld
      from that day on (also on later days between visits);
    - **resume**: at the first visit where every observable of ``resume_at`` (default: the hold
      thresholds) is at or above its threshold, dosing resumes that day at one dose level below
      the level last given before the hold.  That lower level caps the rest of the course: the
      dose given is ``min(planned, cap)`` (a *reduction*, counted in the record ``reductions``),
      decided when the hold starts (shown in ``dose_cap_mg`` during the hold).  A hold with no
      dose given since the previous reduction (or since the start) lowers nothing;
    - **stop**: if that reduction would go below the lowest level or below ``min_dose_mg``
      (default: the lowest level), or
      would be reduction number ``max_reductions + 1``, treatment stops for good on the day of
      the hold (``stopped`` = 1, dose 0 from then on, ``held`` = 0);
    - **escalation** (when ``escalation_blocked_below`` is given): on the first day of each cycle
      after the first, a dose increase is allowed only if no visit of the previous cycle, nor the
      visit of that day, saw an observable below those thresholds.  When an increase is refused
      the patient stays at the previous cycle's level; after a cycle without such values the
      ceiling rises one level per cycle (a deferred escalation catches up one level at a time).

    Rules relative to the baseline, the observables' values at the first visit (day 0 in the
    standard schedules; recorded in the rule state and compared at every later visit):

    - **stop on a rise** (``stop_above``, e.g. ``{"marker": 1.5}``, ratios > 1): at a visit where
      any named observable is ``>= ratio x baseline`` (progression) treatment stops for good from
      that day on (``stopped`` = 1, dose 0), whatever the toxicity rules say; the record
      ``progressed`` (only with ``stop_above``) tells this stop from a toxicity stop;
    - **escalate only before a fall** (``escalate_only_below``, e.g. ``{"marker": 0.5}``, ratios
      in (0, 1)): escalation (a planned dose above the level allowed so far, or the ceiling
      rising after a cycle without toxicity) happens only while every named observable stays
      ``> ratio x baseline``.  At the first visit where one is ``<= ratio x baseline`` (a
      response) the ceiling is frozen at the level allowed on the last day with a planned dose
      (from that visit's day on) and stays frozen for the rest of the course, even if the
      observable rises again; reductions for toxicity still apply.  The record ``responded``
      (only with ``escalate_only_below``) is 1 from that visit on.

    Planned doses are first capped at the nearest dose level at or below them (a planned dose
    above the top level gets the top level); a positive planned dose below the lowest level is
    given as planned (it cannot be reduced further, so a hold on it stops treatment).  Planned
    zero-dose days stay zero, and the labs are still read at visits on them.

    Thresholds are JAX float arrays (a scalar, or one value per patient broadcasting against the
    batch), so changing them does not recompile.  Records per day (``Trajectory.rule_records``,
    extra columns of :func:`lenapk.simulate`): ``visit``, ``held``, ``stopped`` (0/1),
    ``dose_cap_mg`` (the level cap in force; 0 once stopped) and ``reductions`` (count).
    """

    hold_below: dict = eqx.field(converter=_thresholds)
    dose_levels: tuple = eqx.field(static=True, converter=_as_levels)
    resume_at: dict | None = eqx.field(default=None, converter=_thresholds)
    escalation_blocked_below: dict | None = eqx.field(default=None, converter=_thresholds)
    stop_above: dict | None = eqx.field(default=None, converter=_thresholds)
    escalate_only_below: dict | None = eqx.field(default=None, converter=_thresholds)
    visits: LabVisits | None = None
    min_dose_mg: float | None = eqx.field(static=True, default=None)
    max_reductions: int | None = eqx.field(static=True, default=None)
    cycle_days: int = eqx.field(static=True, default=28)
    label: str = eqx.field(static=True, default="dose modification")

    def __check_init__(self):
        _check_thresholds("hold_below", self.hold_below)
        if not self.hold_below:
            raise ValueError("rules.hold_below must name at least one observable and its threshold")
        resume = self._resume
        _check_thresholds("resume_at", resume)
        if set(resume) != set(self.hold_below):
            raise ValueError(
                f"rules.resume_at must name the observables of hold_below {sorted(self.hold_below)}, "
                f"got {sorted(resume)}"
            )
        for name, r in resume.items():
            h = self.hold_below[name]
            if not (_is_tracer(h) or _is_tracer(r)) and np.any(np.asarray(r) < np.asarray(h)):
                raise ValueError(
                    f"rules.resume_at[{name!r}] must be >= hold_below[{name!r}] "
                    f"({np.asarray(h).tolist()}), got {np.asarray(r).tolist()}"
                )
        if self.escalation_blocked_below is not None:
            _check_thresholds("escalation_blocked_below", self.escalation_blocked_below)
        if self.stop_above is not None:
            _check_ratios("stop_above", self.stop_above, above_one=True)
        if self.escalate_only_below is not None:
            _check_ratios("escalate_only_below", self.escalate_only_below, above_one=False)
        self._check_levels()
        if self.visits is not None and not isinstance(self.visits, LabVisits):
            raise ValueError(f"rules.visits must be a lenapk.LabVisits schedule, got {type(self.visits).__name__}")
        if self.min_dose_mg is not None:
            V.number("rules.min_dose_mg", self.min_dose_mg, minimum=0, maximum=self.dose_levels[-1])
        V.whole("rules.max_reductions", self.max_reductions, 0, allow_none=True)
        V.whole("rules.cycle_days", self.cycle_days, 1)

    def _check_levels(self):
        levels = self.dose_levels
        if not isinstance(levels, tuple) or len(levels) == 0:
            raise ValueError(
                f"rules.dose_levels must be a non-empty tuple of doses in mg, in increasing order, got {levels!r}"
            )
        for i, x in enumerate(levels):
            V.number(f"rules.dose_levels[{i}]", x, minimum=0, strict=True)
        if any(b <= a for a, b in zip(levels, levels[1:])):
            raise ValueError(f"rules.dose_levels must be strictly increasing (mg), got {levels!r}")

    # ---------------------------------------------------------------- helpers
    @property
    def _resume(self) -> dict:
        return self.hold_below if self.resume_at is None else self.resume_at

    @property
    def observables_read(self) -> tuple[str, ...]:
        names = list(self.hold_below) + list(self._resume) + list(self.escalation_blocked_below or {})
        return tuple(dict.fromkeys(names + list(self._relative_names)))

    @property
    def _relative_names(self) -> tuple[str, ...]:
        """The observables whose baseline the rule records."""
        return tuple(dict.fromkeys(list(self.stop_above or {}) + list(self.escalate_only_below or {})))

    @property
    def _levels(self) -> jnp.ndarray:
        return jnp.asarray(self.dose_levels, dtype=jnp.float64)

    @property
    def lab_visits(self) -> LabVisits:
        """The visits in force (``visits``, or the standard schedule of ``cycle_days``)."""
        return LabVisits.standard(cycle_days=self.cycle_days) if self.visits is None else self.visits

    @property
    def _lowest_allowed(self) -> int:
        """Index of the lowest level a reduction may reach (>= min_dose_mg)."""
        if self.min_dose_mg is None:
            return 0
        return int(sum(1 for x in self.dose_levels if x < self.min_dose_mg - _EPS_MG))

    def level_index(self, dose_mg) -> jnp.ndarray:
        """Index of the highest level <= ``dose_mg`` (-1 if below the lowest level)."""
        d = jnp.asarray(dose_mg, dtype=jnp.float64)[..., None]
        return jnp.sum(self._levels <= d + _EPS_MG, axis=-1) - 1

    # ---------------------------------------------------------------- the rule
    def init(self, batch_shape):
        n = len(self.dose_levels)
        ints = lambda v: jnp.full(batch_shape, v, dtype=jnp.int32)  # noqa: E731
        false = jnp.zeros(batch_shape, dtype=bool)
        return _State(
            held=false,
            stopped=false,
            cap=ints(n - 1),
            esc=ints(n - 1),
            last_given=ints(n),
            prev_allowed=ints(-2),
            tox=false,
            reductions=ints(0),
            base_seen=false,
            baseline={k: jnp.zeros(batch_shape, dtype=jnp.float64) for k in self._relative_names},
            progressed=false,
            responded=false,
            frozen=false,
        )

    def _escalation(self, s: _State, day, blocked_today) -> _State:
        """The escalation ceiling at the start of a cycle (day > 0), before today's hold."""
        if self.escalation_blocked_below is None:
            return s._replace(tox=s.tox | blocked_today)
        n = len(self.dose_levels)
        cycle_start = (day > 0) & (day % self.cycle_days == 0)
        tox_prev = s.tox | blocked_today
        frozen = jnp.where(s.prev_allowed >= 0, jnp.minimum(s.esc, s.prev_allowed), s.esc)
        up = jnp.minimum(s.esc + 1, n - 1)
        if self.escalate_only_below is not None:
            up = jnp.where(s.responded, s.esc, up)  # no rise of the ceiling after a response
        new_esc = jnp.where(tox_prev, frozen, up)
        return s._replace(
            esc=jnp.asarray(jnp.where(cycle_start, new_esc, s.esc), dtype=jnp.int32),
            tox=jnp.where(cycle_start, False, tox_prev),
        )

    def _hold(self, s: _State, visit, obs, shape) -> _State:
        """Hold, resume (one level lower) or stop at a visit."""
        n = len(self.dose_levels)
        i32 = lambda x: jnp.asarray(x, dtype=jnp.int32)  # noqa: E731
        low = _any_below(obs, self.hold_below, shape)
        recovered = _all_at_least(obs, self._resume, shape)
        start_hold = visit & ~s.stopped & ~s.held & low
        end_hold = visit & ~s.stopped & s.held & recovered
        target = jnp.where(s.last_given >= n, s.cap, jnp.minimum(s.cap, s.last_given - 1))
        is_reduction = start_hold & (target < s.cap)
        too_low = target < self._lowest_allowed
        too_many = (s.reductions + 1 > self.max_reductions) if self.max_reductions is not None else False
        stop_now = is_reduction & (too_low | too_many)
        apply = is_reduction & ~stop_now
        stopped = s.stopped | stop_now
        return s._replace(
            cap=i32(jnp.where(apply, target, s.cap)),
            reductions=i32(s.reductions + apply),
            last_given=i32(jnp.where(apply, n, s.last_given)),
            stopped=stopped,
            held=(s.held | start_hold) & ~end_hold & ~stopped,
        )

    def _relative(self, s: _State, visit, obs, shape) -> _State:
        """Baseline at the first visit; stop on a rise over it; freeze escalation after a fall."""
        if not self._relative_names:
            return s
        first = visit & ~s.base_seen
        compare = visit & s.base_seen  # the visits after the baseline one
        baseline = {k: jnp.where(first, jnp.broadcast_to(obs[k], shape), b) for k, b in s.baseline.items()}
        s = s._replace(base_seen=s.base_seen | visit, baseline=baseline)
        if self.stop_above is not None:
            rise = compare & ~s.stopped & _any_relative(obs, self.stop_above, baseline, shape, at_least=True)
            s = s._replace(stopped=s.stopped | rise, progressed=s.progressed | rise, held=s.held & ~rise)
        if self.escalate_only_below is not None:
            fall = compare & _any_relative(obs, self.escalate_only_below, baseline, shape, at_least=False)
            responded = s.responded | fall
            freeze = responded & ~s.frozen & (s.prev_allowed >= 0)
            s = s._replace(
                responded=responded,
                frozen=s.frozen | freeze,
                esc=jnp.asarray(jnp.where(freeze, jnp.minimum(s.esc, s.prev_allowed), s.esc), dtype=jnp.int32),
            )
        return s

    def step(self, state: _State, day, planned_dose, obs):
        n = len(self.dose_levels)
        levels = self._levels
        shape = state.held.shape
        planned = jnp.broadcast_to(jnp.asarray(planned_dose, dtype=jnp.float64), shape)
        day = jnp.asarray(day)
        visit = jnp.broadcast_to(self.lab_visits.is_visit(day), shape)
        blocked = visit & _any_below(obs, self.escalation_blocked_below or {}, shape)
        s = self._hold(self._relative(self._escalation(state, day, blocked), visit, obs, shape), visit, obs, shape)
        # today's dose
        planned_idx = self.level_index(planned)
        if self.escalate_only_below is not None:
            # a response seen before any planned dose at a level: freeze at the first such level
            pending = s.responded & ~s.frozen & (planned_idx >= 0)
            s = s._replace(
                esc=jnp.asarray(jnp.where(pending, jnp.minimum(s.esc, planned_idx), s.esc), dtype=jnp.int32),
                frozen=s.frozen | pending,
            )
        allowed_idx = jnp.minimum(planned_idx, s.esc)
        eff_idx = jnp.minimum(allowed_idx, s.cap)
        dose_plan = jnp.where(planned_idx < 0, planned, levels[jnp.clip(eff_idx, 0, n - 1)])
        give = (planned > 0) & ~s.held & ~s.stopped
        dose = jnp.where(give, dose_plan, 0.0)
        s = s._replace(
            last_given=jnp.asarray(jnp.where(give, eff_idx, s.last_given), dtype=jnp.int32),
            prev_allowed=jnp.asarray(jnp.where(planned > 0, allowed_idx, s.prev_allowed), dtype=jnp.int32),
        )
        record = {
            "visit": visit.astype(jnp.int32),
            "held": s.held.astype(jnp.int32),
            "dose_cap_mg": jnp.where(s.stopped, 0.0, levels[jnp.minimum(s.cap, s.esc)]),
            "reductions": s.reductions,
            "stopped": s.stopped.astype(jnp.int32),
        }
        if self.stop_above is not None:
            record["progressed"] = s.progressed.astype(jnp.int32)
        if self.escalate_only_below is not None:
            record["responded"] = s.responded.astype(jnp.int32)
        return s, dose, record
