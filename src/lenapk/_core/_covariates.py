"""Covariate distributions: how a model's patient characteristics vary in a population.

A model declares, per setting (population), one distribution per covariate; the population
layer (:mod:`lenapk.population`) draws virtual patients from them.  Each distribution maps a
standard uniform ``u`` and a standard normal ``z`` of the patient (both drawn for every
covariate) to a value, so the draws are reproducible and independent of the distribution kind.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LogNormal:
    """Log-normal with the given median and coefficient of variation, truncated to
    ``[low, high]``: ``clip(median * exp(sigma z), low, high)``, ``sigma^2 = log(1 + cv^2)``."""

    median: float
    cv: float
    low: float = 0.0
    high: float = math.inf
    source: str = "assumed"

    def __post_init__(self):
        if not (self.median > 0 and self.cv >= 0 and self.low <= self.median <= self.high):
            raise ValueError(f"LogNormal needs median > 0, cv >= 0 and low <= median <= high, got {self}")

    def sample(self, u: np.ndarray, z: np.ndarray) -> np.ndarray:
        sigma = np.sqrt(np.log1p(self.cv**2))
        return np.clip(self.median * np.exp(sigma * z), self.low, self.high)

    def typical(self) -> float:
        """The median."""
        return float(self.median)

    def describe(self) -> str:
        return f"log-normal, median {self.median:g}, CV {100 * self.cv:g}%, truncated to [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class Bernoulli:
    """A 0/1 characteristic present with ``probability``."""

    probability: float
    source: str = "assumed"

    def __post_init__(self):
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"Bernoulli probability must lie in [0, 1], got {self.probability!r}")

    def sample(self, u: np.ndarray, z: np.ndarray) -> np.ndarray:
        return (u < self.probability).astype(float)

    def typical(self) -> float:
        """The most likely value (1 when ``probability >= 0.5``)."""
        return float(self.probability >= 0.5)

    def describe(self) -> str:
        return f"Bernoulli(p = {self.probability:g})"


CovariateDistribution = LogNormal | Bernoulli
