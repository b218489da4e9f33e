"""The run log ``run.json``: what a command was asked (versions, the command, every option and
where it came from), written with status ``"running"`` before the work starts and rewritten at
the end (finish time, outputs, or the error).  Each write replaces the file atomically."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import time
import uuid
from pathlib import Path

import typer

RUN_LOG = "run.json"


def command_line(ctx: typer.Context) -> str:
    """The command as typed (options given on the command line, in declaration order)."""
    words = ["lenapk", ctx.command.name]
    for p in ctx.command.params:
        source = ctx.get_parameter_source(p.name)
        if source is None or source.name != "COMMANDLINE":
            continue
        value = ctx.params.get(p.name)
        if getattr(p, "is_flag", False):
            if p.secondary_opts and not value:
                words.append(p.secondary_opts[0])
            elif value:
                words.append(p.opts[0])
        elif isinstance(value, (list, tuple)):
            for v in value:
                words += [p.opts[0], str(v)]
        elif value is not None:
            words += [p.opts[0], str(value)]
    return shlex.join(words)


def _versions() -> dict:
    from importlib import metadata

    from .._version import __version__

    out = {"lenapk": __version__, "python": platform.python_version()}
    for pkg in ("jax", "jaxlib", "diffrax", "equinox", "numpy", "pandas"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:  # pragma: no cover
            out[pkg] = None
    return out


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="milliseconds")


def jsonable(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def _previous_run(path: Path) -> dict | None:
    """What the run log already in the folder says of its run (None without one)."""
    if not path.is_file():
        return None
    try:
        old = json.loads(path.read_text())
        return {k: old.get(k) for k in ("command_line", "started", "finished", "status")}
    except (OSError, ValueError, AttributeError):
        return {"status": "unreadable run log"}


class RunLog:
    """The run log of one command in its output folder; ``details`` (a dict the command fills as
    it goes) is written with every update."""

    def __init__(self, out: Path, details: dict):
        self.path, self.details = out / RUN_LOG, details
        self.record: dict | None = None

    def start(self, ctx: typer.Context, options: dict, sources: dict) -> None:
        """Write the log with status "running" (the folder must exist)."""
        self.record = {
            "command": ctx.command.name,
            "command_line": command_line(ctx),
            "options": jsonable(options),
            "option_sources": sources,
            "seed": options.get("seed"),
            "versions": _versions(),
            "platform": platform.platform(),
            "pid": os.getpid(),
            "started": _now(),
            "started_unix": time.time(),
            "status": "running",
            "details": {},
            "previous_run": _previous_run(self.path),
        }
        self._write()

    def end(self, status: str, **fields) -> None:
        """Record the end of a started run (nothing before :meth:`start`)."""
        if self.record is None:
            return
        started = self.record["started_unix"]
        self.record.update(status=status, finished=_now(), elapsed_s=round(time.time() - started, 3))
        self.record.update(fields)
        self._write()

    def _write(self) -> None:
        self.record["details"] = jsonable(self.details)
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(self.record, indent=1) + "\n")
        os.replace(tmp, self.path)
