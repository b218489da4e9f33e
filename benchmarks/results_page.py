"""Write ``benchmarks/RESULTS.md``, one current page, from the latest runs' JSON.

    python benchmarks/results_page.py      # reads results_table.json (run.py), cohort_scale.json,
                                           # cohort_command.json, estimation.json, estimation_cll.json,
                                           # coverage.json, calibration*.json, cohort_bound.json

``run.py`` calls this at its end; ``cohort_scale.py`` stores its runs in ``cohort_scale.json``.
The measurements come from those two files; the text around them is written here, so edit this
script, not the page.  A few numbers are quoted in that text rather than measured by the run: the
whole-horizon solve that was tried and dropped, the range of libroadrunner's times in earlier
runs (both from ``HISTORY.md``), and the timings an earlier page showed.  The history of earlier
runs is in ``HISTORY.md``.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent

METHOD = """\
Same model everywhere: `lenapk.LenalidomideCLL` at its typical parameters, {pd_states} PD states, 672 days
(24 cycles of 28 days) of the `rr_10_to_25_cont` regimen, rtol 1e-6 / atol 1e-8 for every solver.
The peers (`peers.py`) integrate the PK as two ODE states with a bolus into the depot at each day
start: scipy `solve_ivp` LSODA with a Python loop over doses, and libroadrunner (CVODE, SBML
written by hand, its fastest dosing strategy of three).  lenapk solves the PK in closed form and
the PD states with diffrax (Tsit5, PID control on each patient's weighted RMS error as CVODE,
where scipy's LSODA takes the max norm; the worst patient of a batch sets its shared step); a
batch's dose days in a log-linear clock (`lenapk._core._clock`: log scale from 3 min after the
dose, linear from 1.5 h).
The same rtol does not give every solver the same accuracy, so the rows marked
"accuracy-matched" run lenapk at the largest rtol of a short list (atol in the same ratio 1/100)
whose final states are at most libroadrunner's distance from a tight solve: the typical patient
for the one-patient row, the cohort subsample for the batch row (Agreement and accuracy, below).

