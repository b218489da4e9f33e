"""The main job behind ``lenapk report``: the lenalidomide-CLL model at its calibrated defaults
against the bundled trials, exposure at steady state, the standard (and the user's) schedules
compared on one virtual cohort, and the response / toxicity trade-off, as one self-contained HTML
page that opens on a summary."""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..._core import Regimen, parse_regimen, simulate
from ..._version import __version__
from ...calibration import MeanOf, predict_observations
from ...report import (
    Section,
    fmt,
    plot_bands,
    plot_exposure,
    plot_forest,
    plot_vpc,
    population_bands,
    render_page,
)
from ...schedules import compare, optimise_schedule, plot_tradeoff
from ._calibration import VOCABULARY, load_observations
from ._data import load_regimens
from ._docs import NOTES
from ._docs import render as render_model_doc
from ._endpoints import label_rule
from ._model import LenalidomideCLL

STUDY_SETTING = {"early_stage_high_risk": "untreated", "relapsed_refractory_continuous": "relapsed"}
VPC_OBSERVABLES = ("igg", "igm", "iga", "alc", "anc", "cd3")
BAND_PANELS = [
    ("anc", "ANC (x10^9/L)"),
    ("platelets", "platelets (x10^9/L)"),
    ("alc", "ALC (x10^9/L, log)"),
    ("igg", "IgG (mg/dL)"),
    ("igm", "IgM (mg/dL)"),
    ("iga", "IgA (mg/dL)"),
]
LIMIT = 0.30  # the trade-off's main limit on grade >= 3 neutropenia
ESCALATION = "2.5mg c1; 5mg c2; 10mg c3; 15mg c4; 20mg c5; 25mg c6+ continuous"  # up the dose levels
EXPLODED_ALC = 1000.0  # x10^9/L: a mean ALC above this is beyond any real CLL burden


def standard_schedules(n_cycles: int = 24) -> dict[str, Regimen]:
    """The schedules the report compares: the bundled regimens of 28-day cycles, continuous 10 mg,
    25 mg on days 1-21 of 28, and escalation up the dose levels from 2.5 to 25 mg, one level per
    28-day cycle (:data:`ESCALATION`)."""
    regs = {k: v.first_cycles(n_cycles) for k, v in load_regimens().items() if v.cycle_days == 28}
    regs["cont_10mg"] = Regimen.cycles(10, n_cycles=n_cycles, name="cont_10mg")
    regs["25mg_d1_21_of_28"] = Regimen.cycles(25, n_cycles=n_cycles, days_on=21, name="25mg_d1_21_of_28")
    regs["esc_2p5_to_25"] = parse_regimen(ESCALATION, default_cycles=n_cycles, name="esc_2p5_to_25").first_cycles(
        n_cycles
    )
    return regs


# ---------------------------------------------------------------------------- numbers
def _exposure(model, params, doses=(2.5, 10.0, 25.0)) -> dict[str, pd.DataFrame]:
    """Concentration over the dosing interval of day 28 of once-daily dosing (steady state)."""
    times = 27.0 + np.linspace(0.0, 1.0, 241)
    out = {}
    for mg in doses:
        df = simulate(Regimen.cycles(mg, n_cycles=1), params, model=model, times=times)
        out[f"{mg:g} mg/day"] = pd.DataFrame({"hour": 24.0 * (times - 27.0), "conc": df["conc_ng_ml"].to_numpy()})
    return out


def _observed_means(table: pd.DataFrame) -> dict:
    """``{study: {observable: frame of day, value, lo, hi}}`` of the reported means (95% CIs from
    the assumed between-patient CVs of the calibration)."""
    out: dict = {}
    for _, r in table[(table["statistic"] == "mean") & table["observed_lo95"].notna()].iterrows():
        p = VOCABULARY[r["endpoint"]].predictor
        if isinstance(p, MeanOf):
            out.setdefault(r["study"], {}).setdefault(p.observable, []).append(
                {"day": r["day"], "value": r["observed"], "lo": r["observed_lo95"], "hi": r["observed_hi95"]}
            )
    return {s: {o: pd.DataFrame(rows) for o, rows in by.items()} for s, by in out.items()}


def _reason_notes(statuses) -> tuple[list[str], list[str]]:
    """Short status per row (``fitted``, ``shown [n]``) and the numbered notes they point to."""
    notes, short = [], []
    for st in statuses:
        fitted = st.startswith("fitted")
        reason = st.split("; ", 1)[1] if fitted and "; " in st else ("" if fitted else st)
        if reason and reason not in notes:
            notes.append(reason)
        tag = ("fitted" if fitted else "not fitted") + (f" [{notes.index(reason) + 1}]" if reason else "")
        short.append(tag)
    return short, notes


