"""lenapk vs scipy (LSODA) vs libroadrunner (CVODE) on the lenalidomide-CLL model.

    python benchmarks/run.py            # the standard run (about 10 min on a 2-core CPU)
    python benchmarks/run.py --quick    # smaller cohorts and subsamples (about 4 min)
    python benchmarks/run.py --full     # also 100,000 patients (not estimated from chunks)

Times are wall-clock and process CPU time, best of a few repeats after compilation, each repeat
over at least 0.25 s of calls (:func:`best_of`; compile times are reported separately; the
``vmap`` row, the scale rows and scipy's cohort subsample are single runs).  Everything runs in
this one process (one JAX CPU device) except the 2-device run, which needs its device count set
before jax starts and therefore runs in a subprocess
(``python benchmarks/run.py --shard-worker N``).  Both use ``lenapk.set_host_device_count``'s
CPU code-generation flags unless ``--cpu-untuned`` is given.  The one-patient timings are also
taken in a subprocess pinned to one core (``--one-core-worker``), with the cohort in chunks there at
several rtols for the accuracy-matched rows (lenapk at the largest rtol as close to a tight solve
as libroadrunner).  Writes every number to
``benchmarks/results_table.json`` (or ``--out``) and then ``RESULTS.md`` from it
(``results_page.py``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# One JAX CPU device here and two in the --shard-worker subprocess, with the CPU code-generation
# flags that lenapk.set_host_device_count gives cohorts (unless --cpu-untuned); before jax starts.
import lenapk  # noqa: E402  (importing jax does not start its backend)

lenapk.set_host_device_count(2 if "--shard-worker" in sys.argv else 1, tune="--cpu-untuned" not in sys.argv)
if "--one-core-worker" in sys.argv:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # before JAX creates its threads

DAYS = 672  # 24 cycles of 28 days
CHUNK = 64  # a block whose step buffers (7 stages x 19 states x 64 x 8 B) stay in L2
ONE_CORE_COHORT = 1024  # the first patients of the cohort, in whole chunks, for the pinned worker
PINNED = "pinned to one core"  # in the label of every row timed in the one-core worker
MATCH_RTOLS = (1e-6, 5e-7, 2.5e-7, 1.25e-7)  # the pinned chunks' rtols, for the accuracy-matched row
ONE_RTOLS = (1e-6, 1e-7, 1e-8, 1e-9)  # the pinned one-patient rtols, for its accuracy-matched row


def matched_settings(rtol: float):
    """Solver settings at ``rtol`` with atol in the common ratio (1e-6 / 1e-8)."""
    from lenapk._core import SolverSettings

    return SolverSettings(rtol=rtol, atol=rtol * ATOL / RTOL)


RTOL, ATOL = 1e-6, 1e-8
BSV_NAMES = ("cl", "v", "ka", "ec50_n", "kill", "growth")


# ----------------------------------------------------------------------------- helpers
class Timing:
    """Wall-clock and process CPU seconds of one call (CPU time sums all threads of this
    process; on a shared, contended machine it is the steadier number for single-threaded
    code, and CPU > wall shows multi-threading)."""

    def __init__(self, wall, cpu):
        self.wall, self.cpu = wall, cpu

    def __truediv__(self, n):
        return Timing(self.wall / n, self.cpu / n)

    def __mul__(self, k):
        return Timing(self.wall * k, self.cpu * k)

    def __sub__(self, other):
        return Timing(self.wall - other.wall, self.cpu - other.cpu)


def timed(fn):
    """(Timing, result) of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return Timing(time.perf_counter() - w0, time.process_time() - c0), out


def best_of(fn, repeats, min_s=0.25):
    """(best Timing by wall time, last result) of ``repeats`` timings of ``fn``, each the mean of
    enough consecutive calls to last at least ``min_s`` (timed one call at a time, a loop of a
    few ms showed a process CPU time 15% below its wall time, single-threaded).  A first call that
    takes ``min_s`` or more is the first repeat; a shorter one only sets the number of calls."""
    t, out = timed(fn)
    calls = 1 if t.wall >= min_s else math.ceil(min_s / max(t.wall, 1e-6))
    best = t if calls == 1 else None
    for _ in range(repeats - 1 if calls == 1 else repeats):
        t, out = timed(lambda: [fn() for _ in range(calls)][-1])
        t = t / calls
        if best is None or t.wall < best.wall:
            best = t
    return best, out


def aot(fn, *args):
    """Compile ``jax.jit(fn)`` ahead of time for ``args``, then run it once: (compile Timing, run
    Timing, result).  One timed run, so that the whole benchmark stays within ~10 minutes."""
    import jax

    t_comp, compiled = timed(lambda: jax.jit(fn).lower(*args).compile())
    t_run, out = timed(lambda: jax.block_until_ready(compiled(*args)))
    return t_comp, t_run, out


def log(msg=""):
    print(msg, flush=True)


def ms(t):
    return f"{t * 1e3:.0f} ms" if t < 10 else f"{t:.0f} s"


def machine_info():
    import diffrax
    import jax
    import roadrunner
    import scipy

    model = "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gb, 1),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "diffrax": diffrax.__version__,
        "scipy": scipy.__version__,
        "libroadrunner": roadrunner.__version__,
        "numpy": np.__version__,
        "jax_backend": jax.default_backend(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "loadavg_start": os.getloadavg(),
    }


def cohort_params(model, n, seed=0):
    """Typical parameters with log-normal between-patient variability on cl, v, ka, ec50_n, kill,
    growth (omega2 from the model's ParameterSpecs; the model's cl-v covariance included), drawn
    with numpy seed 0.  Per-patient arrays of shape (n,); alc0 is also given per patient (its
    typical value) so that the initial state has the batch shape (see the note on
    ``solve_days`` in HISTORY.md)."""
    import jax.numpy as jnp

    specs = {s.name: s for s in model.parameter_specs}
    omega = np.diag([specs[k].omega2 for k in BSV_NAMES])
    for (a, b), cov in model.omega_covariances.items():
        if a in BSV_NAMES and b in BSV_NAMES:
            i, j = BSV_NAMES.index(a), BSV_NAMES.index(b)
            omega[i, j] = omega[j, i] = cov
    eta = np.random.default_rng(seed).multivariate_normal(np.zeros(len(BSV_NAMES)), omega, size=n)
    vals = {k: specs[k].value * np.exp(eta[:, i]) for i, k in enumerate(BSV_NAMES)}
    vals["alc0"] = np.full(n, specs["alc0"].value)
    base = model.default_params()
    return base.replace(**{k: jnp.asarray(v) for k, v in vals.items()}), vals


def take(params, idx):
    """Patients ``idx`` of a batched ParameterSet (scalar entries kept)."""
    import jax.numpy as jnp

    return params.replace(**{k: jnp.asarray(np.asarray(v)[idx]) for k, v in params.values.items() if np.ndim(v) == 1})


def one_patient(params, i):
    """Patient i of a batched ParameterSet as a scalar ParameterSet."""
    return take(params, int(i))


def rel_err(a, b):
    """Max relative difference |a - b| / |b| over all entries of PD final states (states on axis
    0).  The log-scale states ``ig_capacity`` and ``log_nodes`` (0 at baseline; they may cross 0)
    are compared by their difference relative to max(|b|, 1): near 0 that is the relative
    difference of exp(state), far below it (a node burden cleared to e^-300) the state's own."""
    from lenapk import LenalidomideCLL

    a, b = np.asarray(a, float), np.asarray(b, float)
    scale = np.abs(b)
    for name in ("ig_capacity", "log_nodes"):
        i = LenalidomideCLL.state_names.index(name)
        scale[i] = np.maximum(scale[i], 1.0)
    return float(np.max(np.abs(a - b) / scale))


