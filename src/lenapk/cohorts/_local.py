"""Cohort chunks in this process: one at a time on the CPU, a few in flight on an accelerator."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor, as_completed

import jax

from ._spec import CohortSpec

#: Chunks in flight at once in the local scheduler on an accelerator (``LENAPK_CHUNKS_IN_FLIGHT``
#: overrides it): each is dispatched to the device when its thread gets to it, the device runs
#: them in turn, and the host computes the endpoint tables of finished ones meanwhile (NumPy
#: releases the GIL).  Device memory grows with the count: each chunk in flight holds its own
#: buffers (one block of 131,072 patients: 9 GiB; three: 27 GiB, benchmarks/RESULTS.md).
ACCELERATOR_CHUNKS_IN_FLIGHT = 3
CHUNKS_ENV = "LENAPK_CHUNKS_IN_FLIGHT"


def _chunks_in_flight() -> int:
    """``LENAPK_CHUNKS_IN_FLIGHT`` when set (a whole number >= 1), else 1 on the CPU (the JAX
    devices are the cores: a second chunk would only compete for them) and
    :data:`ACCELERATOR_CHUNKS_IN_FLIGHT` on an accelerator."""
    given = os.environ.get(CHUNKS_ENV, "").strip()
    if given:
        if not (given.isdigit() and int(given) >= 1):
            raise ValueError(f"{CHUNKS_ENV} must be a whole number >= 1, got {given!r}")
        return int(given)
    return 1 if jax.default_backend() == "cpu" else ACCELERATOR_CHUNKS_IN_FLIGHT


def run_local(spec: CohortSpec, todo: list[int], out: str | None, run_chunk, collect) -> None:
    """``run_chunk(spec, index, out)`` over ``todo`` in this process, ``_chunks_in_flight()`` at a
    time (the first alone, so that it compiles once); ``collect(result, index)`` as each finishes.  An error in a
    chunk cancels the chunks not started and is raised once the running ones have finished
    (their results, like any chunk written to ``out`` before, are kept for a resume)."""
    workers = min(_chunks_in_flight(), len(todo))
    if workers <= 1:
        for i in todo:
            collect(run_chunk(spec, i, out), i)
        return
    collect(run_chunk(spec, todo[0], out), todo[0])
    with ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(run_chunk, spec, i, out): i for i in todo[1:]}
        try:
            for f in as_completed(futures):
                collect(f.result(), futures[f])
        except BaseException:
            for f in futures:
                f.cancel()
            raise
