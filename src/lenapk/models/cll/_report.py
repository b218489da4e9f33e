"""The main job behind ``lenapk report``: refit the bundled trial summaries, simulate the typical
patient per regimen, draw prediction bands of virtual cohorts against the observed means
(VPC-style), compare the standard schedules and draw the response/toxicity trade-off, as one
self-contained HTML page."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable

import pandas as pd

from ..._core import Regimen, simulate
from ...calibration import MeanOf, fit
from ...report import Section, plot_trajectories, plot_vpc, population_bands, render_page
from ...schedules import compare, optimise_schedule, plot_comparison, plot_tradeoff
from ._calibration import VOCABULARY, load_observations
from ._data import load_regimens
from ._endpoints import label_rule
from ._model import LenalidomideCLL

# The report refits, from the calibrated defaults, the parameters the summaries identify best
# (clone kill, Ig sensitivities, neutrophil potency); examples/calibrate.py does the full joint
# calibration that produced the defaults.
REPORT_FREE = ("kill", "beta_igg", "beta_igm", "beta_iga", "ec50_n")
QUICK_FREE = ("kill", "beta_igg", "ec50_n")
STUDY_SETTING = {"early_stage_high_risk": "untreated", "relapsed_refractory_continuous": "relapsed"}
VPC_OBSERVABLES = ("igg", "igm", "iga", "alc", "anc", "cd3")


def standard_schedules(n_cycles: int = 24) -> dict[str, Regimen]:
    """The schedules the report compares: the bundled regimens, continuous 10 mg, 25 mg on days
    1-21 of 28, and 2.5 -> 25 mg escalation (+2.5 mg every 28 days)."""
    regs = {k: v.first_cycles(n_cycles) for k, v in load_regimens().items()}
    regs["cont_10mg"] = Regimen.cycles(10, n_cycles=n_cycles, name="cont_10mg")
    regs["25mg_d1_21_of_28"] = Regimen.cycles(25, n_cycles=n_cycles, days_on=21, name="25mg_d1_21_of_28")
    regs["esc_2p5_to_25"] = Regimen.cycles(
        2.5, n_cycles=n_cycles, escalation_mg=2.5, escalate_every_days=28, max_mg=25, name="esc_2p5_to_25"
    )
    return regs


def _observed_means(table: pd.DataFrame) -> dict:
    """``{study: {observable: frame of day, value}}`` of the reported means."""
    out: dict = {}
    for (study, endpoint), rows in table[table["statistic"] == "mean"].groupby(["study", "endpoint"]):
        p = VOCABULARY[endpoint].predictor
        if isinstance(p, MeanOf):
            out.setdefault(study, {})[p.observable] = rows[["day", "value"]]
    return out


def build_report(
    path,
    *,
    n: int = 200,
    seed: int = 0,
    fit_steps: int = 15,
    quick: bool = False,
    progress: Callable[[str], None] = print,
) -> Path:
    """Fit, trajectories, VPC, schedule comparison and trade-off, as one HTML file.  ``quick``
    shrinks everything (a handful of patients, 3 cycles, three free parameters, a few fit
    steps) for tests."""
    t0 = time.time()
    say = lambda msg: progress(f"[{time.time() - t0:5.0f}s] {msg}")  # noqa: E731
    model, rules = LenalidomideCLL(), label_rule()
    n_cycles, n = (3, min(n, 16)) if quick else (24, n)
    fit_steps = min(fit_steps, 3) if quick else fit_steps
    say(f"fitting the bundled trial summaries ({fit_steps} steps)")
    obs = load_observations()
    result = fit(
        obs,
        model=model,
        free=QUICK_FREE if quick else REPORT_FREE,
        steps=fit_steps,
        n_patients=16 if quick else 32,
        seed=seed,
        progress=False,
    )
    params = result.params
    regs = standard_schedules(n_cycles)
    bundled = load_regimens()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        say("typical-patient trajectories")
        traj_png = plot_trajectories(
            {k: simulate(r, params, model=model) for k, r in regs.items()}, work / "trajectories.png", model
        )
        say(f"prediction bands ({n} virtual patients per study)")
        bands = {}
        for study, setting in STUDY_SETTING.items():
            rid = obs.observations.loc[obs.observations["study"] == study, "regimen_id"].iloc[0]
            bands[study] = population_bands(
                model,
                params,
                regs[rid] if quick else bundled[rid],
                n=n,
                seed=seed,
                setting=setting,
                rules=rules if setting == "relapsed" else None,
            )
        vpc_png = plot_vpc(bands, _observed_means(obs.observations), VPC_OBSERVABLES, work / "vpc.png")
        say(f"comparing {len(regs)} schedules with the label rule")
        table = compare(
            regs, n=n, seed=seed, rules=rules, setting="relapsed", params=params, block_size=min(n, 64), model=model
        )
        cmp_png = plot_comparison(table, work / "comparison.png")
        say("schedule optimisation and trade-off curve")
        opt = optimise_schedule(
            n=8 if quick else 48,
            seed=seed,
            n_cycles=2 if quick else 6,
            params=params,
            setting="relapsed",
            constraint_levels=(0.3,) if quick else (0.2, 0.3, 0.4),
            steps=3 if quick else 40,
            model=model,
        )
        trade_png = plot_tradeoff(opt.tradeoff, work / "tradeoff.png")
        sections = [
            Section("Fit diagnostics")
            .pre(result.summary())
            .heading("Estimates")
            .table(result.estimates_table())
            .heading("Observed vs predicted (every summary row)")
            .table(result.observed_vs_predicted),
            Section("Typical-patient trajectories per regimen").image(traj_png),
            Section("Prediction bands against the observed summaries (VPC-style)").image(vpc_png),
            Section("Schedule comparison (common random numbers, label dose rule)").table(table).image(cmp_png),
            Section("Response / toxicity trade-off").table(opt.tradeoff).image(trade_png),
        ]
        return render_page(
            path,
            title="lenapk report: lenalidomide in CLL",
            sections=sections,
            intro=f"Virtual patients per cohort: {n}; seed {seed}; cycles simulated: {n_cycles}; "
            f"built in {time.time() - t0:.0f} s.",
        )
