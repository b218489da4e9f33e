"""One study of a fit: its design, fixed virtual cohort, rows and compiled solves."""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .._core import AbstractModel, ParameterSet, SolverSettings
from .._core._plan import plan_rows, with_given_doses
from ..endpoints import ResponseCriteria
from ._designs import StudyDesign
from ._likelihood import Likelihood
from ._predict import needed_observables, predict_rows, selected_days
from ._rows import RowModel
from ._sensitivity import Sensitivity, influence, run_study

_WORKERS = max(1, min(os.cpu_count() or 1, 8))


@functools.cache
def _pool() -> ThreadPoolExecutor:
    """The threads that solve a study's chunks of patients in parallel (started on first use)."""
    return ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="lenapk-fit")


class Study:
    """One study: design, cohort, rows and the compiled solve (fixed once built).

    ``active``: the free parameters that can move this study's fitted observables (structural
    analysis of the model); only those carry sensitivities in its solve."""

    def __init__(
        self,
        *,
        name: str,
        design: StudyDesign,
        rows: list[RowModel],
        model: AbstractModel,
        pop,
        overrides: dict,
        free: tuple[str, ...],
        x0: np.ndarray,
        typical: ParameterSet,
        settings: SolverSettings,
        dose_levels: pd.DataFrame,
        response: ResponseCriteria | None,
    ):
        self.name, self.design, self.rows, self.model = name, design, rows, model
        self.pop, self.overrides, self.free, self.typical = pop, overrides, free, typical
        self.settings, self.response = settings, response
        self.idx = np.array([r.index for r in rows])
        self.specs = tuple(r.spec for r in rows)
        self.fitted_mask = jnp.asarray([r.fitted for r in rows])
        self.dose_levels = dose_levels[dose_levels["study"] == name] if len(dose_levels) else dose_levels
        self.likelihood = Likelihood.from_rows(rows)
        predictable = [r for r in rows if r.kind != "none"]
        has_levels = len(self.dose_levels) > 0 and design.rules is not None and response is not None
        names = set(needed_observables(predictable, response)) | (set(response.markers) if has_levels else set())
        self.names = tuple(sorted(names)) or (model.observable_names[0],)
        sel = set(selected_days(predictable, design)) | (set(design.visits) if has_levels else set())
        self.sel_days = tuple(sorted(sel))
        self.with_doses = design.rules is not None
        self.plan = design.plan(model, pop.n)
        self.chunks = max(c for c in range(1, _WORKERS + 1) if pop.n % c == 0 and (c == 1 or pop.n // c >= 8))
        self._tangent_fn = jax.jit(self._tangents)
        self.active, self.sens_model = self._sensitivities(model, free, x0, rows)
        self.active_idx = np.array([free.index(f) for f in self.active], dtype=int)
        self._nll = jax.jit(jax.value_and_grad(self.likelihood.nll))

    def _sensitivities(self, model, free, x0, rows):
        """(active free parameters, the model with their sensitivities, or None)."""
        fitted_obs = set(needed_observables([r for r in rows if r.fitted], self.response))
        if not free:
            return (), None
        p0, tan0 = self._tangent_fn(jnp.asarray(x0, dtype=jnp.float64))
        info = influence(model, p0, tan0, free)
        active = tuple(f for f in free if info["observables"][f] & fitted_obs)
        if not active:
            return (), None
        needed = np.zeros(model.n_states, bool)
        for o in fitted_obs:
            needed |= info["ancestors"][o]
        blocks = tuple(tuple(int(i) for i in np.flatnonzero(info["reach"][f] & needed)) for f in active)
        return active, Sensitivity(model, blocks, tuple(info["keys"][f] for f in active))

    # -- parameters
    def _typical(self, x) -> ParameterSet:
        return self.typical.replace(**{f: jnp.exp(x[i]) for i, f in enumerate(self.free)}, **self.overrides)

    def _tangents(self, x):
        """Per-patient parameters at ``x`` and their derivatives along every free direction."""
        fn = lambda xx: self.pop.parameters(self.model, self._typical(xx))  # noqa: E731
        return jax.vmap(lambda e: jax.jvp(fn, (x,), (e,)), out_axes=(None, 0))(jnp.eye(len(self.free)))

    # -- solves
    def submit(self, x, frozen=None, *, tangents: bool = True) -> list:
        """Start the cohort's solve: one task per chunk of patients on the thread pool (JAX
        releases the GIL while a compiled solve runs, so chunks use separate cores).  With
        ``frozen`` daily doses those are given instead of running the dose rules."""
        x = jnp.asarray(x, dtype=jnp.float64)
        plan = self.plan if frozen is None else with_given_doses(self.plan, frozen)
        rules = self.design.rules if frozen is None else None
        model = self.sens_model if tangents and self.sens_model is not None else self.model
        p, p_tan = self._tangent_fn(x)
        if model is self.sens_model:
            p_tan = jax.tree_util.tree_map(lambda a: a[self.active_idx], p_tan)
        m = self.pop.n // self.chunks
        tasks = []
        for i in range(self.chunks):
            sl = slice(i * m, (i + 1) * m)
            pc = jax.tree_util.tree_map(lambda a: a[sl], p)
            params = (
                {"base": pc, "tan": jax.tree_util.tree_map(lambda a: a[:, sl], p_tan)}
                if model is self.sens_model
                else pc
            )
            args = (
                model,
                params,
                plan_rows(plan, sl),
                rules,
                self.settings,
                self.sel_days,
                self.names,
                self.with_doses,
            )
            tasks.append(_pool().submit(lambda a=args: jax.block_until_ready(run_study(*a))))
        return tasks

    def collect(self, tasks):
        """Join the chunks of :meth:`submit`: (values, tangents, doses, ok); the doses are the
        planned ones when the solve gave no dose record (no dose rules)."""
        parts = [t.result() for t in tasks]
        if len(parts) == 1:
            values, tangents, doses, ok = parts[0]
        else:
            values = {k: jnp.concatenate([q[0][k] for q in parts], axis=0) for k in parts[0][0]}
            tangents = (
                None
                if parts[0][1] is None
                else {k: jnp.concatenate([q[1][k] for q in parts], axis=1) for k in parts[0][1]}
            )
            doses = None if parts[0][2] is None else jnp.concatenate([q[2] for q in parts], axis=0)
            ok = all(bool(q[3]) for q in parts)
        return values, tangents, self.plan.planned if doses is None else doses, ok

    def solve(self, x, frozen=None, *, tangents: bool = True):
        return self.collect(self.submit(x, frozen, tangents=tangents))

    def predict(self, out, temperature: float) -> np.ndarray:
        values, _, doses, _ = out
        return np.asarray(
            predict_rows(values, self.specs, self.design, self.sel_days, temperature, doses, self.response)
        )

    def pred_and_jacobian(self, out, temperature: float):
        """Smooth predictions (R,) and their Jacobian (k_active, R)."""
        values, tangents, doses, _ = out
        if tangents is None:
            return _predict_jit(
                values, doses, self.specs, self.design.schedule, self.sel_days, temperature, self.response
            ), jnp.zeros((0, len(self.rows)))
        return _pred_jac_jit(
            values,
            tangents,
            doses,
            self.fitted_mask,
            self.specs,
            self.design.schedule,
            self.sel_days,
            temperature,
            self.response,
        )


@eqx.filter_jit
def _predict_jit(values, doses, rows, schedule, sel_days, T, response):
    return predict_rows(values, rows, schedule, sel_days, T, doses, response)


@eqx.filter_jit
def _pred_jac_jit(values, tangents, doses, fitted, rows, schedule, sel_days, T, response):
    f = lambda v: predict_rows(v, rows, schedule, sel_days, T, doses, response)  # noqa: E731
    pred, jac = jax.vmap(lambda t: jax.jvp(f, (values,), (t,)), out_axes=(None, 0))(tangents)
    return pred, jnp.where(fitted[None, :], jac, 0.0)
