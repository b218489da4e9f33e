"""Regimens from a table of cycle-based schedules (the format of the bundled ``regimens.csv``):
``regimen_id``, ``start_mg``, ``max_mg``, ``escalation_mg``, ``escalate_every_days``,
``days_on_per_cycle``, ``cycle_days`` and ``min_cycles`` (cycles simulated)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._regimen import Regimen


def _optional(row, key, default=None):
    v = row.get(key)
    return default if v is None or (isinstance(v, float) and np.isnan(v)) or v == "" else v


def regimens_from_table(table: pd.DataFrame, *, n_cycles_default: int = 24) -> dict[str, Regimen]:
    """``{regimen_id: Regimen}`` (once-daily cycles); rows without ``min_cycles`` get
    ``n_cycles_default`` cycles."""
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
