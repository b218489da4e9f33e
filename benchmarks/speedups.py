"""Candidate changes to lenapk's solver, measured without touching src/ (see HISTORY.md).

    python benchmarks/speedups.py one          # one patient: baseline vs candidates vs libroadrunner
    python benchmarks/speedups.py 1000         # batch of 1000: baseline vs candidates
    XLA_FLAGS=--xla_force_host_platform_device_count=2 python benchmarks/speedups.py 1000 --shard

Candidates (each reproduces lenapk's equations; only the numerics around them change):

* ``fused``: the same Tsit5 tableau and the same I step-size controller as lenapk's diffrax
  solve had when this script was written (``PIDController`` defaults: safety 0.9, factor in
  [0.2, 10], exponent -1/5, max norm; lenapk now defaults to each patient's RMS norm), written
  as ONE ``lax.while_loop`` per day with the 7 stages unrolled in straight-line code.  Reproduced
  ``solve_days`` of that time (``SolverSettings(error_norm="max", clock=None)``) to ~1e-14; removes diffrax's per-step machinery (a nested
  while-loop over stages, dense-output bookkeeping, SaveAt handling).
* ``dt0=5e-4``: the first step after each dose 5e-4 day instead of 5e-3 (see HISTORY.md: the
  default first step is accepted with an underestimated error).

The vectorisable float64 logarithm measured here earlier ("fastlog") is now in the package
(``lenapk.fastmath.log``, used by ``LenalidomideCLL.rhs``), so every candidate below has it
(the baseline included).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lenapk  # noqa: E402
from lenapk._core import SolverSettings, solve_days_jit  # noqa: E402

MODEL = lenapk.LenalidomideCLL()
_T = diffrax.Tsit5.tableau
C = [float(x) for x in _T.c]
A = [[float(x) for x in row] for row in _T.a_lower]
B = [float(x) for x in _T.b_sol]
E = [float(x) for x in _T.b_error]


def fused_solver(dt0=0.005, rtol=1e-6, atol=1e-8, max_steps=1024):
    """Day loop of lenapk.solve.solve_days (no dose rules / sub-day output) with a fused Tsit5.
    Returns (final_state, day observables, per-day success flag)."""
    m = MODEL

    @eqx.filter_jit
    def run(p, planned):
        bs = planned.shape[:-1]
        c = m.derive(p)
        pkc = m.pk_constants(p)
        y0 = jnp.broadcast_to(m.initial_state(c), (m.n_states,) + bs)

        def day(carry, dose):
            y, pk = carry
            obs = m.observables(y, m.pk.concentration(pk, 0.0, pkc), c)
            pkd = pk.at[0].add(dose)

            def f(t, y):
                return m.rhs(t, y, m.pk.concentration(pkd, 24.0 * t, pkc), c)

            def cond(s):
                return (s[0] < 1.0) & (s[4] < max_steps)

            def body(s):
                t, y, f0, dt, nstep = s
                h = jnp.minimum(dt, 1.0 - t)
                ks = [f0]
                for i in range(1, 6):
                    ks.append(f(t + C[i - 1] * h, y + h * sum(A[i - 1][j] * ks[j] for j in range(i))))
                y1 = y + h * sum(B[j] * ks[j] for j in range(6))
                f1 = f(t + h, y1)
                ks.append(f1)
                err = h * sum(E[j] * ks[j] for j in range(7))
                nrm = jnp.max(jnp.abs(err) / (atol + rtol * jnp.maximum(jnp.abs(y), jnp.abs(y1))))
                ok = nrm < 1.0
                fac = 0.9 * jnp.maximum(nrm, 1e-300) ** (-1.0 / 5.0)
                fac = jnp.clip(fac, jnp.where(ok, 1.0, 0.2), jnp.where(ok, 10.0, 0.9))
                tn = jnp.where(ok, jnp.where(h >= 1.0 - t, 1.0, t + h), t)
                return tn, jnp.where(ok, y1, y), jnp.where(ok, f1, f0), h * fac, nstep + 1

            s0 = (jnp.asarray(0.0), y, f(0.0, y), jnp.asarray(dt0), 0)
            t, y1, _, _, _ = jax.lax.while_loop(cond, body, s0)
            return (y1, m.pk.advance(pkd, 24.0, pkc)), (obs, t >= 1.0)

        (yf, _), (obs, ok) = jax.lax.scan(day, (y0, jnp.zeros((2,) + bs)), jnp.moveaxis(planned, -1, 0))
        return yf, obs, ok

    return run


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn())
    return time.perf_counter() - w, time.process_time() - c


def main():
    import peers
    from run import cohort_params

    mode = sys.argv[1] if len(sys.argv) > 1 else "one"
    p0 = MODEL.default_params()
    doses = lenapk.load_regimens()["rr_10_to_25_cont"].doses
    tight = SolverSettings(rtol=1e-11, atol=1e-13, max_steps=100000, dt0=1e-4)
    if mode == "one":
        p, planned, reps = p0, doses, 5
    else:
        n = int(mode)
        p, _ = cohort_params(MODEL, n)
        planned, reps = jnp.broadcast_to(doses, (n, 672)), 2
    cands = {
        "baseline solve_days_jit": lambda: solve_days_jit(MODEL, p, planned).final_state,
        "baseline, SolverSettings(dt0=5e-4)": lambda: (
            solve_days_jit(MODEL, p, planned, settings=SolverSettings(dt0=5e-4)).final_state
        ),
    }
    for label, kw in [("fused", {}), ("fused dt0=5e-4", {"dt0": 5e-4})]:
        cands[label] = (lambda f: lambda: f(p, planned)[0])(fused_solver(**kw))
    if mode == "one":
        c = peers.constants(p0, MODEL)
        rr = peers.RoadRunnerPeer(np.asarray(doses))
        cands["libroadrunner (event)"] = lambda: rr.simulate(c)[-1, 2:]
    ref = np.asarray(solve_days_jit(MODEL, p, planned, settings=tight).final_state)
    errs = {}
    for k, f in cands.items():
        out = np.asarray(f())
        scale = np.abs(ref)
        scale[MODEL.state_names.index("ig_capacity")] = 1.0  # log-scale state, 0 at baseline: absolute
        errs[k] = float(np.max(np.abs(out - ref) / scale))
    res = {k: [] for k in cands}
    for _ in range(reps):  # interleaved, so that all candidates see the same machine load
        for k, f in cands.items():
            res[k].append(_timed(f))
    nn = 1 if mode == "one" else int(mode)
    for k, v in res.items():
        w, cpu = min(x[0] for x in v), min(x[1] for x in v)
        print(
            f"{mode}: {k:36s} wall {w * 1e3 / nn:8.2f} ms/patient  CPU {cpu * 1e3 / nn:8.2f} ms/patient  "
            f"max rel error vs tight {errs[k]:.1e}",
            flush=True,
        )
    if "--shard" in sys.argv and len(jax.devices()) >= 2 and mode != "one":
        from jax.sharding import Mesh, NamedSharding
        from jax.sharding import PartitionSpec as P

        fused = fused_solver(5e-4)
        per = {k: v for k, v in p.values.items() if np.ndim(v) == 1}

        def core(vals, pl):
            yf, obs, _ = fused(p0.replace(**vals), pl)
            return yf, obs

        mesh = Mesh(np.array(jax.devices()[:2]), ("p",))
        sv = jax.device_put(per, NamedSharding(mesh, P("p")))
        sp = jax.device_put(planned, NamedSharding(mesh, P("p", None)))
        obs_spec = {k: P(None, "p") for k in MODEL.observable_names}
        sm = jax.jit(
            jax.shard_map(
                core, mesh=mesh, in_specs=(P("p"), P("p", None)), out_specs=(P(None, "p"), obs_spec), check_vma=False
            )
        )
        jax.block_until_ready(sm(sv, sp))
        w, cpu = _timed(lambda: sm(sv, sp))
        print(
            f"{mode}: fused dt0=5e-4, shard_map 2 devices   wall {w * 1e3 / nn:8.2f} ms/patient  "
            f"CPU {cpu * 1e3 / nn:8.2f} ms/patient"
        )
    print("load average", os.getloadavg())


if __name__ == "__main__":
    main()
