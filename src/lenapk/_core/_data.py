"""Where the bundled data files live (installed package or source checkout)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def data_path(name: str) -> Path:
    """Path of a bundled data file: ``lenapk/data/`` when installed from a wheel, the
    repository's ``data/`` in a source checkout or editable install."""
    packaged = resources.files("lenapk") / "data" / name
    if packaged.is_file():
        return Path(str(packaged))
    checkout = Path(__file__).resolve().parents[3] / "data" / name
    if checkout.is_file():
        return checkout
    raise FileNotFoundError(f"bundled data file {name!r} not found (looked in {packaged} and {checkout})")
