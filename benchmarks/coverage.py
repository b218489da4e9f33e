"""Parameter recovery: do FOCE-I's 95% intervals cover the truth at the nominal rate?

    python benchmarks/coverage.py            # 200 replicates of 200 subjects; resumes
    python benchmarks/coverage.py 50         # the first 50 replicates only

The design is that of ``estimation.py``'s two-compartment case: 200 subjects, 100 mg oral at
time 0, ten samples to 48 h, weight on CL (estimated exponent) and V, log-normal CL, V and KA,
proportional error.  One design (weights drawn once, seed 0), ``n`` replicate data sets of
observations simulated from the known parameters; each is fitted by FOCE-I from the same
initial values, off the truth, followed by the sandwich covariance step (R by central
differences of the exact gradient).  The interval of a free parameter is estimate ± 1.96 SE on
the natural scale (THETAs as the model states them, OMEGA variances, the residual SD), as
NONMEM prints them.

Each replicate's result is appended to ``coverage_runs.jsonl`` as soon as it is done; a rerun
skips the replicates already there, so a long run resumes.  The summary (coverage, bias, mean
SE against the SD of the estimates, with a binomial 95% interval on each coverage) goes to
``coverage.json`` and, through ``results_page.py``, to ``RESULTS.md``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from estimation import TWO_CMT_TRUTH, two_cmt_data, two_cmt_model
from scipy import stats

from lenapk.estimation import estimate, simulate_observations
from lenapk.estimation._parameters import ParameterLayout

HERE = Path(__file__).resolve().parent
RUNS = HERE / "coverage_runs.jsonl"
SUMMARY = HERE / "coverage.json"
N_SUBJECTS = 200
N_REPLICATES = 200
SEED = 7
Z95 = 1.959963984540054


def truth_by_name(model) -> dict[str, float]:
    """The simulation's parameters under the names of the model's estimates table."""
    layout = ParameterLayout(model)
    return dict(zip(layout.names, np.asarray(layout.natural(TWO_CMT_TRUTH)).tolist()))


def replicate_observations(model, subjects, n_replicates: int) -> np.ndarray:
    """Replicate observations drawn in blocks of N_REPLICATES (block b from seed SEED + b), so a
    replicate's data do not depend on how many are asked for (a resumed run fits the same)."""
    blocks = [
        simulate_observations(model, TWO_CMT_TRUTH, subjects, N_REPLICATES, seed=SEED + b)
        for b in range(-(-n_replicates // N_REPLICATES))
    ]
    return np.concatenate(blocks)[:n_replicates]


def done_replicates() -> dict[int, dict]:
    if not RUNS.exists():
        return {}
    rows = [json.loads(line) for line in RUNS.read_text().splitlines() if line.strip()]
    return {r["replicate"]: r for r in rows}


def fit_replicate(model, data, dv, replicate: int) -> dict:
    subjects = eqx.tree_at(lambda s: s.dv, data.subjects, jnp.asarray(dv))
    wall, cpu = time.perf_counter(), time.process_time()
    fit = estimate(model, subjects, "focei", covariance="sandwich", hessian="fd")
    table = fit.estimates()
    return {
        "replicate": replicate,
        "ofv": fit.ofv,
        "converged": fit.converged,
        "covariance_ok": bool(fit.covariance is not None and fit.covariance.ok),
        "iterations": fit.n_iterations,
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,
        "estimate": dict(zip(table["parameter"], table["estimate"].tolist())),
        "se": dict(zip(table["parameter"], table["se"].tolist())),
    }


def summarise(runs: list[dict], truth: dict[str, float]) -> dict:
    usable = [r for r in runs if r["converged"] and r["covariance_ok"]]
    out = {}
    for name, true in truth.items():
        est = np.array([r["estimate"][name] for r in usable])
        se = np.array([r["se"][name] for r in usable])
        covered = np.abs(est - true) <= Z95 * se
        k, n = int(covered.sum()), len(usable)
        lo, hi = stats.binomtest(k, n).proportion_ci(0.95) if n else (np.nan, np.nan)
        out[name] = {
            "truth": true,
            "coverage_percent": 100 * k / n if n else np.nan,
            "coverage_ci95_percent": [100 * lo, 100 * hi],
            "mean_estimate": float(est.mean()),
            "bias_percent": float(100 * (est.mean() - true) / abs(true)),
            "sd_estimates": float(est.std(ddof=1)),
            "mean_se": float(se.mean()),
        }
    return {
        "n_subjects": N_SUBJECTS,
        "n_replicates": len(runs),
        "n_usable": len(usable),
        "n_not_converged": sum(not r["converged"] for r in runs),
        "n_covariance_failed": sum(not r["covariance_ok"] for r in runs),
        "median_fit_wall_s": float(np.median([r["wall_s"] for r in runs])),
        "median_fit_cpu_s": float(np.median([r["cpu_s"] for r in runs])),
        "parameters": out,
    }


def main(n_replicates: int) -> None:
    model = two_cmt_model()
    data = two_cmt_data(N_SUBJECTS, seed=0)
    sims = replicate_observations(model, data.subjects, n_replicates)
    done = done_replicates()
    with RUNS.open("a") as sink:
        for r in range(n_replicates):
            if r in done:
                continue
            done[r] = fit_replicate(model, data, sims[r], r)
            sink.write(json.dumps(done[r], default=float) + "\n")
            sink.flush()
            print(f"replicate {r}: OFV {done[r]['ofv']:.3f}, {done[r]['wall_s']:.1f} s", flush=True)
    runs = [done[r] for r in range(n_replicates)]
    summary = summarise(runs, truth_by_name(model))
    SUMMARY.write_text(json.dumps(summary, indent=1, default=float))
    for name, p in summary["parameters"].items():
        print(f"{name:22s} coverage {p['coverage_percent']:5.1f}%  bias {p['bias_percent']:+6.2f}%")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else N_REPLICATES)
