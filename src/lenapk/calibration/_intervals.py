"""Prediction intervals of observed summary statistics: parameter uncertainty plus the sampling
error of the reported statistic.

Parameter vectors are drawn from ``N(x_hat, cov)`` on the log scale of the free parameters (draws
outside the bounds are moved onto them), every row is predicted at each draw (hard count, ``T =
0``, on the same fixed virtual cohorts), and the predictive distribution of the *observed* value
is the mixture over the draws of the row's sampling distribution:

- **means**: Normal with the row's SE (``CV * observed / sqrt(n)``, and the cohort's Monte Carlo
  SE ``se_mc`` where the row model has one: ``SE_total^2 = SE^2 + se_mc^2``);
- **proportions** (``k / N``): binomial ``k ~ Bin(N, p)``, or beta-binomial with the row model's
  intra-class correlation ``rho + rho_mc`` (courses of one patient, the cohort's Monte Carlo
  error; :mod:`lenapk.calibration._rows`) when it is above 0; with a Monte Carlo term, ``p`` (a
  count over the virtual cohort) is taken at its Jeffreys posterior mean, so that a virtual count
  of 0 still allows a small rate (:func:`count_quantiles`);
- rows without a sampling model (a proportion without ``N``): the parameter part alone, said in
  the ``sampling`` column.

Directions the fit's data inform weakly or not at all (with ``fitted``, the observations the fit
was made to): an eigenvector ``v`` of the Hessian whose eigenvalue is below ``2 delta``, ``delta =
chi2_1(level) / 2`` (so that a quadratic objective would allow more than one log unit, a factor
e, along it; flat and negative directions included), is not drawn from the quadratic
approximation, whose draws would mostly land beyond the bounds, nor held at the estimate: it is
*spanned*, ``x_hat + t v`` with ``t`` uniform over its likelihood-ratio slice, the ``t`` for which
the fit's objective (at the fit's dose histories) rises by at most ``delta`` above its value at
``x_hat`` with the other directions held, searched outwards to the bounds
(:func:`likelihood_interval`).  For a quadratic that uniform has the SD ``0.95 / sqrt(w)``, close
to the Normal's ``1 / sqrt(w)``.  The other directions are drawn from ``N(0, H^+)`` over their
eigenvectors.  Parameters outside the fit (``uninformed``: no fitted row depends on them) are
drawn from their prior (log-normal, centred at its median) where the model states one, else
log-uniformly over their bounds: their posterior given the fitted rows is their prior.

The quantiles of the mixture are exact for the draws taken (the binomial and beta-binomial
mixtures are summed over ``k = 0..N``; the Normal mixture is inverted by bisection), so with a
zero covariance the interval is the sampling interval at ``x_hat`` (``scipy.stats.binom.ppf``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from .._core import SegmentClock, SolverSettings
from ._objective import FIT_SETTINGS, Objective
from ._result import FitResult
from ._rows import RHO_MAX
from ._uncertainty import covariance as _pseudo_covariance

WINDOW = 4  # draws whose solves are dispatched together
#: The ladder of steps (log scale, along a unit direction) a likelihood-ratio interval is searched
#: over before the bound; the crossing is then refined by ``BISECTIONS`` halvings (more when the
#: first step already crosses: down to ``LADDER[0] / 2**FIRST_BISECTIONS``).
LADDER = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
BISECTIONS = 3
FIRST_BISECTIONS = 10
#: Components of a direction smaller than this do not limit its room inside the box (an
#: eigenvector carries ~1e-6 on unrelated parameters; the draws are clipped onto the box anyway).
NEGLIGIBLE = 1e-6


@dataclass(frozen=True)
class Span:
    """A direction of the log-scale parameter space drawn uniformly: ``t * direction`` with ``t``
    uniform on ``[lo, hi]``; ``label`` says what it is (the parameters it loads on)."""

    direction: np.ndarray
    lo: float
    hi: float
    label: str


@dataclass(frozen=True)
class PredictionIntervals:
    """What :func:`prediction_intervals` found.

    ``table``: one row per observation row: ``predicted`` (hard count at the estimate), ``lo`` /
    ``hi`` (the predictive interval of the observed value at ``level``), ``param_lo`` /
    ``param_hi`` (the same quantiles of the prediction alone: parameter uncertainty), ``sampling``
    (the sampling model used), ``inside`` (observed within ``[lo, hi]``; NaN for rows that are
    not predicted), the row's ``N``, ``se``, ``rho`` and its ``status``.  ``varied``: the
    parameters drawn; ``fixed``: the free parameters held at the estimate (infinite or undefined
    standard error); ``n_draws``: draws used (``failed``: draws whose solve failed, dropped);
    ``clipped``: draws moved onto a bound; ``spans``: the directions drawn uniformly (weakly
    informed directions and uninformed parameters, with their intervals)."""

    table: pd.DataFrame
    level: float
    n_draws: int
    failed: int
    clipped: int
    varied: tuple[str, ...]
    fixed: tuple[str, ...]
    seed: int
    spans: tuple[Span, ...] = ()

    def summary(self) -> str:
        t = self.table[self.table["inside"].notna()]
        inside = int(t["inside"].astype(bool).sum())
        fixed = f"; held at the estimate: {', '.join(self.fixed)}" if self.fixed else ""
        spans = f"; drawn uniformly along: {'; '.join(sp.label for sp in self.spans)}" if self.spans else ""
        return (
            f"{inside} of {len(t)} predicted rows inside their {100 * self.level:g}% prediction interval "
            f"({self.n_draws} parameter draws, {self.failed} failed, {self.clipped} moved onto a bound{fixed}{spans})"
        )


# ---------------------------------------------------------------------------- solves
def _predict_hard(obj: Objective, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hard predictions ``(n_x, n_rows)`` of every row at each ``x`` (dose rules run at each x,
    no sensitivities) and whether each solve succeeded.  Solves of ``WINDOW`` points are
    dispatched together to the solver threads."""
    out = np.full((len(xs), len(obj.rows)), np.nan)
    ok = np.ones(len(xs), dtype=bool)
    for start in range(0, len(xs), WINDOW):
        block = range(start, min(start + WINDOW, len(xs)))
        tasks = {(i, s.name): s.submit(xs[i], None, tangents=False) for i in block for s in obj.studies}
        for i in block:
            for s in obj.studies:
                res = s.collect(tasks[(i, s.name)])
                ok[i] &= bool(res[3])
                if len(s.idx):
                    out[i, s.idx] = s.predict(res, 0.0)
    return out, ok


