"""Virtual cohorts at scale: blocks solved as one ODE, rounds over JAX devices, chunks written
to a Parquet dataset that a rerun resumes, optionally as Dask tasks.

Results are exact under chunking, device count and scheduler (blocks hold fixed global
patients); see :func:`cohort`.
"""

from ._platform import CPU_TUNING_FLAGS, set_host_device_count
from ._run import cohort, cohort_dask
from ._spec import DEFAULT_BLOCK_SIZE, DEFAULT_CHUNK_SIZE, CohortSpec
from ._store import MANIFEST, chunk_file, read_cohort

__all__ = [
    "CPU_TUNING_FLAGS",
    "CohortSpec",
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_CHUNK_SIZE",
    "MANIFEST",
    "chunk_file",
    "cohort",
    "cohort_dask",
    "read_cohort",
    "set_host_device_count",
]
