"""``lenapk simulate``: the typical patient under a regimen."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._app import ConfigOpt, CyclesOpt, OutOpt, OverwriteOpt, QuietOpt, RegimenHelp, VerboseOpt
from ._regimens import dose_rules, one_regimen
from ._run import Run, run_command


def _simulate(run: Run) -> None:
    o = run.options
    name, reg = one_regimen(run)
    csv, png = run.target("simulation.csv"), run.target("simulation.png")
    run.start()

    import lenapk

    from ..report import plot_trajectories

    run.step(f"simulating {name!r} ({reg.n_days} days, {reg.n_events} dose events)")
    df = lenapk.simulate(reg, days=o["days"], rules=dose_rules(o["rules"]))
    df.to_csv(csv, index=False)
    run.step(f"plotting {png}")
    plot_trajectories({name: df}, png, lenapk.default_model())
    last = df.iloc[-1]
    run.show(
        f"{name}: {len(df)} rows; ANC nadir {df['anc'].min():.2f} x10^9/L on day "
        f"{int(df['anc'].idxmin())}; ALC {df['alc'].iloc[0]:.1f} -> {last['alc']:.1f}; "
        f"IgG {df['igg'].iloc[0]:.0f} -> {last['igg']:.0f} mg/dL"
    )
    run.finish([csv, png])


def simulate(
    ctx: typer.Context,
    regimen: str = typer.Option("rr_10_to_25_cont", metavar="ID|FILE|SPEC", help=RegimenHelp),
    rules: str = typer.Option("none", metavar="label|none", help="Dose rules: 'label' or 'none'."),
    days: Optional[str] = typer.Option(None, metavar="N", help="Days to simulate (default: the regimen's length)."),
    cycles: Optional[str] = CyclesOpt,
    out: Path = OutOpt,
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
):
    """Simulate the typical patient under a regimen: CSV and a PNG of the trajectories.

    An event-table CSV must hold one patient (one ID).
    """
    values = dict(regimen=regimen, rules=rules, days=days, cycles=cycles, quiet=quiet, verbose=verbose)
    run_command(ctx, values, out, overwrite, config, _simulate)