# ---------------------------------------------------------------------------- quantiles
def _discrete_quantiles(cdf: np.ndarray, qs) -> list[float]:
    """Smallest k with the mixture CDF >= q (as ``scipy.stats`` ``ppf``)."""
    return [float(np.argmax(cdf >= q - 1e-12)) if (cdf >= q - 1e-12).any() else float(len(cdf) - 1) for q in qs]


def count_quantiles(p: np.ndarray, N: float, qs, rho: float = 0.0, rho_mc: float = 0.0) -> list[float]:
    """Quantiles of ``k / N`` when ``k`` follows the mixture over ``p`` of binomials (``rho = 0``)
    or beta-binomials of mean ``p`` and intra-class correlation ``rho + rho_mc``.

    ``rho_mc > 0``: each ``p`` is a count over a virtual cohort of ``n = 1 / rho_mc`` (effective)
    patients, and the model's own rate behind it is taken at its Jeffreys posterior mean
    ``(n p + 1/2) / (n + 1)`` (the mean of Beta(k + 1/2, n - k + 1/2), k = n p).  So a virtual
    count of 0 (or all) does not claim that the model's rate is exactly 0 (or 1), which would
    collapse the Monte Carlo term ``rho_mc p (1 - p)`` and the interval to a point; inside
    (0, 1) the shift is at most ``1 / (2 (n + 1))``."""
    N = int(round(N))
    k = np.arange(N + 1)
    p = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    if rho_mc > 0:
        n = 1.0 / rho_mc
        p = (n * p + 0.5) / (n + 1.0)
    rho = rho + rho_mc
    if rho > 0:
        r = min(rho, RHO_MAX)
        pc = np.clip(p, 1e-9, 1 - 1e-9)
        a, b = pc * (1 - r) / r, (1 - pc) * (1 - r) / r
        cdf = stats.betabinom.cdf(k[None, :], N, a[:, None], b[:, None])
    else:
        cdf = stats.binom.cdf(k[None, :], N, p[:, None])
    mix = np.mean(cdf, axis=0)
    return [q / N for q in _discrete_quantiles(mix, qs)]


