"""Naming the patient whose solve failed, never a bystander of the shared step."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._core import SolverError, plan_for, solve
from .._core._plan import stack_plans
from ._engine import block_population
from ._spec import CohortSpec


def global_ids(spec: CohortSpec, rows: np.ndarray) -> list:
    """Patient ids (Python ints or strings) of global rows."""
    ids = rows if spec.patients is None else spec.patients["patient"].to_numpy()[np.minimum(rows, spec.n - 1)]
    return [x.item() if isinstance(x, np.generic) else x for x in ids]


def check_chunk(spec: CohortSpec, arrays: dict, first_block: int, lo: int, hi: int) -> None:
    """Raise :class:`SolverError` naming the (global) patient whose solve failed among rows
    ``lo..hi`` of the chunk's blocks."""
    ok = arrays["ok"]
    finite = np.ones(ok.shape[0], dtype=bool)
    for k, v in arrays.items():
        if k.startswith("obs."):
            finite &= np.all(np.isfinite(v), axis=-1)
    bad = ~ok.all(axis=1) | ~finite
    if not bad[lo:hi].any():
        return
    b = spec.block_size
    i = lo + int(np.flatnonzero(bad[lo:hi])[0])
    blk = i // b
    sel = slice(blk * b, (blk + 1) * b)
    rows = (first_block + blk) * b + np.arange(b)
    failed = ~ok[sel]
    if not failed.any():  # non-finite outputs with a successful solve: that patient
        raise SolverError(
            f"ODE solve for patient {global_ids(spec, rows)[i - blk * b]!r} (row {rows[i - blk * b]}) produced "
            "non-finite values; check that patient's covariates and the parameters."
        )
    day = int(arrays["segment_day"][sel][failed].min())
    culprits = _diagnose_block(spec, first_block + blk, rows, day)
    real = [r for r in culprits if r < spec.n]
    ids = global_ids(spec, rows)
    span = f"{ids[0]!r}..{global_ids(spec, np.array([min(rows[-1], spec.n - 1)]))[0]!r}"
    if real:
        names = ", ".join(repr(x) for x in global_ids(spec, np.array(real))[:5])
        raise SolverError(
            f"ODE solve failed for patient {names} on day {day} (it also fails when solved alone); {len(real)} "
            f"patient(s) of the block {span} fail.  Check that patient's covariates and the parameters, or raise "
            "settings.max_steps / loosen rtol."
        )
    if culprits:
        raise SolverError(
            f"ODE solve failed on day {day} for the block of patients {span}: padding patient(s) {culprits[:3]} "
            f"(drawn only to fill the last block of {spec.block_size}) fail; use another block_size."
        )
    raise SolverError(
        f"ODE solve failed on day {day} for the block of patients {span} solved together with a shared step (each "
        "solves alone); raise settings.max_steps or lower block_size."
    )


def _solo_ok(model, p, plan, rules, settings):
    traj = solve(model, p, plan, rules, settings)
    finite = jnp.stack([jnp.all(jnp.isfinite(v)) for v in traj.day_obs.values()]).all()
    return traj.ok.all() & finite


_DIAGNOSE_SHARED = eqx.filter_jit(eqx.filter_vmap(_solo_ok, in_axes=(None, 0, None, None, None)))
_DIAGNOSE_EACH = eqx.filter_jit(eqx.filter_vmap(_solo_ok, in_axes=(None, 0, 0, None, None)))


def _diagnose_block(spec: CohortSpec, block: int, rows, day: int) -> list[int]:
    """Solve each patient of a failed block alone up to the failing day; the global rows that
    fail (compiles once per failing day: an error path)."""
    _, p = block_population(spec, block)
    if spec.regimen is not None:
        plan = plan_for(spec.model, spec.regimen, day + 1)
        ok = _DIAGNOSE_SHARED(spec.model, p, plan, spec.rules, spec.settings)
    else:
        regs = [spec.regimens[min(int(r), spec.n - 1)].with_days(day + 1) for r in rows]
        plan, _ = stack_plans([plan_for(spec.model, r) for r in regs], n_segments=0)
        ok = _DIAGNOSE_EACH(spec.model, p, plan, spec.rules, spec.settings)
    return [int(r) for r, good in zip(rows, np.asarray(jax.device_get(ok))) if not good]
