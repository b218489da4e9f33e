"""Wall and CPU time of ``lenapk.cohort`` at scale, as a user gets it (no setup call).

    python benchmarks/cohort_scale.py                 # n=10,000, block size 256
    LENAPK_CPU_SETUP=0 python benchmarks/cohort_scale.py   # JAX's own default: 1 device, untuned (A/B)
    python benchmarks/cohort_scale.py 2048 --block-size 128
    python benchmarks/cohort_scale.py 2048 --log jnp   # the RHS logarithms with jnp.log (A/B)
    python benchmarks/cohort_scale.py 2048 --untuned   # every core, XLA's default code generation (A/B)
    XLA_FLAGS=--xla_force_host_platform_device_count=1 taskset -c 0 python benchmarks/cohort_scale.py 4096
                                                      # one device pinned to one core (threading A/B)

Regimen: rr_10_to_25_cont (10 mg/day escalating to 25, continuous), 24 cycles of 28 days,
untreated population, no dose rules, endpoints included.  ``import lenapk`` gives JAX one CPU
device per core with lenapk's tuning flags (unless ``LENAPK_CPU_SETUP=0``).  The first call (a
cold run of 2 blocks) compiles; the timed run is warm.  Each configuration's result is stored in
``cohort_scale.json`` (read by ``results_page.py``).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import lenapk

if "--untuned" in sys.argv:  # before the first JAX computation
    lenapk.set_host_device_count(tune=False)

import jax  # noqa: E402

OUT = Path(__file__).resolve().parent / "cohort_scale.json"


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )  # --untuned is read from sys.argv before parsing
    ap.add_argument("n", type=int, nargs="?", default=10_000)
    ap.add_argument("--block-size", type=int, default=256)
    ap.add_argument(
        "--log",
        choices=("fastmath", "jnp"),
        default="fastmath",
        help="logarithm of the model's RHS: lenapk._core.fastmath.log (the package's) or jnp.log",
    )
    ap.add_argument(
        "--untuned",
        action="store_true",
        help="without the CPU code-generation flags of lenapk.set_host_device_count (A/B)",
    )
    args = ap.parse_args()
    if args.log == "jnp":
        import jax.numpy as jnp

        from lenapk._core import fastmath

        fastmath.log = jnp.log  # the model looks it up when it is traced
    reg = lenapk.load_regimens()["rr_10_to_25_cont"]
    t0 = time.perf_counter()
    lenapk.cohort(reg, n=2 * args.block_size, seed=1, progress=False, block_size=args.block_size)
    t1, c1 = time.perf_counter(), time.process_time()
    df = lenapk.cohort(reg, n=args.n, seed=0, progress=False, block_size=args.block_size)
    t2, c2 = time.perf_counter(), time.process_time()
    tuned = any(flag in os.environ.get("XLA_FLAGS", "").split() for flag, _ in lenapk.cohorts.CPU_TUNING_FLAGS)
    res = {
        "devices": len(jax.devices()),
        "cores": len(os.sched_getaffinity(0)),
        "tuned": tuned,
        "log": args.log,
        "n": args.n,
        "block_size": args.block_size,
        "first_call_s": t1 - t0,
        "wall_s": t2 - t1,
        "cpu_s": c2 - c1,
        "rows": len(df),
        "loadavg": os.getloadavg(),
    }
    print(
        f"log {args.log}; {'tuned' if tuned else 'untuned'}; {res['devices']} CPU devices; first call (2 blocks, "
        f"compiles) {t1 - t0:.1f} s; n={args.n} (block {args.block_size}): wall {t2 - t1:.1f} s = "
        f"{1000 * (t2 - t1) / args.n:.2f} ms/patient, CPU {c2 - c1:.1f} s; {len(df)} rows"
    )
    key = f"{res['cores']}cores_{res['devices']}dev_{'tuned' if tuned else 'untuned'}_{args.log}_n{args.n}_b{args.block_size}"
    stored = json.loads(OUT.read_text()) if OUT.exists() else {}
    stored[key] = res
    OUT.write_text(json.dumps(stored, indent=1))


if __name__ == "__main__":
    main()