def make_profiled_solver(model):
    """The day loop of lenapk.solve.solve_days (same term, solver, controller, dt0, tolerances and,
    for a batch, the same log-linear clock on dose days) without the observables, returning
    diffrax's step statistics per day."""
    import diffrax
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from lenapk._core import SolverSettings
    from lenapk._core._error_norm import error_norm

    settings = SolverSettings()  # the package default (rtol, atol, dt0, max steps, clock)

    @eqx.filter_jit
    def run(p, planned):
        bs = planned.shape[:-1]
        clock = settings.clock if bs else None  # as lenapk.solve: one patient alone in time itself
        c = model.derive(p)
        pkc = model.pk_constants(p)
        y0 = jnp.broadcast_to(model.initial_state(c), (model.n_states,) + bs)

        def f(u, y, args):
            pk, clocked = args
            t, speed = u, 1.0
            if clock is not None:
                t_clock, speed_clock = clock.time_and_speed(u, 24.0)
                t, speed = jnp.where(clocked, t_clock, u), jnp.where(clocked, speed_clock, 1.0)
            return model.rhs(t, y, model.pk.concentration(pk, 24.0 * t, pkc), c) * speed

        def to_variable(t, clocked):
            return t if clock is None else jnp.where(clocked, clock.clock(t, 24.0), t)

        def day(carry, dose):
            y, pk = carry
            pkd = pk.at[0].add(dose)
            clocked = jnp.any(dose > 0)
            max_step = None if clock is None else jnp.where(clocked, clock.max_step(), jnp.inf)
            ctrl = diffrax.PIDController(
                rtol=settings.rtol, atol=settings.atol, norm=error_norm(settings.error_norm), dtmax=max_step
            )
            sol = diffrax.diffeqsolve(
                diffrax.ODETerm(f),
                diffrax.Tsit5(),
                0.0,
                to_variable(1.0, clocked),
                to_variable(settings.dt0, clocked),
                y,
                args=(pkd, clocked),
                saveat=diffrax.SaveAt(t1=True),
                stepsize_controller=ctrl,
                max_steps=settings.max_steps,
                throw=False,
            )
            st = (sol.stats["num_accepted_steps"], sol.stats["num_rejected_steps"])
            return (sol.ys[-1], model.pk.advance(pkd, 24.0, pkc)), st

        (yf, _), st = jax.lax.scan(day, (y0, jnp.zeros((2,) + bs)), jnp.moveaxis(planned, -1, 0))
        return yf, st

    return run


def vector_field(model, params, batch_shape=()):
    """``(f, y0)``: the vector field ``f(t, y)`` of the model (closed-form concentration after a
    10 mg dose into the depot + ``model.rhs``) and its initial state, broadcast to
    ``(n_states,) + batch_shape`` (``params`` scalar or with that batch shape)."""
    import jax.numpy as jnp

    c = model.derive(params)
    pkc = model.pk_constants(params)
    init = model.initial_state(c)
    init = init.reshape(init.shape + (1,) * (1 + len(batch_shape) - init.ndim))
    y0 = jnp.broadcast_to(init, (model.n_states,) + batch_shape)
    pk = jnp.stack([jnp.full(batch_shape, 10.0), jnp.zeros(batch_shape)])
    return (lambda t, y: model.rhs(t, y, model.pk.concentration(pk, 24.0 * t, pkc), c)), y0


def rhs_loop(model, params, batch_shape, reps=400, with_rhs=True):
    """A compiled loop of ``reps`` evaluations of :func:`vector_field` with a data dependence so
    nothing is hoisted, as a call with no arguments; with ``with_rhs=False`` the same loop without
    the evaluation (its update ``y + 1e-9 y`` only)."""
    import jax

    f, y0 = vector_field(model, params, batch_shape)

    @jax.jit
    def loop(y):
        def body(i, y):
            t = 0.02 * (i % 50)
            return y + 1e-9 * (f(t, y) if with_rhs else y)

        return jax.lax.fori_loop(0, reps, body, y)

    return lambda: jax.block_until_ready(loop(y0))


def rhs_eval_time(model, params, batch_shape, reps=400) -> Timing:
    """Wall and CPU seconds per evaluation of the vector field (:func:`rhs_loop`)."""
    run = rhs_loop(model, params, batch_shape, reps)
    run()
    best, _ = best_of(run, 5)
    return best / reps


# operations whose cost rhs_op_costs times per element (a jaxpr primitive, or lenapk's fastmath.log)
COSTLY_OPS = ("exp", "expm1", "logistic", "log", "log1p", "fastmath.log", "pow", "sqrt", "rsqrt", "tanh", "erf", "div")
# operations of a few cycles per element at most (arithmetic, comparisons, selection, data movement)
CHEAP_OPS = frozenset(
    "mul add sub neg max min abs sign select_n lt le gt ge eq ne and or not convert_element_type slice "
    "squeeze broadcast_in_dim reshape concatenate stack integer_pow square copy".split()
)


def count_ops(fn, *args) -> dict:
    """Primitives of the jaxpr of ``fn(*args)`` that depend on the arguments, by name, counting into
    nested ``jit`` jaxprs: operations on closed-over constants alone are left out (XLA folds or
    hoists them out of a solver's loop).  A custom-JVP function is counted once under its name
    (``fastmath.log`` for lenapk's logarithm), not its body.  Control flow whose body is not
    walked (cond, while, scan) is counted under ``"<name> (body not counted)"``."""
    import jax
    from jax.extend.core import Var

    counts: dict = {}

    def add(key):
        counts[key] = counts.get(key, 0) + 1

    def walk(jaxpr, live_in):
        live = {v for v, is_live in zip(jaxpr.invars, live_in) if is_live}
        for eqn in jaxpr.eqns:
            used = [isinstance(v, Var) and v in live for v in eqn.invars]
            if not any(used):
                continue
            live.update(eqn.outvars)
            name = eqn.primitive.name
            if name == "custom_jvp_call":
                src = (eqn.params["call_jaxpr"].jaxpr.debug_info.func_src_info or "?").split()
                add(f"fastmath.{src[0]}" if "fastmath" in " ".join(src) else f"custom {src[0]}")
            elif name in ("jit", "pjit"):
                add(name)
                walk(eqn.params["jaxpr"].jaxpr, used)
            elif any(k in eqn.params for k in ("jaxpr", "branches", "body_jaxpr", "call_jaxpr")):
                add(f"{name} (body not counted)")
            else:
                add(name)

    closed = jax.make_jaxpr(fn)(*args)
    walk(closed.jaxpr, [True] * len(closed.jaxpr.invars))
    return counts


def op_loop_time(op, width=64, reps=20_000) -> float:
    """CPU seconds per element of a dependent loop ``x + 1e-12 op(x)`` over a float64 vector of
    ``width`` (as in the batched right-hand side), the loop's own update included."""
    import jax
    import jax.numpy as jnp

    loop = jax.jit(lambda x: jax.lax.fori_loop(0, reps, lambda i, x: x + 1e-12 * op(x), x))  # x stays in [0.5, 2]
    x = jnp.linspace(0.5, 2.0, width)
    jax.block_until_ready(loop(x))
    best, _ = best_of(lambda: jax.block_until_ready(loop(x)), 3)
    return best.cpu / (reps * width)


