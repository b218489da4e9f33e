r"""Calibration: fit typical parameters to clinical summary data by gradient optimisation.

:func:`fit` minimises the negative log-likelihood of the summary rows (:mod:`lenapk.observe`)
plus log-normal priors (:data:`DEFAULT_PRIORS`) over the free parameters, on the log scale
(``x = log theta``), with optax (L-BFGS, Adam, or Adam then L-BFGS).

Each study is one fixed virtual cohort (:func:`lenapk.virtual_population`, seeds fixed: common
random numbers, so the objective is a deterministic, smooth function of ``x`` at ``temperature >
0``), solved as one batched ODE by :func:`lenapk.solve.solve_days`.

Gradients: **forward sensitivities**.  The model is wrapped so that the ODE state carries, next
to ``y``, its derivatives ``S_j = dy/dx_j`` for the free parameters that can influence the
study's fitted observables (found once by a structural analysis of the model's Jacobians), with
``dS_j/dt = (df/dy) S_j + df/dx_j`` evaluated by ``jax.jvp`` of the model's right-hand side.
The same adaptive solver integrates both (its error control covers the sensitivities, as in
CVODES).  This gives the Jacobian of every predicted summary, hence the gradient; it is faster
and far quicker to compile than reverse mode through the solver, and forward-mode AD
(``jax.jacfwd``) cannot go through :func:`solve_days` (diffrax's checkpointed adjoint is
reverse-only).  For the same reason ``jax.hessian`` cannot differentiate through the solver, so
the **Hessian** is the central difference of the exact (sensitivity) gradient, symmetrised
(``hessian_step`` on the log scale).  Standard errors: ``cov(x) = H^{-1}``; natural scale by the
delta method, ``SE(theta) = theta SE(x)``, and 95% intervals ``theta exp(+/- 1.96 SE(x))``.

Identifiability is reported, not hidden: the eigenvalues of ``H`` are returned; parameters that
load (|component| > 0.3) on an eigenvector with a non-positive or near-zero eigenvalue (below
``1e-8`` of the largest), or whose log-scale SE exceeds 1 (a 95% interval wider than a factor
of 50), are flagged in ``FitResult.non_identifiable`` and the estimates table.

Parameters acting on the closed-form PK (``cl``, ``v``, ``ka``) are not differentiated by the
sensitivity system and cannot be free; the data hold no concentrations anyway.
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

from .cll import LenalidomideCLL
from .model import Model
from .observations import ENDPOINTS, Observations, validate_observation_table
from .observe import (
    Likelihood,
    RowModel,
    StudyDesign,
    build_row_models,
    default_designs,
    dose_level_predictions,
    needed_observables,
    predict_rows,
    selected_days,
)
from .parameters import ParameterSet
from .population import virtual_population
from .simulate import planned_doses
from .solve import SolverSettings, solve_days

# The calibration's free parameters: clone kinetics (growth, its relapsed multiplier, kill), Ig
# synthesis (e_help, the betas, the recovery delay t_rec), marrow potencies and the T-cell
# response.  Fixed at their assumed values, because summary data do not identify them (a
# 12-parameter joint fit that freed k_act, ec50_act and k_supp ran k_act to its bound and left
# k_act, ec50_act, k_supp, kill and the betas with infinite or >100% SEs): k_act, ec50_act and
# emax_act (only their product with kill is seen) and k_supp (with the betas, only the Ig rise is
# seen).  e_help and t_rec stay
# free but are flagged as not identifiable (they share one flat direction, correlation -0.98).
DEFAULT_FREE = (
    "kill", "growth", "f_relapsed", "e_help", "beta_igg", "beta_igm", "beta_iga", "t_rec", "ec50_n", "ec50_p",
    "e_cd3",
)
# Plausible ranges (natural scale) that keep the search away from degenerate, stiff regions;
# an estimate on a bound is flagged.  Parameters not listed get start x [1e-3, 1e3].
BOUNDS: dict[str, tuple[float, float]] = {
    "kill": (1e-5, 0.2), "growth": (1e-5, 0.05), "f_relapsed": (0.05, 50.0),
    "k_act": (1e-3, 1.0),  # activation turnover between 1 day and 3 years ("slow onset")
    "ec50_act": (0.1, 1000.0), "emax_act": (0.05, 20.0), "e_help": (1e-4, 10.0), "k_supp": (0.1, 1000.0),
    "t_rec": (1.0, 5000.0),  # plasma-cell recovery delay between a day and about 14 years
    "beta_igg": (0.01, 10.0), "beta_igm": (0.01, 10.0), "beta_iga": (0.01, 10.0),
    "ec50_n": (1.0, 1e4), "ec50_p": (1.0, 1e4), "e_cd3": (1e-3, 10.0),
}
FIT_SETTINGS = SolverSettings(rtol=1e-4, atol=1e-6)
DEFAULT_TEMPERATURE = 0.05


@dataclass(frozen=True)
class Prior:
    """Log-normal prior: ``log theta ~ N(log median, sd^2)``."""

    median: float
    sd: float
    source: str


_RANGE = 2 * 1.959963984540054  # a reported range read as a 95% interval: sd = log(hi/lo) / 3.92
DEFAULT_PRIORS: dict[str, Prior] = {
    # PK (Hughes 2019; older model CL 10.3, V 75.2: sd covers both versions). Not estimable here.
    "cl": Prior(12.0, 0.15, "Hughes 2019 (older model 10.3 L/h)"),
    "v": Prior(68.8, 0.10, "Hughes 2019 (older model 75.2 L)"),
    "ka": Prior(3.0, 0.5, "tmax about 1 h (label)"),
    # immunoglobulin half-lives (domain brief)
    "t_half_igg": Prior(22.0, math.log(23 / 21) / _RANGE, "IgG 21-23 d (domain brief) as a 95% range"),
    "t_half_igm": Prior(5.0, 0.2, "IgM about 5 d (domain brief); sd assumed"),
    "t_half_iga": Prior(6.0, 0.2, "IgA about 6 d (domain brief); sd assumed"),
    # Friberg system parameters from other drugs (Kloft 2006, Friberg 2002); sd assumed
    "mtt_n": Prior(84.2 / 24, 0.25, "Kloft 2006 MTT 84.2 h; sd assumed (other drug)"),
    "gamma_n": Prior(0.145, 0.3, "Kloft 2006; sd assumed (other drug)"),
    "mtt_p": Prior(124.0 / 24, 0.25, "Friberg 2002 leukocyte MTT 124 h; sd assumed"),
    "gamma_p": Prior(0.239, 0.3, "Friberg 2002 leukocytes; sd assumed"),
}

_WORKERS = max(1, min(os.cpu_count() or 1, 8))
_POOL = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="lenapk-fit")

IG_BASELINE_COVARIATE = {"igg": "igg0", "igm": "igm0", "iga": "iga0"}
BASELINE_PARAMETER = {"cd3": "cd3_0"}


# ====================================================================== forward sensitivities
class _Sensitivity(Model):
    """``base`` with forward sensitivities.

    State: ``y`` (all base states) followed, for each free direction ``j``, by ``S_j``: the
    derivatives of the states in ``blocks[j]`` only -- the states direction ``j`` can move *and*
    that the fitted observables depend on (structural analysis, :func:`_influence`).  Every
    other derivative is zero or unused, so it is neither stored nor integrated.  ``keys[j]``
    are the derived constants (``base.derive``) that direction ``j`` moves.

    Parameters are ``{"base": ParameterSet, "tan": ParameterSet with a leading k axis}`` (the
    per-patient parameters and their derivatives along the k directions).  The right-hand
    side of ``S_j`` is ``(df/dy) S_j + (df/dc) dc_j``: one ``jax.linearize`` of the base
    right-hand side per evaluation, applied to each direction (XLA drops the rows not kept).
    Observables: the base's, plus ``"d_" + name`` of shape ``(k, *batch)``."""

    base: Model
    blocks: tuple[tuple[int, ...], ...] = eqx.field(static=True)
    keys: tuple[tuple[str, ...], ...] = eqx.field(static=True)

    @property
    def k(self) -> int:
        return len(self.blocks)

    @property
    def n_states(self) -> int:
        return self.base.n_states + sum(len(b) for b in self.blocks)

    @property
    def _all_keys(self) -> tuple[str, ...]:
        return tuple(sorted(set().union(*map(set, self.keys))))

    def pk_constants(self, p):
        return self.base.pk_constants(p["base"])

    def derive(self, p):
        keys = self._all_keys
        fn = lambda pp: {key: v for key, v in self.base.derive(pp).items() if key in keys}  # noqa: E731
        c_dot = jax.vmap(lambda t: jax.jvp(fn, (p["base"],), (t,))[1])(p["tan"])
        return {"c": self.base.derive(p["base"]), "dot": c_dot}

    def _directions(self, c, y0, s_blocks):
        """Full-size tangents (state, derived constants) of each direction."""
        out = []
        for j, (block, keys) in enumerate(zip(self.blocks, self.keys)):
            s_full = jnp.zeros_like(y0) if s_blocks is None else jnp.zeros_like(y0).at[np.asarray(block, int)].set(s_blocks[j])
            dc = {key: (c["dot"][key][j] if key in keys else jnp.zeros_like(c["c"][key])) for key in self._all_keys}
            out.append((s_full, dc))
        return out

    def _linearize(self, fn, c, y0):
        act = {key: c["c"][key] for key in self._all_keys}
        return jax.linearize(lambda yy, aa: fn(yy, {**c["c"], **aa}), y0, act)

    def _split(self, y):
        ns = self.base.n_states
        blocks, pos = [], ns
        for b in self.blocks:
            blocks.append(y[pos:pos + len(b)])
            pos += len(b)
        return y[:ns], blocks

    def initial_state(self, c):
        y0, lin = jax.linearize(lambda aa: self.base.initial_state({**c["c"], **aa}),
                                {key: c["c"][key] for key in self._all_keys})
        parts = [y0]
        for (_, dc), block in zip(self._directions(c, y0, None), self.blocks):
            parts.append(lin(dc)[np.asarray(block, int)])
        return jnp.concatenate(parts, axis=0)

    def rhs(self, t, y, conc, c):
        y0, s = self._split(y)
        f0, lin = self._linearize(lambda yy, cc: self.base.rhs(t, yy, conc, cc), c, y0)
        parts = [f0]
        for (s_full, dc), block in zip(self._directions(c, y0, s), self.blocks):
            parts.append(lin(s_full, dc)[np.asarray(block, int)])
        return jnp.concatenate(parts, axis=0)

    def observables(self, y, conc, c):
        y0, s = self._split(y)
        obs, lin = self._linearize(lambda yy, cc: self.base.observables(yy, conc, cc), c, y0)
        dots = [lin(s_full, dc) for s_full, dc in self._directions(c, y0, s)]
        return {**obs, **{"d_" + name: jnp.stack([d[name] for d in dots]) for name in obs}}