def observed_inside(observed: float, lo: float, hi: float, k: float = math.nan, N: float = math.nan) -> bool:
    """Whether the observed value lies in ``[lo, hi]``.  A count row (``k`` of ``N`` known, the
    interval from :func:`count_quantiles`, on the grid ``j / N``) is judged by its count, ``lo N
    <= k <= hi N``: a reported percentage is ``k / N`` rounded (3 of 31 patients is reported as
    9.7%, above the grid point 3 / 31 = 9.68%)."""
    if math.isfinite(k) and math.isfinite(N) and N >= 1:
        n = round(N)
        return bool(lo * n - 1e-9 <= k <= hi * n + 1e-9)
    return bool(lo <= observed <= hi)


def normal_quantiles(m: np.ndarray, se: float, qs) -> list[float]:
    """Quantiles of the equal mixture of ``Normal(m_d, se)``."""
    m = np.asarray(m, dtype=float)
    if not se > 0:
        return [float(v) for v in np.quantile(m, qs)]
    out = []
    for q in qs:
        lo, hi = float(m.min()) - 12 * se, float(m.max()) + 12 * se
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if np.mean(stats.norm.cdf((mid - m) / se)) < q:
                lo = mid
            else:
                hi = mid
            if hi - lo <= 1e-12 * max(1.0, abs(mid)):
                break
        out.append(0.5 * (lo + hi))
    return out


def _row_interval(r, preds: np.ndarray, qs) -> tuple[float, float, str, float]:
    """(lo, hi, sampling model, rho) of one row from its predictions at the draws."""
    rho_data, rho_mc = float(getattr(r, "rho", 0.0) or 0.0), float(getattr(r, "rho_mc", 0.0) or 0.0)
    rho = rho_data + rho_mc
    if r.likelihood == "gaussian":
        se = math.hypot(float(r.se), float(getattr(r, "se_mc", 0.0) or 0.0))
        if math.isfinite(se) and se > 0:
            lo, hi = normal_quantiles(preds, se, qs)
            return lo, hi, f"normal (SE {se:.3g})", math.nan
    elif r.statistic != "mean" and math.isfinite(r.N) and r.N >= 1:
        lo, hi = count_quantiles(preds, r.N, qs, rho_data, rho_mc)
        kind = f"beta-binomial (N {r.N:g}, rho {rho:.3g})" if rho > 0 else f"binomial (N {r.N:g})"
        return lo, hi, kind, rho
    lo, hi = np.quantile(preds, qs)
    return float(lo), float(hi), "none: parameter uncertainty only (no sampling model for the row)", math.nan


# ---------------------------------------------------------------------------- draws
def _draws(x, cov, n_draws: int, rng, spans: Sequence[Span] = ()) -> np.ndarray:
    """``n_draws`` points of N(x, cov) plus, for each span, ``t * direction`` with ``t`` uniform on
    its interval; a symmetric square root, so a singular (or zero) cov is fine."""
    w, V = np.linalg.eigh(0.5 * (cov + cov.T))
    root = V * np.sqrt(np.clip(w, 0.0, None))
    xs = x[None, :] + rng.standard_normal((n_draws, len(x))) @ root.T
    for sp in spans:
        xs = xs + rng.uniform(sp.lo, sp.hi, n_draws)[:, None] * np.asarray(sp.direction, dtype=float)[None, :]
    return xs


