"""Dosing regimens: once-daily oral doses, built from cycles or from NONMEM event tables.

A :class:`Regimen` is the planned dose of each study day (mg, one oral dose at the start of
the day).  It is an ``equinox.Module`` whose only array leaf is ``doses``, so a regimen passes
through ``jit``, ``vmap`` and ``grad`` (a relaxed, continuous schedule can be differentiated).
Dose-modification rules (see :mod:`lenapk.rules`) act on the planned doses at lab visits.

Time conventions: the regimen speaks in days (day 0 is the first dose, cycle k ends on day
``cycle_days * k``); event tables speak NONMEM: TIME in hours, AMT in mg.
"""

from __future__ import annotations

from pathlib import Path

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ._data import data_path

HOURS_PER_DAY = 24.0
EVENT_COLUMNS = ("ID", "TIME", "AMT", "EVID", "CMT", "ADDL", "II")


def _check_number(field: str, value, *, minimum=None, strict=False, integer=False):
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"regimen.{field} must be a number, got {value!r}") from None
    if not np.isfinite(x):
        raise ValueError(f"regimen.{field} must be finite, got {value!r}")
    if integer and x != int(x):
        raise ValueError(f"regimen.{field} must be a whole number, got {value!r}")
    if minimum is not None and (x <= minimum if strict else x < minimum):
        rel = ">" if strict else ">="
        raise ValueError(f"regimen.{field} must be {rel} {minimum}, got {value!r}")
    return x


