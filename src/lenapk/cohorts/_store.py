"""A cohort on disk: a Parquet dataset directory that a rerun resumes.

``out`` holds ``chunk-000000.parquet``, ... (each written to a temporary file and renamed) and
``_cohort.json``, the manifest of the arguments.  A run restarted with the same arguments
computes only the missing chunks; a directory made with other arguments is refused with an error
naming the differing arguments.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import warnings
from pathlib import Path

import equinox as eqx
import jax
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .._version import __version__
from ..endpoints import RESPONSE_DTYPE
from ._spec import CohortSpec

MANIFEST = "_cohort.json"
FORMAT_VERSION = 2


def chunk_file(index: int) -> str:
    """File name of chunk ``index`` in a cohort dataset directory."""
    return f"chunk-{index:06d}.parquet"


def write_atomic(path: Path, df: pd.DataFrame) -> None:
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


def normalize(df: pd.DataFrame) -> pd.DataFrame:
    """The same dtypes whether a frame was built in memory or read back from Parquet."""
    if "best_response" in df:
        df["best_response"] = df["best_response"].astype(str).astype(RESPONSE_DTYPE)
    return df


def read_cohort(out: str | os.PathLike) -> pd.DataFrame:
    """Read a complete cohort dataset directory (written by :func:`lenapk.cohort`) in patient order."""
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
    return normalize(pd.concat([pd.read_parquet(out / chunk_file(i)) for i in range(n_chunks)], ignore_index=True))


def digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, (np.ndarray, jax.Array)):
            arr = np.ascontiguousarray(np.asarray(p))
            h.update(f"{arr.dtype.str}{arr.shape}".encode())
            h.update(arr.tobytes())
        else:
            h.update(repr(p).encode())
    return h.hexdigest()


def tree_digest(obj) -> str:
    leaves, treedef = jax.tree_util.tree_flatten(obj)
    return digest(str(treedef), *[np.asarray(x) if eqx.is_array_like(x) else x for x in leaves])


def _regimen_record(spec: CohortSpec) -> dict:
    regs = [spec.regimen] if spec.regimen is not None else list(spec.regimens)
    events = [
        part
        for r in regs
        for part in (
            np.asarray(r.time_h, dtype=float),
            np.asarray(r.amount_mg),
            "|".join(r.compartment),
            np.asarray(r.duration_h, dtype=float),
        )
    ]
    return {
        "name": regs[0].name if spec.regimen is not None else f"{len(regs)} per-patient regimens",
        "cycle_days": spec.cycle_days,
        "n_days": spec.n_days,
        "events_sha256": digest(*events),
    }


def arguments(spec: CohortSpec) -> dict:
    """The arguments that define the results, JSON-ready (compared on resume)."""
    return {
        "model": f"{type(spec.model).__module__}.{type(spec.model).__qualname__}#{tree_digest(spec.model)[:16]}",
        "regimen": _regimen_record(spec),
        "n": spec.n,
        "seed": spec.seed,
        "setting": spec.setting if spec.patients is None else None,
        "patients_sha256": None
        if spec.patients is None
        else digest(list(spec.patients.columns), pd.util.hash_pandas_object(spec.patients, index=False).to_numpy()),
        "params": {k: float(v) for k, v in sorted(spec.typical.values.items())},
        "rules": None if spec.rules is None else f"{type(spec.rules).__qualname__}#{tree_digest(spec.rules)}",
        "settings": {
            "rtol": spec.settings.rtol,
            "atol": spec.settings.atol,
            "max_steps": spec.settings.max_steps,
            "dt0": spec.settings.dt0,
            "clock": None if spec.settings.clock is None else vars(spec.settings.clock),
            "error_norm": spec.settings.error_norm,
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


def prepare_dir(out: Path, spec: CohortSpec, overwrite: bool) -> set[int]:
    """Create or check the dataset directory; return the indices of chunks already done."""
    args = arguments(spec)
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
