"""A/B of ``lenapk.cohort`` (or ``lenapk.simulate``) between two commits, interleaved in one run.

    python benchmarks/ab_commits.py 733937e HEAD                 # cohort, n=2048, 24 cycles, 3 rounds
    python benchmarks/ab_commits.py 733937e HEAD --n 4096 --rounds 4
    python benchmarks/ab_commits.py 733937e HEAD --what simulate # one patient, 24 cycles, best of 5

Each commit is checked out into a temporary git worktree; every round runs
``benchmarks/cohort_scale.py``-like timing of each commit in a fresh subprocess (its own JAX, one
CPU device per core with the tuning flags), alternating A and B so that machine drift hits both.
Prints wall and CPU seconds per patient and the B/A ratios (median over rounds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SIMULATE = r"""
import sys, time, json
sys.path.insert(0, sys.argv[1])
import lenapk
reg = lenapk.load_regimens()["rr_10_to_25_cont"]
lenapk.simulate(reg)   # compile
best = None
for _ in range(5):
    w0, c0 = time.perf_counter(), time.process_time()
    df = lenapk.simulate(reg)
    t = (time.perf_counter() - w0, time.process_time() - c0)
    best = t if best is None or t[0] < best[0] else best
print("AB " + json.dumps({"wall": best[0], "cpu": best[1], "rows": len(df), "anc_nadir_mean": float(df["anc"].min())}))
"""

WORKER = r"""
import sys, time, json
sys.path.insert(0, sys.argv[1])
import lenapk
lenapk.set_host_device_count()
n, block = int(sys.argv[2]), int(sys.argv[3])
reg = lenapk.Regimen.cycles(10.0, n_cycles=24)
lenapk.cohort(reg, n=2 * block, seed=1, progress=False, block_size=block)   # compile
w0, c0 = time.perf_counter(), time.process_time()
df = lenapk.cohort(reg, n=n, seed=0, progress=False, block_size=block)
w, c = time.perf_counter() - w0, time.process_time() - c0
print("AB " + json.dumps({"wall": w, "cpu": c, "rows": len(df), "anc_nadir_mean": float(df["anc_nadir"].mean())}))
"""


def _worktree(commit: str, tmp: Path) -> Path:
    path = tmp / commit.replace("/", "_")
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), commit], check=True, capture_output=True
    )
    return path


def _run(src: Path, n: int, block: int, what: str) -> dict:
    script = WORKER if what == "cohort" else SIMULATE
    out = subprocess.run(
        [sys.executable, "-c", script, str(src), str(n), str(block)], capture_output=True, text=True, check=True
    )
    line = next(x for x in out.stdout.splitlines() if x.startswith("AB "))
    return json.loads(line[3:])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--block-size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--what", choices=("cohort", "simulate"), default="cohort")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trees = {c: _worktree(c, Path(tmp)) / "src" for c in (args.a, args.b)}
        try:
            results = {c: [] for c in trees}
            for r in range(args.rounds):
                for c in (args.a, args.b) if r % 2 == 0 else (args.b, args.a):
                    res = _run(trees[c], args.n, args.block_size, args.what)
                    results[c].append(res)
                    print(
                        f"round {r + 1} {c}: wall {res['wall']:.1f} s, CPU {res['cpu']:.1f} s "
                        f"(mean ANC nadir {res['anc_nadir_mean']:.6f})",
                        flush=True,
                    )
        finally:
            for c in trees:
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(trees[c].parent)], capture_output=True
                )
    med = {c: {k: statistics.median(x[k] for x in v) for k in ("wall", "cpu")} for c, v in results.items()}
    n = args.n if args.what == "cohort" else 1
    for c in (args.a, args.b):
        print(
            f"{c}: median wall {1e3 * med[c]['wall'] / n:.2f} ms/patient, CPU {1e3 * med[c]['cpu'] / n:.2f} ms/patient"
        )
    print(
        f"ratio {args.b}/{args.a} ({args.what}): wall {med[args.b]['wall'] / med[args.a]['wall']:.3f}, "
        f"CPU {med[args.b]['cpu'] / med[args.a]['cpu']:.3f} (n={n}, {args.rounds} rounds)"
    )


if __name__ == "__main__":
    main()
