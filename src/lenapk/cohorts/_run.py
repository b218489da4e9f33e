"""``cohort()``: n virtual patients under a regimen, one row of endpoints per patient."""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from .._core import AbstractDoseRules, ParameterSet, SolverSettings, resolve_model
from .._core import _validate as V
from ..endpoints import Assessment, patient_table
from ._dask import run_dask
from ._engine import solve_chunk
from ._failures import check_chunk, global_ids
from ._local import run_local
from ._platform import warn_if_cores_idle
from ._spec import DEFAULT_BLOCK_SIZE, CohortSpec, make_spec
from ._store import chunk_file, normalize, prepare_dir, read_cohort, write_atomic


def _chunk_hook(index: int) -> None:
    """Called before chunk ``index`` is computed (local and Dask).  Tests replace it to
    simulate a run killed in the middle; it does nothing otherwise."""


def _observables(spec: CohortSpec) -> tuple[str, ...]:
    read = set(spec.endpoints.observables_read)
    return tuple(n for n in spec.model.observable_names if n in read)


def run_chunk(spec: CohortSpec, index: int, out: str | None):
    """The chunk function shared by the local loop and Dask: solve, compute endpoints, and
    either write ``out/chunk-XXXXXX.parquet`` (returns the row count) or return the frame."""
    _chunk_hook(index)
    start, stop = spec.chunk_rows(index)
    cov, arrays, blocks = solve_chunk(spec, index, _observables(spec))
    first = blocks[0] * spec.block_size
    lo, hi = start - first, stop - first  # real rows within the solved blocks
    check_chunk(spec, arrays, blocks[0], lo, hi)
    rows = slice(lo, hi)
    daily = {k[4:]: v[rows] for k, v in arrays.items() if k.startswith("obs.")}
    records = {k[8:]: v[rows] for k, v in arrays.items() if k.startswith("records.")}
    global_rows = np.arange(start, stop)
    with _on_host():
        df = patient_table(
            spec.endpoints,
            global_ids(spec, global_rows),
            cov.iloc[rows][list(spec.model.covariate_names)],
            Assessment(daily, spec.visits, spec.cycle_days),
            arrays["doses"][rows],
            spec.planned(global_rows),
            records,
            spec.rules is not None,
        )
    if out is None:
        return df
    write_atomic(Path(out) / chunk_file(index), df)
    return len(df)


def _on_host():
    """A context in which JAX operations of the endpoint tables run on the host CPU: on an
    accelerator they would queue behind the next chunk's solve on the device's stream."""
    if jax.default_backend() == "cpu":
        return nullcontext()
    return jax.default_device(jax.devices("cpu")[0])


def _progress(progress: bool, spec: CohortSpec, done: set):
    if not progress:
        return None
    from tqdm.auto import tqdm

    initial = sum(spec.chunk_rows(i)[1] - spec.chunk_rows(i)[0] for i in done)
    return tqdm(total=spec.n, initial=initial, unit="patient", desc="cohort", smoothing=0.1)


