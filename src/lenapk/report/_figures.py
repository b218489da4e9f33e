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


def _save(fig, path) -> Path:
    fig.tight_layout()
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
    with ``day`` and ``value``)."""
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
                ax.plot(obs["day"], obs["value"], "o", color="k", label="observed mean")
            ax.set_title(f"{study}\n{name}", fontsize=8)
            ax.set_xlabel("day")
    axes[0, 0].legend(fontsize=7)
    return _save(fig, path)