def likelihood_interval(value, x, direction, lower, upper, delta: float, f0: float | None = None):
    """The slice ``[lo, hi]`` of ``t`` around 0 over which ``value(x + t direction) - f0`` stays at
    most ``delta`` (``f0 = value(x)`` unless given), searched outwards along :data:`LADDER` up to
    the box ``[lower, upper]`` (beyond the ladder's last step only where the box ends), the first
    crossing refined by :data:`BISECTIONS` halvings (:data:`FIRST_BISECTIONS` when the first step
    crosses); a conservative end: the last ``t`` found inside."""
    x, v = np.asarray(x, dtype=float), np.asarray(direction, dtype=float)
    f0 = value(x) if f0 is None else f0
    ends = []
    for sign in (1.0, -1.0):
        step = sign * v
        with np.errstate(divide="ignore", invalid="ignore"):
            room = np.where(
                step > NEGLIGIBLE, (upper - x) / step, np.where(step < -NEGLIGIBLE, (lower - x) / step, np.inf)
            )
        edge = max(float(np.min(room)), 0.0) if room.size else 0.0
        ok, bad = 0.0, None
        for t in [t for t in LADDER if t < edge] + ([edge] if math.isfinite(edge) and edge > 0 else []):
            if value(x + t * step) - f0 <= delta:
                ok = t
            else:
                bad = t
                break
        for _ in range(0 if bad is None else FIRST_BISECTIONS if ok == 0.0 else BISECTIONS):
            mid = 0.5 * (ok + bad)
            ok, bad = (mid, bad) if value(x + mid * step) - f0 <= delta else (ok, mid)
        ends.append(sign * ok + 0.0)
    return ends[1], ends[0]


