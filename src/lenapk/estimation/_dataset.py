"""NONMEM data sets in: individual records become the padded :class:`Subjects` of estimation.

:func:`read_nonmem` reads a CSV file, a whitespace-separated file with a header line (``.dta``,
``.txt``: a header without a comma) or a pandas DataFrame.  Column names are case-insensitive
(they are upper-cased); ``"."`` and blank cells are missing, as in NONMEM files.

Columns (NONMEM meaning):

- ``ID`` (any type, never missing; each ID's records contiguous) and ``TIME`` (>= 0,
  non-decreasing within an ID) are required;
- ``DV`` (the observation; 0 or missing on dose records), ``AMT`` (> 0 on dose records),
  ``EVID`` (default 1 where AMT > 0, else 0), ``MDV`` (default 1 where EVID != 0, else 0),
  ``CMT`` (NONMEM compartment number, default 1), ``RATE`` (an infusion's rate: it lasts
  AMT/RATE; 0 for a bolus), ``ADDL`` additional doses every ``II``, ``SS`` (0, or 1: the dose is
  at steady state with interval II) are optional;
- ``DVID`` (optional, numbers or text) tells the outputs of a multi-output data set apart;
- the covariates named by the caller (numbers, constant within an ID); any other column is kept
  in the table and otherwise ignored.

EVID codes: 0 observation (an observation when MDV is 0), 1 dose, 2 other event (kept in the
table, ignored otherwise), 3 reset, 4 reset and dose.  rxode2's classic code ``100*c + 1`` (a
bolus into compartment ``c`` = 1..99; ``101`` in nlmixr2's ``theo_sd``) is read as EVID 1 with
CMT ``c``; the table shows the mapped values.  Other classic rxode2 codes (infusion and
steady-state forms such as 10101 or 110) are refused.

A reset (EVID 3 or 4) and a steady-state dose (SS=1) start a new epoch for the records from
that one on (see :mod:`lenapk.estimation._subjects`); additional doses (ADDL) that would fall at
or after the next reset of their subject are dropped.

Not supported (refused with a message that says so): SS=2, modelled infusions (RATE -1/-2),
time-varying covariates.  BLQ records (the M3 method) are not handled: censored data must be
removed (``ignore``) or coded as ordinary observations.

Every check happens before an array is built; a bad record raises
:class:`~lenapk.calibration.DatasetError` naming the source, the 0-based ``ROW`` of the record in
the source after the header (what the table's ``ROW`` column keeps) and the column.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..calibration._observations import DatasetError
from ._subjects import Subjects

NUMERIC_COLUMNS = ("TIME", "DV", "AMT", "EVID", "MDV", "CMT", "RATE", "ADDL", "II", "SS")
EVID_CODES = "0 (observation), 1 (dose), 2 (other event), 3 (reset), 4 (reset and dose)"
DOSE_EVIDS = (1, 4)
RESET_EVIDS = (3, 4)
NO_DVID = "DV"  # the single output's name when the data have no DVID column


class _RecordError(DatasetError):
    """A :class:`DatasetError` whose ``row`` is 0-based after the header: the file line is
    ``row + 2`` (``DatasetError`` itself counts 1-based rows)."""

    def __init__(self, source: str, row: int | None, field: str | None, message: str):
        self.source, self.row, self.field = source, row, field
        where = source
        if row is not None:
            where += f" row {row}" + ("" if source.startswith("<") else f" (line {row + 2})")
        if field is not None:
            where += f", field {field!r}"
        ValueError.__init__(self, f"{where}: {message}")


@dataclass(frozen=True)
class NonmemData:
    """A read data set.

    - ``table``: the records kept (after ``ignore``), columns upper-cased, numeric columns as
      floats, EVID and MDV filled in (rxode2 codes mapped), and ``ROW``: each record's 0-based
      row in the source after the header;
    - ``subjects``: the padded arrays; ``obs_row`` indexes ``table`` by position;
    - ``covariates``: the covariate names (upper-cased), keys of ``subjects.covariates``;
    - ``outputs``: the DVID values in the order of ``obs_output`` (``("DV",)`` without DVID);
    - ``source``: the file name, or ``"<DataFrame>"``.
    """

    table: pd.DataFrame
    subjects: Subjects
    covariates: tuple[str, ...]
    outputs: tuple
    source: str

    @property
    def n_subjects(self) -> int:
        return self.subjects.n_subjects

    @property
    def n_observations(self) -> int:
        return self.subjects.n_observations


def _show(value):
    """A value for a message: ``1`` and ``'x'``, not ``np.float64(1.0)``."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return repr(value)


