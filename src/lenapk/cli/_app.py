"""The typer app and the options the subcommands share (each subcommand's module adds itself)."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="lenapk",
    help="Lenalidomide in CLL: simulate, fit, virtual cohorts, schedule comparison, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: "[cohort]" and other brackets are shown as written
)

ConfigOpt = typer.Option(
    None,
    "--config",
    metavar="FILE",
    help="TOML file with options: a table per subcommand, e.g. [cohort] with n = 1000 (the command line wins).",
)
OutOpt = typer.Option(..., "--out", metavar="DIR", help="Output folder (created if missing).")
OverwriteOpt = typer.Option(False, "--overwrite", help="Replace existing output files.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bars or messages: only errors and 'wrote ...'.")
VerboseOpt = typer.Option(False, "--verbose", "-v", help="Also print a message for every step.")
RegimenHelp = (
    "A bundled regimen id, a NONMEM event-table CSV file or a regimen spec such as '10mg d1-21/28 x12', "
    "'2.5mg c1; 5mg c2-24 continuous' or '15mg q48h x6'."
)
CyclesOpt = typer.Option(
    None, metavar="N", help="Use only the first N cycles of the regimen (and N cycles for an open-ended spec)."
)
RulesOpt = typer.Option("label", metavar="label|none", help="Dose rules: 'label' or 'none'.")
SeedOpt = typer.Option("0", metavar="N", help="Random seed (patient i's draws depend only on the seed and i).")
SettingOpt = typer.Option("relapsed", metavar="SETTING", help="Population: 'untreated' or 'relapsed'.")