def prediction_intervals_at(
    objective: Objective,
    x,
    cov,
    *,
    n_draws: int = 100,
    level: float = 0.9,
    seed: int = 0,
    fixed: Sequence[str] = (),
    spans: Sequence[Span] = (),
) -> PredictionIntervals:
    """Prediction intervals of every row of ``objective`` around the point ``x`` (log scale of
    ``objective.free``) with the log-scale covariance ``cov`` (``k x k``, finite; a zero row and
    column hold a parameter fixed) and ``spans`` (directions drawn uniformly, added to the Normal
    draws).  ``fixed``: names reported as held at ``x`` (their rows of ``cov`` must be zero).  See
    the module docstring for the sampling models."""
    x = np.asarray(x, dtype=float)
    cov = np.asarray(cov, dtype=float)
    k = len(objective.free)
    if x.shape != (k,) or cov.shape != (k, k):
        raise ValueError(f"x must have shape ({k},) and cov ({k}, {k}) for the free parameters {objective.free}")
    if not np.all(np.isfinite(cov)):
        raise ValueError("cov has non-finite entries: hold those parameters fixed (zero rows and columns)")
    if not (0 < level < 1):
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    if not (isinstance(n_draws, (int, np.integer)) and n_draws >= 1):
        raise ValueError(f"n_draws must be a whole number >= 1, got {n_draws!r}")
    for sp in spans:
        if np.shape(sp.direction) != (k,) or not (math.isfinite(sp.lo) and math.isfinite(sp.hi) and sp.lo <= sp.hi):
            raise ValueError(f"span {sp.label!r} needs a direction of shape ({k},) and finite lo <= hi")
    rng = np.random.default_rng(seed)
    xs = _draws(x, cov, int(n_draws), rng, spans)
    clipped_x = np.clip(xs, objective.lower, objective.upper)
    clipped = int(np.sum(np.any(clipped_x != xs, axis=1)))
    preds, ok = _predict_hard(objective, np.vstack([x[None, :], clipped_x]))
    at_x, preds = preds[0], preds[1:][ok[1:]]
    a = (1 - level) / 2
    qs = (a, 1 - a)
    cols = {c: np.full(len(objective.rows), np.nan) for c in ("lo", "hi", "param_lo", "param_hi", "rho")}
    sampling = [""] * len(objective.rows)
    for i, r in enumerate(objective.rows):
        p = preds[:, i]
        if r.kind == "none" or not np.all(np.isfinite(p)) or len(p) == 0:
            sampling[i] = "not predicted" if r.kind == "none" else "no valid prediction"
            continue
        cols["param_lo"][i], cols["param_hi"][i] = np.quantile(p, qs)
        cols["lo"][i], cols["hi"][i], sampling[i], cols["rho"][i] = _row_interval(r, p, qs)
    frame = objective._frame(at_x, at_x)
    table = frame[["row", "study", "endpoint", "statistic", "day", "unit", "observed", "predicted"]].copy()
    for c in ("lo", "hi", "param_lo", "param_hi"):
        table[c] = cols[c]
    counted = [r.statistic != "mean" and r.likelihood != "gaussian" for r in objective.rows]
    table["k"] = [float(k) if c else math.nan for k, c in zip(frame["k"], counted)]
    table["inside"] = [
        (observed_inside(o, lo, hi, k, n) if math.isfinite(lo) else None)
        for o, lo, hi, k, n in zip(table["observed"], table["lo"], table["hi"], table["k"], frame["N"])
    ]
    table["sampling"] = sampling
    table["N"], table["se"], table["rho"] = frame["N"], frame["se"], cols["rho"]
    table["status"] = frame["status"]
    spanned = np.sum([np.abs(sp.direction) for sp in spans if sp.hi > sp.lo] + [np.zeros(k)], axis=0)
    varied = tuple(f for j, f in enumerate(objective.free) if cov[j, j] > 0 or spanned[j] > 0)
    return PredictionIntervals(
        table=table,
        level=float(level),
        n_draws=int(ok[1:].sum()),
        failed=int((~ok[1:]).sum()),
        clipped=clipped,
        varied=varied,
        fixed=tuple(fixed),
        seed=int(seed),
        spans=tuple(spans),
    )


def _conditional_cov(result: FitResult, keep: list[int]) -> np.ndarray:
    """Covariance of the kept parameters with the others held at the estimate: the inverse of the
    Hessian's block (flat directions left out), or the covariance's block without a Hessian."""
    H = np.asarray(result.hessian, dtype=float)
    if H.size and np.all(np.isfinite(H)):
        sub = H[np.ix_(keep, keep)]
        return _pseudo_covariance(sub, [result.free[i] for i in keep])[0]
    return np.asarray(result.covariance, dtype=float)[np.ix_(keep, keep)]


