"""Cohort chunks as Dask tasks (one per chunk) on a ``dask.distributed`` client."""

from __future__ import annotations

import json
import uuid

from ._spec import CohortSpec
from ._store import arguments, digest


def run_dask(spec: CohortSpec, todo: list[int], client, out: str | None, run_chunk, collect) -> None:
    """Submit ``run_chunk(spec, index, out)`` for each chunk of ``todo`` and ``collect(result,
    index)`` as they finish; cancels the rest on an error."""
    try:
        from distributed import as_completed, get_client
    except ImportError as e:  # pragma: no cover
        raise ImportError("scheduler='dask' needs dask.distributed: pip install 'dask[distributed]'") from e
    client = get_client() if client is None else client
    if not todo:
        return
    spec_future = client.scatter(spec, broadcast=True)
    tag = f"{digest(json.dumps(arguments(spec), sort_keys=True))[:8]}-{uuid.uuid4().hex[:8]}"
    futures = [client.submit(run_chunk, spec_future, i, out, key=f"lenapk-cohort-{tag}-{i}") for i in todo]
    index_of = {f.key: i for f, i in zip(futures, todo)}
    try:
        for fut in as_completed(futures):
            collect(fut.result(), index_of[fut.key])
    except BaseException:
        client.cancel(futures)
        raise
