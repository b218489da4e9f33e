"""NONMEM event tables in and out: several patients per table, one regimen per ID.

Columns (NONMEM meaning; units lenapk's): ``ID``; ``TIME`` (h); ``AMT`` (mg); ``EVID`` (1 dose,
0 observation: ignored here); ``CMT`` (compartment number: 1 depot, 2 central, 3 peripheral by
default, i.e. ADVAN2/ADVAN4 numbering); ``RATE`` (mg/h of a zero-order infusion, 0 for a bolus);
``ADDL`` additional doses every ``II`` hours; ``MDV``, ``DV`` (accepted, ignored); ``SS`` (only 0:
steady-state doses are not supported); ``DUR`` (h; an infusion's duration instead of ``RATE``,
as in mrgsolve).  A bad row is refused with :class:`EventTableError` naming the row (0-based
position in the table) and the column, before anything is simulated.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ._regimen import HOURS_PER_DAY, ROUTES, Regimen

READ_COLUMNS = ("ID", "TIME", "AMT", "EVID", "CMT", "RATE", "ADDL", "II", "SS", "MDV", "DV", "DUR")
WRITE_COLUMNS = ("ID", "TIME", "AMT", "EVID", "CMT", "RATE", "ADDL", "II", "MDV")
NUMERIC = ("TIME", "AMT", "EVID", "CMT", "RATE", "ADDL", "II", "SS", "DUR")


class EventTableError(ValueError):
    """A malformed event table; ``row`` (0-based) and ``field`` name the culprit."""

    def __init__(self, row: int | None, field: str | None, message: str):
        self.row, self.field = row, field
        where = "event table" + (f" row {row}" if row is not None else "") + (f": {field}" if field else "")
        super().__init__(f"{where} {message}")


def _show(value):
    """A table value for a message: ``1`` and ``nan``, not ``np.int64(1)`` and ``np.float64(nan)``."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _numeric(df: pd.DataFrame) -> pd.DataFrame:
    """The numeric columns as floats ("." is missing, as in NONMEM files); a non-number or
    non-finite value names its row.  TIME and EVID are required on every row, AMT on dose rows
    (checked with them)."""
    out = df.copy()
    for col in NUMERIC:
        if col not in out:
            continue
        given = out[col].notna() & (out[col].astype(str).str.strip() != ".")
        vals = pd.to_numeric(out[col].where(given), errors="coerce").astype(float)
        bad = (vals.isna() & given) | np.isinf(vals)
        if col in ("TIME", "EVID"):
            bad |= vals.isna()
        if bad.any():
            r = int(np.flatnonzero(bad.to_numpy())[0])
            raise EventTableError(r, col, f"must be a finite number, got {_show(df[col].iloc[r])}")
        out[col] = vals
    return out


def _prepare(table) -> pd.DataFrame:
    if not isinstance(table, pd.DataFrame):
        raise EventTableError(None, None, f"must be a pandas DataFrame, got {type(table).__name__}")
    df = table.copy()
    df.columns = [str(c).upper() for c in df.columns]
    unknown = sorted(set(df.columns) - set(READ_COLUMNS))
    if unknown:
        raise EventTableError(None, None, f"has unknown column(s) {unknown}; expected among {list(READ_COLUMNS)}")
    for required in ("TIME", "AMT"):
        if required not in df:
            raise EventTableError(None, required, "column is required")
    if "EVID" not in df:
        df["EVID"] = (pd.to_numeric(df["AMT"], errors="coerce").fillna(0) > 0).astype(float)  # "." -> observation
    if "ID" not in df:
        df["ID"] = 1
    return _numeric(df.reset_index(drop=True))


def _check_ids(df: pd.DataFrame) -> None:
    """IDs contiguous, times non-decreasing and non-negative within each ID."""
    ids = df["ID"].to_numpy()
    seen, prev = set(), object()
    for r, i in enumerate(ids):
        if i != prev:
            if i in seen:
                raise EventTableError(
                    r, "ID", f"{_show(i)} appears again after other IDs; each ID's records must be contiguous"
                )
            seen.add(i)
            prev = i
    t = df["TIME"].to_numpy()
    for r in range(len(df)):
        if t[r] < 0:
            raise EventTableError(r, "TIME", f"must be >= 0 h, got {t[r]:g}")
        if r and ids[r] == ids[r - 1] and t[r] < t[r - 1]:
            raise EventTableError(
                r, "TIME", f"must be sorted within ID {_show(ids[r])} (non-decreasing), got {t[r]:g} after {t[r - 1]:g}"
            )