def rhs_op_costs(model, params, width=64) -> dict:
    """The right-hand side's operations per patient-evaluation (:func:`count_ops` of the vector
    field for ``width`` patients) and the CPU time per element of those of :data:`COSTLY_OPS` it
    has, each timed alone at that width (:func:`op_loop_time`, less the loop without the
    operation); ``costly_s`` is their sum,
    ``other`` the operations neither costly nor in :data:`CHEAP_OPS` (not timed)."""
    import jax
    import jax.numpy as jnp
    import jax.scipy.special as jsp

    from lenapk._core import fastmath

    f, y0 = vector_field(model, params, (width,))
    counts = count_ops(lambda y, t: f(t, y), y0, 0.3)
    ops = {
        "exp": jnp.exp,
        "expm1": jnp.expm1,
        "logistic": jax.nn.sigmoid,
        "log": jnp.log,
        "log1p": jnp.log1p,
        "fastmath.log": fastmath.log,
        "pow": lambda x: x**1.3,
        "sqrt": jnp.sqrt,
        "rsqrt": jax.lax.rsqrt,
        "tanh": jnp.tanh,
        "erf": jsp.erf,
        "div": lambda x: 1.0 / (x + 1.0),
    }
    timed_ops = [k for k in COSTLY_OPS if counts.get(k)]
    ops["multiply-add"] = lambda x: x * 1.0001 + 0.3
    loop_alone = op_loop_time(lambda x: x, width)
    per_element = {k: op_loop_time(ops[k], width) - loop_alone for k in [*timed_ops, "multiply-add"]}
    return {
        "width": width,
        "counts": counts,
        "per_element_s": per_element,
        "costly_s": sum(counts[k] * per_element[k] for k in timed_ops),
        "other": {k: n for k, n in counts.items() if k not in COSTLY_OPS and k not in CHEAP_OPS and k != "jit"},
    }


def subsample(n_cohort: int, size: int) -> np.ndarray:
    """The cohort patients the peers solve (sorted indices, numpy seed 1)."""
    return np.sort(np.random.default_rng(1).choice(n_cohort, size=size, replace=False))


WORKER_ROUNDS = 3  # rounds of the one-core worker's timings; each job's best round is kept
RHS_REPS = 400  # evaluations of the vector field per call of rhs_loop


def interleaved_best(jobs: dict, rounds: int) -> dict:
    """The best :class:`Timing` of each of ``jobs`` (name -> callable, already warm) over
    ``rounds`` rounds in which every job is timed once (:func:`best_of`, one repeat) in turn, so
    that a slow spell of a shared machine falls on every job alike rather than on whichever was
    timed then."""
    best = {}
    for _ in range(rounds):
        for name, fn in jobs.items():
            t, _ = best_of(fn, 1)
            if name not in best or t.wall < best[name].wall:
                best[name] = t
    return best


def one_core_worker(sub: np.ndarray, rr_dosing: str, n_rr: int):
    """Runs in a subprocess pinned to one core (``os.sched_setaffinity`` before JAX starts, as
    ``taskset -c 0``): the one-patient timings without XLA's hand-offs between threads, the
    cohort in chunks at each rtol of MATCH_RTOLS, with the final states of the ``sub`` patients,
    and libroadrunner (dosing ``rr_dosing``) on the typical patient and the first ``n_rr`` of
    ``sub``, all on the same core and interleaved (:func:`interleaved_best`)."""
    import jax
    import peers

    from lenapk._core import solve_days_jit

    model = lenapk.LenalidomideCLL()
    p = model.default_params()
    regimen = lenapk.load_regimens()["rr_10_to_25_cont"]
    pl = jax.numpy.asarray(regimen.doses)
    params, _ = cohort_params(model, ONE_CORE_COHORT)  # the cohort of the main process, in chunks of CHUNK
    pl_c = jax.numpy.broadcast_to(pl, (CHUNK, DAYS))
    chunks = [take(params, np.arange(s, s + CHUNK)) for s in range(0, ONE_CORE_COHORT, CHUNK)]
    rrp = peers.RoadRunnerPeer(np.asarray(regimen.doses), dosing=rr_dosing, rtol=RTOL, atol=ATOL)
    c_typ = peers.constants(p, model)
    cs = [peers.constants(one_patient(params, i), model) for i in sub[:n_rr]]

    def simulate_job(settings):
        return lambda: lenapk.simulate(regimen, p, settings=settings)

    def chunks_job(settings):
        return lambda: jax.block_until_ready(
            [solve_days_jit(model, c, pl_c, settings=settings).final_state for c in chunks]
        )

    jobs = {
        "simulate": lambda: lenapk.simulate(regimen, p),
        "solve_days_jit": lambda: jax.block_until_ready(solve_days_jit(model, p, pl).final_state),
        **{f"simulate {rtol!r}": simulate_job(matched_settings(rtol)) for rtol in ONE_RTOLS},
        **{f"chunks {rtol!r}": chunks_job(matched_settings(rtol)) for rtol in MATCH_RTOLS},
        "libroadrunner": lambda: rrp.simulate(c_typ),
        "libroadrunner cohort": lambda: [rrp.simulate(c) for c in cs],
        "rhs": rhs_loop(model, chunks[0], (CHUNK,), RHS_REPS),
        "rhs loop alone": rhs_loop(model, chunks[0], (CHUNK,), RHS_REPS, with_rhs=False),
    }
    outputs = {name: fn() for name, fn in jobs.items()}  # compiles; the chunks' final states
    best = interleaved_best(jobs, WORKER_ROUNDS)
    sim_by_rtol = {
        repr(rtol): {
            "time": vars(best[f"simulate {rtol!r}"]),
            # the solve simulate runs
            "final": np.asarray(solve_days_jit(model, p, pl, settings=matched_settings(rtol)).final_state).tolist(),
        }
        for rtol in ONE_RTOLS
    }
    by_rtol = {
        repr(rtol): {
            "time": vars(best[f"chunks {rtol!r}"] / ONE_CORE_COHORT),
            "final_sub": np.concatenate([np.asarray(f) for f in outputs[f"chunks {rtol!r}"]], axis=-1)[:, sub].tolist(),
        }
        for rtol in MATCH_RTOLS
    }
    out = {
        "simulate": vars(best["simulate"]),
        "solve_days_jit": vars(best["solve_days_jit"]),
        "chunks": by_rtol[repr(MATCH_RTOLS[0])]["time"],
        "chunks_by_rtol": by_rtol,
        "simulate_by_rtol": sim_by_rtol,
        "libroadrunner": {
            "one_patient": vars(best["libroadrunner"]),
            "per_cohort_patient": vars(best["libroadrunner cohort"] / len(cs)),
        },
        "rhs_eval_per_patient_s": (best["rhs"].cpu - best["rhs loop alone"].cpu) / (RHS_REPS * CHUNK),
    }
    print("ONE_CORE_RESULT " + json.dumps(out), flush=True)


