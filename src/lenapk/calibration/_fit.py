"""``fit()``: typical parameters from summary data by gradient optimisation (optax)."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence

import numpy as np
import optax
import pandas as pd

from .._core import AbstractModel, ParameterSet, SolverSettings
from ._designs import StudyDesign
from ._objective import DEFAULT_TEMPERATURE, FIT_SETTINGS, Objective
from ._optimise import DEFAULT_DOSE_TOL, _Run, default_optimizer, minimise
from ._result import FitResult
from ._uncertainty import covariance, hessian_fd, temperature_check

Z95 = 1.959963984540054


def _temperatures(temperature) -> list[float]:
    temps = [float(t) for t in (temperature if isinstance(temperature, (list, tuple)) else [temperature])]
    if not temps or any(not (math.isfinite(t) and t > 0) for t in temps):
        raise ValueError(f"temperature must be > 0 (or a list of such values, annealed in order), got {temperature!r}")
    return temps


def _estimates(obj: Objective, x, g, se_log, flagged, bound) -> pd.DataFrame:
    theta = np.exp(x)
    specs = {s.name: s for s in obj.model.parameter_specs}
    return pd.DataFrame(
        {
            "parameter": obj.free,
            "estimate": theta,
            "unit": [specs[f].unit for f in obj.free],
            "start": np.exp(obj.x0),
            "se": theta * se_log,
            "rse_percent": 100 * se_log,
            "ci95_low": theta * np.exp(-Z95 * se_log),
            "ci95_high": theta * np.exp(Z95 * se_log),
            "se_log": se_log,
            "gradient": g,
            "prior": [
                (f"LN({obj.priors[f].median:g}, sd {obj.priors[f].sd:.3g})" if f in obj.priors else "")
                for f in obj.free
            ],
            "identifiable": [f not in flagged for f in obj.free],
            "at_bound": bound,
        }
    )


def _uncertainty(obj: Objective, x, standard_errors: bool, hessian_step: float):
    k = len(obj.free)
    if not standard_errors:
        nan = np.full((k, k), np.nan)
        return nan, nan, np.full(k, np.nan), np.full(k, np.nan), set()
    H = hessian_fd(obj, x, hessian_step)
    return (H, *covariance(H, obj.free))


def fit(
    observations,
    *,
    model: AbstractModel | None = None,
    params: ParameterSet | None = None,
    free: Sequence[str] | None = None,
    n_patients: int | Mapping[str, int] = 64,
    seed: int = 0,
    optimizer: optax.GradientTransformation | None = None,
    line_search: bool = True,
    steps: int = 100,
    temperature: float | Sequence[float] = DEFAULT_TEMPERATURE,
    progress: bool = True,
    gtol: float = 1e-2,
    ftol: float = 1e-9,
    max_step: float = 1.0,
    designs: Mapping[str, StudyDesign] | None = None,
    settings: SolverSettings = FIT_SETTINGS,
    cv: Mapping[str, float] | None = None,
    priors: Mapping | None = None,
    anchor_baselines: bool = True,
    monte_carlo_error: bool = True,
    standard_errors: bool = True,
    hessian_step: float = 1e-3,
    dose_refresh: int = 10,
    dose_tol: float = DEFAULT_DOSE_TOL,
    bounds: Mapping[str, tuple[float, float]] | None = None,
) -> FitResult:
    """Fit typical parameters to summary data: negative log-likelihood of the rows plus
    log-normal priors, minimised over the free parameters on the log scale.

    Main arguments:
        observations: summary tables (:func:`lenapk.load_observations`) or a DataFrame of rows.
        model: the model (default: :func:`lenapk.default_model`); its ``calibration``
            (:class:`lenapk.calibration.CalibrationSpec`) gives the vocabulary of the rows and
            the defaults of ``free``, ``designs``, ``priors``, ``bounds`` and ``cv``.
        params: starting typical parameters (default: the model's); the non-free ones stay fixed.
        free: the parameters to estimate (log scale).
        n_patients, seed: the fixed virtual cohort of each study (an int, or a dict per study);
            study ``i`` (in table order) uses ``seed + i``.
        optimizer: an optax ``GradientTransformation`` (default: L-BFGS directions); with
            ``line_search`` (default) its update is searched along (backtracking Armijo),
            otherwise applied as a step (set ``line_search=False`` for Adam and the like).
        steps: maximum iterations; stops earlier when the projected max |gradient| < ``gtol``
            (converged) or, with a line search, the objective stalls (relative change < ``ftol``
            three times).
        temperature: smoothness of thresholded endpoints during the fit, or a list of decreasing
            temperatures (annealing: ``steps`` iterations at each, each from the previous
            optimum; the result is at the last).
        progress: show a tqdm progress bar.
    Other arguments:
        max_step (largest change of a log-parameter per line search), designs (per-study
        :class:`StudyDesign`), settings (solver tolerances of the fit), cv (between-patient CVs of
        means, by endpoint), priors (``{}`` for none), bounds (natural-scale ranges; the
        optimiser projects onto them), anchor_baselines (match each cohort's baseline means to
        the reported day-0 means), monte_carlo_error (the cohort's Monte Carlo error in the
        likelihood; ``False`` for data simulated from the same fixed cohort, which has none),
        standard_errors (compute the Hessian), hessian_step
        (log-scale finite-difference step), dose_refresh and dose_tol (below).

    Dose-modification rules make the simulated doses a discontinuous function of the
    parameters.  Their decisions have no derivative, so the fit treats the dose histories as
    data, as NONMEM treats recorded doses: the rules are run at the current estimate and their
    doses frozen; every ``dose_refresh`` iterations, and whenever the search at the frozen doses
    is done (converged, stalled or no decrease found), they are run again.  When they change
    more than a fraction ``dose_tol`` of the patient-days, their doses are frozen instead and
    the optimiser's memory restarts; a smaller change keeps the frozen doses, which are then
    self-consistent within the tolerance (without this, patients at a rule threshold flip back
    and forth at every refresh and the memory never builds up).  Convergence needs the rules to
    give the frozen doses back (at most ``dose_tol`` of patient-days changed), or, in a dose
    cycle, doses frozen and replaced after a finished search at them (the rules at each point
    choose the other history, so none is self-consistent; the fit ends at the optimum for the
    doses it holds, and the message says so); the Hessian is taken with the final dose histories
    fixed.  Returns a :class:`FitResult`.
    """
    from tqdm.auto import tqdm

    if not (isinstance(steps, (int, np.integer)) and steps >= 0):
        raise ValueError(f"steps must be a whole number >= 0, got {steps!r}")
    if not (isinstance(dose_refresh, (int, np.integer)) and dose_refresh >= 1):
        raise ValueError(f"dose_refresh must be a whole number >= 1 (iterations), got {dose_refresh!r}")
    temps = _temperatures(temperature)
    optimizer_name = "L-BFGS (default)" if optimizer is None else "given by the caller"
    optimizer = default_optimizer() if optimizer is None else optimizer
    if not isinstance(optimizer, optax.GradientTransformation):
        raise ValueError(f"optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}")
    t0 = time.perf_counter()
    obj = Objective(
        observations,
        model=model,
        free=free,
        params=params,
        n_patients=n_patients,
        seed=seed,
        temperature=temps[0],
        designs=designs,
        settings=settings,
        cv=cv,
        priors=priors,
        anchor_baselines=anchor_baselines,
        monte_carlo_error=monte_carlo_error,
        bounds=bounds,
    )
    if not obj.free:
        raise ValueError("free must name at least one parameter")
    run = _Run(obj, obj.x0.copy(), math.nan, np.zeros(0), [], dose_refresh, dose_tol)
    if obj.has_rules:
        run.refresh()
    run.f, run.g = run.obj.value_and_grad(run.x)
    t_first = time.perf_counter() - t0
    run.trace.append((0, temps[0], run.f, float(np.max(np.abs(run.g))), 0.0))
    iterations, msg = 0, "start"
    with tqdm(total=steps * len(temps), disable=not progress, desc="lenapk.fit", unit="it") as bar:
        for T in temps:  # annealing: each temperature starts from the previous optimum
            run.obj = run.obj.replace(temperature=T)
            run.f, run.g = run.obj.value_and_grad(run.x)
            done, _, msg = minimise(
                run, optimizer, line_search=line_search, steps=steps, gtol=gtol, ftol=ftol, max_step=max_step, bar=bar
            )
            iterations += done
    return _result(
        run,
        t0,
        t_first,
        iterations,
        msg,
        gtol,
        dose_tol,
        standard_errors,
        hessian_step,
        dict(
            n_patients=n_patients,
            seed=seed,
            temperature=temps[-1],
            temperatures=temps,
            optimizer=optimizer_name,
            line_search=line_search,
            rtol=settings.rtol,
            atol=settings.atol,
            error_norm=settings.error_norm,
            clock=None if settings.clock is None else vars(settings.clock),
            gtol=gtol,
            hessian_step=hessian_step,
        ),
        progress,
    )


def _result(
    run: _Run,
    t0,
    t_first,
    iterations,
    msg,
    gtol,
    dose_tol,
    standard_errors,
    hessian_step,
    settings: dict,
    progress: bool,
) -> FitResult:
    x, changed = run.x, 0.0
    if run.obj.has_rules:  # the rules at the final point, against the doses the fit ended with
        if run.frozen_at is None or not np.array_equal(run.frozen_at, x):
            run.refresh()  # within dose_tol the fit's doses stand, as at any refresh
        changed = run.changed
        if run.cycled:
            msg += (
                f"; dose histories in a cycle: the rules at the final point give back doses replaced before "
                f"({100 * changed:.2g}% of patient-days differ from the doses of the fit)"
            )
        elif changed > dose_tol:
            msg += f"; dose histories not at a fixed point ({100 * changed:.2g}% of patient-days changed)"
    obj = run.obj
    f, g = obj.value_and_grad(x)
    grad_max = float(np.max(np.abs(obj.projected(x, g))))
    converged = grad_max < gtol and (changed <= dose_tol or run.cycled)
    bound = obj.at_bound(x)
    if bound.any():
        msg += "; on a bound: " + ", ".join(n for n, b in zip(obj.free, bound) if b)
    t_opt = time.perf_counter() - t0
    H, cov, se_log, eig, flagged = _uncertainty(obj, x, standard_errors, hessian_step)
    sd = np.sqrt(np.clip(np.diag(cov), 1e-300, None))
    ovp, levels = obj.table_at(x)
    result = FitResult(
        params=obj.params_of(x),
        free=obj.free,
        estimates=_estimates(obj, x, g, se_log, flagged, bound),
        correlation=pd.DataFrame(cov / np.outer(sd, sd), index=list(obj.free), columns=list(obj.free)),
        covariance=pd.DataFrame(cov, index=list(obj.free), columns=list(obj.free)),
        model=obj.model,
        hessian=H,
        eigenvalues=eig,
        observed_vs_predicted=ovp,
        dose_level_table=levels,
        temperature_check=temperature_check(obj, x),
        trace=pd.DataFrame(run.trace, columns=["iteration", "temperature", "objective", "grad_max", "step"]),
        dose_refreshes=pd.DataFrame(
            run.refreshes,
            columns=["after_iteration", "changed", "objective_before", "objective_after", "kept", "cycle"],
        ),
        objective=float(f),
        objective_prior=float(obj.prior(x)[0]),
        grad_max=grad_max,
        iterations=iterations,
        evaluations=obj.evaluations,
        dose_changed=float(changed),
        converged=bool(converged),
        message=msg,
        non_identifiable=tuple(n for n in obj.free if n in flagged),
        designs={s.name: s.design.note for s in obj.studies},
        settings={**settings, "active": {s.name: s.active for s in obj.studies}},
        timings={
            "first_evaluation_s": t_first,
            "optimisation_s": t_opt,
            "hessian_s": time.perf_counter() - t0 - t_opt,
            "total_s": time.perf_counter() - t0,
        },
    )
    if progress:
        print(
            f"lenapk.fit: objective {result.objective:.4f}, {'converged' if converged else 'not converged'} "
            f"({msg}), {iterations} iterations, {result.timings['total_s']:.1f} s"
        )
    return result


def predict_observations(
    observations,
    params: ParameterSet | None = None,
    *,
    n_patients=64,
    seed: int = 0,
    temperature: float = 0.0,
    **kwargs,
) -> pd.DataFrame:
    """Every observation row beside the model's prediction at ``params`` (default: the model's
    typical values), on the same virtual cohorts as :func:`fit` (``n_patients``, ``seed``).
    ``predicted`` is the hard count; ``predicted_smooth`` uses ``temperature``.  Other keyword
    arguments as for :class:`Objective` (model, designs, settings, cv, anchor_baselines)."""
    kwargs.setdefault("settings", SolverSettings())
    obj = Objective(
        observations, free=(), params=params, n_patients=n_patients, seed=seed, temperature=temperature, **kwargs
    )
    return obj.table_at(obj.x0, temperature=temperature)[0]
