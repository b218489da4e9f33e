"""Figures of simulations: trajectories per regimen and prediction bands against observed means."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .._core import AbstractModel, broadcast_plan, check_trajectory, plan_for, solve_jit  # noqa: E402
from ..population import virtual_population  # noqa: E402


def _save(fig, path, rect=(0, 0, 1, 1)) -> Path:
    fig.tight_layout(rect=rect)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_trajectories(frames: dict[str, pd.DataFrame], path, model: AbstractModel) -> Path:
    """One panel per observable of ``model`` (title with its unit), one line per regimen;
    ``frames`` are :func:`lenapk.simulate` outputs keyed by regimen name."""
    specs = model.observable_specs
    time_col = next(iter(frames.values())).columns[0]
    n_col = 4
    fig, axes = plt.subplots(-(-len(specs) // n_col), n_col, figsize=(16, 3.5 * -(-len(specs) // n_col)), squeeze=False)
    for ax, spec in zip(axes.flat, specs):
        for name, df in frames.items():
            ax.plot(df[time_col], df[spec.name], label=name, lw=1.2)
        ax.set_title(f"{spec.description} ({spec.unit})", fontsize=9)
        ax.set_xlabel(time_col)
    for ax in list(axes.flat)[len(specs) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    return _save(fig, path)


def population_bands(
    model: AbstractModel,
    params,
    regimen,
    *,
    n: int,
    seed: int,
    setting: str,
    rules=None,
    quantiles=(0.05, 0.5, 0.95),
    chunk: int = 256,
) -> dict[str, pd.DataFrame]:
    """Daily mean and quantiles of each observable over a virtual cohort (pre-dose values)."""
    collected: dict[str, list] = {}
    plan = plan_for(model, regimen)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        pop = virtual_population(model, m, seed, setting=setting, start=start)
        traj = solve_jit(model, pop.parameters(model, params), broadcast_plan(plan, (m,)), rules)
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


def plot_vpc(
    bands: dict[str, dict[str, pd.DataFrame]],
    observed: dict[str, dict[str, pd.DataFrame]],
    observables: tuple[str, ...],
    path,
) -> Path:
    """Prediction bands (5-95% and median, with the cohort mean) of each study (rows) and
    observable (columns) against the observed means (``observed[study][observable]``: a frame
    with ``day``, ``value`` and optionally ``lo``/``hi``, its 95% interval)."""
    studies = list(bands)
    fig, axes = plt.subplots(
        len(studies), len(observables), figsize=(3 * len(observables), 3.4 * len(studies)), squeeze=False
    )
    for i, study in enumerate(studies):
        for j, name in enumerate(observables):
            ax, b = axes[i, j], bands[study][name]
            ax.fill_between(b["day"], b["q05"], b["q95"], alpha=0.25, label="5-95% of patients")
            ax.plot(b["day"], b["q50"], lw=1, label="median")
            ax.plot(b["day"], b["mean"], lw=1.5, ls="--", label="mean")
            obs = observed.get(study, {}).get(name)
            if obs is not None and len(obs):
                err = None
                if {"lo", "hi"} <= set(obs.columns):
                    err = np.vstack([obs["value"] - obs["lo"], obs["hi"] - obs["value"]])
                ax.errorbar(
                    obs["day"], obs["value"], yerr=err, fmt="o", color="k", capsize=3, label="observed mean (95% CI)"
                )
            ax.set_title(f"{study}\n{name}", fontsize=8)
            ax.set_xlabel("day")
    axes[0, 0].legend(fontsize=7)
    return _save(fig, path)


def exposure_metrics(time_h, conc) -> dict:
    """Cmax, tmax (h from the interval start), Cmin and AUC (trapezoid) over one dosing interval."""
    t, c = np.asarray(time_h, dtype=float), np.asarray(conc, dtype=float)
    i = int(np.argmax(c))
    return {
        "cmax": float(c[i]),
        "tmax_h": float(t[i] - t[0]),
        "cmin": float(c.min()),
        "auc": float(np.sum(0.5 * (c[1:] + c[:-1]) * np.diff(t))),
    }


def plot_exposure(profiles: dict[str, pd.DataFrame], path, unit: str = "ng/mL") -> Path:
    """Concentration over one dosing interval at steady state, one line per label (frames with
    ``hour`` from the interval start and ``conc``), Cmax and AUC in the legend."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for label, df in profiles.items():
        m = exposure_metrics(df["hour"], df["conc"])
        ax.plot(
            df["hour"], df["conc"], lw=1.6, label=f"{label}: Cmax {m['cmax']:.0f} {unit}, AUC24 {m['auc']:.0f} {unit}*h"
        )
    ax.set_xlabel("hours after the dose (steady state)")
    ax.set_ylabel(f"concentration ({unit})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_bands(
    bands: dict[str, dict[str, pd.DataFrame]], panels: list[tuple[str, str]], path, log_scale: tuple[str, ...] = ()
) -> Path:
    """Median (line) and 5-95% of patients of each observable (one panel per ``(name, title)``),
    one colour per regimen (``bands[regimen][name]`` from :func:`population_bands`): the 5-95%
    range shaded for up to two regimens, as thin dashed limits for more (overlaid shading
    hides them).  ``log_scale`` names the panels drawn on a log axis."""
    n_col = min(3, len(panels))
    n_row = -(-len(panels) // n_col)
    fig, axes = plt.subplots(n_row, n_col, figsize=(5.2 * n_col, 3.4 * n_row + 0.5), squeeze=False)
    shade = len(bands) <= 2
    for ax, (name, title) in zip(axes.flat, panels):
        for j, (regimen, by_obs) in enumerate(bands.items()):
            b = by_obs[name]
            if shade:
                ax.fill_between(b["day"], b["q05"], b["q95"], alpha=0.15, color=f"C{j}")
            else:
                for q in ("q05", "q95"):
                    ax.plot(b["day"], b[q], lw=0.7, ls="--", alpha=0.7, color=f"C{j}")
            ax.plot(b["day"], b["q50"], lw=1.5, color=f"C{j}", label=regimen)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("day")
        if name in log_scale:
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8, frameon=False)
    return _save(fig, path, rect=(0, 0.6 / (3.4 * n_row + 0.5), 1, 1))