def prediction_intervals(
    result: FitResult,
    observations,
    *,
    cov=None,
    n_draws: int = 100,
    level: float = 0.9,
    seed: int = 0,
    model=None,
    n_patients: int | Mapping[str, int] | None = None,
    cohort_seed: int | None = None,
    settings: SolverSettings | None = None,
    fitted=None,
    uninformed: Sequence[str] = (),
    **objective_kwargs,
) -> PredictionIntervals:
    """Prediction intervals of the observed value of every row of ``observations`` (rows of
    studies the fit did not see included) from a :class:`FitResult`: ``n_draws`` parameter
    vectors from ``N(x_hat, cov)`` on the log scale (or, with ``fitted``, spanning the weak
    directions), each row predicted (hard count) on fixed
    virtual cohorts of the fit's size, mixed with the row's sampling error (module docstring).

    ``cov``: the log-scale covariance of ``result.free`` (default: from the fit's Hessian).  Free
    parameters with an infinite (or undefined) standard error are held at the estimate (listed in
    ``fixed``), and the others drawn from their covariance conditional on them (the inverse of
    their Hessian block).  ``model`` (default: the fitted one), ``n_patients`` and ``cohort_seed``
    (default: the fit's; study ``i`` of ``observations`` gets ``cohort_seed + i``, so the fitted
    studies get the fit's cohorts when ``observations`` lists them in the fit's order),
    ``settings`` (solver tolerances; default: :class:`SolverSettings` defaults, as
    :func:`predict_observations`), other keyword arguments as for :class:`Objective` (designs, cv,
    anchor_baselines, bounds).  ``seed`` draws the parameters.

    ``fitted``: the observations the fit was made to.  With it (and no ``cov``, and a finite
    Hessian; else parameters with an infinite standard error are held as above), the Hessian's
    weak directions are spanned over their likelihood-ratio slices and the others drawn from
    ``N(0, H^+)`` (module docstring).  The slices are taken on the fit's rows, cohorts (its
    ``n_patients`` and seed), last temperature and solver tolerances, at its dose histories, with
    the model's default priors, cv and designs and ``objective_kwargs``: a fit made with other
    priors or observation options should be given them here.  ``uninformed``: parameters not in
    ``result.free`` that no fitted row depends on, drawn from the model's prior for them (centred
    at its median) or log-uniformly over their bounds."""
    free = list(result.free)
    extra = [u for u in uninformed if u not in free]
    if fitted is not None and cov is None and np.all(np.isfinite(result.hessian)) and free:
        train = _fitted_objective(result, fitted, objective_kwargs)
        (full, spans), fixed = _weak_spans(train, np.asarray(result.hessian, dtype=float), level), ()
    else:
        (full, fixed), spans = _held_covariance(result, cov), []
    n = result.settings.get("n_patients", 64) if n_patients is None else n_patients
    if isinstance(n, Mapping):
        fallback = max(n.values()) if n else 64
        studies = pd.unique(_table(observations)["study"])
        n = {s: int(n.get(s, fallback)) for s in studies}
    obj = Objective(
        observations,
        model=result.model if model is None else model,
        free=tuple(free + extra),
        params=result.params,
        n_patients=n,
        seed=result.settings.get("seed", 0) if cohort_seed is None else cohort_seed,
        temperature=0.0,
        settings=SolverSettings() if settings is None else settings,
        priors={},
        **objective_kwargs,
    )
    x, full, spans = _with_uninformed(obj, full, spans, len(free))
    return prediction_intervals_at(obj, x, full, n_draws=n_draws, level=level, seed=seed, fixed=fixed, spans=spans)


def _held_covariance(result: FitResult, cov) -> tuple[np.ndarray, tuple[str, ...]]:
    """``(covariance, held)``: ``cov`` (default: the conditional covariance from the fit's Hessian)
    with the free parameters of infinite or undefined standard error held (zero rows and columns)."""
    free = list(result.free)
    if cov is None:
        se = result.estimates.set_index("parameter").loc[free, "se_log"].to_numpy(dtype=float)
        keep = [i for i, s in enumerate(se) if math.isfinite(s)]
        full = np.zeros((len(free), len(free)))
        if keep:
            full[np.ix_(keep, keep)] = _conditional_cov(result, keep)
    else:
        full = np.asarray(cov.to_numpy() if isinstance(cov, pd.DataFrame) else cov, dtype=float)
        if full.shape != (len(free), len(free)):
            raise ValueError(f"cov must be {len(free)} x {len(free)} (the free parameters {tuple(free)})")
        keep = [i for i in range(len(free)) if np.all(np.isfinite(full[i])) and np.all(np.isfinite(full[:, i]))]
        full = np.where(np.isfinite(full), full, 0.0)
        drop = [i for i in range(len(free)) if i not in keep]
        full[drop, :], full[:, drop] = 0.0, 0.0
    return full, tuple(free[i] for i in range(len(free)) if i not in keep)


