"""``lenapk compare``: regimens compared on one virtual cohort (common random numbers)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

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
from ._regimens import dose_rules, named_regimens
from ._run import Run, run_command

DEFAULT_COMPARE = "early_2p5_then_5_cont,rr_10_to_25_cont"


def _given(run: Run) -> list[tuple[str, str]]:
    """(option, value) of each regimen to compare: --regimens' then --regimen's, or the default."""
    o = run.options
    listed = [("regimens", i.strip()) for v in o["regimens"] for i in v.split(",") if i.strip()]
    given = listed + [("regimen", v) for v in o["regimen"]]
    return given or [("regimens", v) for v in DEFAULT_COMPARE.split(",")]


def _stack(tables: list):
    """One comparison table from one-regimen tables (what one lenapk.compare call returns)."""
    import pandas as pd

    metrics = {}
    for t in tables:
        metrics.update({m["column"]: m for m in t.attrs.get("metrics", [])})
    columns = list(dict.fromkeys(c for t in tables for c in t.columns))
    table = pd.concat([t.reindex(columns=columns) for t in tables], ignore_index=True)
    table.attrs["metrics"] = list(metrics.values())
    return table


def _readable(table):
    """The comparison for the terminal: one row per metric with a value, one column per regimen,
    each cell "estimate (95% CI)"."""
    import numpy as np
    import pandas as pd

    from ..report import fmt

    rows = {}
    for m in table.attrs["metrics"]:
        col = m["column"]
        if np.isfinite(table[col].to_numpy(dtype=float)).any():
            cells = zip(table[col], table[col + "_lo"], table[col + "_hi"])
            rows[m["label"]] = [fmt.interval(e, lo, hi, pct=m["fraction"]) for e, lo, hi in cells]
    names = [f"{r} [{rl}]" if rl != "none" else str(r) for r, rl in zip(table["regimen"], table["rules"])]
    return pd.DataFrame.from_dict(rows, orient="index", columns=names)


def _compare(run: Run) -> None:
    o = run.options
    regs = named_regimens(run, _given(run), o["cycles"])
    csv, png = run.target("comparison.csv"), run.target("comparison.png")
    run.start()

    import lenapk

    tables = []
    for i, (name, reg) in enumerate(regs.items(), 1):
        run.say(f"[{i}/{len(regs)}] {name}: {o['n']} patients, {reg.n_cycles:g} cycles")
        tables.append(
            lenapk.compare(
                {name: reg},
                n=o["n"],
                seed=o["seed"],  # the same patients under every regimen (draws depend on seed and i)
                rules=dose_rules(o["rules"]),
                setting=o["setting"],
                n_cycles=o["cycles"],
                progress=run.progress,
            )
        )
    table = _stack(tables)
    table.to_csv(csv, index=False)
    run.step(f"plotting {png}")
    lenapk.plot_comparison(table, png)
    run.show(_readable(table).to_string())
    run.finish([csv, png])


def compare(
    ctx: typer.Context,
    regimen: Optional[List[str]] = typer.Option(
        None,
        "--regimen",
        metavar="ID|FILE|SPEC",
        help="Repeatable: one regimen to compare. " + RegimenHelp + "  Named by the id, the "
        "spec or the file name; a CSV must hold one ID.  'standard' adds the report's schedule set.",
    ),
    regimens: Optional[str] = typer.Option(
        None,
        metavar="A,B,...",
        help="Comma-separated bundled regimen ids (or files, specs, 'standard'), added before the --regimen "
        f"ones.  Default when neither is given: {DEFAULT_COMPARE}.",
    ),
    n: str = typer.Option("200", metavar="N", help="Virtual patients (the same for every regimen)."),
    seed: str = SeedOpt,
    setting: str = SettingOpt,
    rules: str = RulesOpt,
    cycles: Optional[str] = CyclesOpt,
    out: Path = OutOpt,
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
):
    """Compare regimens on one virtual cohort (common random numbers): table and figure."""
    values = dict(
        regimen=regimen or None,
        regimens=regimens,
        n=n,
        seed=seed,
        setting=setting,
        rules=rules,
        cycles=cycles,
        quiet=quiet,
        verbose=verbose,
    )
    run_command(ctx, values, out, overwrite, config, _compare)
