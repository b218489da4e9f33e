r"""Regimens from compact text: ``"10mg d1-21/28 x12"``, ``"2.5mg c1; 5mg c2-24 continuous"``,
``"15mg q48h x6"``.

Grammar (spaces separate tokens; parts are separated by ``;``)::

    spec     := part (";" part)* [count]        a count may also end the last part
    part     := dose [cycles] [pattern] [start]
    dose     := NUMBER "mg"                     mg per dose (e.g. 2.5mg)
    cycles   := "c" A ["-" B | "+"]             cycles A..B (1-based), or A and all later ("c3+")
    pattern  := "d" A "-" B "/" L               days A..B (1-based) of L-day cycles
              | "continuous" | "daily"          every day (the default)
              | "q" H "h"                       every H hours
    start    := "@" HH ":" MM                   clock time of the doses (default 00:00)
    count    := "x" N                           N cycles in all (default: the caller's default, at
                                                least the cycles named; the last cycle named when
                                                the last part closes with cA or cA-B)

Doses are oral (depot).  A part without ``cycles`` covers the cycles after the previous part's.
Each part names its cycles, pattern and start at most once; only the last part may end with a count.
Every part uses the same cycle length (``/L`` of a ``d`` pattern, else 28 days).  ``q H h``
doses run from the part's first cycle at ``start`` every ``H`` hours through its last.
Examples: ``"10mg d1-21/28 x12"`` (10 mg on days 1-21 of each 28-day cycle, 12 cycles);
``"2.5mg c1; 5mg c2-24 continuous"`` (2.5 mg daily in cycle 1, then 5 mg daily to cycle 24);
``"10mg c1; 15mg c2; 20mg c3; 25mg c4+ x24"`` (escalation); ``"5mg q12h @08:00 x1"``;
``"15mg q48h x6"`` (a renal start dose).  A malformed string raises :class:`RegimenSpecError`,
whose message shows the string with a caret under the offending character.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ._regimen import HOURS_PER_DAY, Regimen

DEFAULT_CYCLE_DAYS = 28
_TOKEN = re.compile(r"\S+")


class RegimenSpecError(ValueError):
    """A regimen string that does not parse; ``position`` is the offending character (0-based)."""

    def __init__(self, spec: str, position: int, message: str):
        self.spec, self.position = spec, position
        super().__init__(f"regimen {spec!r}: {message} (at character {position + 1})\n  {spec}\n  {' ' * position}^")


@dataclass
class _Part:
    mg: float
    first: int | None = None  # 1-based cycles
    last: int | None = None  # None: to the horizon
    open_end: bool = False
    days: tuple[int, int] | None = None  # 1-based days on
    cycle_days: int | None = None
    every_h: float | None = None
    start_h: float = 0.0
    days_pos: int = 0  # where the dA-B/L word is (for the cycle-length check)


def _number(spec: str, pos: int, text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise RegimenSpecError(spec, pos, f"{what} must be a number, got {text!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise RegimenSpecError(spec, pos, f"{what} must be > 0, got {text!r}")
    return value


def _whole(spec: str, pos: int, text: str, what: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise RegimenSpecError(spec, pos, f"{what} must be a whole number >= 1, got {text!r}")
    return int(text)


_KINDS = {"c": "cycles", "d": "pattern", "q": "pattern", "@": "start", "x": "count"}


def _kind(tok: str) -> str | None:
    """What a word sets (``cycles``, ``pattern``, ``start``, ``count``), from its first letter."""
    return "pattern" if tok in ("continuous", "daily") else _KINDS.get(tok[0])


def _token(spec: str, pos: int, tok: str, part: _Part) -> int | None:
    """Read one token into ``part``; returns a cycle count if the token is ``xN``."""
    if m := re.fullmatch(r"c(\d+)(?:-(\d+)|(\+))?", tok):
        part.first = _whole(spec, pos + 1, m.group(1), "a cycle")
        part.last = part.first if m.group(2) is None and m.group(3) is None else None
        part.open_end = m.group(3) is not None
        if m.group(2) is not None:
            part.last = _whole(spec, pos + m.start(2), m.group(2), "a cycle")
            if part.last < part.first:
                raise RegimenSpecError(spec, pos + m.start(2), f"cycles {part.first}-{part.last} run backwards")
    elif m := re.fullmatch(r"d(\d+)-(\d+)/(\d+)", tok):
        a, b = (_whole(spec, pos + m.start(i), m.group(i), "a day") for i in (1, 2))
        length = _whole(spec, pos + m.start(3), m.group(3), "a cycle length")
        if not a <= b <= length:
            raise RegimenSpecError(spec, pos, f"days {a}-{b} must lie within the {length}-day cycle, in order")
        part.days, part.cycle_days, part.days_pos = (a, b), length, pos
    elif tok in ("continuous", "daily"):
        part.days = None
    elif m := re.fullmatch(r"q(\S+)h", tok):
        part.every_h = _number(spec, pos + 1, m.group(1), "the dosing interval (h)")
    elif m := re.fullmatch(r"@(\d{1,2}):(\d{2})", tok):
        hours, minutes = int(m.group(1)), int(m.group(2))
        if hours > 23 or minutes > 59:
            raise RegimenSpecError(spec, pos + 1, f"{tok[1:]} is not a clock time (HH:MM)")
        part.start_h = hours + minutes / 60.0
    elif m := re.fullmatch(r"x(\S+)", tok):
        return _whole(spec, pos + 1, m.group(1), "the number of cycles")
    else:
        raise RegimenSpecError(
            spec, pos, f"unknown word {tok!r}; expected cN[-M|+], dA-B/L, continuous, qNh, @HH:MM or xN"
        )
    return None


def _parse_part(spec: str, offset: int, text: str) -> tuple[_Part, int | None, int]:
    tokens = [(offset + m.start(), m.group()) for m in _TOKEN.finditer(text)]
    if not tokens:
        raise RegimenSpecError(spec, offset, "empty part; expected a dose such as 10mg")
    pos, first = tokens[0]
    m = re.fullmatch(r"(\S+?)mg", first)
    if m is None:
        raise RegimenSpecError(spec, pos, f"each part starts with a dose such as 10mg, got {first!r}")
    part, count, count_pos, seen = _Part(mg=_number(spec, pos, m.group(1), "the dose (mg)")), None, -1, {}
    for pos, tok in tokens[1:]:
        n, kind = _token(spec, pos, tok, part), _kind(tok)  # _token refuses unknown words
        if kind in seen:
            raise RegimenSpecError(spec, pos, f"{tok!r}: the part already gives its {kind} ({seen[kind]!r})")
        count, count_pos = (n, pos) if n is not None else (count, count_pos)
        seen[kind] = tok
    if part.days is not None and part.every_h is not None:
        raise RegimenSpecError(spec, offset, "a part takes either days of the cycle (dA-B/L) or an interval (qNh)")
    return part, count, count_pos


def _cycles(spec: str, parts: list[tuple[int, _Part]], count: int | None, count_pos: int, default_cycles: int) -> int:
    """Fill in each part's cycles; return the number of cycles in all."""
    nxt = 1
    for pos, p in parts:
        if p.first is None:
            p.first, p.last, p.open_end = nxt, None, True
        if p.first < nxt:
            raise RegimenSpecError(
                spec,
                pos,
                f"cycle {p.first} comes before the end of the previous part (cycle "
                f"{nxt - 1}); give the parts in cycle order",
            )
        nxt = (p.last or p.first) + 1
    named = max((p.last or p.first) for _, p in parts)
    closed = parts[-1][1].last is not None and not parts[-1][1].open_end  # the last part ends at a named cycle
    total = count if count is not None else (named if closed else max(default_cycles, named))
    if total < named:
        raise RegimenSpecError(spec, count_pos, f"x{total} is fewer cycles than the parts name ({named})")
    for i, (_, p) in enumerate(parts):
        following = parts[i + 1][1].first - 1 if i + 1 < len(parts) else total
        p.last = following if p.open_end or p.last is None else p.last
    return total