@eqx.filter_jit
def _run_study(model, params, planned, rules, settings, sel_days, names, with_doses):
    """Solve a cohort; return the observables ``names`` at ``sel_days`` (n, D), their tangents
    (k, n, D) when ``model`` carries sensitivities, the doses given and a success flag."""
    traj = solve_days(model, params, planned, None, rules, settings)
    sel = np.asarray(sel_days)
    values = {name: traj.day_obs[name][..., sel] for name in names}
    tangents = (
        {name: traj.day_obs["d_" + name][..., sel] for name in names} if isinstance(model, _Sensitivity) else None
    )
    ok = jnp.all(traj.ok)
    for v in values.values():
        ok = ok & jnp.all(jnp.isfinite(v))
    return values, tangents, (traj.doses if with_doses else None), ok


def _nonzero(tree) -> bool:
    return any(bool(np.any(np.asarray(leaf) != 0)) for leaf in jax.tree_util.tree_leaves(tree))


@eqx.filter_jit
def _probe(model: Model, p, p_tan, y_scale):
    """Sparsity of the model at a generic point (states ``y0 * y_scale + (y_scale - 1)``, nonzero
    also where ``y0`` is 0; 10 ng/mL; every patient of the cohort): which derived constants,
    states and observables each free direction moves."""
    c = model.derive(p)
    c_dot = jax.vmap(lambda t: jax.jvp(model.derive, (p,), (t,))[1])(p_tan)
    y = model.initial_state(c) * y_scale + (y_scale - 1.0)
    conc, t = 10.0, 0.3
    ns = model.n_states
    nz = lambda a: jnp.any(a != 0, axis=tuple(range(1, a.ndim)))  # noqa: E731  (leading axis kept)
    keys = {key: nz(v) for key, v in c_dot.items()}  # (k,) each
    eye = jnp.eye(ns).reshape((ns, ns) + (1,) * (y.ndim - 1)) * jnp.ones_like(y)
    rhs_y = jax.vmap(lambda e: jax.jvp(lambda yy: model.rhs(t, yy, conc, c), (y,), (e,))[1])(eye)  # (j, i, n)
    adj = jnp.any(rhs_y != 0, axis=tuple(range(2, rhs_y.ndim))).T  # adj[i, j]: state j drives state i
    obs_y = jax.vmap(lambda e: jax.jvp(lambda yy: model.observables(yy, conc, c), (y,), (e,))[1])(eye)
    obs_y = {o: nz(v) for o, v in obs_y.items()}  # (ns,) each
    d_rhs = jax.vmap(lambda cd: jax.jvp(lambda cc: model.rhs(t, y, conc, cc), (c,), (cd,))[1])(c_dot)
    d_y0 = jax.vmap(lambda cd: jax.jvp(model.initial_state, (c,), (cd,))[1])(c_dot)
    d_obs = jax.vmap(lambda cd: jax.jvp(lambda cc: model.observables(y, conc, cc), (c,), (cd,))[1])(c_dot)
    direct = jnp.any((d_rhs != 0) | (d_y0 != 0), axis=tuple(range(2, d_rhs.ndim)))  # (k, ns)
    return keys, adj, obs_y, direct, {o: nz(v) for o, v in d_obs.items()}


def _closure(start: np.ndarray, adj: np.ndarray) -> np.ndarray:
    """States reachable from ``start`` along ``adj[i, j]`` (state j drives state i)."""
    reached = start.copy()
    while True:
        more = reached | np.any(adj[:, reached], axis=1)
        if (more == reached).all():
            return reached
        reached = more


def _influence(model: Model, p, p_tan, free, seed: int = 0) -> dict:
    """Structure of the model at a generic point: for each free parameter, the derived constants
    it moves (``keys``), the states it can move (``reach``) and the observables it can move
    (``observables``); for each observable, the states it depends on (``ancestors``)."""
    rng = np.random.default_rng(seed)
    y_scale = 1.0 + 0.2 * rng.uniform(size=(model.n_states,) + tuple(np.shape(p[free[0]])))
    keys, adj, obs_y, direct, d_obs = jax.tree_util.tree_map(np.asarray, _probe(model, p, p_tan, y_scale))
    out = {"keys": {}, "reach": {}, "observables": {}, "ancestors": {}}
    for i, name in enumerate(free):
        out["keys"][name] = tuple(sorted(key for key, v in keys.items() if v[i]))
        reach = _closure(direct[i], adj)
        out["reach"][name] = reach
        out["observables"][name] = {o for o, v in d_obs.items() if v[i]} | {
            o for o, v in obs_y.items() if np.any(v[reach])}
    for o, v in obs_y.items():
        out["ancestors"][o] = _closure(v.astype(bool), adj.T)
    return out


