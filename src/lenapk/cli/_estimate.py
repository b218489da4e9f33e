"""``lenapk estimate``: a population (NLME) fit to a NONMEM data set, with its report.

``--config`` here is the model's TOML file (``[model]``, ``[theta]``, ``[omega]``, ``[sigma]``,
``[parameters]``: see :mod:`lenapk.estimation._builtin`); its optional ``[estimate]`` table holds
this command's options (the command line wins), as the other subcommands' tables do.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Optional

import typer

from ._app import OutOpt, OverwriteOpt, QuietOpt, VerboseOpt
from ._options import UsageError, _choice, _file, _flag, _text, _whole, merge
from ._run import Run, run_command
from ._runlog import RunLog

OBJECTIVE_NOTE = "-2LL without the n*log(2*pi) constant"
OUTPUTS = ("estimates.csv", "fit.json", "tables.csv", "etas.csv", "vpc.csv", "report.html")


def _methods() -> tuple:
    from ..estimation import METHODS

    return METHODS


def _names(label, value):
    """Column names: a comma-separated string (command line) or a TOML list."""
    items = [] if value is None else value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) and v.strip().isidentifier() for v in items):
        raise UsageError(f"{label} must be column names separated by commas (e.g. WT,AGE), got {value!r}")
    return [v.strip() for v in items]


def _replicates(label, value):
    n = _whole(0)(label, value)
    if 0 < n < 20:
        raise UsageError(f"{label} must be 0 (no VPC) or at least 20 (for 90% intervals), got {value!r}")
    return n


def _optional_text(label, value):
    return None if value is None else _text(label, value)


SCHEMA = dict(
    data=_file,
    model=_optional_text,
    method=_choice(_methods),
    covariates=_names,
    drop=_names,
    ignore=_optional_text,
    no_covariance=_flag,
    hessian=_choice(("ad", "fd")),
    vpc_replicates=_replicates,
    seed=_whole(0),
    quiet=_flag,
    verbose=_flag,
)


class EstimateRun(Run):
    """A :class:`Run` whose TOML options are the ``[estimate]`` table of the model file."""

    def __init__(self, ctx: typer.Context, values: dict, out: Path, overwrite: bool, config: Optional[Path]):
        self.ctx, self.command, self.config = ctx, ctx.command.name, config
        table = _estimate_table(config)
        self.options, self.sources = merge(ctx, values, table, config, SCHEMA)
        for required in ("data", "model"):
            if self.options[required] is None:
                raise UsageError(f"--{required} is required (on the command line or in [estimate] of --config)")
        self.quiet, self.verbose = self.options["quiet"], self.options["verbose"]
        if self.quiet and self.verbose:
            raise UsageError("--quiet and --verbose exclude each other; give one")
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out must be a folder, got {str(out)!r}, which exists and is not a folder")
        self.out, self.overwrite, self.details = out, overwrite, {}
        self.log = RunLog(out, self.details)
        self.t0 = time.time()


def _estimate_table(config: Optional[Path]) -> dict:
    if config is None:
        return {}
    from ..estimation._builtin import _read_toml

    try:
        table = _read_toml(config).get("estimate", {})
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(f"--config: {exc}") from None
    if not isinstance(table, dict):
        raise UsageError(f"--config {config}: [estimate] must be a table")
    return {str(k).replace("-", "_"): v for k, v in table.items()}


def _model_spec(run: EstimateRun) -> str:
    """A built-in name as given; a Python file from [estimate] relative to the TOML's folder."""
    from ..estimation import PK_STRUCTURES

    spec, base = run.options["model"], run.base("model")
    return spec if spec in PK_STRUCTURES or base is None else str(base / spec)


def _finite(x):
    x = float(x)
    return x if math.isfinite(x) else None


def _fit_json(result, shrink) -> dict:
    cov = result.covariance
    return {
        "ofv": result.ofv,
        "objective_note": OBJECTIVE_NOTE,
        "minus2ll": result.minus2ll,
        "aic": result.aic,
        "bic": result.bic,
        "method": result.method,
        "converged": result.converged,
        "message": result.message,
        "n_iterations": result.n_iterations,
        "n_subjects": result.n_subjects,
        "n_observations": result.n_observations,
        "condition_number": None if cov is None else _finite(cov.condition_number),
        "covariance_ok": None if cov is None else cov.ok,
        "covariance_message": "not run (--no-covariance)" if cov is None else cov.message,
        "shrinkage": {k: _finite(v) for k, v in shrink.items()},
    }


