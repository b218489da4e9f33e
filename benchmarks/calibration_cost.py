"""Cost of one calibration objective-and-gradient evaluation, study by study.

    python benchmarks/calibration_cost.py            # the five bundled studies, 64 patients each
    python benchmarks/calibration_cost.py --n-patients 32

For each study of ``data/observations.csv`` alone: an :class:`lenapk.calibration.Objective` with
the calibration's free parameters at the shipped defaults (dose histories frozen by the rules
once, as the fit does), its first ``value_and_grad`` (compiles) and the best of two warm ones at
nearby points (the objective caches only the last point).  The sum of the warm times is the cost
of one iteration's evaluation in ``examples/calibrate.py``.  Writes ``calibration_cost.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import lenapk
from lenapk.calibration import Objective
from lenapk.models.cll._calibration import FREE

OUT = Path(__file__).resolve().parent / "calibration_cost.json"


def study_cost(obs, study: str, model, n_patients: int) -> dict:
    rows = obs.select(obs.observations["study"] == study)
    t0 = time.perf_counter()
    obj = Objective(rows, model=model, free=FREE, n_patients=n_patients, seed=0)
    if obj.has_rules:
        obj = obj.freeze_doses(obj.x0)[0]
    obj.value_and_grad(obj.x0)
    first = time.perf_counter() - t0
    warm = []
    for k in (1, 2):
        w, c = time.perf_counter(), time.process_time()
        obj.value_and_grad(obj.x0 + 1e-3 * k)
        warm.append((time.perf_counter() - w, time.process_time() - c))
    wall, cpu = min(warm)
    return {"study": study, "first_call_s": first, "wall_s": wall, "cpu_s": cpu}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-patients", type=int, default=64)
    args = ap.parse_args()
    obs = lenapk.load_observations()
    model = lenapk.LenalidomideCLL()
    rows = []
    for study in sorted(obs.observations["study"].unique()):
        rows.append(study_cost(obs, study, model, args.n_patients))
        r = rows[-1]
        print(f"{study}: first call {r['first_call_s']:.1f} s; warm {r['wall_s']:.2f} s wall, {r['cpu_s']:.2f} s CPU")
    total = sum(r["wall_s"] for r in rows)
    print(f"one evaluation of all studies: {total:.1f} s wall")
    OUT.write_text(json.dumps({"n_patients": args.n_patients, "studies": rows, "total_wall_s": total}, indent=1) + "\n")
    print(f"written {OUT}")


if __name__ == "__main__":
    main()
