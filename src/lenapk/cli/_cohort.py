"""``lenapk cohort``: a virtual cohort, drawn or from a patients table (``--patients``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._app import (
    ConfigOpt,
    CyclesOpt,
    OutOpt,
    OverwriteOpt,
    QuietOpt,
    RegimenHelp,
    RulesOpt,
    SeedOpt,
    SettingOpt,
    VerboseOpt,
)
from ._patients import fill_lines, read_patients
from ._regimens import cohort_regimen, dose_rules
from ._run import Run, run_command


def _readable(summary):
    """The trial summary for the terminal: endpoints with patients, "estimate (95% CI)" each
    (rates as percentages)."""
    from ..report import fmt

    rows = summary[summary["n"] > 0]
    cells = [
        fmt.interval(e, lo, hi, pct=stat == "rate")
        for e, lo, hi, stat in zip(rows["estimate"], rows["ci_low"], rows["ci_high"], rows["statistic"])
    ]
    return rows.assign(**{"estimate (95% CI)": cells})[["endpoint", "n", "estimate (95% CI)"]]


def _cohort(run: Run) -> None:
    import lenapk

    o = run.options
    lenapk.set_host_device_count(o["cpu_devices"] or None)  # effective when JAX has not started yet
    patients = read_patients(run, lenapk.default_model())
    regimen = cohort_regimen(run, patients)
    summary_csv = run.target("summary.csv")
    run.start()

    table = None if patients is None else patients.table
    if patients is not None:
        run.say(f"{len(table)} patients from {o['patients']}")
        for line in fill_lines(patients.filled, o["setting"], o["seed"]):
            run.say(line)
    run.step(f"cohort: {len(table) if table is not None else o['n']} patients -> {run.out / 'patients'}")
    df = lenapk.cohort(
        regimen,
        n=None if table is not None else o["n"],
        seed=o["seed"],
        patients=table,
        setting=o["setting"],
        rules=dose_rules(o["rules"]),
        chunk_size=o["chunk_size"],
        block_size=o["block_size"],
        out=run.out / "patients",
        overwrite=run.overwrite,
        progress=run.progress,
    )
    run.step("trial summary")
    summary = lenapk.trial_summary(df)
    summary.to_csv(summary_csv, index=False)
    run.show(_readable(summary).to_string(index=False))
    run.finish([run.out / "patients", summary_csv])


def cohort(
    ctx: typer.Context,
    regimen: str = typer.Option(
        "rr_10_to_25_cont",
        metavar="ID|FILE|SPEC",
        help=RegimenHelp + "  An event table with several IDs gives each patient of --patients its own regimen.",
    ),
    n: str = typer.Option("1000", metavar="N", help="Number of virtual patients (without --patients)."),
    seed: str = SeedOpt,
    setting: str = SettingOpt,
    rules: str = RulesOpt,
    cycles: Optional[str] = CyclesOpt,
    chunk_size: str = typer.Option("1024", metavar="N", help="Patients per output file / resumable unit."),
    block_size: str = typer.Option("256", metavar="N", help="Patients solved together as one ODE."),
    patients: Optional[Path] = typer.Option(
        None,
        metavar="FILE",
        help="CSV of patients (one row each, covariate columns, optional 'patient' id column); "
        "missing covariate columns are filled as --fill says.",
    ),
    fill: str = typer.Option(
        "drawn",
        metavar="drawn|typical",
        help="With --patients, covariate columns the table lacks are 'drawn' from the setting's "
        "distributions or set to the model's 'typical' values.",
    ),
    cpu_devices: str = typer.Option(
        "0", metavar="N", help="JAX CPU devices to solve blocks on in parallel (0: one per core)."
    ),
    out: Path = OutOpt,
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
):
    """Run a virtual cohort: per-patient Parquet dataset (resumable) and a summary CSV."""
    values = dict(
        regimen=regimen,
        n=n,
        seed=seed,
        setting=setting,
        rules=rules,
        cycles=cycles,
        chunk_size=chunk_size,
        block_size=block_size,
        patients=patients,
        fill=fill,
        cpu_devices=cpu_devices,
        quiet=quiet,
        verbose=verbose,
    )
    run_command(ctx, values, out, overwrite, config, _cohort)
