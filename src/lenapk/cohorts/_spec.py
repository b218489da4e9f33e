"""Everything that defines a cohort's results, checked once before any computation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np
import pandas as pd

from .._core import AbstractDoseRules, AbstractModel, DosePlan, ParameterSet, Regimen, SolverSettings, plan_for
from .._core import _validate as V
from .._core._plan import stack_plans
from ..endpoints import EndpointSet, endpoints_of
from ..population import check_setting, fill_covariates, validate_patients
from ..rules import LabVisits

#: Patients per shared-step ODE (measured on a 2-core CPU, 24 cycles: see cohort()'s docstring).
DEFAULT_BLOCK_SIZE = 256
#: Patients per chunk (one Parquet file, one Dask task, one progress update).
DEFAULT_CHUNK_SIZE = 1024


@dataclass(frozen=True, eq=False)
class CohortSpec:
    """Everything that defines a cohort's results (picklable: it travels to Dask workers).

    ``regimen`` is the regimen of every patient, or ``None`` when ``regimens`` gives one per
    patient (global row order, all over ``n_days``)."""

    model: AbstractModel
    typical: ParameterSet
    rules: AbstractDoseRules | None
    settings: SolverSettings
    n: int
    seed: int
    setting: str
    patients: pd.DataFrame | None  # validated, with a 'patient' column
    block_size: int
    chunk_size: int
    visits: np.ndarray  # sorted unique days in [1, n_days]
    visits_arg: Any  # "daily", "protocol" or the list given (for the manifest)
    variability: bool
    regimen: Regimen | None
    regimens: tuple[Regimen, ...] | None = field(repr=False)
    shared_segments: bool
    n_segments: int
    infusions: bool = False  # some patient's regimen has infusions
    carries_day_ratios: bool = False
    one_segment_per_day: bool = True  # every patient doses once a day into one compartment
    compartment: int = 0  # that compartment
    _plans: dict = field(default_factory=dict, repr=False)  # compiled plans by regimen

    @property
    def endpoints(self) -> EndpointSet:
        return endpoints_of(self.model)

    @property
    def n_days(self) -> int:
        return (self.regimen or self.regimens[0]).n_days

    @property
    def cycle_days(self) -> int:
        return (self.regimen or self.regimens[0]).cycle_days

    @property
    def n_chunks(self) -> int:
        return -(-self.n // self.chunk_size)

    def chunk_rows(self, index: int) -> tuple[int, int]:
        start = index * self.chunk_size
        return start, min(start + self.chunk_size, self.n)

    def shared_plan(self) -> DosePlan:
        return plan_for(self.model, self.regimen)

    def block_plan(self, rows: np.ndarray) -> DosePlan:
        """The plan of global rows (padding rows >= n repeat the last patient): per-patient
        amounts ``(B, S, C)``, with per-patient segments too unless the cohort shares them."""
        plans = [self._plan_of(self.regimens[min(int(r), self.n - 1)]) for r in rows]
        plan, _ = stack_plans(
            plans,
            n_segments=None if self.shared_segments else self.n_segments,
            infusions=self.infusions,
            carries_day_ratios=self.carries_day_ratios,
        )
        return plan.with_statics(
            one_segment_per_day=self.one_segment_per_day and self.shared_segments, compartment=self.compartment
        )

    def _plan_of(self, regimen: Regimen) -> DosePlan:
        key = (_structure(regimen), np.asarray(regimen.amount_mg).tobytes())
        if key not in self._plans:
            self._plans[key] = plan_for(self.model, regimen)
        return self._plans[key]

    def planned(self, rows: np.ndarray) -> np.ndarray:
        """Planned daily totals of global rows: ``(n_days,)`` shared or ``(len(rows), n_days)``."""
        if self.regimen is not None:
            return np.asarray(self.regimen.doses, dtype=np.float64)
        return np.stack([np.asarray(self.regimens[min(int(r), self.n - 1)].doses, dtype=np.float64) for r in rows])


def _visits(visits, n_days: int, cycle_days: int):
    """On-treatment lab-visit days and the manifest's record of the argument."""
    if isinstance(visits, str):
        V.one_of("visits", visits, ("daily", "protocol"))
        v = (
            np.arange(1, n_days + 1)
            if visits == "daily"
            else LabVisits.standard(cycle_days=cycle_days).with_last_day(n_days)
        )
        arg = visits
    else:
        arr = np.asarray(visits, dtype=float).reshape(-1)
        if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"visits must be whole days, got {list(arr[:5])}")
        if arr.min() < 0 or arr.max() > n_days:
            raise ValueError(f"visits must lie in [0, {n_days}] (days of the regimen), got {arr.min()}..{arr.max()}")
        v, arg = arr.astype(np.int64), None
    v = np.unique(v[v > 0]).astype(np.int64)  # on-treatment visits; day 0 is the baseline
    n_cycles = -(-n_days // cycle_days)
    empty = sorted(set(range(n_cycles)) - set(np.minimum(v // cycle_days, n_cycles - 1).tolist()))
    if empty:
        c = empty[0]
        raise ValueError(
            f"visits: cycle {c + 1} (days {c * cycle_days}..{min((c + 1) * cycle_days, n_days) - 1}) has "
            "no on-treatment visit; per-cycle grades need at least one visit in every cycle"
        )
    return v, arg if arg is not None else [int(x) for x in v]


def _per_patient(regimen, ids: list) -> tuple[Regimen | None, tuple[Regimen, ...] | None]:
    """(shared regimen, None) or (None, one regimen per row over a common horizon)."""
    if isinstance(regimen, Regimen):
        return regimen, None
    if isinstance(regimen, Mapping):
        missing = [i for i in ids if i not in regimen]
        if missing:
            raise ValueError(
                f"regimen: no regimen for patient(s) {missing[:5]}; the mapping must give one per patient id"
            )
        regs = [regimen[i] for i in ids]
    elif isinstance(regimen, Sequence) and not isinstance(regimen, str):
        if len(regimen) != len(ids):
            raise ValueError(f"regimen: {len(regimen)} regimens for {len(ids)} patients; give one per patient")
        regs = list(regimen)
    else:
        raise ValueError(
            f"regimen must be a lenapk.Regimen, a mapping patient id -> Regimen or a list of "
            f"Regimens, got {type(regimen).__name__}"
        )
    for i, r in zip(ids, regs):
        V.instance(f"regimen[{i!r}]", r, Regimen, "a lenapk.Regimen")
    cycles = {r.cycle_days for r in regs}
    if len(cycles) > 1:
        raise ValueError(f"regimen: the patients' regimens must share one cycle length, got {sorted(cycles)}")
    n_days = max(r.n_days for r in regs)
    return None, tuple(r if r.n_days == n_days else r.with_days(n_days) for r in regs)


def _structure(regimen: Regimen) -> tuple:
    """What a compiled plan's structure depends on (its segments and static fields)."""
    return regimen.time_h, regimen.duration_h, regimen.compartment, regimen.n_days


def _segments(model, regimen, regimens) -> dict:
    """How the cohort's plans stack: shared segments or not, their number, infusions, ratios and
    the static fields (one plan compiled per distinct regimen structure)."""
    distinct = {_structure(r): r for r in ([regimen] if regimens is None else regimens)}
    plans = [plan_for(model, r) for r in distinct.values()]
    shared = len(plans) == 1 or stack_plans(plans)[1]
    daily = shared and all(p.one_segment_per_day for p in plans) and len({p.compartment for p in plans}) == 1
    return dict(
        shared_segments=shared,
        n_segments=max(p.n_segments for p in plans),
        infusions=any(p.has_infusions for p in plans),
        carries_day_ratios=any(p.carries_day_ratios for p in plans),
        one_segment_per_day=daily,
        compartment=plans[0].compartment if daily else 0,
    )


def _typical(model: AbstractModel, params) -> ParameterSet:
    typical = model.default_params() if params is None else params
    V.instance("params", typical, ParameterSet, "a lenapk.ParameterSet of typical values")
    model.validate(typical)
    if any(np.ndim(v) != 0 for v in typical.values.values()):
        raise ValueError("params must hold typical (scalar) values; per-patient values come from the population model")
    return typical


def make_spec(
    model,
    regimen,
    n,
    seed,
    patients,
    setting,
    rules,
    params,
    chunk_size,
    block_size,
    visits,
    settings,
    variability,
    fill=None,
) -> CohortSpec:
    """Check every argument of :func:`lenapk.cohort` (errors name the argument) and build the spec."""
    if not jax.config.jax_enable_x64:
        raise RuntimeError("lenapk.cohort needs float64: jax.config.update('jax_enable_x64', True)")
    V.instance("settings", settings, SolverSettings, "a lenapk.SolverSettings")
    if rules is not None:
        V.instance("rules", rules, AbstractDoseRules, "a lenapk dose-rule object")
        model.require_observables(rules.observables_read, who=f"rules {type(rules).__name__}")
    model.require_observables(endpoints_of(model).observables_read, who="the model's endpoints")
    typical = _typical(model, params)
    seed, block_size = V.count("seed", seed, 0), V.count("block_size", block_size, 1)
    V.flag("variability", variability)
    table = None
    if patients is not None:
        if fill is not None:  # missing covariate columns drawn from the setting, or typical
            patients, _ = fill_covariates(patients, model, fill=fill, setting=check_setting(model, setting), seed=seed)
        table = validate_patients(patients, model)  # errors name the column and row
        if n is not None and n != len(table):
            raise ValueError(f"n ({n!r}) differs from the number of patients in the table ({len(table)})")
        n = len(table)
        table = table[["patient", *model.covariate_names]].reset_index(drop=True)
        ids = [x.item() if isinstance(x, np.generic) else x for x in table["patient"]]
    else:
        n = V.count("n", n, 1)
        setting = check_setting(model, setting)
        ids = list(range(n))
    shared, per_patient = _per_patient(regimen, ids)
    first = shared or per_patient[0]
    chunk_size = DEFAULT_CHUNK_SIZE if chunk_size is None else V.count("chunk_size", chunk_size, 1)
    v, visits_arg = _visits(visits, first.n_days, first.cycle_days)
    return CohortSpec(
        model=model,
        typical=typical,
        rules=rules,
        settings=settings,
        n=int(n),
        seed=seed,
        setting=setting,
        patients=table,
        block_size=block_size,
        chunk_size=-(-chunk_size // block_size) * block_size,
        visits=v,
        visits_arg=visits_arg,
        variability=variability,
        regimen=shared,
        regimens=per_patient,
        **_segments(model, shared, per_patient),
    )
