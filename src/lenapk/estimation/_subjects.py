"""Individual data as padded arrays: what the likelihood reads, one row per subject.

A NONMEM data set (:func:`lenapk.estimation.read_nonmem`) becomes a :class:`Subjects` PyTree.
Every array has the subject on its first axis and is padded to the largest subject, so one
``vmap`` serves all subjects.  Padding never counts: padded observations have ``obs_mask``
false and padded doses an amount of 0 and epoch -1.

Epochs make resets exact under superposition: a subject's epoch starts at 0 and goes up by one
at every reset (EVID 3, EVID 4, and a steady-state dose SS=1, which NONMEM also treats as a
reset).  A dose contributes to an observation only when both have the same epoch.

Times are in the data's unit: lenapk does not convert them.  ``dose_cmt`` and ``obs_cmt`` are
NONMEM compartment numbers (1-based).  ``obs_output`` numbers each observation's output
(``DVID``, 0 when the data have one output).  ``obs_row`` is the observation's 0-based row in
the data after filtering, and -1 for padding; diagnostics use it to go back to the table.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp


class Subjects(eqx.Module):
    """Padded per-subject arrays (``n`` subjects, ``m`` observations and ``k`` doses at most).

    - ``obs_time`` (n, m), ``dv`` (n, m), ``obs_mask`` (n, m) bool, ``obs_cmt`` (n, m) int,
      ``obs_output`` (n, m) int, ``obs_epoch`` (n, m) int, ``obs_row`` (n, m) int;
    - ``dose_time`` (n, k), ``dose_amt`` (n, k), ``dose_cmt`` (n, k) int,
      ``dose_duration`` (n, k) (0 for a bolus; an infusion's AMT/RATE), ``dose_ii`` (n, k)
      (the interval of a steady-state dose, 0 otherwise), ``dose_ss`` (n, k) bool,
      ``dose_epoch`` (n, k) int (-1 for padding);
    - ``covariates``: name -> (n,) array, each subject's value (constant within a subject);
    - ``ids``: the subjects' ID values in data order (static);
    - ``has_steady_state``, ``has_infusions`` (static): whether any dose is a steady-state dose
      or an infusion; when false, predictions leave those terms out of the compiled code (the
      defaults, true, are always correct).
    """

    obs_time: jnp.ndarray
    dv: jnp.ndarray
    obs_mask: jnp.ndarray
    obs_cmt: jnp.ndarray
    obs_output: jnp.ndarray
    obs_epoch: jnp.ndarray
    obs_row: jnp.ndarray
    dose_time: jnp.ndarray
    dose_amt: jnp.ndarray
    dose_cmt: jnp.ndarray
    dose_duration: jnp.ndarray
    dose_ii: jnp.ndarray
    dose_ss: jnp.ndarray
    dose_epoch: jnp.ndarray
    covariates: dict
    ids: tuple = eqx.field(static=True)
    has_steady_state: bool = eqx.field(static=True, default=True)
    has_infusions: bool = eqx.field(static=True, default=True)

    @property
    def n_subjects(self) -> int:
        return len(self.ids)

    @property
    def n_observations(self) -> int:
        return int(self.obs_mask.sum())

    def subject(self, i: int) -> "Subjects":
        """Subject ``i`` alone, its arrays without the subject axis (what ``vmap`` passes on)."""
        import jax

        return jax.tree_util.tree_map(lambda a: a[i], self)
