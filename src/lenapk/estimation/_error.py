r"""Residual error models: the variance of an observation given its prediction.

Each model gives the residual variance ``V(f)`` of an observation with individual prediction
``f``, from estimated standard deviations (nlmixr2's convention; NONMEM's SIGMA fixed to 1 with
the SDs as THETAs is the same model):

=================  ==========================================  ============================
kind               variance                                    parameters
=================  ==========================================  ============================
``additive``       :math:`a^2`                                 ``add_sd`` (a)
``proportional``   :math:`(b f)^2`                             ``prop_sd`` (b)
``combined2``      :math:`a^2 + (b f)^2`                       ``add_sd``, ``prop_sd``
``combined1``      :math:`(a + b |f|)^2`                       ``add_sd``, ``prop_sd``
``power``          :math:`(c |f|^{p})^2`                       ``pow_sd`` (c), ``pow_exponent`` (p)
``log_additive``   :math:`a^2` on :math:`\log y - \log f`      ``add_sd`` (a)
=================  ==========================================  ============================

``log_additive`` is the log-transform-both-sides model: the data and the prediction are
compared on the log scale (observations must be positive).  Its objective is that of the log
data, as NONMEM reports it for a model written on LNDV.  Sources: Wang Y (2007) J Pharmacokinet
Pharmacodyn 34:575-593 (the variance forms); nlmixr2's ``add``, ``prop``, ``pow`` and
``combined1``/``combined2`` error models.

Data with several outputs (DVID) take one error model per output with
:class:`OutputErrors`: output ``k`` (``obs_output == k``) uses ``errors[k]``, whose parameters
are named with the output's suffix (``prop_sd_parent``, ``add_sd_metabolite``, ...).  Every method takes
the observations' output indices ``output``; a single :class:`ResidualError` ignores them.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp

ERROR_PARAMETERS = {
    "additive": ("add_sd",),
    "proportional": ("prop_sd",),
    "combined2": ("add_sd", "prop_sd"),
    "combined1": ("add_sd", "prop_sd"),
    "power": ("pow_sd", "pow_exponent"),
    "log_additive": ("add_sd",),
}


class ResidualError(eqx.Module):
    """One of the error models of the module table, by ``kind``."""

    kind: str = eqx.field(static=True)
    kinds: ClassVar[tuple[str, ...]] = tuple(ERROR_PARAMETERS)

    def __check_init__(self):
        if self.kind not in ERROR_PARAMETERS:
            raise ValueError(f"residual error kind must be one of {list(ERROR_PARAMETERS)}, got {self.kind!r}")

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return ERROR_PARAMETERS[self.kind]

    @property
    def log_scale(self) -> bool:
        return self.kind == "log_additive"

    def on_log_scale(self, output):
        """Whether each observation (output index ``output``) is compared on the log scale."""
        return jnp.full(jnp.shape(output), self.log_scale)

    def transform(self, values, output=None):
        """Data and predictions on the scale the error is additive on (log for ``log_additive``)."""
        return jnp.log(values) if self.log_scale else values

    def variance(self, f, sigma: dict, output=None):
        """Residual variance of observations with (untransformed) predictions ``f``."""
        kind = self.kind
        if kind in ("additive", "log_additive"):
            return jnp.broadcast_to(sigma["add_sd"] ** 2, jnp.shape(f))
        if kind == "proportional":
            return (sigma["prop_sd"] * f) ** 2
        if kind == "combined2":
            return sigma["add_sd"] ** 2 + (sigma["prop_sd"] * f) ** 2
        if kind == "combined1":
            return (sigma["add_sd"] + sigma["prop_sd"] * jnp.abs(f)) ** 2
        return (sigma["pow_sd"] * jnp.abs(f) ** sigma["pow_exponent"]) ** 2


class OutputErrors(eqx.Module):
    """One :class:`ResidualError` per output: ``errors[k]`` for output index ``k`` (the data's
    order of DVIDs), its parameters suffixed ``_<outputs[k]>``."""

    errors: tuple[ResidualError, ...] = eqx.field(static=True)
    outputs: tuple[str, ...] = eqx.field(static=True)

    def __check_init__(self):
        if len(self.errors) != len(self.outputs) or not self.errors:
            raise ValueError(
                f"OutputErrors needs one error per output, got {len(self.errors)} errors "
                f"for outputs {list(self.outputs)}"
            )
        if not all(isinstance(e, ResidualError) for e in self.errors):
            raise ValueError("OutputErrors.errors must be ResidualError instances")
        if len(set(self.outputs)) != len(self.outputs):
            raise ValueError(f"OutputErrors.outputs must be distinct, got {list(self.outputs)}")

    @property
    def kind(self) -> str:
        return "per-output (" + ", ".join(f"{o}: {e.kind}" for o, e in zip(self.outputs, self.errors)) + ")"

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(f"{p}_{o}" for e, o in zip(self.errors, self.outputs) for p in e.parameter_names)

    @property
    def log_scale(self) -> bool:
        """Whether any output is on the log scale."""
        return any(e.log_scale for e in self.errors)

    def _index(self, output):
        return jnp.clip(jnp.asarray(output), 0, len(self.errors) - 1)

    def on_log_scale(self, output):
        return jnp.asarray([e.log_scale for e in self.errors])[self._index(output)]

    def transform(self, values, output):
        log = self.on_log_scale(output)
        return jnp.where(log, jnp.log(jnp.where(log, values, 1.0)), values)

    def variance(self, f, sigma: dict, output):
        index = self._index(output)
        out = jnp.zeros(jnp.shape(f))
        for k, (e, o) in enumerate(zip(self.errors, self.outputs)):
            own = {p: sigma[f"{p}_{o}"] for p in e.parameter_names}
            out = jnp.where(index == k, e.variance(f, own), out)
        return out
