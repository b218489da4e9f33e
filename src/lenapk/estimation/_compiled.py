"""The compiled objective of a (model, method, free parameters): compiled once, reused.

Two functions of the free parameters on the unconstrained scale (``u_free``; ``u_all`` holds
the fixed ones) and the data:

- ``value(u_free, u_all, subjects)``: the population objective;
- ``jacobian(u_free, u_all, subjects)``: per-subject objectives, their gradients (forward mode,
  one column per free parameter: the outer gradient is their sum, the covariance step's S
  matrix their cross-product), the EBEs and whether each EBE search converged;
- ``step(u_free, state, value, grad, u_all, subjects)``: one L-BFGS update (:data:`OPTIMISER`).

Compilation dominates a fit's time, so functions are kept per (model, method, free set) and
reused by the optimiser, the covariance step and later fits of the same model.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax

from ._model import PopulationModel
from ._objective import subject_objectives
from ._parameters import ParameterLayout

# L-BFGS with a backtracking (Armijo) line search that needs values only, no extra gradients.
OPTIMISER = optax.lbfgs(linesearch=optax.scale_by_backtracking_linesearch(max_backtracking_steps=40))
_CACHE: dict = {}
_CACHE_SIZE = 8


@dataclass(frozen=True)
class CompiledObjective:
    model: PopulationModel
    method: str
    free: tuple[int, ...]
    value: object
    jacobian: object
    step: object


def _build(model: PopulationModel, method: str, free: tuple[int, ...]) -> CompiledObjective:
    layout = ParameterLayout(model)
    index = jnp.array(free, dtype=int)

    def per_subject(u_free, u_all, subjects):
        params = layout.from_unconstrained(u_all.at[index].set(u_free))
        return subject_objectives(model, method, params, subjects)

    def value(u_free, u_all, subjects):
        return jnp.sum(per_subject(u_free, u_all, subjects)[0])

    def jacobian(u_free, u_all, subjects):
        def with_aux(u):
            ofv, eta, ok = per_subject(u, u_all, subjects)
            return ofv, (ofv, eta, ok)

        jac, (ofv, eta, ok) = jax.jacfwd(with_aux, has_aux=True)(u_free)
        return ofv, jac, eta, ok

    def step(u_free, state, ofv, grad, u_all, subjects):
        value_fn = lambda u: value(u, u_all, subjects)  # noqa: E731
        updates, state = OPTIMISER.update(grad, state, u_free, value=ofv, grad=grad, value_fn=value_fn)
        return optax.apply_updates(u_free, updates), state

    return CompiledObjective(model, method, free, jax.jit(value), jax.jit(jacobian), jax.jit(step))


def compiled_objective(model: PopulationModel, method: str) -> CompiledObjective:
    """The compiled functions of ``model`` fitted by ``method`` (cached by model identity)."""
    free = tuple(int(i) for i in jnp.flatnonzero(jnp.asarray(ParameterLayout(model).free)))
    key = (id(model), method, free)
    hit = _CACHE.get(key)
    if hit is None or hit.model is not model:
        hit = _build(model, method, free)
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = hit
    return hit