def _plain(value):
    """A table value as a plain Python value, whole floats as ints (IDs, DVIDs)."""
    if isinstance(value, np.generic):
        value = value.item()
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _load(source) -> tuple[pd.DataFrame, str]:
    """The raw table (text cells from files) and the source's name for messages."""
    if isinstance(source, pd.DataFrame):
        return source.reset_index(drop=True).copy(), "<DataFrame>"
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"NONMEM data set {path} not found")
    with path.open() as f:
        header = f.readline()
    sep = "," if "," in header else r"\s+"
    return pd.read_csv(path, sep=sep, dtype=str, na_values=["."]), path.name


def _auto(col: pd.Series) -> pd.Series:
    """A column as floats when every present cell is a number (blank and "." are missing),
    otherwise as given with missing cells as NaN."""
    if pd.api.types.is_bool_dtype(col):
        return col
    if pd.api.types.is_numeric_dtype(col):
        return col.astype(float)
    text = col.map(type).eq(str).to_numpy()
    col = col.copy()
    col[text] = col[text].str.strip()
    col = col.where(~col.isin(["", "."]) & col.notna(), np.nan)
    try:
        return pd.to_numeric(col).astype(float)
    except (TypeError, ValueError):
        return col


def _columns(raw: pd.DataFrame, src: str, drop, rename) -> pd.DataFrame:
    """Drop (source names), rename, upper-case, add ROW, convert numeric columns."""
    upper = [str(c).strip().upper() for c in raw.columns]
    dropped = [str(d).upper() for d in drop]
    for d in dropped:
        if d not in upper:
            raise _RecordError(src, None, d, "is not a column; it cannot be dropped")
    df = raw.iloc[:, [i for i, u in enumerate(upper) if u not in dropped]].copy()
    df.columns = [u for u in upper if u not in dropped]
    mapping = {str(k).upper(): str(v).upper() for k, v in (rename or {}).items()}
    for old in mapping:
        if old not in df.columns:
            raise _RecordError(src, None, old, "is not a column; it cannot be renamed")
    df = df.rename(columns=mapping)
    dup = df.columns[df.columns.duplicated()]
    if len(dup):
        raise _RecordError(src, None, dup[0], "appears twice (column names are case-insensitive)")
    if "ROW" in df.columns:
        raise _RecordError(src, None, "ROW", "is reserved for the source row number; drop or rename the column")
    for required in ("ID", "TIME"):
        if required not in df.columns:
            raise _RecordError(src, None, required, "column is required")
    df = df.apply(_auto)
    df["ROW"] = np.arange(len(df), dtype=np.int64)
    return df


def _ignore(df: pd.DataFrame, src: str, ignore: str | None) -> pd.DataFrame:
    """The records that the pandas expression ``ignore`` does not select."""
    if ignore is not None:
        try:
            hit = pd.Series(df.eval(ignore, engine="python"), index=df.index)
        except Exception as e:
            raise _RecordError(src, None, None, f"ignore={ignore!r} cannot be evaluated: {e}") from e
        if not pd.api.types.is_bool_dtype(hit):
            raise _RecordError(src, None, None, f"ignore={ignore!r} must select rows (true/false per record)")
        df = df[~hit.to_numpy()]
    if df.empty:
        raise _RecordError(src, None, None, "has no records" + (f" left after ignore={ignore!r}" if ignore else ""))
    return df.reset_index(drop=True)


