"""``cohort --patients FILE``: a CSV of patients (one row each, covariate columns, an optional
'patient' id column); covariate columns it lacks are filled as ``--fill`` says ('drawn' from the
setting's distributions, or the setting's 'typical' values)."""

from __future__ import annotations

from dataclasses import dataclass

from ._options import UsageError


@dataclass
class Patients:
    table: object  # the checked, filled table (a pandas DataFrame)
    ids: bool  # the CSV has a 'patient' column
    filled: dict  # covariate -> how it was filled ('drawn' or 'typical')


def read_patients(run, model) -> Patients | None:
    """The run's --patients table, checked and filled (None without --patients); recorded in the
    run log.  An --n given alongside must equal the number of patients."""
    import pandas as pd

    from ..population import fill_covariates, validate_patients

    o = run.options
    if o["patients"] is None:
        return None
    label = f"{run.label('patients')} {o['patients']}"
    try:
        raw = pd.read_csv(o["patients"])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UsageError(f"{label}: not a readable CSV table ({exc})") from None
    try:
        filled, how = fill_covariates(raw, model, fill=o["fill"], setting=o["setting"], seed=o["seed"])
        table = validate_patients(filled, model)
    except ValueError as exc:
        raise UsageError(f"{label}: {exc}") from None
    if run.sources["n"] != "default" and o["n"] != len(table):
        raise UsageError(
            f"--n must equal the number of patients in {label} ({len(table)}), got {o['n']}; leave --n out"
        )
    o["n"], run.sources["n"] = len(table), "patients table"
    run.details["patients"] = dict(file=o["patients"], n=len(table), filled=how)
    return Patients(table, "patient" in raw.columns, how)


def fill_lines(how: dict, setting: str, seed: int) -> list[str]:
    """What was filled, and how, in a line per kind."""
    drawn = [c for c, h in how.items() if h == "drawn"]
    typical = [c for c, h in how.items() if h == "typical"]
    lines = []
    if drawn:
        lines.append(
            f"covariates not in the table, drawn from the {setting!r} setting (seed {seed}): {', '.join(drawn)}"
        )
    if typical:
        lines.append(
            f"covariates not in the table, set to the typical values of the {setting!r} setting (medians; "
            f"most likely value of a 0/1 characteristic): {', '.join(typical)}"
        )
    return lines
