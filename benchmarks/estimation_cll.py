"""What a FOCE-I fit of the CLL model to individual ALC data costs: one objective-and-gradient
evaluation, measured, and the fit it implies.

    python benchmarks/estimation_cll.py          # 8 subjects; writes estimation_cll.json
    python benchmarks/estimation_cll.py 16       # another cohort size

The flagship model (``lenapk.LenalidomideCLL``) enters the estimation layer through
``model_structure(model, "alc")``: its closed-form PK drives the ODE, solved by diffrax between
the subject's doses.  Design: 10 mg orally on days 1-21 of 28-day cycles for three cycles (63
doses), ALC sampled on days 1 (pre-dose), 29, 57 and 85; log-normal ``growth`` and ``kill`` (the
two parameters ALC informs most) and a proportional error.  Observations are simulated at the
model's defaults (seed 0).

Timed: the first call of the compiled objective and its gradient (compile included), then the
mean of three warm calls; per subject, and extrapolated to the issue's 500 subjects.  A fit needs
about 30 such evaluations (the closed-form fits in ``estimation.json`` take 20-30 outer
iterations) plus the line search's values and the covariance step.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd

import lenapk
from lenapk.estimation import PopulationModel, ResidualError, Theta, read_nonmem, simulate_observations
from lenapk.estimation._compiled import compiled_objective
from lenapk.estimation._ode import model_structure
from lenapk.estimation._parameters import ParameterLayout

HERE = Path(__file__).resolve().parent
DOSE_DAYS = [c * 28 + d for c in range(3) for d in range(21)]
SAMPLE_DAYS = (0.0, 28.0, 56.0, 84.0)


def cll_model() -> PopulationModel:
    model = lenapk.LenalidomideCLL()
    defaults = model.default_params()
    structure = model_structure(model, "alc", rtol=1e-6, atol=1e-8, max_steps=64)
    return PopulationModel(
        thetas=[Theta("tgrowth", float(np.log(defaults["growth"]))), Theta("tkill", float(np.log(defaults["kill"])))],
        etas=["eta_growth", "eta_kill"],
        omega=np.diag([0.1, 0.1]),
        individual=lambda th, e, c: {
            "growth": jnp.exp(th["tgrowth"] + e["eta_growth"]),
            "kill": jnp.exp(th["tkill"] + e["eta_kill"]),
        },
        predict=structure.predict,
        error=ResidualError("proportional"),
        sigma=[Theta("prop_sd", 0.15)],
        name="cll_alc",
    )


def cll_data(model: PopulationModel, n_subjects: int):
    rows = []
    for i in range(1, n_subjects + 1):
        rows += [{"ID": i, "TIME": 24.0 * d, "AMT": 10.0, "EVID": 1, "CMT": 1, "DV": 0.0} for d in DOSE_DAYS]
        rows += [{"ID": i, "TIME": 24.0 * d, "AMT": 0.0, "EVID": 0, "CMT": 2, "DV": 1.0} for d in SAMPLE_DAYS]
    table = pd.DataFrame(rows).sort_values(["ID", "TIME", "EVID"], kind="stable")
    design = read_nonmem(table)
    sim = simulate_observations(model, model.initial(), design.subjects, 1, seed=0)[0]
    table.loc[table["EVID"] == 0, "DV"] = sim[np.asarray(design.subjects.obs_mask)]
    return read_nonmem(table)


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def main(n_subjects: int) -> None:
    model = cll_model()
    data = cll_data(model, n_subjects)
    layout = ParameterLayout(model)
    u_all = layout.unconstrained(model.initial())
    fns = compiled_objective(model, "focei")
    call = lambda: fns.jacobian(u_all, u_all, data.subjects)[0].block_until_ready()  # noqa: E731
    ofv, first_wall, first_cpu = timed(call)
    warm = [timed(call)[1:] for _ in range(3)]
    wall, cpu = (float(np.mean([w[k] for w in warm])) for k in (0, 1))
    out = {
        "n_subjects": n_subjects,
        "n_observations": data.n_observations,
        "ofv": float(jnp.sum(ofv)),
        "finite": bool(np.all(np.isfinite(np.asarray(ofv)))),
        "first_call_wall_s": first_wall,
        "first_call_cpu_s": first_cpu,
        "warm_call_wall_s": wall,
        "warm_call_cpu_s": cpu,
        "warm_call_wall_s_per_subject": wall / n_subjects,
        "extrapolated_fit_wall_s_500_subjects_30_iterations": 30 * 500 * wall / n_subjects,
    }
    (HERE / "estimation_cll.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8)
