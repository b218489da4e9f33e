"""Calibrate lenapk's defaults to the bundled clinical summaries, from scratch.

Fits the model jointly to the five studies of ``data/observations.csv`` (the rows each study's
design marks as fitted: immunoglobulin means, response, per-course and per-patient toxicity,
flare, CD3+ T cells; the header of ``docs/calibration.md`` lists them, and every other row is
reported beside its prediction with the reason it is not fitted) and writes
``docs/calibration.md``: method and assumptions, estimates with standard errors, correlations,
identifiability, every observed row beside its prediction, responses by dose level and the
smooth-vs-hard check.  The calibrated values shipped in ``src/lenapk/models/cll/_parameters.py``
are this script's estimates (it prints them as ``PARAMETER_SPECS`` values).

The fit starts from :data:`START` (the values the package had before calibration, all
"assumed", a chosen start of 100 days for ``t_rec``, which came later, and ``ec50_act`` at its
upper bound), not from the package defaults, so that it reproduces the calibration instead of
starting at its answer.  ``kill`` is not free: it and ``ec50_act`` only act through their ratio
(correlation 1), and earlier calibrations from two starts both ended with ``kill`` on its upper
bound, 0.2/day, where it is now fixed (``docs/model.md``); ``ec50_act`` carries the ratio.

    python examples/calibrate.py                  # joint calibration -> docs/calibration.md
    python examples/calibrate.py --part ig        # the immunoglobulin part only (timing; writes no file)
    python examples/calibrate.py --quick          # tiny run (tests): few patients and steps, writes no file
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import lenapk
from lenapk.calibration import DEFAULT_DOSE_TOL, FIT_SETTINGS
from lenapk.models.cll._calibration import CV, FREE, PRIORS

ROOT = Path(__file__).resolve().parents[1]

# Values of the free parameters before calibration (all "assumed" in PARAMETER_SPECS); t_rec was
# added with the calibration and starts at a chosen 100 days; ec50_act starts at its upper bound, the
# nearest it can come to START's kill / ec50_act (0.0018 / 100) now that kill is fixed at 0.2.
START = {
    "growth": 0.001,
    "f_relapsed": 3.0,
    "e_help": 0.02,
    "beta_igg": 1.0,
    "beta_igm": 2.2,
    "beta_iga": 0.67,
    "ec50_n": 250.0,
    "ec50_p": 350.0,
    "e_cd3": 0.1,
    "t_rec": 100.0,
    "ec50_act": 1000.0,
    "hill_n": 1.0,  # added with the flare and renal structure: an Emax start
    "k_flare": 10.0,
    "k_tol": 4.0,
    "f_node": 0.5,  # added with the lymph-node compartment: nodes killed at half the blood's rate
    "h_node": 3.0,  # added with the dose-steep node kill: cubic in the blood kill
}
#: Drug-effect parameters kept fixed, not identifiable from summary data: k_act, emax_act and
#: k_supp at their assumed values, kill at the upper bound where earlier calibrations ended
#: (docs/model.md gives each one's reason).
FIXED = ("k_act", "emax_act", "k_supp", "kill")
assert not set(FIXED) & set(FREE), "a parameter cannot be both fixed and free"
#: Most L-BFGS iterations: the fit from START converges (dose fixed point) in about 180.
STEPS = 450
IG_FREE = ("beta_igg", "beta_igm", "beta_iga", "t_rec")
TEMPERATURES = (0.05,)


def calibration_start(model, free=FREE):
    """The model's defaults with the free parameters at their pre-calibration values (START)."""
    return model.default_params().replace(**{k: v for k, v in START.items() if k in free})


def run_fit(obs, model, start, free, *, n_patients: int, seed: int, steps: int, temperatures, progress: bool):
    """The calibration fit (L-BFGS, annealed over ``temperatures``); shared with validate.py."""
    return lenapk.fit(
        obs,
        model=model,
        params=start,
        free=free,
        n_patients=n_patients,
        seed=seed,
        steps=steps,
        temperature=list(temperatures),
        progress=progress,
    )


def add_fit_arguments(ap: argparse.ArgumentParser) -> None:
    """The fit's options, shared with validate.py: virtual patients, seed, iterations."""
    ap.add_argument("--n-patients", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--steps",
        type=int,
        default=STEPS,
        help=f"most L-BFGS iterations per temperature (default {STEPS}; the fit stops earlier once converged)",
    )


