"""Option checking: each subcommand's options, from the command line or a TOML file (``--config``),
checked before anything is written; a bad value is a :class:`UsageError` naming the option, the
value and what was expected.

A check takes (label, value) and returns the value converted, or raises UsageError naming the
option (label), the value and what was expected.  Values come as typed on the command line
(strings) or as TOML values (int, float, bool, str, list).  A relative path in the TOML file is
relative to the file's folder; one on the command line, to the working directory.
"""

from __future__ import annotations

import re
import tomllib
from functools import partial
from pathlib import Path
from typing import Callable, Optional

import typer


class UsageError(Exception):
    """Bad input from the user: printed without a traceback, exit code 2."""


# ------------------------------------------------------------------------------ checks
def _as_int(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    return None


def _whole(minimum: int, optional: bool = False) -> Callable:
    def check(label, value):
        if value is None and optional:
            return None
        v = _as_int(value)
        if v is None or v < minimum:
            raise UsageError(f"{label} must be a whole number >= {minimum}, got {value!r}")
        return v

    return check


def _choice(choices: tuple | Callable[[], tuple]) -> Callable:
    def check(label, value):
        allowed = tuple(choices() if callable(choices) else choices)
        if not isinstance(value, str) or value not in allowed:
            raise UsageError(f"{label} must be one of {', '.join(repr(c) for c in allowed)}, got {value!r}")
        return value

    return check


def _flag(label, value):
    if not isinstance(value, bool):
        raise UsageError(f"{label} must be true or false, got {value!r}")
    return value


def resolve_path(value: str | Path, base: Optional[Path]) -> Path:
    """``value`` as a path: relative to ``base`` (the folder of the config file it came from) when
    given, else as given (relative to the working directory)."""
    path = Path(value)
    return path if base is None or path.is_absolute() else base / path


def _file(label, value, base: Optional[Path] = None):
    """An existing file; ``base``: the folder a relative path from a config file is relative to."""
    if value is None:
        return None
    if not isinstance(value, (str, Path)) or not str(value).strip():
        raise UsageError(f"{label} must be the path of an existing file, got {value!r}")
    path = resolve_path(value, base)
    if not path.is_file():
        where = "" if path == Path(value) else f" (resolved against the config file's folder: {str(path)!r})"
        raise UsageError(
            f"{label} must be the path of an existing file, got {str(value)!r}{where}, which does not exist"
        )
    return path


def _text(label, value):
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{label} must be a non-empty string, got {value!r}")
    return value.strip()


def _texts(label, value):
    """A list of strings (a repeatable option); a TOML string is a list of one."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in items):
        raise UsageError(f"{label} must be a string or a list of non-empty strings, got {value!r}")
    return [v.strip() for v in items]


def _settings() -> tuple:
    import lenapk

    return tuple(lenapk.default_model().populations)


# ------------------------------------------------------------------------------ the options
FLAGS = dict(quiet=_flag, verbose=_flag)
SCHEMAS: dict[str, dict[str, Callable]] = {
    "simulate": dict(
        regimen=_text,
        rules=_choice(("label", "none")),
        days=_whole(1, optional=True),
        cycles=_whole(1, optional=True),
        **FLAGS,
    ),
    "fit": dict(steps=_whole(1), n_patients=_whole(1), seed=_whole(0), observations=_file, **FLAGS),
    "cohort": dict(
        regimen=_text,
        n=_whole(1),
        seed=_whole(0),
        setting=_choice(_settings),
        rules=_choice(("label", "none")),
        cycles=_whole(1, optional=True),
        chunk_size=_whole(1),
        block_size=_whole(1),
        patients=_file,
        fill=_choice(("drawn", "typical")),
        cpu_devices=_whole(0),
        **FLAGS,
    ),
    "compare": dict(
        regimen=_texts,
        regimens=_texts,
        n=_whole(1),
        seed=_whole(0),
        setting=_choice(_settings),
        rules=_choice(("label", "none")),
        cycles=_whole(1, optional=True),
        **FLAGS,
    ),
    "report": dict(n=_whole(1), seed=_whole(0), quick=_flag, regimen=_texts, standard=_flag, **FLAGS),
}
COMMANDS = tuple(SCHEMAS)


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def config_label(name: str, section: str, config_path: Path) -> str:
    """How a message names option ``name`` given in the config file."""
    return f"{flag_name(name)} ({name} in [{section}] of {config_path})"


def config_folder(config_path: Path) -> Path:
    """The folder relative paths in the config file are relative to: the one the file is in
    (as named: a linked file's own folder, not its target's)."""
    return config_path.parent.resolve()


# ------------------------------------------------------------------------------ merging
def load_config(path: Optional[Path], section: str) -> dict:
    """The ``[section]`` table of a TOML file ({} without a file); errors name the file."""
    if path is None:
        return {}
    if not path.is_file():
        raise UsageError(f"--config {path} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"--config {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(COMMANDS))
    if unknown:
        raise UsageError(f"--config {path}: unknown table(s) {unknown}; expected {', '.join(COMMANDS)}")
    table = data.get(section, {})
    if not isinstance(table, dict):
        raise UsageError(f"--config {path}: [{section}] must be a table")
    return {str(k).replace("-", "_"): v for k, v in table.items()}


def merge(ctx: typer.Context, values: dict, config: dict, config_path, schema: dict) -> tuple[dict, dict]:
    """Checked option values (command line over config file over defaults) and their sources
    ("command line", "config" or "default")."""
    section = ctx.command.name
    unknown = sorted(set(config) - set(schema))
    if unknown:
        raise UsageError(f"--config {config_path} [{section}]: unknown option(s) {unknown}; allowed {sorted(schema)}")
    options, sources = {}, {}
    for name, check in schema.items():
        source = ctx.get_parameter_source(name)
        from_cli = source is not None and source.name == "COMMANDLINE"
        if from_cli or name not in config:
            value, label, sources[name] = values[name], flag_name(name), "command line" if from_cli else "default"
        else:
            value, label, sources[name] = config[name], config_label(name, section, config_path), "config"
            if check is _file:
                check = partial(_file, base=config_folder(config_path))
        options[name] = check(label, value)
    return options, sources
