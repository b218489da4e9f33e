"""A second model on lenapk's engine, end to end: two-compartment PK with an indirect-response
biomarker (:class:`lenapk.models.turnover.TwoCompartmentTurnover`, time in hours).

1. **simulate** the typical patient under 100 mg orally every 12 h and under a 200 mg IV
   infusion over 1 h once a day;
2. a **virtual cohort** under the oral regimen with a dose rule on the model's own observable
   (``hold_rule()``: hold while the biomarker is below 40 units at a lab visit, every other day;
   resume one dose level lower once it is back at 60 or more);
3. a **fit** of ``ic50`` and ``kout`` to summary data: cohort means of the biomarker and the
   incidence of grade >= 3 suppression.  The data are SYNTHETIC: this script generates them
   itself from known values (the model's defaults, ic50 = 400 ng/mL and kout = 0.05 1/h) on the
   fit's own virtual patients, and the fit starts away from them (ic50 x 2, kout / 2) to show
   that it finds them again (up to the smoothing of the rate row).  Summaries of *other*
   patients would move the estimates by the cohorts' sampling differences, the baseline
   biomarker (covariate ``r0``) above all;
4. a **comparison** of two regimens with the same daily dose (100 mg every 12 h against 200 mg
   every 24 h) on one virtual cohort (common random numbers).

Writes ``simulation.csv``, ``simulation.png``, ``cohort.csv``, ``fit_estimates.csv``,
``comparison.csv`` and ``comparison.png`` to ``--out`` and prints a short summary.

    python examples/second_model.py [--quick] [--n N] [--days D] [--seed S] [--out DIR]

``--quick`` (a few patients, one week) is for tests and smoke runs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

import lenapk
from lenapk.calibration import StudyDesign
from lenapk.models.turnover import SUPPRESSION, TwoCompartmentTurnover, hold_rule
from lenapk.report import plot_trajectories, population_bands

SETTING = "adults"
CYCLE_DAYS = 7  # a "course" is one week here (per-course rates, values at the end of course 1, 2)


def oral(n_days: int) -> lenapk.Regimen:
    return lenapk.Regimen.every(100.0, 12.0, n_days=n_days, cycle_days=CYCLE_DAYS, name="100 mg oral q12h")


def simulate_typical(model, n_days: int, out: Path) -> dict[str, pd.DataFrame]:
    iv = lenapk.Regimen.every(
        200.0,
        24.0,
        n_days=n_days,
        compartment="central",
        duration_h=1.0,
        cycle_days=CYCLE_DAYS,
        name="200 mg IV over 1 h q24h",
    )
    frames = {r.name: lenapk.simulate(r, model=model) for r in (oral(n_days), iv)}
    table = pd.concat([df.assign(regimen=name) for name, df in frames.items()])
    table.to_csv(out / "simulation.csv", index=False)
    plot_trajectories(frames, out / "simulation.png", model)
    for name, df in frames.items():
        last_day = df[df["hour"] >= 24 * (n_days - 1)]
        print(
            f"  {name}: Cmax {df['conc_ng_ml'].max():.0f} ng/mL, last-day trough "
            f"{last_day['conc_ng_ml'].min():.0f} ng/mL; biomarker {df['biomarker'].iloc[0]:.0f} -> nadir "
            f"{df['biomarker'].min():.1f} units"
        )
    return frames


def run_cohort(model, n: int, n_days: int, seed: int, out: Path) -> pd.DataFrame:
    rule = hold_rule()
    df = lenapk.cohort(
        oral(n_days), n=n, seed=seed, setting=SETTING, rules=rule, model=model, progress=False, block_size=min(n, 64)
    )
    df.to_csv(out / "cohort.csv", index=False)
    held = df["days_held"] > 0
    print(
        f"  {n} patients, {n_days} days, rule '{rule.label}': {100 * held.mean():.0f}% had a dose held "
        f"(mean {df['days_held'].mean():.1f} days held), "
        f"{100 * (df['n_reductions'] > 0).mean():.0f}% reduced; "
        f"dose intensity {df['dose_intensity'].mean():.2f}; grade >= 3 suppression "
        f"{100 * (df['bm_grade'] >= 3).mean():.0f}%"
    )
    return df


def synthetic_summaries(model, truth, regimen, visits, *, n: int, seed: int) -> pd.DataFrame:
    """Summary rows at the KNOWN parameters ``truth``: cohort means of the biomarker at the visits
    and the incidence of grade >= 3 suppression (< 40 units at a visit) by the last day."""
    means = population_bands(model, truth, regimen, n=n, seed=seed, setting=SETTING)["biomarker"]["mean"]
    df = lenapk.cohort(
        regimen,
        n=n,
        seed=seed,
        setting=SETTING,
        model=model,
        visits=list(visits[1:]),
        block_size=min(n, 64),
        progress=False,
    )
    k = int((df[f"{SUPPRESSION.label}_grade"] >= 3).sum())
    rows = [
        dict(
            study="synthetic",
            regimen_id=regimen.name,
            endpoint="biomarker",
            statistic="mean",
            day=d,
            value=float(means[d]),
            unit="units",
            n=n,
            numerator=None,
            denominator=None,
        )
        for d in visits
    ]
    rows.append(
        dict(
            study="synthetic",
            regimen_id=regimen.name,
            endpoint="suppression_grade3_4",
            statistic="incidence",
            day=visits[-1],
            value=k / n,
            unit="fraction",
            n=n,
            numerator=k,
            denominator=n,
        )
    )
    return pd.DataFrame(rows)


def run_fit(model, n: int, n_days: int, seed: int, steps: int, out: Path):
    truth = model.default_params()
    regimen = oral(n_days)
    visits = tuple(range(n_days + 1))  # daily pre-dose samples
    table = synthetic_summaries(model, truth, regimen, visits, n=n, seed=seed)  # the fit's patients
    design = StudyDesign(
        "synthetic",
        regimen,
        SETTING,
        n_days,
        visits,
        n_courses=n_days // CYCLE_DAYS,
        cycle_days=CYCLE_DAYS,
        note=f"{regimen.name}, {n_days} days, daily pre-dose samples",
    )
    start = truth.replace(ic50=2.0 * truth["ic50"], kout=0.5 * truth["kout"])
    res = lenapk.fit(
        table,
        model=model,
        params=start,
        free=("ic50", "kout"),
        n_patients=n,
        seed=seed,
        designs={"synthetic": design},
        steps=steps,
        progress=False,
    )
    res.estimates.to_csv(out / "fit_estimates.csv", index=False)
    print(
        f"  SYNTHETIC data: {len(table)} summary rows generated by this script at ic50 = "
        f"{float(truth['ic50']):g} ng/mL, kout = {float(truth['kout']):g} 1/h on the fit's {n} virtual "
        f"patients; the fit starts from ic50 x 2 and kout / 2"
    )
    for r in res.estimates.itertuples():
        true = float(truth[r.parameter])
        print(
            f"  {r.parameter}: estimate {r.estimate:.4g} {r.unit} (SE {r.se:.2g}), start {r.start:.4g}, "
            f"truth {true:.4g} ({100 * (r.estimate / true - 1):+.1f}%)"
        )
    print(f"  {'converged' if res.converged else 'NOT converged'} after {res.iterations} iterations")
    return res


def run_compare(model, n: int, n_days: int, seed: int, out: Path) -> pd.DataFrame:
    regimens = {
        "100 mg q12h": oral(n_days),
        "200 mg q24h": lenapk.Regimen.every(200.0, 24.0, n_days=n_days, cycle_days=CYCLE_DAYS, name="200 mg q24h"),
    }
    table = lenapk.compare(
        regimens, n=n, seed=seed, model=model, setting=SETTING, visits="daily", block_size=min(n, 64)
    )
    table.to_csv(out / "comparison.csv", index=False)
    lenapk.plot_comparison(table, out / "comparison.png")
    for _, r in table.iterrows():
        print(
            f"  {r['regimen']}: grade >= 3 suppression {100 * r['g3_suppression']:.0f}% "
            f"(95% CI {100 * r['g3_suppression_lo']:.0f}-{100 * r['g3_suppression_hi']:.0f}%), "
            f"biomarker change by day {CYCLE_DAYS} {r['biomarker_change_c1']:.1f} units"
        )
    return table


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a few patients over one week (tests, smoke runs)")
    ap.add_argument("--n", type=int, default=200, help="virtual patients of the cohort and the comparison")
    ap.add_argument("--days", type=int, default=14, help="days simulated (a multiple of 7)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="second-model-output")
    args = ap.parse_args(argv)
    n, n_days, n_fit, steps = (8, 7, 8, 20) if args.quick else (args.n, args.days, 32, 60)
    if n_days < CYCLE_DAYS or n_days % CYCLE_DAYS:
        ap.error(f"--days must be a positive multiple of {CYCLE_DAYS}, got {n_days}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = TwoCompartmentTurnover()
    t0 = time.time()
    print(f"1. typical patient ({model.time_unit} model, {n_days} days)")
    frames = simulate_typical(model, n_days, out)
    print("2. virtual cohort with a hold rule on the biomarker")
    df = run_cohort(model, n, 2 * n_days, args.seed, out)
    print("3. fit of ic50 and kout to synthetic summary data")
    res = run_fit(model, n_fit, n_days, args.seed, steps, out)
    print("4. comparison of two regimens (same patients)")
    table = run_compare(model, n, n_days, args.seed, out)
    print(f"wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out} ({time.time() - t0:.0f} s)")
    return {"frames": frames, "cohort": df, "fit": res, "comparison": table}


if __name__ == "__main__":
    main()