class Regimen(eqx.Module):
    """Planned once-daily doses (mg) for each day of treatment.

    Build one with :meth:`cycles`, :meth:`from_daily_doses` or :meth:`from_event_table`.
    """

    doses: jnp.ndarray
    cycle_days: int = eqx.field(static=True, default=28)
    name: str = eqx.field(static=True, default="regimen")

    def __check_init__(self):
        if self.cycle_days < 1:
            raise ValueError(f"regimen.cycle_days must be >= 1, got {self.cycle_days}")

    @property
    def n_days(self) -> int:
        return int(self.doses.shape[-1])

    @property
    def n_cycles(self) -> float:
        return self.n_days / self.cycle_days

    # ---------------------------------------------------------------- constructors
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
        """Daily dosing in cycles: ``days_on`` days of each ``cycle_days``-day cycle.

        Dose on day d (0-based) when dosing:
        ``min(start_mg + escalation_mg * floor(d / escalate_every_days), max_mg)``.
        """
        start_mg = _check_number("start_mg", start_mg, minimum=0, strict=True)
        n_cycles = int(_check_number("n_cycles", n_cycles, minimum=0, strict=True, integer=True))
        cycle_days = int(
            _check_number("cycle_days", cycle_days, minimum=0, strict=True, integer=True)
        )
        days_on = cycle_days if days_on is None else days_on
        days_on = int(_check_number("days_on", days_on, minimum=0, strict=True, integer=True))
        if days_on > cycle_days:
            raise ValueError(
                f"regimen.days_on must be <= cycle_days ({cycle_days}), got {days_on}"
            )
        escalation_mg = _check_number("escalation_mg", escalation_mg, minimum=0)
        max_mg = start_mg if max_mg is None else _check_number("max_mg", max_mg, minimum=0, strict=True)
        if max_mg < start_mg:
            raise ValueError(f"regimen.max_mg must be >= start_mg ({start_mg}), got {max_mg}")
        if escalation_mg > 0:
            if escalate_every_days is None:
                raise ValueError("regimen.escalate_every_days is required when escalation_mg > 0")
            escalate_every_days = int(
                _check_number(
                    "escalate_every_days", escalate_every_days, minimum=0, strict=True, integer=True
                )
            )
        n_days = n_cycles * cycle_days
        day = np.arange(n_days)
        level = start_mg + (
            escalation_mg * (day // escalate_every_days) if escalation_mg > 0 else 0.0
        )
        dose = np.minimum(level, max_mg) * ((day % cycle_days) < days_on)
        return cls(doses=jnp.asarray(dose, dtype=jnp.float64), cycle_days=cycle_days, name=name)

    @classmethod
    def from_daily_doses(cls, doses, *, cycle_days: int = 28, name: str = "regimen") -> "Regimen":
        """Explicit dose (mg) for each day; zeros are days without a dose."""
        arr = np.asarray(doses, dtype=float)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(
                f"regimen.doses must be a non-empty 1-D sequence of mg per day, got shape {arr.shape}"
            )
        bad = np.flatnonzero(~np.isfinite(arr) | (arr < 0))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"regimen.doses[{i}] must be a finite dose >= 0 mg, got {arr[i]!r}"
            )
        cycle_days = int(_check_number("cycle_days", cycle_days, minimum=0, strict=True, integer=True))
        return cls(doses=jnp.asarray(arr, dtype=jnp.float64), cycle_days=cycle_days, name=name)

    @classmethod
    def from_event_table(
        cls, df: pd.DataFrame, *, n_days: int | None = None, cycle_days: int = 28, name: str = "regimen"
    ) -> "Regimen":
        """Build from a NONMEM-style dose table (one patient).

        Columns: ID, TIME (h), AMT (mg), EVID (1 = dose; 0 observation rows are ignored),
        CMT (1 = depot), and optionally ADDL and II (h), expanded to explicit doses.  Doses
        must fall at whole days (TIME a multiple of 24 h), at most one per day.
        """
        if not isinstance(df, pd.DataFrame):
            raise ValueError(f"event table must be a pandas DataFrame, got {type(df).__name__}")
        cols = [str(c).upper() for c in df.columns]
        unknown = sorted(set(cols) - set(EVENT_COLUMNS) - {"DV", "MDV"})
        if unknown:
            raise ValueError(
                f"event table: unknown column(s) {unknown}; expected {list(EVENT_COLUMNS)} (DV, MDV allowed)"
            )
        df = df.copy()
        df.columns = cols
        for required in ("TIME", "AMT"):
            if required not in df:
                raise ValueError(f"event table: column {required} is required")
        if "EVID" not in df:
            df["EVID"] = 1
        if "ID" in df and df["ID"].nunique() > 1:
            raise ValueError(
                f"event table: one patient per regimen, got ID values {sorted(df['ID'].unique())[:5]}"
            )
        for col in ("TIME", "AMT", "EVID", "CMT", "ADDL", "II"):
            if col in df:
                vals = pd.to_numeric(df[col], errors="coerce")
                bad = vals.isna() & df[col].notna() | (~np.isfinite(vals.fillna(0.0)))
                if col in ("TIME", "AMT", "EVID"):
                    bad = bad | vals.isna()
                if bad.any():
                    r = int(np.flatnonzero(bad.to_numpy())[0])
                    raise ValueError(
                        f"event table row {r}: {col} must be a finite number, got {df[col].iloc[r]!r}"
                    )
                df[col] = vals
        times = df["TIME"].to_numpy()
        if np.any(times < 0):
            r = int(np.flatnonzero(times < 0)[0])
            raise ValueError(f"event table row {r}: TIME must be >= 0 h, got {times[r]}")
        if np.any(np.diff(times) < 0):
            r = int(np.flatnonzero(np.diff(times) < 0)[0]) + 1
            raise ValueError(
                f"event table row {r}: TIME must be sorted (non-decreasing), got {times[r]} after {times[r - 1]}"
            )
        doses = df[df["EVID"] != 0]
        bad_evid = ~doses["EVID"].isin([1])
        if bad_evid.any():
            r = int(doses.index[np.flatnonzero(bad_evid.to_numpy())[0]])
            raise ValueError(
                f"event table row {r}: EVID must be 0 (observation) or 1 (dose), got {df.loc[r, 'EVID']}"
            )
        if "CMT" in doses and not doses["CMT"].fillna(1).eq(1).all():
            r = int(doses.index[np.flatnonzero(~doses["CMT"].fillna(1).eq(1).to_numpy())[0]])
            raise ValueError(f"event table row {r}: CMT must be 1 (depot, oral), got {df.loc[r, 'CMT']}")
        expanded = []
        for r, row in doses.iterrows():
            amt = row["AMT"]
            if amt < 0:
                raise ValueError(f"event table row {r}: AMT must be >= 0 mg, got {amt}")
            addl = row.get("ADDL", 0.0)
            addl = 0.0 if pd.isna(addl) else addl
            ii = row.get("II", np.nan)
            if addl < 0 or addl != int(addl):
                raise ValueError(f"event table row {r}: ADDL must be a whole number >= 0, got {addl}")
            if addl > 0 and (pd.isna(ii) or ii <= 0):
                raise ValueError(f"event table row {r}: ADDL={int(addl)} needs II > 0 h, got II={ii}")
            step = 0.0 if addl == 0 else float(ii)
            for k in range(int(addl) + 1):
                expanded.append((r, row["TIME"] + k * step, amt))
        if not expanded:
            raise ValueError("event table: no dose rows (EVID=1)")
        last = max(t for _, t, _ in expanded)
        total_days = int(last // HOURS_PER_DAY) + 1 if n_days is None else int(n_days)
        daily = np.zeros(total_days)
        seen = {}
        for r, t, amt in expanded:
            day, rem = divmod(t, HOURS_PER_DAY)
            if abs(rem) > 1e-9:
                raise ValueError(
                    f"event table row {r}: dose TIME {t} h is not at a whole day; lenapk doses once daily at "
                    "TIME = 24 h x day"
                )
            day = int(day)
            if day >= total_days:
                continue
            if day in seen:
                raise ValueError(
                    f"event table row {r}: a second dose on day {day} (TIME {t} h), also given by row {seen[day]}; "
                    "lenapk takes one dose per day"
                )
            seen[day] = r
            daily[day] = amt
        return cls.from_daily_doses(daily, cycle_days=cycle_days, name=name)

    # ---------------------------------------------------------------- export
    def to_event_table(self, *, patient_id: int = 1, compress: bool = True) -> pd.DataFrame:
        """NONMEM dose records (TIME h, AMT mg, EVID 1, CMT 1); runs of equal daily doses
        are written as one row with ADDL and II = 24 h when ``compress``."""
        d = np.asarray(self.doses)
        rows = []
        day = 0
        while day < d.size:
            if d[day] <= 0:
                day += 1
                continue
            run = 1
            while compress and day + run < d.size and d[day + run] == d[day]:
                run += 1
            rows.append(
                {
                    "ID": patient_id,
                    "TIME": day * HOURS_PER_DAY,
                    "AMT": float(d[day]),
                    "EVID": 1,
                    "CMT": 1,
                    "ADDL": run - 1,
                    "II": HOURS_PER_DAY if run > 1 else 0.0,
                }
            )
            day += run
        return pd.DataFrame(rows, columns=list(EVENT_COLUMNS))


def _optional(row, key, default=None):
    v = row.get(key)
    return default if v is None or (isinstance(v, float) and np.isnan(v)) or v == "" else v


def regimens_from_table(table: pd.DataFrame, *, n_cycles_default: int = 24) -> dict[str, Regimen]:
    """Regimens from a table with the columns of ``data/regimens.csv``."""
    out = {}
    for _, row in table.iterrows():
        rid = str(row["regimen_id"])
        escalation = float(_optional(row, "escalation_mg", 0.0))
        out[rid] = Regimen.cycles(
            float(row["start_mg"]),
            n_cycles=int(_optional(row, "min_cycles", n_cycles_default)),
            cycle_days=int(row["cycle_days"]),
            days_on=int(row["days_on_per_cycle"]),
            escalation_mg=escalation,
            escalate_every_days=int(_optional(row, "escalate_every_days", 28)) if escalation > 0 else None,
            max_mg=float(_optional(row, "max_mg", row["start_mg"])),
            name=rid,
        )
    return out


def load_regimens(path: str | Path | None = None, *, n_cycles_default: int = 24) -> dict[str, Regimen]:
    """The bundled regimens (``data/regimens.csv``) keyed by ``regimen_id``.

    Regimens without a stated number of cycles get ``n_cycles_default``.
    """
    table = pd.read_csv(path if path is not None else data_path("regimens.csv"))
    return regimens_from_table(table, n_cycles_default=n_cycles_default)
