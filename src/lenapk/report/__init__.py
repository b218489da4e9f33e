"""Reports: figures of simulations, formatted tables, a self-contained HTML page and model
documentation (presentation only: the numbers come from the layers below)."""

from . import _format as fmt
from ._estimation import estimation_report
from ._figures import (
    exposure_metrics,
    plot_bands,
    plot_exposure,
    plot_forest,
    plot_trajectories,
    plot_vpc,
    population_bands,
)
from ._model_doc import render_model_doc
from ._page import Section, render_page

__all__ = [
    "Section",
    "estimation_report",
    "exposure_metrics",
    "fmt",
    "plot_bands",
    "plot_exposure",
    "plot_forest",
    "plot_trajectories",
    "plot_vpc",
    "population_bands",
    "render_model_doc",
    "render_page",
]
