"""A user's table of patients: one row each, a column per covariate of the model."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._core import AbstractModel


def validate_patients(patients: pd.DataFrame, model: AbstractModel) -> pd.DataFrame:
    """Check a table of patients against the model's covariates and return a float copy with a
    ``patient`` id column (0, 1, ... when absent).

    Missing covariate columns, non-numeric or NaN values, impossible values (not > 0 for a
    positive covariate, < 0 for the others, not 0/1 for a ``0/1`` flag), missing or duplicate
    patient ids, and the
    model's own checks (:meth:`AbstractModel.check_covariates`) raise ``ValueError`` naming the
    column and the first bad row."""
    if not isinstance(patients, pd.DataFrame):
        raise ValueError(f"patients must be a pandas DataFrame, got {type(patients).__name__}")
    if len(patients) == 0:
        raise ValueError("patients: the table has no rows")
    specs = {s.name: s for s in model.parameter_specs if s.kind == "covariate"}
    missing = [c for c in specs if c not in patients.columns]
    if missing:
        raise ValueError(f"patients: missing covariate column(s) {missing}; expected {list(specs)}")
    out = patients.copy()
    for name, s in specs.items():
        vals = pd.to_numeric(out[name], errors="coerce")
        bad = vals.isna() | ~np.isfinite(vals)
        if bad.any():
            r = int(np.flatnonzero(bad.to_numpy())[0])
            got = _plain(patients[name].iloc[r])
            raise ValueError(f"patients.{name}: row {r} must be a finite number, got {got!r}")
        flag = s.unit == "0/1"
        bad = ~vals.isin([0, 1]) if flag else (vals <= 0 if s.positive else vals < 0)
        if bad.any():
            r = int(np.flatnonzero(bad.to_numpy())[0])
            expect = "0 or 1" if flag else f"{'>' if s.positive else '>='} 0 {s.unit}"
            raise ValueError(f"patients.{name}: row {r} must be {expect}, got {_plain(vals.iloc[r])!r}")
        out[name] = vals.astype(float)
    model.check_covariates(out)
    if "patient" not in out.columns:
        out.insert(0, "patient", np.arange(len(out)))
    _check_ids(out["patient"])
    return out


def _plain(x):
    """A NumPy scalar as the Python number it holds (``-5.0``, not ``np.float64(-5.0)``, in messages)."""
    return x.item() if isinstance(x, np.generic) else x


def _check_ids(ids: pd.Series) -> None:
    if ids.isna().any():
        r = int(np.flatnonzero(ids.isna().to_numpy())[0])
        raise ValueError(f"patients.patient: row {r} has no patient id")
    dup = ids.duplicated()
    if dup.any():
        r = int(np.flatnonzero(dup.to_numpy())[0])
        x = ids.iloc[r]
        raise ValueError(
            f"patients.patient: duplicate patient id {x.item() if isinstance(x, np.generic) else x!r} (row {r})"
        )
    if ids.dtype == object and not all(isinstance(x, (str, int, np.integer)) for x in ids):
        raise ValueError("patients.patient: ids must be all integers or all strings")