def _dose_events(r: int, rec: dict, compartments: tuple[str, ...]) -> list[tuple]:
    """(row, time_h, amount, compartment, duration_h) of a dose record, ADDL expanded."""
    get = lambda k, default=0.0: default if k not in rec or pd.isna(rec[k]) else rec[k]  # noqa: E731
    amt, evid = rec["AMT"], rec["EVID"]
    if evid != 1:
        raise EventTableError(r, "EVID", f"must be 0 (observation) or 1 (dose), got {evid:g}")
    if not np.isfinite(amt):
        raise EventTableError(r, "AMT", f"must be a finite number on a dose record, got {amt!r}")
    if amt < 0:
        raise EventTableError(r, "AMT", f"must be >= 0 mg, got {amt:g}")
    cmt = get("CMT", 1.0)
    if cmt != int(cmt) or not 1 <= cmt <= len(compartments):
        names = ", ".join(f"{i + 1} ({n})" for i, n in enumerate(compartments))
        raise EventTableError(r, "CMT", f"must be a compartment number among {names}, got {cmt:g}")
    if get("SS") != 0:
        raise EventTableError(r, "SS", f"must be 0: steady-state doses are not supported, got {get('SS'):g}")
    rate, dur = get("RATE"), get("DUR")
    if rate < 0:
        raise EventTableError(r, "RATE", f"must be >= 0 mg/h (modelled rates -1/-2 are not supported), got {rate:g}")
    if dur < 0:
        raise EventTableError(r, "DUR", f"must be >= 0 h, got {dur:g}")
    if rate > 0 and dur > 0:
        raise EventTableError(r, "RATE", "and DUR both given; an infusion takes one of them")
    if (rate > 0 or dur > 0) and amt <= 0:
        raise EventTableError(r, "AMT", f"must be > 0 mg for an infusion (RATE/DUR), got {amt:g}")
    duration = amt / rate if rate > 0 else dur
    addl, ii = get("ADDL"), get("II")
    if addl < 0 or addl != int(addl):
        raise EventTableError(r, "ADDL", f"must be a whole number >= 0, got {addl:g}")
    if addl > 0 and not ii > 0:
        raise EventTableError(r, "ADDL", f"of {int(addl)} needs II > 0 h, got II={ii:g}")
    name = compartments[int(cmt) - 1]
    return [(r, rec["TIME"] + k * ii, amt, name, duration) for k in range(int(addl) + 1)]


def read_event_table(
    table: pd.DataFrame, *, n_days: int | None = None, cycle_days: int = 28, compartments: tuple[str, ...] = ROUTES
) -> dict:
    """Regimens by ID from a NONMEM event table (see the module docstring), in table order.

    ``compartments`` names the compartments by CMT number (default 1 depot, 2 central,
    3 peripheral).  ``n_days``: the horizon of every regimen (default: each patient's days up
    to its last dose).  Observation rows are ignored; an ID without dose rows is refused."""
    df = _prepare(table)
    _check_ids(df)
    out = {}
    for pid, rows in df.groupby("ID", sort=False):
        events = []
        for r, rec in zip(rows.index, rows.to_dict("records")):
            if rec["EVID"] != 0:
                events += _dose_events(int(r), rec, compartments)
        if not events:
            raise EventTableError(int(rows.index[0]), "EVID", f"ID {pid!r} has no dose record (EVID 1)")
        events.sort(key=lambda e: e[1])  # additional doses may pass later records
        key = pid.item() if isinstance(pid, np.generic) else pid
        _, t, a, c, d = zip(*events)
        out[key] = Regimen.from_events(
            np.array(t),
            np.array(a),
            compartment=list(c),
            duration_h=np.array(d),
            n_days=n_days,
            cycle_days=cycle_days,
            name=str(key),
        )
    return out


def _runs(reg: Regimen, compress: bool):
    """Runs of events with the same amount, compartment and duration at a constant interval."""
    t, a = np.asarray(reg.time_h, dtype=float), np.asarray(reg.amount_mg, dtype=float)
    i = 0
    while i < reg.n_events:
        j = i + 1
        key = (a[i], reg.compartment[i], reg.duration_h[i])
        while (
            compress
            and j < reg.n_events
            and (a[j], reg.compartment[j], reg.duration_h[j]) == key
            and (j == i + 1 or np.isclose(t[j] - t[j - 1], t[i + 1] - t[i], rtol=0, atol=1e-9))
            and t[j] > t[j - 1]
        ):
            j += 1
        yield i, j
        i = j


def write_event_table(
    regimens: Mapping | Regimen, *, compress: bool = True, compartments: tuple[str, ...] = ROUTES
) -> pd.DataFrame:
    """NONMEM dose records (EVID 1, MDV 1) of one regimen or of a mapping ID -> regimen; runs of
    equal doses at a constant interval become one record with ADDL and II when ``compress``."""
    if isinstance(regimens, Regimen):
        regimens = {1: regimens}
    rows = []
    for pid, reg in regimens.items():
        t, a = np.asarray(reg.time_h, dtype=float), np.asarray(reg.amount_mg, dtype=float)
        for i, j in _runs(reg, compress):
            dur = reg.duration_h[i]
            rows.append(
                {
                    "ID": pid,
                    "TIME": t[i],
                    "AMT": a[i],
                    "EVID": 1,
                    "CMT": compartments.index(reg.compartment[i]) + 1,
                    "RATE": a[i] / dur if dur > 0 else 0.0,
                    "ADDL": j - i - 1,
                    "II": t[i + 1] - t[i] if j - i > 1 else 0.0,
                    "MDV": 1,
                }
            )
    return pd.DataFrame(rows, columns=list(WRITE_COLUMNS))


__all__ = ["EventTableError", "HOURS_PER_DAY", "read_event_table", "write_event_table"]
