"""``lenapk report``: the self-contained HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ._app import ConfigOpt, OutOpt, OverwriteOpt, QuietOpt, RegimenHelp, VerboseOpt
from ._options import UsageError
from ._regimens import named_regimens
from ._run import Run, run_command


def _report(run: Run) -> None:
    from ..models.cll import build_report

    o = run.options
    regs = named_regimens(run, [("regimen", v) for v in o["regimen"]], None) if o["regimen"] else None
    if not o["standard"] and not regs:
        raise UsageError("--no-standard leaves nothing to compare: give at least one --regimen")
    html = run.target("report.html")
    run.start()
    path = build_report(
        html,
        n=o["n"],
        seed=o["seed"],
        quick=o["quick"],
        progress=run.say,
        progress_bars=run.progress,
        regimens=regs,
        standard=o["standard"],
    )
    run.finish([Path(path)])


def report(
    ctx: typer.Context,
    out: Path = OutOpt,
    n: str = typer.Option("200", metavar="N", help="Virtual patients for the cohort parts."),
    seed: str = typer.Option("0", metavar="N", help="Random seed."),
    quick: bool = typer.Option(False, "--quick", help="Tiny cohorts, 3 cycles, short optimisation (for tests)."),
    regimen: Optional[List[str]] = typer.Option(
        None,
        "--regimen",
        metavar="ID|FILE|SPEC",
        help="Repeatable: a schedule to add to the report's comparison. " + RegimenHelp,
    ),
    standard: bool = typer.Option(
        True, "--standard/--no-standard", help="Compare the standard schedules too (--no-standard: only --regimen)."
    ),
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
):
    """The model at its calibrated defaults against the bundled trials, schedules compared on one
    virtual cohort, the trade-off: a self-contained HTML report.

    Each step of the report is announced (unless --quiet).
    """
    values = dict(
        n=n,
        seed=seed,
        quick=quick,
        regimen=regimen or None,
        standard=standard,
        quiet=quiet,
        verbose=verbose,
    )
    run_command(ctx, values, out, overwrite, config, _report)