def step_cost(model, params):
    """Floating-point operations of one Tsit5 step for one patient: 6 evaluations of the vector
    field (closed-form concentration + ``model.rhs``; counted by XLA's cost analysis) plus the
    Runge-Kutta linear combinations over the ``n`` states, counted from the tableau: 21
    multiply-adds for the stages, 7 for the solution and 7 for the error estimate (2 FLOP each),
    and the scaled error norm (3 per state: divide, square, add).  XLA's analysis of a whole
    diffrax step is not used: it counts the body of the stage loop once."""
    import jax

    f, y0 = vector_field(model, params)
    ca = jax.jit(lambda y, t: f(t, y)).lower(y0, 0.3).compile().cost_analysis()
    ca = ca[0] if isinstance(ca, list) else ca
    rhs_flops, rhs_trans = float(ca.get("flops", 0.0)), float(ca.get("transcendentals", 0.0))
    n = model.n_states
    return {
        "rhs_flops": rhs_flops,
        "rhs_transcendentals": rhs_trans,
        "step_flops": 6 * rhs_flops + 2 * n * (21 + 7 + 7) + 3 * n,
        "step_transcendentals": 6 * rhs_trans,
    }


def accuracy_matched(by_rtol: dict, error, limit: float):
    """``(rtol, error, Timing)`` of the largest rtol (the dict's keys, largest first) whose final
    states are within ``limit`` of a tight solve (``error(entry)``), or None; and every error."""
    errors = {float(k): error(v) for k, v in by_rtol.items()}
    for k, v in by_rtol.items():
        if errors[float(k)] <= limit:
            return (float(k), errors[float(k)], Timing(**v["time"])), errors
    return None, errors


def matched_row(section: str, label: str, matched, rr_err: float) -> tuple:
    """A row of the page for an :func:`accuracy_matched` result: ``label`` at its rtol."""
    rtol, err, t = matched
    return (section, f"{label}, rtol {rtol:g}", t, f"accuracy-matched: error {err:.1e}, libroadrunner's {rr_err:.1e}")


def batch_target(
    t_rr: Timing, rr_pinned: dict | None, best_label: str, best: Timing, matched, rr_err: float, rhs_alone: dict
) -> dict:
    """The batch target, judged on the accuracy-matched row (final states at most as far from a
    tight solve as libroadrunner's; timed in the one-core worker, against libroadrunner on the same
    core, ``rr_pinned``), with the fastest row at the common rtol (against libroadrunner timed as
    that row was) and the ratio of the right-hand-side evaluations alone (``rhs_alone``, from the
    profile) beside it.  ``rr_pinned`` is None when the one-core worker failed."""
    ref = rr_pinned["per_cohort_patient"] if rr_pinned is not None and PINNED in best_label else t_rr
    at_common = (
        f"at the common rtol 1e-6: {ref.cpu / best.cpu:.1f}x CPU, {ref.wall / best.wall:.1f}x wall ({best_label}); "
        "the right-hand-side evaluations of these steps alone, with no solver cost between them: "
        + ", ".join(f"{v['vs_rr_cpu']:.0f}x ({k})" for k, v in rhs_alone.items())
    )
    target = "batch: >= 50x libroadrunner per patient in CPU time, as accurate as libroadrunner"
    if rr_pinned is None:
        return {
            "target": target,
            "measured": f"the one-core worker failed (no accuracy-matched run); {at_common}",
            "met": False,
        }
    if matched is None:
        return {
            "target": target,
            "measured": f"no rtol of {MATCH_RTOLS} reached libroadrunner's error {rr_err:.1e}; {at_common}",
            "met": False,
        }
    rtol, err, t = matched
    rr = rr_pinned["per_cohort_patient"]
    return {
        "target": target,
        "measured": f"{rr.cpu / t.cpu:.1f}x CPU, {rr.wall / t.wall:.1f}x wall (chunks of {CHUNK} at rtol {rtol:g}: error "
        f"{err:.1e}, libroadrunner's {rr_err:.1e}; both {PINNED}); {at_common}",
        "met": rr.cpu / t.cpu >= 50,
    }


def rhs_alone(profile: dict, one_core: dict | None, rr_pinned: dict | None) -> dict:
    """For each batched case of the profile: the CPU time per patient of its right-hand-side
    evaluations alone (their number there, times one evaluation of a chunk timed in the one-core
    worker, the loop's own update subtracted), and libroadrunner's CPU time per cohort patient on
    the same core over it: the ratio a solver taking these steps would reach if its own work
    between evaluations cost nothing.  Empty when the one-core worker failed."""
    if one_core is None:
        return {}
    per_eval = one_core["rhs_eval_per_patient_s"]
    out = {}
    for k, v in profile.items():
        if k == "n=1":
            continue
        cpu = v["rhs_evals"] * per_eval
        out[k] = {
            "evals_per_patient": v["rhs_evals"],
            "eval_cpu_s": per_eval,
            "cpu_per_patient_s": cpu,
            "vs_rr_cpu": rr_pinned["per_cohort_patient"].cpu / cpu,
        }
    return out


def peak_gflops(cores):
    """Double-precision peak from /proc/cpuinfo: cores x clock x FLOP/cycle, with two FMA units
    per core of 8 doubles (AVX-512) or 4 (AVX2): 32 or 16 FLOP/cycle."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    mhz = next((float(x.split(":")[1]) for x in info.splitlines() if x.startswith("cpu MHz")), 2000.0)
    per_cycle, isa = (32, "AVX-512") if " avx512f" in info else (16, "AVX2")
    ghz = mhz / 1000.0
    return cores * ghz * per_cycle, f"{cores} cores x {ghz:.1f} GHz x {per_cycle} FLOP/cycle (two {isa} FMA units)"


def flop_floor(model, params, batch_profile: dict, cores: int) -> dict:
    """Operations per patient of the batched solve (steps per patient from ``batch_profile``,
    :func:`step_cost` per step, a transcendental counted as 20 FLOP) and the time they take at
    the cores' peak (:func:`peak_gflops`)."""
    cost = step_cost(model, params)
    per_transcendental = 20  # a float64 exp/log in scalar code, roughly
    steps = (batch_profile["accepted_per_day"] + batch_profile["rejected_per_day"]) * DAYS
    flops = (cost["step_flops"] + per_transcendental * cost["step_transcendentals"]) * steps
    peak, note = peak_gflops(cores)
    log(
        f"\n## FLOP floor: {cost['step_flops']:.0f} flops + {cost['step_transcendentals']:.0f} transcendentals per "
        f"Tsit5 step; {flops / 1e6:.1f} MFLOP per patient; floor {1e3 * flops / (peak * 1e9):.2f} ms/patient "
        f"at {peak:.0f} GFLOP/s"
    )
    return {
        **cost,
        "flops_per_transcendental": per_transcendental,
        "steps_per_patient": steps,
        "flops_per_patient": flops,
        "peak_gflops": peak,
        "peak_note": note,
        "cores": cores,
        "floor_s": flops / (peak * 1e9),
    }


