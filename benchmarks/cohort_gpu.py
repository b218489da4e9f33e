"""``lenapk.cohort`` on a GPU: 10^5 and 10^6 patients x 24 cycles, by block size.

    python benchmarks/cohort_gpu.py                     # sweep, then 10^6 at the fastest block size
    python benchmarks/cohort_gpu.py --sizes 20000 --blocks 4096 --big 0 --check 0   # smoke test (any device)

Regimen rr_10_to_25_cont (as ``cohort_scale.py``), untreated population, no dose rules,
endpoints included, one JAX device (the default backend's first).  For each block size of
``--blocks``: a warm-up cohort of one block (compiles), then the timed cohort at each n of
``--sizes``.  Then ``--big`` patients at the block size with the least wall time per patient at
the largest n, if the time left in ``--budget-s`` allows it by that rate.

Each run records wall and CPU time, the time inside the solver (``solve_chunk``: dispatch, the
solve and the copy back) and in the host's endpoint tables (``patient_table``), and the
device's peak memory so far (``memory_stats``; monotone over the process, so runs go from small
to large) and the count of infinite endpoint values (missing ones are NaN by design, e.g. a time
to an event that did not happen; a failed solve raises).  ``--check N`` first solves N patients on this device and on the CPU backend (a
subprocess with ``JAX_PLATFORMS=cpu``, same block size, so the same numerical definition) and
records the largest relative difference of the endpoint columns.  The results are written to
``cohort_gpu.json`` beside this file (and to ``$OUT`` when set) after every run, so a run cut
short keeps what it measured; ``results_page.py`` reads them.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd

import lenapk
import lenapk.cohorts._run as cohort_run

HERE = Path(__file__).resolve().parent
REGIMEN = "rr_10_to_25_cont"
PHASES = {"solve_s": 0.0, "endpoints_s": 0.0}
_PHASES_LOCK = threading.Lock()  # chunks in flight run on threads


def _timed(fn, key):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            with _PHASES_LOCK:
                PHASES[key] += time.perf_counter() - t

    return wrapper


cohort_run.solve_chunk = _timed(cohort_run.solve_chunk, "solve_s")
cohort_run.patient_table = _timed(cohort_run.patient_table, "endpoints_s")


def _peak_bytes() -> int | None:
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def _machine() -> dict:
    dev = jax.devices()[0]
    info = {
        "device": dev.device_kind,
        "platform": dev.platform,
        "jax": jax.__version__,
        "host_cores": os.cpu_count(),
        "python": platform.python_version(),
    }
    stats = dev.memory_stats() or {}
    if "bytes_limit" in stats:
        info["device_memory_limit_gib"] = round(stats["bytes_limit"] / 2**30, 1)
    return info


def run_cohort(n: int, block: int, seed: int = 0) -> tuple[dict, pd.DataFrame]:
    reg = lenapk.load_regimens()[REGIMEN]
    for k in PHASES:
        PHASES[k] = 0.0
    t0, c0 = time.perf_counter(), time.process_time()
    df = lenapk.cohort(reg, n=n, seed=seed, progress=False, block_size=block, chunk_size=block)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = _peak_bytes()
    res = {
        "n": n,
        "block_size": block,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "ms_per_patient": round(1000 * wall / n, 4),
        "solve_s": round(PHASES["solve_s"], 2),
        "endpoints_s": round(PHASES["endpoints_s"], 2),
        "peak_device_gib": None if peak is None else round(peak / 2**30, 2),
        "rows": len(df),
        "infinite": int(np.isinf(df.select_dtypes("number").to_numpy(dtype=float)).sum()),
    }
    return res, df


def cpu_check(n: int, block: int) -> dict:
    """The same n patients on this device and on the CPU backend: largest relative difference of
    the numeric endpoint columns (scale: max(|cpu|, 1))."""
    _, dev_df = run_cohort(n, block, seed=7)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "cpu.parquet"
        code = (
            "import lenapk, sys; "
            f"lenapk.cohort(lenapk.load_regimens()['{REGIMEN}'], n={n}, seed=7, progress=False, "
            f"block_size={block}, chunk_size={block}).to_parquet(sys.argv[1])"
        )
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        subprocess.run([sys.executable, "-c", code, str(path)], env=env, check=True)
        cpu_df = pd.read_parquet(path)
    num = [c for c in cpu_df.select_dtypes("number").columns if c in dev_df.columns]
    a, b = dev_df[num].to_numpy(dtype=float), cpu_df[num].to_numpy(dtype=float)
    rel = np.nan_to_num(np.abs(a - b) / np.maximum(np.abs(b), 1.0), nan=0.0)  # NaN in both: no difference
    worst = np.unravel_index(np.argmax(rel), rel.shape)
    return {
        "n": n,
        "block_size": block,
        "columns": len(num),
        "max_rel_diff": float(rel.max()),
        "worst_column": num[worst[1]],
        "same_nan_pattern": bool((np.isnan(a) == np.isnan(b)).all()),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    ap.add_argument("--blocks", type=int, nargs="+", default=[16_384, 65_536])
    ap.add_argument("--big", type=int, default=1_000_000, help="the large cohort (0: none)")
    ap.add_argument("--check", type=int, default=512, help="patients of the GPU-vs-CPU check (0: none)")
    ap.add_argument("--budget-s", type=float, default=480.0, help="skip a run that would end after this")
    ap.add_argument("--append", action="store_true", help="add to the runs in cohort_gpu.json (same machine)")
    args = ap.parse_args()
    start = time.perf_counter()
    command = "python benchmarks/cohort_gpu.py " + " ".join(sys.argv[1:])
    out = {"command": command, "machine": _machine()}
    out.update(regimen=REGIMEN, cycles=24, runs=[], warmups=[])
    if args.append and (HERE / "cohort_gpu.json").exists():
        out = json.loads((HERE / "cohort_gpu.json").read_text())
        out["command"] += "; then " + command
    print(json.dumps(out["machine"]), flush=True)

    def save():
        text = json.dumps(out, indent=1)
        (HERE / "cohort_gpu.json").write_text(text + "\n")
        if os.environ.get("OUT"):
            (Path(os.environ["OUT"]) / "cohort_gpu.json").write_text(text + "\n")

    if args.check:
        out["check"] = cpu_check(args.check, 256)
        print("check", out["check"], flush=True)
        save()
    for block in args.blocks:
        warm, _ = run_cohort(block, block, seed=1)  # one block: compiles
        out["warmups"].append(warm)
        print("warm-up", warm, flush=True)
        save()
        for n in args.sizes:
            res, _ = run_cohort(n, block)
            out["runs"].append(res)
            print("run", res, flush=True)
            save()
    if args.big:
        largest = max(args.sizes)
        best = min((r for r in out["runs"] if r["n"] == largest), key=lambda r: r["ms_per_patient"])
        expected = best["ms_per_patient"] * args.big / 1000
        left = args.budget_s - (time.perf_counter() - start)
        if expected > left:
            out["big_skipped"] = f"{args.big} patients expected to take {expected:.0f} s, {left:.0f} s left"
            print(out["big_skipped"], flush=True)
        else:
            res, _ = run_cohort(args.big, best["block_size"])
            out["runs"].append(res)
            print("run", res, flush=True)
    out["total_s"] = round(time.perf_counter() - start, 1)
    save()


if __name__ == "__main__":
    main()
