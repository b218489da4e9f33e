"""Summary data: load and validate the observation tables that calibration fits.

Two tables (the format of the bundled ``data/`` files, see ``data/SOURCES.md``):

- observations: one summary statistic per row.  Columns ``study``, ``regimen_id``, ``endpoint``
  (a name of the model's vocabulary), ``statistic`` (``mean``, ``proportion``, ``incidence`` or
  ``per_course``), ``day`` (days since the first dose; blank when the report gives none),
  ``value``, ``unit``, ``n`` (patients), ``numerator``, ``denominator`` (counts, where
  reported) and optionally ``setting`` and ``note``;
- dose levels: responders by the dose level patients were maintained at (``study``,
  ``regimen_id``, ``dose_mg_per_day``, ``responders``, ``patients``, ``note``).

Validation happens once, on load, and a bad table raises :class:`DatasetError` naming the file,
the row (1-based data row; the file line is one more, after the header) and the field: unknown
endpoints or statistics, a statistic an endpoint cannot have, missing or wrong units,
non-finite values, proportions outside [0, 1], counts that are not whole numbers, numerators
above denominators, a value that disagrees with its counts, negative days, and means without
a day.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ._vocabulary import STATISTICS

# A reported fraction may be rounded (0.41 for 135/333): it must agree with its counts to this.
COUNT_TOLERANCE = 0.01
OBSERVATION_COLUMNS = (
    "study",
    "regimen_id",
    "endpoint",
    "statistic",
    "day",
    "value",
    "unit",
    "n",
    "numerator",
    "denominator",
)
DOSE_LEVEL_COLUMNS = ("study", "regimen_id", "dose_mg_per_day", "responders", "patients")


class DatasetError(ValueError):
    """An observation table is malformed; the message names the file, row and field."""

    def __init__(self, source: str, row: int | None, field: str | None, message: str):
        self.source, self.row, self.field = source, row, field
        where = source
        if row is not None:
            where += f" row {row} (line {row + 1})"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Observations:
    """The validated tables.  ``observations`` has one row per summary statistic and a ``row``
    column (1-based data row of the source file); ``dose_levels`` may be empty."""

    observations: pd.DataFrame
    dose_levels: pd.DataFrame
    sources: tuple[str, str]

    def select(self, mask) -> "Observations":
        """A copy with only the observation rows where ``mask`` is true (dose levels kept)."""
        return Observations(self.observations[np.asarray(mask, dtype=bool)].copy(), self.dose_levels, self.sources)


def _read(table, default_name: str) -> tuple[pd.DataFrame, str]:
    if isinstance(table, pd.DataFrame):
        return table.copy(), f"<DataFrame {default_name}>"
    path = Path(table)
    if not path.is_file():
        raise FileNotFoundError(f"observation table {path} not found")
    return pd.read_csv(path, dtype=str, keep_default_na=False), str(path)


def _blank(v) -> bool:
    if isinstance(v, str):
        return v.strip() == ""
    return v is None or bool(pd.isna(v))


def _number(src, row, field, v, *, required: bool) -> float:
    if _blank(v):
        if required:
            raise DatasetError(src, row, field, "is missing; a number is required")
        return math.nan
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise DatasetError(src, row, field, f"must be a number, got {v!r}") from None
    if not math.isfinite(x):
        raise DatasetError(src, row, field, f"must be finite, got {v!r}")
    return x


def _count(src, row, field, v, *, minimum: int = 0, required: bool = False) -> float:
    x = _number(src, row, field, v, required=required)
    if math.isnan(x):
        return x
    if x != round(x) or x < minimum:
        raise DatasetError(src, row, field, f"must be a whole number >= {minimum}, got {v!r}")
    return x


def _text(src, row, field, v) -> str:
    if _blank(v):
        raise DatasetError(src, row, field, "is missing")
    return str(v).strip()


def _require_columns(df: pd.DataFrame, src: str, columns) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DatasetError(src, None, missing[0], f"missing column(s) {missing}; expected {list(columns)}")


def validate_observation_table(table, vocabulary, source: str | None = None) -> pd.DataFrame:
    """Validate an observation table (DataFrame or CSV path) against ``vocabulary`` (endpoint
    name -> :class:`SummaryEndpoint`) and return the tidy, typed frame."""
    df, src = _read(table, "observations.csv")
    src = source or src
    _require_columns(df, src, OBSERVATION_COLUMNS)
    if len(df) == 0:
        raise DatasetError(src, None, None, "the table has no rows")
    out = []
    for i, rec in enumerate(df.to_dict("records")):
        r = int(rec["row"]) if "row" in df.columns and not _blank(rec["row"]) else i + 1
        study = _text(src, r, "study", rec["study"])
        regimen_id = _text(src, r, "regimen_id", rec["regimen_id"])
        endpoint = _text(src, r, "endpoint", rec["endpoint"])
        if endpoint not in vocabulary:
            raise DatasetError(src, r, "endpoint", f"unknown endpoint {endpoint!r}; known: {sorted(vocabulary)}")
        spec = vocabulary[endpoint]
        statistic = _text(src, r, "statistic", rec["statistic"])
        if statistic not in STATISTICS:
            raise DatasetError(
                src, r, "statistic", f"unknown statistic {statistic!r}; expected one of {list(STATISTICS)}"
            )
        if statistic not in spec.statistics:
            raise DatasetError(
                src, r, "statistic", f"{endpoint} cannot be a {statistic!r}; expected one of {list(spec.statistics)}"
            )
        unit = "" if _blank(rec["unit"]) else str(rec["unit"]).strip()
        if not unit:
            raise DatasetError(src, r, "unit", f"is missing; {endpoint} {statistic} is in {spec.unit!r}")
        if unit != spec.unit:
            raise DatasetError(src, r, "unit", f"{endpoint} {statistic} must be in {spec.unit!r}, got {unit!r}")
        value = _number(src, r, "value", rec["value"], required=True)
        day = _number(src, r, "day", rec["day"], required=statistic == "mean")
        if not math.isnan(day) and day < 0:
            raise DatasetError(src, r, "day", f"must be >= 0 (days since the first dose), got {rec['day']!r}")
        n = _count(src, r, "n", rec["n"], minimum=1)
        num = _count(src, r, "numerator", rec["numerator"])
        den = _count(src, r, "denominator", rec["denominator"], minimum=1)
        if statistic == "mean":
            if value < 0:
                raise DatasetError(src, r, "value", f"a mean {endpoint} must be >= 0 {unit}, got {value!r}")
            if not (math.isnan(num) and math.isnan(den)):
                raise DatasetError(src, r, "numerator", "a mean has no numerator/denominator")
        else:
            if not 0.0 <= value <= 1.0:
                raise DatasetError(src, r, "value", f"a proportion must lie in [0, 1], got {value!r}")
            if not math.isnan(num) and math.isnan(den) and math.isnan(n):
                raise DatasetError(src, r, "denominator", "a numerator needs a denominator or n")
            total = den if not math.isnan(den) else n
            if not math.isnan(num) and num > total:
                field = "numerator"
                raise DatasetError(src, r, field, f"numerator {num:g} exceeds the denominator {total:g}")
            if not math.isnan(num) and abs(num / total - value) > COUNT_TOLERANCE:
                raise DatasetError(
                    src,
                    r,
                    "value",
                    f"{value!r} disagrees with numerator/denominator {num:g}/{total:g} = {num / total:.3f}",
                )
        out.append(
            {
                "row": r,
                "study": study,
                "setting": "" if _blank(rec.get("setting")) else str(rec.get("setting")),
                "regimen_id": regimen_id,
                "endpoint": endpoint,
                "statistic": statistic,
                "day": day,
                "value": value,
                "unit": unit,
                "n": n,
                "numerator": num,
                "denominator": den,
                "note": "" if _blank(rec.get("note")) else str(rec.get("note")),
            }
        )
    frame = pd.DataFrame(out)
    for col in ("n", "numerator", "denominator"):
        frame[col] = frame[col].astype("Int64")
    return frame


def validate_dose_level_table(table, source: str | None = None) -> pd.DataFrame:
    """Validate a dose-level response table (DataFrame or CSV path); return the typed frame."""
    df, src = _read(table, "dose_level_response.csv")
    src = source or src
    _require_columns(df, src, DOSE_LEVEL_COLUMNS)
    out = []
    for i, rec in enumerate(df.to_dict("records")):
        r = i + 1
        dose = _number(src, r, "dose_mg_per_day", rec["dose_mg_per_day"], required=True)
        if dose <= 0:
            raise DatasetError(src, r, "dose_mg_per_day", f"must be > 0 mg/d, got {rec['dose_mg_per_day']!r}")
        responders = _count(src, r, "responders", rec["responders"], required=True)
        patients = _count(src, r, "patients", rec["patients"], minimum=1, required=True)
        if responders > patients:
            raise DatasetError(src, r, "responders", f"{responders:g} responders exceed {patients:g} patients")
        out.append(
            {
                "row": r,
                "study": _text(src, r, "study", rec["study"]),
                "regimen_id": _text(src, r, "regimen_id", rec["regimen_id"]),
                "dose_mg_per_day": dose,
                "responders": int(responders),
                "patients": int(patients),
                "note": "" if _blank(rec.get("note")) else str(rec.get("note")),
            }
        )
    columns = ["row", *DOSE_LEVEL_COLUMNS, "note"]
    return pd.DataFrame(out, columns=columns)


def read_observations(path, *, vocabulary, dose_levels=None) -> "Observations":
    """Load and validate summary tables.

    ``path``: a folder holding ``observations.csv`` (and optionally ``dose_level_response.csv``),
    an observation CSV file, or a DataFrame in the same format; ``vocabulary``: the model's
    (``model.calibration.vocabulary``); ``dose_levels``: a dose-level response CSV or DataFrame
    (default: the folder's, if any).  Returns :class:`Observations`; raises
    :class:`DatasetError` naming the file, row and field of the first problem found."""
    if not isinstance(path, pd.DataFrame) and Path(path).is_dir():
        candidate = Path(path) / "dose_level_response.csv"
        dose_levels = dose_levels if dose_levels is not None else (candidate if candidate.is_file() else None)
        path = Path(path) / "observations.csv"
    obs = validate_observation_table(path, vocabulary)
    if dose_levels is None:
        dl, dl_name = pd.DataFrame(columns=["row", *DOSE_LEVEL_COLUMNS, "note"]), ""
    else:
        dl = validate_dose_level_table(dose_levels)
        dl_name = "<DataFrame>" if isinstance(dose_levels, pd.DataFrame) else str(dose_levels)
    return Observations(obs, dl, ("<DataFrame>" if isinstance(path, pd.DataFrame) else str(path), dl_name))
