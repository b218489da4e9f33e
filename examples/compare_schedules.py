"""Compare lenalidomide schedules on one virtual cohort, with and without the label dose rule.

The same virtual patients (common random numbers) receive each schedule:

- the bundled regimens (``data/regimens.csv``): 2.5 -> 5 mg (early-stage trial) and
  10 -> 25 mg by +5 mg every 28 days (Ferrajoli 2008);
- continuous 10 mg/day;
- 25 mg/day on days 1-21 of 28;
- 2.5 -> 25 mg, +2.5 mg every 28 days;

each as planned (every dose given) and under the label rule (``lenapk.label_rule()``: hold while
ANC < 1.0 or platelets < 50 x10^9/L, resume one dose level lower).  Writes ``comparison.csv``
and ``comparison.png`` to ``--out`` and prints the main columns.  ``--optimise`` also searches
for the best schedule under a grade >= 3 neutropenia limit (``lenapk.optimise_schedule``).

    python examples/compare_schedules.py [--quick] [--n N] [--cycles C] [--seed S]
                                         [--setting relapsed|untreated] [--out DIR] [--optimise]

``--quick`` (8 patients, 2 cycles) is for tests and smoke runs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

import lenapk


def schedules(n_cycles: int) -> dict[str, lenapk.Regimen]:
    """The schedules compared, cut to ``n_cycles`` 28-day cycles (the bundled regimens of 28-day
    cycles; the 42-day pulsed ones have other cycles)."""
    regs = {
        rid: reg.first_cycles(n_cycles).renamed(rid)
        for rid, reg in lenapk.load_regimens().items()
        if reg.cycle_days == 28
    }
    regs["cont_10mg"] = lenapk.Regimen.cycles(10, n_cycles=n_cycles, name="cont_10mg")
    regs["25mg_d1_21_of_28"] = lenapk.Regimen.cycles(25, n_cycles=n_cycles, days_on=21, name="25mg_d1_21_of_28")
    # escalation up the dose levels (2.5, 5, 10, 15, 20, 25 mg), one level per cycle
    esc = "2.5mg c1; 5mg c2; 10mg c3; 15mg c4; 20mg c5; 25mg c6+"
    regs["esc_2p5_to_25"] = lenapk.parse_regimen(esc, default_cycles=n_cycles, name="esc_2p5_to_25").first_cycles(
        n_cycles
    )
    return regs


def _ci(row, col, pct=True, digits=0):
    est, lo, hi = row[col], row[f"{col}_lo"], row[f"{col}_hi"]
    if not np.isfinite(est):
        return "-"
    f = (lambda x: f"{100 * x:.{digits}f}") if pct else (lambda x: f"{x:.{digits}f}")
    return f"{f(est)} ({f(lo)}-{f(hi)})"


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="8 patients, 2 cycles (tests, smoke runs)")
    ap.add_argument("--n", type=int, default=200, help="virtual patients (the same for every schedule)")
    ap.add_argument("--cycles", type=int, default=24, help="28-day cycles simulated")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--setting", default="relapsed", choices=["relapsed", "untreated"])
    ap.add_argument("--out", default="compare-output")
    ap.add_argument("--optimise", action="store_true", help="also optimise the schedule under a 30%% limit")
    args = ap.parse_args(argv)
    n, cycles = (8, 2) if args.quick else (args.n, args.cycles)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    base = schedules(cycles)
    regimens = {**base, **{f"{k} + label rule": r for k, r in base.items()}}
    rules = {f"{k} + label rule": lenapk.label_rule() for k in base}
    print(f"comparing {len(regimens)} schedules on {n} virtual patients ({args.setting}), {cycles} cycles")
    table = lenapk.compare(regimens, n=n, seed=args.seed, rules=rules, setting=args.setting)
    table.to_csv(out / "comparison.csv", index=False)
    lenapk.plot_comparison(table, out / "comparison.png")

    show = pd.DataFrame(
        {
            "schedule": table["regimen"],
            "G>=3 neutropenia %": [_ci(r, "g3_neutropenia") for _, r in table.iterrows()],
            "per course %": [_ci(r, "g3_neutropenia_per_course") for _, r in table.iterrows()],
            "response c6 %": [_ci(r, "response_c6") for _, r in table.iterrows()],
            "response c24 %": [_ci(r, "response_c24") for _, r in table.iterrows()],
            "IgG c24 mg/dL": [_ci(r, "igg_change_c24", pct=False) for _, r in table.iterrows()],
            "dose intensity %": [_ci(r, "dose_intensity") for _, r in table.iterrows()],
            "days held": [_ci(r, "days_held", pct=False, digits=1) for _, r in table.iterrows()],
        }
    )
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(show.to_string(index=False))
    print(f"wrote {out / 'comparison.csv'} and {out / 'comparison.png'} ({time.time() - t0:.0f} s)")

    if args.optimise:
        opt = lenapk.optimise_schedule(
            0.30,
            constraint_levels=(0.2, 0.4),
            n=min(n, 64),
            seed=args.seed,
            setting=args.setting,
            n_cycles=min(cycles, 12),
            steps=8 if args.quick else 60,
            progress=True,
        )
        opt.tradeoff.to_csv(out / "tradeoff.csv", index=False)
        lenapk.plot_tradeoff(opt.tradeoff, out / "tradeoff.png")
        print(f"best schedule under a 30% limit: {opt.regimen.name}; hard metrics {opt.metrics}")
        print(opt.tradeoff[["constraint", "response", "toxicity", "schedule"]].to_string(index=False))
    return table


if __name__ == "__main__":
    main()
