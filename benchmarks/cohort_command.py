"""Issue 16's acceptance command, timed as a user runs it: a fresh Python process, no setup call.

    python benchmarks/cohort_command.py            # 2 runs, one after the other
    python benchmarks/cohort_command.py --runs 3

Each run is ``python -c "import lenapk; lenapk.cohort(lenapk.load_regimens()['rr_10_to_25_cont'],
n=10_000)"`` in a new process: start-up, import, compilation and the 10,000-patient cohort
(endpoints included), wall time and the CPU time of the process (user + system).  Writes
``cohort_command.json`` (read by ``results_page.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "cohort_command.json"
CODE = "import lenapk; lenapk.cohort(lenapk.load_regimens()['rr_10_to_25_cont'], n=10_000)"


def one_run() -> dict:
    """Wall and CPU seconds of one fresh process running :data:`CODE`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", CODE], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "loadavg_before": os.getloadavg()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args(argv)
    runs = []
    for i in range(args.runs):
        runs.append(one_run())
        print(f"run {i + 1}: wall {runs[-1]['wall_s']:.1f} s, CPU {runs[-1]['cpu_s']:.1f} s", flush=True)
    OUT.write_text(
        json.dumps({"command": f'python -c "{CODE}"', "cores": len(os.sched_getaffinity(0)), "runs": runs}, indent=1)
        + "\n"
    )
    print(f"written {OUT}")


if __name__ == "__main__":
    main()