# ====================================================================== one study
class _Study:
    """One study: design, cohort, rows and the compiled solve."""

    def __init__(self, *, name, design: StudyDesign, rows: list[RowModel], model: Model, pop, typical_overrides,
                 free: tuple[str, ...], x0: np.ndarray, typical: ParameterSet, settings: SolverSettings,
                 temperature: float, dose_levels: pd.DataFrame):
        self.name, self.design, self.rows, self.model = name, design, rows, model
        self.pop, self.overrides, self.free, self.typical = pop, typical_overrides, free, typical
        self.settings, self.temperature = settings, float(temperature)
        self.idx = np.array([r.index for r in rows])
        self.specs = tuple(r.spec for r in rows)
        self.fitted_mask = jnp.asarray([r.fitted for r in rows])
        self.dose_levels = dose_levels[dose_levels["study"] == name] if len(dose_levels) else dose_levels
        self.likelihood = Likelihood.from_rows(rows)
        predictable = [r for r in rows if r.kind != "none"]
        fitted = [r for r in rows if r.fitted]
        names = set(needed_observables(predictable))
        has_levels = len(self.dose_levels) > 0 and design.rules is not None
        if has_levels:
            names |= {"alc"}
        self.names = tuple(sorted(names)) or ("alc",)
        sel = set(selected_days(predictable, design))
        if has_levels:
            sel |= set(design.visits)
        self.sel_days = tuple(sorted(sel))
        self.with_doses = design.rules is not None
        self.frozen_doses = None  # doses given under the rule at a fixed point, used instead of the rule
        self.planned = jnp.broadcast_to(planned_doses(design.regimen, design.n_days), (pop.n, design.n_days))
        self.chunks = max(c for c in range(1, _WORKERS + 1) if pop.n % c == 0 and (c == 1 or pop.n // c >= 8))

        # free parameters that can move this study's fitted observables
        self._tangent_fn = jax.jit(self._tangents)
        fitted_obs = set(needed_observables(fitted))
        if free:
            p0, tan0 = self._tangent_fn(jnp.asarray(x0, dtype=jnp.float64))
            info = _influence(model, p0, tan0, free)
            self.active = tuple(f for f in free if info["observables"][f] & fitted_obs)
        else:
            self.active = ()
        self.active_idx = np.array([free.index(f) for f in self.active], dtype=int)
        self.sens_model = None
        if self.active:
            needed = np.zeros(model.n_states, bool)
            for o in fitted_obs:
                needed |= info["ancestors"][o]
            blocks = tuple(tuple(int(i) for i in np.flatnonzero(info["reach"][f] & needed)) for f in self.active)
            self.sens_model = _Sensitivity(model, blocks, tuple(info["keys"][f] for f in self.active))
        self._nll = jax.jit(jax.value_and_grad(self.likelihood.nll))

    # -- parameters
    def _typical(self, x) -> ParameterSet:
        return self.typical.replace(**{f: jnp.exp(x[i]) for i, f in enumerate(self.free)}, **self.overrides)

    def _tangents(self, x):
        """Per-patient parameters at ``x`` and their derivatives along every free direction."""
        fn = lambda xx: self.pop.parameters(self.model, self._typical(xx))  # noqa: E731
        return jax.vmap(lambda e: jax.jvp(fn, (x,), (e,)), out_axes=(None, 0))(jnp.eye(len(self.free)))

    # -- solves
    def submit(self, x, *, tangents: bool = True, rules: bool = False) -> list:
        """Start the cohort's solve: one task per chunk of patients on the thread pool (JAX
        releases the GIL while a compiled solve runs, so chunks use separate cores).  With frozen
        doses (and ``rules=False``) the frozen doses are given instead of running the rule."""
        x = jnp.asarray(x, dtype=jnp.float64)
        frozen = self.frozen_doses is not None and not rules
        planned = self.frozen_doses if frozen else self.planned
        dose_rules = None if frozen else self.design.rules
        model = self.sens_model if tangents and self.sens_model is not None else self.model
        p, p_tan = self._tangent_fn(x)
        if model is self.sens_model:
            p_tan = jax.tree_util.tree_map(lambda a: a[self.active_idx], p_tan)
        m = self.pop.n // self.chunks
        tasks = []
        for i in range(self.chunks):
            sl = slice(i * m, (i + 1) * m)
            pc = jax.tree_util.tree_map(lambda a: a[sl], p)
            params = {"base": pc, "tan": jax.tree_util.tree_map(lambda a: a[:, sl], p_tan)} \
                if model is self.sens_model else pc
            args = (model, params, planned[sl], dose_rules, self.settings, self.sel_days, self.names,
                    self.with_doses)
            tasks.append(_POOL.submit(lambda a=args: jax.block_until_ready(_run_study(*a))))
        return tasks

    def collect(self, tasks):
        """Join the chunks of :meth:`submit`: (values, tangents, doses, ok); the doses are the
        planned ones when the solve gave no dose record (no dose rules)."""
        parts = [t.result() for t in tasks]
        if len(parts) == 1:
            values, tangents, doses, ok = parts[0]
        else:
            values = {k: jnp.concatenate([q[0][k] for q in parts], axis=0) for k in parts[0][0]}
            tangents = None if parts[0][1] is None else {
                k: jnp.concatenate([q[1][k] for q in parts], axis=1) for k in parts[0][1]}
            doses = None if parts[0][2] is None else jnp.concatenate([q[2] for q in parts], axis=0)
            ok = all(bool(q[3]) for q in parts)
        return values, tangents, self.planned if doses is None else doses, ok

    def solve(self, x, *, tangents: bool = True, rules: bool = False):
        return self.collect(self.submit(x, tangents=tangents, rules=rules))

    def predict(self, out, temperature=None):
        values, _, doses, _ = out
        T = self.temperature if temperature is None else temperature
        return np.asarray(predict_rows(values, self.specs, self.design, self.sel_days, T, doses))

    def pred_and_jacobian(self, out):
        """Smooth predictions (R,) and their Jacobian (k_active, R)."""
        values, tangents, doses, _ = out
        if tangents is None:
            pred = _predict_jit(values, doses, self.specs, self.design.schedule, self.sel_days, self.temperature)
            return pred, jnp.zeros((0, len(self.rows)))
        return _pred_jac_jit(values, tangents, doses, self.fitted_mask, self.specs, self.design.schedule,
                             self.sel_days, self.temperature)


@eqx.filter_jit
def _predict_jit(values, doses, rows, design, sel_days, T):
    return predict_rows(values, rows, design, sel_days, T, doses)


@eqx.filter_jit
def _pred_jac_jit(values, tangents, doses, fitted, rows, design, sel_days, T):
    f = lambda v: predict_rows(v, rows, design, sel_days, T, doses)  # noqa: E731
    pred, jac = jax.vmap(lambda t: jax.jvp(f, (values,), (t,)), out_axes=(None, 0))(tangents)
    return pred, jnp.where(fitted[None, :], jac, 0.0)


# ====================================================================== the objective
class Objective:
    """Negative log-likelihood of summary data (+ log-normal priors) as a function of the free
    parameters on the log scale.  Built by :func:`fit`; usable on its own (``value_and_grad``,
    ``table``) to check a model against data or to differentiate the fit objective."""

    def __init__(
        self,
        observations,
        *,
        free: Sequence[str] = DEFAULT_FREE,
        params: ParameterSet | None = None,
        n_patients: int | Mapping[str, int] = 64,
        seed: int = 0,
        temperature: float = DEFAULT_TEMPERATURE,
        designs: Mapping[str, StudyDesign] | None = None,
        model: Model | None = None,
        settings: SolverSettings = FIT_SETTINGS,
        cv: Mapping[str, float] | None = None,
        priors: Mapping[str, Prior] | None = None,
        anchor_baselines: bool = True,
        bounds: Mapping[str, tuple[float, float]] | None = None,
    ):
        self.model = LenalidomideCLL() if model is None else model
        if isinstance(observations, Observations):
            table, dose_levels = observations.observations, observations.dose_levels
        elif isinstance(observations, pd.DataFrame):
            table, dose_levels = validate_observation_table(observations), pd.DataFrame()
        else:
            raise ValueError(f"observations must be lenapk.Observations or a DataFrame, got {type(observations).__name__}")
        if len(table) == 0:
            raise ValueError("observations: no rows to fit")
        self.table = table.reset_index(drop=True)
        self.dose_levels = dose_levels
        if not (isinstance(temperature, (int, float)) and temperature >= 0):
            raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
        self.temperature = float(temperature)
        self.typical = self.model.default_params() if params is None else params
        if not isinstance(self.typical, ParameterSet):
            raise ValueError(f"params must be a lenapk.ParameterSet, got {type(self.typical).__name__}")
        self.model.validate(self.typical)
        self.free = self._check_free(free)
        self.priors = {k: v for k, v in (DEFAULT_PRIORS if priors is None else priors).items() if k in self.free}
        self.settings = settings
        self.seed = int(seed)
        designs = dict(designs or {})
        missing = ~self.table["study"].isin(list(designs))
        all_designs = {**(default_designs(self.table[missing]) if missing.any() else {}), **designs}
        self.designs = {s: all_designs[s] for s in self.table["study"].unique()}
        self.x0 = np.log(np.array([float(self.typical[f]) for f in self.free]))
        b = {**BOUNDS, **(bounds or {})}
        lims = [b.get(f, (math.exp(x) * 1e-3, math.exp(x) * 1e3)) for f, x in zip(self.free, self.x0)]
        self.lower = np.log([lo for lo, _ in lims]) if lims else np.zeros(0)
        self.upper = np.log([hi for _, hi in lims]) if lims else np.zeros(0)
        for f, x, lo, hi in zip(self.free, self.x0, self.lower, self.upper):
            if not lo <= x <= hi:
                raise ValueError(f"params.{f} = {math.exp(x):g} lies outside its bounds [{math.exp(lo):g}, "
                                 f"{math.exp(hi):g}]; pass bounds={{{f!r}: (low, high)}}")

        pops, overrides, anchored = {}, {}, set()
        for i, (study, design) in enumerate(self.designs.items()):
            n = n_patients[study] if isinstance(n_patients, Mapping) else n_patients
            if not (isinstance(n, (int, np.integer)) and n >= 1):
                raise ValueError(f"n_patients must be a whole number >= 1, got {n!r}")
            pop = virtual_population(self.model, int(n), self.seed + i, setting=design.setting)
            overrides[study] = {}
            if anchor_baselines:
                pop, overrides[study], rows_used = self._anchor(study, pop)
                anchored |= rows_used
            pops[study] = pop
        self.anchored = frozenset(anchored)
        self.rows = build_row_models(self.table, self.designs, cv=cv, anchored=self.anchored)
        self.likelihood = Likelihood.from_rows(self.rows)
        self.studies = [
            _Study(name=s, design=d, rows=[r for r in self.rows if r.study == s], model=self.model, pop=pops[s],
                   typical_overrides=overrides[s], free=self.free, x0=self.x0, typical=self.typical,
                   settings=settings, temperature=self.temperature, dose_levels=dose_levels)
            for s, d in self.designs.items()
        ]
        self.evaluations = 0
        self._cache: dict = {}

    # -- setup helpers
    def _check_free(self, free) -> tuple[str, ...]:
        free = tuple(free)
        specs = {s.name: s for s in self.model.parameter_specs}
        for f in free:
            if f not in specs:
                raise ValueError(f"free: unknown parameter {f!r}; known: {sorted(specs)}")
            if specs[f].kind == "covariate":
                raise ValueError(f"free: {f!r} is a patient covariate, not a model parameter")
            if not specs[f].positive:
                raise ValueError(f"free: {f!r} may be 0 and cannot be estimated on the log scale")
        if len(set(free)) != len(free):
            raise ValueError(f"free: names repeated in {free}")
        p = self.typical
        for f in free:
            t = p.replace(**{k: jnp.zeros_like(v) for k, v in p.values.items()}).replace(**{f: jnp.ones_like(p[f])})
            _, d = jax.jvp(self.model.pk_constants, (p,), (t,))
            if _nonzero(d):
                raise ValueError(
                    f"free: {f!r} acts on the closed-form PK, which the sensitivity gradient does not "
                    "differentiate; PK parameters cannot be estimated from these summaries (no concentrations)"
                )
        return free

    def _anchor(self, study, pop):
        """Rescale the cohort's baseline covariates (and set baseline parameters) so its baseline
        means equal the reported day-0 means."""
        rows = self.table[(self.table["study"] == study) & (self.table["statistic"] == "mean") & (self.table["day"] == 0)]
        cov = pop.covariates.copy()
        overrides, used = {}, set()
        for i, rec in rows.iterrows():
            obs = ENDPOINTS[rec["endpoint"]].observable
            if obs in IG_BASELINE_COVARIATE:
                name = IG_BASELINE_COVARIATE[obs]
                cov[name] = cov[name] * float(rec["value"]) / float(cov[name].mean())
                used.add(int(i))
            elif obs in BASELINE_PARAMETER and BASELINE_PARAMETER[obs] not in self.free:
                overrides[BASELINE_PARAMETER[obs]] = float(rec["value"])
                used.add(int(i))
        return replace(pop, covariates=cov), overrides, used

    @property
    def has_rules(self) -> bool:
        return any(s.design.rules is not None for s in self.studies)

    def freeze_doses(self, x) -> float:
        """Run the dose rules at ``x`` and give their doses as fixed inputs from now on (the
        objective is then smooth in ``x``; the rules' decisions have no derivative anyway).
        Returns the fraction of patient-days whose dose changed since the last freeze."""
        changed, total = 0, 0
        for s in self.studies:
            if s.design.rules is None:
                continue
            doses = s.solve(x, tangents=False, rules=True)[2]
            if s.frozen_doses is not None:
                changed += int(jnp.sum(jnp.abs(doses - s.frozen_doses) > 1e-9))
            else:
                changed += doses.size
            total += doses.size
            s.frozen_doses = doses
        self._cache = {}
        return changed / total if total else 0.0

    def unfreeze_doses(self) -> None:
        for s in self.studies:
            s.frozen_doses = None
        self._cache = {}

    def projected(self, x, g) -> np.ndarray:
        """The gradient without the components that push against an active bound."""
        pg = np.array(g, dtype=float)
        pg[(x <= self.lower + 1e-12) & (pg > 0)] = 0.0
        pg[(x >= self.upper - 1e-12) & (pg < 0)] = 0.0
        return pg

    def at_bound(self, x) -> np.ndarray:
        return (x <= self.lower + 1e-9) | (x >= self.upper - 1e-9)

    def set_temperature(self, temperature: float) -> None:
        """Change the smoothness of the thresholded endpoints (clears the cached evaluation)."""
        self.temperature = float(temperature)
        for s in self.studies:
            s.temperature = self.temperature
        self._cache = {}

    # -- evaluation
    def x_of(self, params: ParameterSet | Mapping[str, float]) -> np.ndarray:
        return np.log(np.array([float(params[f]) for f in self.free]))

    def params_of(self, x) -> ParameterSet:
        return self.typical.replace(**{f: float(np.exp(v)) for f, v in zip(self.free, np.asarray(x))})

    def prior(self, x) -> tuple[float, np.ndarray]:
        x = np.asarray(x, dtype=float)
        value, grad = 0.0, np.zeros_like(x)
        for i, f in enumerate(self.free):
            if f in self.priors:
                pr = self.priors[f]
                z = (x[i] - math.log(pr.median)) / pr.sd
                value += 0.5 * z * z
                grad[i] += z / pr.sd
        return value, grad

    def _evaluate(self, x, studies=None):
        """(nll_data, grad_data, {study: (pred, J, out)}) at x; solves dispatched together."""
        x = np.asarray(x, dtype=float)
        studies = self.studies if studies is None else studies
        tasks = [(s, s.submit(x)) for s in studies]
        value, grad, per = 0.0, np.zeros(len(self.free)), {}
        for s, task in tasks:
            out = s.collect(task)
            pred, J = s.pred_and_jacobian(out)
            ok = bool(out[3])
            nll, dnll = s._nll(pred)
            nll = float(nll)
            if not ok or not math.isfinite(nll):
                return math.inf, np.full(len(self.free), np.nan), {}
            value += nll
            if len(s.active):
                grad[s.active_idx] += np.asarray(J) @ np.asarray(dnll)
            per[s.name] = (np.asarray(pred), np.asarray(J), out)
        self.evaluations += 1
        return value, grad, per

    def value_and_grad(self, x) -> tuple[float, np.ndarray]:
        """Objective (data NLL + prior penalty) and its exact gradient at ``x`` (log scale)."""
        key = np.asarray(x, dtype=float).tobytes()
        if key not in self._cache:
            v, g, per = self._evaluate(x)
            pv, pg = self.prior(x)
            self._cache = {key: (v + pv, g + pg, per)}
        v, g, _ = self._cache[key]
        return v, g.copy()

    def __call__(self, x) -> float:
        return self.value_and_grad(x)[0]

    def gradient_at(self, x, studies) -> np.ndarray:
        """Gradient when only ``studies`` are re-solved (the others' contribution is taken at the
        cached point); used by the Hessian's finite differences."""
        return self._evaluate(x, studies)[1]

    # -- reporting
    def table_at(self, x, *, temperature: float | None = None) -> pd.DataFrame:
        """Observed vs predicted for every row at ``x``: hard counts (``predicted``), the smooth
        value used in the fit (``predicted_smooth``), the likelihood and residuals."""
        x = np.asarray(x, dtype=float)
        key = x.tobytes()
        per = self._cache[key][2] if key in self._cache else None
        hard = np.full(len(self.rows), np.nan)
        smooth = np.full(len(self.rows), np.nan)
        T = self.temperature if temperature is None else temperature
        level_frames = []
        for s in self.studies:
            out = per[s.name][2] if per and s.name in per else s.solve(x)
            values = {k: np.asarray(v) for k, v in out[0].items()}
            doses = None if out[2] is None else np.asarray(out[2])
            o = (values, None, doses, out[3])
            hard[s.idx] = s.predict(o, 0.0)
            smooth[s.idx] = s.predict(o, T)
            if len(s.dose_levels) and s.design.rules is not None:
                level_frames.append(dose_level_predictions(s.dose_levels, s.name, s.design, values, s.sel_days, doses))
        nll_rows = np.asarray(self.likelihood.per_row(smooth))
        resid = self.likelihood.residuals(hard)
        df = self.table[["row", "study", "endpoint", "statistic", "day", "unit"]].copy()
        df["observed"] = self.table["value"].to_numpy(float)
        df["predicted"] = hard
        df["predicted_smooth"] = smooth
        df["n_used"] = [r.n_used for r in self.rows]
        df["n_assumed"] = [r.n_assumed for r in self.rows]
        df["k"] = [r.k for r in self.rows]
        df["N"] = [r.N for r in self.rows]
        df["se"] = [r.se for r in self.rows]
        lo, hi = _observed_interval(self.rows)
        df["observed_lo95"], df["observed_hi95"] = lo, hi
        df["likelihood"] = [r.likelihood if r.fitted else "" for r in self.rows]
        df["fitted"] = [r.fitted for r in self.rows]
        df["residual"] = np.where(df["fitted"], resid, np.nan)
        df["nll"] = np.where(df["fitted"], nll_rows, np.nan)
        df["status"] = [(("fitted" + (f"; {r.reason}" if r.reason else "")) if r.fitted else r.reason) for r in self.rows]
        self.dose_level_table = pd.concat(level_frames, ignore_index=True) if level_frames else pd.DataFrame()
        return df


def _observed_interval(rows) -> tuple[np.ndarray, np.ndarray]:
    """95% interval of each observed value: Wilson for proportions, +/- 1.96 SE for means."""
    from .summary import wilson_interval

    lo, hi = np.full(len(rows), np.nan), np.full(len(rows), np.nan)
    for i, r in enumerate(rows):
        if r.likelihood == "gaussian":
            lo[i], hi[i] = r.observed - 1.96 * r.se, r.observed + 1.96 * r.se
        elif math.isfinite(r.N) and math.isfinite(r.k):
            lo[i], hi[i] = wilson_interval(r.k, r.N)
    return lo, hi


# ====================================================================== optimisers
class _Doses:
    """Refresh of the frozen dose histories during an optimisation (studies with dose rules):
    every ``every`` iterations, and before convergence is declared; converged only when the
    rules give the frozen doses again (fraction of changed patient-days <= ``tol``)."""

    def __init__(self, obj: Objective, every: int, tol: float):
        self.obj, self.every, self.tol = obj, every, tol
        self.active = obj.has_rules
        self.changed = 0.0 if not self.active else math.inf
        self.count = 0

    def due(self, it: int) -> bool:
        return self.active and it % self.every == 0

    def refresh(self, x):
        self.changed = self.obj.freeze_doses(x)
        self.count += 1
        return self.obj.value_and_grad(x)

    @property
    def settled(self) -> bool:
        return self.changed <= self.tol


def _lbfgs(obj: Objective, x, steps, gtol, ftol, max_step, bar, trace, doses: _Doses, memory_size=10):
    """optax L-BFGS direction (``optax.lbfgs(linesearch=None)``) with a backtracking Armijo line
    search run in Python, so the compiled objective is reused (optax's zoom line search would
    embed, and compile, the ODE solve a second time).  Dose histories are refreshed every few
    iterations (:class:`_Doses`), keeping the curvature memory."""
    opt = optax.lbfgs(learning_rate=1.0, memory_size=memory_size, linesearch=None)
    update = jax.jit(opt.update)
    state = opt.init(jnp.asarray(x))
    f, g = obj.value_and_grad(x)
    if not math.isfinite(f):
        return x, f, g, 0, False, "the objective is not finite at the start (solver failure?)"
    stall, msg, it = 0, "", 0
    for it in range(1, steps + 1):
        pg = obj.projected(x, g)
        if np.max(np.abs(pg)) < gtol:
            if doses.settled:
                return x, f, g, it - 1, True, f"projected gradient max |g| < {gtol:g}"
            f, g = doses.refresh(x)
            pg = obj.projected(x, g)
            if doses.settled and np.max(np.abs(pg)) < gtol:
                return x, f, g, it - 1, True, f"projected gradient max |g| < {gtol:g}, dose histories at a fixed point"
        d, new_state = update(jnp.asarray(pg), state, jnp.asarray(x))
        d = np.asarray(d)
        if not (float(pg @ d) < 0 and np.all(np.isfinite(d))):  # not a descent direction: restart memory
            state = opt.init(jnp.asarray(x))
            d, new_state = update(jnp.asarray(pg), state, jnp.asarray(x))
            d = np.asarray(d)
        alpha = min(1.0, max_step / max(np.max(np.abs(d)), 1e-300))
        accepted = False
        for _ in range(12):
            xn = np.clip(x + alpha * d, obj.lower, obj.upper)
            slope = float(g @ (xn - x))
            fn, gn = obj.value_and_grad(xn)
            if math.isfinite(fn) and slope < 0 and fn <= f + 1e-4 * slope:
                accepted = True
                break
            alpha *= 0.25 if not math.isfinite(fn) else 0.5
        if not accepted:
            msg = "line search failed (no decrease along the L-BFGS direction)"
            break
        df_ = f - fn
        x, f, g, state = xn, fn, gn, new_state
        if doses.due(it):
            f, g = doses.refresh(x)
        gmax = float(np.max(np.abs(obj.projected(x, g))))
        trace.append((len(trace), obj.temperature, f, gmax, float(alpha)))
        bar.update(1)
        bar.set_postfix(objective=f"{f:.4f}", grad=f"{gmax:.2e}")
        stall = stall + 1 if 0 <= df_ < ftol * (1 + abs(f)) else 0
        if stall >= 3:
            msg = f"objective changed by < {ftol:g} (relative) in 3 iterations"
            break
    else:
        msg = f"reached steps={steps}"
    converged = bool(np.max(np.abs(obj.projected(x, g))) < gtol) and doses.settled
    return x, f, g, it, converged, (f"projected gradient max |g| < {gtol:g}" if converged and not msg else msg)


def _adam(obj: Objective, x, steps, gtol, learning_rate, bar, trace, doses: _Doses):
    opt = optax.adam(learning_rate)
    update = jax.jit(opt.update)
    state = opt.init(jnp.asarray(x))
    best = (math.inf, x, None)
    it = 0
    for it in range(1, steps + 1):
        if doses.due(it):
            doses.refresh(x)
            best = (math.inf, x, None)  # a new objective: earlier values are not comparable
        f, g = obj.value_and_grad(x)
        if not math.isfinite(f):
            return best[1], best[0], best[2], it, False, "objective not finite (solver failure) during Adam"
        if f < best[0]:
            best = (f, x, g)
        trace.append((len(trace), obj.temperature, f, float(np.max(np.abs(g))), learning_rate))
        bar.update(1)
        bar.set_postfix(objective=f"{f:.4f}", grad=f"{np.max(np.abs(g)):.2e}")
        if np.max(np.abs(obj.projected(x, g))) < gtol and doses.settled:
            return x, f, g, it, True, f"projected gradient max |g| < {gtol:g}"
        upd, state = update(jnp.asarray(g), state, jnp.asarray(x))
        x = np.clip(x + np.asarray(upd), obj.lower, obj.upper)
    f, g = obj.value_and_grad(x)
    if f < best[0]:
        best = (f, x, g)
    return best[1], best[0], best[2], it, bool(np.max(np.abs(obj.projected(best[1], best[2]))) < gtol), \
        f"reached steps={steps}"


# ====================================================================== Hessian, standard errors
def hessian_fd(obj: Objective, x, step: float = 1e-3) -> np.ndarray:
    """Hessian of the objective on the log scale: central differences of the exact gradient,
    symmetrised.  Only the studies a parameter acts on are re-solved."""
    x = np.asarray(x, dtype=float)
    k = len(x)
    H = np.zeros((k, k))
    for j, f in enumerate(obj.free):
        studies = [s for s in obj.studies if f in s.active]
        cols = []
        for sign in (1.0, -1.0):
            xs = x.copy()
            xs[j] += sign * step
            cols.append(obj.gradient_at(xs, studies) + obj.prior(xs)[1])
        # the other studies' gradients do not depend on x_j: they cancel in the difference
        H[:, j] = (cols[0] - cols[1]) / (2 * step)
    return 0.5 * (H + H.T)


def _covariance(H: np.ndarray, free, rel_tol=1e-8, load=0.3):
    """Covariance (log scale), flags and eigenvalues from the Hessian."""
    w, V = np.linalg.eigh(H)
    bad = w <= rel_tol * max(np.max(np.abs(w)), 1e-300)
    flagged = set()
    for j in np.flatnonzero(bad):
        flagged |= {free[i] for i in np.flatnonzero(np.abs(V[:, j]) > load)}
    inv_w = np.where(bad, 0.0, 1.0 / np.where(bad, 1.0, w))
    cov = (V * inv_w) @ V.T
    se = np.sqrt(np.clip(np.diag(cov), 0, None))
    se = np.where([f in flagged for f in free], np.inf, se)
    flagged |= {f for f, s in zip(free, se) if s > 1.0}
    return cov, se, w, flagged


CHECK_TEMPERATURES = (0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.001)


def temperature_check(obj: Objective, x, temperatures=CHECK_TEMPERATURES) -> pd.DataFrame:
    """Smooth predictions of the thresholded rows at several temperatures beside the hard count
    (T = 0), on the cohorts of the fit: how the relaxation converges to the clinical count."""
    tables = {T: obj.table_at(x, temperature=T) for T in temperatures}
    first = next(iter(tables.values()))
    rows = first["statistic"] != "mean"
    out = first.loc[rows, ["row", "study", "endpoint", "statistic", "observed", "predicted"]].rename(
        columns={"predicted": "hard"})
    for T, t in tables.items():
        out[f"T={T:g}"] = t.loc[rows, "predicted_smooth"].to_numpy()
    return out.reset_index(drop=True)


# ====================================================================== result
@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` found.

    ``params``: the full typical parameter set with the estimates; ``estimates``: one row per
    free parameter (estimate, start, SE and RSE by the delta method, 95% interval, log-scale SE,
    prior, identifiability flag); ``correlation``: correlation matrix of the estimates;
    ``hessian`` (log scale) and its ``eigenvalues``; ``observed_vs_predicted``: every observed
    row beside its prediction (hard count ``predicted`` and the smooth value of the fit);
    ``temperature_check``: thresholded rows at several temperatures beside the hard count; ``trace``:
    objective and gradient per iteration; convergence: ``converged``, ``grad_max`` (max |g| on
    the log scale), ``iterations``, ``message``; ``non_identifiable``: flagged parameters."""

    params: ParameterSet
    free: tuple[str, ...]
    estimates: pd.DataFrame
    correlation: pd.DataFrame
    hessian: np.ndarray
    eigenvalues: np.ndarray
    observed_vs_predicted: pd.DataFrame
    dose_level_table: pd.DataFrame
    temperature_check: pd.DataFrame
    trace: pd.DataFrame
    objective: float
    objective_prior: float
    grad_max: float
    iterations: int
    evaluations: int
    dose_changed: float
    converged: bool
    message: str
    non_identifiable: tuple[str, ...]
    designs: dict = field(repr=False)
    settings: dict = field(repr=False)
    timings: dict = field(repr=False)

    def estimates_table(self) -> pd.DataFrame:
        return self.estimates.copy()

    def summary(self) -> str:
        lines = [
            f"objective {self.objective:.4f} (-log-likelihood {self.objective - self.objective_prior:.4f} + prior "
            f"{self.objective_prior:.4f}); {'converged' if self.converged else 'NOT converged'}: {self.message}",
            f"iterations {self.iterations}, evaluations {self.evaluations}, max |gradient| {self.grad_max:.2e} "
            f"(log scale); dose histories changed at the last refresh: {100 * self.dose_changed:.2g}% of "
            f"patient-days; {self.timings.get('total_s', float('nan')):.1f} s",
        ]
        for r in self.estimates.itertuples():
            flag = ("  NOT IDENTIFIABLE" if not r.identifiable else "") + ("  ON A BOUND" if r.at_bound else "")
            lines.append(
                f"  {r.parameter:12s} {r.estimate:12.5g} {r.unit:10s} SE {r.se:10.3g} (RSE {r.rse_percent:6.1f}%) "
                f"95% [{r.ci95_low:.4g}, {r.ci95_high:.4g}]{flag}"
            )
        if self.non_identifiable:
            lines.append(f"non-identifiable (flagged): {', '.join(self.non_identifiable)}")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        """Estimates, correlations, the observed-vs-predicted table and the convergence record."""
        return _markdown(self)


def _fmt(x, digits=4):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "inf" if isinstance(x, float) and math.isinf(x) else "-"
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return f"{x:.{digits}g}"


def _markdown(res: FitResult) -> str:
    est = ["| parameter | estimate | unit | start | SE | RSE % | 95% interval | prior | identifiable |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in res.estimates.itertuples():
        est.append(
            f"| `{r.parameter}` | {_fmt(r.estimate)} | {r.unit} | {_fmt(r.start)} | {_fmt(r.se, 3)} | "
            f"{_fmt(r.rse_percent, 3)} | {_fmt(r.ci95_low)} - {_fmt(r.ci95_high)} | {r.prior or '-'} | "
            f"{'yes' if r.identifiable else '**no**'}{' (on a bound)' if r.at_bound else ''} |"
        )
    corr = res.correlation
    cl = ["| | " + " | ".join(f"`{c}`" for c in corr.columns) + " |", "|---" * (len(corr.columns) + 1) + "|"]
    for name, row in corr.iterrows():
        cl.append(f"| `{name}` | " + " | ".join(_fmt(v, 2) for v in row) + " |")
    ovp = ["| row | study | endpoint | statistic | day | observed (95% CI) | predicted | smooth | likelihood | "
           "residual | status |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res.observed_vs_predicted.itertuples():
        ci = f" ({_fmt(r.observed_lo95, 3)}-{_fmt(r.observed_hi95, 3)})" if math.isfinite(r.observed_lo95) else ""
        day = "-" if not math.isfinite(r.day) else f"{r.day:g}"
        study = "early" if r.study.startswith("early") else ("relapsed" if "relapsed" in r.study else r.study)
        lik = r.likelihood + (f" n={r.n_used:g}{' (assumed)' if r.n_assumed else ''}" if r.likelihood == "gaussian"
                              else (f" {r.k:g}/{r.N:g}" if r.likelihood else ""))
        ovp.append(
            f"| {r.row} | {study} | {r.endpoint} | {r.statistic} | {day} | {_fmt(r.observed)}{ci} | "
            f"{_fmt(r.predicted)} | {_fmt(r.predicted_smooth)} | {lik} | {_fmt(r.residual, 2)} | {r.status} |"
        )
    dl = []
    if len(res.dose_level_table):
        dl = ["| dose level | observed responders | predicted response | observed share | predicted share |",
              "|---|---|---|---|---|"]
        for r in res.dose_level_table.itertuples():
            dl.append(f"| {r.endpoint} | {r.k}/{r.N} = {_fmt(r.observed, 2)} | {_fmt(r.predicted, 2)} | "
                      f"{_fmt(r.observed_share, 2)} | {_fmt(r.predicted_share, 2)} |")
        dl += ["", f"Status: {res.dose_level_table['status'].iloc[0]}"]
    eig = ", ".join(_fmt(v, 3) for v in res.eigenvalues)
    parts = [
        "## Estimates", "", *est, "",
        f"Objective {res.objective:.3f} (negative log-likelihood {res.objective - res.objective_prior:.3f}, prior "
        f"penalty {res.objective_prior:.3f}); {'converged' if res.converged else '**not converged**'} "
        f"({res.message}); {res.iterations} iterations, {res.evaluations} objective evaluations, max |gradient| "
        f"{res.grad_max:.2e} on the log scale.",
        "", f"Hessian eigenvalues (log scale): {eig}.",
        "" if not res.non_identifiable else f"Flagged as not identifiable: {', '.join(res.non_identifiable)}.",
        "", "## Correlation of the estimates", "", *cl, "",
        "## Every observed row beside its prediction", "",
        "`predicted` is the hard count (clinical definition) at the estimates, `smooth` the relaxed value the fit "
        f"used (temperature {res.settings.get('temperature')}); `residual` is (observed - predicted) / SD.", "",
        *ovp, "",
    ]
    if dl:
        parts += ["## Responses by dose level", "", *dl, ""]
    tc = res.temperature_check
    if len(tc):
        temps = [c for c in tc.columns if c.startswith("T=")]
        parts += ["## Smooth relaxation vs hard count", "",
                  "Predicted value of each thresholded row at the estimates: the hard (clinical) count and the "
                  "smooth relaxation at decreasing temperatures, on the same virtual cohorts.", "",
                  "| row | endpoint | observed | hard | " + " | ".join(temps) + " |",
                  "|---" * (4 + len(temps)) + "|"]
        for r in tc.itertuples(index=False):
            d = r._asdict()
            parts.append(f"| {d['row']} | {d['endpoint']} | {_fmt(d['observed'], 3)} | {_fmt(d['hard'], 3)} | "
                         + " | ".join(_fmt(v, 3) for v in list(d.values())[6:]) + " |")
        parts.append("")
    return "\n".join(parts)


# ====================================================================== entry points
def fit(
    observations,
    *,
    params: ParameterSet | None = None,
    free: Sequence[str] = DEFAULT_FREE,
    n_patients: int | Mapping[str, int] = 64,
    seed: int = 0,
    optimizer: str = "lbfgs",
    steps: int = 100,
    temperature: float | Sequence[float] = DEFAULT_TEMPERATURE,
    progress: bool = True,
    gtol: float = 1e-2,
    ftol: float = 1e-9,
    learning_rate: float = 0.05,
    max_step: float = 1.0,
    adam_steps: int | None = None,
    designs: Mapping[str, StudyDesign] | None = None,
    model: Model | None = None,
    settings: SolverSettings = FIT_SETTINGS,
    cv: Mapping[str, float] | None = None,
    priors: Mapping[str, Prior] | None = None,
    anchor_baselines: bool = True,
    standard_errors: bool = True,
    hessian_step: float = 1e-3,
    dose_refresh: int = 5,
    dose_tol: float = 0.002,
    bounds: Mapping[str, tuple[float, float]] | None = None,
) -> FitResult:
    """Fit typical parameters to summary data (see the module docstring for the method).

    Main arguments:
        observations: :class:`lenapk.Observations` (from :func:`lenapk.load_observations`) or a
            DataFrame of observation rows in the same format.
        params: starting typical parameters (default: the model's defaults); the non-free ones
            stay fixed at these values.
        free: the parameters to estimate (log scale); default :data:`DEFAULT_FREE`.
        n_patients, seed: the virtual cohort of each study (an int, or a dict per study); study
            ``i`` (in table order) uses ``seed + i``.  Fixed across iterations.
        optimizer: ``"lbfgs"`` (optax L-BFGS, backtracking line search), ``"adam"`` or ``"both"``
            (``adam_steps`` Adam steps, default ``steps // 4``, then L-BFGS).
        steps: maximum iterations; stops earlier when max |gradient| < ``gtol`` (converged) or the
            objective stalls (relative change < ``ftol`` three times).
        temperature: smoothness of thresholded endpoints during the fit (:mod:`lenapk.endpoints`),
            or a list of decreasing temperatures (annealing: ``steps`` iterations at each, each
            starting from the previous optimum; the result is at the last temperature).
        progress: show a tqdm progress bar.
    Other arguments:
        learning_rate (Adam), max_step (largest change of a log-parameter per L-BFGS iteration),
        designs (per-study :class:`lenapk.observe.StudyDesign` overrides), model, settings
        (solver tolerances of the fit), cv (between-patient CVs of means, by endpoint), priors
        (default :data:`DEFAULT_PRIORS`; ``{}`` for none), bounds (natural-scale ranges, default
        :data:`BOUNDS`; the optimisers project onto them), anchor_baselines (match each cohort's
        baseline Ig and CD3 means to the reported day-0 means), standard_errors (compute the
        Hessian), hessian_step (log-scale finite-difference step), dose_refresh and dose_tol (see below).

    Dose-modification rules make the simulated doses a discontinuous function of the
    parameters (a hold starts or not).  Their decisions have no derivative, so the fit treats the
    dose histories as data, as NONMEM treats recorded doses: the rules are run at the current
    estimate and their doses are frozen, so the objective is smooth; every ``dose_refresh``
    iterations (and before convergence is declared) the rules are run again at the current
    estimate.  Convergence needs the rules to give the frozen doses back (at most a fraction
    ``dose_tol`` of patient-days changed): a self-consistent fixed point.  The result says if it
    is not one; the Hessian is taken with the final dose histories fixed.

    Returns a :class:`FitResult`.
    """
    from tqdm.auto import tqdm

    if optimizer not in ("lbfgs", "adam", "both"):
        raise ValueError(f"optimizer must be 'lbfgs', 'adam' or 'both', got {optimizer!r}")
    if not tuple(free):
        raise ValueError("free must name at least one parameter")
    if not (isinstance(steps, (int, np.integer)) and steps >= 0):
        raise ValueError(f"steps must be a whole number >= 0, got {steps!r}")
    temps = [float(t) for t in (temperature if isinstance(temperature, (list, tuple)) else [temperature])]
    if not temps or any(not (math.isfinite(t) and t > 0) for t in temps):
        raise ValueError(f"temperature must be > 0 (or a list of such values, annealed in order), got {temperature!r}")
    t0 = time.perf_counter()
    obj = Objective(observations, free=free, params=params, n_patients=n_patients, seed=seed,
                    temperature=temps[0], designs=designs, model=model, settings=settings, cv=cv,
                    priors=priors, anchor_baselines=anchor_baselines, bounds=bounds)
    x = obj.x0.copy()
    trace: list = []
    iterations, msg = 0, "start"
    doses = _Doses(obj, dose_refresh, dose_tol)
    if doses.active:
        obj.freeze_doses(x)
    f0, g0 = obj.value_and_grad(x)
    t_first = time.perf_counter() - t0
    trace.append((0, temps[0], f0, float(np.max(np.abs(g0))), 0.0))
    with tqdm(total=steps * len(temps), disable=not progress, desc="lenapk.fit", unit="it") as bar:
        for T in temps:  # annealing: each temperature starts from the previous optimum
            obj.set_temperature(T)
            converged, done = False, 0
            if optimizer in ("adam", "both") and steps > 0:
                n_adam = steps if optimizer == "adam" else (steps // 4 if adam_steps is None else adam_steps)
                x, _, _, done, converged, msg = _adam(obj, x, n_adam, gtol, learning_rate, bar, trace, doses)
            if optimizer in ("lbfgs", "both") and steps - done > 0 and not converged:
                x, _, _, it, converged, msg = _lbfgs(obj, x, steps - done, gtol, ftol, max_step, bar, trace, doses)
                done += it
            iterations += done
    changed = obj.freeze_doses(x) if doses.active else 0.0
    if changed > dose_tol:
        msg += f"; dose histories not at a fixed point ({100 * changed:.2g}% of patient-days changed)"
    f, g = obj.value_and_grad(x)
    converged = bool(np.max(np.abs(obj.projected(x, g))) < gtol) and changed <= dose_tol
    bound = obj.at_bound(x)
    if bound.any():
        msg += "; on a bound: " + ", ".join(f for f, b in zip(obj.free, bound) if b)
    t_opt = time.perf_counter() - t0
    theta = np.exp(x)
    k = len(obj.free)
    if standard_errors:
        H = hessian_fd(obj, x, hessian_step)
        cov, se_log, eig, flagged = _covariance(H, obj.free)
    else:
        H, cov, se_log, eig, flagged = np.full((k, k), np.nan), np.full((k, k), np.nan), np.full(k, np.nan), \
            np.full(k, np.nan), set()
    t_hess = time.perf_counter() - t0 - t_opt
    sd = np.sqrt(np.clip(np.diag(cov), 1e-300, None))
    corr = cov / np.outer(sd, sd)
    specs = {s.name: s for s in obj.model.parameter_specs}
    est = pd.DataFrame({
        "parameter": obj.free,
        "estimate": theta,
        "unit": [specs[f].unit for f in obj.free],
        "start": np.exp(obj.x0),
        "se": theta * se_log,
        "rse_percent": 100 * se_log,
        "ci95_low": theta * np.exp(-1.959963984540054 * se_log),
        "ci95_high": theta * np.exp(1.959963984540054 * se_log),
        "se_log": se_log,
        "gradient": g,
        "prior": [(f"LN({obj.priors[f].median:g}, sd {obj.priors[f].sd:.3g})" if f in obj.priors else "")
                  for f in obj.free],
        "identifiable": [f not in flagged for f in obj.free],
        "at_bound": bound,
    })
    ovp = obj.table_at(x)
    prior_value = obj.prior(x)[0]
    trace_df = pd.DataFrame(trace, columns=["iteration", "temperature", "objective", "grad_max", "step"])
    check = temperature_check(obj, x)
    result = FitResult(
        params=obj.params_of(x),
        free=obj.free,
        estimates=est,
        correlation=pd.DataFrame(corr, index=list(obj.free), columns=list(obj.free)),
        hessian=H,
        eigenvalues=eig,
        observed_vs_predicted=ovp,
        dose_level_table=obj.dose_level_table,
        temperature_check=check,
        trace=trace_df,
        objective=float(f),
        objective_prior=float(prior_value),
        grad_max=float(np.max(np.abs(obj.projected(x, g)))),
        iterations=iterations,
        evaluations=obj.evaluations,
        dose_changed=float(changed),
        converged=converged,
        message=msg,
        non_identifiable=tuple(f for f in obj.free if f in flagged),
        designs={s.name: s.design.note for s in obj.studies},
        settings={"n_patients": n_patients, "seed": seed, "temperature": temps[-1], "temperatures": temps,
                  "optimizer": optimizer,
                  "rtol": settings.rtol, "atol": settings.atol, "gtol": gtol, "hessian_step": hessian_step,
                  "active": {s.name: s.active for s in obj.studies}},
        timings={"first_evaluation_s": t_first, "optimisation_s": t_opt, "hessian_s": t_hess,
                 "total_s": time.perf_counter() - t0},
    )
    if progress:
        print(f"lenapk.fit: objective {result.objective:.4f}, {'converged' if converged else 'not converged'} "
              f"({msg}), {iterations} iterations, {result.timings['total_s']:.1f} s")
    return result


def predict_observations(observations, params: ParameterSet | None = None, *, n_patients=64, seed: int = 0,
                         temperature: float = 0.0, **kwargs) -> pd.DataFrame:
    """Every observation row beside the model's prediction at ``params`` (default: the model's
    typical values), on the same virtual cohorts as :func:`fit` (``n_patients``, ``seed``).
    ``predicted`` is the hard count; ``predicted_smooth`` uses ``temperature``.  Other keyword
    arguments as for :class:`Objective` (designs, model, settings, cv, anchor_baselines)."""
    kwargs.setdefault("settings", SolverSettings())
    obj = Objective(observations, free=(), params=params, n_patients=n_patients,
                    seed=seed, temperature=temperature, **kwargs)
    return obj.table_at(obj.x0, temperature=temperature)