All rows come from one run of `python benchmarks/run.py`, in one process (one JAX CPU device)
except the 2-device rows (a subprocess with 2 devices) and the rows "pinned to one core" (a
subprocess held to one core with `sched_setaffinity`, as `taskset -c 0` would; the first 1024
patients of the same cohort for its chunk row; libroadrunner is timed there too, and the rows
pinned to one core are compared with it; their scipy column is against scipy in the main
process).  Times are per patient, best of a few repeats after compilation, each repeat the mean
over at least 0.25 s of calls, except single runs: the `vmap` row, the scale rows and scipy's
cohort subsample.  **CPU time** is the process CPU time (all threads); the peers are
single-threaded, so their wall and CPU times agree and the CPU ratio is the fair one.  A ratio
above 1 means lenapk is faster.  The cohort rows draw log-normal between-patient variability on
cl, v, ka, ec50_n, kill and growth (numpy seed 0); the peers solve a subsample of the same patients.
"""


def fmt_t(s: float) -> str:
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def machine(m: dict, roadrunner_one_s: float) -> str:
    return (
        f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; Python {m['python']}, jax {m['jax']} "
        f"({m['jax_backend']}), diffrax {m['diffrax']}, scipy {m['scipy']}, libroadrunner {m['libroadrunner']}, "
        f"numpy {m['numpy']}.  XLA_FLAGS `{m['xla_flags']}`.  Load average (1/5/15 min) "
        f"{', '.join(f'{x:.1f}' for x in m['loadavg_start'])} at the start and "
        f"{', '.join(f'{x:.1f}' for x in m['loadavg_end'])} at the end; the run took {m['total_wall_s']:.0f} s.  "
        "The machine is a shared virtual machine of a kind whose hosts differ (Intel Xeon and AMD EPYC have both "
        "been seen) and whose speed varies from run to run by up to 3x (libroadrunner on one patient took "
        f"{fmt_t(roadrunner_one_s)} in this run, 65-290 ms in the runs on HISTORY.md): compare the ratios, which "
        "come from one run."
    )


def per_patient_table(res: dict) -> str:
    peers = res["peers"]
    lines = [
        "| section | what | wall | CPU | vs libroadrunner, wall | vs libroadrunner, CPU | vs scipy, CPU | note |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in res["rows"]:
        ratios = ["", "", ""]
        if r["label"].startswith("lenapk"):
            ref = "one_patient" if r["section"] == "one patient" else "per_cohort_patient"
            pinned = r.get("reference") == "pinned" and "libroadrunner_pinned" in peers
            rr, sp = peers["libroadrunner_pinned" if pinned else "libroadrunner"][ref], peers["scipy"][ref]
            ratios = [f"{rr['wall'] / r['wall']:.2f}x", f"{rr['cpu'] / r['cpu']:.2f}x", f"{sp['cpu'] / r['cpu']:.0f}x"]
        lines.append(
            f"| {r['section']} | {r['label']} | {fmt_t(r['wall'])} | {fmt_t(r['cpu'])} | "
            + " | ".join(ratios)
            + f" | {r['note']} |"
        )
    return "\n".join(lines)


def targets_table(res: dict, scale: dict, command: dict | None = None) -> str:
    targets = list(res["targets"])
    default = [r for r in scale.values() if r["n"] == 10_000 and r["tuned"] and r["devices"] == r["cores"] > 1]
    runs = (command or {}).get("runs", [])
    if default or runs:
        measured, met = [], True
        if runs:
            walls = ", ".join(f"{r['wall_s']:.1f} s" for r in runs)
            measured.append(f"a fresh `python -c` process (`cohort_command.py`): {walls} wall in {len(runs)} runs")
            met = max(r["wall_s"] for r in runs) <= 60
        if default:
            r = default[-1]
            measured.append(
                f"`cohort_scale.py`: {r['wall_s']:.0f} s warm + {r['first_call_s']:.0f} s first (compiling) call "
                f"({r['devices']} devices)"
            )
            met = met and r["first_call_s"] + r["wall_s"] <= 60
        targets.append(
            {
                "target": "`lenapk.cohort(rr_10_to_25_cont, n=10_000)` within 60 s with no setup call",
                "measured": "; ".join(measured),
                "met": met,
            }
        )
    rows = ["| target | measured | met? |", "|---|---|---|"]
    rows += [f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'NO'} |" for t in targets]
    return "\n".join(rows)


def cohort_scale_section(scale: dict) -> str:
    if not scale:
        return "No `cohort_scale.py` run stored yet."
    lines = [
        "`lenapk.cohort(load_regimens()['rr_10_to_25_cont'], n)` as a user calls it, endpoints included "
        "(`python benchmarks/cohort_scale.py`; the A/B rows with `LENAPK_CPU_SETUP=0` or `--untuned`):",
        "",
        "| cores | CPU devices | tuning flags | n | block | first call (compiles) | wall | CPU | ms/patient, wall | ms/patient, CPU |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(scale.values(), key=lambda r: (-r["cores"], -r["devices"], not r["tuned"], -r["n"])):
        lines.append(
            f"| {r['cores']} | {r['devices']} | {'yes' if r['tuned'] else 'no'} | {r['n']:,} | {r['block_size']} | "
            f"{r['first_call_s']:.0f} s | {r['wall_s']:.0f} s | {r['cpu_s']:.0f} s | "
            f"{1e3 * r['wall_s'] / r['n']:.2f} | {1e3 * r['cpu_s'] / r['n']:.2f} |"
        )
    return "\n".join(lines)


def accuracy_tables(res: dict) -> str:
    acc = [
        "| regimen | scipy vs lenapk | libroadrunner vs lenapk | lenapk vs tight | scipy vs tight | libroadrunner vs tight |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    acc += [
        f"| {r['regimen']} | {r['scipy_vs_lenapk']:.1e} | {r['rr_vs_lenapk']:.1e} | {r['lenapk_vs_tight']:.1e} | "
        f"{r['scipy_vs_tight']:.1e} | {r['rr_vs_tight']:.1e} |"
        for r in res["accuracy"]
    ]
    sub = res["cohort"]["subsample_err_vs_tight"]
    subt = ["| solver | max relative error of the final state |", "|---|---:|"]
    subt += [f"| {k} | {v:.1e} |" for k, v in sub.items()]
    tight = res["accuracy"][0]["tight_lenapk_vs_tight_rr"]
    return (
        f"Typical patient, day 672, maximum relative difference over the {res['pd_states']} PD states.  The tight "
        f"reference is lenapk at rtol 1e-11 / atol 1e-13; it agrees with libroadrunner at rtol 1e-11 to {tight:.0e}, "
        "so the peers implement the same equations.\n\n"
        + "\n".join(acc)
        + f"\n\nCohort subsample ({res['cohort']['rr_subsample']} patients) against the tight reference:\n\n"
        + "\n".join(subt)
    )


def profile_section(res: dict) -> str:
    prof, floor = res["profile"], res["flop_floor"]
    lines = [
        "| case | accepted + rejected steps/day | one RHS evaluation | one step | RHS share of the time |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {k} | {v['accepted_per_day']:.2f} + {v['rejected_per_day']:.2f} | {v['rhs_eval_s'] * 1e6:.2f} us | "
        f"{v['per_step_s'] * 1e6:.1f} us | {100 * v['rhs_share']:.0f} % |"
        for k, v in prof.items()
    ]
    one = prof["n=1"]
    fused = (
        "  Timed alone (`rhs_eval_time`, a loop of evaluations from the baseline state) the RHS takes longer "
        "than the whole step, inside which XLA fuses it with the stage combinations: at n=1 the split is not a "
        "share."
        if one["rhs_share"] > 1.0
        else ""
    )
    return (
        "\n".join(lines)
        + "\n\n"
        + f"- **Where one patient's time goes.**  A Tsit5 step costs {one['per_step_s'] * 1e6:.1f} us, of which "
        f"the 6 RHS evaluations take {6 * one['rhs_eval_s'] * 1e6:.1f} us ({100 * one['rhs_share']:.0f} %).{fused}  XLA CPU "
        "runs a while loop as a sequence of small kernels (thunks) dispatched one by one at every iteration; "
        "before lenapk's tuning flags set XLA's small-while-loop threshold "
        "(`xla_cpu_small_while_loop_byte_threshold`, so that every loop of a solve is compiled into one "
        "function) a step cost 74 us, 89 % of it outside the RHS, and one patient took 0.26x libroadrunner's "
        "CPU time (HISTORY.md, 2026-12-03).  One solve over the whole horizon (doses as `jump_ts`) was tried "
        "then: restarting the step after each dose it takes the same steps as the day loop; without the "
        "restart it takes 6,666 + 2,685 rejected steps and misses the tolerance (2.3e-3 vs the tight "
        "reference).  So it was not adopted.\n"
        "- **The clock of a batch.**  Just after a dose the drug effect is a smooth function of the log of the "
        "time since the dose, and a controller working in time grows the step by a fixed factor per step: "
        "7-8 of a day's 19 shared steps went to the first hour.  Integrated in a clock that is logarithmic "
        "from 3 min and linear from 1.5 h (steps of at most 3 h), a batch of 64 takes 15 shared steps a day "
        "and 15 % less CPU (HISTORY.md, eighth session).  One patient alone stays in time: the clock's "
        "exponential and logarithm at every evaluation cost more than the steps it saves.\n"
        f"- **FLOP floor.**  One evaluation of the vector field for one patient is {floor['rhs_flops']:.0f} "
        f"floating-point operations and {floor['rhs_transcendentals']:.0f} transcendentals (XLA's cost "
        f"analysis); a Tsit5 step is 6 of them plus the Runge-Kutta combinations: {floor['step_flops']:.0f} + "
        f"{floor['step_transcendentals']:.0f} (`step_cost` in run.py).  At the batch's "
        f"{floor['steps_per_patient']:.0f} steps per patient that is {floor['flops_per_patient'] / 1e6:.1f} MFLOP "
        f"(counting a transcendental as {floor['flops_per_transcendental']} FLOP).  The cores' double-precision "
        f"peak is {floor['peak_gflops']:.0f} GFLOP/s ({floor['peak_note']}), so the floor is "
        f"{floor['floor_s'] * 1e3:.2f} ms per patient on {floor['cores']} cores; the best batch row takes "
        f"{floor['best_batch_cpu_s'] * 1e3:.1f} ms of CPU per patient, {floor['best_batch_cpu_s'] / (floor['floor_s'] * floor['cores']):.0f}x "
        "the floor's CPU time.  In the batch the RHS is "
        + ", ".join(f"{100 * v['rhs_share']:.0f} % at {k}" for k, v in prof.items() if k != "n=1")
        + " of a step; the rest is the Runge-Kutta stage combinations, the error norm and the controller "
        f"over arrays of n x {res['pd_states']} states, and the shared step takes more steps per day than one "
        "patient alone." + rhs_alone_bullet(res)
    )


def rhs_alone_bullet(res: dict) -> str:
    """What the batch's right-hand-side evaluations alone cost, against the CPU time per patient
    the 50x target allows (run.py's ``rhs_alone``, timed in the one-core worker beside
    libroadrunner; absent when that worker failed and from results of older runs)."""
    alone = res.get("rhs_alone")
    if not alone:
        return ""
    budget = res["peers"]["libroadrunner_pinned"]["per_cohort_patient"]["cpu"] / 50.0
    first = next(iter(alone))
    cases = "; ".join(
        f"{k}: {v['evals_per_patient']:,.0f} evaluations, {v['cpu_per_patient_s'] * 1e3:.2f} ms, "
        f"{100 * v['cpu_per_patient_s'] / budget:.0f} % of the budget"
        for k, v in alone.items()
    )
    share = min(v["cpu_per_patient_s"] for v in alone.values()) / budget
    verdict = (
        "In this run no solver taking these steps could reach 50x, even one whose own work between evaluations "
        "cost nothing"
        if share >= 1.0
        else "In this run a solver taking these steps could reach 50x only if its own work between evaluations "
        f"cost at most {100 * (1 / share - 1):.0f} % of the evaluations' time"
    )
    return (
        "\n- **The right-hand side alone.**  One evaluation of the vector field costs "
        f"{alone[first]['eval_cpu_s'] * 1e9:.0f} ns of CPU per patient (a chunk of {res['rhs_ops']['width']} in a "
        "loop of evaluations, the loop's own update subtracted, timed in the one-core worker beside libroadrunner).  "
        f"The 50x target allows {budget * 1e3:.2f} ms of CPU per patient there.  A patient's evaluations (6 per "
        f"step attempt and 1 more per day, at the profile's steps at rtol 1e-6) take, at {cases}.  {verdict}; "
        "diffrax's Runge-Kutta step takes about as long as the evaluations (the RHS share above).  Closing the gap "
        "would take fewer evaluations per patient-day (no solver order, controller or clock tried took fewer at "
        "the tolerance) or a cheaper right-hand side." + rhs_ops_text(res.get("rhs_ops"))
    )


def rhs_ops_text(ops: dict | None) -> str:
    """The right-hand side's costly operations and their cost per element (run.py's ``rhs_ops``)."""
    if not ops:
        return ""
    names = {"fastmath.log": "`lenapk.fastmath.log`", "div": "divisions"}
    counts, per = ops["counts"], ops["per_element_s"]
    timed = [k for k in per if k != "multiply-add"]
    costly = ", ".join(f"{counts[k]} {names.get(k, k)} ({per[k] * 1e9:.2f} ns)" for k in timed)
    cheap = sum(n for k, n in counts.items() if k not in per and k not in ops.get("other", {}) and k != "jit")
    other = ops.get("other") or {}
    untimed = f"; not timed: {', '.join(f'{n} {k}' for k, n in other.items())}" if other else ""
    return (
        f"  Per patient-evaluation the vector field computes {costly}, each at its CPU time per element "
        f"timed alone at a width of {ops['width']} (the loop's own update subtracted), plus {cheap} "
        f"multiplications, additions, comparisons and data movements ({per['multiply-add'] * 1e9:.2f} ns for a "
        f"multiply-add so timed){untimed}: the costly operations alone take {ops['costly_s'] * 1e9:.0f} ns "
        "(operations on the parameters alone are left out: XLA computes them once per solve)."
    )


def _pinned_vs_free(scale: dict):
    """(pinned, free): one-device cohort_scale runs of the same n on one core and on every core."""
    one = [r for r in scale.values() if r["devices"] == 1 and r["tuned"]]
    for pinned in (r for r in one if r["cores"] == 1):
        for free in (r for r in one if r["cores"] > 1 and r["n"] == pinned["n"]):
            return pinned, free
    return None


def scaling_section(res: dict, scale: dict) -> str:
    two, prof = res.get("two_devices"), res["profile"]
    if not two or "shard_map" not in two:
        return "The 2-device subprocess did not report."
    n = two["n"]
    one_dev, sm = two["one_device"], two["shard_map"]
    full, half = prof[f"n={n} batched"], prof[f"n={n // 2} batched"]
    steps = lambda v: v["accepted_per_day"] + v["rejected_per_day"]  # noqa: E731
    per_ps = lambda v, k: 1e6 * v["per_step_s"] / k  # noqa: E731  (us per patient-step)
    text = (
        f"On 2 devices with `shard_map` (each device solves its half as its own ODE) the {n}-patient batch "
        f"takes {sm['run_s']:.1f} s against {one_dev['run_s']:.1f} s on one device: "
        f"{one_dev['run_s'] / sm['run_s']:.2f}x in wall time with 2x the cores, and "
        f"{one_dev['cpu_s']:.1f} s of CPU against {sm['cpu_s']:.1f} s.  What the measurements say:\n\n"
        f"- **Not fewer steps.**  {steps(full):.2f} steps/day for {n} patients in one ODE, {steps(half):.2f} "
        f"for {n // 2}: the shared step costs about as much at either size.\n"
        f"- **Smaller batches are cheaper per patient.**  One step costs {per_ps(full, n):.2f} us per patient "
        f"at n={n} and {per_ps(half, n // 2):.2f} us at n={n // 2} (the arrays of a step stay in cache).\n"
    )
    pair = _pinned_vs_free(scale)
    if pair:
        pinned, free = pair
        text += (
            f"- **One device on two cores.**  `cohort_scale.py` with one device: {pinned['wall_s']:.0f} s wall "
            f"({pinned['cpu_s']:.0f} s CPU) pinned to one core, {free['wall_s']:.0f} s wall ({free['cpu_s']:.0f} s CPU) "
            f"free to use both (n={pinned['n']:,}).  Before the small-while-loop threshold it was 45 s against 89 s "
            "(97 s CPU; HISTORY.md, 2026-12-03): XLA CPU handed the loop's small operations between threads, each "
            "hand-off costing more than the operation.  With every loop of a solve compiled into one function, "
            "one device keeps to one core.\n"
        )
    predicted = 2 * per_ps(full, n) / per_ps(half, n // 2)
    text += (
        f"\nSo the 2-device speed-up is two cores times the cheaper per-patient step of a half-size batch: "
        f"2 x {per_ps(full, n):.2f} / {per_ps(half, n // 2):.2f} = {predicted:.2f}x expected, "
        f"{one_dev['run_s'] / sm['run_s']:.2f}x measured.  `NamedSharding` (one ODE across both devices, one global "
        f"step) took {two['named_sharding']['run_s']:.1f} s.\n\n" + threads_note(res) + "\n\n" + same_settings_note(res)
    )
    return text


def threads_note(res: dict) -> str:
    one = res["one_patient"]
    if not one.get("one_core"):
        return ""
    pinned, free = one["one_core"], one
    ms = lambda t: f"{t['wall'] * 1e3:.0f} ms (CPU {t['cpu'] * 1e3:.0f} ms)"  # noqa: E731
    return (
        f"**Threads.**  One patient's `simulate` takes {ms(pinned['simulate'])} in a process pinned to one core, "
        f"against {ms(free['simulate'])} free to use both (one device); `solve_days_jit` {ms(pinned['solve_days_jit'])} "
        f"against {ms(free['solve_days_jit'])}.  JAX offers no setting for the size of its CPU thread pool, so "
        "lenapk does not pin threads itself; for one-patient work, pinning the process (`taskset -c 0`) is the "
        "user's lever.  Why a free process is slower for one patient, but not for a cohort on one device "
        "(above), is not established."
    )


def same_settings_note(res: dict) -> str:
    co = res["cohort"]
    a, b = co["batched"], co["batched_constants"]
    return (
        f"**Two timings of the same settings.**  An earlier page showed 10.1 and 8.0 ms per patient for one "
        "batched ODE timed by two paths (parameters as arguments of `solve_days_jit`, or folded into a "
        "`jax.jit` as constants).  Both paths do the same work; the earlier rows were single unrepeated "
        f"timings on a shared machine.  In this run, best of two: {1e3 * a['wall'] / co['n']:.1f} and "
        f"{1e3 * b['wall'] / co['n']:.1f} ms per patient (CPU {1e3 * a['cpu'] / co['n']:.1f} and "
        f"{1e3 * b['cpu'] / co['n']:.1f})."
    )


def estimation_section(est: dict, est_cll: dict | None = None) -> str:
    """The population-estimation table from estimation.json (``python benchmarks/estimation.py``)."""
    if not est:
        return "Not run yet: `python benchmarks/estimation.py` writes `estimation.json`."
    lines = [
        "| data set | subjects / obs | OFV (lenapk) | OFV (published) | converged | iterations | first fit, "
        "wall / CPU | warm fit, wall / CPU | per iteration (warm) | covariance (FD), wall | covariance (AD), wall |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in est.items():
        pub = r["published"].get("ofv")
        ad = f"{r['covariance_ad_wall_s']:.1f} s" if "covariance_ad_wall_s" in r else ""
        per_iteration = r["warm_fit_wall_s"] / max(r["iterations"], 1)
        lines.append(
            f"| {name} | {r['n_subjects']} / {r['n_observations']} | {r['ofv']:.4f} | "
            f"{'' if pub is None else f'{pub:.4f}'} | {'yes' if r['converged'] else '**no**'} | {r['iterations']} | "
            f"{r['first_fit_wall_s']:.1f} s / {r['first_fit_cpu_s']:.1f} s | "
            f"{r['warm_fit_wall_s']:.2f} s / {r['warm_fit_cpu_s']:.2f} s | {1e3 * per_iteration:.0f} ms | "
            f"{r['covariance_fd_wall_s']:.2f} s | {ad} |"
        )
    return "\n".join(lines) + ESTIMATION_NOTE + scaling_line(est) + cll_line(est_cll)


def cll_line(cll: dict) -> str:
    """The CLL model's FOCE-I evaluation cost from estimation_cll.json (``estimation_cll.py``)."""
    if not cll:
        return ""
    hours = cll["extrapolated_fit_wall_s_500_subjects_30_iterations"] / 3600
    return (
        f"\nThe CLL model (ODE through `model_structure`, ALC data, 63 doses and 4 samples per subject; "
        f"`python benchmarks/estimation_cll.py`): one FOCE-I objective-and-gradient evaluation of "
        f"{cll['n_subjects']} subjects takes {cll['warm_call_wall_s']:.1f} s wall / {cll['warm_call_cpu_s']:.1f} s CPU "
        f"warm ({cll['warm_call_wall_s_per_subject']:.2f} s per subject) and {cll['first_call_wall_s']:.0f} s with "
        f"compilation.  A 500-subject fit of about 30 such evaluations would take about {hours:.0f} h here, so "
        "none was run.\n"
    )


