"""Reports: figures of simulations, a self-contained HTML page and model documentation."""

from ._figures import plot_trajectories, plot_vpc, population_bands
from ._model_doc import render_model_doc
from ._page import Section, render_page

__all__ = ["Section", "plot_trajectories", "plot_vpc", "population_bands", "render_model_doc", "render_page"]