def plot_forest(table: pd.DataFrame, path, metrics: list[dict] | None = None) -> Path:
    """A forest plot of a :func:`lenapk.compare` table: one panel per group of metrics
    (``table.attrs["metrics"]``), each regimen's estimate with its 95% CI."""
    specs = metrics or table.attrs.get("metrics") or []
    panels: dict[str, list] = {}
    for s in specs:
        if np.isfinite(table[s["column"]].to_numpy(dtype=float)).any():
            panels.setdefault(s["panel"], []).append(s)
    if not panels:
        raise ValueError("table has no metric with a value: pass the DataFrame returned by lenapk.compare")
    labels = [f"{r} [{rl}]" if rl != "none" else str(r) for r, rl in zip(table["regimen"], table["rules"])]
    n_col = min(3, len(panels))
    n_row = -(-len(panels) // n_col)
    fig, axes = plt.subplots(n_row, n_col, figsize=(5.4 * n_col, (1.2 + 0.42 * len(table)) * n_row), squeeze=False)
    y = np.arange(len(table))
    for ax, (panel, series) in zip(axes.flat, panels.items()):
        h = 0.7 / len(series)
        for k, s in enumerate(series):
            est, lo, hi = (
                table[c].to_numpy(dtype=float) for c in (s["column"], s["column"] + "_lo", s["column"] + "_hi")
            )
            ok = np.isfinite(est)
            pos = y - 0.35 + h * (k + 0.5)
            err = np.vstack([np.where(np.isfinite(lo), est - lo, 0), np.where(np.isfinite(hi), hi - est, 0)])
            ax.errorbar(est[ok], pos[ok], xerr=err[:, ok], fmt="o", ms=4, capsize=2, color=f"C{k}", label=s["label"])
        ax.set_yticks(y, labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(panel, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=6.5, loc="best")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    return _save(fig, path)
