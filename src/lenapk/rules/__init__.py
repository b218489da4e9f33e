"""Dose rules: decisions taken inside the simulation at the start of each day.

:class:`NoRules` gives every planned dose; :class:`DoseModificationRules` holds, reduces, stops
and gates escalation at the visits of a :class:`LabVisits` schedule, on observables and
thresholds given as data.  Write your own by subclassing :class:`AbstractDoseRules`.
"""

from .._core import AbstractDoseRules, NoRules
from ._modification import DoseModificationRules
from ._visits import LabVisits

__all__ = ["AbstractDoseRules", "DoseModificationRules", "LabVisits", "NoRules"]