def _header(args, res, obs, wall, cpu) -> str:
    free = ", ".join(f"`{f}`" for f in res.free)
    designs = "\n".join(f"- `{s}`: {note}" for s, note in res.designs.items())
    cvs = ", ".join(f"{k} {100 * v:g}%" for k, v in CV.items() if k in set(obs.observations["endpoint"]))
    priors = ", ".join(f"`{k}`" for k in PRIORS)
    used = [f for f in res.free if f in PRIORS]
    prior_use = (
        "they apply to " + ", ".join(used)
        if used
        else "none of these is free here, so the objective is the likelihood alone"
    )
    part = " --part ig" if args.part == "ig" else ""
    fixed = ", ".join(f"`{f}`" for f in FIXED)
    temps = " then ".join(f"{t:g}" for t in res.settings["temperatures"])
    return f"""# Calibration of the lenalidomide-CLL model

*Generated by `python examples/calibrate.py{part}` (lenapk {lenapk.__version__});
do not edit by hand.  The values shipped in `src/lenapk/models/cll/_parameters.py` are the
estimates below.*

## What was fitted, and how

- **Data**: `data/observations.csv` ({len(obs.observations)} rows) and `data/dose_level_response.csv`.
  Every row appears in the table below with its prediction; rows the model cannot represent, or whose
  definition the model only approximates, are shown with the reason they are not fitted.
- **Studies** (each one fixed virtual cohort of {args.n_patients} patients, seeds {args.seed} to
  {args.seed + len(res.designs) - 1}, in table order; common random numbers across iterations; baseline Ig
  and CD3 means of each cohort anchored to the reported day-0 means):
{designs}
- **Observation models** (`lenapk.calibration`): cohort means of pre-dose values; iwCLL response by
  blood and nodes (PR-or-better = ALC/ALC0 and node burden Q/Q0 both < 0.5, PD = either >= 1.5;
  the model has no spleen or marrow); toxicity counted as the trials count adverse events,
  treatment-emergent: a course (per-course rates) or a patient (incidences) counts when a
  scheduled visit's value reaches a grade of the row's band worse than the patient's day-0 grade
  (e.g. grade 3-4: ANC < 1.0, platelets < 50 x10^9/L); Ferrajoli's lymphocyte results at any visit
  over the horizon.  Best responses that also need spleen and marrow (NCI-WG or
  iwCLL best response of Ferrajoli and of the lenalidomide-dexamethasone trial) are shown, not
  fitted; the iwCLL categories at one assessment (early-stage and pulsed trials) and progression
  are fitted with the blood-and-node response (`f_node` stands for every site outside the blood;
  see each row's status).
- **Fixed, not identifiable from summaries** (not in `lenapk.models.cll._calibration.FREE`):
  {fixed}; their values and reasons are in `docs/model.md`.
- **Likelihood** (`lenapk.calibration._rows`): proportions (k = numerator, or round(value x n)) are
  beta-binomial with mean p = the prediction and Var k = N p (1 - p) [1 + (N - 1) rho].  Per-course
  rates count courses (333), m = N / n per patient, correlated within a patient: an assumed
  intra-patient correlation r = 0.3 gives the design effect 1 + (m - 1) r, rho = (m - 1) r / (N - 1).
  The Monte Carlo error of the virtual cohort (n_v = {args.n_patients} patients) adds 1 / n_v to rho
  (per course [1 + (m_v - 1) r] / (n_v m_v), m_v courses per virtual patient); the response
  categories of one assessment are one Dirichlet-multinomial of precision n_v - 1.  Means are
  Gaussian with SE^2 = (CV x mean)^2 (1 / n + 1 / n_v), between-patient CVs assumed ({cvs}); n
  missing at 12 cycles -> the smaller reported n (34, conservative).  Lab noise: grade rows count
  measured blood counts, each visit's ANC and platelets scattered around the model's value with a
  log-scale SD of 0.17 and 0.10 (`LAB_NOISE_SD`: biological variation plus analytical error),
  independent between visits; a row is the expected count, smooth without a relaxation and the
  same in the table's hard and smooth columns.  Response rows use the smooth count at temperature
  T, whose maximum over visits is 4x sharper (`lenapk.endpoints.VISIT_SHARPNESS`), so that "at any
  of V visits" is biased up by at most (T / 4) log V; their hard counts (T = 0) are exact.
- **Free parameters** (log scale): {free}.  Everything else stays at its default.  Log-normal
  priors exist for the parameters with literature values ({priors}); {prior_use}.
- **Optimiser**: optax L-BFGS with a backtracking line search (a failed search retried once from a
  fresh memory), exact gradients by forward
  sensitivities, temperature annealed {temps} (`lenapk.endpoints` relaxation); Hessian by
  central differences of the exact gradient; SEs by the delta method.
- **Run**: {res.iterations} iterations, {res.evaluations} objective evaluations;
  {wall:.0f} s wall clock, {cpu:.0f} s CPU for everything (solver rtol {FIT_SETTINGS.rtol:g}).

"""