# ---------------------------------------------------------------------------- tables
def _fit_table(ovp: pd.DataFrame) -> tuple[pd.DataFrame, list[str], int, int]:
    status, notes = _reason_notes(ovp["status"])
    pct = ovp["unit"] == "fraction"
    cell = lambda v, p: fmt.percent(v) if p else fmt.number(v)  # noqa: E731
    observed = [
        fmt.interval(o, lo, hi, pct=p)
        for o, lo, hi, p in zip(ovp["observed"], ovp["observed_lo95"], ovp["observed_hi95"], pct)
    ]
    table = pd.DataFrame(
        {
            "study": ovp["study"],
            "endpoint": ovp["endpoint"].str.replace("_", " "),
            "statistic": ovp["statistic"],
            "day": [fmt.DASH if not math.isfinite(d) else f"{d:g}" for d in ovp["day"]],
            "unit": ovp["unit"].replace({"fraction": "%"}),
            "observed (95% CI)": observed,
            "predicted": [cell(v, p) for v, p in zip(ovp["predicted"], pct)],
            "status": status,
        }
    )
    fitted = ovp[ovp["fitted"]]
    inside = int(
        ((fitted["predicted"] >= fitted["observed_lo95"]) & (fitted["predicted"] <= fitted["observed_hi95"])).sum()
    )
    return table, notes, inside, len(fitted)


COMPARISON_GROUPS = {"Grade": "Toxicity", "Response": "Response", "Change from baseline": "Immunoglobulins"}


