"""XLA CPU set-up for cohorts: one JAX device per core and code-generation flags.

JAX reads ``XLA_FLAGS`` once, when its CPU backend starts (at the first array created), so
:func:`set_host_device_count` takes effect only before that.  ``import lenapk`` calls it when
JAX has not started yet (:func:`setup_at_import`); when JAX had started, the cohort entry points
warn once with the fix (:func:`warn_if_cores_idle`).
"""

from __future__ import annotations

import os
import warnings
from importlib.metadata import PackageNotFoundError, version

#: ``LENAPK_CPU_SETUP=0`` leaves ``XLA_FLAGS`` as it is at ``import lenapk`` (and silences the
#: warning of :func:`warn_if_cores_idle`).
SETUP_ENV = "LENAPK_CPU_SETUP"
_COUNT_FLAG = "--xla_force_host_platform_device_count"
_warned = False  # warn_if_cores_idle has warned in this process

CPU_TUNING_FLAGS: tuple[tuple[str, tuple[int, int] | None], ...] = (
    # LLVM's default on AVX-512 cores is 256-bit vectors; 512 made cohorts 7% faster.
    ("--xla_cpu_prefer_vector_width=512", None),
    # XLA's older loop emitters compile the solver's while-loop body to faster code: cohorts
    # 20% faster on jaxlib 0.10.2.
    ("--xla_cpu_use_fusion_emitters=false", (0, 10)),
    # XLA CPU runs a while loop as a sequence of small kernels ("thunks"), dispatched one by one
    # (and handed between threads) at every iteration: most of an adaptive solver step's cost for
    # one patient.  Its SmallWhileLoopHoistingPass compiles a loop that accesses fewer bytes than
    # this threshold into one function instead; at 1e9 that is every loop of a solve.  On jaxlib
    # 0.10.2: one patient's simulate 8x less CPU time (the solve alone 30x), cohorts about 1.25x
    # (benchmarks/HISTORY.md); results agree to rounding (2e-14 relative).
    ("--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=1000000000", (0, 10)),
)


def _jaxlib_minor() -> tuple[int, int] | None:
    try:
        major, minor = version("jaxlib").split(".")[:2]
        return int(major), int(minor)
    except (PackageNotFoundError, ValueError):
        return None


def set_host_device_count(n: int | None = None, *, tune: bool = True) -> int:
    """Set up JAX's CPU backend for cohorts: ``n`` CPU devices (default: one per core of this
    process's CPU set) so that :func:`lenapk.cohort` solves blocks on all cores, as
    ``numpyro.set_host_device_count`` does, and, with ``tune``, the code-generation flags of
    :data:`CPU_TUNING_FLAGS` (on the 2-core benchmark machine cohorts about 1.5x and one patient
    about 8x faster than XLA's defaults; the same results to rounding).

    It sets ``XLA_FLAGS=--xla_force_host_platform_device_count=n`` (a count already there is
    replaced) plus each tuning flag that suits the installed jaxlib and that ``XLA_FLAGS`` does
    not already set (the user's own value stays).  Takes effect only if called before JAX starts
    its CPU backend (before the first array is created).  Returns ``n``."""
    if n is None:
        n = _cores()
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_host_device_count: n must be a positive integer, got {n!r}")
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(_COUNT_FLAG)]
    flags.append(f"{_COUNT_FLAG}={n}")
    if tune:
        given = {f.split("=")[0] for f in flags}
        jaxlib_minor = _jaxlib_minor()
        flags += [
            f for f, only_on in CPU_TUNING_FLAGS if only_on in (None, jaxlib_minor) and f.split("=")[0] not in given
        ]
    os.environ["XLA_FLAGS"] = " ".join(flags)
    return n


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _setup_disabled() -> bool:
    return os.environ.get(SETUP_ENV, "1").strip().lower() in ("0", "false", "no", "off")


def _backend_started() -> bool:
    """Whether JAX has started a backend (then ``XLA_FLAGS`` is read already); True if unknown."""
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):
        return True


def _user_device_count() -> int | None:
    """The device count ``XLA_FLAGS`` already sets, if any (the last one wins, as in XLA)."""
    given = [f for f in os.environ.get("XLA_FLAGS", "").split() if f.startswith(_COUNT_FLAG + "=")]
    try:
        return int(given[-1].split("=", 1)[1]) if given else None
    except ValueError:
        return None


def setup_at_import() -> bool:
    """Called by ``import lenapk``: when JAX has not started yet, :func:`set_host_device_count`
    (one CPU device per core and the tuning flags), so that cohorts use every core with no call
    from the user.  A device count already in ``XLA_FLAGS`` is kept; ``LENAPK_CPU_SETUP=0``
    turns this off.  Returns whether ``XLA_FLAGS`` was set."""
    if _setup_disabled() or _backend_started():
        return False
    set_host_device_count(_user_device_count())
    return True


def warn_if_cores_idle(who: str) -> None:
    """Warn once per process when JAX runs on the CPU with fewer devices than cores (JAX started
    before ``import lenapk`` could give it one device per core), with the exact fix."""
    global _warned
    if _warned or _setup_disabled() or _user_device_count() is not None:
        return
    import jax

    if jax.default_backend() != "cpu":
        return
    devices, cores = jax.local_device_count(), _cores()
    if devices < cores:
        _warned = True
        warnings.warn(
            f"{who}: JAX has {devices} CPU device(s) for {cores} cores, so cohorts use {devices} of them: JAX "
            "started before lenapk could set its device count.  Fix: import lenapk before running anything in "
            "JAX, or call lenapk.set_host_device_count() first, or start Python with "
            f"XLA_FLAGS={_COUNT_FLAG}={cores}.  (LENAPK_CPU_SETUP=0 silences this.)",
            RuntimeWarning,
            stacklevel=3,
        )
