"""Virtual patients: random effects (Omega) and covariates, drawn or from a table."""

from ._draws import (
    FILLS,
    VirtualPopulation,
    check_setting,
    draw_etas,
    fill_covariates,
    individual_parameters,
    sample_covariates,
    virtual_population,
)
from ._patients import validate_patients

__all__ = [
    "FILLS",
    "fill_covariates",
    "VirtualPopulation",
    "check_setting",
    "draw_etas",
    "individual_parameters",
    "sample_covariates",
    "validate_patients",
    "virtual_population",
]
