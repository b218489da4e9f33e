"""The ``lenapk`` command line (typer): simulate, fit, cohort, compare, report, estimate.

Every subcommand works on the bundled data with its defaults, takes options from a TOML file
(``--config FILE``: a table per subcommand, e.g. ``[cohort]`` with ``n = 1000``; options given
on the command line win), writes into the folder named by ``--out`` and never overwrites an
existing output file unless ``--overwrite`` is given.  A relative path in the TOML file (a
patients table, an event-table CSV) is relative to the TOML file's folder; one given on the
command line, to the working directory.

``lenapk estimate`` is the exception: its ``--config`` is the model's TOML file, whose
``[estimate]`` table holds the command's options.

Options are checked before anything is written, whether they come from the command line or the
TOML file: a bad value ends with a message naming the option, the value and what was expected,
and exit code 2.  A run then writes ``run.json`` into ``--out`` (versions, command, every option
and where it came from, the start time, status ``"running"``) before the work starts and
updates it at the end (finish time, outputs, or the error).

``--regimen`` takes a bundled regimen id (:func:`lenapk.load_regimens`), a NONMEM event-table CSV
(:func:`lenapk.read_event_table`) or a compact spec such as ``"10mg d1-21/28 x12"``
(:func:`lenapk.parse_regimen`): an existing file is read as a table, a bundled id is that
regimen, anything else is parsed as a spec.

``--quiet``: no progress bars or messages, only errors and the final ``wrote ...`` line;
``--verbose``: also a message per step.

The modules: ``_app`` (the typer app, shared options), ``_options`` (checks, the TOML file),
``_run`` (one run: options, output folder, messages), ``_runlog`` (``run.json``), ``_regimens``
(``--regimen``), ``_patients`` (``--patients``, ``--fill``) and a module per subcommand, each
added to the app here.
"""

from __future__ import annotations

from ._app import app
from ._cohort import cohort
from ._compare import compare
from ._estimate import estimate
from ._fit import fit
from ._report import report
from ._simulate import simulate

__all__ = ["app", "main"]

for _command in (simulate, fit, cohort, compare, report, estimate):  # in the help's order
    app.command()(_command)


def main() -> None:  # pragma: no cover - console entry
    app(prog_name="lenapk")
