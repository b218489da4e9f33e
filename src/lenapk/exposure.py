"""Exposure: one-compartment oral PK in closed form between doses.

States (amounts, mg): depot ``A_d`` and central ``A_c``.  After a dose at tau = 0 (hours)

.. math::
    A_d(\\tau) = A_d(0) e^{-k_a \\tau}, \\qquad
    A_c(\\tau) = A_c(0) e^{-k \\tau} + A_d(0)\\, k_a \\frac{e^{-k\\tau} - e^{-k_a\\tau}}{k_a - k},
    \\qquad C = 1000\\, A_c / V \\;[\\text{ng/mL}]

with :math:`k = CL/V`.  The absorption term is evaluated as
:math:`\\tau e^{-k\\tau}\\,\\mathrm{exprel}(-(k_a-k)\\tau)`, where
``exprel(x) = (e^x - 1)/x``, which is exact and smooth through ``ka == k`` (no 0/0, and
gradients stay finite).  Solving the PK exactly removes the fast hour-scale states from the
ODE, which is where the stiffness and most solver steps would otherwise come from.

Covariates (Hughes et al., Br J Clin Pharmacol 2019):
``CL/F = CL * (FFM/55 kg)^0.75 * (CrCl/90 mL/min)^0.224``, ``V/F = V * (FFM/55 kg)``.
"""

from __future__ import annotations

import jax.numpy as jnp

FFM_REF_KG = 55.0
CRCL_REF_ML_MIN = 90.0


def exprel(x):
    """(exp(x) - 1) / x, with the limit 1 at x = 0; accurate and differentiable everywhere."""
    small = jnp.abs(x) < 1e-6
    safe_x = jnp.where(small, 1.0, x)  # keeps the unused branch finite for gradients
    return jnp.where(small, 1.0 + x / 2.0 + x * x / 6.0, jnp.expm1(safe_x) / safe_x)


def pk_constants(p):
    """(ka [1/h], k [1/h], V [L]) for a patient, covariates applied."""
    ffm = p["ffm"] / FFM_REF_KG
    cl = p["cl"] * ffm**0.75 * (p["crcl"] / CRCL_REF_ML_MIN) ** 0.224
    v = p["v"] * ffm
    return p["ka"], cl / v, v


def central_amount(tau_h, depot0, central0, ka, k):
    """Central amount (mg) tau_h hours after the state (depot0, central0), no new dose."""
    e_k = jnp.exp(-k * tau_h)
    return central0 * e_k + depot0 * ka * tau_h * e_k * exprel(-(ka - k) * tau_h)


def advance(pk_state, tau_h, ka, k):
    """PK state (depot, central) in mg, stacked on the first axis, after tau_h hours without dosing."""
    depot0, central0 = pk_state[0], pk_state[1]
    depot = depot0 * jnp.exp(-ka * tau_h)
    central = central_amount(tau_h, depot0, central0, ka, k)
    return jnp.stack([depot, central])


def concentration(tau_h, pk_state, ka, k, v):
    """Plasma concentration (ng/mL) tau_h hours after the PK state ``pk_state`` = (depot, central)
    in mg, stacked on the first axis."""
    return 1000.0 * central_amount(tau_h, pk_state[0], pk_state[1], ka, k) / v
