"""Dosing regimens: dose events at any time, in NONMEM's vocabulary.

A :class:`Regimen` is one patient's planned dose events: time (h since the first day starts),
amount (mg), the compartment dosed (``"depot"`` for oral doses, ``"central"`` for IV) and, for a
zero-order infusion, its duration (h).  Day ``d`` covers hours ``[24 d, 24 (d + 1))``; the
regimen's horizon is ``n_days`` days.  Dose rules (:mod:`lenapk.rules`) act on the planned
*daily totals* (:attr:`Regimen.doses`) at the start of each day.

It is an ``equinox.Module`` whose only array leaf is ``amount_mg``: it passes through ``jit``,
``vmap`` and ``grad`` (amounts can be differentiated); the event times, compartments and
durations are static structure.  Build one with :meth:`Regimen.cycles` (once-daily cycles),
:meth:`from_daily_doses`, :meth:`every` (every ``interval_h`` hours), :meth:`from_events` or
:meth:`from_event_table` (NONMEM).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from . import _validate as V

HOURS_PER_DAY = 24.0
#: The compartments of the closed-form PK, in NONMEM CMT order (ADVAN2/ADVAN4): the default names.
ROUTES = ("depot", "central", "peripheral")


def _days_for(times_h, ends_h) -> int:
    """Whole days covering every dose start (its day included) and every infusion end."""
    last_start = max((int(t // HOURS_PER_DAY) + 1 for t in times_h), default=1)
    last_end = max((math.ceil(e / HOURS_PER_DAY - 1e-12) for e in ends_h), default=1)
    return max(last_start, last_end, 1)


class Regimen(eqx.Module):
    """Planned dose events of one patient (see the module docstring)."""

    amount_mg: jnp.ndarray
    time_h: tuple[float, ...] = eqx.field(static=True)
    compartment: tuple[str, ...] = eqx.field(static=True)
    duration_h: tuple[float, ...] = eqx.field(static=True)
    n_days: int = eqx.field(static=True)
    cycle_days: int = eqx.field(static=True, default=28)
    name: str = eqx.field(static=True, default="regimen")

    def __check_init__(self):
        V.whole("regimen.n_days", self.n_days, 1)
        V.whole("regimen.cycle_days", self.cycle_days, 1)
        n = len(self.time_h)
        if not (len(self.compartment) == len(self.duration_h) == n == np.shape(self.amount_mg)[-1]):
            raise ValueError("regimen: time_h, amount_mg, compartment and duration_h must have one entry per event")
        t = np.asarray(self.time_h, dtype=float)
        if n and (np.any(np.diff(t) < 0) or t[0] < 0 or t[-1] >= self.n_days * HOURS_PER_DAY):
            raise ValueError(f"regimen: event times must be sorted and within [0, {self.n_days * HOURS_PER_DAY:g}) h")

    # ---------------------------------------------------------------- views
    @property
    def n_events(self) -> int:
        return len(self.time_h)

    @property
    def n_cycles(self) -> float:
        return self.n_days / self.cycle_days

    @property
    def event_day(self) -> np.ndarray:
        """Day of each event (the day its start falls in)."""
        return (np.asarray(self.time_h, dtype=float) // HOURS_PER_DAY).astype(int)

    @property
    def doses(self) -> jnp.ndarray:
        """Planned total dose (mg) of each day, shape ``(n_days,)`` (events past the horizon
        are not given).  Differentiable in the amounts."""
        day = self.event_day
        keep = day < self.n_days
        return jnp.zeros(self.n_days, dtype=jnp.float64).at[day[keep]].add(jnp.asarray(self.amount_mg)[keep])

    @property
    def is_daily(self) -> bool:
        """Whether every dose is a bolus given at the start of a day into one compartment, at most
        one per day: the regimen then runs on the solver's day-by-day fast path."""
        t = np.asarray(self.time_h, dtype=float)
        whole = np.all(np.mod(t, HOURS_PER_DAY) == 0.0)
        return bool(
            whole
            and len(set(self.compartment)) <= 1
            and not any(self.duration_h)
            and len(np.unique(self.event_day)) == self.n_events
        )

    # ---------------------------------------------------------------- constructors
    @classmethod
    def from_events(
        cls,
        time_h,
        amount_mg,
        *,
        compartment="depot",
        duration_h=0.0,
        rate_mg_h=None,
        n_days: int | None = None,
        cycle_days: int = 28,
        name: str = "regimen",
    ) -> "Regimen":
        """Explicit events: times (h, sorted), amounts (mg), and per event (or one for all) the
        compartment and, for infusions, the duration (h) or the rate (mg/h, not both).
        ``n_days`` defaults to the days covering every dose (events at or after it are
        dropped)."""
        t = np.atleast_1d(np.asarray(time_h, dtype=float))
        a = np.atleast_1d(np.asarray(amount_mg, dtype=float))
        if t.ndim != 1 or a.shape != t.shape:
            raise ValueError(f"regimen: time_h and amount_mg must be 1-D of one length, got {t.shape} and {a.shape}")
        cmt = [compartment] * t.size if isinstance(compartment, str) else list(compartment)
        dur = _durations(t.size, duration_h, rate_mg_h, a)
        for i in range(t.size):
            V.number(f"regimen.events[{i}].time_h", t[i], minimum=0)
            V.number(f"regimen.events[{i}].amount_mg", a[i], minimum=0)
            if not (isinstance(cmt[i], str) and cmt[i]):
                raise ValueError(f"regimen.events[{i}].compartment must be a compartment name, got {cmt[i]!r}")
            if i and t[i] < t[i - 1]:
                raise ValueError(
                    f"regimen.events[{i}].time_h must be >= the previous event's ({t[i - 1]:g} h), got {t[i]:g}"
                )
        n_days = _days_for(t, t + dur) if n_days is None else V.whole("regimen.n_days", n_days, 1)
        keep = t < n_days * HOURS_PER_DAY
        return cls(
            amount_mg=jnp.asarray(a[keep], dtype=jnp.float64),
            time_h=tuple(map(float, t[keep])),
            compartment=tuple(c for c, k in zip(cmt, keep) if k),
            duration_h=tuple(map(float, dur[keep])),
            n_days=n_days,
            cycle_days=V.whole("regimen.cycle_days", cycle_days, 1),
            name=name,
        )

    @classmethod
    def from_daily_doses(
        cls, doses, *, cycle_days: int = 28, name: str = "regimen", compartment: str = "depot"
    ) -> "Regimen":
        """One bolus at the start of each day (mg; zero: no dose that day)."""
        arr = np.asarray(doses, dtype=float)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"regimen.doses must be a non-empty 1-D sequence of mg per day, got shape {arr.shape}")
        bad = np.flatnonzero(~np.isfinite(arr) | (arr < 0))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"regimen.doses[{i}] must be a finite dose >= 0 mg, got {arr[i]!r}")
        days = np.flatnonzero(arr > 0)
        return cls.from_events(
            days * HOURS_PER_DAY, arr[days], compartment=compartment, n_days=arr.size, cycle_days=cycle_days, name=name
        )

    @classmethod
    def cycles(
        cls,
        start_mg: float,
        *,
        n_cycles: int = 24,
        cycle_days: int = 28,
        days_on: int | None = None,
        escalation_mg: float = 0.0,
        escalate_every_days: int | None = None,
        max_mg: float | None = None,
        name: str = "regimen",
    ) -> "Regimen":
        """Once-daily oral dosing in cycles: ``days_on`` days of each ``cycle_days``-day cycle,
        on day ``d`` (0-based) ``min(start_mg + escalation_mg floor(d / escalate_every_days), max_mg)``."""
        start_mg = V.number("regimen.start_mg", start_mg, minimum=0, strict=True)
        n_cycles = V.number("regimen.n_cycles", n_cycles, minimum=0, strict=True, integer=True)
        cycle_days = V.number("regimen.cycle_days", cycle_days, minimum=0, strict=True, integer=True)
        days_on = V.number(
            "regimen.days_on",
            cycle_days if days_on is None else days_on,
            minimum=0,
            strict=True,
            maximum=cycle_days,
            integer=True,
        )
        escalation_mg = V.number("regimen.escalation_mg", escalation_mg, minimum=0)
        max_mg = start_mg if max_mg is None else V.number("regimen.max_mg", max_mg, minimum=start_mg)
        day = np.arange(n_cycles * cycle_days)
        level = np.full(day.shape, start_mg)
        if escalation_mg > 0:
            if escalate_every_days is None:
                raise ValueError("regimen.escalate_every_days is required when escalation_mg > 0")
            every = V.number("regimen.escalate_every_days", escalate_every_days, minimum=0, strict=True, integer=True)
            level = start_mg + escalation_mg * (day // every)
        dose = np.minimum(level, max_mg) * ((day % cycle_days) < days_on)
        return cls.from_daily_doses(dose, cycle_days=cycle_days, name=name)

    @classmethod
    def every(
        cls,
        amount_mg: float,
        interval_h: float,
        *,
        n_days: int,
        start_h: float = 0.0,
        compartment: str = "depot",
        duration_h: float = 0.0,
        cycle_days: int = 28,
        name: str = "regimen",
    ) -> "Regimen":
        """``amount_mg`` every ``interval_h`` hours from ``start_h`` for ``n_days`` days (e.g. 5 mg
        every 12 h from 08:00, or 15 mg every 48 h)."""
        amount_mg = V.number("regimen.amount_mg", amount_mg, minimum=0, strict=True)
        interval_h = V.number("regimen.interval_h", interval_h, minimum=0, strict=True)
        n_days = V.whole("regimen.n_days", n_days, 1)
        start_h = V.number("regimen.start_h", start_h, minimum=0)
        times = np.arange(start_h, n_days * HOURS_PER_DAY, interval_h)
        return cls.from_events(
            times,
            np.full(times.size, amount_mg),
            compartment=compartment,
            duration_h=duration_h,
            n_days=n_days,
            cycle_days=cycle_days,
            name=name,
        )

    @classmethod
    def from_event_table(
        cls,
        table,
        *,
        n_days: int | None = None,
        cycle_days: int = 28,
        name: str = "regimen",
        compartments: tuple[str, ...] = ROUTES,
    ) -> "Regimen":
        """One patient's regimen from a NONMEM event table (:func:`lenapk.read_event_table`); a
        table with several IDs is refused (use ``read_event_table`` for those)."""
        from ._events import read_event_table

        regimens = read_event_table(table, n_days=n_days, cycle_days=cycle_days, compartments=compartments)
        if len(regimens) > 1:
            raise ValueError(
                f"event table: one patient per regimen, got ID values {list(regimens)[:5]}; "
                "use lenapk.read_event_table for several patients"
            )
        return next(iter(regimens.values())).renamed(name)

    # ---------------------------------------------------------------- derived regimens
    def with_days(self, n_days: int) -> "Regimen":
        """The same events over ``n_days`` days: events at or after the new horizon are dropped,
        and a longer horizon adds days without doses."""
        n_days = V.whole("n_days", n_days, 1)
        keep = np.asarray(self.time_h, dtype=float) < n_days * HOURS_PER_DAY
        idx = np.flatnonzero(keep)
        return Regimen(
            amount_mg=jnp.asarray(self.amount_mg)[idx],
            time_h=tuple(self.time_h[i] for i in idx),
            compartment=tuple(self.compartment[i] for i in idx),
            duration_h=tuple(self.duration_h[i] for i in idx),
            n_days=n_days,
            cycle_days=self.cycle_days,
            name=self.name,
        )

    def first_cycles(self, n_cycles: int) -> "Regimen":
        """The first ``n_cycles`` cycles (unchanged when the regimen is not longer)."""
        n_days = V.whole("n_cycles", n_cycles, 1) * self.cycle_days
        return self if self.n_days <= n_days else self.with_days(n_days)

    def renamed(self, name: str) -> "Regimen":
        return Regimen(
            amount_mg=self.amount_mg,
            time_h=self.time_h,
            compartment=self.compartment,
            duration_h=self.duration_h,
            n_days=self.n_days,
            cycle_days=self.cycle_days,
            name=name,
        )

    def to_event_table(self, *, patient_id=1, compress: bool = True):
        """NONMEM dose records of this regimen (:func:`lenapk.write_event_table`)."""
        from ._events import write_event_table

        return write_event_table({patient_id: self}, compress=compress)


def _durations(n: int, duration_h, rate_mg_h, amounts: np.ndarray) -> np.ndarray:
    """Infusion durations (h) from either durations or rates (0 for a bolus)."""
    if rate_mg_h is not None:
        if np.any(np.asarray(duration_h, dtype=float) != 0):
            raise ValueError("regimen: give either duration_h or rate_mg_h for infusions, not both")
        rate = np.broadcast_to(np.asarray(rate_mg_h, dtype=float), (n,))
        for i, r in enumerate(rate):
            V.number(f"regimen.events[{i}].rate_mg_h", r, minimum=0)
            if r > 0 and amounts[i] <= 0:
                raise ValueError(f"regimen.events[{i}]: an infusion rate needs an amount > 0 mg, got {amounts[i]:g}")
        return np.where(rate > 0, amounts / np.where(rate > 0, rate, 1.0), 0.0)
    dur = np.broadcast_to(np.asarray(duration_h, dtype=float), (n,)).copy()
    for i, d in enumerate(dur):
        V.number(f"regimen.events[{i}].duration_h", d, minimum=0)
    return dur