def scaling_line(est: dict) -> str:
    """100 -> 1,000 subjects of the two-compartment case: time per outer iteration."""
    small, big = est.get("two_cmt_100"), est.get("two_cmt_1000")
    if not (small and big):
        return ""
    per = [r["warm_fit_wall_s"] / max(r["iterations"], 1) for r in (small, big)]
    return (
        f"\nScaling, two-compartment case: 100 -> 1,000 subjects multiplies the warm time per outer iteration "
        f"by {per[1] / per[0]:.1f} ({1e3 * per[0]:.0f} -> {1e3 * per[1]:.0f} ms) and the warm fit by "
        f"{big['warm_fit_wall_s'] / small['warm_fit_wall_s']:.1f} ({small['iterations']} and {big['iterations']} "
        "iterations).  An iteration is one objective-and-gradient evaluation (all subjects' EBE searches, "
        "forward-mode through them) plus the line search's objective values.\n"
    )


def coverage_section(cov: dict) -> str:
    """The parameter-recovery study from coverage.json (``python benchmarks/coverage.py``)."""
    if not cov:
        return "Not run yet: `python benchmarks/coverage.py` writes `coverage.json`."
    lines = [
        f"{cov['n_replicates']} data sets of {cov['n_subjects']} subjects simulated from a known two-compartment "
        f"oral model with weight on CL and V (`python benchmarks/coverage.py`; design in its docstring), each "
        f"fitted by FOCE-I with the sandwich covariance step.  Usable fits (converged, covariance step "
        f"successful): {cov['n_usable']} (not converged {cov['n_not_converged']}, covariance failed "
        f"{cov['n_covariance_failed']}).  Median fit {cov['median_fit_wall_s']:.1f} s wall, "
        f"{cov['median_fit_cpu_s']:.1f} s CPU, covariance step included.",
        "",
        "| parameter | truth | mean estimate | bias | SD of estimates | mean SE | 95% CI coverage | binomial 95% CI |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, p in cov["parameters"].items():
        lo, hi = p["coverage_ci95_percent"]
        lines.append(
            f"| {name} | {p['truth']:.4g} | {p['mean_estimate']:.4g} | {p['bias_percent']:+.1f}% | "
            f"{p['sd_estimates']:.3g} | {p['mean_se']:.3g} | {p['coverage_percent']:.1f}% | {lo:.1f}-{hi:.1f}% |"
        )
    return "\n".join(lines) + "\n"


ESTIMATION_NOTE = """

FOCE-I on each data set, one process (`python benchmarks/estimation.py`, run after `run.py` on the same
machine).  The first fit includes compiling the objective, its gradient and the optimiser step; the warm
fit is a second `estimate` of the same model, which reuses them (the optimisation itself).  The
covariance step is timed apart, with R by central differences of the exact gradient (FD) and, for the
first data set, by automatic differentiation (AD, which compiles the second derivatives).  Peers, quoted
and **not** measured here (no NONMEM or R on this machine): on Bolus_1CPT NONMEM 7.4.3 took 21 s to
estimate and 4 s for the covariance step on unreported hardware, and nlmixr2 2.1.4 0.46 s of optimisation
(nlmixr2test `runODE001.res` and its FOCE-I run).  `docs/estimation.md` compares the estimates.
"""


def calibration_section(cal: dict, bound: dict, cost: dict | None = None) -> str:
    """The joint calibration's cost (calibration.json, ``examples/calibrate.py``), one evaluation's
    cost by study (calibration_cost.json, ``benchmarks/calibration_cost.py``) and the finite-burden
    check (cohort_bound.json, ``benchmarks/cohort_bound.py``)."""
    if not cal:
        text = "Not run yet: `python examples/calibrate.py` writes `calibration.json`."
    else:
        verdict = "within" if cal["wall_s"] <= 600 else "**over**"
        text = (
            f"`{cal['command']}`: {len(cal['studies'])} studies of {cal['patients_per_study']} virtual patients, "
            f"{cal['free_parameters']} free parameters, {cal['iterations']} iterations ({cal['evaluations']} objective "
            f"evaluations, {'converged' if cal['converged'] else 'not converged'}): "
            f"{fmt_t(cal['wall_s'])} wall, {fmt_t(cal['cpu_s'])} CPU on {cal['cores']} cores"
            + (f" ({cal['cpu']}, {cal['date']})" if "cpu" in cal else "")
            + f", {verdict} the 10-minute target."
        )
        if "phases_s" in cal:
            ph = cal["phases_s"]
            text += (
                f"  Of the fit's {fmt_t(ph['total_s'])}: first evaluation (compiling) "
                f"{fmt_t(ph['first_evaluation_s'])}, optimisation to the end {fmt_t(ph['optimisation_s'])} (first "
                f"evaluation included), Hessian, tables and checks {fmt_t(ph['hessian_s'])}; the rest of the wall "
                "time is loading.  "
                f"In the fit the dose rules were run {cal['dose_refreshes']} times (the first at the start)"
                + (
                    f"; {cal['dose_refreshes_kept']} of these changed at most {100 * cal['dose_tol']:g}% of "
                    "patient-days (the fit's `dose_tol`) and kept the frozen doses"
                    if "dose_refreshes_kept" in cal and "dose_tol" in cal
                    else ""
                )
                + (
                    f"; {cal['dose_refreshes_cycle']} gave back doses replaced before (a dose cycle) and kept the "
                    "frozen ones"
                    if cal.get("dose_refreshes_cycle")
                    else ""
                )
                + ".  At the end they changed "
                f"{100 * cal['dose_changed_at_end']:.2g}% of patient-days."
            )
        if cal.get("note"):
            text += f"  ({cal['note']}.)"
    if cost:
        parts = ", ".join(
            f"{r['study']} {r['wall_s']:.2f} s" for r in sorted(cost["studies"], key=lambda r: -r["wall_s"])
        )
        text += (
            f"\n\nOne objective-and-gradient evaluation (`python benchmarks/calibration_cost.py`, {cost['n_patients']} "
            f"patients per study, warm): {cost['total_wall_s']:.1f} s wall in all; {parts}."
        )
    if bound:
        text += (
            f"\n\nFinite burden (`python benchmarks/cohort_bound.py`): {bound['patients']} relapsed patients on "
            f"{bound['regimen']} ({bound['days']} days, every planned dose): maximum ALC "
            f"{bound['max_alc_x10e9_per_l']:.0f} x10^9/L (carrying capacity {bound['carrying_capacity_x10e9_per_l']:.0f}), "
            f"{bound['non_finite_values']} non-finite values, {fmt_t(bound['wall_s'])} wall."
        )
    return text


#: Double-precision vector rates (TFLOP/s, vendor datasheets) of GPUs the page may name.
FP64_TFLOPS = {"NVIDIA H200": 34, "NVIDIA H100 80GB HBM3": 34}


def _gpu_rows(runs: list) -> list[str]:
    lines = [
        "| patients | block size | wall | ms/patient | CPU (host) | solve | endpoints | peak device memory | infinite values |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        peak = "-" if r.get("peak_device_gib") is None else f"{r['peak_device_gib']:.1f} GiB"
        lines.append(
            f"| {r['n']:,} | {r['block_size']:,} | {fmt_t(r['wall_s'])} | {r['ms_per_patient']:.3f} | "
            f"{fmt_t(r['cpu_s'])} | {fmt_t(r['solve_s'])} | {fmt_t(r['endpoints_s'])} | {peak} | {r['infinite']} |"
        )
    return lines


def gpu_section(gpu: dict, sweep: dict | None = None, floor: dict | None = None) -> str:
    """From cohort_gpu.json (``python benchmarks/cohort_gpu.py`` on a lent GPU) and the block-size
    sweep of cohort_gpu_sweep.json."""
    if not gpu.get("runs"):
        return (
            "No GPU was lent to the session that produced this page, so there are no GPU numbers yet.\n"
            "`python benchmarks/cohort_gpu.py` is the run to make on one."
        )
    m = gpu["machine"]
    lines = [
        f"`{gpu['command']}` on one {m['device']} ({m.get('device_memory_limit_gib', '?')} GiB usable by JAX; "
        f"jax {m['jax']}, {m['host_cores']} host cores): regimen {gpu['regimen']}, {gpu['cycles']} cycles, no dose "
        "rules, endpoints included, one run each after a warm-up block that compiles; "
        "`lenapk.cohort` keeps 3 chunks (one block each) in flight, so the host's endpoint tables overlap "
        "the device's solves.  Solve = `solve_chunk` (drawing the block, the solve on the device and "
        "the copy back); endpoints = the host's per-patient tables (NumPy); both are summed over the "
        "chunks, so with several in flight they add up to more than the wall time.  Peak memory is "
        "the device's, cumulative over the process.",
        "",
        *_gpu_rows(gpu["runs"]),
    ]
    big = max(gpu["runs"], key=lambda r: r["n"])
    one = [r for r in gpu["runs"] if r["n"] <= r["block_size"] == big["block_size"]]
    if one and big["n"] > big["block_size"]:
        per_block = one[0]["solve_s"]
        blocks = -(-big["n"] // big["block_size"])
        lines += [
            "",
            f"**{big['n']:,} patients x {gpu['cycles']} cycles: {fmt_t(big['wall_s'])}, {big['wall_s'] / 60:.1f}x "
            f"the 60 s goal.**  One block of {one[0]['block_size']:,} patients takes {fmt_t(per_block)} to solve "
            f"alone, so the {blocks} blocks need at least {fmt_t(blocks * per_block)} of device time; the rest "
            "is the first chunk's endpoint tables before the others start and the host tables, which slow "
            "each other when several run at once.",
        ]
        if floor:
            rate = one[0]["block_size"] * floor["flops_per_patient"] / per_block / 1e12
            lines[-1] += (
                f"  At the CPU batch's {floor['flops_per_patient'] / 1e6:.0f} MFLOP per patient (Profile and FLOP "
                f"floor, above; the GPU block's own step count was not read), the solve runs at about "
                f"{rate:.1f} TFLOP/s"
                + (
                    f", {100 * rate / FP64_TFLOPS[m['device']]:.1g}% of the {m['device']}'s double-precision rate "
                    f"(about {FP64_TFLOPS[m['device']]} TFLOP/s without tensor cores, vendor datasheet): arithmetic "
                    "is not the bound"
                    if m["device"] in FP64_TFLOPS
                    else ""
                )
                + ".  Each step's memory traffic over "
                "the block's state arrays (n x 18 in that run's model) and its kernel launches are the likely ones; no profile "
                "was taken in the 15 minutes of device time."
            )
    warm = ", ".join(f"block {w['block_size']:,}: {fmt_t(w['wall_s'])}" for w in gpu.get("warmups", []))
    if warm:
        lines += ["", f"Warm-up (one block, compiling included): {warm}."]
    if sweep and sweep.get("runs"):
        lines += [
            "",
            f"Block size (`{sweep['command']}`, an earlier run on the same kind of machine, with chunks "
            f"one at a time): fastest at {min(sweep['runs'], key=lambda r: r['ms_per_patient'])['block_size']:,} "
            "patients per block.",
            "",
            *_gpu_rows(sweep["runs"]),
        ]
    chk = gpu.get("check")
    if chk:
        lines += [
            "",
            f"GPU against CPU (the same {chk['n']} patients, block {chk['block_size']}, the CPU backend in a "
            f"subprocess): largest relative difference over {chk['columns']} endpoint columns "
            f"{chk['max_rel_diff']:.2g} (`{chk['worst_column']}`); same missing values: "
            f"{'yes' if chk['same_nan_pattern'] else 'no'}.",
        ]
    return "\n".join(lines)


def page(
    res: dict,
    scale: dict,
    est: dict | None = None,
    cov: dict | None = None,
    est_cll: dict | None = None,
    cal: dict | None = None,
    bound: dict | None = None,
    cost: dict | None = None,
    command: dict | None = None,
    gpu: dict | None = None,
    gpu_sweep: dict | None = None,
) -> str:
    flags = res.get("flags", "")
    return f"""# Benchmarks: lenapk vs scipy (LSODA) vs libroadrunner (CVODE)

<!-- generated by `python benchmarks/results_page.py` from results_table.json (`python benchmarks/run.py{flags}`)
     and cohort_scale.json (`python benchmarks/cohort_scale.py`): edit the script, not this page -->

One current page; earlier runs and findings are in [HISTORY.md](HISTORY.md).

## Machine

{machine(res["machine"], res["peers"]["libroadrunner"]["one_patient"]["cpu"])}

## Method

{METHOD.format(pd_states=res["pd_states"])}
## Per patient, in one run

{per_patient_table(res)}

## Targets

{targets_table(res, scale, command)}

## lenapk.cohort with no setup

{cohort_scale_section(scale)}

`import lenapk` gives JAX one CPU device per core before JAX starts (`LENAPK_CPU_SETUP=0` turns
that off); blocks of patients then run one per device.  Compared here: one device (JAX's default,
with and without the tuning flags) against one device per core.  A process pool of workers was not
measured: each worker would pay its own start-up and compile (the first-call column) before its
first block, where one device per core in one process compiles once.

## Two devices against one

{scaling_section(res, scale)}

## Agreement and accuracy

{accuracy_tables(res)}

## Profile and FLOP floor

{profile_section(res)}

## Population estimation (FOCE-I) on the classic data sets

{estimation_section(est or dict(), est_cll or dict())}

## Parameter recovery: coverage of FOCE-I's 95% intervals

{coverage_section(cov or dict())}

## Calibration of the flagship model

{calibration_section(cal or dict(), bound or dict(), cost)}

## GPU

{gpu_section(gpu or dict(), gpu_sweep, res.get("flop_floor"))}
"""


def main() -> None:
    res = json.loads((HERE / "results_table.json").read_text())
    scale_file = HERE / "cohort_scale.json"
    scale = json.loads(scale_file.read_text()) if scale_file.exists() else {}
    est_file = HERE / "estimation.json"
    est = json.loads(est_file.read_text()) if est_file.exists() else {}
    cov_file = HERE / "coverage.json"
    cov = json.loads(cov_file.read_text()) if cov_file.exists() else {}
    cll_file = HERE / "estimation_cll.json"
    est_cll = json.loads(cll_file.read_text()) if cll_file.exists() else {}
    extra = {}
    for key, name in (
        ("cal", "calibration.json"),
        ("bound", "cohort_bound.json"),
        ("cost", "calibration_cost.json"),
        ("command", "cohort_command.json"),
        ("gpu", "cohort_gpu.json"),
        ("gpu_sweep", "cohort_gpu_sweep.json"),
    ):
        f = HERE / name
        extra[key] = json.loads(f.read_text()) if f.exists() else {}
    (HERE / "RESULTS.md").write_text(page(res, scale, est, cov, est_cll, **extra))
    print(f"written {HERE / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
