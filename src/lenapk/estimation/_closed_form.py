r"""Exact predictions of linear 1- and 2-compartment PK models (NONMEM ADVAN1-4) by superposition.

A structure maps one subject's individual parameters and dose records (:class:`Subjects` arrays
without the subject axis, as ``vmap`` passes them) to the central concentration
``C = A_central / V`` at each observation time.  The system is linear, so ``C`` is the sum over
doses of ``amount x unit response``, and the unit response in the central compartment is a sum
over the decay rates ``lambda_i`` (``k = CL/V``; two compartments: ``alpha > beta``)

.. math::
    r(\tau) = \sum_i c_i K(\lambda_i)
        \quad\text{(dose into central or peripheral)},\qquad
    r(\tau) = -k_a \sum_i c_i K[k_a, \lambda_i] \quad\text{(dose into the depot)}

where ``K(lambda)`` is the kernel of the dose (below) and ``K[a, b] = (K(a) - K(b))/(a - b)`` its
divided difference (the depot's ``e^{-k_a t}`` convolved with mode ``lambda``).  The central
coefficients are ``c = 1`` (one compartment), ``c_alpha = (alpha - k21)/(alpha - beta)``,
``c_beta = (k21 - beta)/(alpha - beta)``, and for a dose into the peripheral compartment
``c_alpha = -k21/(alpha - beta) = -c_beta``.

Kernels, for a dose of duration ``D`` (0: bolus; otherwise a zero-order infusion of rate
``amount/D``), ``tau`` after its start, ``u = min(tau, D)``, ``exprel(x) = (e^x - 1)/x``:

.. math::
    K(\lambda) = \frac{u}{D} e^{-\lambda(\tau - u)}\,\mathrm{exprel}(-\lambda u)
        + [\mathrm{SS}]\; e^{-\lambda(\tau + II - D)}\,\mathrm{exprel}(-\lambda D)
          \,\frac{1}{1 - e^{-\lambda II}}

(``u/D = 1`` for a bolus).  The first term is the dose itself (for a bolus ``e^{-lambda tau}``);
the second, for a steady-state dose (NONMEM ``SS=1``, interval ``II > 0``, ``D <= II``), is the
geometric sum of the same dose given at ``t_d - j II`` for all ``j >= 1``.  Each kernel is a
product of ``e^{-lambda s}``, ``exprel(-lambda u)`` and ``1/(1 - e^{-lambda II})``, whose divided
differences have forms exact at ``a = b`` and free of cancellation as ``a -> b`` (``lo <= hi``
are ``a, b`` sorted):

.. math::
    e^{-\lambda s}[a, b] = -s\, e^{-lo\, s}\,\mathrm{exprel}(-(hi - lo) s),\qquad
    \mathrm{exprel}(-\lambda u)[a, b] = \frac{e^{-lo\,u}\,\mathrm{exprel}(-(hi - lo)u)
        - \mathrm{exprel}(-lo\,u)}{hi},

    S[a, b] = S(a) S(b)\, e^{-\lambda II}[a, b],\qquad S(\lambda) = 1/(1 - e^{-\lambda II}),

combined by the product rule ``(fg)[a, b] = f(a) g[a, b] + f[a, b] g(b)``.  So ``ka == k`` and
``ka == alpha`` or ``beta`` give the exact limit and finite gradients.  ``alpha - beta`` (the
only other denominator) is positive whenever ``Q > 0``.

Dose rules (NONMEM's): a dose counts at observation times ``t >= t_d`` (a dose at the time of
an observation counts) and only in its own epoch (resets, see :mod:`._subjects`).  The optional
parameters ``F`` (default 1) and ``ALAG`` (default 0) apply to doses into CMT 1 -- NONMEM's ``F1``
and ``ALAG1``: the depot in the oral structures, the central compartment in the IV ones.  ``F``
scales the amount; an infusion keeps its rate (``AMT/D``), so its duration becomes ``F D``.
A lagged steady-state dose's earlier doses count from ``t_d`` on (exact when ``ALAG + D <= II``).
A steady-state flag with ``II = 0`` is ignored (constant steady-state infusions are not
supported); doses into compartments the structure lacks contribute nothing.
"""

from __future__ import annotations

import abc
from typing import ClassVar, NamedTuple

import equinox as eqx
import jax.numpy as jnp

from .._core._pk import exprel
from ._subjects import Subjects


