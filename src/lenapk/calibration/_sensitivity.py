"""Forward sensitivities: the ODE state carries its derivatives along the free directions.

The model is wrapped so that the state holds, next to ``y``, ``S_j = dy/dx_j`` for the free
parameters that can influence the study's fitted observables (found once by a structural
analysis of the model's Jacobians, :func:`influence`), with ``dS_j/dt = (df/dy) S_j + df/dx_j``
evaluated by ``jax.linearize`` of the model's right-hand side.  The same adaptive solver
integrates both: with the max error norm of the fit (``FIT_SETTINGS``) every sensitivity meets
the tolerance as a state does; the weighted RMS norm would pool them with the states into one
mean (CVODES instead takes the largest of separate norms).  This gives the
Jacobian of every predicted summary, hence the gradient; it is faster and far quicker to
compile than reverse mode through the solver.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._core import AbstractModel, solve


class Sensitivity(eqx.Module):
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

    base: AbstractModel
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

    @property
    def pk(self):
        return self.base.pk

    @property
    def time_unit_h(self) -> float:
        return self.base.time_unit_h

    @property
    def state_names(self) -> tuple[str, ...]:
        return self.base.state_names

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
            s_full = (
                jnp.zeros_like(y0)
                if s_blocks is None
                else jnp.zeros_like(y0).at[np.asarray(block, int)].set(s_blocks[j])
            )
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
            blocks.append(y[pos : pos + len(b)])
            pos += len(b)
        return y[:ns], blocks

    def initial_state(self, c):
        y0, lin = jax.linearize(
            lambda aa: self.base.initial_state({**c["c"], **aa}), {key: c["c"][key] for key in self._all_keys}
        )
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
def run_study(model, params, plan, rules, settings, sel_days, names, with_doses):
    """Solve a cohort; return the observables ``names`` at ``sel_days`` (n, D), their tangents
    (k, n, D) when ``model`` carries sensitivities, the doses given and a success flag."""
    traj = solve(model, params, plan, rules, settings)
    sel = np.asarray(sel_days)
    values = {name: traj.day_obs[name][..., sel] for name in names}
    tangents = {name: traj.day_obs["d_" + name][..., sel] for name in names} if isinstance(model, Sensitivity) else None
    ok = jnp.all(traj.ok)
    for v in values.values():
        ok = ok & jnp.all(jnp.isfinite(v))
    return values, tangents, (traj.doses if with_doses else None), ok


def nonzero(tree) -> bool:
    return any(bool(np.any(np.asarray(leaf) != 0)) for leaf in jax.tree_util.tree_leaves(tree))


@eqx.filter_jit
def _probe(model, p, p_tan, y_scale):
    """Sparsity of the model at a generic point (states ``y0 * y_scale + (y_scale - 1)``, nonzero
    also where ``y0`` is 0; 10 ng/mL; every patient of the cohort): which derived constants,
    states and observables each free direction moves."""
    c = model.derive(p)
    c_dot = jax.vmap(lambda t: jax.jvp(model.derive, (p,), (t,))[1])(p_tan)
    y = model.initial_state(c) * y_scale + (y_scale - 1.0)
    conc, t = (10.0 if model.pk.closed_form else None), 0.3  # OdeDosing models get no concentration
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


def influence(model, p, p_tan, free, seed: int = 0) -> dict:
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
            o for o, v in obs_y.items() if np.any(v[reach])
        }
    for o, v in obs_y.items():
        out["ancestors"][o] = _closure(v.astype(bool), adj.T)
    return out
