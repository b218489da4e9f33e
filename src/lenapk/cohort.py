"""Virtual cohorts at scale: ``cohort()`` simulates n patients and returns one row per patient.

Numerics (float64 throughout: lenapk turns on ``jax_enable_x64`` at import and ``cohort``
refuses to run without it; covariates, parameters, doses and outputs are all float64):

- Patients are solved in **blocks** of ``block_size`` patients: each block is ONE ODE with a
  shared adaptive step (:func:`lenapk.solve.solve_days` on arrays of shape ``(block_size,)``),
  the fast path on CPU.  Block ``j`` always holds the global patients
  ``j*block_size .. (j+1)*block_size - 1``; the last block of a cohort is filled with the next
  patients of the same seed, which are solved and dropped.  A patient's result therefore depends
  only on ``(seed, block_size)`` and the other arguments, never on ``n``, ``chunk_size``, the
  number of devices or the scheduler: chunk-size, first-k, device-count and Dask invariance are
  *exact* (bit for bit), by design.  (With a table of patients the last block is filled with
  copies of the last row: the first k rows of a table then reproduce the k-row table exactly
  when k is a multiple of ``block_size``, and to the solver tolerance otherwise.)
  ``block_size`` is part of the numerical definition: another block size gives results that
  agree to the solver tolerance (about ``rtol``), not bit for bit.
- The compiled unit is one **round**: ``D`` blocks, one per local JAX device, the patient
  (block) axis sharded over a 1-D ``jax.sharding.Mesh`` with ``jax.shard_map`` when ``D > 1``.
  The same executable serves every chunk, so nothing recompiles with ``n`` or ``chunk_size``.
- A **chunk** (``chunk_size`` patients, rounded up to a multiple of ``block_size``) is the unit of
  I/O, progress and scheduling: one Parquet file per chunk, one Dask task per chunk.  Memory is
  bounded by the chunk (daily values of a chunk: ``chunk_size x days x 10`` float64).

Performance (2-core CPU, quiet machine, ``python benchmarks/cohort_scale.py``; 24 cycles of
10 mg/day, rtol 1e-6, endpoints included; benchmarks/RESULTS.md): 10 000 patients in 33 s of
wall time (3 runs, 33.0-33.5 s) with one JAX CPU device per core and the CPU code-generation
flags of :func:`set_host_device_count` (45 s without the flags), about 3.3 ms per patient and
6.2 ms of CPU; 100 000 patients in 330 s.  The cost is the shared-step solve itself;
population draws, endpoints and Parquet writes take under 5%.  Within the solve, diffrax's
per-step work takes about 60% and the right-hand side 40%; its float64 logarithms were the
costliest operations on XLA's default emitters (which do not vectorise ``log``), hence
:func:`lenapk.fastmath.log`.

Results stream to a Parquet dataset directory ``out`` (``chunk-000000.parquet``, ... written to
a temporary file and renamed, plus ``_cohort.json``, the manifest of the arguments).  A run
restarted with the same arguments computes only the missing chunks; a directory made with other
arguments is refused with an error naming the differing arguments.

Endpoints (one row per patient; labs read at ``visits``, by default every day 1..n_days, i.e.
the model's daily pre-dose values; ``visits="protocol"`` reads them at
:func:`lenapk.endpoints.default_visits`, like a trial's lab schedule):

- ``patient`` (global id) and the model's covariates;
- ``anc_grade`` / ``plt_grade``: worst on-treatment CTCAE grade (visits after day 0); per cycle
  ``anc_grade_c1..``, ``plt_grade_c1..`` (cycle ``c`` holds the visits ``(c-1)L <= day < cL``,
  ``L`` = the regimen's cycle length; the end-of-treatment value, day ``n_days``, counts in the
  last cycle);
- ``anc_nadir`` (x10^9/L) and ``anc_nadir_day`` (first day of the minimum); ``plt_nadir``,
  ``plt_nadir_day``;
- ``planned_mg``, ``delivered_mg``, ``dose_intensity`` = delivered / planned, ``last_dose_mg``
  (the last dose given, mg; the dose level a patient ended on); ``days_held``:
  days with the rule record ``held`` set (without a ``held`` record, planned-dose days on
  which no dose was given); 0 without rules.  With ``DoseModificationRules``-style records:
  ``n_reductions`` (max of ``reductions``), ``stopped`` / ``stop_day`` (``stopped``),
  ``final_dose_cap_mg`` (``dose_cap_mg`` on the last day before any stop);
- ``best_response`` (:func:`lenapk.endpoints.best_response`, categories CR/PR/SD/PD),
  ``time_to_response`` (first visit with PR or better, days) and ``time_to_best_response``
  (first visit at the best response; NaN for SD/PD);
- ``alc_change_c12`` / ``_c24``: ALC change from baseline (%) at the end of cycle 12 / 24
  (day 12L / 24L); ``igg_c12``, ``igg_c24``, ``igm_c12``, ``igm_c24``, ``iga_c12``, ``iga_c24``
  (mg/dL) at the same days; NaN when the regimen is shorter.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import endpoints as ep
from .cll import LenalidomideCLL
from .model import Model
from .parameters import ParameterSet
from .population import (
    _covariate_names,
    draw_etas,
    individual_parameters,
    validate_patients,
    virtual_population,
)
from .regimen import Regimen
from .rules import DoseRules, NoRules
from .solve import SolverError, SolverSettings, solve_days

DEFAULT_MODEL = LenalidomideCLL()
#: Patients per shared-step ODE (measured on a 2-core CPU, 24 cycles: see cohort()'s docstring).
DEFAULT_BLOCK_SIZE = 256
#: Patients per chunk (one Parquet file, one Dask task, one progress update).
DEFAULT_CHUNK_SIZE = 1024
MANIFEST = "_cohort.json"
FORMAT_VERSION = 1
LAB_OBSERVABLES = ("alc", "anc", "platelets", "igg", "igm", "iga")
RESPONSE_DTYPE = pd.CategoricalDtype(list(ep.RESPONSES), ordered=False)


def chunk_file(index: int) -> str:
    """File name of chunk ``index`` in a cohort dataset directory."""
    return f"chunk-{index:06d}.parquet"


def _chunk_hook(index: int) -> None:
    """Called before chunk ``index`` is computed (local and Dask).  Tests replace it to
    simulate a run killed in the middle; it does nothing otherwise."""


# ----------------------------------------------------------------------------- the spec
@dataclass(frozen=True, eq=False)
class CohortSpec:
    """Everything that defines a cohort's results (picklable: it travels to Dask workers)."""

    model: Model
    regimen: Regimen
    typical: ParameterSet
    rules: DoseRules | None
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
    planned: np.ndarray = field(repr=False)  # (n_days,) mg

    @property
    def n_days(self) -> int:
        return int(self.planned.shape[-1])

    @property
    def n_chunks(self) -> int:
        return -(-self.n // self.chunk_size)

    @property
    def n_cycles(self) -> int:
        return -(-self.n_days // self.regimen.cycle_days)

    def chunk_rows(self, index: int) -> tuple[int, int]:
        start = index * self.chunk_size
        return start, min(start + self.chunk_size, self.n)


# ----------------------------------------------------------------------------- population
def _block_population(spec: CohortSpec, block: int) -> tuple[pd.DataFrame, ParameterSet]:
    """Covariates and parameters of the global rows ``block*B .. block*B + B - 1`` (rows >= n
    are padding).  Always drawn one whole block at a time, so a block's arrays are computed the
    same way whatever the chunking."""
    b = spec.block_size
    start = block * b
    if spec.patients is None:
        pop = virtual_population(
            spec.model, b, spec.seed, setting=spec.setting, start=start, variability=spec.variability
        )
        cov = pop.covariates
        names, etas = pop.eta_names, pop.etas
    else:
        rows = np.minimum(np.arange(start, start + b), spec.n - 1)
        cov = spec.patients.iloc[rows].reset_index(drop=True)
        names, etas = draw_etas(spec.model, b, spec.seed, start=start)
        if not spec.variability:
            etas = jnp.zeros_like(etas)
        etas = etas[jnp.asarray(rows - start)]  # padding rows copy the last patient's eta too
    params = individual_parameters(spec.model, spec.typical, cov, names, etas)
    return cov, params


# ----------------------------------------------------------------------------- compiled rounds
def _solve_block(model, params, planned, rules, settings):
    """One block (parameters of shape (B,)) as one ODE with a shared step; only what the
    endpoints need leaves the device."""
    b = next(iter(params.values.values())).shape
    traj = solve_days(model, params, jnp.broadcast_to(planned, b + planned.shape), None, rules, settings)
    return {
        "obs": {k: traj.day_obs[k] for k in LAB_OBSERVABLES},
        "doses": traj.doses,
        "records": traj.rule_records,
        "ok": traj.ok,
    }


_ROUND_FNS: dict[tuple, Any] = {}


def _round_fn(devices: tuple):
    """``run(model, params, planned, rules, settings)`` with parameter leaves of shape
    ``(len(devices), B)``: one block per device, sharded over a 1-D mesh when there are
    several.  Cached, so that every chunk reuses one executable."""
    key = tuple(d.id for d in devices)
    if key in _ROUND_FNS:
        return _ROUND_FNS[key]
    if len(devices) == 1:

        @eqx.filter_jit
        def run(model, params, planned, rules, settings):
            out = _solve_block(model, jax.tree.map(lambda a: a[0], params), planned, rules, settings)
            return jax.tree.map(lambda a: a[None], out)

    else:
        mesh = jax.sharding.Mesh(np.array(devices), ("patients",))
        P = jax.sharding.PartitionSpec

        @eqx.filter_jit
        def run(model, params, planned, rules, settings):
            dyn_rules, static_rules = eqx.partition(rules, eqx.is_array)
            dyn_model, static_model = eqx.partition(model, eqx.is_array)

            def local(params, planned, dyn_rules, dyn_model):
                out = _solve_block(
                    eqx.combine(dyn_model, static_model),
                    jax.tree.map(lambda a: a[0], params),
                    planned,
                    eqx.combine(dyn_rules, static_rules),
                    settings,
                )
                return jax.tree.map(lambda a: a[None], out)

            return jax.shard_map(
                local,
                mesh=mesh,
                in_specs=(P("patients"), P(), P(), P()),
                out_specs=P("patients"),
                check_vma=False,
            )(params, planned, dyn_rules, dyn_model)

        _ROUND_FNS[key] = (run, mesh)
        return _ROUND_FNS[key]
    _ROUND_FNS[key] = (run, None)
    return _ROUND_FNS[key]


def _devices() -> tuple:
    return tuple(jax.local_devices())


# ----------------------------------------------------------------------------- one chunk
def _solve_chunk(spec: CohortSpec, index: int) -> tuple[pd.DataFrame, dict]:
    """Solve chunk ``index``: covariates of its real rows and their daily arrays (numpy)."""
    start, stop = spec.chunk_rows(index)
    b = spec.block_size
    first, last = start // b, -(-stop // b)  # blocks [first, last)
    devices = _devices()
    d = len(devices)
    run, mesh = _round_fn(devices)
    rules = NoRules() if spec.rules is None else spec.rules
    planned = jnp.asarray(spec.planned)
    blocks = list(range(first, last))
    n_rounds = -(-len(blocks) // d)
    blocks += [blocks[-1]] * (n_rounds * d - len(blocks))  # idle devices repeat the last block
    covs, pending = {}, []
    for r in range(n_rounds):
        group = blocks[r * d : (r + 1) * d]
        ps = []
        for j in group:
            cov, p = covs.get(j) or (None, None)
            if cov is None:
                cov, p = _block_population(spec, j)
                covs[j] = (cov, p)
            ps.append(p)
        params = jax.tree.map(lambda *a: np.stack([np.asarray(x) for x in a]), *ps)
        if d > 1:
            params = jax.device_put(params, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("patients")))
        pending.append((group, run(spec.model, params, planned, rules, spec.settings)))  # async dispatch
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
            flat["doses"], flat["ok"] = out["doses"][slot], out["ok"][slot]
            for k, v in flat.items():
                arrays.setdefault(k, []).append(v)
    arrays = {k: np.concatenate(v, axis=0) for k, v in arrays.items()}
    cov = pd.concat([covs[j][0] for j in range(first, last)], ignore_index=True)
    lo, hi = start - first * b, stop - first * b  # real rows within the solved blocks
    _check_chunk(spec, arrays, cov, first, lo, hi)
    arrays = {k: v[lo:hi] for k, v in arrays.items()}
    return cov.iloc[lo:hi].reset_index(drop=True), arrays


def _global_ids(spec: CohortSpec, rows: np.ndarray) -> list:
    """Patient ids (Python ints or strings) of global rows."""
    ids = rows if spec.patients is None else spec.patients["patient"].to_numpy()[np.minimum(rows, spec.n - 1)]
    return [x.item() if isinstance(x, np.generic) else x for x in ids]


def _check_chunk(spec, arrays, cov, first_block, lo, hi):
    """Raise SolverError naming the (global) patient whose solve failed."""
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
    failed_days = np.flatnonzero(~ok[sel].all(axis=0))
    if failed_days.size == 0:  # non-finite outputs with a successful solve: that patient
        raise SolverError(
            f"ODE solve for patient {_global_ids(spec, rows)[i - blk * b]!r} (row {rows[i - blk * b]}) "
            "produced non-finite values; check that patient's covariates and the parameters."
        )
    day = int(failed_days[0])
    culprits = _diagnose_block(spec, cov.iloc[sel], rows, day)
    real = [r for r in culprits if r < spec.n]
    ids = _global_ids(spec, rows)
    span = f"{ids[0]!r}..{_global_ids(spec, np.array([min(rows[-1], spec.n - 1)]))[0]!r}"
    if real:
        names = ", ".join(repr(x) for x in _global_ids(spec, np.array(real))[:5])
        raise SolverError(
            f"ODE solve failed for patient {names} on day {day} (it also fails when solved alone); "
            f"{len(real)} patient(s) of the block {span} fail.  Check that patient's covariates and "
            "the parameters, or raise settings.max_steps_per_day / loosen rtol."
        )
    if culprits:
        raise SolverError(
            f"ODE solve failed on day {day} for the block of patients {span}: padding patient(s) "
            f"{culprits[:3]} (drawn only to fill the last block of {spec.block_size}) fail; "
            "use another block_size."
        )
    raise SolverError(
        f"ODE solve failed on day {day} for the block of patients {span} solved together with a "
        "shared step (each solves alone); raise settings.max_steps_per_day or lower block_size."
    )


def _solo_ok(model, p, planned, rules, settings):
    traj = solve_days(model, p, planned, None, rules, settings)
    finite = jnp.stack([jnp.all(jnp.isfinite(v)) for v in traj.day_obs.values()]).all()
    return traj.ok.all() & finite


_DIAGNOSE = eqx.filter_jit(eqx.filter_vmap(_solo_ok, in_axes=(None, 0, None, None, None)))


def _diagnose_block(spec, cov, rows, day) -> list[int]:
    """Solve each patient of a failed block alone up to the failing day; the global rows that
    fail (compiles once per failing day: an error path)."""
    p = individual_parameters(spec.model, spec.typical, cov.reset_index(drop=True), *_block_etas(spec, rows))
    rules = NoRules() if spec.rules is None else spec.rules
    ok = np.asarray(_DIAGNOSE(spec.model, p, jnp.asarray(spec.planned[: day + 1]), rules, spec.settings))
    return [int(r) for r, good in zip(rows, ok) if not good]


def _block_etas(spec, rows):
    start = int(rows[0])
    names, etas = draw_etas(spec.model, len(rows), spec.seed, start=start)
    if not spec.variability:
        etas = jnp.zeros_like(etas)
    if spec.patients is not None:
        etas = etas[jnp.asarray(np.minimum(rows, spec.n - 1) - start)]
    return names, etas


# ----------------------------------------------------------------------------- endpoints
def _per_cycle(values: np.ndarray, cyc: np.ndarray, n_cycles: int, reduce) -> np.ndarray:
    starts = np.searchsorted(cyc, np.arange(n_cycles))
    return reduce.reduceat(values, starts, axis=1)


def _endpoints(spec: CohortSpec, cov: pd.DataFrame, a: dict) -> pd.DataFrame:
    """One row per patient from the daily arrays of a chunk."""
    L, n_days, K = spec.regimen.cycle_days, spec.n_days, spec.n_cycles
    v = spec.visits
    alc, anc, plt = a["obs.alc"], a["obs.anc"], a["obs.platelets"]
    cols: dict[str, Any] = {"patient": cov["patient"].reset_index(drop=True)}
    for name in _covariate_names(spec.model):
        cols[name] = cov[name].to_numpy(dtype=np.float64)
    cyc = np.minimum(v // L, K - 1)
    anc_v, plt_v = anc[:, v], plt[:, v]
    anc_g = ep.grade(anc_v, ep.ANC_LIMITS).astype(np.int64)
    plt_g = ep.grade(plt_v, ep.PLATELET_LIMITS).astype(np.int64)
    cols["anc_grade"] = anc_g.max(axis=1)
    cols["plt_grade"] = plt_g.max(axis=1)
    i = np.argmin(anc_v, axis=1)
    cols["anc_nadir"], cols["anc_nadir_day"] = np.take_along_axis(anc_v, i[:, None], 1)[:, 0], v[i].astype(np.int64)
    i = np.argmin(plt_v, axis=1)
    cols["plt_nadir"], cols["plt_nadir_day"] = np.take_along_axis(plt_v, i[:, None], 1)[:, 0], v[i].astype(np.int64)
    # dosing
    doses = a["doses"]
    planned_mg = float(spec.planned.sum())
    cols["planned_mg"] = np.full(len(doses), planned_mg)
    cols["delivered_mg"] = doses.sum(axis=1)
    cols["dose_intensity"] = cols["delivered_mg"] / planned_mg if planned_mg > 0 else np.full(len(doses), np.nan)
    given = doses > 0
    last_given = doses.shape[1] - 1 - np.argmax(given[:, ::-1], axis=1)
    cols["last_dose_mg"] = np.where(given.any(axis=1), doses[np.arange(len(doses)), last_given], np.nan)
    rec = {k[len("records."):]: val for k, val in a.items() if k.startswith("records.")}
    if spec.rules is None:
        cols["days_held"] = np.zeros(len(doses), dtype=np.int64)
    elif "held" in rec:
        cols["days_held"] = (rec["held"] > 0).sum(axis=1).astype(np.int64)
    else:
        cols["days_held"] = ((spec.planned[None, :] > 0) & (doses <= 0)).sum(axis=1).astype(np.int64)
    if "reductions" in rec:
        cols["n_reductions"] = rec["reductions"].max(axis=1).astype(np.int64)
    if "stopped" in rec:
        stopped = rec["stopped"] > 0
        cols["stopped"] = stopped.any(axis=1)
        cols["stop_day"] = np.where(cols["stopped"], np.argmax(stopped, axis=1), np.nan)
    if "dose_cap_mg" in rec:  # the level in force on the last day on treatment (before a stop)
        cap = rec["dose_cap_mg"].astype(np.float64)
        on = ~(rec["stopped"] > 0) if "stopped" in rec else np.ones(cap.shape, dtype=bool)
        last = cap.shape[1] - 1 - np.argmax(on[:, ::-1], axis=1)
        cols["final_dose_cap_mg"] = np.where(on.any(axis=1), cap[np.arange(len(cap)), last], np.nan)
    # response (iwCLL-style, blood only), at the visits
    label, first = ep.best_response(alc, anc, plt, v)
    cr, _, _ = ep.response_status(alc[:, v], anc[:, v], plt[:, v], alc[:, 0])
    is_cr = cr > 0
    first_cr = np.where(is_cr.any(axis=1), v[np.argmax(is_cr, axis=1)], np.nan)
    cols["best_response"] = pd.Categorical(np.asarray(label).astype(str), dtype=RESPONSE_DTYPE)
    cols["time_to_response"] = np.asarray(first, dtype=np.float64)
    cols["time_to_best_response"] = np.where(label == "CR", first_cr, np.where(label == "PR", first, np.nan))
    # ALC change and immunoglobulins at the end of cycles 12 and 24
    for c in (12, 24):
        day = c * L
        if day <= n_days:
            cols[f"alc_change_c{c}"] = 100.0 * (alc[:, day] / alc[:, 0] - 1.0)
        else:
            cols[f"alc_change_c{c}"] = np.full(len(alc), np.nan)
    for ig in ("igg", "igm", "iga"):
        for c in (12, 24):
            day = c * L
            cols[f"{ig}_c{c}"] = a[f"obs.{ig}"][:, day] if day <= n_days else np.full(len(alc), np.nan)
    # per cycle
    anc_c = _per_cycle(anc_g, cyc, K, np.maximum)
    plt_c = _per_cycle(plt_g, cyc, K, np.maximum)
    for c in range(K):
        cols[f"anc_grade_c{c + 1}"] = anc_c[:, c]
    for c in range(K):
        cols[f"plt_grade_c{c + 1}"] = plt_c[:, c]
    return pd.DataFrame(cols)


def _run_chunk(spec: CohortSpec, index: int, out: str | None):
    """The chunk function shared by the local loop and Dask: solve, compute endpoints, and
    either write ``out/chunk-XXXXXX.parquet`` (returns the row count) or return the frame."""
    _chunk_hook(index)
    cov, arrays = _solve_chunk(spec, index)
    df = _endpoints(spec, cov, arrays)
    if out is None:
        return df
    _write_atomic(Path(out) / chunk_file(index), df)
    return len(df)


# ----------------------------------------------------------------------------- files
def _write_atomic(path: Path, df: pd.DataFrame) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        table = pa.Table.from_pandas(df, preserve_index=False)
        with open(tmp, "wb") as f:
            pq.write_table(table, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _normalize(df: pd.DataFrame) -> pd.DataFrame:
    """The same dtypes whether a frame was built in memory or read back from Parquet."""
    if "best_response" in df:
        df["best_response"] = df["best_response"].astype(str).astype(RESPONSE_DTYPE)
    return df


def read_cohort(out: str | os.PathLike) -> pd.DataFrame:
    """Read a complete cohort dataset directory (written by :func:`cohort`) in patient order."""
    out = Path(out)
    manifest = _load_manifest(out)
    if manifest is None:
        raise ValueError(f"{out} is not a lenapk cohort dataset (no {MANIFEST})")
    n_chunks = manifest["n_chunks"]
    missing = [i for i in range(n_chunks) if not (out / chunk_file(i)).exists()]
    if missing:
        raise ValueError(
            f"{out}: {len(missing)} of {n_chunks} chunks missing (first: {chunk_file(missing[0])}); "
            "run lenapk.cohort with the same arguments to finish it"
        )
    frames = [pd.read_parquet(out / chunk_file(i)) for i in range(n_chunks)]
    return _normalize(pd.concat(frames, ignore_index=True))


# ----------------------------------------------------------------------------- manifest
def _digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, (np.ndarray, jax.Array)):
            arr = np.ascontiguousarray(np.asarray(p))
            h.update(f"{arr.dtype.str}{arr.shape}".encode())
            h.update(arr.tobytes())
        else:
            h.update(repr(p).encode())
    return h.hexdigest()


def _tree_digest(obj) -> str:
    leaves, treedef = jax.tree_util.tree_flatten(obj)
    return _digest(str(treedef), *[np.asarray(x) if eqx.is_array_like(x) else x for x in leaves])


def _arguments(spec: CohortSpec) -> dict:
    """The arguments that define the results, JSON-ready (compared on resume)."""
    reg = spec.regimen
    return {
        "model": f"{type(spec.model).__module__}.{type(spec.model).__qualname__}#{_tree_digest(spec.model)[:16]}",
        "regimen": {
            "name": reg.name,
            "cycle_days": reg.cycle_days,
            "n_days": spec.n_days,
            "doses_sha256": _digest(spec.planned),
        },
        "n": spec.n,
        "seed": spec.seed,
        "setting": spec.setting if spec.patients is None else None,
        "patients_sha256": None if spec.patients is None else _digest(
            list(spec.patients.columns), pd.util.hash_pandas_object(spec.patients, index=False).to_numpy()
        ),
        "params": {k: float(v) for k, v in sorted(spec.typical.values.items())},
        "rules": None if spec.rules is None else f"{type(spec.rules).__qualname__}#{_tree_digest(spec.rules)}",
        "settings": {
            "rtol": spec.settings.rtol,
            "atol": spec.settings.atol,
            "max_steps_per_day": spec.settings.max_steps_per_day,
            "dt0": spec.settings.dt0,
        },
        "variability": spec.variability,
        "visits": spec.visits_arg if isinstance(spec.visits_arg, str) else [int(x) for x in spec.visits],
        "block_size": spec.block_size,
        "chunk_size": spec.chunk_size,
        "float64": True,
    }


def _load_manifest(out: Path) -> dict | None:
    path = out / MANIFEST
    if not path.exists():
        return None
    with open(path) as f:
        return json.load(f)


def _prepare_dir(out: Path, spec: CohortSpec, overwrite: bool) -> set[int]:
    """Create or check the dataset directory; return the indices of chunks already done."""
    from . import __version__

    args = _arguments(spec)
    manifest = {
        "format": FORMAT_VERSION,
        "lenapk_version": __version__,
        "arguments": args,
        "n_chunks": spec.n_chunks,
        "chunk_file": "chunk-{index:06d}.parquet",
    }
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={str(out)!r} exists and is not a directory")
    old = _load_manifest(out) if out.exists() else None
    if out.exists() and old is None and any(out.iterdir()):
        raise ValueError(
            f"out={str(out)!r} is a non-empty directory without {MANIFEST}: not a lenapk cohort "
            "dataset; give a new or empty directory"
        )
    if old is not None and overwrite:
        for f in out.iterdir():
            if f.name == MANIFEST or (f.name.startswith(("chunk-", ".chunk-")) and ".parquet" in f.name):
                f.unlink()
        old = None
    if old is not None:
        diff = _diff(old.get("arguments", {}), args)
        if diff or old.get("format") != FORMAT_VERSION:
            detail = "; ".join(diff) if diff else f"format {old.get('format')} != {FORMAT_VERSION}"
            raise ValueError(
                f"cannot resume into {str(out)!r}: it was made by a cohort with different arguments "
                f"({detail}).  Use a new directory, the original arguments, or overwrite=True."
            )
        if old.get("lenapk_version") != __version__:
            warnings.warn(
                f"resuming {out} written by lenapk {old.get('lenapk_version')} with lenapk {__version__}",
                stacklevel=3,
            )
    out.mkdir(parents=True, exist_ok=True)
    if old is None:
        _write_json_atomic(out / MANIFEST, manifest)
    for f in out.glob(".chunk-*.tmp"):  # leftovers of a killed run
        try:
            f.unlink()
        except OSError:
            pass
    done = set()
    for i in range(spec.n_chunks):
        path = out / chunk_file(i)
        if path.exists():
            start, stop = spec.chunk_rows(i)
            try:
                rows = pq.ParquetFile(path).metadata.num_rows
            except Exception:
                rows = -1
            if rows == stop - start:
                done.add(i)
            else:
                path.unlink()
    return done


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{k}.")
        elif a != b:
            short = lambda x: (repr(x)[:60] + "...") if len(repr(x)) > 63 else repr(x)  # noqa: E731
            out.append(f"{prefix}{k}: directory has {short(a)}, this call has {short(b)}")
    return out


# ----------------------------------------------------------------------------- arguments
def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def _visits(visits, n_days: int, cycle_days: int):
    if isinstance(visits, str):
        if visits == "daily":
            v = np.arange(1, n_days + 1)
        elif visits == "protocol":
            v = ep.default_visits(n_days, cycle_days=cycle_days)
        else:
            raise ValueError(f"visits must be 'daily', 'protocol' or a list of days, got {visits!r}")
        arg = visits
    else:
        arr = np.asarray(visits, dtype=float).reshape(-1)
        if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"visits must be whole days, got {list(arr[:5])}")
        if arr.min() < 0 or arr.max() > n_days:
            raise ValueError(f"visits must lie in [0, {n_days}] (days of the regimen), got {arr.min()}..{arr.max()}")
        v = arr.astype(np.int64)
        arg = None
    v = np.unique(v[v > 0]).astype(np.int64)  # on-treatment visits; day 0 is the baseline
    n_cycles = -(-n_days // cycle_days)
    cyc = np.minimum(v // cycle_days, n_cycles - 1)
    empty = sorted(set(range(n_cycles)) - set(cyc.tolist()))
    if empty:
        c = empty[0]
        raise ValueError(
            f"visits: cycle {c + 1} (days {c * cycle_days}..{min((c + 1) * cycle_days, n_days) - 1}) has no "
            "on-treatment visit; per-cycle grades need at least one visit in every cycle"
        )
    return v, arg if arg is not None else [int(x) for x in v]


def _check_patient_ids(table: pd.DataFrame) -> None:
    ids = table["patient"]
    if ids.isna().any():
        r = int(np.flatnonzero(ids.isna().to_numpy())[0])
        raise ValueError(f"patients.patient: row {r} has no patient id")
    dup = ids.duplicated()
    if dup.any():
        r = int(np.flatnonzero(dup.to_numpy())[0])
        x = ids.iloc[r]
        raise ValueError(f"patients.patient: duplicate patient id {x.item() if isinstance(x, np.generic) else x!r} (row {r})")
    if ids.dtype == object and not all(isinstance(x, (str, int, np.integer)) for x in ids):
        raise ValueError("patients.patient: ids must be all integers or all strings")


def _make_spec(
    regimen, n, seed, patients, setting, rules, params, chunk_size, block_size, visits, model, settings, variability
) -> CohortSpec:
    if not jax.config.jax_enable_x64:
        raise RuntimeError("lenapk.cohort needs float64: jax.config.update('jax_enable_x64', True)")
    if not isinstance(regimen, Regimen):
        raise ValueError(f"regimen must be a lenapk.Regimen, got {type(regimen).__name__}")
    if np.ndim(regimen.doses) != 1:
        raise ValueError(f"regimen.doses must be one schedule (1-D), got shape {np.shape(regimen.doses)}")
    if not isinstance(model, Model):
        raise ValueError(f"model must be a lenapk.Model, got {type(model).__name__}")
    missing = [o for o in LAB_OBSERVABLES if o not in model.observable_names]
    if missing:
        raise ValueError(f"model {type(model).__name__} lacks the observables {missing} that cohort() reads")
    if not isinstance(settings, SolverSettings):
        raise ValueError(f"settings must be a lenapk.SolverSettings, got {type(settings).__name__}")
    if rules is not None and not isinstance(rules, DoseRules):
        raise ValueError(f"rules must be a lenapk.DoseRules, got {type(rules).__name__}")
    typical = model.default_params() if params is None else params
    if not isinstance(typical, ParameterSet):
        raise ValueError(f"params must be a lenapk.ParameterSet of typical values, got {type(typical).__name__}")
    model.validate(typical)
    if any(np.ndim(v) != 0 for v in typical.values.values()):
        raise ValueError("params must hold typical (scalar) values; per-patient values come from the population model")
    seed = _check_int("seed", seed, 0)
    block_size = _check_int("block_size", block_size, 1)
    if not isinstance(variability, bool):
        raise ValueError(f"variability must be True or False, got {variability!r}")
    table = None
    if patients is not None:
        table = validate_patients(patients, model)  # errors name the column and row
        _check_patient_ids(table)
        if n is not None and n != len(table):
            raise ValueError(f"n ({n!r}) differs from the number of patients in the table ({len(table)})")
        n = len(table)
        keep = ["patient", *_covariate_names(model)]
        table = table[keep].reset_index(drop=True)
    else:
        n = _check_int("n", n, 1)
        if setting not in _known_settings():
            raise ValueError(f"setting must be one of {sorted(_known_settings())}, got {setting!r}")
    chunk_size = DEFAULT_CHUNK_SIZE if chunk_size is None else _check_int("chunk_size", chunk_size, 1)
    chunk_size = -(-chunk_size // block_size) * block_size  # whole blocks
    planned = np.asarray(regimen.doses, dtype=np.float64)
    v, visits_arg = _visits(visits, planned.size, regimen.cycle_days)
    return CohortSpec(
        model=model, regimen=regimen, typical=typical, rules=rules, settings=settings, n=int(n), seed=seed,
        setting=setting, patients=table, block_size=block_size, chunk_size=chunk_size, visits=v,
        visits_arg=visits_arg, variability=variability, planned=planned,
    )


def _known_settings():
    from .population import COVARIATE_DISTRIBUTIONS

    return COVARIATE_DISTRIBUTIONS


# ----------------------------------------------------------------------------- public API
def cohort(
    regimen: Regimen,
    n: int | None = None,
    seed: int = 0,
    patients: pd.DataFrame | None = None,
    setting: str = "untreated",
    rules: DoseRules | None = None,
    params: ParameterSet | None = None,
    chunk_size: int | None = None,
    out: str | os.PathLike | None = None,
    progress: bool = True,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    scheduler: str = "local",
    client=None,
    visits="daily",
    model: Model = DEFAULT_MODEL,
    settings: SolverSettings = SolverSettings(),
    variability: bool = True,
    overwrite: bool = False,
    collect: bool = True,
) -> pd.DataFrame | Path:
    """Simulate a virtual cohort under ``regimen``: one row per patient (see the module
    docstring for the columns).

    Main arguments:
        regimen: planned dosing (:class:`lenapk.Regimen`), the same for every patient.
        n, seed: number of patients drawn from the population model (patient ``i``'s
            covariates and random effects depend only on ``(seed, i)``).
        patients: a table of patients instead (one row each, a column per covariate, optional
            ``patient`` id column, ints or strings, unique); bad tables raise ``ValueError``
            naming the column.  Other columns are not carried over: join on ``patient``.
        setting: ``"untreated"`` or ``"relapsed"`` covariate distributions (drawn patients).
        rules: dose-modification rules (:class:`lenapk.DoseRules`); ``None`` gives every dose.
        params: typical parameter values (:class:`lenapk.ParameterSet`; default the model's).
    Scale:
        chunk_size: patients per chunk (file, task, progress step); rounded up to whole blocks.
            Default 1024.  Does not change results.
        block_size: patients per shared-step ODE (default 256, the fastest measured on CPU for
            24 cycles: per-patient CPU time 29 / 21 / 19 / 15-19 / 16-19 ms at 32 / 64 / 128 /
            256 / 512).  Part of the numerical definition: another block size changes results
            within the solver tolerance only.  The last block is filled up with patients that
            are solved and dropped, so for a cohort of a few patients a smaller block is faster.
        out: a directory for a Parquet dataset (one file per chunk, written atomically, and a
            manifest); a rerun with the same arguments computes only the missing chunks, and
            other arguments are refused (``overwrite=True`` starts again).
        progress: show a tqdm progress bar (patients).
        scheduler: ``"local"`` (this process; all local JAX devices through ``jax.sharding``)
            or ``"dask"`` (one task per chunk on ``client``, default ``distributed.get_client()``;
            with ``out`` the workers write the files, so ``out`` must be a shared path; each
            worker process compiles the round once).  Results are identical either way.
        collect: with ``out``, return the DataFrame (read back) or, if False, the directory.
    Other:
        visits: days the labs are read: ``"daily"`` (default), ``"protocol"``
            (:func:`lenapk.endpoints.default_visits`) or a list of days.
        model, settings, variability: model, solver tolerances, between-patient variability.

    Raises :class:`lenapk.SolverError` naming the (global) patient id when a solve fails.

    Use every CPU core by giving JAX one host device per core before it starts
    (:func:`set_host_device_count`, or ``XLA_FLAGS=--xla_force_host_platform_device_count=2``):
    blocks are then solved in parallel (or use Dask with one single-threaded worker process per
    core).  ``lenapk cohort`` does this by default.
    """
    spec = _make_spec(
        regimen, n, seed, patients, setting, rules, params, chunk_size, block_size, visits, model, settings, variability
    )
    if scheduler not in ("local", "dask"):
        raise ValueError(f"scheduler must be 'local' or 'dask', got {scheduler!r}")
    out_path = None if out is None else Path(out)
    done = _prepare_dir(out_path, spec, overwrite) if out_path is not None else set()
    todo = [i for i in range(spec.n_chunks) if i not in done]
    bar = _progress(progress, spec, done)
    frames: dict[int, pd.DataFrame] = {}
    try:
        if scheduler == "local":
            for i in todo:
                res = _run_chunk(spec, i, None if out_path is None else str(out_path))
                _collect(res, i, frames, bar)
        else:
            _run_dask(spec, todo, client, out_path, frames, bar)
    finally:
        if bar is not None:
            bar.close()
    if out_path is not None:
        return read_cohort(out_path) if collect else out_path
    return _normalize(pd.concat([frames[i] for i in range(spec.n_chunks)], ignore_index=True))


#: XLA CPU flags that ``set_host_device_count`` adds, with the jaxlib versions they were measured
#: on (``None``: any version).  An XLA_FLAGS entry that the installed jaxlib does not know aborts
#: the process, hence the version gate.  Both leave results bit-identical (benchmarks/RESULTS.md).
CPU_TUNING_FLAGS: tuple[tuple[str, tuple[int, int] | None], ...] = (
    # LLVM's default on AVX-512 cores is 256-bit vectors; 512 made cohorts 7% faster.
    ("--xla_cpu_prefer_vector_width=512", None),
    # XLA's older loop emitters compile the solver's while-loop body to faster code: cohorts
    # 20% faster on jaxlib 0.10.2.
    ("--xla_cpu_use_fusion_emitters=false", (0, 10)),
)


def _jaxlib_minor() -> tuple[int, int] | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        major, minor = version("jaxlib").split(".")[:2]
        return int(major), int(minor)
    except (PackageNotFoundError, ValueError):
        return None


def set_host_device_count(n: int | None = None, *, tune: bool = True) -> int:
    """Set up JAX's CPU backend for cohorts: ``n`` CPU devices (default: one per core of this
    process's CPU set) so that :func:`cohort` solves blocks on all cores, as
    ``numpyro.set_host_device_count`` does, and, with ``tune``, the code-generation flags of
    :data:`CPU_TUNING_FLAGS` (about 25% faster cohorts on the 2-core benchmark machine, same
    results bit for bit).

    It sets ``XLA_FLAGS=--xla_force_host_platform_device_count=n`` (a count already there is
    replaced) plus each tuning flag that suits the installed jaxlib and that ``XLA_FLAGS`` does
    not already set (the user's own value stays).  Takes effect only if called before JAX starts
    its CPU backend (before the first array is created).  Returns ``n``."""
    if n is None:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_host_device_count: n must be a positive integer, got {n!r}")
    count = "--xla_force_host_platform_device_count"
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(count)] + [f"{count}={n}"]
    if tune:
        given = {f.split("=")[0] for f in flags}
        jaxlib_minor = _jaxlib_minor()
        flags += [f for f, only_on in CPU_TUNING_FLAGS
                  if only_on in (None, jaxlib_minor) and f.split("=")[0] not in given]
    os.environ["XLA_FLAGS"] = " ".join(flags)
    return n


def cohort_dask(regimen: Regimen, n: int | None = None, seed: int = 0, *, client=None, **kwargs):
    """:func:`cohort` with ``scheduler="dask"``: one task per chunk on a ``dask.distributed``
    client (default: the current one)."""
    return cohort(regimen, n, seed, scheduler="dask", client=client, **kwargs)


def _progress(progress, spec, done):
    if not progress:
        return None
    from tqdm.auto import tqdm

    initial = sum(spec.chunk_rows(i)[1] - spec.chunk_rows(i)[0] for i in done)
    return tqdm(total=spec.n, initial=initial, unit="patient", desc="cohort", smoothing=0.1)


def _collect(res, index, frames, bar):
    if isinstance(res, pd.DataFrame):
        frames[index] = res
        rows = len(res)
    else:
        rows = int(res)
    if bar is not None:
        bar.update(rows)


def _dask_task(spec: CohortSpec, index: int, out: str | None):
    return _run_chunk(spec, index, out)


def _run_dask(spec, todo, client, out_path, frames, bar):
    try:
        from distributed import as_completed, get_client
    except ImportError as e:  # pragma: no cover
        raise ImportError("scheduler='dask' needs dask.distributed: pip install 'dask[distributed]'") from e
    client = get_client() if client is None else client
    if not todo:
        return
    spec_future = client.scatter(spec, broadcast=True)
    out = None if out_path is None else str(out_path)
    tag = f"{_digest(json.dumps(_arguments(spec), sort_keys=True))[:8]}-{uuid.uuid4().hex[:8]}"
    futures = [
        client.submit(_dask_task, spec_future, i, out, key=f"lenapk-cohort-{tag}-{i}")
        for i in todo
    ]
    index_of = {f.key: i for f, i in zip(futures, todo)}
    try:
        for fut in as_completed(futures):
            _collect(fut.result(), index_of[fut.key], frames, bar)
    except BaseException:
        client.cancel(futures)
        raise
