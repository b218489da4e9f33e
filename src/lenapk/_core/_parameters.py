"""Named model parameters: a table of specifications and an immutable set of values.

A model declares its parameters once, as a tuple of :class:`ParameterSpec` (name, typical
value, unit, between-patient variability, source).  Everything else (defaults, the
documentation table, priors, the population model) is derived from that one table.

A :class:`ParameterSet` maps names to JAX scalars (or arrays, one value per patient).  It is
an ``equinox.Module`` and therefore a frozen PyTree: it passes through ``jit``, ``vmap`` and
``grad`` and is changed only by building a new one with :meth:`ParameterSet.replace`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Literal, Mapping

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pandas as pd

Kind = Literal["fixed", "covariate"]


@dataclass(frozen=True)
class ParameterSpec:
    """One named parameter.

    ``omega2`` is the between-patient variance on the log scale (log-normal variability,
    ``theta_i = theta * exp(eta_i)``, ``eta_i ~ N(0, omega2)``); 0 means no variability.
    ``kind`` is ``"fixed"`` for a model parameter and ``"covariate"`` for a patient
    characteristic with a default value.  ``positive`` parameters must be > 0 (they are
    estimated on the log scale); the others must be >= 0.
    """

    name: str
    value: float
    unit: str
    description: str
    source: str
    omega2: float = 0.0
    kind: Kind = "fixed"
    positive: bool = True

    def __post_init__(self):
        if not math.isfinite(self.value):
            raise ValueError(f"parameter {self.name}: value must be finite, got {self.value}")
        if self.positive and self.value <= 0:
            raise ValueError(f"parameter {self.name}: value must be > 0, got {self.value}")
        if self.omega2 < 0:
            raise ValueError(f"parameter {self.name}: omega2 must be >= 0, got {self.omega2}")


class ParameterSet(eqx.Module):
    """An immutable mapping from parameter name to value (JAX scalar or per-patient array)."""

    values: dict[str, jnp.ndarray]

    def __init__(self, values: Mapping[str, object]):
        self.values = {k: jnp.asarray(v, dtype=jnp.float64) for k, v in values.items()}

    def __getitem__(self, name: str) -> jnp.ndarray:
        try:
            return self.values[name]
        except KeyError:
            raise KeyError(f"unknown parameter {name!r}; known: {', '.join(sorted(self.values))}") from None

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def keys(self):
        return self.values.keys()

    def replace(self, **changes) -> "ParameterSet":
        """A new set with some values changed; unknown names are refused."""
        unknown = sorted(set(changes) - set(self.values))
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown}; known: {', '.join(sorted(self.values))}")
        return ParameterSet({**self.values, **changes})

    def as_floats(self) -> dict[str, float]:
        """Plain Python floats (scalar sets only), for printing and tables."""
        return {k: float(v) for k, v in self.values.items()}


def default_parameters(specs: Iterable[ParameterSpec]) -> ParameterSet:
    """The typical values of a specification table as a :class:`ParameterSet`."""
    return ParameterSet({s.name: s.value for s in specs})


def validate_parameters(specs: Iterable[ParameterSpec], params: ParameterSet) -> None:
    """Refuse missing, unknown, non-finite or out-of-range values, naming the parameter.

    Runs in Python on concrete values, before any computation; traced values are skipped.
    """
    specs = tuple(specs)
    names = {s.name for s in specs}
    missing = sorted(names - set(params.keys()))
    unknown = sorted(set(params.keys()) - names)
    if missing:
        raise ValueError(f"params: missing parameter(s) {missing}")
    if unknown:
        raise ValueError(f"params: unknown parameter(s) {unknown}; expected {sorted(names)}")
    for s in specs:
        v = params[s.name]
        try:  # numpy on the concrete value: no device round trip per check
            arr = np.asarray(v, dtype=np.float64)
        except Exception:  # a tracer: checked by the caller under jit instead
            continue
        bad_nan = not np.all(np.isfinite(arr))
        bad_sign = bool(np.any(arr <= 0)) if s.positive else bool(np.any(arr < 0))
        if bad_nan:
            raise ValueError(f"params.{s.name} must be finite, got {v}")
        if bad_sign:
            rel = "> 0" if s.positive else ">= 0"
            raise ValueError(f"params.{s.name} must be {rel} ({s.unit}), got {v}")


def parameter_table(specs: Iterable[ParameterSpec]) -> pd.DataFrame:
    """The specification table as a DataFrame (one row per parameter)."""
    rows = [
        {
            "name": s.name,
            "kind": s.kind,
            "value": s.value,
            "unit": s.unit,
            "omega2": s.omega2,
            "cv_percent": (round(100 * math.sqrt(math.exp(s.omega2) - 1), 1) if s.omega2 > 0 else 0.0),
            "description": s.description,
            "source": s.source,
        }
        for s in specs
    ]
    return pd.DataFrame(rows)


def parameter_table_markdown(specs: Iterable[ParameterSpec], values: Mapping[str, float] | None = None) -> str:
    """The specification table as Markdown, for docs/model.md (generated, never typed twice)."""
    df = parameter_table(specs)
    if values is not None:
        df["value"] = [values.get(n, v) for n, v in zip(df["name"], df["value"])]
    lines = [
        "| name | kind | value | unit | BSV (CV%) | description | source |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in df.itertuples():
        cv = f"{r.cv_percent:g}" if r.omega2 > 0 else "-"
        lines.append(f"| `{r.name}` | {r.kind} | {r.value:.6g} | {r.unit} | {cv} | {r.description} | {r.source} |")
    return "\n".join(lines)