def _numeric(df: pd.DataFrame, src: str, columns) -> None:
    """The used columns as finite floats (missing allowed here), in place."""
    for col in columns:
        if col not in df:
            continue
        given = df[col].notna()
        vals = pd.to_numeric(df[col].where(given), errors="coerce").astype(float)
        bad = given & ~np.isfinite(vals)
        if bad.any():
            r = int(np.flatnonzero(bad.to_numpy())[0])
            raise _RecordError(src, int(df["ROW"][r]), col, f"must be a finite number, got {_show(df[col][r])}")
        df[col] = vals


def _first(df: pd.DataFrame, mask) -> int:
    """The source ROW of the first record where ``mask`` holds."""
    return int(df["ROW"].to_numpy()[np.flatnonzero(np.asarray(mask))[0]])


def _check_ids(df: pd.DataFrame, src: str) -> None:
    """IDs present and contiguous; TIME present, >= 0 and non-decreasing within each ID."""
    if df["ID"].isna().any():
        raise _RecordError(src, _first(df, df["ID"].isna()), "ID", "is missing; every record needs an ID")
    t = df["TIME"].to_numpy()
    if np.isnan(t).any():
        raise _RecordError(src, _first(df, np.isnan(t)), "TIME", "is missing; every record needs a TIME")
    if (t < 0).any():
        r = np.flatnonzero(t < 0)[0]
        raise _RecordError(src, _first(df, t < 0), "TIME", f"must be >= 0, got {t[r]:g}")
    ids, seen = df["ID"].to_numpy(), set()
    for r in range(len(df)):
        if r == 0 or ids[r] != ids[r - 1]:
            if ids[r] in seen:
                msg = f"ID {_show(ids[r])} appears again after other IDs; each ID's records must be contiguous"
                raise _RecordError(src, int(df["ROW"][r]), "ID", msg)
            seen.add(ids[r])
        elif t[r] < t[r - 1]:
            msg = f"must not decrease within ID {_show(ids[r])} (data sorted by time), got {t[r]:g} after {t[r - 1]:g}"
            raise _RecordError(src, int(df["ROW"][r]), "TIME", msg)


def _classic_evids(df: pd.DataFrame, src: str) -> None:
    """rxode2's ``100*c + 1`` (bolus into compartment c) as EVID 1, CMT c, in place."""
    evid = df["EVID"].to_numpy()
    classic = (evid >= 101) & (evid <= 9901) & (evid % 100 == 1)
    if not classic.any():
        return
    cmt = (evid[classic] - 1) // 100
    created = "CMT" not in df
    if created:
        df["CMT"] = np.nan
    given = df["CMT"].to_numpy()[classic]
    clash = ~np.isnan(given) & (given != cmt)
    if clash.any():
        i = np.flatnonzero(clash)[0]
        rows = df["ROW"].to_numpy()[classic]
        msg = f"is {given[i]:g} but EVID {evid[classic][i]:g} (rxode2) doses into compartment {cmt[i]:g}"
        raise _RecordError(src, int(rows[i]), "CMT", msg)
    df.loc[classic, "CMT"] = cmt
    df.loc[classic, "EVID"] = 1.0
    if created:
        df["CMT"] = df["CMT"].fillna(1.0)  # NONMEM's default, so the table shows what was read