def _estimate(run: EstimateRun) -> None:
    from ..estimation import estimate, observation_table, read_nonmem, shrinkage, vpc
    from ..estimation._builtin import load_model
    from ..report._estimation import estimation_report

    o = run.options
    targets = {name: run.target(name) for name in OUTPUTS if name != "vpc.csv" or o["vpc_replicates"]}
    model = load_model(_model_spec(run), run.config)
    covariates = list(dict.fromkeys([c.upper() for c in o["covariates"]] + list(model.covariates)))
    data = read_nonmem(o["data"], covariates=covariates, drop=o["drop"], ignore=o["ignore"])
    run.start()
    run.say(f"fitting {model.name} by {o['method']} to {data.n_subjects} subjects, {data.n_observations} observations")
    covariance = None if o["no_covariance"] else "sandwich"
    result = estimate(model, data, o["method"], covariance=covariance, hessian=o["hessian"])
    est = result.estimates()[["parameter", "estimate", "se", "rse_percent", "kind", "fixed"]]
    est.to_csv(targets["estimates.csv"], index=False)
    run.step("diagnostics")
    table = observation_table(result)
    table.to_csv(targets["tables.csv"], index=False)
    result.eta_table().to_csv(targets["etas.csv"], index=False)
    shrink = shrinkage(result, table)
    targets["fit.json"].write_text(json.dumps(_fit_json(result, shrink), indent=1) + "\n")
    vpc_table = None
    if o["vpc_replicates"]:
        run.step(f"VPC ({o['vpc_replicates']} replicates)")
        vpc_table = vpc(result, n_replicates=o["vpc_replicates"], seed=o["seed"])
        vpc_table.to_csv(targets["vpc.csv"], index=False)
    estimation_report(result, run.out, vpc_table=vpc_table, table=table)
    run.details["fit"] = dict(ofv=result.ofv, converged=result.converged, message=result.message)
    run.show(f"OFV {result.ofv:.4f} ({OBJECTIVE_NOTE}); {result.message}\n{est.to_string(index=False)}")
    run.finish(list(targets.values()))


def estimate(
    ctx: typer.Context,
    data: Optional[Path] = typer.Option(None, metavar="FILE", help="NONMEM data set (CSV, or whitespace-separated)."),
    model: Optional[str] = typer.Option(
        None,
        metavar="NAME|FILE",
        help="A built-in model (one_cmt_iv, one_cmt_oral, two_cmt_iv, two_cmt_oral) or a Python file defining `model`.",
    ),
    config: Optional[Path] = typer.Option(
        None, "--config", metavar="TOML", help="The model's TOML file ([theta], [omega], ...; [estimate]: options)."
    ),
    method: str = typer.Option("focei", metavar="focei|foce|fo|laplace", help="Estimation method."),
    out: Path = OutOpt,
    covariates: Optional[str] = typer.Option(None, metavar="A,B", help="Covariate columns to read (e.g. WT,AGE)."),
    drop: Optional[str] = typer.Option(None, metavar="A,B", help="Columns to drop first (NONMEM's DROP)."),
    ignore: Optional[str] = typer.Option(None, metavar="EXPR", help='Records to ignore, e.g. "SD == 0".'),
    no_covariance: bool = typer.Option(False, "--no-covariance", help="Skip the covariance step (no SEs)."),
    hessian: str = typer.Option(
        "ad", metavar="ad|fd", help="R matrix by automatic differentiation or by differences of the exact gradient."
    ),
    vpc_replicates: str = typer.Option("200", metavar="N", help="VPC replicates (0: no VPC)."),
    seed: str = typer.Option("0", metavar="N", help="Seed of the VPC simulations."),
    overwrite: bool = OverwriteOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
):
    """Fit a population model to a NONMEM data set: estimates, tables, VPC and an HTML report."""
    from ..estimation import EstimationError

    values = dict(
        data=data,
        model=model,
        method=method,
        covariates=covariates,
        drop=drop,
        ignore=ignore,
        no_covariance=no_covariance,
        hessian=hessian,
        vpc_replicates=vpc_replicates,
        seed=seed,
        quiet=quiet,
        verbose=verbose,
    )
    run_command(ctx, values, out, overwrite, config, _estimate, run_class=EstimateRun, user_errors=(EstimationError,))