def _fitted_objective(result: FitResult, fitted, objective_kwargs) -> Objective:
    """The fit's objective (its rows, cohorts, last temperature and tolerances), at the dose
    histories the rules give at its estimate."""
    st = result.settings
    obj = Objective(
        fitted,
        model=result.model,
        free=tuple(result.free),
        params=result.params,
        n_patients=st.get("n_patients", 64),
        seed=st.get("seed", 0),
        temperature=float(st.get("temperature", 0.0)),
        settings=fit_settings(st),
        **objective_kwargs,
    )
    return obj.freeze_doses(obj.x0)[0] if obj.has_rules else obj


def fit_settings(recorded: Mapping) -> SolverSettings:
    """The solver settings a fit recorded (``FitResult.settings``): its tolerances, clock and
    error norm.  A record without the clock or the norm is from a fit with :data:`FIT_SETTINGS`'s
    (in time itself, the max norm); one without tolerances gets :data:`FIT_SETTINGS`."""
    if "rtol" not in recorded:
        return FIT_SETTINGS
    clock = recorded.get("clock")
    return SolverSettings(
        rtol=recorded["rtol"],
        atol=recorded["atol"],
        clock=None if clock is None else SegmentClock(**clock),
        error_norm=recorded.get("error_norm", FIT_SETTINGS.error_norm),
    )


def _weak_spans(train: Objective, H: np.ndarray, level: float) -> tuple[np.ndarray, list[Span]]:
    """``(H^+ over the well-informed eigenvectors, a span per weak eigenvector)``: an eigenvalue
    below ``2 delta`` is weak, and spans its likelihood-ratio slice at ``level`` on ``train``
    around its ``x0`` (a weak direction whose slice has no width, the objective jumping there,
    keeps its Normal draw if its eigenvalue is positive, else it is reported as a span of width 0)."""
    w, V = np.linalg.eigh(0.5 * (H + H.T))
    delta = 0.5 * float(stats.chi2.ppf(level, 1))
    f0, spans, normal = train(train.x0), [], w >= 2 * delta
    for j in np.flatnonzero(~normal):
        v = V[:, j]
        lo, hi = likelihood_interval(train, train.x0, v, train.lower, train.upper, delta, f0)
        if hi <= lo and w[j] > 0:  # the objective jumps at once (dose histories): its Normal draw
            normal[j] = True
            continue
        order = np.argsort(-np.abs(v))
        label = " ".join(f"{v[i]:+.2f} {train.free[i]}" for i in order if abs(v[i]) > 0.1)
        spans.append(Span(v, lo, hi, f"({label}) x t, t in [{lo:.3g}, {hi:.3g}] (eigenvalue {w[j]:.3g})"))
    cov = (V * np.where(normal, 1.0 / np.where(normal, w, 1.0), 0.0)) @ V.T
    return cov, spans


def _with_uninformed(obj: Objective, cov: np.ndarray, spans: list[Span], k: int):
    """``(centre, cov, spans)`` over all free parameters of ``obj``: ``cov`` and ``spans`` of the
    first ``k`` embedded; each other (uninformed) parameter centred at its prior's median with the
    prior's variance, or, without a prior, spanned log-uniformly over its bounds."""
    n = len(obj.free)
    x, full = np.array(obj.x0, dtype=float), np.zeros((n, n))
    full[:k, :k] = cov
    out = [Span(np.pad(sp.direction, (0, n - k)), sp.lo, sp.hi, sp.label) for sp in spans]
    for i in range(k, n):
        name, lower, upper = obj.free[i], obj.lower[i], obj.upper[i]
        prior = obj.spec.priors.get(name)
        if prior is not None:
            x[i], full[i, i] = math.log(prior.median), prior.sd**2
        else:
            e = np.zeros(n)
            e[i] = 1.0
            label = f"{name} log-uniform on [{math.exp(lower):g}, {math.exp(upper):g}]"
            out.append(Span(e, lower - x[i], upper - x[i], label))
    return x, full, tuple(out)


def _table(observations) -> pd.DataFrame:
    return observations if isinstance(observations, pd.DataFrame) else observations.observations