def _events(df: pd.DataFrame, src: str) -> None:
    """EVID and MDV filled in (NONMEM defaults) and checked, in place."""
    amt = df["AMT"].fillna(0).to_numpy() if "AMT" in df else np.zeros(len(df))
    implied = np.where(amt > 0, 1.0, 0.0)
    df["EVID"] = df["EVID"].fillna(pd.Series(implied)) if "EVID" in df else implied
    _classic_evids(df, src)
    evid = df["EVID"].to_numpy()
    bad = ~np.isin(evid, (0, 1, 2, 3, 4))
    if bad.any():
        msg = f"must be one of {EVID_CODES} or rxode2's 100*c+1 (bolus into compartment c), got {evid[bad][0]:g}"
        raise _RecordError(src, _first(df, bad), "EVID", msg)
    implied = np.where(evid != 0, 1.0, 0.0)
    df["MDV"] = df["MDV"].fillna(pd.Series(implied)) if "MDV" in df else implied
    mdv = df["MDV"].to_numpy()
    if not np.isin(mdv, (0, 1)).all():
        bad = ~np.isin(mdv, (0, 1))
        raise _RecordError(src, _first(df, bad), "MDV", f"must be 0 or 1, got {mdv[bad][0]:g}")


def _col(df: pd.DataFrame, name: str, default: float) -> np.ndarray:
    """A numeric column as floats with missing cells (or a missing column) at ``default``."""
    return df[name].fillna(default).to_numpy(dtype=float) if name in df else np.full(len(df), default)


