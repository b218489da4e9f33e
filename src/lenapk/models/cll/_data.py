"""The bundled lenalidomide regimens (``data/regimens.csv``)."""

from __future__ import annotations

import pandas as pd

from ..._core import data_path, regimens_from_table


def bundled_regimen_table() -> pd.DataFrame:
    return pd.read_csv(data_path("regimens.csv"))


def load_regimens(path=None, *, n_cycles_default: int = 24) -> dict:
    """The bundled lenalidomide regimens (``data/regimens.csv``, or ``path`` in its format) keyed
    by ``regimen_id``; regimens without a stated number of cycles get ``n_cycles_default``."""
    table = bundled_regimen_table() if path is None else pd.read_csv(path)
    return regimens_from_table(table, n_cycles_default=n_cycles_default)