def _comparison_tables(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The comparison as a few narrow tables (toxicity, response, immunoglobulins, dose delivered),
    one row per schedule, each metric as estimate (95% CI)."""
    groups: dict[str, dict] = {}
    for s in table.attrs["metrics"]:
        col = s["column"]
        if not np.isfinite(table[col].to_numpy(dtype=float)).any():
            continue
        group = next((g for p, g in COMPARISON_GROUPS.items() if s["panel"].startswith(p)), "Dose delivered")
        cells = groups.setdefault(group, {"schedule": table["regimen"]})
        if table["rules"].nunique() > 1:
            cells["dose rule"] = table["rules"]
        cells[s["label"]] = [
            fmt.interval(e, lo, hi, pct=s["fraction"])
            for e, lo, hi in zip(table[col], table[col + "_lo"], table[col + "_hi"])
        ]
    return [(g, pd.DataFrame(cells)) for g, cells in groups.items()]


def _tradeoff_table(t: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "limit on grade >= 3 neutropenia": [fmt.percent(c) for c in t["constraint"]],
            "best deliverable schedule": t["schedule"],
            "meets the limit": ["yes" if f else "no" for f in t["feasible"]],
            "response (PR or better)": [fmt.percent(v) for v in t["response"]],
            "grade >= 3 neutropenia": [fmt.percent(v) for v in t["toxicity"]],
            "dose intensity": [fmt.percent(v) for v in t["dose_intensity"]],
        }
    )


VALIDATION_JSON = Path(__file__).resolve().parents[4] / "docs" / "validation.json"  # source checkout


def _validation_rows(rows: list[dict]) -> pd.DataFrame:
    def cell(v, pct):
        return fmt.DASH if v is None else (fmt.percent(v, 1) if pct else fmt.number(v))

    out = []
    for r in rows:
        pct = r["unit"] == "fraction"
        width = f"{r['width_points']:.1f} points" if pct else f"{fmt.number(r['width'])} {r['unit']}"
        out.append(
            {
                "study": r["study"],
                "endpoint": r["endpoint"].replace("_", " "),
                "statistic": r["statistic"],
                "day": fmt.DASH if r["day"] is None else f"{r['day']:g}",
                "observed": cell(r["observed"], pct),
                "predicted": cell(r["predicted"], pct),
                "prediction interval": f"{cell(r['lo'], pct)} to {cell(r['hi'], pct)}",
                "inside": "yes" if r["inside"] else "no",
                "PI width": width,
                "useful": "yes" if r["useful"] else "no",
            }
        )
    return pd.DataFrame(out)


def _validation_section(path) -> Section:
    """Leave-one-study-out validation from ``docs/validation.json`` (written by
    ``examples/validate.py``), or a note that it has not been run."""
    s = Section("validation", "Validation (leave-one-study-out)")
    path = Path(path) if path is not None else VALIDATION_JSON
    if not path.is_file():
        return s.text(
            "Not run: no validation results were found (docs/validation.json). `python examples/validate.py` fits the "
            "model to all studies but one, predicts the held-out study's rows with 90% prediction intervals, and "
            "writes them."
        )
    v = json.loads(path.read_text())
    c, level = v["counts"], 100 * v["config"]["level"]
    s.text(
        f"Each study held out in turn: the model is fitted to the other studies ({v['config']['n_patients']} virtual "
        f"patients per study) and the held-out rows are predicted with {level:g}% prediction intervals (parameter "
        "uncertainty of the fit plus the sampling error of the reported statistic).  A prediction is useful when the "
        "observed value lies in its interval and the interval is narrower than +/- 15 percentage points (+/- 15% of "
        "the prediction for means)."
    )
    s.facts(
        [
            ("held-out rows inside their interval", f"{c['inside']} of {c['held_out_rows']}"),
            ("useful predictions", str(c["useful"])),
            ("generated by", f"{v['generated_by']} (lenapk {v['lenapk']})"),
        ]
    )
    if v.get("folds_missing"):
        s.warning(f"Folds not run: {', '.join(v['folds_missing'])}.")
    notes = []
    for f in v["folds"]:
        if f.get("not_estimable"):
            kept = ", ".join(f"{p} = {fmt.number(x['value'])} ({x['source']})" for p, x in f["not_estimable"].items())
            notes.append(
                f"without {f['study']}: not estimable, kept in the fit at {kept} (drawn in the intervals from the "
                "prior or log-uniformly over the bounds)"
            )
        if f.get("spans"):
            notes.append(f"without {f['study']}: drawn uniformly in the intervals: " + "; ".join(f["spans"]))
        if f.get("fixed_in_intervals"):
            notes.append(
                f"without {f['study']}: held at the estimate in the intervals (infinite SE): "
                + ", ".join(f["fixed_in_intervals"])
            )
    if v["rows"]:
        s.table(_validation_rows(v["rows"]))
    if notes:
        s.bullets(notes)
    return s


# ---------------------------------------------------------------------------- sections
def _summary(ctx: dict) -> Section:
    cmp, opt = ctx["comparison"], ctx["optimum"]
    best = opt.tradeoff.set_index("constraint").loc[LIMIT]
    s = Section("summary", "Summary").facts(
        [
            (
                "model",
                f"lenalidomide in CLL (LenalidomideCLL), lenapk {__version__}, calibrated defaults "
                "(docs/calibration.md); no refit",
            ),
            ("data", f"the bundled trial summaries: {ctx['n_rows']} rows of {ctx['n_studies']} studies"),
            (
                "cohort",
                f"{ctx['n']} virtual relapsed patients per schedule (seed {ctx['seed']}), the same patients under "
                f"every schedule, {ctx['n_cycles']} cycles, label dose rule",
            ),
            ("run", f"{ctx['seconds']:.0f} s"),
        ]
    )
    s.heading("Main findings")
    items = [
        f"Fit at the calibrated defaults: {ctx['inside']} of {ctx['fitted']} fitted summary rows are predicted "
        "within the observed 95% interval."
    ]
    ci = lambda r, c: fmt.interval(r[c], r[c + "_lo"], r[c + "_hi"], pct=True)  # noqa: E731
    for _, r in cmp.iterrows():
        items.append(
            f"{r['regimen']}: grade >= 3 neutropenia {ci(r, 'g3_neutropenia')} of patients, response (PR or better "
            f"by ALC and nodes) {ci(r, 'response')}, dose intensity {fmt.percent(r['dose_intensity'])}."
        )
    items.append(
        f"Under a {fmt.percent(LIMIT)} limit on grade >= 3 neutropenia the best deliverable schedule found is "
        f"'{best['schedule']}' ({ctx['opt_n']} patients, {ctx['opt_cycles']} cycles): response "
        f"{fmt.percent(best['response'])}, grade >= 3 neutropenia {fmt.percent(best['toxicity'])}."
    )
    s.bullets(items).heading("Caveats")
    caveats = [line.strip("- ").replace("\n", " ") for line in NOTES.strip().split("\n- ")]
    caveats = [" ".join(c.split()) for c in caveats]
    s.bullets(
        caveats
        + [
            "Intervals are Monte Carlo intervals of the virtual cohort (Wilson / Student t); they do "
            "not include the uncertainty of the parameters."
        ]
    )
    for w in ctx["warnings"]:
        s.warning(w)
    return s


def _comparison_section(table: pd.DataFrame, forest: Path) -> Section:
    s = Section("comparison", "Schedule comparison (the same virtual patients, label dose rule)").text(
        "Estimate (95% CI) over the virtual cohort; a dash: not reached within the simulated cycles."
    )
    for title, df in _comparison_tables(table):
        s.heading(title).table(df)
    return s.image(forest, "Forest plot of the comparison (95% CIs).")


def _sections(ctx: dict, figures: dict) -> list[Section]:
    fit_table, notes, inside, fitted = ctx["fit"]
    return [
        _summary(ctx),
        Section("fit", "Fit to the bundled trials (calibrated defaults)")
        .text(
            "Every reported summary beside the model's prediction on the virtual cohort of its study (hard clinical "
            "count); rows the model cannot represent are shown, not fitted, with the reason in the notes."
        )
        .table(fit_table, notes=notes),
        _validation_section(ctx.get("validation")),
        Section("exposure", "Exposure at steady state").image(
            figures["exposure"],
            "Typical patient (CrCl 90 mL/min, FFM 55 kg): concentration over the dosing "
            "interval of day 28 of once-daily dosing.",
        ),
        Section("trajectories", "Trajectories of the compared schedules").image(
            figures["bands"],
            "Median (line) and 5-95% of the virtual relapsed patients (shaded), label dose "
            "rule; pre-dose values at day starts.",
        ),
        Section("vpc", "Prediction bands against the observed summaries (VPC)").image(
            figures["vpc"],
            "Each study's virtual cohort: 5-95% of patients, median and mean, against the reported "
            "means (95% intervals from the assumed between-patient CVs).",
        ),
        _comparison_section(ctx["comparison"], figures["forest"]),
        Section("tradeoff", "Response / toxicity trade-off")
        .table(_tradeoff_table(ctx["optimum"].tradeoff))
        .image(
            figures["tradeoff"],
            "Best deliverable schedule under each limit (hard endpoints) and the relaxed optimum (smooth).",
        ),
        Section("model", "Model")
        .text(
            "The model document (docs/model.md of the lenapk repository, generated from the code): structure "
            "and equations, parameters with units and sources, covariate distributions and limitations."
        )
        .document("docs/model.md: the lenalidomide-CLL model", render_model_doc())
        .details("parameters at the calibrated defaults", ctx["parameters"]),
    ]


# ---------------------------------------------------------------------------- the job
def _compute(ctx: dict, say, regs: dict) -> None:
    model, params, rules = ctx["model"], ctx["params"], label_rule()
    obs = load_observations()
    say("the calibrated defaults against the bundled trials")
    ovp = predict_observations(obs, params, n_patients=16 if ctx["quick"] else 64, seed=ctx["seed"])
    ctx.update(fit=_fit_table(ovp), ovp=ovp, n_rows=len(ovp), n_studies=ovp["study"].nunique())
    ctx["inside"], ctx["fitted"] = ctx["fit"][2], ctx["fit"][3]
    ctx["regimens"] = regs
    say(f"comparing {len(regs)} schedules on {ctx['n']} virtual patients")
    ctx["comparison"] = compare(
        regs,
        n=ctx["n"],
        seed=ctx["seed"],
        rules=rules,
        setting="relapsed",
        params=params,
        block_size=min(ctx["n"], 64),
        model=model,
        progress=ctx["progress_bars"],
    )
    say("population bands")
    ctx["bands"] = {
        name: population_bands(model, params, reg, n=ctx["n"], seed=ctx["seed"], setting="relapsed", rules=rules)
        for name, reg in regs.items()
    }
    ctx["vpc"] = {}
    for study, setting in STUDY_SETTING.items():
        rid = obs.observations.loc[obs.observations["study"] == study, "regimen_id"].iloc[0]
        reg = load_regimens()[rid].first_cycles(ctx["n_cycles"]) if ctx["quick"] else load_regimens()[rid]
        ctx["vpc"][study] = population_bands(
            model,
            params,
            reg,
            n=ctx["n"],
            seed=ctx["seed"],
            setting=setting,
            rules=rules if setting == "relapsed" else None,
        )
    say("schedule optimisation and trade-off curve")
    ctx["optimum"] = optimise_schedule(
        LIMIT,
        n=ctx["opt_n"],
        seed=ctx["seed"],
        n_cycles=ctx["opt_cycles"],
        params=params,
        setting="relapsed",
        model=model,
        steps=ctx["opt_steps"],
        constraint_levels=(0.3,) if ctx["quick"] else (0.2, 0.3, 0.4),
    )
    ctx["warnings"] = _warnings(ctx)


def _off_level_warnings(regs: dict, levels: tuple) -> list[str]:
    """Schedules with planned doses that are not dose levels: the label rule gives the level below."""
    out = []
    for name, reg in regs.items():
        planned = np.unique(np.asarray(reg.amount_mg, dtype=float))
        off = [x for x in planned if x > 0 and not np.isclose(levels, x, rtol=0, atol=1e-9).any()]
        if off:
            out.append(
                f"{name}: planned doses of {', '.join(f'{x:g}' for x in off)} mg are not dose levels "
                f"({', '.join(f'{x:g}' for x in levels)} mg); the label dose rule gives the level at or below "
                "each, so its dose intensity is below 100% even without a hold."
            )
    return out


def _warnings(ctx: dict) -> list[str]:
    out = _off_level_warnings(ctx["regimens"], ctx["model"].dose_levels)
    peaks = {
        where: float(np.nanmax(b["alc"]["mean"].to_numpy()))
        for where, b in [*ctx["bands"].items(), *ctx["vpc"].items()]
    }
    exploded = {w: p for w, p in peaks.items() if not math.isfinite(p) or p > EXPLODED_ALC}
    if exploded:
        out.append(
            "In some virtual patients the clone grows without bound (the model has no carrying capacity and "
            "patients are not taken off treatment at progression): the mean ALC reaches "
            + ", ".join(f"{p:.3g} x10^9/L ({w})" for w, p in exploded.items())
            + ".  Medians and 5-95% bands are shown, on a log scale for the ALC."
        )
    return out


def _figures(ctx: dict, work: Path) -> dict:
    vpc_observed = _observed_means(ctx["ovp"])
    return {
        "exposure": plot_exposure(_exposure(ctx["model"], ctx["params"]), work / "exposure.png"),
        "bands": plot_bands(ctx["bands"], BAND_PANELS, work / "bands.png", log_scale=("alc",)),
        "vpc": plot_vpc(ctx["vpc"], vpc_observed, VPC_OBSERVABLES, work / "vpc.png"),
        "forest": plot_forest(ctx["comparison"], work / "forest.png"),
        "tradeoff": plot_tradeoff(ctx["optimum"].tradeoff, work / "tradeoff.png"),
    }


def build_report(
    path,
    *,
    n: int = 200,
    seed: int = 0,
    quick: bool = False,
    regimens: dict | None = None,
    standard: bool = True,
    progress: Callable[[str], None] = print,
    progress_bars: bool = False,
    validation: str | Path | None = None,
) -> Path:
    """Write the report to ``path`` (HTML) and return it.

    ``regimens``: the user's schedules (name -> Regimen), compared with the standard set
    (:func:`standard_schedules`), or instead of it with ``standard=False``.  ``quick`` shrinks
    everything (16 patients, 3 cycles, a few optimiser steps) for tests.  ``progress`` receives
    one line per step; ``progress_bars`` shows tqdm bars of the cohorts.  ``validation``: the
    leave-one-study-out results (default: ``docs/validation.json`` of the source checkout, written
    by ``examples/validate.py``); the report says "not run" without them."""
    t0 = time.time()
    say = lambda msg: progress(f"[{time.time() - t0:5.0f}s] {msg}")  # noqa: E731
    n_cycles, n = (3, min(n, 16)) if quick else (24, n)
    regs = dict(standard_schedules(n_cycles)) if standard else {}
    regs.update({k: r.first_cycles(n_cycles) if quick else r for k, r in (regimens or {}).items()})
    if not regs:
        raise ValueError("report: no schedules to compare (standard=False and no regimens given)")
    model = LenalidomideCLL()
    ctx = dict(
        model=model,
        params=model.default_params(),
        quick=quick,
        n=n,
        seed=seed,
        n_cycles=n_cycles,
        opt_n=8 if quick else 48,
        opt_cycles=2 if quick else 6,
        opt_steps=3 if quick else 40,
        progress_bars=progress_bars,
        validation=validation,
    )
    _compute(ctx, say, regs)
    ctx["parameters"] = _parameter_table(model)
    with tempfile.TemporaryDirectory() as tmp:
        say("figures and page")
        figures = _figures(ctx, Path(tmp))
        ctx["seconds"] = time.time() - t0
        return render_page(
            path,
            title="lenapk report: lenalidomide in CLL",
            sections=_sections(ctx, figures),
            intro=f"Generated {time.strftime('%Y-%m-%d %H:%M')} by lenapk {__version__}.",
            footer="lenapk: patient-level pharmacometric ODE models on JAX.",
        )


def _parameter_table(model) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"parameter": s.name, "value": fmt.number(s.value, 4), "unit": s.unit, "description": s.description}
            for s in model.parameter_specs
        ]
    )
