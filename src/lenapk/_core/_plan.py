"""A regimen compiled for the solver: the horizon cut into segments at day starts and dose times.

Day ``d`` starts a segment at ``24 d`` h; every dose event and every infusion end starts another.
The solver integrates the ODE across each segment with the PK in closed form (or as ODE states),
so doses can fall at any time.  At the first segment of each day the dose rule sees the
pre-dose observables and the day's planned total and returns the total to give; every dose of
that day (and the rate of every infusion started that day) is scaled by given / planned, and on a
day with nothing planned nothing is given.

A regimen whose doses are all boluses at day starts, at most one a day, into one compartment
(``Regimen.is_daily``) compiles to one segment per day: the fast day-by-day path, the same code
with nothing to split.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from ._regimen import HOURS_PER_DAY, Regimen


class DosePlan(eqx.Module):
    """Segments of the horizon (time in the model's unit) and the doses at their starts.

    Shapes: ``S`` segments, ``C`` dose compartments, optional leading batch axes on
    ``amounts``, ``planned`` and the rates (one plan per patient, shared segment times)."""

    t0: jnp.ndarray  # (S,) segment start
    length: jnp.ndarray  # (S,)
    day: jnp.ndarray  # (S,) int: day of the segment
    day_start: jnp.ndarray  # (S,) bool: first segment of its day
    day_segment: jnp.ndarray  # (n_days,) int: first segment of each day
    amounts: jnp.ndarray  # (..., S, C) mg given at the segment start (before rules)
    planned: jnp.ndarray  # (..., n_days) planned total of each day
    rate_on: jnp.ndarray | None = None  # (..., S, C) mg/h of infusions starting at the segment start
    rate_off: jnp.ndarray | None = None  # (..., S, C) mg/h of infusions ending there
    rate_off_day: jnp.ndarray | None = None  # (S,) int: day the ending infusions started
    one_segment_per_day: bool = eqx.field(static=True, default=False)
    carries_day_ratios: bool = eqx.field(static=True, default=False)
    compartment: int = eqx.field(static=True, default=0)  # the compartment a daily plan doses

    ARRAYS: ClassVar[tuple[str, ...]] = (
        "t0",
        "length",
        "day",
        "day_start",
        "day_segment",
        "amounts",
        "planned",
        "rate_on",
        "rate_off",
        "rate_off_day",
    )

    def with_statics(self, **statics) -> "DosePlan":
        """The same arrays with other static fields (``one_segment_per_day``, ``carries_day_ratios``,
        ``compartment``): batches of one cohort must share a tree structure."""
        current = dict(
            one_segment_per_day=self.one_segment_per_day,
            carries_day_ratios=self.carries_day_ratios,
            compartment=self.compartment,
        )
        return DosePlan(**{f: getattr(self, f) for f in self.ARRAYS}, **{**current, **statics})

    @property
    def n_days(self) -> int:
        return int(self.planned.shape[-1])

    @property
    def n_segments(self) -> int:
        return int(self.t0.shape[-1])

    @property
    def batch_shape(self) -> tuple:
        return tuple(self.amounts.shape[:-2])

    @property
    def has_infusions(self) -> bool:
        return self.rate_on is not None


def daily_plan(planned, *, compartment: int = 0, n_compartments: int = 2, day_length: float = 1.0) -> DosePlan:
    """One segment per day, ``planned[..., d]`` mg into compartment number ``compartment`` at the
    start of day ``d`` (traceable: ``planned`` may be a traced, differentiated array)."""
    planned = jnp.asarray(planned, dtype=jnp.float64)
    n_days = planned.shape[-1]
    days = jnp.arange(n_days)
    zeros = jnp.zeros_like(planned)
    amounts = jnp.stack([planned if i == compartment else zeros for i in range(n_compartments)], axis=-1)
    return DosePlan(
        t0=days * day_length,
        length=jnp.full(n_days, day_length, dtype=jnp.float64),
        day=days,
        day_start=jnp.ones(n_days, dtype=bool),
        day_segment=days,
        amounts=amounts,
        planned=planned,
        one_segment_per_day=True,
        compartment=compartment,
    )


def plan_regimen(
    regimen: Regimen, *, compartments: tuple[str, ...], time_unit_h: float, closed_form: bool = True
) -> DosePlan:
    """Compile ``regimen`` for a model whose dose compartments are ``compartments`` (the first one
    doses of a daily regimen without events go to) and whose time unit is ``time_unit_h`` hours."""
    for i, cmt in enumerate(regimen.compartment):
        if cmt not in compartments:
            raise ValueError(
                f"regimen {regimen.name!r} event {i} doses compartment {cmt!r}; the model's dose "
                f"compartments are {list(compartments)}"
            )
        if closed_form and regimen.duration_h[i] > 0 and cmt != "central":
            raise ValueError(
                f"regimen {regimen.name!r} event {i} infuses into {cmt!r}; closed-form PK takes "
                "infusions into 'central' only"
            )
    day_length = HOURS_PER_DAY / time_unit_h
    if regimen.is_daily:
        target = compartments.index(regimen.compartment[0]) if regimen.n_events else 0
        return daily_plan(regimen.doses, compartment=target, n_compartments=len(compartments), day_length=day_length)
    return _event_plan(regimen, compartments, time_unit_h)


def _event_plan(regimen: Regimen, compartments, time_unit_h: float) -> DosePlan:
    horizon = regimen.n_days * HOURS_PER_DAY
    t = np.asarray(regimen.time_h, dtype=float)
    dur = np.asarray(regimen.duration_h, dtype=float)
    cmt = np.array([compartments.index(c) for c in regimen.compartment], dtype=int)
    infusion = dur > 0
    ends = t + dur
    ending = infusion & (ends < horizon)
    bounds = np.unique(np.concatenate([np.arange(regimen.n_days) * HOURS_PER_DAY, t, ends[ending]]))
    seg_of = lambda x: np.searchsorted(bounds, x)  # noqa: E731  (every x is a bound)
    n_seg, n_cmt = bounds.size, len(compartments)
    day = (bounds // HOURS_PER_DAY).astype(int)
    amount = jnp.asarray(regimen.amount_mg, dtype=jnp.float64)
    bolus = np.flatnonzero(~infusion)
    amounts = jnp.zeros((n_seg, n_cmt)).at[seg_of(t[bolus]), cmt[bolus]].add(amount[bolus])
    plan = dict(
        t0=jnp.asarray(bounds / time_unit_h),
        length=jnp.asarray((np.append(bounds[1:], horizon) - bounds) / time_unit_h),
        day=jnp.asarray(day),
        day_start=jnp.asarray(bounds % HOURS_PER_DAY == 0.0),
        day_segment=jnp.asarray(seg_of(np.arange(regimen.n_days) * HOURS_PER_DAY)),
        amounts=amounts,
        planned=regimen.doses,
    )
    if infusion.any():
        inf = np.flatnonzero(infusion)
        rate = amount[inf] / dur[inf]
        plan["rate_on"] = jnp.zeros((n_seg, n_cmt)).at[seg_of(t[inf]), cmt[inf]].add(rate)
        end = np.flatnonzero(ending[inf])
        plan["rate_off"] = jnp.zeros((n_seg, n_cmt)).at[seg_of(ends[inf][end]), cmt[inf][end]].add(rate[end])
        off_day = day.copy()
        for e in end:
            s, start_day = seg_of(ends[inf][e]), int(t[inf][e] // HOURS_PER_DAY)
            if off_day[s] != day[s] and off_day[s] != start_day:
                raise ValueError(
                    f"regimen {regimen.name!r}: infusions started on days {off_day[s]} and {start_day} end "
                    f"at the same time ({bounds[s]:g} h); give them distinct end times"
                )
            off_day[s] = start_day
        plan["rate_off_day"] = jnp.asarray(off_day)
        return DosePlan(**plan, carries_day_ratios=bool(np.any(off_day != day)))
    return DosePlan(**plan)


def stack_plans(
    plans: list[DosePlan], n_segments: int | None = None, *, infusions: bool = False, carries_day_ratios: bool = False
) -> tuple[DosePlan, bool]:
    """One plan for a batch of patients: ``(plan, shared)``.  Plans with the same segments share
    them (``shared``: segment arrays unbatched, amounts batched; one ODE with a shared step can
    solve the batch); otherwise, or when ``n_segments`` is given, every field gets the batch
    axis (solve each patient with ``vmap``), plans padded with empty segments at the horizon to
    ``n_segments`` (default: the longest).  ``infusions`` and ``carries_day_ratios`` force the
    infusion fields and day ratios even when no plan of this batch needs them (so that batches
    of one cohort share a structure)."""
    n_days = {p.n_days for p in plans}
    if len(n_days) != 1:
        raise ValueError(f"plans of one batch must cover the same days, got {sorted(n_days)}")
    infusions = infusions or any(p.has_infusions for p in plans)
    plans = [_with_rates(p) if infusions else p for p in plans]
    first = plans[0]
    shared = n_segments is None and all(_same_segments(first, p) for p in plans[1:])
    if not shared:
        target = max(max(p.n_segments for p in plans), n_segments or 0)
        plans = [_padded(p, target) for p in plans]
    stack = lambda *xs: jnp.stack([jnp.asarray(x) for x in xs])  # noqa: E731
    batched = ("amounts", "planned", "rate_on", "rate_off") if shared else None
    fields = {}
    for name in DosePlan.ARRAYS:
        values = [getattr(p, name) for p in plans]
        if values[0] is None:
            fields[name] = None
        elif batched is None or name in batched:
            fields[name] = stack(*values)
        else:
            fields[name] = values[0]
    return DosePlan(
        **fields,
        # daily segments only when every plan has them and doses the same compartment
        one_segment_per_day=shared
        and all(p.one_segment_per_day for p in plans)
        and len({p.compartment for p in plans}) == 1,
        carries_day_ratios=carries_day_ratios or any(p.carries_day_ratios for p in plans),
        compartment=first.compartment,
    ), shared


def _same_segments(a: DosePlan, b: DosePlan) -> bool:
    names = ("t0", "length", "day", "day_start", "rate_off_day")
    return a.n_segments == b.n_segments and all(
        (getattr(a, n) is None and getattr(b, n) is None)
        or (
            getattr(a, n) is not None
            and getattr(b, n) is not None
            and np.array_equal(np.asarray(getattr(a, n)), np.asarray(getattr(b, n)))
        )
        for n in names
    )


def _with_rates(p: DosePlan) -> DosePlan:
    if p.has_infusions:
        return p
    zeros = jnp.zeros_like(p.amounts)
    return eqx.tree_at(
        lambda q: (q.rate_on, q.rate_off, q.rate_off_day), p, (zeros, zeros, p.day), is_leaf=lambda x: x is None
    )


def _padded(p: DosePlan, n_seg: int) -> DosePlan:
    """``p`` with empty segments (length 0 at the horizon, no doses) up to ``n_seg``."""
    extra = n_seg - p.n_segments
    if extra == 0:
        return p
    end = p.t0[-1] + p.length[-1]
    pad = lambda a, v: jnp.concatenate([jnp.asarray(a), jnp.full((extra,) + a.shape[1:], v, dtype=a.dtype)])  # noqa: E731
    return DosePlan(
        t0=pad(p.t0, end),
        length=pad(p.length, 0.0),
        day=pad(p.day, p.n_days - 1),
        day_start=pad(p.day_start, False),
        day_segment=p.day_segment,
        amounts=pad(p.amounts, 0.0),
        planned=p.planned,
        rate_on=None if p.rate_on is None else pad(p.rate_on, 0.0),
        rate_off=None if p.rate_off is None else pad(p.rate_off, 0.0),
        rate_off_day=None if p.rate_off_day is None else pad(p.rate_off_day, p.n_days - 1),
        one_segment_per_day=False,
        carries_day_ratios=p.carries_day_ratios,
        compartment=p.compartment,
    )


def given_ratio(planned, given):
    """given / planned of a day (0 when nothing is planned: nothing can be given that day)."""
    return given / jnp.where(planned > 0, planned, 1.0)


def scale_to_given(amounts, planned, given):
    """The doses of a day whose planned total ``planned`` becomes ``given``: each scaled by given /
    planned, exactly ``given`` when it is the day's only dose, nothing on a day with nothing planned
    (``amounts`` broadcasts against ``planned`` and ``given``)."""
    return jnp.where((planned > 0) & (amounts == planned), given, amounts * given_ratio(planned, given))


def _per_segment(per_day, day):
    """``per_day[..., d]`` at each segment's day (``day``: ``(S,)`` shared or ``(..., S)``)."""
    day = jnp.broadcast_to(day, per_day.shape[:-1] + day.shape[-1:])
    return jnp.take_along_axis(per_day, day, axis=-1)


def with_given_doses(plan: DosePlan, given) -> DosePlan:
    """``plan`` with the daily totals ``given`` (``(..., n_days)``, e.g. what dose rules gave) as its
    planned doses, every dose of a day (and every infusion started that day) scaled as
    :func:`scale_to_given` scales them in the solve."""
    given = jnp.asarray(given, dtype=jnp.float64)
    if plan.one_segment_per_day:
        given = jnp.where(plan.planned > 0, given, 0.0)
        return daily_plan(
            given, compartment=plan.compartment, n_compartments=plan.amounts.shape[-1], day_length=float(plan.length[0])
        )
    planned, new = (_per_segment(a, plan.day)[..., None] for a in (plan.planned, given))
    amounts = scale_to_given(plan.amounts, planned, new)
    if plan.rate_on is None:
        return eqx.tree_at(lambda p: (p.amounts, p.planned), plan, (amounts, given))
    ratio_off = _per_segment(given_ratio(plan.planned, given), plan.rate_off_day)[..., None]
    return eqx.tree_at(
        lambda p: (p.amounts, p.planned, p.rate_on, p.rate_off),
        plan,
        (amounts, given, plan.rate_on * given_ratio(planned, new), plan.rate_off * ratio_off),
    )


_BATCHED = ("amounts", "planned", "rate_on", "rate_off")


def broadcast_plan(plan: DosePlan, batch_shape: tuple) -> DosePlan:
    """``plan`` (one patient's) with its doses broadcast to ``batch_shape`` patients."""
    fields = [f for f in _BATCHED if getattr(plan, f) is not None]
    values = [jnp.broadcast_to(getattr(plan, f), tuple(batch_shape) + getattr(plan, f).shape) for f in fields]
    return eqx.tree_at(lambda p: tuple(getattr(p, f) for f in fields), plan, tuple(values))


def plan_rows(plan: DosePlan, rows) -> DosePlan:
    """The patients ``rows`` (an index or slice of the leading batch axis) of a batched plan."""
    fields = [f for f in _BATCHED if getattr(plan, f) is not None]
    if jnp.ndim(plan.t0) == 2:
        fields += [
            f
            for f in ("t0", "length", "day", "day_start", "day_segment", "rate_off_day")
            if getattr(plan, f) is not None
        ]
    return eqx.tree_at(
        lambda p: tuple(getattr(p, f) for f in fields), plan, tuple(getattr(plan, f)[rows] for f in fields)
    )