class Modes(NamedTuple):
    """The central unit responses of a structure: decay ``rates`` ``lambda_i``; ``direct``, CMT ->
    coefficients ``c_i`` of ``K(lambda_i)``; for a depot (CMT 1) its rate ``ka`` and
    coefficients ``depot`` (``-ka c_i``) of ``K[ka, lambda_i]``."""

    rates: tuple
    direct: dict
    ka: jnp.ndarray | None = None
    depot: tuple = ()


# Divided differences: a function of the rate lambda is carried as (f(a), f(b), f[a, b]).


def _sorted(a, b):
    """(hi, lo); at a tie hi is a (``where`` sends each gradient to one side only)."""
    first = a >= b
    return jnp.where(first, a, b), jnp.where(first, b, a)


def _exp(a, b, s):
    """``e^{-lambda s}`` (``s >= 0``): values at a and b, divided difference."""
    hi, lo = _sorted(a, b)
    return jnp.exp(-a * s), jnp.exp(-b * s), -s * jnp.exp(-lo * s) * exprel(-(hi - lo) * s)


def _exprel(a, b, u):
    """``exprel(-lambda u)`` (``u >= 0``): values at a and b, divided difference."""
    hi, lo = _sorted(a, b)
    dd = (jnp.exp(-lo * u) * exprel(-(hi - lo) * u) - exprel(-lo * u)) / hi
    return exprel(-a * u), exprel(-b * u), dd


def _geometric(a, b, ii):
    """``S = 1/(1 - e^{-lambda II})`` (``II > 0``): values at a and b, divided difference."""
    sa, sb = -1.0 / jnp.expm1(-a * ii), -1.0 / jnp.expm1(-b * ii)
    return sa, sb, sa * sb * _exp(a, b, ii)[2]


def _mul(f, g):
    """Product rule for divided differences."""
    return f[0] * g[0], f[1] * g[1], f[0] * g[2] + f[2] * g[1]


def _kernel(a, b, tau, dur, ii, now, past, *, steady_state: bool = True, infusions: bool = True):
    """The dose kernel ``K`` (module docstring) at a and b and ``K[a, b]``, (r, m, k) each. ``tau``
    (m, k) is the time since the dose; ``now`` (m, k) where the dose itself counts, ``past``
    where its steady-state history does; ``dur``, ``ii`` (> 0) per dose (k,).  Without
    ``infusions`` every dose is a bolus (``K = e^{-lambda tau}``); without ``steady_state`` the
    history term is left out (static flags of the data: smaller compiled code)."""
    t_now = jnp.where(now, tau, 0.0)
    if infusions:
        u = jnp.minimum(t_now, dur)
        frac = jnp.where(dur > 0, u / jnp.where(dur > 0, dur, 1.0), 1.0)
        current = _mul(_exp(a, b, t_now - u), _exprel(a, b, u))
        current = tuple(frac * x for x in current)
    else:
        current = _exp(a, b, t_now)
    if not steady_state:
        return tuple(jnp.where(now, x, 0.0) for x in current)
    after = jnp.maximum(jnp.where(past, tau, 0.0) + ii - dur, 0.0)
    history = _mul(_mul(_exp(a, b, after), _exprel(a, b, dur)), _geometric(a, b, ii))
    return tuple(jnp.where(now, x, 0.0) + jnp.where(past, y, 0.0) for x, y in zip(current, history))


class AbstractPKStructure(eqx.Module):
    """A linear PK structure: ``parameter_names`` required, ``optional_names`` allowed in
    ``params`` (``F``, ``ALAG``: CMT 1 doses), ``compartments`` by NONMEM CMT number (1-based)."""

    parameter_names: eqx.AbstractClassVar[tuple[str, ...]]
    compartments: eqx.AbstractClassVar[tuple[str, ...]]
    optional_names: ClassVar[tuple[str, ...]] = ("F", "ALAG")

    @abc.abstractmethod
    def modes(self, params: dict) -> Modes:
        """Decay rates and unit-response coefficients for ``params``."""

    def predict(self, params: dict, subject: Subjects) -> jnp.ndarray:
        """Central concentration ``A_central / V`` at ``subject.obs_time`` (m,), one subject."""
        modes = self.modes(params)
        cmt = subject.dose_cmt
        first = cmt == 1
        f = jnp.where(first, params.get("F", 1.0), 1.0)
        since = subject.obs_time[:, None] - subject.dose_time[None, :]  # (m, k)
        tau = since - jnp.where(first, params.get("ALAG", 0.0), 0.0)
        same = subject.obs_epoch[:, None] == subject.dose_epoch[None, :]
        ss = subject.dose_ss & (subject.dose_ii > 0)
        ii = jnp.where(ss, subject.dose_ii, 1.0)
        now = same & (tau >= 0)
        # a steady-state dose's earlier doses count from the record's time, even when it is lagged
        past = same & ss & (since >= 0)
        dur = subject.dose_duration * f
        lam = jnp.stack(modes.rates)[:, None, None]  # (r, 1, 1): modes on a leading axis
        a = lam if modes.ka is None else modes.ka
        flags = dict(steady_state=subject.has_steady_state, infusions=subject.has_infusions)
        _, k_lam, k_dd = _kernel(a, lam, tau, dur, ii, now, past, **flags)  # (r, m, k)

        def per_dose(coefs, c):  # (r, 1, k): the coefficients of doses into CMT c
            return jnp.where(cmt == c, jnp.stack(coefs)[:, None, None], 0.0)

        response = sum(per_dose(cs, c) * k_lam for c, cs in modes.direct.items())
        if modes.ka is not None:
            response = response + per_dose(modes.depot, 1) * k_dd
        return (response.sum(0) * (subject.dose_amt * f)).sum(-1) / params["V"]


