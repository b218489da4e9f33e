"""Simulate the typical patient under each bundled regimen; print a summary, write a CSV and a plot.

python examples/quickstart.py [--out DIR] [--cycles N]
"""

import argparse
from pathlib import Path

import pandas as pd

import lenapk
from lenapk.report import plot_trajectories


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="quickstart-output")
    ap.add_argument("--cycles", type=int, default=24)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = lenapk.LenalidomideCLL()
    frames = {}
    for rid, reg in lenapk.load_regimens().items():
        df = lenapk.simulate(reg.first_cycles(args.cycles), model=model)
        frames[rid] = df
        end = df.iloc[-1]
        nadir = int(df["anc"].idxmin())
        print(
            f"{rid}: ANC nadir {df['anc'].min():.2f} x10^9/L (day {int(df['day'].iloc[nadir])}), "
            f"ALC {df['alc'].iloc[0]:.1f} -> {end['alc']:.1f} x10^9/L, "
            f"IgG {df['igg'].iloc[0]:.0f} -> {end['igg']:.0f}, "
            f"IgM {df['igm'].iloc[0]:.0f} -> {end['igm']:.0f} mg/dL"
        )
    table = pd.concat([df.assign(regimen_id=rid)[["regimen_id", *df.columns]] for rid, df in frames.items()])
    table.to_csv(out / "trajectories.csv", index=False)
    plot_trajectories(frames, out / "trajectories.png", model)
    print(f"wrote {out / 'trajectories.csv'} and {out / 'trajectories.png'}")


if __name__ == "__main__":
    main()
