"""Report: figures and a self-contained HTML page (figures embedded as base64 PNG).

``build_report`` is the main job behind ``lenapk report``: fit the bundled trial summaries,
simulate the typical patient per regimen, draw prediction bands of a virtual cohort against the
observed means (VPC-style), compare the standard schedules and draw the response/toxicity
trade-off.
"""

from __future__ import annotations

import base64
import html
import tempfile
import time
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

PANELS = (
    ("conc_ng_ml", "Lenalidomide (ng/mL, pre-dose)"),
    ("alc", "ALC (x10^9/L)"),
    ("anc", "ANC (x10^9/L)"),
    ("platelets", "Platelets (x10^9/L)"),
    ("igg", "IgG (mg/dL)"),
    ("igm", "IgM (mg/dL)"),
    ("iga", "IgA (mg/dL)"),
)
# The report refits, from the calibrated defaults, the parameters the summaries identify best
# (clone kill, Ig sensitivities, neutrophil potency); examples/calibrate.py does the full joint
# calibration that produced the defaults.
REPORT_FREE = ("kill", "beta_igg", "beta_igm", "beta_iga", "ec50_n")
QUICK_FREE = ("kill", "beta_igg", "ec50_n")
STUDY_SETTING = {"early_stage_high_risk": "untreated", "relapsed_refractory_continuous": "relapsed"}


def standard_schedules(n_cycles: int = 24) -> dict:
    """The schedules the report compares: the bundled regimens, continuous 10 mg, 25 mg on days
    1-21 of 28, and 2.5 -> 25 mg escalation (+2.5 mg every 28 days)."""
    from .regimen import Regimen, load_regimens

    regs = {k: v for k, v in load_regimens().items()}
    if n_cycles != 24:
        regs = {k: Regimen.from_daily_doses(np.asarray(v.doses)[: n_cycles * 28], name=k) for k, v in regs.items()}
    regs["cont_10mg"] = Regimen.cycles(10, n_cycles=n_cycles, name="cont_10mg")
    regs["25mg_d1_21_of_28"] = Regimen.cycles(25, n_cycles=n_cycles, days_on=21, name="25mg_d1_21_of_28")
    regs["esc_2p5_to_25"] = Regimen.cycles(
        2.5, n_cycles=n_cycles, escalation_mg=2.5, escalate_every_days=28, max_mg=25, name="esc_2p5_to_25"
    )
    return regs


def _save(fig, path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_trajectories(frames: dict[str, pd.DataFrame], path) -> Path:
    """Typical-patient trajectories (one line per regimen) in the seven standard panels."""
    fig, axes = plt.subplots(2, 4, figsize=(16, 7))
    for ax, (col, label) in zip(axes.flat, PANELS):
        for name, df in frames.items():
            ax.plot(df["day"], df[col], label=name, lw=1.2)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("day")
    axes.flat[-1].axis("off")
    axes.flat[0].legend(fontsize=7)
    _save(fig, path)
    return Path(path)


def population_bands(model, params, regimen, *, n: int, seed: int, setting: str, rules=None,
                     quantiles=(0.05, 0.5, 0.95), chunk: int = 256) -> dict[str, pd.DataFrame]:
    """Daily mean and quantiles of each observable over a virtual cohort (pre-dose values)."""
    from .population import virtual_population
    from .solve import check_trajectory, solve_days_jit

    collected: dict[str, list] = {}
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        pop = virtual_population(model, m, seed, setting=setting, start=start)
        planned = jnp.broadcast_to(regimen.doses, (m, regimen.n_days))
        traj = solve_days_jit(model, pop.parameters(model, params), planned, None, rules)
        check_trajectory(traj, patient_ids=range(start, start + m))
        for name, arr in traj.day_obs.items():
            collected.setdefault(name, []).append(np.asarray(arr))
    out = {}
    for name, parts in collected.items():
        a = np.concatenate(parts, axis=0)
        frame = {"day": np.arange(a.shape[1]), "mean": a.mean(axis=0)}
        for q in quantiles:
            frame[f"q{int(round(100 * q)):02d}"] = np.quantile(a, q, axis=0)
        out[name] = pd.DataFrame(frame)
    return out


def plot_vpc(bands: dict[str, dict[str, pd.DataFrame]], observations: pd.DataFrame, path) -> Path:
    """Prediction bands (5-95% and median, with the cohort mean) against the observed means."""
    panels = [("igg", "IgG"), ("igm", "IgM"), ("iga", "IgA"), ("alc", None), ("anc", None), ("cd3", "CD3_T_cells")]
    studies = list(bands)
    fig, axes = plt.subplots(len(studies), len(panels), figsize=(18, 3.4 * len(studies)), squeeze=False)
    for i, study in enumerate(studies):
        for j, (col, endpoint) in enumerate(panels):
            ax = axes[i, j]
            b = bands[study][col]
            ax.fill_between(b["day"], b["q05"], b["q95"], alpha=0.25, label="5-95% of patients")
            ax.plot(b["day"], b["q50"], lw=1, label="median")
            ax.plot(b["day"], b["mean"], lw=1.5, ls="--", label="mean")
            if endpoint is not None:
                rows = observations[(observations["study"] == study) & (observations["endpoint"] == endpoint)
                                    & (observations["statistic"] == "mean")]
                if len(rows):
                    ax.plot(rows["day"], rows["value"], "o", color="k", label="observed mean")
            ax.set_title(f"{study}\n{col}", fontsize=8)
            ax.set_xlabel("day")
    axes[0, 0].legend(fontsize=7)
    _save(fig, path)
    return Path(path)


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" style="max-width:100%">'


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, float_format=lambda x: f"{x:.4g}", border=0, classes="t")