# ----------------------------------------------------------------------------- shard worker
def shard_worker(n: int):
    """Runs in a subprocess with 2 host devices: n patients, (a) on one device, (b) sharded over
    a 1-D mesh on the patient axis with NamedSharding (one ODE; the shared step is global: the
    error norm is reduced across devices every step), (c) shard_map: each device solves its half
    as its own batched ODE (own shared step, no per-step communication)."""
    import jax
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    import lenapk
    from lenapk._core import solve_days

    devices = jax.devices()
    model = lenapk.LenalidomideCLL()
    regimen = lenapk.load_regimens()["rr_10_to_25_cont"]
    params, _ = cohort_params(model, n)
    import jax.numpy as jnp

    planned = jnp.broadcast_to(regimen.doses, (n, DAYS))
    out = {"devices": len(devices), "n": n}

    def core(vals, planned):
        traj = solve_days(model, params.replace(**vals), planned)
        return traj.final_state, traj.day_obs, traj.ok

    per_patient = {k: v for k, v in params.values.items() if np.ndim(v) == 1}

    def run(fn, *args):
        t_comp, t, r = aot(fn, *args)
        return {"compile_s": t_comp.wall, "run_s": t.wall, "cpu_s": t.cpu}, r

    out["one_device"], ref = run(core, jax.device_put(per_patient, devices[0]), jax.device_put(planned, devices[0]))
    if len(devices) >= 2:
        mesh = Mesh(np.array(devices[:2]), ("p",))
        s_vals = jax.device_put(per_patient, NamedSharding(mesh, P("p")))
        s_pl = jax.device_put(planned, NamedSharding(mesh, P("p", None)))
        out["named_sharding"], r = run(core, s_vals, s_pl)
        out["named_sharding"]["max_rel_diff_vs_one_device"] = rel_err(r[0], ref[0])
        sm = jax.shard_map(
            core,
            mesh=mesh,
            in_specs=(P("p"), P("p", None)),
            out_specs=(P(None, "p"), P("p", None), P("p", None)),
            check_vma=False,  # diffrax's loop carries mix replicated and per-device values
        )
        out["shard_map"], r = run(sm, s_vals, s_pl)
        out["shard_map"]["max_rel_diff_vs_one_device"] = rel_err(r[0], ref[0])
    print("SHARD_RESULT " + json.dumps(out), flush=True)


