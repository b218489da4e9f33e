"""When labs are drawn: lab-visit schedules that dose rules and endpoints read."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._core import _validate as V


def _is_tracer(x) -> bool:
    return isinstance(x, jax.core.Tracer)


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
                f"visits.mask must be a 1-D boolean array (one entry per day), got dtype {m.dtype} and shape {m.shape}"
            )
        V.whole("visits.tail_every", self.tail_every, 0)
        V.whole("visits.tail_start", self.tail_start, 0)
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
                raise ValueError(f"visits.intervals[{i}] must be (from_day, to_day, every_days), got {iv!r}")
            start = V.whole(f"visits.intervals[{i}].from_day", iv[0], 0)
            last = i == len(items) - 1
            end = V.whole(f"visits.intervals[{i}].to_day", iv[1], start + 1, allow_none=last)
            every = V.whole(f"visits.intervals[{i}].every_days", iv[2], 1)
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
    def standard(cls, *, cycle_days: int = 28, weekly_cycles: int = 2, every_days: int = 14) -> "LabVisits":
        """THE standard lab schedule: weekly during the first ``weekly_cycles`` cycles (days 0, 7,
        14, ...), then every ``every_days`` days (14 by default, as in the trials' protocols;
        ``every_days=cycle_days`` gives day 1 of each later cycle, as drug labels ask)."""
        cycle_days = V.whole("visits.cycle_days", cycle_days, 1)
        weekly_cycles = V.whole("visits.weekly_cycles", weekly_cycles, 0)
        every = V.whole("visits.every_days", every_days, 1)
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

    def with_last_day(self, n_days: int) -> np.ndarray:
        """The visit days in ``[0, n_days]`` plus ``n_days`` itself (an end-of-treatment visit):
        the assessment days of endpoints."""
        return np.union1d(self.days(int(n_days) + 1), [int(n_days)])
