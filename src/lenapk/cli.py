"""The ``lenapk`` command line (typer): simulate, fit, cohort, compare, report.

Every subcommand works on the bundled data with its defaults, takes options from a TOML file
(``--config FILE``: a table per subcommand, e.g. ``[cohort]`` with ``n = 1000``; options given
on the command line win), writes into the folder named by ``--out`` and never overwrites an
existing file unless ``--overwrite`` is given.  Bad input ends with a clear message and exit
code 2.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    name="lenapk",
    help="Lenalidomide in CLL: simulate, fit, virtual cohorts, schedule comparison, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = typer.Option(None, "--config", help="TOML file with options (a [subcommand] table).")
OutOpt = typer.Option(..., "--out", help="Output folder (created if missing).")
OverwriteOpt = typer.Option(False, "--overwrite", help="Replace existing output files.")


class UsageError(Exception):
    """Bad input from the user: printed without a traceback, exit code 2."""


def _fail(message: str) -> None:
    typer.echo(f"lenapk: error: {message}", err=True)
    raise typer.Exit(code=2)


def load_config(path: Optional[Path], section: str) -> dict:
    """The ``[section]`` table of a TOML file ({} without a file); errors name the file."""
    if path is None:
        return {}
    if not path.is_file():
        raise UsageError(f"config file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"simulate", "fit", "cohort", "compare", "report"})
    if unknown:
        raise UsageError(
            f"config file {path}: unknown table(s) {unknown}; expected simulate, fit, cohort, compare, report"
        )
    table = data.get(section, {})
    if not isinstance(table, dict):
        raise UsageError(f"config file {path}: [{section}] must be a table")
    return table


def _merge(ctx: typer.Context, config: dict, allowed: dict) -> dict:
    """Command-line values win over the config file, which wins over defaults."""
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise UsageError(f"config: unknown option(s) {unknown} for '{ctx.command.name}'; allowed {sorted(allowed)}")
    out = {}
    for name, value in allowed.items():
        source = ctx.get_parameter_source(name)
        from_cli = source is not None and source.name == "COMMANDLINE"
        out[name] = value if from_cli or name not in config else config[name]
    return out


def _out_dir(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _target(out: Path, name: str, overwrite: bool) -> Path:
    path = out / name
    if path.exists() and not overwrite:
        raise UsageError(f"{path} exists; choose another --out or pass --overwrite")
    return path


def _regimen(regimen_id: str, cycles: Optional[int] = None):
    """A bundled regimen, optionally cut to its first ``cycles`` cycles."""
    import lenapk

    regs = lenapk.load_regimens()
    if regimen_id not in regs:
        raise UsageError(f"unknown regimen {regimen_id!r}; bundled regimens: {', '.join(sorted(regs))}")
    reg = regs[regimen_id]
    if cycles is None:
        return reg
    if not (isinstance(cycles, int) and cycles >= 1):
        raise UsageError(f"--cycles must be a whole number >= 1, got {cycles!r}")
    return reg.first_cycles(cycles)


CyclesOpt = typer.Option(None, "--cycles", help="Use only the first N cycles of the regimen.")


def _rules(name: str):
    import lenapk

    if name == "none":
        return None
    if name == "label":
        return lenapk.label_rule()
    raise UsageError(f"--rules must be 'label' or 'none', got {name!r}")


def _run(fn):
    """Run a command body, turning user errors into exit code 2 with a message."""
    from .calibration import DatasetError

    try:
        fn()
    except (UsageError, ValueError, DatasetError, FileNotFoundError) as exc:
        _fail(str(exc))


@app.command()
def simulate(
    ctx: typer.Context,
    regimen: str = typer.Option("rr_10_to_25_cont", help="Bundled regimen id."),
    rules: str = typer.Option("none", help="Dose rules: 'label' or 'none'."),
    days: Optional[int] = typer.Option(None, help="Days to simulate (default: the regimen's length)."),
    cycles: Optional[int] = CyclesOpt,
    out: Path = OutOpt,
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOpt,
):
    """Simulate the typical patient under a regimen: CSV and a PNG of the trajectories."""

    def body():
        import lenapk

        from .report import plot_trajectories

        o = _merge(ctx, load_config(config, "simulate"), dict(regimen=regimen, rules=rules, days=days, cycles=cycles))
        folder = _out_dir(out)
        csv, png = _target(folder, "simulation.csv", overwrite), _target(folder, "simulation.png", overwrite)
        df = lenapk.simulate(_regimen(o["regimen"], o["cycles"]), days=o["days"], rules=_rules(o["rules"]))
        df.to_csv(csv, index=False)
        plot_trajectories({o["regimen"]: df}, png, lenapk.default_model())
        last = df.iloc[-1]
        typer.echo(
            f"{o['regimen']}: {len(df)} rows; ANC nadir {df['anc'].min():.2f} x10^9/L on day "
            f"{int(df['anc'].idxmin())}; ALC {df['alc'].iloc[0]:.1f} -> {last['alc']:.1f}; "
            f"IgG {df['igg'].iloc[0]:.0f} -> {last['igg']:.0f} mg/dL\nwrote {csv} and {png}"
        )

    _run(body)


@app.command()
def fit(
    ctx: typer.Context,
    steps: int = typer.Option(60, help="Optimiser iterations."),
    n_patients: int = typer.Option(64, help="Virtual patients per study for rate endpoints."),
    seed: int = typer.Option(0, help="Seed of the virtual population."),
    observations: Optional[Path] = typer.Option(None, help="Observation table (CSV) in the bundled format."),
    out: Path = OutOpt,
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOpt,
):
    """Fit the model to the trial summaries: estimates with SEs and observed-vs-predicted tables."""

    def body():
        import lenapk

        o = _merge(
            ctx,
            load_config(config, "fit"),
            dict(steps=steps, n_patients=n_patients, seed=seed, observations=observations),
        )
        folder = _out_dir(out)
        est_csv = _target(folder, "estimates.csv", overwrite)
        ovp_csv = _target(folder, "observed_vs_predicted.csv", overwrite)
        obs = lenapk.load_observations(o["observations"])
        result = lenapk.fit(obs, steps=int(o["steps"]), n_patients=int(o["n_patients"]), seed=int(o["seed"]))
        result.estimates_table().to_csv(est_csv, index=False)
        result.observed_vs_predicted.to_csv(ovp_csv, index=False)
        typer.echo(result.summary())
        typer.echo(f"wrote {est_csv} and {ovp_csv}")

    _run(body)


@app.command()
def cohort(
    ctx: typer.Context,
    regimen: str = typer.Option("rr_10_to_25_cont", help="Bundled regimen id."),
    n: int = typer.Option(1000, help="Number of virtual patients."),
    seed: int = typer.Option(0, help="Random seed (patient i's draws depend only on seed and i)."),
    setting: str = typer.Option("relapsed", help="'untreated' or 'relapsed'."),
    rules: str = typer.Option("label", help="Dose rules: 'label' or 'none'."),
    cycles: Optional[int] = CyclesOpt,
    chunk_size: int = typer.Option(1024, help="Patients per output file / resumable unit."),
    block_size: int = typer.Option(256, help="Patients solved together as one ODE."),
    patients: Optional[Path] = typer.Option(None, help="CSV of patients (one row each, covariate columns)."),
    cpu_devices: int = typer.Option(0, help="JAX CPU devices to solve blocks on in parallel (0: one per core)."),
    out: Path = OutOpt,
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOpt,
):
    """Run a virtual cohort: per-patient Parquet dataset (resumable) and a summary CSV."""

    def body():
        import pandas as pd

        import lenapk

        if cpu_devices < 0:
            raise UsageError(f"--cpu-devices must be >= 0 (0: one per core), got {cpu_devices}")
        lenapk.set_host_device_count(cpu_devices or None)  # effective when JAX has not started yet

        o = _merge(
            ctx,
            load_config(config, "cohort"),
            dict(
                regimen=regimen,
                n=n,
                seed=seed,
                setting=setting,
                rules=rules,
                cycles=cycles,
                chunk_size=chunk_size,
                block_size=block_size,
                patients=patients,
            ),
        )
        folder = _out_dir(out)
        summary_csv = _target(folder, "summary.csv", overwrite)
        table = None
        if o["patients"] is not None:
            path = Path(o["patients"])
            if not path.is_file():
                raise UsageError(f"--patients {path} does not exist")
            table = pd.read_csv(path)
        df = lenapk.cohort(
            _regimen(o["regimen"], o["cycles"]),
            n=None if table is not None else int(o["n"]),
            seed=int(o["seed"]),
            patients=table,
            setting=o["setting"],
            rules=_rules(o["rules"]),
            chunk_size=int(o["chunk_size"]),
            block_size=int(o["block_size"]),
            out=folder / "patients",
        )
        summary = lenapk.trial_summary(df)
        summary.to_csv(summary_csv, index=False)
        typer.echo(summary.to_string(index=False))
        typer.echo(f"wrote {folder / 'patients'} (Parquet) and {summary_csv}")

    _run(body)


@app.command()
def compare(
    ctx: typer.Context,
    regimens: str = typer.Option(
        "early_2p5_then_5_cont,rr_10_to_25_cont",
        help="Comma-separated bundled regimen ids, or 'standard' for the report's schedule set.",
    ),
    n: int = typer.Option(200, help="Virtual patients (the same for every regimen)."),
    seed: int = typer.Option(0, help="Random seed."),
    setting: str = typer.Option("relapsed", help="'untreated' or 'relapsed'."),
    rules: str = typer.Option("label", help="Dose rules: 'label' or 'none'."),
    cycles: Optional[int] = CyclesOpt,
    out: Path = OutOpt,
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOpt,
):
    """Compare regimens on one virtual cohort (common random numbers): table and figure."""

    def body():
        import lenapk

        from .models.cll import standard_schedules

        o = _merge(
            ctx,
            load_config(config, "compare"),
            dict(regimens=regimens, n=n, seed=seed, setting=setting, rules=rules, cycles=cycles),
        )
        folder = _out_dir(out)
        csv, png = _target(folder, "comparison.csv", overwrite), _target(folder, "comparison.png", overwrite)
        ids = o["regimens"] if isinstance(o["regimens"], list) else str(o["regimens"]).split(",")
        regs = (
            standard_schedules(int(o["cycles"] or 24))
            if ids == ["standard"]
            else {i.strip(): _regimen(i.strip()) for i in ids if i.strip()}
        )
        table = lenapk.compare(
            regs,
            n=int(o["n"]),
            seed=int(o["seed"]),
            rules=_rules(o["rules"]),
            setting=o["setting"],
            n_cycles=o["cycles"],
        )
        table.to_csv(csv, index=False)
        lenapk.plot_comparison(table, png)
        typer.echo(table.to_string(index=False))
        typer.echo(f"wrote {csv} and {png}")

    _run(body)


@app.command()
def report(
    ctx: typer.Context,
    out: Path = OutOpt,
    n: int = typer.Option(200, help="Virtual patients for the cohort parts."),
    seed: int = typer.Option(0, help="Random seed."),
    fit_steps: int = typer.Option(15, help="Optimiser iterations of the refit (from the calibrated defaults)."),
    quick: bool = typer.Option(False, "--quick", help="Tiny cohort and short fit (for tests)."),
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOpt,
):
    """Fit the bundled data, compare the standard schedules, write a self-contained HTML report."""

    def body():
        from .models.cll import build_report

        o = _merge(ctx, load_config(config, "report"), dict(n=n, seed=seed, fit_steps=fit_steps, quick=quick))
        folder = _out_dir(out)
        html = _target(folder, "report.html", overwrite)
        path = build_report(
            html,
            n=int(o["n"]),
            seed=int(o["seed"]),
            fit_steps=int(o["fit_steps"]),
            quick=bool(o["quick"]),
            progress=lambda msg: typer.echo(msg),
        )
        typer.echo(f"wrote {path}")

    _run(body)


def main() -> None:  # pragma: no cover - console entry
    app(prog_name="lenapk")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
