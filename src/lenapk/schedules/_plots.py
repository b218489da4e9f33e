"""Figures of schedule comparisons and of the response / toxicity trade-off (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ._compare import COMPARE_ID_COLUMNS  # noqa: E402


def _bars(ax, table: pd.DataFrame, series, title: str, xlabel: str, xlim=None):
    """Grouped horizontal bars (one group per regimen, one bar per series) with 95% CIs."""
    labels = [
        str(r) if rl == "none" or "rule" in str(r).lower() else f"{r} [{rl}]"
        for r, rl in zip(table["regimen"], table["rules"])
    ]
    y = np.arange(len(table))
    series = [(c, nm) for c, nm in series if np.isfinite(table[c].to_numpy(dtype=float)).any()]
    k = max(len(series), 1)
    h = 0.8 / k
    drawn = bool(series)
    for j, (col, name) in enumerate(series):
        est = table[col].to_numpy(dtype=float)
        lo = table[f"{col}_lo"].to_numpy(dtype=float)
        hi = table[f"{col}_hi"].to_numpy(dtype=float)
        ok = np.isfinite(est)
        err = np.vstack([np.where(np.isfinite(lo), est - lo, 0.0), np.where(np.isfinite(hi), hi - est, 0.0)])
        pos = y - 0.4 + h * (j + 0.5)
        ax.barh(pos[ok], est[ok], height=h * 0.9, label=name, color=f"C{j}")
        ax.errorbar(est[ok], pos[ok], xerr=err[:, ok], fmt="none", ecolor="k", elinewidth=0.8, capsize=2)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=9)
    if xlim is not None:
        ax.set_xlim(*xlim)
    ax.axvline(0, color="0.5", lw=0.6)
    if drawn and k > 1:
        ax.legend(fontsize=7, loc="best")
    if not drawn:
        ax.text(
            0.5,
            0.5,
            "not reached within the simulated cycles",
            ha="center",
            va="center",
            transform=ax.transAxes,
            fontsize=8,
            color="0.4",
        )


def _limits(panel: str):
    """x-axis label and range of a panel (fractions on [0, 1])."""
    if panel.startswith(("Grade", "Response")):
        return "fraction", (0, 1)
    if panel.startswith("Delivered"):
        return "delivered / planned", (0, 1.05)
    if panel.startswith("Days held"):
        return "days", None
    return "change from baseline", None


def plot_comparison(table: pd.DataFrame, path) -> Path:
    """Draw a :func:`lenapk.compare` table (estimates with 95% CI whiskers), one panel per group
    of metrics (``table.attrs["metrics"]``), to ``path`` (PNG, PDF, ... by suffix).  Returns the
    path."""
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"table must be the DataFrame returned by lenapk.compare, got {type(table).__name__}")
    specs = table.attrs.get("metrics")
    needed = list(COMPARE_ID_COLUMNS) + [f"{s['column']}{x}" for s in specs or () for x in ("", "_lo", "_hi")]
    missing = [c for c in needed if c not in table.columns]
    if not specs or missing:
        raise ValueError(
            "table lacks the comparison's columns or metrics (table.attrs['metrics']): pass the "
            "DataFrame returned by lenapk.compare"
        )
    if len(table) == 0:
        raise ValueError("table has no rows")
    panels: dict[str, list] = {}
    for s in specs:
        panels.setdefault(s["panel"], []).append((s["column"], s["label"]))
    n_col = 3
    n_row = -(-len(panels) // n_col)
    height = 2.2 + 0.45 * len(table) * 1.2
    fig, axes = plt.subplots(n_row, n_col, figsize=(16, n_row * height), squeeze=False)
    for ax, (panel, series) in zip(axes.flat, panels.items()):
        xlabel, xlim = _limits(panel)
        _bars(ax, table, series, panel, xlabel, xlim)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(
        f"Schedule comparison: the same {int(table['n'].iloc[0])} virtual patients per regimen (95% CIs)", fontsize=11
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_tradeoff(tradeoff: pd.DataFrame, path) -> Path:
    """Draw :attr:`ScheduleOptimum.tradeoff`: best response and the toxicity reached against the
    toxicity limit (hard endpoints of the deliverable schedules; smooth relaxed values dashed)."""
    need = ["constraint", "response", "toxicity", "schedule", "smooth_response", "smooth_toxicity"]
    if not isinstance(tradeoff, pd.DataFrame) or any(c not in tradeoff.columns for c in need):
        raise ValueError(f"tradeoff must be ScheduleOptimum.tradeoff (columns {need})")
    path = Path(path)
    what = tradeoff.attrs.get("toxicity_label", "toxicity")
    t = tradeoff.sort_values("constraint")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    ax = axes[0]
    ax.plot(t["constraint"], t["response"], "o-", label="deliverable schedule (hard)")
    ax.plot(t["constraint"], t["smooth_response"], "s--", alpha=0.6, label="relaxed optimum (smooth)")
    for _, r in t.iterrows():
        ax.annotate(
            str(r["schedule"]), (r["constraint"], r["response"]), fontsize=7, xytext=(3, 6), textcoords="offset points"
        )
    ax.margins(x=0.25, y=0.15)
    ax.set_xlabel(f"limit on {what} incidence")
    ax.set_ylabel("response rate (PR or better)")
    ax.set_title("Best response under the toxicity limit", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(t["constraint"], t["toxicity"], "o-", label="deliverable schedule (hard)")
    ax.plot(t["constraint"], t["smooth_toxicity"], "s--", alpha=0.6, label="relaxed optimum (smooth)")
    lim = [0, max(1e-3, float(t["constraint"].max()) * 1.1)]
    ax.plot(lim, lim, color="0.5", lw=0.8, label="limit")
    ax.set_xlabel(f"limit on {what} incidence")
    ax.set_ylabel(f"{what} incidence")
    ax.set_title("Toxicity reached", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