def build_report(path, *, n: int = 200, seed: int = 0, fit_steps: int = 15, quick: bool = False,
                 progress: Callable[[str], None] = print) -> Path:
    """The main job: fit, trajectories, VPC, schedule comparison and trade-off, as one HTML file.

    ``quick`` shrinks everything (a handful of patients, 3 cycles, three free parameters and a few
    fit steps) for tests.
    """
    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        return _build(path, Path(tmp), n=n, seed=seed, fit_steps=fit_steps, quick=quick, progress=progress)


def _build(path: Path, work: Path, *, n, seed, fit_steps, quick, progress) -> Path:
    from . import schedules
    from .cll import LenalidomideCLL
    from .fit import fit
    from .observations import load_observations
    from .regimen import load_regimens
    from .rules import label_rule
    from .simulate import simulate

    t0 = time.time()
    model = LenalidomideCLL()
    n_cycles = 3 if quick else 24
    n = min(n, 16) if quick else n
    fit_steps = min(fit_steps, 3) if quick else fit_steps
    rules = label_rule()

    progress(f"[{time.time() - t0:5.0f}s] fitting the bundled trial summaries ({fit_steps} steps)")
    obs = load_observations()
    free = QUICK_FREE if quick else REPORT_FREE
    result = fit(obs, free=free, steps=fit_steps, n_patients=16 if quick else 32, seed=seed, progress=False)
    params = result.params

    progress(f"[{time.time() - t0:5.0f}s] typical-patient trajectories")
    regs = standard_schedules(n_cycles)
    frames = {name: simulate(reg, params) for name, reg in regs.items()}
    traj_png = plot_trajectories(frames, work / "trajectories.png")

    progress(f"[{time.time() - t0:5.0f}s] prediction bands ({n} virtual patients per study)")
    bundled = load_regimens()
    bands = {}
    for study, setting in STUDY_SETTING.items():
        rid = obs.observations.loc[obs.observations["study"] == study, "regimen_id"].iloc[0]
        reg = regs[rid] if quick else bundled[rid]
        bands[study] = population_bands(model, params, reg, n=n, seed=seed, setting=setting,
                                        rules=rules if setting == "relapsed" else None)
    vpc_png = plot_vpc(bands, obs.observations, work / "vpc.png")

    progress(f"[{time.time() - t0:5.0f}s] comparing {len(regs)} schedules with the label rule")
    table = schedules.compare(regs, n=n, seed=seed, rules=rules, setting="relapsed", params=params,
                              block_size=min(n, 64))
    cmp_png = schedules.plot_comparison(table, work / "comparison.png")

    progress(f"[{time.time() - t0:5.0f}s] schedule optimisation and trade-off curve")
    opt = schedules.optimise_schedule(
        n=8 if quick else 48, seed=seed, n_cycles=2 if quick else 6, params=params, setting="relapsed",
        constraint_levels=(0.3,) if quick else (0.2, 0.3, 0.4), steps=3 if quick else 40,
    )
    trade_png = schedules.plot_tradeoff(opt.tradeoff, work / "tradeoff.png")

    sections = [
        ("Fit diagnostics", f"<pre>{html.escape(result.summary())}</pre>"
         + "<h3>Estimates</h3>" + _table(result.estimates_table())
         + "<h3>Observed vs predicted (every summary row)</h3>" + _table(result.observed_vs_predicted)),
        ("Typical-patient trajectories per regimen", _img(traj_png)),
        ("Prediction bands against the observed summaries (VPC-style)", _img(vpc_png)),
        ("Schedule comparison (common random numbers, label dose rule)", _table(table) + _img(cmp_png)),
        ("Response / toxicity trade-off", _table(opt.tradeoff) + _img(trade_png)),
    ]
    body = "\n".join(f"<h2>{html.escape(t)}</h2>\n{c}" for t, c in sections)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>lenapk report</title>
<style>body{{font-family:sans-serif;max-width:1300px;margin:auto}} table.t{{border-collapse:collapse;font-size:12px}}
table.t td,table.t th{{padding:2px 6px;border-bottom:1px solid #ddd}}</style></head><body>
<h1>lenapk report: lenalidomide in CLL</h1>
<p>Virtual patients per cohort: {n}; seed {seed}; cycles simulated: {n_cycles}; built in {time.time() - t0:.0f} s.</p>
{body}
</body></html>"""
    path.write_text(page)
    return path
