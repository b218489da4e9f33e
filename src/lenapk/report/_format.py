"""Numbers as a reader wants them in a table: significant figures, intervals, percentages, and a
dash (never "nan") for what has no value."""

from __future__ import annotations

import math

DASH = "–"


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and not math.isfinite(x))


def number(x, sig: int = 3) -> str:
    """``x`` to ``sig`` significant figures (no exponent between 1e-3 and 1e6)."""
    if _missing(x):
        return DASH
    x = float(x)
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e6:
        digits = max(sig - 1 - int(math.floor(math.log10(abs(x)))), 0)
        return f"{x:,.{digits}f}"
    return f"{x:.{sig - 1}e}"


def percent(x, digits: int = 0) -> str:
    """A fraction as a percentage."""
    return DASH if _missing(x) else f"{100 * float(x):.{digits}f}%"


def interval(est, lo, hi, *, pct: bool = False, sig: int = 3) -> str:
    """``est (lo–hi)``, or ``est (lo to hi)`` when a bound is negative (a dash would read as a
    minus); a dash without an estimate, the estimate alone without bounds."""
    if _missing(est):
        return DASH
    f = (lambda v: percent(v)) if pct else (lambda v: number(v, sig))  # noqa: E731
    if _missing(lo) or _missing(hi):
        return f(est)
    sep = " to " if min(float(lo), float(hi)) < 0 else "–"
    return f"{f(est)} ({f(lo).rstrip('%') if pct and sep == '–' else f(lo)}{sep}{f(hi)})"
