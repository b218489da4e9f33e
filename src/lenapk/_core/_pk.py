r"""Exposure: linear PK in closed form between dose events, or doses into ODE states.

A model declares its PK as one of

- :class:`OneCompartment`: depot (first-order absorption ``ka``) and central compartment
  (elimination ``k = CL/V``);
- :class:`TwoCompartment`: depot, central and peripheral (``k12 = Q/V1``, ``k21 = Q/V2``);
- :class:`OdeDosing`: no closed form; doses go into named states of the model's own ODE.

Closed forms (amounts in mg, time ``tau`` in hours since the state ``x_0``, constant infusion
rate ``R`` mg/h into the central compartment), with ``exprel(x) = (e^x - 1)/x``:

.. math::
    A_d(\tau) = A_d(0) e^{-k_a\tau}

One compartment:

.. math::
    A_c(\tau) = A_c(0) e^{-k\tau} + A_d(0) k_a \tau e^{-k\tau}\,\mathrm{exprel}(-(k_a-k)\tau)
        + R\,\tau\,\mathrm{exprel}(-k\tau)

Two compartments: the central/peripheral block ``K = [[-(k10+k12), k21], [k12, -k21]]`` has
decay rates ``alpha > beta > 0`` (distinct whenever ``k12 > 0``) and Sylvester projectors
``P_alpha = (K + beta I)/(beta - alpha)``, ``P_beta = (K + alpha I)/(alpha - beta)``, so

.. math::
    x(\tau) = \sum_{\lambda} P_\lambda \big[ e^{-\lambda\tau} x(0)
        + e_c\, A_d(0) k_a \tau e^{-\lambda\tau}\mathrm{exprel}(-(k_a-\lambda)\tau)
        + e_c\, R\,\tau\,\mathrm{exprel}(-\lambda\tau) \big]

Every term is exact and smooth through ``ka = k`` (or ``ka = lambda``) and ``lambda -> 0``: no
0/0 and finite gradients.  Concentration ``C = scale A_c / V`` (``scale = 1000`` gives ng/mL
from mg and L).  Solving the PK exactly removes its hour-scale stiffness from the ODE.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp


def exprel(x):
    """(exp(x) - 1) / x, with the limit 1 at x = 0; accurate and differentiable everywhere."""
    small = jnp.abs(x) < 1e-6
    safe_x = jnp.where(small, 1.0, x)  # keeps the unused branch finite for gradients
    return jnp.where(small, 1.0 + x / 2.0 + x * x / 6.0, jnp.expm1(safe_x) / safe_x)


class PKConstants(eqx.Module):
    """Micro-constants of one patient (or arrays over a batch): ``ka`` (1/h), ``k`` = k10 (1/h),
    ``v`` central volume (L) and, for two compartments, ``k12`` and ``k21`` (1/h)."""

    ka: jnp.ndarray
    k: jnp.ndarray
    v: jnp.ndarray
    k12: jnp.ndarray = 0.0
    k21: jnp.ndarray = 0.0


class AbstractPK(eqx.Module):
    """How doses become exposure.  ``compartments``: the names a dose event may target, in
    NONMEM CMT order (CMT 1 is the first)."""

    compartments: eqx.AbstractClassVar[tuple[str, ...]]
    closed_form: eqx.AbstractClassVar[bool]


class AbstractClosedFormPK(AbstractPK):
    """Linear PK solved exactly between events; the state is the amount in each compartment
    (mg, stacked on the first axis)."""

    closed_form: ClassVar[bool] = True
    scale: eqx.AbstractVar[float]

    @abc.abstractmethod
    def advance(self, x, tau_h, pk: PKConstants, rate=None):
        """Amounts ``tau_h`` hours after ``x`` (no dose in between; infusion ``rate`` mg/h)."""

    @abc.abstractmethod
    def central_amount(self, x, tau_h, pk: PKConstants, rate=None):
        """Central amount (mg) ``tau_h`` hours after ``x``."""

    def concentration(self, x, tau_h, pk: PKConstants, rate=None):
        """Central concentration ``scale * A_c / V`` ``tau_h`` hours after ``x``."""
        return self.scale * self.central_amount(x, tau_h, pk, rate) / pk.v


class OneCompartment(AbstractClosedFormPK):
    """Depot -> central -> elimination (NONMEM ADVAN2; ADVAN1 when dosing into central)."""

    compartments: ClassVar[tuple[str, ...]] = ("depot", "central")
    scale: float = 1000.0

    def central_amount(self, x, tau_h, pk, rate=None):
        e_k = jnp.exp(-pk.k * tau_h)
        amount = x[1] * e_k + x[0] * pk.ka * tau_h * e_k * exprel(-(pk.ka - pk.k) * tau_h)
        if rate is not None:
            amount = amount + rate * tau_h * exprel(-pk.k * tau_h)
        return amount

    def advance(self, x, tau_h, pk, rate=None):
        return jnp.stack([x[0] * jnp.exp(-pk.ka * tau_h), self.central_amount(x, tau_h, pk, rate)])


def _two_compartment_rates(pk: PKConstants):
    """Decay rates (alpha, beta) of the central/peripheral block, beta by the stable product form."""
    s = pk.k + pk.k12 + pk.k21
    root = jnp.sqrt((pk.k - pk.k21) ** 2 + pk.k12**2 + 2.0 * pk.k12 * (pk.k + pk.k21))
    alpha = 0.5 * (s + root)
    beta = pk.k * pk.k21 / alpha
    return alpha, beta


class TwoCompartment(AbstractClosedFormPK):
    """Depot -> central <-> peripheral, elimination from central (NONMEM ADVAN4; ADVAN3 when
    dosing into central)."""

    compartments: ClassVar[tuple[str, ...]] = ("depot", "central", "peripheral")
    scale: float = 1000.0

    def _terms(self, x, tau_h, pk, rate):
        """For each decay rate: (projector applied to (central, peripheral), its first column,
        e^{-lambda tau}, the depot and infusion inputs of that mode)."""
        alpha, beta = _two_compartment_rates(pk)
        k_cc, k_cp, k_pc, k_pp = -(pk.k + pk.k12), pk.k21, pk.k12, -pk.k21
        out = []
        for lam, other in ((alpha, beta), (beta, alpha)):
            d = other - lam
            # P = (K + other I) / (other - lam), applied to (c, p) and to e_c = (1, 0)
            col = ((k_cc + other) / d, k_pc / d)
            proj = ((k_cc + other) * x[1] + k_cp * x[2]) / d, (k_pc * x[1] + (k_pp + other) * x[2]) / d
            e = jnp.exp(-lam * tau_h)
            inp = x[0] * pk.ka * tau_h * e * exprel(-(pk.ka - lam) * tau_h)
            if rate is not None:
                inp = inp + rate * tau_h * exprel(-lam * tau_h)
            out.append((proj, col, e, inp))
        return out

    def central_amount(self, x, tau_h, pk, rate=None):
        return sum(proj[0] * e + col[0] * inp for proj, col, e, inp in self._terms(x, tau_h, pk, rate))

    def advance(self, x, tau_h, pk, rate=None):
        terms = self._terms(x, tau_h, pk, rate)
        central = sum(proj[0] * e + col[0] * inp for proj, col, e, inp in terms)
        peripheral = sum(proj[1] * e + col[1] * inp for proj, col, e, inp in terms)
        return jnp.stack([x[0] * jnp.exp(-pk.ka * tau_h), central, peripheral])


class OdeDosing(AbstractPK):
    """PK written as states of the model's own ODE: a dose into compartment ``name`` adds to the
    state ``targets[name]``; an infusion adds its rate to that state's derivative.  The model's
    right-hand side then receives ``conc=None`` and computes exposure from its states."""

    closed_form: ClassVar[bool] = False
    compartments: ClassVar[tuple[str, ...]]  # the property below (a ClassVar, so not a dataclass field)
    targets: dict[str, str] = eqx.field(static=True)

    @property
    def compartments(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(self.targets)
