"""Toxicity grades of a lab value (CTCAE style), given as data."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._smooth import any_below, noisy_any_below


@dataclass(frozen=True)
class GradeScale:
    """Grades of ``observable`` (0 to ``len(lower_limits)``, e.g. 0-4 for CTCAE) from the lower limits
    of grades 0, 1, ...: a value below
    ``lower_limits[g]`` has grade ``> g`` (e.g. ``(80, 60, 40, 20)`` for a biomarker in units).

    ``label`` prefixes the cohort columns (``{label}_grade``, ``{label}_nadir``, ...); ``event``
    names the toxicity (``"suppression"``) and ``severe_grade`` the grade counted in comparisons
    (``g3_suppression``: grade >= 3); ``title`` is how tables call the value.

    ``noise_sd``: SD on the log scale of a *measured* value around the model's value (lab noise:
    analytical error plus day-to-day biological variation), independent between visits.  With
    ``noise_sd > 0``, :meth:`any_at_least` is the probability that a measured value reaches the
    grade (what a trial's lab counts), and comparisons report the expected counts of measured
    values; the ``_grade`` columns of a cohort stay the grades of the model's values."""

    observable: str
    lower_limits: tuple[float, ...]
    label: str
    event: str
    unit: str = ""
    severe_grade: int = 3
    title: str = ""
    noise_sd: float = 0.0

    @property
    def name(self) -> str:
        """How tables call the lab value (``title``, or the observable's name)."""
        return self.title or self.observable

    def __post_init__(self):
        lims = np.asarray(self.lower_limits, dtype=float)
        if lims.size < 1 or np.any(np.diff(lims) >= 0) or np.any(lims <= 0):
            raise ValueError(
                f"GradeScale {self.label}: lower_limits must be positive and decreasing, got {self.lower_limits}"
            )
        if not (isinstance(self.noise_sd, (int, float)) and 0 <= self.noise_sd < float("inf")):
            raise ValueError(
                f"GradeScale {self.label}: noise_sd must be a finite number >= 0 (log-scale SD), got {self.noise_sd!r}"
            )
        if not 1 <= self.severe_grade <= lims.size:
            raise ValueError(
                f"GradeScale {self.label}: severe_grade must be in 1..{lims.size}, got {self.severe_grade}"
            )

    def limit(self, grade: int) -> float:
        """The value below which the grade is at least ``grade`` (1 = the lower limit of normal)."""
        return float(self.lower_limits[grade - 1])

    def p_measured_at_least(self, values, grade: int) -> np.ndarray:
        """:meth:`any_at_least` with lab noise, in numpy for host-side tables (no JAX dispatch or
        compilation per shape)."""
        return noisy_any_below(values, self.limit(grade), self.noise_sd, host=True)

    def grade(self, values) -> np.ndarray:
        """Grade of each value (0-4)."""
        v = np.asarray(values)
        return sum((v < lim).astype(np.int64) for lim in self.lower_limits)

    def any_at_least(self, values, grade: int, temperature: float = 0.0, *, axis: int = -1, sharpness: float = 1.0):
        """Indicator (smooth for T > 0) that some value along ``axis`` has grade >= ``grade``; with
        ``noise_sd > 0`` the probability that some *measured* value has, ``1 - prod_v Phi((log
        x_v - log limit) / noise_sd)``, at every temperature (:func:`noisy_any_below`)."""
        if self.noise_sd > 0:
            return noisy_any_below(values, self.limit(grade), self.noise_sd, axis=axis)
        return any_below(values, self.limit(grade), temperature, axis=axis, sharpness=sharpness)
