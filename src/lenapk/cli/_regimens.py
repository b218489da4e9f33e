"""``--regimen``: a bundled regimen id (:func:`lenapk.load_regimens`), a NONMEM event-table CSV
(:func:`lenapk.read_event_table`) or a compact spec such as ``"10mg d1-21/28 x12"``
(:func:`lenapk.parse_regimen`): an existing file is read as a table, a bundled id is that
regimen, anything else is parsed as a spec.  A file named in the config file is looked for in the
config file's folder; one named on the command line, in the working directory."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from ._options import UsageError, resolve_path

DEFAULT_CYCLES = 24
TABLE_SUFFIXES = (".csv", ".txt", ".tsv")


def _looks_like_spec(value: str) -> bool:
    return re.match(r"\s*[\d.]", value) is not None


def _read_event_table(label: str, value: str, path: Path) -> dict:
    import pandas as pd

    import lenapk

    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UsageError(f"{label} {value}: not a readable CSV event table ({exc})") from None
    try:
        return lenapk.read_event_table(table)
    except ValueError as exc:
        raise UsageError(f"{label} {value}: {exc}") from None


def read_regimens(label: str, value: str, default_cycles: int, base: Optional[Path] = None) -> tuple[str, dict]:
    """``(kind, regimens)``: ``"file"`` with a dict ID -> Regimen of an event-table CSV, or
    ``"bundled"`` / ``"spec"`` with one ``name: Regimen``.  ``base``: the folder a relative file
    name is relative to (the config file's; None: the working directory)."""
    import lenapk

    path = resolve_path(value, base)
    if path.is_file():
        return "file", _read_event_table(label, value, path)
    bundled = lenapk.load_regimens()
    if value in bundled:
        return "bundled", {value: bundled[value]}
    expected = (
        f"a bundled regimen id ({', '.join(sorted(bundled))}), an existing event-table CSV file or a "
        "regimen spec such as '10mg d1-21/28 x12'"
    )
    if path.suffix.lower() in TABLE_SUFFIXES:
        where = "" if path == Path(value) else f" (resolved against the config file's folder: {str(path)!r})"
        raise UsageError(f"{label} must be {expected}, got {value!r}{where}: no such file")
    try:
        reg = lenapk.parse_regimen(value, default_cycles=default_cycles)
    except lenapk.RegimenSpecError as exc:
        if _looks_like_spec(value):
            raise UsageError(f"{label}: {exc}") from None
        raise UsageError(f"{label} must be {expected}, got {value!r}.  As a spec:\n{exc}") from None
    return "spec", {reg.name: reg}


def cut(reg, cycles: Optional[int]):
    return reg if cycles is None else reg.first_cycles(cycles)


def describe(reg) -> dict:
    return dict(n_days=int(reg.n_days), cycle_days=int(reg.cycle_days), n_events=int(reg.n_events))


def ids(regs: dict, k: int = 5) -> str:
    shown = [repr(i) for i in regs]
    return ", ".join(shown[:k]) + (", ..." if len(shown) > k else "")


def dose_rules(name: str):
    import lenapk

    return None if name == "none" else lenapk.label_rule()


def _given_regimens(run) -> tuple[str, dict]:
    o = run.options
    return read_regimens(run.label("regimen"), o["regimen"], o["cycles"] or DEFAULT_CYCLES, run.base("regimen"))


def _the_regimen(run, kind: str, regs: dict):
    """``(name, Regimen)`` of a --regimen that is one regimen (cut to --cycles), recorded in the run log."""
    o = run.options
    name = Path(o["regimen"]).stem if kind == "file" else next(iter(regs))
    reg = cut(next(iter(regs.values())), o["cycles"])
    run.details["regimen"] = dict(name=name, source=kind, **describe(reg))
    return name, reg


def one_regimen(run):
    """``(name, Regimen)`` of simulate's --regimen: an event table must hold one ID."""
    kind, regs = _given_regimens(run)
    if kind == "file" and len(regs) != 1:
        raise UsageError(
            f"{run.label('regimen')} {run.options['regimen']}: the event table holds {len(regs)} IDs "
            f"({ids(regs)}); simulate takes one patient's regimen (one ID)"
        )
    return _the_regimen(run, kind, regs)


def per_patient_regimens(run, regs: dict, patients) -> dict:
    """patient -> Regimen from an event table with several IDs, one per patient of --patients."""
    o = run.options
    label = run.label("regimen")
    if patients is None or not patients.ids:
        raise UsageError(
            f"{label} {o['regimen']}: the event table holds {len(regs)} IDs ({ids(regs)}), one "
            "regimen per patient: give --patients with a 'patient' column holding those IDs"
        )
    missing = [i for i in patients.table["patient"] if i not in regs]
    if missing:
        raise UsageError(
            f"{run.label('patients')} {o['patients']}: patient(s) {missing[:5]} have no regimen in "
            f"{label} {o['regimen']} (its IDs: {ids(regs)})"
        )
    base = run.base("regimen")
    file = o["regimen"] if base is None else str(resolve_path(o["regimen"], base))
    run.details["regimen"] = dict(source="file", file=file, per_patient=True, ids=len(regs))
    return {i: cut(regs[i], o["cycles"]) for i in patients.table["patient"]}


def cohort_regimen(run, patients):
    """The cohort's regimen: one for everyone, or (an event table with several IDs) a dict
    patient -> Regimen."""
    kind, regs = _given_regimens(run)
    if kind == "file" and len(regs) > 1:
        return per_patient_regimens(run, regs, patients)
    return _the_regimen(run, kind, regs)[1]


def named_regimens(run, given: list[tuple[str, str]], cycles: Optional[int]) -> dict:
    """name -> Regimen for options that take one regimen per value (compare, report); ``given``:
    (option, value) pairs.  A CSV file must hold one ID and is named by its file name; 'standard'
    is the report's schedule set."""
    from ..models.cll import standard_schedules

    out, sources = {}, {}
    for option, value in given:
        label = run.label(option, flag="--regimen")
        if value == "standard":
            kind, regs = "standard", standard_schedules(cycles or DEFAULT_CYCLES)
        else:
            kind, regs = read_regimens(label, value, cycles or DEFAULT_CYCLES, run.base(option))
            if kind == "file":
                if len(regs) != 1:
                    raise UsageError(
                        f"{label} {value}: the event table holds {len(regs)} IDs ({ids(regs)}); "
                        "here each file must hold one regimen (one ID)"
                    )
                regs = {Path(value).stem: next(iter(regs.values())).renamed(Path(value).stem)}
        for name, reg in regs.items():
            if name in out:
                raise UsageError(f"{label}: regimen {name!r} is given twice")
            out[name], sources[name] = cut(reg, cycles), (value, kind)
    run.details["regimens"] = {
        k: dict(source=sources[k][1], given=sources[k][0], **describe(r)) for k, r in out.items()
    }
    return out