def _masks(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(dose records, observation records)."""
    evid, mdv = df["EVID"].to_numpy(), df["MDV"].to_numpy()
    return np.isin(evid, DOSE_EVIDS), (evid == 0) & (mdv == 0)


def _check(df: pd.DataFrame, src: str, bad, field: str, message) -> None:
    """Raise on the first record where ``bad`` holds; ``message(i)`` for its position ``i``."""
    bad = np.asarray(bad)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _RecordError(src, int(df["ROW"][i]), field, message(i))


def _check_doses(df: pd.DataFrame, src: str) -> None:
    """AMT, DV and CMT of dose and observation records; RATE, ADDL, II and SS of every record."""
    dose, obs = _masks(df)
    amt = df["AMT"].to_numpy(dtype=float) if "AMT" in df else np.full(len(df), np.nan)
    dv = df["DV"].to_numpy(dtype=float) if "DV" in df else np.full(len(df), np.nan)
    cmt = _col(df, "CMT", 1.0)
    rate, addl, ii, ss = (_col(df, c, 0.0) for c in ("RATE", "ADDL", "II", "SS"))
    not_dose = "is on a record that is not a dose (EVID 1 or 4)"
    rules = (  # (bad records, field, message; "{}" is the record's value)
        (dose & ~(amt > 0), "AMT", amt, "must be > 0 on a dose record (EVID 1 or 4), got {:g}"),
        (dose & ~np.isnan(dv) & (dv != 0), "DV", dv, "must be 0 or missing on a dose record, got {:g}"),
        (obs & np.isnan(dv), "DV", dv, "is missing on an observation record (EVID 0, MDV 0)"),
        ((dose | obs) & ((cmt < 1) | (cmt % 1 != 0)), "CMT", cmt, "must be a positive whole number, got {:g}"),
        (rate < 0, "RATE", rate, "must be >= 0 (modelled RATE -1/-2 is not supported), got {:g}"),
        ((addl < 0) | (addl % 1 != 0), "ADDL", addl, "must be a whole number >= 0, got {:g}"),
        (ii < 0, "II", ii, "must be >= 0, got {:g}"),
        (~np.isin(ss, (0, 1)), "SS", ss, "must be 0 or 1 (SS=2 is not supported), got {:g}"),
        ((addl > 0) & ~dose, "ADDL", addl, "of {:g} " + not_dose),
        ((ss == 1) & ~dose, "SS", ss, "of {:g} " + not_dose),
        ((addl > 0) & ~(ii > 0), "ADDL", ii, "needs II > 0 (additional doses at intervals II), got II={:g}"),
        ((ss == 1) & ~(ii > 0), "SS", ii, "of 1 needs II > 0 (the steady-state dosing interval), got II={:g}"),
    )
    for bad, field, value, message in rules:
        _check(df, src, bad, field, lambda i: message.format(value[i]))


def _starts(df: pd.DataFrame) -> np.ndarray:
    """Each subject's first position and the end: subject ``s`` is ``[b[s], b[s+1])``."""
    ids = df["ID"].to_numpy()
    change = np.ones(len(ids), dtype=bool)
    change[1:] = ids[1:] != ids[:-1]
    return np.append(np.flatnonzero(change), len(ids))


def _check_covariates(df: pd.DataFrame, src: str, covariates, bounds) -> None:
    """Each covariate a column, present on every record and constant within each ID."""
    first = np.repeat(bounds[:-1], np.diff(bounds))  # each record's subject's first position
    for name in covariates:
        v = df[name].to_numpy(dtype=float)
        _check(df, src, np.isnan(v), name, lambda i: "is missing; a covariate needs a value on every record")
        msg = "changes within ID {} ({:g}, then {:g}); time-varying covariates are not supported"
        _check(df, src, v != v[first], name, lambda i: msg.format(_show(df["ID"][i]), v[first[i]], v[i]))


def _check_observed(df: pd.DataFrame, src: str, bounds) -> None:
    """Every ID has an observation; with DVID, every observation has one."""
    _, obs = _masks(df)
    for a, b in zip(bounds[:-1], bounds[1:]):
        if not obs[a:b].any():
            msg = f"ID {_show(df['ID'][a])} has no observation (a record with EVID 0, MDV 0 and a DV)"
            raise _RecordError(src, int(df["ROW"][a]), "DV", msg)
    if "DVID" in df:
        _check(df, src, obs & df["DVID"].isna().to_numpy(), "DVID", lambda i: "is missing on an observation record")


def _epochs(evid, ss, dose) -> tuple[np.ndarray, np.ndarray]:
    """Each record's epoch within its subject (one more at every reset and steady-state dose)
    and whether the record is a reset."""
    reset = np.isin(evid, RESET_EVIDS) | (dose & (ss == 1))
    return np.cumsum(reset), reset


def _subject_doses(t, amt, cmt, rate, addl, ii, ss, evid, dose) -> list[tuple]:
    """(time, amount, cmt, duration, ii, ss, epoch) of one subject's doses, ADDL expanded,
    sorted by time (stable)."""
    epoch, reset = _epochs(evid, ss, dose)
    next_reset = np.full(len(t), np.inf)  # time of the first reset after each record
    for j in range(len(t) - 2, -1, -1):
        next_reset[j] = t[j + 1] if reset[j + 1] else next_reset[j + 1]
    out = []
    for j in np.flatnonzero(dose):
        duration = amt[j] / rate[j] if rate[j] > 0 else 0.0
        out.append((t[j], amt[j], cmt[j], duration, ii[j] if ss[j] == 1 else 0.0, ss[j] == 1, epoch[j]))
        for n in range(1, int(addl[j]) + 1):
            if t[j] + n * ii[j] >= next_reset[j]:
                break
            out.append((t[j] + n * ii[j], amt[j], cmt[j], duration, 0.0, False, epoch[j]))
    return sorted(out, key=lambda d: d[0])


def _outputs(df: pd.DataFrame, obs) -> tuple[tuple, np.ndarray]:
    """The outputs in order of first appearance among observations, and each record's index."""
    if "DVID" not in df:
        return (NO_DVID,), np.zeros(len(df), dtype=np.int64)
    values = [_plain(v) for v in df["DVID"].to_numpy()]
    outputs = tuple(dict.fromkeys(v for v, o in zip(values, obs) if o))
    index = {v: i for i, v in enumerate(outputs)}
    return outputs, np.array([index.get(v, -1) for v in values], dtype=np.int64)


def _padded(n: int, width: int, fill, dtype) -> np.ndarray:
    return np.full((n, width), fill, dtype=dtype)


def _build(df: pd.DataFrame, covariates, bounds) -> tuple[Subjects, tuple]:
    """The padded arrays (numpy first, jnp at the end) and the outputs."""
    dose, obs = _masks(df)
    outputs, output = _outputs(df, obs)
    t, evid = df["TIME"].to_numpy(dtype=float), df["EVID"].to_numpy()
    dv = _col(df, "DV", 0.0)
    amt, cmt = _col(df, "AMT", 0.0), _col(df, "CMT", 1.0)
    rate, addl, ii, ss = (_col(df, c, 0.0) for c in ("RATE", "ADDL", "II", "SS"))
    spans = list(zip(bounds[:-1], bounds[1:]))
    doses = [_subject_doses(*(x[a:b] for x in (t, amt, cmt, rate, addl, ii, ss, evid, dose))) for a, b in spans]
    n, m = len(spans), max(int(obs[a:b].sum()) for a, b in spans)
    k = max(1, max(len(d) for d in doses))
    o = {
        "obs_time": _padded(n, m, 0.0, float),
        "dv": _padded(n, m, 0.0, float),
        "obs_mask": _padded(n, m, False, bool),
        "obs_cmt": _padded(n, m, 1, np.int64),
        "obs_output": _padded(n, m, 0, np.int64),
        "obs_epoch": _padded(n, m, -2, np.int64),
        "obs_row": _padded(n, m, -1, np.int64),
    }
    d = {
        "dose_time": _padded(n, k, 0.0, float),
        "dose_amt": _padded(n, k, 0.0, float),
        "dose_cmt": _padded(n, k, 1, np.int64),
        "dose_duration": _padded(n, k, 0.0, float),
        "dose_ii": _padded(n, k, 0.0, float),
        "dose_ss": _padded(n, k, False, bool),
        "dose_epoch": _padded(n, k, -1, np.int64),
    }
    for s, (a, b) in enumerate(spans):
        rows = a + np.flatnonzero(obs[a:b])
        epoch = _epochs(evid[a:b], ss[a:b], dose[a:b])[0]
        for key, vals in zip(o, (t[rows], dv[rows], True, cmt[rows], output[rows], epoch[rows - a], rows)):
            o[key][s, : len(rows)] = vals
        if doses[s]:
            for key, vals in zip(d, zip(*doses[s])):
                d[key][s, : len(doses[s])] = vals
    covs = {c: jnp.asarray(df[c].to_numpy(dtype=float)[bounds[:-1]]) for c in covariates}
    ids = tuple(_plain(v) for v in df["ID"].to_numpy()[bounds[:-1]])
    arrays = {key: jnp.asarray(v) for key, v in {**o, **d}.items()}
    flags = dict(has_steady_state=bool(d["dose_ss"].any()), has_infusions=bool((d["dose_duration"] > 0).any()))
    return Subjects(**arrays, covariates=covs, ids=ids, **flags), outputs


def read_nonmem(source, *, covariates=(), drop=(), ignore: str | None = None, rename=None) -> NonmemData:
    """A NONMEM data set as :class:`NonmemData` (see the module docstring for the columns).

    ``source``: a CSV path, a whitespace-separated file with a header line, or a DataFrame.
    ``drop``: column names (as in the source) discarded first, like NONMEM's ``X=DROP``.
    ``rename``: old -> new column names, applied next.  ``ignore``: a pandas expression on the
    (upper-cased) columns selecting the records to remove, like NONMEM's ``IGNORE``, e.g.
    ``"DVID == 'pca'"``.  ``covariates``: columns with one numeric value per subject.
    Raises :class:`~lenapk.calibration.DatasetError` on the first bad record."""
    raw, src = _load(source)
    df = _ignore(_columns(raw, src, drop, rename), src, ignore)
    covariates = tuple(str(c).upper() for c in covariates)
    for name in covariates:
        if name not in df:
            raise _RecordError(src, None, name, "is not a column (named as a covariate)")
    _numeric(df, src, NUMERIC_COLUMNS + covariates)
    _check_ids(df, src)
    _events(df, src)
    _check_doses(df, src)
    bounds = _starts(df)
    _check_covariates(df, src, covariates, bounds)
    _check_observed(df, src, bounds)
    subjects, outputs = _build(df, covariates, bounds)
    return NonmemData(table=df, subjects=subjects, covariates=covariates, outputs=outputs, source=src)