# ----------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )  # the flags are read from sys.argv before parsing
    ap.add_argument("--quick", action="store_true", help="smaller cohorts and subsamples")
    ap.add_argument("--full", action="store_true", help="also run 100,000 patients")
    ap.add_argument("--out", default=str(HERE / "results_table.json"))
    ap.add_argument("--shard-worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--one-core-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--sub", default="[]", help=argparse.SUPPRESS)
    ap.add_argument("--rr-dosing", default="event", help=argparse.SUPPRESS)
    ap.add_argument("--n-rr", type=int, default=20, help=argparse.SUPPRESS)
    ap.add_argument(
        "--cpu-untuned",
        action="store_true",
        help="XLA's default CPU code generation (without CPU_TUNING_FLAGS of src/lenapk/cohorts/_platform.py)",
    )
    args = ap.parse_args()
    if args.shard_worker is not None:
        shard_worker(args.shard_worker)
        return
    if args.one_core_worker:
        one_core_worker(np.array(json.loads(args.sub), dtype=int), args.rr_dosing, args.n_rr)
        return

    t_start = time.perf_counter()
    import jax
    import jax.numpy as jnp
    import peers

    import lenapk
    from lenapk._core import SolverSettings, check_trajectory, solve_days, solve_days_jit

    quick = args.quick
    n_cohort = 200 if quick else 1000
    chunk = CHUNK
    n_sub_scipy = 3 if quick else 20
    n_sub_rr = 10 if quick else 20
    reps = 2 if quick else 3
    tight = SolverSettings(rtol=1e-11, atol=1e-13, max_steps=100000, dt0=1e-4)

    info = machine_info()
    log("# machine: " + json.dumps(info))
    model = lenapk.LenalidomideCLL()
    p = model.default_params()
    regimens = {
        "rr_10_to_25_cont": np.asarray(lenapk.load_regimens()["rr_10_to_25_cont"].doses),
        "const_10mg": np.full(DAYS, 10.0),
    }
    assert all(r.shape == (DAYS,) for r in regimens.values())
    doses = regimens["rr_10_to_25_cont"]
    res = {"machine": info, "quick": quick, "pd_states": model.n_states}
    rows = []  # (section, label, Timing per patient, note)

    # ------------------------------------------------------------------ accuracy: final states
    log("\n## Agreement of final states (typical patient, 672 days, rtol 1e-6 / atol 1e-8 everywhere)")
    c_typ = peers.constants(p, model)
    acc_rows = []
    for name, d in regimens.items():
        dj = jnp.asarray(d)
        ref = np.asarray(solve_days_jit(model, p, dj).final_state)
        tight_ref = np.asarray(solve_days_jit(model, p, dj, settings=tight).final_state)
        sp = peers.ScipyLSODA(RTOL, ATOL).simulate(c_typ, d)[-1, 2:]
        rr = peers.RoadRunnerPeer(d, rtol=RTOL, atol=ATOL).simulate(c_typ)[-1, 2:]
        rr_tight = peers.RoadRunnerPeer(d, rtol=1e-11, atol=1e-13).simulate(c_typ)[-1, 2:]
        row = {
            "regimen": name,
            "scipy_vs_lenapk": rel_err(sp, ref),
            "rr_vs_lenapk": rel_err(rr, ref),
            "lenapk_vs_tight": rel_err(ref, tight_ref),
            "scipy_vs_tight": rel_err(sp, tight_ref),
            "rr_vs_tight": rel_err(rr, tight_ref),
            "tight_lenapk_vs_tight_rr": rel_err(tight_ref, rr_tight),
        }
        acc_rows.append(row)
        if name == "rr_10_to_25_cont":
            tight_typ = tight_ref
        ok = row["scipy_vs_lenapk"] < 2e-4 and row["rr_vs_lenapk"] < 2e-4
        log(
            f"  {name}: max rel diff over the {model.n_states} PD states: scipy vs lenapk {row['scipy_vs_lenapk']:.1e}, "
            f"libroadrunner vs lenapk {row['rr_vs_lenapk']:.1e}  [{'OK' if ok else 'MISMATCH'} at ~1e-4]"
        )
        log(
            f"      each vs a tight reference (lenapk rtol 1e-11, which agrees with libroadrunner rtol 1e-11 "
            f"to {row['tight_lenapk_vs_tight_rr']:.1e}): lenapk {row['lenapk_vs_tight']:.1e}, "
            f"scipy {row['scipy_vs_tight']:.1e}, "
            f"libroadrunner {row['rr_vs_tight']:.1e}"
        )
    res["accuracy"] = acc_rows

    # ------------------------------------------------------------------ one patient
    log("\n## One patient, 24 cycles (672 days), regimen rr_10_to_25_cont")
    regimen = lenapk.load_regimens()["rr_10_to_25_cont"]
    t_first, _ = timed(lambda: lenapk.simulate(regimen, p))
    t_sim, _ = best_of(lambda: lenapk.simulate(regimen, p), reps)
    log(
        f"  lenapk simulate: first call {t_first.wall:.2f} s (compile ~{t_first.wall - t_sim.wall:.1f} s), "
        f"then {ms(t_sim.wall)} (CPU {ms(t_sim.cpu)})"
    )
    pl = jnp.asarray(doses)
    t_jit, _ = best_of(lambda: jax.block_until_ready(solve_days_jit(model, p, pl)), reps)
    log(f"  lenapk solve_days_jit: {ms(t_jit.wall)} (CPU {ms(t_jit.cpu)})")
    sp = peers.ScipyLSODA(RTOL, ATOL)
    t_sp, _ = best_of(lambda: sp.simulate(c_typ, doses), 1)
    log(f"  scipy LSODA: {ms(t_sp.wall)} (CPU {ms(t_sp.cpu)})")
    rr_times = {}
    for strategy in ("event", "loop", "events"):
        t_build, rrp = timed(lambda: peers.RoadRunnerPeer(doses, dosing=strategy, rtol=RTOL, atol=ATOL))
        rrp.simulate(c_typ)
        t, _ = best_of(lambda: rrp.simulate(c_typ), 1 if strategy == "events" else reps + 2)
        rr_times[strategy] = t
        log(f"  libroadrunner ({strategy}): {ms(t.wall)} (CPU {ms(t.cpu)}; SBML load+compile {t_build.wall:.2f} s)")
    rr_best = min(rr_times, key=lambda k: rr_times[k].cpu)
    t_rr = rr_times[rr_best]
    log(f"  -> libroadrunner uses the '{rr_best}' dosing strategy below (Adams, non-stiff CVODE: faster than BDF here)")
    sub = subsample(n_cohort, max(n_sub_scipy, n_sub_rr))
    proc = subprocess.run(
        [sys.executable, __file__, "--one-core-worker", "--sub", json.dumps(sub.tolist()), "--rr-dosing", rr_best]
        + ["--n-rr", str(n_sub_rr)],
        capture_output=True,
        text=True,
    )
    one_core = next(
        (json.loads(x.split(" ", 1)[1]) for x in proc.stdout.splitlines() if x.startswith("ONE_CORE_RESULT ")), None
    )
    rr_pinned = None  # libroadrunner timed in the one-core worker: the reference of its rows
    if one_core is None:
        log("  one-core worker failed:\n" + proc.stdout[-2000:] + proc.stderr[-3000:])
    else:
        t_sim1, t_jit1 = Timing(**one_core["simulate"]), Timing(**one_core["solve_days_jit"])
        t_chunks1 = Timing(**one_core["chunks"])
        rr_pinned = {k: Timing(**v) for k, v in one_core["libroadrunner"].items()}
        log(
            f"  pinned to one core: simulate {ms(t_sim1.wall)} (CPU {ms(t_sim1.cpu)}), solve_days_jit {ms(t_jit1.wall)}; "
            f"{ONE_CORE_COHORT} cohort patients in chunks of {CHUNK}: {ms(t_chunks1.wall)}/patient (CPU {ms(t_chunks1.cpu)}); "
            f"libroadrunner {ms(rr_pinned['one_patient'].cpu)} CPU (typical patient), "
            f"{ms(rr_pinned['per_cohort_patient'].cpu)} CPU per cohort patient"
        )
    res["one_patient"] = {
        "simulate": vars(t_sim),
        "simulate_first_call_s": t_first.wall,
        "solve_days_jit": vars(t_jit),
        "one_core": one_core,
        "scipy": vars(t_sp),
        "roadrunner": {k: vars(v) for k, v in rr_times.items()},
    }
    rows += [
        ("one patient", "lenapk `simulate` (compiled)", t_sim, f"first call {t_first.wall:.1f} s incl. compile"),
        ("one patient", "lenapk `solve_days_jit`", t_jit, ""),
        ("one patient", "scipy `solve_ivp` LSODA", t_sp, "Python dose loop"),
    ]
    if one_core is not None:
        rows += [
            ("one patient", f"lenapk `simulate`, process {PINNED}", t_sim1, "subprocess, `sched_setaffinity`"),
            ("one patient", f"lenapk `solve_days_jit`, process {PINNED}", t_jit1, ""),
            ("one patient", f"libroadrunner CVODE, dosing '{rr_best}', process {PINNED}", rr_pinned["one_patient"], ""),
        ]
    rr_err_typ = acc_rows[0]["rr_vs_tight"]
    matched_one, _ = accuracy_matched(
        (one_core or {}).get("simulate_by_rtol", {}), lambda r: rel_err(np.array(r["final"]), tight_typ), rr_err_typ
    )
    if matched_one is not None:
        rows.append(matched_row("one patient", f"lenapk `simulate`, process {PINNED}", matched_one, rr_err_typ))
    rows += [
        (
            "one patient",
            f"libroadrunner CVODE, dosing '{rr_best}'",
            t_rr,
            "; ".join(f"{k}: {ms(v.wall)}" for k, v in rr_times.items()),
        ),
    ]

    # ------------------------------------------------------------------ cohort
    log(f"\n## Cohort of {n_cohort} patients (log-normal BSV on {', '.join(BSV_NAMES)}; numpy seed 0)")
    params, vals = cohort_params(model, n_cohort)
    planned = jnp.broadcast_to(jnp.asarray(doses), (n_cohort, DAYS))
    per_patient = {k: v for k, v in params.values.items() if np.ndim(v) == 1}

    def vmapped(vals, planned):
        return jax.vmap(lambda pv, d: solve_days(model, p.replace(**pv), d))(vals, planned)

    comp_v, t_v, traj_v = aot(vmapped, per_patient, planned)
    check_trajectory(traj_v)
    fin_v = np.asarray(traj_v.final_state).T  # vmap puts the patient axis first
    log(
        f"  lenapk vmap: {t_v.wall:.1f} s = {ms(t_v.wall / n_cohort)}/patient (CPU {ms(t_v.cpu / n_cohort)}; "
        f"compile {comp_v.wall:.0f} s)"
    )

    first_b, _ = timed(lambda: jax.block_until_ready(solve_days_jit(model, params, planned)))
    t_b, traj_b = best_of(lambda: jax.block_until_ready(solve_days_jit(model, params, planned)), 2)
    check_trajectory(traj_b)
    fin_b = np.asarray(traj_b.final_state)
    log(
        f"  lenapk one batched ODE: {t_b.wall:.1f} s = {ms(t_b.wall / n_cohort)}/patient (CPU "
        f"{ms(t_b.cpu / n_cohort)}; first call {first_b.wall:.0f} s)"
    )

    def run_chunks(size, n=n_cohort, prm=params, settings=SolverSettings()):
        """n patients in chunks of ``size``; the last chunk is padded with the last patient (one compile)."""
        pl_c = jnp.broadcast_to(jnp.asarray(doses), (size, DAYS))
        outs = [
            solve_days_jit(model, take(prm, np.minimum(np.arange(s, s + size), n - 1)), pl_c, settings=settings)
            for s in range(0, n, size)
        ]
        return [o.final_state for o in jax.block_until_ready(outs)]  # the last chunk's padding is kept

    timed(
        lambda: jax.block_until_ready(
            solve_days_jit(
                model, take(params, np.arange(chunk)), jnp.broadcast_to(jnp.asarray(doses), (chunk, DAYS))
            ).final_state
        )
    )
    t_c, fin_c = best_of(lambda: run_chunks(chunk), 2)
    fin_c = np.concatenate([np.asarray(f) for f in fin_c], axis=-1)[:, :n_cohort]
    log(
        f"  lenapk batched, chunks of {chunk}: {t_c.wall:.1f} s = {ms(t_c.wall / n_cohort)}/patient "
        f"(CPU {ms(t_c.cpu / n_cohort)})"
    )

    def batched_folded(vals, planned):
        return solve_days(model, p.replace(**vals), planned)

    folded = jax.jit(batched_folded)
    jax.block_until_ready(folded(per_patient, planned))  # compiles once
    t_bs, traj_bs = best_of(lambda: jax.block_until_ready(folded(per_patient, planned)), 2)
    fin_bs = np.asarray(traj_bs.final_state)
    log(
        f"  lenapk one batched ODE, shared parameters as compile-time constants: {t_bs.wall:.1f} s = "
        f"{ms(t_bs.wall / n_cohort)}/patient (CPU {ms(t_bs.cpu / n_cohort)})"
    )
    rows += [
        (
            "cohort",
            f"lenapk `vmap` of single-patient solves (n={n_cohort})",
            t_v / n_cohort,
            f"compile {comp_v.wall:.0f} s",
        ),
        (
            "cohort",
            f"lenapk one batched ODE, shared step (n={n_cohort})",
            t_b / n_cohort,
            f"first call {first_b.wall:.0f} s",
        ),
        ("cohort", f"lenapk batched, chunks of {chunk} (n={n_cohort})", t_c / n_cohort, ""),
        (
            "cohort",
            f"lenapk one batched ODE, typical parameters as constants (n={n_cohort})",
            t_bs / n_cohort,
            "`jax.jit` closing over them: the same work",
        ),
    ]
    if one_core is not None:
        rows += [
            (
                "cohort",
                f"lenapk batched, chunks of {CHUNK}, process {PINNED} (n={ONE_CORE_COHORT})",
                Timing(**one_core["chunks"]),
                "the one-core subprocess above",
            ),
            (
                "cohort",
                f"libroadrunner, per patient (mean of {n_sub_rr} cohort patients), process {PINNED}",
                rr_pinned["per_cohort_patient"],
                "the one-core subprocess above",
            ),
        ]

    # peers on a subsample, and everyone's accuracy there against a tight reference
    rrp = peers.RoadRunnerPeer(doses, dosing=rr_best, rtol=RTOL, atol=ATOL)
    cs = [peers.constants(one_patient(params, i), model) for i in sub]
    t_rr_all, rr_fin = best_of(lambda: [rrp.simulate(c)[-1, 2:] for c in cs[:n_sub_rr]], 2)
    t_sp_all, sp_fin = timed(lambda: [sp.simulate(c, doses)[-1, 2:] for c in cs[:n_sub_scipy]])
    t_rr_pp, t_sp_pp = t_rr_all / n_sub_rr, t_sp_all / n_sub_scipy
    psub = take(params, sub)
    tight_sub = np.asarray(
        solve_days_jit(model, psub, jnp.broadcast_to(jnp.asarray(doses), (sub.size, DAYS)), settings=tight).final_state
    )
    sub_err = {
        "lenapk vmap (single-patient solves)": rel_err(fin_v[:, sub], tight_sub),
        "lenapk one batched ODE": rel_err(fin_b[:, sub], tight_sub),
        "lenapk one batched ODE, parameters as constants": rel_err(fin_bs[:, sub], tight_sub),
        f"lenapk batched, chunks of {chunk}": rel_err(fin_c[:, sub], tight_sub),
        "libroadrunner": rel_err(np.array(rr_fin).T, tight_sub[:, :n_sub_rr]),
        "scipy LSODA": rel_err(np.array(sp_fin).T, tight_sub[:, :n_sub_scipy]),
    }
    matched, errors = accuracy_matched(  # the pinned chunks at the largest rtol as accurate as libroadrunner
        (one_core or {}).get("chunks_by_rtol", {}),
        lambda r: rel_err(np.array(r["final_sub"]), tight_sub),
        sub_err["libroadrunner"],
    )
    for rtol, err in errors.items():
        sub_err[f"lenapk batched, chunks of {CHUNK}, pinned, rtol {rtol:g}"] = err
    if matched is not None:
        label = f"lenapk batched, chunks of {CHUNK}, process {PINNED} (n={ONE_CORE_COHORT})"
        rows.append(matched_row("cohort", label, matched, sub_err["libroadrunner"]))
    log(
        f"  libroadrunner: {ms(t_rr_pp.wall)}/patient (CPU {ms(t_rr_pp.cpu)}; mean over {n_sub_rr} patients of the "
        "cohort, one compiled model reused)"
    )
    log(f"  scipy LSODA: {ms(t_sp_pp.wall)}/patient (CPU {ms(t_sp_pp.cpu)}; mean over {n_sub_scipy} patients)")
    log(
        "  max rel error of the final state on the subsample vs a tight reference (lenapk rtol 1e-11): "
        + ", ".join(f"{k} {v:.1e}" for k, v in sub_err.items())
    )
    res["cohort"] = {
        "n": n_cohort,
        "vmap": vars(t_v),
        "batched": vars(t_b),
        "batched_first_call_s": first_b.wall,
        "chunk": chunk,
        "chunks": vars(t_c),
        "batched_constants": vars(t_bs),
        "rr_per_patient": vars(t_rr_pp),
        "rr_subsample": n_sub_rr,
        "scipy_per_patient": vars(t_sp_pp),
        "scipy_subsample": n_sub_scipy,
        "subsample_err_vs_tight": sub_err,
    }
    rows += [
        ("cohort", f"scipy LSODA, per patient (mean of {n_sub_scipy} cohort patients)", t_sp_pp, ""),
        ("cohort", f"libroadrunner, per patient (mean of {n_sub_rr} cohort patients)", t_rr_pp, ""),
    ]

    # ------------------------------------------------------------------ scale
    log("\n## Scale (lenapk batched, chunks of the compiled cohort size)")
    scale = {}
    if not quick:
        n10k = 10_000
        p10k, _ = cohort_params(model, n10k)
        t10k, _ = timed(lambda: run_chunks(chunk, n10k, p10k))
        scale["10k"] = vars(t10k)
        scale["10k_chunk"] = chunk
        log(
            f"  n=10,000 as {-(-n10k // chunk)} chunks of {chunk}: {t10k.wall:.0f} s (CPU {t10k.cpu:.0f} s) = "
            f"{ms(t10k.wall / n10k)}/patient"
        )
        rows.append(
            (
                "scale",
                f"lenapk batched, n=10,000 in chunks of {chunk}: {t10k.wall:.0f} s in all",
                t10k / n10k,
                "measured",
            )
        )
        if args.full:
            n100k = 100_000
            p100k, _ = cohort_params(model, n100k)
            t100k, _ = timed(lambda: run_chunks(chunk, n100k, p100k))
            scale["100k"] = vars(t100k)
            log(f"  n=100,000: {t100k.wall:.0f} s = {ms(t100k.wall / n100k)}/patient")
            rows.append(
                ("scale", f"lenapk batched, n=100,000: {t100k.wall:.0f} s in all", t100k / n100k, "measured (--full)")
            )
        else:
            est = t10k / n10k * 1e5
            scale["100k_estimated"] = vars(est)
            log(f"  n=100,000: estimated {est.wall:.0f} s (10 x the n=10,000 run; --full measures it)")
            rows.append(
                ("scale", f"lenapk batched, n=100,000: ~{est.wall:.0f} s in all", est / 1e5, "estimated, 10 x n=10,000")
            )
    else:
        est = t_b / n_cohort * 1e4
        scale["10k_estimated"] = vars(est)
        log(f"  n=10,000: estimated {est.wall:.0f} s from n={n_cohort} (--quick)")
        rows.append(
            ("scale", f"lenapk batched, n=10,000: ~{est.wall:.0f} s in all", est / 1e4, f"estimated from n={n_cohort}")
        )
    res["scale"] = scale

    # ------------------------------------------------------------------ 2 devices
    log("\n## 2 JAX CPU devices (subprocess: lenapk.set_host_device_count(2))")
    proc = subprocess.run(
        [sys.executable, __file__, "--shard-worker", str(n_cohort)] + ["--cpu-untuned"] * args.cpu_untuned,
        capture_output=True,
        text=True,
    )
    shard = None
    for line in proc.stdout.splitlines():
        if line.startswith("SHARD_RESULT "):
            shard = json.loads(line[len("SHARD_RESULT ") :])
    if shard is None:
        log("  shard worker failed:\n" + proc.stdout[-2000:] + proc.stderr[-3000:])
    else:
        labels = {
            "one_device": ("lenapk one batched ODE on 1 of 2 host devices", "reference for the two below"),
            "named_sharding": ("lenapk batched, `NamedSharding` over 2 devices", "one ODE, global shared step"),
            "shard_map": ("lenapk batched, `shard_map` over 2 devices", "one ODE per device"),
        }
        for key, (label, note) in labels.items():
            if key in shard:
                s = shard[key]
                diff = s.get("max_rel_diff_vs_one_device")
                extra = f"; max rel diff vs one device {diff:.1e}" if diff is not None else ""
                log(
                    f"  {key}: {s['run_s']:.1f} s = {ms(s['run_s'] / n_cohort)}/patient (CPU {ms(s['cpu_s'] / n_cohort)}; "
                    f"compile {s['compile_s']:.0f} s){extra}"
                )
                rows.append(("2 devices", f"{label} (n={n_cohort})", Timing(s["run_s"], s["cpu_s"]) / n_cohort, note))
    res["two_devices"] = shard

    # ------------------------------------------------------------------ profile
    log("\n## Profile (lenapk.solve's solver configuration, re-run with diffrax's step statistics)")
    prof = make_profiled_solver(model)
    prof_out = {}
    half = n_cohort // 2
    p_half, pl_half = take(params, np.arange(half)), planned[:half]
    jax.block_until_ready(solve_days_jit(model, p_half, pl_half))
    t_half, _ = best_of(lambda: jax.block_until_ready(solve_days_jit(model, p_half, pl_half)), 2)
    for label, prm, pln, t_total, nn in [
        ("n=1", p, pl, t_jit.wall, 1),
        (f"n={half} batched", p_half, pl_half, t_half.wall, half),
        (f"n={n_cohort} batched", params, planned, t_b.wall, n_cohort),
    ]:
        yf, (acc, rej) = prof(prm, pln)
        same = rel_err(np.asarray(yf), np.asarray(solve_days_jit(model, prm, pln).final_state))
        acc, rej = float(np.mean(acc)), float(np.mean(rej))
        steps = (acc + rej) * DAYS
        t_rhs = rhs_eval_time(model, prm, () if nn == 1 else (nn,)).wall
        evals = 6 * steps + DAYS  # Tsit5 is FSAL: 6 new evaluations per step attempt, 1 more per day
        per_step = t_total / steps
        rhs_share = evals * t_rhs / t_total
        prof_out[label] = {
            "accepted_per_day": acc,
            "rejected_per_day": rej,
            "rhs_evals": evals,
            "rhs_eval_s": t_rhs,
            "per_step_s": per_step,
            "rhs_share": rhs_share,
            "replica_vs_solve_days_max_rel_diff": same,
        }
        log(
            f"  {label}: {acc:.2f} accepted + {rej:.2f} rejected steps/day = {steps:.0f} steps, {evals:.0f} RHS "
            f"evaluations; one RHS evaluation {t_rhs * 1e6:.2f} us ({t_rhs * 1e9 / nn:.0f} ns/patient); one step "
            f"{per_step * 1e6:.1f} us, of which 6 RHS evaluations {6 * t_rhs * 1e6:.1f} us -> RHS "
            f"{100 * rhs_share:.0f} % of the time, per-step and per-day overhead {100 * (1 - rhs_share):.0f} % "
            f"(replica == solve_days to {same:.0e})"
        )
    res["profile"] = prof_out
    res["rhs_ops"] = rhs_op_costs(model, p)
    ops = res["rhs_ops"]
    log(
        f"  RHS operations per patient-evaluation: {ops['counts']}; per element (ns): "
        + ", ".join(f"{k} {v * 1e9:.2f}" for k, v in ops["per_element_s"].items())
        + f"; the costly ones together {ops['costly_s'] * 1e9:.1f} ns"
    )

    # ------------------------------------------------------------------ FLOP floor
    batch_rows = [  # measured batch rows at the common rtol (the 10,000-patient cohort included, not estimates)
        (label, t)
        for sec, label, t, note in rows
        if label.startswith("lenapk")
        and not note.startswith("accuracy-matched")
        and (sec in ("cohort", "2 devices") or (sec == "scale" and note == "measured"))
    ]
    best_label, best_batch = min(batch_rows, key=lambda r: r[1].cpu)
    res["flop_floor"] = flop_floor(model, p, prof_out[f"n={n_cohort} batched"], info["cores"])
    res["flop_floor"].update(best_batch_cpu_s=best_batch.cpu, best_batch=best_label)
    res["rhs_alone"] = rhs_alone(prof_out, one_core, rr_pinned)
    for k, v in res["rhs_alone"].items():
        log(
            f"  RHS evaluations alone, {k}: {v['cpu_per_patient_s'] * 1e3:.2f} ms CPU/patient = "
            f"{v['vs_rr_cpu']:.1f}x libroadrunner (pinned)"
        )

    # ------------------------------------------------------------------ targets, JSON, page
    res["targets"] = [
        {
            "target": "one patient: lenapk `simulate` at least as fast as libroadrunner (CPU time)",
            "measured": f"`simulate` {ms(t_sim.cpu)} CPU ({ms(t_sim.wall)} wall): {t_rr.cpu / t_sim.cpu:.2f}x; "
            f"`solve_days_jit` {ms(t_jit.cpu)} CPU: {t_rr.cpu / t_jit.cpu:.2f}x; libroadrunner {ms(t_rr.cpu)}"
            + (
                f"; as accurate as libroadrunner (rtol {matched_one[0]:g}, both {PINNED}): "
                f"{rr_pinned['one_patient'].cpu / matched_one[2].cpu:.2f}x"
                if matched_one
                else f"; no rtol of {ONE_RTOLS} reached libroadrunner's error {rr_err_typ:.1e}"
                if one_core is not None
                else "; the one-core worker failed (no accuracy-matched run)"
            ),
            "met": t_sim.cpu <= t_rr.cpu,
        },
        batch_target(t_rr_pp, rr_pinned, best_label, best_batch, matched, sub_err["libroadrunner"], res["rhs_alone"]),
    ]
    res["rows"] = [
        {
            "section": sec,
            "label": label,
            "wall": t.wall,
            "cpu": t.cpu,
            "note": note,
            "reference": "pinned" if rr_pinned is not None and PINNED in label else "free",
        }
        for sec, label, t, note in rows
    ]
    res["peers"] = {  # the reference of the one-patient rows, and of every batch row (per cohort patient)
        "libroadrunner": {"one_patient": vars(t_rr), "per_cohort_patient": vars(t_rr_pp)},
        "scipy": {"one_patient": vars(t_sp), "per_cohort_patient": vars(t_sp_pp)},
    }
    if rr_pinned is not None:  # the reference of the rows timed in the one-core worker
        res["peers"]["libroadrunner_pinned"] = {k: vars(v) for k, v in rr_pinned.items()}
    info["loadavg_end"] = os.getloadavg()
    info["total_wall_s"] = time.perf_counter() - t_start
    res["flags"] = (
        (" --quick" if quick else "")
        + (" --full" if args.full else "")
        + (" --cpu-untuned" if args.cpu_untuned else "")
    )
    Path(args.out).write_text(json.dumps(res, indent=1, default=str))
    log(f"written {args.out}")
    import results_page

    results_page.main()


if __name__ == "__main__":
    main()