def _events(part: _Part, cycle_days: int) -> tuple[list[float], list[float]]:
    first_day, last_day = (part.first - 1) * cycle_days, part.last * cycle_days
    if part.every_h is not None:
        times = np.arange(first_day * HOURS_PER_DAY + part.start_h, last_day * HOURS_PER_DAY, part.every_h)
        return list(times), [part.mg] * len(times)
    days = np.arange(first_day, last_day)
    if part.days is not None:
        in_cycle = days % cycle_days
        days = days[(in_cycle >= part.days[0] - 1) & (in_cycle <= part.days[1] - 1)]
    times = days * HOURS_PER_DAY + part.start_h
    return list(times), [part.mg] * len(times)


def parse_regimen(spec: str, *, default_cycles: int = 24, name: str | None = None) -> Regimen:
    """The :class:`Regimen` a compact string describes (see the module docstring for the
    grammar); ``default_cycles`` when the string names no count and no closing cycle."""
    if not isinstance(spec, str) or not spec.strip():
        raise RegimenSpecError(str(spec), 0, "is empty; expected e.g. '10mg d1-21/28 x12'")
    parts, count, count_pos, offset = [], None, -1, 0
    texts = spec.split(";")
    for i, text in enumerate(texts):
        part, count, count_pos = _parse_part(spec, offset, text)
        if count is not None and i < len(texts) - 1:
            raise RegimenSpecError(spec, count_pos, "a count (xN) may only end the last part")
        parts.append((offset + len(text) - len(text.lstrip()), part))
        offset += len(text) + 1
    lengths = [p for _, p in parts if p.cycle_days is not None]
    for p in lengths[1:]:
        if p.cycle_days != lengths[0].cycle_days:
            raise RegimenSpecError(
                spec,
                p.days_pos,
                f"every part must use one cycle length, got {lengths[0].cycle_days} and {p.cycle_days} days",
            )
    cycle_days = lengths[0].cycle_days if lengths else DEFAULT_CYCLE_DAYS
    total = _cycles(spec, parts, count, count_pos, default_cycles)
    times, amounts = [], []
    for _, part in parts:
        t, a = _events(part, cycle_days)
        times += t
        amounts += a
    return Regimen.from_events(
        np.asarray(times, dtype=float),
        np.asarray(amounts, dtype=float),
        n_days=total * cycle_days,
        cycle_days=cycle_days,
        name=name or spec.strip(),
    )
