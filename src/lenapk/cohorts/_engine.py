"""Solving a cohort: blocks of patients as one ODE each, rounds of blocks over JAX devices.

- A **block** of ``block_size`` patients is ONE ODE with a shared adaptive step
  (:func:`lenapk.solve` on arrays of shape ``(block_size,)``), the fast path on CPU; patients
  whose dose events fall at different times are solved one by one with ``vmap`` instead.
  Block ``j`` always holds the global patients ``j*B .. (j+1)*B - 1``; the last block of a
  cohort is filled with the next patients of the same seed (or copies of the last table row),
  solved and dropped.
- A **round** is ``D`` blocks, one per local JAX device, the patient axis sharded over a 1-D
  ``jax.sharding.Mesh`` with ``jax.shard_map`` when ``D > 1``.  The same executable serves every
  chunk, so nothing recompiles with ``n`` or ``chunk_size``.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .._core import ParameterSet, solve
from .._core._plan import broadcast_plan
from .._core._solve import _vmapped_solve
from ..population import draw_etas, individual_parameters, virtual_population
from ._spec import CohortSpec


def block_population(spec: CohortSpec, block: int) -> tuple[pd.DataFrame, ParameterSet]:
    """Covariates and parameters of the global rows ``block*B .. block*B + B - 1`` (rows >= n
    are padding), always drawn one whole block at a time."""
    b = spec.block_size
    start = block * b
    if spec.patients is None:
        pop = virtual_population(
            spec.model, b, spec.seed, setting=spec.setting, start=start, variability=spec.variability
        )
        cov, names, etas = pop.covariates, pop.eta_names, pop.etas
    else:
        rows = np.minimum(np.arange(start, start + b), spec.n - 1)
        cov = spec.patients.iloc[rows].reset_index(drop=True)
        names, etas = draw_etas(spec.model, b, spec.seed, start=start)
        if not spec.variability:
            etas = jnp.zeros_like(etas)
        etas = etas[jnp.asarray(rows - start)]  # padding rows copy the last patient's eta too
    return cov, individual_parameters(spec.model, spec.typical, cov, names, etas)


def _solve_block(model, params, plan, rules, settings, observables: tuple, vmapped: bool):
    """One block (parameters of shape (B,)); only what the endpoints need leaves the device."""
    b = next(iter(params.values.values())).shape
    if vmapped:
        traj = _vmapped_solve(model, params, plan, rules, settings)
    else:
        if plan.amounts.ndim == 2:  # one plan for every patient of the block
            plan = broadcast_plan(plan, b)
        traj = solve(model, params, plan, rules, settings)
    return {
        "obs": {k: traj.day_obs[k] for k in observables},
        "doses": traj.doses,
        "records": traj.rule_records,
        "ok": traj.ok,
        "segment_day": jnp.broadcast_to(traj.segment_day, traj.ok.shape),
    }


_ROUND_FNS: dict[tuple, Any] = {}


def round_fn(devices: tuple, observables: tuple, per_patient_plan: bool, vmapped: bool):
    """``(run, mesh)``: ``run(model, params, plan, rules, settings)`` with parameter leaves of shape
    ``(len(devices), B)`` (and plan leaves too when ``per_patient_plan``): one block per device,
    sharded over a 1-D mesh when there are several.  Cached: every chunk reuses one executable."""
    key = (tuple(d.id for d in devices), observables, per_patient_plan, vmapped)
    if key in _ROUND_FNS:
        return _ROUND_FNS[key]
    first = lambda tree: jax.tree.map(lambda a: a[0], tree)  # noqa: E731
    block = lambda m, p, pl, r, s: _solve_block(m, p, pl, r, s, observables, vmapped)  # noqa: E731
    if len(devices) == 1:

        @eqx.filter_jit
        def run(model, params, plan, rules, settings):
            out = block(model, first(params), first(plan) if per_patient_plan else plan, rules, settings)
            return jax.tree.map(lambda a: a[None], out)

        _ROUND_FNS[key] = (run, None)
        return _ROUND_FNS[key]
    mesh = jax.sharding.Mesh(np.array(devices), ("patients",))
    P = jax.sharding.PartitionSpec

    @eqx.filter_jit
    def run(model, params, plan, rules, settings):
        dyn_rules, static_rules = eqx.partition(rules, eqx.is_array)
        dyn_model, static_model = eqx.partition(model, eqx.is_array)
        dyn_plan, static_plan = eqx.partition(plan, eqx.is_array)

        def local(params, dyn_plan, dyn_rules, dyn_model):
            pl = eqx.combine(dyn_plan, static_plan)
            out = block(
                eqx.combine(dyn_model, static_model),
                first(params),
                first(pl) if per_patient_plan else pl,
                eqx.combine(dyn_rules, static_rules),
                settings,
            )
            return jax.tree.map(lambda a: a[None], out)

        return jax.shard_map(
            local,
            mesh=mesh,
            in_specs=(P("patients"), P("patients") if per_patient_plan else P(), P(), P()),
            out_specs=P("patients"),
            check_vma=False,
        )(params, dyn_plan, dyn_rules, dyn_model)

    _ROUND_FNS[key] = (run, mesh)
    return _ROUND_FNS[key]


def _stack(trees: list):
    return jax.tree.map(lambda *a: np.stack([np.asarray(x) for x in a]), *trees)


def solve_chunk(spec: CohortSpec, index: int, observables: tuple) -> tuple[pd.DataFrame, dict, list]:
    """Solve chunk ``index``: the covariates of the solved blocks, their arrays (numpy, rows of
    whole blocks) and the block indices solved."""
    start, stop = spec.chunk_rows(index)
    b = spec.block_size
    blocks = list(range(start // b, -(-stop // b)))
    devices = tuple(jax.local_devices())
    d = len(devices)
    per_patient = spec.regimen is None
    run, mesh = round_fn(devices, observables, per_patient, per_patient and not spec.shared_segments)
    shared_plan = None if per_patient else spec.shared_plan()
    n_rounds = -(-len(blocks) // d)
    padded = blocks + [blocks[-1]] * (n_rounds * d - len(blocks))  # idle devices repeat the last block
    population, pending = {}, []
    for r in range(n_rounds):
        group = padded[r * d : (r + 1) * d]
        for j in group:
            if j not in population:
                population[j] = block_population(spec, j)
        params = _stack([population[j][1] for j in group])
        plan = _stack([spec.block_plan(np.arange(j * b, (j + 1) * b)) for j in group]) if per_patient else shared_plan
        if d > 1:
            sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("patients"))
            params = jax.device_put(params, sharding)
            plan = jax.device_put(plan, sharding) if per_patient else plan
        pending.append((group, run(spec.model, params, plan, spec.rules, spec.settings)))  # async dispatch
    arrays: dict[str, list] = {}
    seen = set()
    for group, out in pending:
        out = jax.device_get(out)
        for slot, j in enumerate(group):
            if j in seen:
                continue
            seen.add(j)
            flat = {f"obs.{k}": v[slot] for k, v in out["obs"].items()}
            flat.update({f"records.{k}": v[slot] for k, v in out["records"].items()})
            flat.update(doses=out["doses"][slot], ok=out["ok"][slot], segment_day=out["segment_day"][slot])
            for k, v in flat.items():
                arrays.setdefault(k, []).append(v)
    arrays = {k: np.concatenate(v, axis=0) for k, v in arrays.items()}
    cov = pd.concat([population[j][0] for j in blocks], ignore_index=True)
    return cov, arrays, blocks
