"""Simulate the typical patient under each bundled regimen; print a summary, write a CSV and a plot.

    python examples/quickstart.py [--out DIR] [--cycles N]
"""

import argparse
from pathlib import Path

import numpy as np

import lenapk
from lenapk.report import plot_trajectories


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="quickstart-output")
    ap.add_argument("--cycles", type=int, default=24)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frames = {}
    for rid, reg in lenapk.load_regimens().items():
        reg = lenapk.Regimen.from_daily_doses(np.asarray(reg.doses)[: args.cycles * 28], name=rid)
        df = lenapk.simulate(reg)
        df.insert(0, "regimen_id", rid)
        frames[rid] = df
        end = df.iloc[-1]
        print(f"{rid}: ANC nadir {df['anc'].min():.2f} x10^9/L (day {int(df['anc'].idxmin())}), "
              f"ALC {df['alc'].iloc[0]:.1f} -> {end['alc']:.1f} x10^9/L, "
              f"IgG {df['igg'].iloc[0]:.0f} -> {end['igg']:.0f}, IgM {df['igm'].iloc[0]:.0f} -> {end['igm']:.0f} mg/dL")
    import pandas as pd

    pd.concat(frames.values()).to_csv(out / "trajectories.csv", index=False)
    plot_trajectories(frames, out / "trajectories.png")
    print(f"wrote {out / 'trajectories.csv'} and {out / 'trajectories.png'}")


if __name__ == "__main__":
    main()
