"""Is the flagship model's disease burden finite?  A 10,000-patient relapsed cohort on the
rr_10_to_25_cont regimen (every planned dose given, no dose rules: the worst case for growth is
under the least drug, so the check also covers a cohort under treatment holds), solved in blocks
of 256; writes the maximum ALC over patients and days, and the count of non-finite values, to
``benchmarks/cohort_bound.json``.

    python benchmarks/cohort_bound.py [--n 10000]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import lenapk
from lenapk._core import plan_for
from lenapk._core._plan import broadcast_plan

HERE = Path(__file__).resolve().parent


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--block", type=int, default=256)
    ap.add_argument("--out", default=str(HERE / "cohort_bound.json"))
    args = ap.parse_args(argv)
    model = lenapk.LenalidomideCLL()
    regimen = lenapk.load_regimens()["rr_10_to_25_cont"]
    pop = lenapk.virtual_population(model, args.n, 0, setting="relapsed")
    params = pop.parameters(model, model.default_params())
    solve = jax.jit(lambda p, plan: lenapk.solve(model, p, plan).day_obs["alc"])
    t0 = time.perf_counter()
    max_alc, non_finite, worst = 0.0, 0, -1
    for start in range(0, args.n, args.block):
        idx = np.arange(start, start + args.block) % args.n  # the last block is filled up and trimmed
        p = jax.tree_util.tree_map(lambda a: jnp.asarray(a)[idx] if jnp.ndim(a) else a, params)
        plan = broadcast_plan(plan_for(model, regimen, regimen.n_days), (args.block,))
        alc = np.asarray(solve(p, plan))[: min(args.block, args.n - start)]
        non_finite += int(np.sum(~np.isfinite(alc)))
        block_max = np.nanmax(alc, axis=1)
        if block_max.max() > max_alc:
            max_alc, worst = float(block_max.max()), int(start + np.argmax(block_max))
    wall = time.perf_counter() - t0
    alc0 = np.asarray(pop.covariates["alc0"]) if hasattr(pop, "covariates") else None
    result = {
        "patients": args.n,
        "regimen": regimen.name,
        "days": regimen.n_days,
        "max_alc_x10e9_per_l": max_alc,
        "patient_with_max": worst,
        "baseline_alc_of_that_patient": None if alc0 is None else float(alc0[worst]),
        "non_finite_values": non_finite,
        "carrying_capacity_x10e9_per_l": float(model.default_params()["clone_max"]),
        "wall_s": round(wall, 1),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