def two_compartment_rates(cl, v, q, vp):
    """``(alpha, beta, k21)``: the decay rates of the central/peripheral block (``alpha > beta``)
    from ``k = CL/V``, ``k12 = Q/V``, ``k21 = Q/VP``; ``beta = k k21 / alpha`` (no cancellation)."""
    k, k12, k21 = cl / v, q / v, q / vp
    root = jnp.sqrt((k - k21) ** 2 + k12**2 + 2.0 * k12 * (k + k21))
    alpha = 0.5 * (k + k12 + k21 + root)
    return alpha, k * k21 / alpha, k21


def _two_compartment_coefs(params):
    """Rates and central coefficients for a dose into central and into peripheral."""
    alpha, beta, k21 = two_compartment_rates(params["CL"], params["V"], params["Q"], params["VP"])
    d = alpha - beta
    return (alpha, beta), ((alpha - k21) / d, (k21 - beta) / d), (-k21 / d, k21 / d)


class OneCompartmentIV(AbstractPKStructure):
    """ADVAN1: CMT 1 central; ``k = CL/V``."""

    parameter_names: ClassVar[tuple[str, ...]] = ("CL", "V")
    compartments: ClassVar[tuple[str, ...]] = ("central",)

    def modes(self, params):
        k = params["CL"] / params["V"]
        return Modes((k,), {1: (jnp.ones_like(k),)})


class OneCompartmentOral(AbstractPKStructure):
    """ADVAN2: CMT 1 depot (first-order absorption ``KA``), CMT 2 central; ``k = CL/V``."""

    parameter_names: ClassVar[tuple[str, ...]] = ("CL", "V", "KA")
    compartments: ClassVar[tuple[str, ...]] = ("depot", "central")

    def modes(self, params):
        k, ka = params["CL"] / params["V"], params["KA"]
        return Modes((k,), {2: (jnp.ones_like(k),)}, ka, (-ka,))


class TwoCompartmentIV(AbstractPKStructure):
    """ADVAN3: CMT 1 central (volume ``V``), CMT 2 peripheral (volume ``VP``), intercompartmental
    clearance ``Q``."""

    parameter_names: ClassVar[tuple[str, ...]] = ("CL", "V", "Q", "VP")
    compartments: ClassVar[tuple[str, ...]] = ("central", "peripheral")

    def modes(self, params):
        rates, central, peripheral = _two_compartment_coefs(params)
        return Modes(rates, {1: central, 2: peripheral})


class TwoCompartmentOral(AbstractPKStructure):
    """ADVAN4: CMT 1 depot (``KA``), CMT 2 central (``V``), CMT 3 peripheral (``VP``), ``Q``."""

    parameter_names: ClassVar[tuple[str, ...]] = ("CL", "V", "Q", "VP", "KA")
    compartments: ClassVar[tuple[str, ...]] = ("depot", "central", "peripheral")

    def modes(self, params):
        rates, central, peripheral = _two_compartment_coefs(params)
        ka = params["KA"]
        return Modes(rates, {2: central, 3: peripheral}, ka, tuple(-ka * c for c in central))


PK_STRUCTURES = {
    "one_cmt_iv": OneCompartmentIV(),
    "one_cmt_oral": OneCompartmentOral(),
    "two_cmt_iv": TwoCompartmentIV(),
    "two_cmt_oral": TwoCompartmentOral(),
}