def cohort(
    regimen,
    n: int | None = None,
    seed: int = 0,
    patients: pd.DataFrame | None = None,
    setting: str | None = None,
    rules: AbstractDoseRules | None = None,
    params: ParameterSet | None = None,
    chunk_size: int | None = None,
    out: str | os.PathLike | None = None,
    progress: bool = True,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    scheduler: str = "local",
    client=None,
    visits="daily",
    model=None,
    settings: SolverSettings = SolverSettings(),
    variability: bool = True,
    overwrite: bool = False,
    collect: bool = True,
    fill: str | None = None,
) -> pd.DataFrame | Path:
    """Simulate a virtual cohort: one row per patient (``patient``, the covariates, then the
    model's endpoints and the dosing columns: :mod:`lenapk.endpoints`).

    Main arguments:
        regimen: planned dosing: one :class:`lenapk.Regimen` for every patient, or one per
            patient (a mapping patient id -> Regimen, or a list in patient order; e.g. from
            :func:`lenapk.read_event_table`); shorter regimens are extended without doses.
        n, seed: number of patients drawn from the population model (patient ``i``'s
            covariates and random effects depend only on ``(seed, i)``).
        patients: a table of patients instead (one row each, a column per covariate, optional
            ``patient`` id column, ints or strings, unique); bad tables raise ``ValueError``
            naming the column.  Other columns are not carried over: join on ``patient``.
        fill: with ``patients``, how missing covariate columns are filled: ``"drawn"`` (from the
            setting's distributions, conditional on nothing: :func:`lenapk.population.fill_covariates`)
            or ``"typical"``; ``None`` (default) requires every covariate.
        setting: the population the patients are drawn from (``model.populations``; default
            the model's first).
        rules: dose-modification rules (:class:`lenapk.AbstractDoseRules`); ``None`` gives every dose.
        params: typical parameter values (default: the model's).
        model: the model (default: :func:`lenapk.default_model`).
    Scale:
        chunk_size: patients per chunk (file, task, progress step); rounded up to whole blocks.
            Default 1024.  Does not change results.
        block_size: patients per shared-step ODE (default 256, the fastest measured on CPU for
            24 cycles).  Part of the numerical definition: another block size changes results
            within the solver tolerance only.  The last block is filled up with patients that
            are solved and dropped, so for a cohort of a few patients a smaller block is faster.
        out: a directory for a Parquet dataset (one file per chunk, written atomically, and a
            manifest); a rerun with the same arguments computes only the missing chunks, and
            other arguments are refused (``overwrite=True`` starts again).
        progress: show a tqdm progress bar (patients).
        scheduler: ``"local"`` (this process; all local JAX devices through ``jax.sharding``;
            on an accelerator a few chunks are in flight at once, so that the host's endpoint
            tables overlap the device's solves) or ``"dask"`` (one task per chunk on ``client``,
            default ``distributed.get_client()``;
            with ``out`` the workers write the files, so ``out`` must be a shared path).
            Results are identical either way.
        collect: with ``out``, return the DataFrame (read back) or, if False, the directory.
    Other:
        visits: days the labs are read: ``"daily"`` (default), ``"protocol"`` (the standard lab
            schedule, :meth:`lenapk.LabVisits.standard`) or a list of days.
        settings, variability: solver tolerances, between-patient variability.

    Exactness: patient ``i``'s result depends only on ``(seed, block_size)`` and the other
    arguments, never on ``n``, ``chunk_size``, the number of devices or the scheduler (blocks
    hold fixed global patients).  Raises :class:`lenapk.SolverError` naming the (global) patient
    id when a solve fails.  Every CPU core is used: ``import lenapk`` gives JAX one host device per
    core when JAX has not started yet; when it had, this warns once with the fix.
    """
    model = resolve_model(model)
    warn_if_cores_idle("lenapk.cohort")
    spec = make_spec(
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
        fill,
    )
    V.one_of("scheduler", scheduler, ("local", "dask"))
    out_path = None if out is None else Path(out)
    done = prepare_dir(out_path, spec, overwrite) if out_path is not None else set()
    todo = [i for i in range(spec.n_chunks) if i not in done]
    bar = _progress(progress, spec, done)
    frames: dict[int, pd.DataFrame] = {}

    def collect_result(res, index):
        if isinstance(res, pd.DataFrame):
            frames[index] = res
        if bar is not None:
            bar.update(len(res) if isinstance(res, pd.DataFrame) else int(res))

    try:
        if scheduler == "local":
            run_local(spec, todo, None if out_path is None else str(out_path), run_chunk, collect_result)
        else:
            run_dask(spec, todo, client, None if out_path is None else str(out_path), run_chunk, collect_result)
    finally:
        if bar is not None:
            bar.close()
    if out_path is not None:
        return read_cohort(out_path) if collect else out_path
    return normalize(pd.concat([frames[i] for i in range(spec.n_chunks)], ignore_index=True))


def cohort_dask(regimen, n: int | None = None, seed: int = 0, *, client=None, **kwargs):
    """:func:`cohort` with ``scheduler="dask"``: one task per chunk on a ``dask.distributed``
    client (default: the current one)."""
    return cohort(regimen, n, seed, scheduler="dask", client=client, **kwargs)
