"""Input checks shared by every layer: one place for "a number", "a whole number", "a fraction".

Each check names the field, the value and what was expected, and runs in Python before any
computation (``ValueError: regimen.start_mg must be a number > 0, got -5``).
"""

from __future__ import annotations

import math

import numpy as np


def _is_bool(value) -> bool:
    return isinstance(value, (bool, np.bool_))


def number(
    field: str,
    value,
    *,
    minimum: float | None = None,
    strict: bool = False,
    maximum: float | None = None,
    integer: bool = False,
) -> float:
    """``value`` as a finite float (an int when ``integer``), refusing bools, NaN and values
    outside ``[minimum, maximum]`` (``(minimum, ...`` when ``strict``)."""
    what = "a whole number" if integer else "a number"
    if minimum is not None:
        what += f" {'>' if strict else '>='} {minimum:g}"
    if maximum is not None:
        what += f" <= {maximum:g}" if minimum is None else f" and <= {maximum:g}"
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    ok = not _is_bool(value) and math.isfinite(x)
    ok = ok and (minimum is None or (x > minimum if strict else x >= minimum))
    ok = ok and (maximum is None or x <= maximum)
    ok = ok and (not integer or x == int(x))
    if not ok:
        raise ValueError(f"{field} must be {what}, got {value!r}")
    return int(x) if integer else x


def whole(field: str, value, minimum: int = 0, *, allow_none: bool = False) -> int | None:
    """A whole number >= ``minimum`` (ints, or floats with an integral value)."""
    if value is None and allow_none:
        return None
    try:
        return number(field, value, minimum=minimum, integer=True)
    except ValueError:
        extra = " or None" if allow_none else ""
        raise ValueError(f"{field} must be a whole number >= {minimum}{extra}, got {value!r}") from None


def count(field: str, value, minimum: int = 1) -> int:
    """A Python or NumPy int >= ``minimum`` (no floats, no bools): sizes and seeds."""
    if _is_bool(value) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{field} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def fraction(field: str, value) -> float:
    """A number strictly between 0 and 1."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if _is_bool(value) or not (0.0 < x < 1.0):
        raise ValueError(f"{field} must be a number in (0, 1), got {value!r}")
    return x


def flag(field: str, value) -> bool:
    """True or False (NumPy bools accepted)."""
    if not _is_bool(value):
        raise ValueError(f"{field} must be True or False, got {value!r}")
    return bool(value)


def one_of(field: str, value, allowed) -> object:
    """``value`` if it is among ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{field} must be one of {sorted(map(str, allowed))}, got {value!r}")
    return value


def instance(field: str, value, cls, what: str) -> object:
    """``value`` if it is an instance of ``cls`` (``what`` names the expected type)."""
    if not isinstance(value, cls):
        raise ValueError(f"{field} must be {what}, got {type(value).__name__}")
    return value
