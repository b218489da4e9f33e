"""``lenapk fit``: the model fitted to the trial summaries."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._app import ConfigOpt, OutOpt, OverwriteOpt, QuietOpt, VerboseOpt
from ._run import Run, run_command


def _fit(run: Run) -> None:
    import lenapk

    o = run.options
    est_csv, ovp_csv = run.target("estimates.csv"), run.target("observed_vs_predicted.csv")
    obs = lenapk.load_observations(o["observations"])  # a bad table is refused before anything is written
    run.start()
    run.step(f"fitting ({o['steps']} steps, {o['n_patients']} patients per study, seed {o['seed']})")
    result = lenapk.fit(obs, steps=o["steps"], n_patients=o["n_patients"], seed=o["seed"], progress=run.progress)
    result.estimates_table().to_csv(est_csv, index=False)
    result.observed_vs_predicted.to_csv(ovp_csv, index=False)
    run.details["fit"] = dict(objective=result.objective, converged=result.converged, message=result.message)
    run.show(result.summary())
    run.finish([est_csv, ovp_csv])


def fit(
    ctx: typer.Context,
    steps: str = typer.Option("60", metavar="N", help="Optimiser iterations."),
    n_patients: str = typer.Option("64", metavar="N", help="Virtual patients per study for rate endpoints."),
    seed: str = typer.Option("0", metavar="N", help="Seed of the virtual population."),
    observations: Optional[Path] = typer.Option(
        None, metavar="FILE", help="Observation table (CSV) in the bundled format (default: the bundled data)."
    ),
    out: Path = OutOpt,
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
):
    """Fit the model to the trial summaries: estimates with SEs and observed-vs-predicted tables."""
    values = dict(
        steps=steps, n_patients=n_patients, seed=seed, observations=observations, quiet=quiet, verbose=verbose
    )
    run_command(ctx, values, out, overwrite, config, _fit)