def _cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo``; "unknown" elsewhere): hosts of one machine
    kind differ, and the timing with them."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown"
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "unknown")


def write_timing(res, wall: float, cpu: float, args, path: Path = ROOT / "benchmarks" / "calibration.json") -> None:
    """The joint calibration's cost for ``benchmarks/RESULTS.md`` (the issue's target: 10 minutes
    on 2 cores)."""
    import json
    import os

    path.write_text(
        json.dumps(
            {
                "command": "python examples/calibrate.py",
                "studies": sorted(res.designs),
                "free_parameters": len(res.free),
                "patients_per_study": args.n_patients,
                "iterations": res.iterations,
                "evaluations": res.evaluations,
                "converged": bool(res.converged),
                "objective": round(float(res.objective), 4),
                "max_abs_gradient": round(float(res.grad_max), 4),
                "dose_refreshes": 0 if res.dose_refreshes is None else len(res.dose_refreshes),
                "dose_refreshes_kept": 0 if res.dose_refreshes is None else int(res.dose_refreshes["kept"].sum()),
                "dose_refreshes_cycle": 0 if res.dose_refreshes is None else int(res.dose_refreshes["cycle"].sum()),
                "dose_tol": DEFAULT_DOSE_TOL,
                "dose_changed_at_end": round(float(res.dose_changed), 5),
                "wall_s": round(wall, 1),
                "cpu_s": round(cpu, 1),
                "phases_s": {k: round(float(v), 1) for k, v in res.timings.items()},
                "cores": os.cpu_count(),
                "cpu": _cpu_model(),
                "date": time.strftime("%Y-%m-%d", time.gmtime()),
            },
            indent=2,
        )
        + "\n"
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("joint", "ig"), default="joint")
    add_fit_arguments(ap)
    ap.add_argument(
        "--out",
        default=None,
        help="report file (default: docs/calibration.md for the joint fit; none for --part ig "
        "or --quick, so that a timing or test run never overwrites the report)",
    )
    ap.add_argument("--quick", action="store_true", help="tiny run for tests (8 patients, 2 steps)")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args(argv)
    if args.out is None and args.part == "joint":
        args.out = str(ROOT / "docs" / "calibration.md")
    if args.quick:
        args.n_patients, args.steps = 8, 2

    t0, c0 = time.perf_counter(), time.process_time()
    obs = lenapk.load_observations()
    model = lenapk.LenalidomideCLL()
    if args.part == "ig":
        obs = obs.select(obs.observations["endpoint"].isin(["IgG", "IgM", "IgA"]))
        free, temperatures = IG_FREE, TEMPERATURES[-1:]
    else:
        free, temperatures = FREE, TEMPERATURES
    res = run_fit(
        obs,
        model,
        calibration_start(model, free),
        free,
        n_patients=args.n_patients,
        seed=args.seed,
        steps=args.steps,
        temperatures=temperatures,
        progress=args.progress,
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0

    print(res.summary())
    timings = ", ".join(f"{k} {v:.1f}" for k, v in res.timings.items())
    print(f"wall {wall:.1f} s, CPU {cpu:.1f} s; timings {timings}")
    print("\nPARAMETER_SPECS values (src/lenapk/models/cll/_parameters.py):")
    for r in res.estimates.itertuples():
        print(f"    {r.parameter} = {r.estimate:.4g}")
    ig = res.observed_vs_predicted
    ig = ig[ig["endpoint"].isin(["IgG", "IgM", "IgA"]) & (ig["day"] > 0)]
    worst = float(np.max(np.abs(ig["predicted"] / ig["observed"] - 1))) if len(ig) else float("nan")
    print(f"largest relative error of the Ig means: {100 * worst:.1f}%")
    if not args.quick and args.part == "joint":
        write_timing(res, wall, cpu, args)
    if not args.quick and args.out is not None:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(_header(args, res, obs, wall, cpu) + res.to_markdown())
        print(f"wrote {out}")
    return res


if __name__ == "__main__":
    main()
