"""The fit objective: negative log-likelihood of summary rows plus log-normal priors, as a
function of the free parameters on the log scale ``x = log theta``.

Each study is one fixed virtual cohort (common random numbers: the objective is a deterministic,
smooth function of ``x`` at ``temperature > 0``) solved as one batched ODE; gradients come from
forward sensitivities (:mod:`lenapk.calibration._sensitivity`).

An :class:`Objective` is immutable: another temperature (:meth:`Objective.replace`) or dose
histories frozen at a new point (:meth:`Objective.freeze_doses`) give a new objective that
shares the compiled studies.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace as dc_replace

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .._core import AbstractModel, ParameterSet, SolverSettings, resolve_model
from ..endpoints import endpoints_of, wilson_interval
from ..population import check_setting, virtual_population
from ._designs import StudyDesign
from ._likelihood import Likelihood
from ._observations import Observations, validate_observation_table
from ._predict import dose_level_predictions
from ._rows import COURSE_CORRELATION, build_row_models
from ._sensitivity import nonzero
from ._study import Study
from ._vocabulary import CalibrationSpec, calibration_of

# In time itself, not the segment clock: at the fit's rtol a day takes few steps, and the clock's
# exponential and logarithm (with their sensitivities) made an evaluation slower
# (benchmarks/HISTORY.md, eighth session).  The max error norm, with which the shipped estimates
# were fitted (the solves' default became CVODE's weighted RMS after that fit).
FIT_SETTINGS = SolverSettings(rtol=1e-4, atol=1e-6, clock=None, error_norm="max")
DEFAULT_TEMPERATURE = 0.05


class Objective:
    """Negative log-likelihood of summary data (+ priors) of the free parameters on the log
    scale.  Built by :func:`lenapk.fit`; usable on its own (``value_and_grad``, ``table_at``)
    to check a model against data or to differentiate the fit objective."""

    def __init__(
        self,
        observations,
        *,
        model: AbstractModel | None = None,
        free: Sequence[str] | None = None,
        params: ParameterSet | None = None,
        n_patients: int | Mapping[str, int] = 64,
        seed: int = 0,
        temperature: float = DEFAULT_TEMPERATURE,
        designs: Mapping[str, StudyDesign] | None = None,
        settings: SolverSettings = FIT_SETTINGS,
        cv: Mapping[str, float] | None = None,
        priors: Mapping | None = None,
        anchor_baselines: bool = True,
        bounds: Mapping[str, tuple[float, float]] | None = None,
        monte_carlo_error: bool = True,
    ):
        self.model = resolve_model(model)
        self.monte_carlo_error = bool(monte_carlo_error)
        self.spec: CalibrationSpec = calibration_of(self.model)
        self.table, self.dose_levels = self._tables(observations)
        if not (isinstance(temperature, (int, float)) and temperature >= 0):
            raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
        self.temperature = float(temperature)
        self.typical = self.model.default_params() if params is None else params
        if not isinstance(self.typical, ParameterSet):
            raise ValueError(f"params must be a lenapk.ParameterSet, got {type(self.typical).__name__}")
        self.model.validate(self.typical)
        self.free = self._check_free(self.spec.free if free is None else free)
        all_priors = self.spec.priors if priors is None else priors
        self.priors = {k: v for k, v in all_priors.items() if k in self.free}
        self.settings, self.seed = settings, int(seed)
        self.designs = self._designs(designs)
        self.x0 = np.log(np.array([float(self.typical[f]) for f in self.free]))
        self.lower, self.upper = self._bounds(bounds)
        self._build_studies(n_patients, cv, anchor_baselines)
        self.frozen: dict = {}
        self._cache: dict = {}
        self._evaluations = [0]  # shared by the objectives derived from this one

    # ------------------------------------------------------------------ set-up
    def _tables(self, observations):
        if isinstance(observations, Observations):
            table, dose_levels = observations.observations, observations.dose_levels
        elif isinstance(observations, pd.DataFrame):
            table, dose_levels = validate_observation_table(observations, self.spec.vocabulary), pd.DataFrame()
        else:
            raise ValueError(
                f"observations must be lenapk Observations or a DataFrame, got {type(observations).__name__}"
            )
        if len(table) == 0:
            raise ValueError("observations: no rows to fit")
        return table.reset_index(drop=True), dose_levels

    def _designs(self, designs) -> dict:
        designs = dict(designs or {})
        missing = ~self.table["study"].isin(list(designs))
        if missing.any():
            if self.spec.default_designs is None:
                raise ValueError(
                    f"no design for the studies {sorted(set(self.table['study'][missing]))}; pass designs="
                )
            designs = {**self.spec.default_designs(self.table[missing], self.model), **designs}
        out = {s: designs[s] for s in self.table["study"].unique()}
        for s, d in out.items():
            check_setting(self.model, d.setting)
        return out

    def _bounds(self, bounds):
        b = {**self.spec.bounds, **(bounds or {})}
        lims = [b.get(f, (math.exp(x) * 1e-3, math.exp(x) * 1e3)) for f, x in zip(self.free, self.x0)]
        lower = np.log([lo for lo, _ in lims]) if lims else np.zeros(0)
        upper = np.log([hi for _, hi in lims]) if lims else np.zeros(0)
        for f, x, lo, hi in zip(self.free, self.x0, lower, upper):
            if not lo <= x <= hi:
                raise ValueError(
                    f"params.{f} = {math.exp(x):g} lies outside its bounds [{math.exp(lo):g}, "
                    f"{math.exp(hi):g}]; pass bounds={{{f!r}: (low, high)}}"
                )
        return lower, upper

    def _build_studies(self, n_patients, cv, anchor_baselines: bool) -> None:
        pops, overrides, anchored, n_virtual = {}, {}, set(), {}
        for i, (study, design) in enumerate(self.designs.items()):
            n = n_patients[study] if isinstance(n_patients, Mapping) else n_patients
            if not (isinstance(n, (int, np.integer)) and n >= 1):
                raise ValueError(f"n_patients must be a whole number >= 1, got {n!r}")
            pop = virtual_population(self.model, int(n), self.seed + i, setting=design.setting)
            overrides[study] = {}
            if anchor_baselines:
                pop, overrides[study], rows_used = self._anchor(study, pop)
                anchored |= rows_used
            pops[study], n_virtual[study] = pop, int(n)
        self.anchored = frozenset(anchored)
        self.rows = build_row_models(
            self.table,
            self.designs,
            self.spec.vocabulary,
            cv={**self.spec.cv, **(cv or {})},
            anchored=self.anchored,
            # the cohort's Monte Carlo error enters the likelihood (off for data simulated from the
            # same fixed cohort, which has none)
            n_virtual=n_virtual if self.monte_carlo_error else None,
            course_correlation=getattr(self.spec, "course_correlation", COURSE_CORRELATION),
        )
        self.likelihood = Likelihood.from_rows(self.rows)
        response = endpoints_of(self.model).response
        self.studies = [
            Study(
                name=s,
                design=d,
                rows=[r for r in self.rows if r.study == s],
                model=self.model,
                pop=pops[s],
                overrides=overrides[s],
                free=self.free,
                x0=self.x0,
                typical=self.typical,
                settings=self.settings,
                dose_levels=self.dose_levels,
                response=response,
            )
            for s, d in self.designs.items()
        ]

    def _check_free(self, free) -> tuple[str, ...]:
        free = tuple(free)
        specs = {s.name: s for s in self.model.parameter_specs}
        for f in free:
            if f not in specs:
                raise ValueError(f"free: unknown parameter {f!r}; known: {sorted(specs)}")
            if specs[f].kind == "covariate":
                raise ValueError(f"free: {f!r} is a patient covariate, not a model parameter")
            if not specs[f].positive:
                raise ValueError(f"free: {f!r} may be 0 and cannot be estimated on the log scale")
        if len(set(free)) != len(free):
            raise ValueError(f"free: names repeated in {free}")
        p = self.typical
        for f in free:
            t = p.replace(**{k: jnp.zeros_like(v) for k, v in p.values.items()}).replace(**{f: jnp.ones_like(p[f])})
            _, d = jax.jvp(self.model.pk_constants, (p,), (t,))
            if nonzero(d):
                raise ValueError(
                    f"free: {f!r} acts on the closed-form PK, which the sensitivity gradient does not differentiate; "
                    "PK parameters cannot be estimated from these summaries (no concentrations)"
                )
        return free

    def _anchor(self, study, pop):
        """Rescale the cohort's baseline covariates (and set baseline parameters) so its baseline
        means equal the reported day-0 means."""
        t = self.table
        rows = t[(t["study"] == study) & (t["statistic"] == "mean") & (t["day"] == 0)]
        cov = pop.covariates.copy()
        overrides, used = {}, set()
        for i, rec in rows.iterrows():
            obs = getattr(self.spec.vocabulary[rec["endpoint"]].predictor, "observable", None)
            if obs in self.spec.baseline_covariates:
                name = self.spec.baseline_covariates[obs]
                cov[name] = cov[name] * float(rec["value"]) / float(cov[name].mean())
                used.add(int(i))
            elif obs in self.spec.baseline_parameters and self.spec.baseline_parameters[obs] not in self.free:
                overrides[self.spec.baseline_parameters[obs]] = float(rec["value"])
                used.add(int(i))
        return dc_replace(pop, covariates=cov), overrides, used

    # ------------------------------------------------------------------ derived objectives
    def replace(self, *, temperature: float | None = None) -> "Objective":
        """The same objective at another temperature (shares the compiled studies)."""
        new = copy.copy(self)
        new.temperature = self.temperature if temperature is None else float(temperature)
        new._cache = {}
        return new

    @property
    def has_rules(self) -> bool:
        return any(s.design.rules is not None for s in self.studies)

    def freeze_doses(self, x) -> tuple["Objective", float]:
        """Run the dose rules at ``x`` and return ``(objective, changed)``: an objective that gives
        those doses as fixed inputs (smooth in ``x``: the rules' decisions have no derivative
        anyway) and the fraction of patient-days whose dose changed since the last freeze."""
        frozen = dict(self.frozen)
        for s in self.studies:
            if s.design.rules is not None:
                frozen[s.name] = s.solve(x, tangents=False)[2]
        new = copy.copy(self)
        new.frozen, new._cache = frozen, {}
        return new, new.doses_changed_from(self.frozen)

    def doses_changed_from(self, frozen: Mapping) -> float:
        """Fraction of the patient-days of the studies with dose rules whose frozen dose here
        differs from ``frozen`` (another objective's ``frozen``; a study missing there counts
        every patient-day as changed)."""
        changed, total = 0, 0
        for name, doses in self.frozen.items():
            old = frozen.get(name)
            changed += doses.size if old is None else int(jnp.sum(jnp.abs(doses - old) > 1e-9))
            total += doses.size
        return changed / total if total else 0.0

    # ------------------------------------------------------------------ bounds and priors
    def binding(self, x, g) -> np.ndarray:
        """The parameters held at a bound: on it (to 1e-12 on the log scale) with the gradient
        pushing outwards, so that a descent step would leave the box."""
        x, g = np.asarray(x, dtype=float), np.asarray(g, dtype=float)
        return ((x <= self.lower + 1e-12) & (g > 0)) | ((x >= self.upper - 1e-12) & (g < 0))

    def projected(self, x, g) -> np.ndarray:
        """The gradient without the components that push against an active bound."""
        return np.where(self.binding(x, g), 0.0, np.asarray(g, dtype=float))

    def at_bound(self, x) -> np.ndarray:
        return (x <= self.lower + 1e-9) | (x >= self.upper - 1e-9)

    def x_of(self, params: ParameterSet | Mapping[str, float]) -> np.ndarray:
        return np.log(np.array([float(params[f]) for f in self.free]))

    def params_of(self, x) -> ParameterSet:
        return self.typical.replace(**{f: float(np.exp(v)) for f, v in zip(self.free, np.asarray(x))})

    def prior(self, x) -> tuple[float, np.ndarray]:
        x = np.asarray(x, dtype=float)
        value, grad = 0.0, np.zeros_like(x)
        for i, f in enumerate(self.free):
            if f in self.priors:
                pr = self.priors[f]
                z = (x[i] - math.log(pr.median)) / pr.sd
                value += 0.5 * z * z
                grad[i] += z / pr.sd
        return value, grad

    # ------------------------------------------------------------------ evaluation
    @property
    def evaluations(self) -> int:
        return self._evaluations[0]

    def _evaluate(self, x, studies=None):
        """(nll_data, grad_data, {study: (pred, J, out)}) at x; solves dispatched together."""
        x = np.asarray(x, dtype=float)
        studies = self.studies if studies is None else studies
        tasks = [(s, s.submit(x, self.frozen.get(s.name))) for s in studies]
        value, grad, per = 0.0, np.zeros(len(self.free)), {}
        for s, task in tasks:
            out = s.collect(task)
            pred, J = s.pred_and_jacobian(out, self.temperature)
            nll, dnll = s._nll(pred)
            nll = float(nll)
            if not bool(out[3]) or not math.isfinite(nll):
                return math.inf, np.full(len(self.free), np.nan), {}
            value += nll
            if len(s.active):
                grad[s.active_idx] += np.asarray(J) @ np.asarray(dnll)
            per[s.name] = (np.asarray(pred), np.asarray(J), out)
        self._evaluations[0] += 1
        return value, grad, per

    def value_and_grad(self, x) -> tuple[float, np.ndarray]:
        """Objective (data NLL + prior penalty) and its exact gradient at ``x`` (log scale)."""
        key = np.asarray(x, dtype=float).tobytes()
        if key not in self._cache:
            v, g, per = self._evaluate(x)
            pv, pg = self.prior(x)
            self._cache = {key: (v + pv, g + pg, per)}
        v, g, _ = self._cache[key]
        return v, g.copy()

    def __call__(self, x) -> float:
        return self.value_and_grad(x)[0]

    def gradient_at(self, x, studies) -> np.ndarray:
        """Gradient when only ``studies`` are re-solved (the others' contribution is left out);
        used by the Hessian's finite differences."""
        return self._evaluate(x, studies)[1]

    # ------------------------------------------------------------------ reporting
    def table_at(self, x, *, temperature: float | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``(observed vs predicted, responses by dose level)`` at ``x``: for every row the hard
        count (``predicted``), the smooth value of the fit (``predicted_smooth``), the
        likelihood and residuals."""
        x = np.asarray(x, dtype=float)
        cached = self._cache.get(x.tobytes())
        per = cached[2] if cached else None
        hard, smooth = np.full(len(self.rows), np.nan), np.full(len(self.rows), np.nan)
        T = self.temperature if temperature is None else temperature
        level_frames = []
        for s in self.studies:
            out = per[s.name][2] if per and s.name in per else s.solve(x, self.frozen.get(s.name))
            values = {k: np.asarray(v) for k, v in out[0].items()}
            doses = None if out[2] is None else np.asarray(out[2])
            o = (values, None, doses, out[3])
            hard[s.idx], smooth[s.idx] = s.predict(o, 0.0), s.predict(o, T)
            if len(s.dose_levels) and s.design.rules is not None and s.response is not None:
                level_frames.append(
                    dose_level_predictions(s.dose_levels, s.name, s.design, values, s.sel_days, doses, s.response)
                )
        return self._frame(hard, smooth), (
            pd.concat(level_frames, ignore_index=True) if level_frames else pd.DataFrame()
        )

    def _frame(self, hard, smooth) -> pd.DataFrame:
        rows = self.rows
        df = self.table[["row", "study", "endpoint", "statistic", "day", "unit"]].copy()
        df["observed"] = self.table["value"].to_numpy(float)
        df["predicted"], df["predicted_smooth"] = hard, smooth
        for name in ("n_used", "n_assumed", "k", "N", "se"):
            df[name] = [getattr(r, name) for r in rows]
        df["observed_lo95"], df["observed_hi95"] = _observed_interval(rows)
        df["likelihood"] = [r.likelihood if r.fitted else "" for r in rows]
        df["fitted"] = [r.fitted for r in rows]
        df["residual"] = np.where(df["fitted"], self.likelihood.residuals(hard), np.nan)
        df["nll"] = np.where(df["fitted"], np.asarray(self.likelihood.per_row(smooth)), np.nan)
        df["status"] = [(("fitted" + (f"; {r.reason}" if r.reason else "")) if r.fitted else r.reason) for r in rows]
        return df


def _observed_interval(rows) -> tuple[np.ndarray, np.ndarray]:
    """95% interval of each observed value: Wilson for proportions, +/- 1.96 SE for means."""
    lo, hi = np.full(len(rows), np.nan), np.full(len(rows), np.nan)
    for i, r in enumerate(rows):
        if r.likelihood == "gaussian":
            lo[i], hi[i] = r.observed - 1.96 * r.se, r.observed + 1.96 * r.se
        elif math.isfinite(r.N) and math.isfinite(r.k):
            lo[i], hi[i] = wilson_interval(r.k, r.N)
    return lo, hi
