r"""Predictions of ODE models: any right-hand side, solved with diffrax through a subject's doses.

:class:`OdeStructure` predicts one subject's observations from a user's ODE

.. math::
    \frac{dy}{dt} = \mathrm{rhs}(t, y, \phi) + \sum_{d\ \mathrm{infusing}} R_d\, e_{s(d)},\qquad
    y(t_0) = y_0(\phi),\qquad f_j = \mathrm{output}(y(t_j), \phi)

with ``t`` in the data's time unit.  A bolus dose of amount ``A`` into NONMEM compartment
``CMT`` adds ``F A`` to state ``s = dose_states[CMT - 1]`` at its time (``y <- y + F A e_s``); a
zero-order infusion of duration ``D`` adds its rate ``R = A / D`` to that state's derivative from
its start for ``F D`` (NONMEM's rules, as in the closed forms: the optional parameters ``F`` and
``ALAG`` act on CMT 1 doses only, ``F`` scales the amount and an infusion keeps its rate).  Doses
into compartments beyond ``dose_states`` do nothing.

The solve: the subject's events (dose starts and infusion ends, plus ``t_0 = min(0, first
dose)``) and observations are merged in time order, and a ``lax.scan`` integrates from each to
the next with :func:`diffrax.diffeqsolve` (adaptive, :class:`diffrax.PIDController`, saving the
end only: cheaper to compile than saving at given times), then applies the event or reads the
output.  An observation at a dose time sees the dose
(``t >= t_d``, the closed forms' convention).  Padded doses (epoch -1) sit at the last time and
do nothing, so every array stays finite and ``vmap`` over subjects of different lengths works.

Resets (epochs): a dose whose epoch is above the current one first resets the state to
``y_0`` and stops the running infusions (NONMEM EVID 4).  A reset without a dose (EVID 3) has no
time in the dose arrays: observations whose epoch is not the one the doses reached by their
time predict NaN.  Steady-state doses (``SS=1``) are not supported: a subject with one predicts
NaN, as does a subject whose solve fails (``max_steps``), so that :func:`estimate`'s finite
objective check names the subject.

Derivatives: the default ``adjoint`` :class:`diffrax.DirectAdjoint` supports ``jax.grad``,
``jax.jacfwd`` and ``jax.hessian`` (the FOCE-I objective needs ``jacfwd`` in the random effects
inside ``grad`` in the population parameters).  Diffrax's :class:`diffrax.RecursiveCheckpointAdjoint`
is cheaper in reverse mode but refuses forward mode (``jacfwd``, ``hessian``); choose it only for
reverse-only use.  Under ``vmap`` DirectAdjoint's bounded loop costs ``max_steps`` steps per
interval whatever the steps taken: keep ``max_steps`` near what an interval needs.

:func:`model_structure` adapts a model on lenapk's engine interface (closed-form PK feeding an
ODE, or doses into ODE states) to the same ``predict(params, subject)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp

from .._core._model import AbstractModel
from .._core._parameters import ParameterSet
from ._subjects import Subjects


class SolveSettings(NamedTuple):
    """Tolerances, solver, step limit (per interval between events) and adjoint."""

    rtol: float
    atol: float
    solver: diffrax.AbstractSolver
    max_steps: int
    adjoint: diffrax.AbstractAdjoint


class _Events(NamedTuple):
    """Sorted events (J of them): ``time``, state ``jump`` (J, n), infusion ``rate`` change
    (J, n), ``epoch`` and ``start`` (a dose start, which may reset)."""

    time: jnp.ndarray
    jump: jnp.ndarray
    rate: jnp.ndarray
    epoch: jnp.ndarray
    start: jnp.ndarray


def _targets(cmt, dose_states: tuple[int, ...], n_states: int):
    """One-hot rows (k, n): the state each dose enters (zero rows for other compartments)."""
    rows = jnp.zeros(cmt.shape + (n_states,))
    for i, s in enumerate(dose_states):
        rows = rows + jnp.where((cmt == i + 1)[:, None], jax.nn.one_hot(s, n_states), 0.0)
    return rows


def _last_time(subject: Subjects, real, start, end):
    """The end of the solve: the last observation, dose start or infusion end (finite)."""
    obs = jnp.where(subject.obs_mask, subject.obs_time, -jnp.inf).max(initial=0.0)
    doses = jnp.where(real, jnp.maximum(start, end), -jnp.inf).max(initial=0.0)
    return jnp.maximum(obs, doses)


def dose_events(subject: Subjects, dose_states, n_states: int, f1=1.0, alag1=0.0, scale=1.0):
    """The sorted events of one subject (a dummy first event at ``t_0 = min(0, first dose)``),
    the first time ``t_0`` and the last ``t_end``.  ``scale`` multiplies amounts; ``f1``, ``alag1``
    act on CMT 1 doses (bioavailability, lag time)."""
    amt, dur, cmt = subject.dose_amt * scale, subject.dose_duration, subject.dose_cmt
    first = cmt == 1
    real = subject.dose_epoch >= 0
    f = jnp.where(first, f1, 1.0)
    start = subject.dose_time + jnp.where(first, alag1, 0.0)
    infusion = dur > 0
    rate = jnp.where(infusion, amt / jnp.where(infusion, dur, 1.0), 0.0)
    end = start + dur * f
    t_end = _last_time(subject, real, start, end)
    t0 = jnp.minimum(jnp.where(real, start, 0.0).min(initial=0.0), 0.0)
    rows = _targets(cmt, dose_states, n_states)
    time = jnp.concatenate([jnp.where(real, start, t_end), jnp.where(real & infusion, end, t_end)])
    jump = jnp.concatenate([jnp.where(infusion, 0.0, amt * f)[:, None] * rows, jnp.zeros_like(rows)])
    drate = jnp.concatenate([rate[:, None] * rows, -rate[:, None] * rows])
    epoch = jnp.concatenate([subject.dose_epoch, subject.dose_epoch])
    is_start = jnp.concatenate([real, jnp.zeros_like(real)])
    order = jnp.argsort(time, stable=True)
    zero = jnp.zeros((1, n_states))
    events = _Events(
        jnp.concatenate([t0[None], time[order]]),
        jnp.concatenate([zero, jump[order]]),
        jnp.concatenate([zero, drate[order]]),
        jnp.concatenate([jnp.zeros(1, epoch.dtype), epoch[order]]),
        jnp.concatenate([jnp.zeros(1, bool), is_start[order]]),
    )
    return events, t0, t_end


def _apply(y, r, current, y0, ev):
    """Apply one event ``(jump, rate, epoch, start)``: reset (a start of a later epoch), then its
    jump and rate change."""
    jump, drate, epoch, start = ev
    reset = start & (epoch > current)
    y = jnp.where(reset, y0, y)
    r = jnp.where(reset, 0.0, r)
    current = jnp.where(reset, epoch, current)
    same = epoch == current
    return y + jnp.where(same, jump, 0.0), r + jnp.where(same, drate, 0.0), current


def _timeline(events: _Events, t_obs):
    """Events and observations merged in time order (an event before an observation at its
    time): the order, and per item its time and whether it is an observation."""
    n_ev = events.time.shape[0]
    time = jnp.concatenate([events.time, t_obs])
    order = jnp.argsort(time, stable=True)
    return order, time[order], order >= n_ev


def integrate(vector_field, output, y0, args, events: _Events, t_end, subject: Subjects, settings: SolveSettings):
    r"""Outputs at each observation of ``subject``: ``vector_field(t, y, args, epoch)`` plus the
    running infusion rates is integrated from item to item of the merged events and
    observations (each solve saves only its end); an event is then applied, or
    ``output(t, y, args, epoch)`` read: a scalar, or a vector of ``k`` outputs of which
    observation ``j`` takes element ``subject.obs_output[j]`` (its DVID's index).  NaN where the
    epochs disagree, a solve failed or a steady-state dose is present."""
    n_ev, m = events.time.shape[0], subject.obs_time.shape[0]
    t_obs = jnp.where(subject.obs_mask, subject.obs_time, t_end)
    order, times, is_obs = _timeline(events, t_obs)
    ev_index = jnp.clip(order, 0, n_ev - 1)
    ev = jax.tree_util.tree_map(lambda a: a[ev_index], events)
    obs_epoch = subject.obs_epoch[jnp.clip(order - n_ev, 0, m - 1)]
    controller = diffrax.PIDController(rtol=settings.rtol, atol=settings.atol)
    term = diffrax.ODETerm(lambda t, y, a: vector_field(t, y, a[0], a[2]) + a[1])

    def step(carry, x):
        y, r, current, t_prev, bad = carry
        t, obs, e, o_epoch = x
        t = jnp.maximum(t, t_prev)  # observations before t_0 read y0
        sol = diffrax.diffeqsolve(
            term, settings.solver, t_prev, t, None, y, args=(args, r, current),
            saveat=diffrax.SaveAt(t1=True), stepsize_controller=controller,
            max_steps=settings.max_steps, adjoint=settings.adjoint, throw=False,
        )  # fmt: skip
        y = sol.ys[-1]
        f = jnp.atleast_1d(output(t, y, args, current))
        bad = bad | (sol.result != diffrax.RESULTS.successful)
        y_new, r_new, c_new = _apply(y, r, current, y0, e[1:])
        keep = lambda new, old: jnp.where(obs, old, new)  # noqa: E731
        carry = (keep(y_new, y), keep(r_new, r), keep(c_new, current), t, bad)
        return carry, (f, obs & (o_epoch != current))

    init = (y0, jnp.zeros_like(y0), jnp.asarray(0, events.epoch.dtype), events.time[0], jnp.asarray(False))
    (*_, failed), (f, wrong_epoch) = jax.lax.scan(step, init, (times, is_obs, (times, *ev[1:]), obs_epoch))
    outputs = jnp.zeros((n_ev + m, f.shape[1])).at[order].set(f)[n_ev:]
    which = jnp.clip(subject.obs_output, 0, f.shape[1] - 1)
    pred = jnp.take_along_axis(outputs, which[:, None], axis=1)[:, 0]
    wrong = jnp.zeros(n_ev + m, bool).at[order].set(wrong_epoch)[n_ev:]
    bad = failed | wrong | jnp.any(subject.dose_ss & (subject.dose_epoch >= 0))
    return jnp.where(bad, jnp.nan, pred)


class OdeStructure(eqx.Module):
    """A structural model given by its ODE (module docstring).

    - ``rhs(t, y, params) -> dy/dt`` (state vector ``(n,)``, ``t`` in the data's time unit);
    - ``initial_state(params) -> y0`` (n,), the state at ``t_0`` and after a reset;
    - ``dose_states``: the state index that NONMEM CMT 1, 2, ... doses enter;
    - ``output(y, params) -> f``, the prediction: a scalar, or a vector with one element per
      output of the data (an observation of DVID index ``k`` takes element ``k``);
    - ``parameter_names``: the individual parameters ``params`` must give (documentation);
    - solver: ``rtol``, ``atol`` (PID step control), ``solver`` (:class:`diffrax.Tsit5`, or
      :class:`diffrax.Kvaerno5` for stiff systems), ``max_steps`` per interval between events and observations,
      ``adjoint`` (see the module docstring).
    """

    rhs: Callable = eqx.field(static=True)
    initial_state: Callable = eqx.field(static=True)
    dose_states: tuple[int, ...] = eqx.field(static=True)
    output: Callable = eqx.field(static=True)
    parameter_names: tuple[str, ...] = eqx.field(static=True, default=())
    rtol: float = eqx.field(static=True, default=1e-8)
    atol: float = eqx.field(static=True, default=1e-10)
    solver: diffrax.AbstractSolver = diffrax.Tsit5()
    max_steps: int = eqx.field(static=True, default=1024)
    adjoint: diffrax.AbstractAdjoint = diffrax.DirectAdjoint()

    def __check_init__(self):
        if not all(isinstance(s, int) and s >= 0 for s in self.dose_states):
            raise ValueError(f"OdeStructure.dose_states must be state indices (ints >= 0), got {self.dose_states!r}")
        for name in ("rtol", "atol"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 < v < 1):
                raise ValueError(f"OdeStructure.{name} must be in (0, 1), got {v!r}")
        if not (isinstance(self.max_steps, int) and self.max_steps > 0):
            raise ValueError(f"OdeStructure.max_steps must be a positive int, got {self.max_steps!r}")

    @property
    def settings(self) -> SolveSettings:
        return SolveSettings(self.rtol, self.atol, self.solver, self.max_steps, self.adjoint)

    def predict(self, params: dict, subject: Subjects) -> jnp.ndarray:
        """``output`` at each of ``subject.obs_time`` (m,), one subject (no subject axis)."""
        return _predict_ode(self, params, subject)

    def _predict(self, params, subject):
        y0 = jnp.asarray(self.initial_state(params), dtype=float)
        if max(self.dose_states, default=-1) >= y0.shape[0]:
            raise ValueError(f"OdeStructure.dose_states {self.dose_states} index beyond the {y0.shape[0]} states")
        events, _, t_end = dose_events(
            subject, self.dose_states, y0.shape[0], params.get("F", 1.0), params.get("ALAG", 0.0)
        )
        return integrate(
            lambda t, y, p, _: self.rhs(t, y, p),
            lambda t, y, p, _: self.output(y, p),
            y0, params, events, t_end, subject, self.settings,
        )  # fmt: skip


# ---------------------------------------------------------------------- engine models


def _closed_form_concentration(pk, constants, t, subject: Subjects, epoch, scale):
    r"""Concentration at time ``t`` (h) by superposition of the subject's doses of ``epoch``:
    dose ``d`` (``tau = t - t_d >= 0``, compartment ``CMT``, ``u = min(tau, D)``) contributes
    ``pk.concentration(x_d, tau - u)`` with ``x_d = A e_CMT`` for a bolus and
    ``pk.advance(0, u, rate=A/D)`` for an infusion (into the central compartment; the closed
    forms take no other infusions, which then contribute nothing)."""
    n_cmt = len(pk.compartments)
    amt = subject.dose_amt * scale
    dur = subject.dose_duration
    infusion = dur > 0
    rate = jnp.where(infusion, amt / jnp.where(infusion, dur, 1.0), 0.0)
    tau = t - subject.dose_time
    counts = (tau >= 0) & (subject.dose_epoch == epoch) & (subject.dose_cmt >= 1) & (subject.dose_cmt <= n_cmt)
    tau = jnp.where(counts, tau, 0.0)
    u = jnp.minimum(tau, dur)
    rows = jax.nn.one_hot(jnp.clip(subject.dose_cmt - 1, 0, n_cmt - 1), n_cmt)
    central = pk.compartments.index("central")

    def one(row, a, r, u_d, tau_d):
        x = jnp.where(r > 0, 0.0, a) * row + pk.advance(jnp.zeros(n_cmt), u_d, constants, r * row[central])
        return pk.concentration(x, tau_d - u_d, constants)

    conc = jax.vmap(one)(rows, amt, rate, u, tau)
    return jnp.sum(jnp.where(counts, conc, 0.0))


class EngineStructure(eqx.Module):
    """``predict(params, subject)`` of an engine model (see :func:`model_structure`)."""

    model: AbstractModel
    observables: tuple[str, ...] = eqx.field(static=True)
    dose_unit_scale: float = eqx.field(static=True, default=1.0)
    rtol: float = eqx.field(static=True, default=1e-8)
    atol: float = eqx.field(static=True, default=1e-10)
    solver: diffrax.AbstractSolver = diffrax.Tsit5()
    max_steps: int = eqx.field(static=True, default=1024)
    adjoint: diffrax.AbstractAdjoint = diffrax.DirectAdjoint()

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.model.parameter_specs)

    @property
    def compartments(self) -> tuple[str, ...]:
        return tuple(self.model.pk.compartments)

    def _dose_states(self) -> tuple[int, ...]:
        pk = self.model.pk
        if pk.closed_form:
            return ()
        return tuple(self.model.state_names.index(pk.targets[c]) for c in pk.compartments)

    def predict(self, params: dict, subject: Subjects) -> jnp.ndarray:
        """At each of ``subject.obs_time`` (h), one subject: ``observables[obs_output]``."""
        return _predict_engine(self, params, subject)

    def _predict(self, params, subject):
        model, unit = self.model, self.model.time_unit_h
        p = ParameterSet({**model.default_params().values, **params})
        c = model.derive(p)
        y0 = jnp.asarray(model.initial_state(c), dtype=float)
        closed = model.pk.closed_form
        constants = model.pk_constants(p) if closed else None

        def conc(t, epoch):
            if not closed:
                return None
            return _closed_form_concentration(model.pk, constants, t, subject, epoch, self.dose_unit_scale)

        def vector_field(t, y, _, epoch):  # d y / d t_h = rhs(t_h / unit) / unit
            return model.rhs(t / unit, y, conc(t, epoch), c) / unit

        def output(t, y, _, epoch):
            values = model.observables(y, conc(t, epoch), c)
            return jnp.stack([values[name] for name in self.observables])

        events, _, t_end = dose_events(subject, self._dose_states(), y0.shape[0], scale=self.dose_unit_scale)
        settings = SolveSettings(self.rtol, self.atol, self.solver, self.max_steps, self.adjoint)
        return integrate(vector_field, output, y0, None, events, t_end, subject, settings)


# ``jit`` inside: an objective calls ``predict`` many times with the same shapes (BFGS steps,
# ``jacfwd``, ``grad``), and JAX then reuses one traced solve instead of tracing diffrax again.
_predict_ode = jax.jit(lambda structure, params, subject: structure._predict(params, subject))
_predict_engine = jax.jit(lambda structure, params, subject: structure._predict(params, subject))


def model_structure(
    model: AbstractModel, observable: str | Sequence[str], *, dose_unit_scale: float = 1.0, **solver
) -> EngineStructure:
    r"""A structure predicting ``observable`` of an engine model (:class:`lenapk.AbstractModel`).

    Several outputs: ``observable`` a sequence of names, one per output of the data (DVID), in
    the data's order of outputs (``NonmemData.outputs``): an observation of output ``k`` is
    predicted by ``observable[k]``.

    ``predict(params, subject)``: ``params`` names some of the model's parameters (the others
    take the model's defaults); ``c = model.derive(p)``, ``y(t_0) = model.initial_state(c)``,
    and with data time ``t`` in hours and ``u = model.time_unit_h`` hours per model time unit

    .. math::
        \frac{dy}{dt} = \frac{1}{u}\,\mathrm{rhs}(t/u, y, C(t), c),\qquad
        f = \mathrm{observables}(y, C(t), c)[\mathrm{observable}]

    where ``C(t)`` is the closed-form concentration (``model.pk`` with ``model.pk_constants(p)``,
    superposed over the subject's doses of the current epoch; NONMEM CMT numbers the model's
    ``pk.compartments``) or ``None`` when the model doses into its ODE states
    (:class:`lenapk.OdeDosing`: CMT ``i`` enters state ``targets[compartments[i-1]]``).  Dose
    times and durations are in hours, amounts times ``dose_unit_scale`` in the model's unit (mg);
    the model's time origin is the data's time 0.  ``solver`` keywords: ``rtol``, ``atol``,
    ``solver``, ``max_steps``, ``adjoint`` (as :class:`OdeStructure`)."""
    if not isinstance(model, AbstractModel):
        raise ValueError(f"model must be a lenapk model (AbstractModel), got {type(model).__name__}")
    names = (observable,) if isinstance(observable, str) else tuple(observable)
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"observable must be a name or a non-empty sequence of names, got {observable!r}")
    model.require_observables(list(names), who="model_structure")
    return EngineStructure(model, names, float(dose_unit_scale), **solver)
