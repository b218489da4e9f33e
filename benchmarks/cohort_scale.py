"""Wall time of ``lenapk.cohort`` at scale on every CPU core (issue 4's 10^4-in-60-s target).

    python benchmarks/cohort_scale.py                 # n=10,000, block size 256
    python benchmarks/cohort_scale.py 2048 --block-size 128
    python benchmarks/cohort_scale.py 2048 --log jnp   # the RHS logarithms with jnp.log (A/B)
    python benchmarks/cohort_scale.py 2048 --untuned   # XLA's default CPU code generation (A/B)

Regimen: 10 mg/day continuous, 24 cycles of 28 days, untreated population, no dose rules,
endpoints included.  One JAX CPU device per core (``lenapk.set_host_device_count``); a
512-patient run first compiles the block function, so the timed run is warm.
"""

import argparse
import sys
import time

import lenapk

lenapk.set_host_device_count(tune="--untuned" not in sys.argv)  # before the first JAX computation

import jax  # noqa: E402


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
    reg = lenapk.Regimen.cycles(10.0, n_cycles=24)
    t0 = time.perf_counter()
    lenapk.cohort(reg, n=2 * args.block_size, seed=1, progress=False, block_size=args.block_size)
    t1, c1 = time.perf_counter(), time.process_time()
    df = lenapk.cohort(reg, n=args.n, seed=0, progress=False, block_size=args.block_size)
    t2, c2 = time.perf_counter(), time.process_time()
    print(
        f"log {args.log}; {'untuned' if args.untuned else 'tuned'}; {len(jax.devices())} CPU devices; warm-up {t1 - t0:.1f} s; n={args.n} (block {args.block_size}): "
        f"wall {t2 - t1:.1f} s = {1000 * (t2 - t1) / args.n:.2f} ms/patient, CPU {c2 - c1:.1f} s; {len(df)} rows"
    )


if __name__ == "__main__":
    main()
