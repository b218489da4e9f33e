"""One run of a subcommand: its checked options, its output folder and run log, how it talks, and
:func:`run_command`, which turns user errors into a message and exit code 2."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from ._options import SCHEMAS, UsageError, config_folder, config_label, flag_name, load_config, merge
from ._runlog import RUN_LOG, RunLog


class Run:
    """One command: its checked options, its output folder and its run log, and how it talks
    (quiet: only errors and the final line; verbose: a message per step)."""

    def __init__(self, ctx: typer.Context, values: dict, out: Path, overwrite: bool, config: Optional[Path]):
        self.ctx, self.command = ctx, ctx.command.name
        self.options, self.sources = merge(
            ctx, values, load_config(config, self.command), config, SCHEMAS[self.command]
        )
        self.quiet, self.verbose = self.options["quiet"], self.options["verbose"]
        if self.quiet and self.verbose:
            raise UsageError("--quiet and --verbose exclude each other; give one")
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out must be a folder, got {str(out)!r}, which exists and is not a folder")
        self.out, self.overwrite, self.config = out, overwrite, config
        self.details: dict[str, Any] = {}
        self.log = RunLog(out, self.details)
        self.t0 = time.time()

    # ---------------------------------------------------------------- where an option came from
    def label(self, name: str, flag: Optional[str] = None) -> str:
        """How messages name option ``name``: its flag (``flag`` if given), or where in the config
        file it was set."""
        if self.sources[name] == "config":
            return config_label(name, self.command, self.config)
        return flag or flag_name(name)

    def base(self, name: str) -> Optional[Path]:
        """The folder a relative path in option ``name`` is relative to: the config file's when
        the value came from there, else None (the working directory)."""
        return config_folder(self.config) if self.sources[name] == "config" else None

    # ---------------------------------------------------------------- talking
    def say(self, message: str) -> None:
        """A message shown unless --quiet (stderr)."""
        if not self.quiet:
            typer.echo(message, err=True)

    def step(self, message: str) -> None:
        """A per-step message, shown with --verbose (stderr)."""
        if self.verbose:
            typer.echo(f"[{time.time() - self.t0:6.1f}s] {message}", err=True)

    def show(self, text: str) -> None:
        """A result (table, summary) on stdout, unless --quiet."""
        if not self.quiet:
            typer.echo(text)

    @property
    def progress(self) -> bool:
        return not self.quiet

    # ---------------------------------------------------------------- files
    def target(self, name: str) -> Path:
        """An output file in --out (checked, not created)."""
        path = self.out / name
        if path.exists() and not self.overwrite:
            raise UsageError(f"{path} exists; choose another --out or pass --overwrite")
        return path

    def start(self) -> None:
        """Create the output folder and write the run log: call after every check, before the work."""
        self.out.mkdir(parents=True, exist_ok=True)
        options = dict(self.options, out=self.out, overwrite=self.overwrite, config=self.config)
        self.log.start(self.ctx, options, self.sources)
        self.step(f"options: {json.dumps(self.log.record['options'], sort_keys=True)}")
        self.step(f"run log {self.log.path}")

    def finish(self, outputs: list[Path]) -> None:
        self.log.end("finished", outputs=[str(p) for p in outputs])
        typer.echo(f"wrote {' and '.join(str(p) for p in outputs)} (run log {self.out / RUN_LOG})")

    def failed(self, exc: BaseException) -> None:
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        try:
            self.log.end(status, error=f"{type(exc).__name__}: {exc}")
        except OSError:  # the folder went away: the error itself matters more
            pass


def _fail(message: str) -> None:
    typer.echo(f"lenapk: error: {message}", err=True)
    raise typer.Exit(code=2)


def run_command(
    ctx: typer.Context,
    values: dict,
    out: Path,
    overwrite: bool,
    config,
    body: Callable[[Run], None],
    *,
    run_class: type = Run,
    user_errors: tuple = (),
) -> None:
    """Check the options, run the body; user errors end with a message and exit code 2, and every
    end of a started run (also a crash or Ctrl-C) is recorded in its run log.  ``run_class``: the
    :class:`Run` (sub)class that reads the options; ``user_errors``: more exception types that are
    the user's to fix."""
    from ..calibration import DatasetError

    run = None
    try:
        run = run_class(ctx, values, out, overwrite, config)
        body(run)
    except (UsageError, ValueError, DatasetError, FileNotFoundError, *user_errors) as exc:
        if run is not None:
            run.failed(exc)
        _fail(str(exc))
    except BaseException as exc:
        if run is not None:
            run.failed(exc)
        raise
