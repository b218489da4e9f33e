"""Leave-one-study-out (LOSO) cross-validation of the joint calibration.

For each bundled study k: fit the joint model (the settings of ``examples/calibrate.py``: its
``START``, ``FREE`` and temperatures) to the rows of the other studies, then predict study k's
rows with 90% prediction intervals (:func:`lenapk.calibration.prediction_intervals`: parameter
uncertainty from the fit's covariance plus the sampling error of the reported statistic) and
check whether the observed values fall inside.  A prediction is *useful* when the observed value
lies in its 90% interval and the interval is narrower than +/- 15 percentage points (fractions) or
+/- 15% of the prediction (means).

Free parameters that no training study informs (a study may be the only one whose fitted rows
depend on a parameter) are not estimated in that fold: the fit keeps them at their prior median
where a prior exists, else at the pre-calibration value of ``START``, and the fold records them.
In the intervals they are drawn from that prior, or log-uniformly over their bounds, and the
directions the training rows leave flat or inform weakly are drawn uniformly over their
likelihood-ratio slice (``prediction_intervals(..., fitted=, uninformed=)``), so a fold does not
claim knowledge that no training row gives.

Each fold's result is appended to a JSON-lines file as it finishes; a rerun skips the folds
already done with the same settings (``--restart`` ignores them).  At the end ``docs/validation.md``
and ``docs/validation.json`` (read by ``lenapk report``) are written from the folds on file.

    python examples/validate.py                              # all folds -> docs/validation.{md,json}
    python examples/validate.py --study relapsed_pulsed_42d  # one fold (others kept from the file)
    python examples/validate.py --quick --out-dir /tmp/v     # tiny run for tests (8 patients, 1 step)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import time
from pathlib import Path

import lenapk
from lenapk.calibration import Objective, observed_inside, prediction_intervals
from lenapk.models.cll._calibration import FREE, PRIORS

ROOT = Path(__file__).resolve().parents[1]
HALF_WIDTH_FRACTION = 0.15  # +/- 15 percentage points
HALF_WIDTH_MEAN = 0.15  # +/- 15% of the prediction


def _calibrate_module():
    spec = importlib.util.spec_from_file_location("calibrate_example", Path(__file__).with_name("calibrate.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CALIBRATE = _calibrate_module()
START, TEMPERATURES = CALIBRATE.START, CALIBRATE.TEMPERATURES


# ---------------------------------------------------------------------------- one fold
def _held_out_rows(model, test, n_patients: int, seed: int) -> list[int]:
    """Indices of the held-out rows the model predicts (not NotModelled or otherwise
    unpredictable, not a baseline the cohort is anchored to)."""
    obj = Objective(test, model=model, free=(), n_patients=n_patients, seed=seed)
    return [r.index for r in obj.rows if r.kind != "none" and r.index not in obj.anchored]


def _estimable(model, train, start, n_patients: int, seed: int) -> tuple[str, ...]:
    """The free parameters that some fitted row of the training studies depends on."""
    obj = Objective(train, model=model, params=start, free=FREE, n_patients=n_patients, seed=seed)
    active = set().union(*(s.active for s in obj.studies))
    return tuple(f for f in FREE if f in active)


def _judged(rec: dict) -> dict:
    """``rec`` with ``inside`` (a count row by its count k of N: a reported percentage is k / N
    rounded; :func:`lenapk.calibration.observed_inside`) and ``useful`` (inside, and the half-width
    within +/- 15 points, or 15% of the prediction for means)."""
    k, n = (math.nan if rec.get(c) is None else float(rec[c]) for c in ("k", "N"))
    inside = observed_inside(rec["observed"], rec["lo"], rec["hi"], k, n)
    fraction = rec["unit"] == "fraction"
    limit = HALF_WIDTH_FRACTION if fraction else HALF_WIDTH_MEAN * abs(rec["predicted"])
    return {**rec, "inside": inside, "useful": bool(inside and rec["width"] / 2 <= limit)}


def _row_record(r) -> dict:
    fraction = r["unit"] == "fraction"
    lo, hi, obs, pred = (float(r[c]) for c in ("lo", "hi", "observed", "predicted"))
    width = hi - lo
    k, n = float(r["k"]), float(r["N"])
    return _judged(
        {
            "row": int(r["row"]),
            "study": r["study"],
            "endpoint": r["endpoint"],
            "statistic": r["statistic"],
            "day": None if not math.isfinite(r["day"]) else float(r["day"]),
            "unit": r["unit"],
            "observed": obs,
            "predicted": pred,
            "lo": lo,
            "hi": hi,
            "param_lo": float(r["param_lo"]),
            "param_hi": float(r["param_hi"]),
            "k": k if math.isfinite(k) else None,
            "N": n if math.isfinite(k) and math.isfinite(n) else None,
            "width": width,
            "width_points": 100 * width if fraction else None,
            "width_relative": None if fraction or pred == 0 else width / abs(pred),
            "sampling": r["sampling"],
            "status": r["status"],
        }
    )


def run_fold(study: str, obs, model, config: dict, progress: bool) -> dict:
    t0 = time.perf_counter()
    table = obs.observations
    train, test = obs.select(table["study"] != study), obs.select(table["study"] == study)
    n, seed = config["n_patients"], config["seed"]
    base = {"study": study, "config": config, "lenapk": lenapk.__version__}
    held = _held_out_rows(model, test, n, seed)
    if not held:
        return {**base, "rows": [], "note": "no held-out row is predicted by the model (nothing to validate)"}
    start = CALIBRATE.calibration_start(model)
    free = _estimable(model, train, start, n, seed)
    not_estimable = {}
    for f in FREE:
        if f not in free:
            prior = PRIORS.get(f)
            value, source = (prior.median, "prior median") if prior is not None else (START[f], "pre-calibration value")
            not_estimable[f] = {"value": float(value), "source": source}
    start = start.replace(**{f: v["value"] for f, v in not_estimable.items()})
    res = CALIBRATE.run_fit(
        train,
        model,
        start,
        free,
        n_patients=n,
        seed=seed,
        steps=config["steps"],
        temperatures=config["temperatures"],
        progress=progress,
    )
    pi = prediction_intervals(
        res,
        test,
        n_draws=config["n_draws"],
        level=config["level"],
        seed=seed,
        fitted=train,
        uninformed=tuple(not_estimable),
    )
    rows = [_row_record(r) for _, r in pi.table.iloc[held].iterrows() if math.isfinite(r["lo"])]
    return {
        **base,
        "free": list(free),
        "not_estimable": not_estimable,
        "fixed_in_intervals": list(pi.fixed),
        "spans": [sp.label for sp in pi.spans],
        "converged": bool(res.converged),
        "message": res.message,
        "objective": float(res.objective),
        "iterations": int(res.iterations),
        "estimates": {
            r.parameter: {"estimate": float(r.estimate), "se_log": float(r.se_log)} for r in res.estimates.itertuples()
        },
        "dose_refreshes": []
        if res.dose_refreshes is None
        else [
            {
                "after_iteration": int(r.after_iteration),
                "changed": float(r.changed),
                "objective_after": float(r.objective_after),
                "kept": bool(r.kept),
                "cycle": bool(r.cycle),
            }
            for r in res.dose_refreshes.itertuples()
        ],
        "draws": pi.n_draws,
        "failed_draws": pi.failed,
        "clipped_draws": pi.clipped,
        "rows": rows,
        "seconds": time.perf_counter() - t0,
    }


# ---------------------------------------------------------------------------- files
def _load_folds(path: Path, config: dict) -> dict[str, dict]:
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                if rec.get("config") == config:
                    done[rec["study"]] = rec
    return done


def _jsonable(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def summarise(folds: list[dict], studies: list[str], config: dict, command: str) -> dict:
    """The validation summary of the folds (each row judged when its fold ran, :func:`_judged`)."""
    rows = [r for f in folds for r in f["rows"]]
    return _jsonable(
        {
            "generated_by": command,
            "lenapk": lenapk.__version__,
            "config": config,
            "studies": studies,
            "folds_done": [f["study"] for f in folds],
            "folds_missing": [s for s in studies if s not in {f["study"] for f in folds}],
            "counts": {
                "held_out_rows": len(rows),
                "inside": sum(r["inside"] for r in rows),
                "useful": sum(r["useful"] for r in rows),
            },
            "folds": [{k: v for k, v in f.items() if k != "rows"} for f in folds],
            "rows": rows,
        }
    )


def _cell(v, fraction: bool) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}%" if fraction else f"{v:.4g}"


def render_markdown(summary: dict) -> str:
    c, cfg = summary["counts"], summary["config"]
    level = 100 * cfg["level"]
    lines = [
        "# Leave-one-study-out validation",
        "",
        f"*Generated by `{summary['generated_by']}` (lenapk {summary['lenapk']}); do not edit by hand.*",
        "",
        "## Method",
        "",
        "For each bundled study, the joint model of `examples/calibrate.py` (from its START, with the same "
        f"free parameters and temperatures; {cfg['n_patients']} virtual patients per study, at most {cfg['steps']} "
        "iterations) is fitted "
        f"to the other studies' rows, and the held-out study's rows are predicted with {level:g}% prediction "
        f"intervals: {cfg['n_draws']} parameter vectors drawn on the log scale from the fit's Normal approximation "
        "along the Hessian's well-informed eigenvectors; uniformly along each weakly informed or flat one (an "
        "eigenvalue below chi2_1(level), where a Normal would reach beyond about one log unit), over its "
        "likelihood-ratio slice (the training objective at most chi2_1(level) / 2 above its value at the estimate); "
        "and from the prior (or log-uniformly over the bounds) for the parameters no training row informs; each row's "
        "hard prediction on the study's virtual cohort (a proportion taken at the Jeffreys posterior mean of the "
        "model's rate given the virtual count, so that a count of 0 still allows a small rate), "
        "mixed with the sampling error of the reported statistic (binomial or beta-binomial counts, Normal means "
        "with the row's SE; `lenapk.calibration.prediction_intervals`).  Rows the model does not predict and the "
        "baseline means the cohort is anchored to are left out.  Grade rows are counted on measured blood counts "
        "(lab noise; `docs/model.md`).  A count row's interval lies on the grid of the trial's counts, j of N, "
        "and the row is inside when its observed count k of N is (a reported 9.7% is 3 of 31, on the grid at "
        "9.68%).",
        "",
        f"A prediction is **useful** when the observed value lies in its {level:g}% interval and the interval is "
        "narrower than +/- 15 percentage points (fractions) or +/- 15% of the prediction (means).",
        "",
        f"**{c['inside']} of {c['held_out_rows']} held-out rows inside their {level:g}% PI; {c['useful']} useful.**",
        "",
    ]
    if summary["folds_missing"]:
        lines += [f"Folds not run yet: {', '.join(summary['folds_missing'])}.", ""]
    lines += [
        "## Held-out rows",
        "",
        f"| study | endpoint | statistic | day | observed | predicted | {level:g}% PI | inside | PI width | useful |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        frac = r["unit"] == "fraction"
        day = "-" if r["day"] is None else f"{r['day']:g}"
        width = f"{r['width_points']:.1f} points" if frac else f"{r['width']:.4g} {r['unit']}"
        lines.append(
            f"| {r['study']} | {r['endpoint']} | {r['statistic']} | {day} | {_cell(r['observed'], frac)} | "
            f"{_cell(r['predicted'], frac)} | {_cell(r['lo'], frac)} - {_cell(r['hi'], frac)} | "
            f"{'yes' if r['inside'] else 'no'} | {width} | {'yes' if r['useful'] else 'no'} |"
        )
    lines += ["", "## Folds", ""]
    for f in summary["folds"]:
        lines.append(f"### Without `{f['study']}`")
        lines.append("")
        if "free" not in f:
            lines += [f.get("note", ""), ""]
            continue
        conv = "converged" if f["converged"] else "**not converged**"
        lines.append(f"- fit: {conv} ({f['message']}), {f['iterations']} iterations, {f['seconds']:.0f} s")
        lines.append(f"- estimated: {', '.join(f'`{p}`' for p in f['free'])}")
        if f["not_estimable"]:
            kept = ", ".join(f"`{p}` = {v['value']:.4g} ({v['source']})" for p, v in f["not_estimable"].items())
            lines.append(
                f"- not estimable without this study (no other study's fitted rows depend on it), kept in the fit at: "
                f"{kept}; drawn in the intervals from their prior, or log-uniformly over their bounds"
            )
        if f.get("spans"):
            spans = "; ".join(f["spans"])
            lines.append(f"- drawn uniformly in the intervals (not informed by the training rows): {spans}")
        if f["fixed_in_intervals"]:
            lines.append(
                "- held at the estimate in the intervals (infinite standard error): "
                + ", ".join(f"`{p}`" for p in f["fixed_in_intervals"])
            )
        if f.get("dose_refreshes"):
            log = f["dose_refreshes"]
            kept, cycle = sum(r["kept"] for r in log), sum(r["cycle"] for r in log)
            lines.append(
                f"- dose rules run {len(log)} times: {len(log) - kept - cycle} frozen anew, {kept} kept (within "
                f"dose_tol), {cycle} kept as a cycle (doses replaced before came back); the last, after iteration "
                f"{log[-1]['after_iteration']}, changed {100 * log[-1]['changed']:.2g}% of patient-days"
            )
        lines.append(
            f"- {f['draws']} parameter draws ({f['failed_draws']} failed, {f['clipped_draws']} moved onto a bound)"
        )
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    CALIBRATE.add_fit_arguments(ap)
    ap.add_argument("--n-draws", type=int, default=100, help="parameter draws per fold")
    ap.add_argument("--level", type=float, default=0.9)
    ap.add_argument("--study", action="append", help="run only this fold (repeatable); default: every study")
    ap.add_argument("--out-dir", default=None, help="where validation.md and validation.json go (default: docs/)")
    ap.add_argument(
        "--folds",
        default=None,
        help="JSON-lines file of finished folds (default: benchmarks/validation_folds.jsonl, or "
        "validation_folds.jsonl in --out-dir with --quick)",
    )
    ap.add_argument("--restart", action="store_true", help="ignore the folds on file and run them again")
    ap.add_argument("--quick", action="store_true", help="tiny run for tests (8 patients, 1 step, 8 draws)")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        if args.out_dir is None:
            ap.error("--quick writes test output: give --out-dir (it never writes into docs/)")
        args.n_patients, args.steps, args.n_draws = 8, 1, 8
    out_dir = Path(args.out_dir) if args.out_dir else ROOT / "docs"
    folds_path = (
        Path(args.folds)
        if args.folds
        else (out_dir / "validation_folds.jsonl" if args.quick else ROOT / "benchmarks" / "validation_folds.jsonl")
    )
    config = {
        "n_patients": args.n_patients,
        "seed": args.seed,
        "steps": args.steps,
        "n_draws": args.n_draws,
        "level": args.level,
        "temperatures": list(TEMPERATURES),
        "quick": bool(args.quick),
        "unidentified": "spanned",  # flat directions and uninformed parameters drawn (not held)
    }
    obs = lenapk.load_observations()
    model = lenapk.LenalidomideCLL()
    studies = list(dict.fromkeys(obs.observations["study"]))
    unknown = sorted(set(args.study or []) - set(studies))
    if unknown:
        ap.error(f"unknown study {unknown}; the studies are {studies}")
    folds_path.parent.mkdir(parents=True, exist_ok=True)
    if args.restart and folds_path.exists():
        folds_path.unlink()
    done = _load_folds(folds_path, config)
    for study in args.study or studies:
        if study in done:
            print(f"fold without {study}: on file ({folds_path}), skipped")
            continue
        print(f"fold without {study}: fitting the other studies ...", flush=True)
        rec = _jsonable(run_fold(study, obs, model, config, args.progress))
        with folds_path.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        done[study] = rec
        inside = sum(r["inside"] for r in rec["rows"])
        print(f"fold without {study}: {inside} of {len(rec['rows'])} held-out rows inside their interval", flush=True)
    folds = [done[s] for s in studies if s in done]
    command = "python examples/validate.py" + (" --quick" if args.quick else "")
    if not args.quick and (args.n_patients, args.steps, args.n_draws) != (64, CALIBRATE.STEPS, 100):
        command += f" --n-patients {args.n_patients} --steps {args.steps} --n-draws {args.n_draws}"
    summary = summarise(folds, studies, config, command)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "validation.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out_dir / "validation.md").write_text(render_markdown(summary))
    c = summary["counts"]
    print(
        f"{c['inside']} of {c['held_out_rows']} held-out rows inside their {100 * args.level:g}% PI; "
        f"{c['useful']} useful; wrote {out_dir / 'validation.md'} and {out_dir / 'validation.json'}"
    )
    return summary


if __name__ == "__main__":
    main()
