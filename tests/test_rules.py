"""Dose-modification rules inside the simulation (lenapk.rules).

Kept fast: one short regimen (4 cycles), one compiled single-patient solve (thresholds are
dynamic JAX leaves, so every rule variant below with the same dose levels, observables and
visit-schedule shape reuses it), one vmapped and one batched solve.  Rule logic is also checked
without the ODE on synthetic lab sequences (a cheap ``lax.scan`` over ``rules.step``), against
an independent plain-Python replay of the rule's documented behaviour.
"""

from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lenapk
from lenapk import LenalidomideCLL, Regimen, simulate
from lenapk._core import solve_days
from lenapk.models.cll import label_rule, trial_rule
from lenapk.rules import DoseModificationRules, LabVisits

LEVELS = (2.5, 5.0, 10.0, 15.0, 20.0, 25.0)
N_CYCLES = 4
# the label rule's thresholds (grade 3: ANC < 1.0, platelets < 50 x10^9/L), written out here
G3 = {"anc": 1.0, "platelets": 50.0}
LABEL_VISITS = LabVisits.schedule([(0, 56, 7), (56, None, 28)])  # weekly in cycles 1-2, then day 1


def label_like(**changes):
    """The label rule's settings written out, with changes (the same static fields and tree
    structure as ``label_rule()``, so simulate reuses its compiled solve)."""
    settings = dict(
        hold_below=G3,
        resume_at=G3,
        dose_levels=LEVELS,
        visits=LABEL_VISITS,
        min_dose_mg=2.5,
        cycle_days=28,
        label="label rule",
    )
    return DoseModificationRules(**{**settings, **changes})


# ------------------------------------------------------------------ plain-Python replay of the rule
def replay(rule: DoseModificationRules, planned, labs: dict, visit_days):
    """The rule, day by day, in plain Python: expected dose, held, cap, reductions, stopped.

    ``labs`` maps observable names to the pre-dose values of each day (only visit days are
    read); the thresholds are read from the rule's fields as plain numbers."""
    levels = list(rule.dose_levels)
    n = len(levels)
    f = lambda d: {k: float(np.asarray(v)) for k, v in d.items()}  # noqa: E731
    hold = f(rule.hold_below)
    resume = f(rule.resume_at) if rule.resume_at is not None else hold
    block = f(rule.escalation_blocked_below) if rule.escalation_blocked_below is not None else None
    stop_rise = f(rule.stop_above) if rule.stop_above is not None else None
    esc_fall = f(rule.escalate_only_below) if rule.escalate_only_below is not None else None
    min_dose = levels[0] if rule.min_dose_mg is None else rule.min_dose_mg  # default: the lowest level
    lowest_allowed = min(i for i, x in enumerate(levels) if x >= min_dose - 1e-9)
    visit_days = set(int(d) for d in visit_days)

    held = stopped = tox = False
    cap = esc = n - 1
    last_given = None  # level index of the last dose given since the last reduction
    prev_allowed = None
    reductions = 0
    base = None  # the relative-rule observables at the first visit
    progressed = responded = frozen = False
    out = {k: [] for k in ("dose", "held", "cap", "reductions", "stopped", "visit", "progressed", "responded")}
    for d, p in enumerate(planned):
        p = float(p)
        visit = d in visit_days
        low = any(labs[k][d] < t for k, t in hold.items())
        ok = all(labs[k][d] >= t for k, t in resume.items())
        blocked = visit and block is not None and any(labs[k][d] < t for k, t in block.items())
        if block is not None and d > 0 and d % rule.cycle_days == 0:
            if tox or blocked:
                if prev_allowed is not None and prev_allowed >= 0:
                    esc = min(esc, prev_allowed)
            elif not responded:
                esc = min(esc + 1, n - 1)
            tox = False
        else:
            tox = tox or blocked
        if visit and (stop_rise or esc_fall):
            if base is None:
                base = {k: labs[k][d] for k in {**(stop_rise or {}), **(esc_fall or {})}}
            else:
                if stop_rise and not stopped and any(labs[k][d] >= r * base[k] for k, r in stop_rise.items()):
                    stopped = progressed = True
                    held = False
                if esc_fall and any(labs[k][d] <= r * base[k] for k, r in esc_fall.items()):
                    responded = True
        if responded and not frozen and prev_allowed is not None and prev_allowed >= 0:
            esc, frozen = min(esc, prev_allowed), True  # from the response on: no dose above the current level
        if visit and not stopped:
            if not held and low:
                held = True
                if last_given is not None and min(cap, last_given - 1) < cap:
                    target = min(cap, last_given - 1)
                    too_many = rule.max_reductions is not None and reductions + 1 > rule.max_reductions
                    if target < lowest_allowed or too_many:
                        stopped, held = True, False
                    else:
                        cap, reductions, last_given = target, reductions + 1, None
            elif held and ok:
                held = False
        on = [i for i, x in enumerate(levels) if x <= p + 1e-9]
        pidx = on[-1] if on else -1
        if responded and not frozen and pidx >= 0:
            esc, frozen = min(esc, pidx), True
        allowed = min(pidx, esc)
        eff = min(allowed, cap)
        if p > 0 and not held and not stopped:
            dose = p if pidx < 0 else levels[eff]
            last_given = eff
        else:
            dose = 0.0
        if p > 0:
            prev_allowed = allowed
        out["dose"].append(dose)
        out["held"].append(int(held))
        out["cap"].append(0.0 if stopped else levels[min(cap, esc)])
        out["reductions"].append(reductions)
        out["stopped"].append(int(stopped))
        out["visit"].append(int(visit))
        out["progressed"].append(int(progressed))
        out["responded"].append(int(responded))
    return {k: np.asarray(v) for k, v in out.items()}


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def model():
    return LenalidomideCLL()


@pytest.fixture(scope="module")
def params(model):
    # an Emax neutrophil effect (Hill 1), for which the vmap test's potencies were chosen
    return model.default_params().replace(hill_n=1.0)


@pytest.fixture(scope="module")
def regimen():
    # days 1-21 of 28, 10 mg escalating +5 mg per cycle up to 20 mg: off days and escalations
    return Regimen.cycles(10.0, n_cycles=N_CYCLES, days_on=21, escalation_mg=5.0, escalate_every_days=28, max_mg=20.0)


def _check_against_replay(rule, regimen, df):
    n_days = regimen.n_days
    planned = np.asarray(regimen.doses)
    labs = {k: df[k].to_numpy()[:n_days] for k in ("anc", "platelets")}
    visit_days = df["day"].to_numpy()[:n_days][df["visit"].to_numpy()[:n_days] == 1]
    np.testing.assert_array_equal(visit_days, rule.lab_visits.days(n_days))
    exp = replay(rule, planned, labs, visit_days)
    np.testing.assert_array_equal(df["dose_mg"].to_numpy()[:n_days], exp["dose"])
    np.testing.assert_array_equal(df["held"].to_numpy()[:n_days], exp["held"])
    np.testing.assert_array_equal(df["dose_cap_mg"].to_numpy()[:n_days], exp["cap"])
    np.testing.assert_array_equal(df["reductions"].to_numpy()[:n_days], exp["reductions"])
    np.testing.assert_array_equal(df["stopped"].to_numpy()[:n_days], exp["stopped"])
    return exp


# ------------------------------------------------------------------ (1) hold / resume one level lower
def test_hold_until_recovery_then_one_level_lower(regimen, params):
    rule = label_rule()
    df = simulate(regimen, params.replace(ec50_n=40.0), rules=rule)
    n_days = regimen.n_days
    planned = np.asarray(regimen.doses)
    dose = df["dose_mg"].to_numpy()[:n_days]
    visits = df.iloc[:n_days][df["visit"].iloc[:n_days] == 1]
    assert list(visits["day"]) == [0, 7, 14, 21, 28, 35, 42, 49, 56, 84]
    low = visits[visits["anc"] < 1.0]
    assert len(low) >= 2, "the potent drug should push visit ANC below 1.0 twice"

    # explicit check of the first hold: no dose from the low visit until a recovered visit,
    # then one level below the level given before the hold
    d_low = int(low["day"].iloc[0])
    later = visits[(visits["day"] > d_low) & (visits["anc"] >= 1.0) & (visits["platelets"] >= 50)]
    d_rec = int(later["day"].iloc[0])
    assert np.all(dose[d_low:d_rec] == 0)
    given_before = dose[:d_low][dose[:d_low] > 0][-1]
    lower = LEVELS[LEVELS.index(given_before) - 1]
    after = dose[d_rec:][planned[d_rec:] > 0]
    assert after[0] == min(lower, planned[d_rec:][planned[d_rec:] > 0][0])
    assert np.all(after <= lower)
    assert df["reductions"].iloc[d_rec] == 1

    # the whole course against the rule replayed in Python on the simulated visit labs
    exp = _check_against_replay(rule, regimen, df)
    assert exp["reductions"][-1] == 2 and exp["stopped"][-1] == 0
    # off days stay zero, the last row (end of the course) carries no rule record
    assert np.all(dose[planned == 0] == 0)
    assert df["visit"].iloc[-1] == 0


@pytest.mark.parametrize(
    "ec50_n, changes",
    [
        (150.0, {}),  # hold on an escalated dose (15 mg), resume at 10 mg on an off day
        (100.0, {"resume_at": {"anc": 3.0, "platelets": 50.0}}),  # hysteresis: the hold spans visits
        (
            250.0,
            {"hold_below": {"anc": 1.0, "platelets": 100.0}, "resume_at": {"anc": 1.0, "platelets": 110.0}},
        ),  # platelet rule
    ],
)
def test_course_matches_replay(regimen, params, ec50_n, changes):
    rule = label_like(**changes)
    # a fixed platelet potency (not the calibrated default), so the platelet rule is exercised
    df = simulate(regimen, params.replace(ec50_n=ec50_n, ec50_p=350.0), rules=rule)
    exp = _check_against_replay(rule, regimen, df)
    assert exp["reductions"][-1] >= 1
    if "resume_at" in changes and changes["resume_at"]["anc"] == 3.0:
        held_visits = df[(df["visit"] == 1) & (df["held"] == 1)]
        assert len(held_visits) >= 2, "the hold should last over at least two visits"
    if "hold_below" in changes:
        visit = df[df["visit"] == 1]
        assert ((visit["platelets"] < 100.0) & (visit["anc"] >= 1.0)).any(), "a hold on platelets alone"


# ------------------------------------------------------------------ (2) vmap == loop == one ODE
def test_vmap_and_batch_equal_single_patients(model, params, regimen):
    rule = label_rule()
    ec50 = np.array([250.0, 150.0, 40.0])
    n = ec50.size
    batched = lenapk.ParameterSet({k: jnp.broadcast_to(v, (n,)) for k, v in params.replace(ec50_n=ec50).values.items()})
    planned = regimen.doses

    singles = [simulate(regimen, params.replace(ec50_n=e), rules=rule) for e in ec50]
    n_days = regimen.n_days
    s_dose = np.stack([s["dose_mg"].to_numpy()[:n_days] for s in singles])
    s_anc = np.stack([s["anc"].to_numpy() for s in singles])
    s_held = np.stack([s["held"].to_numpy()[:n_days] for s in singles])
    # patients differ: no rule action, one reduction, two reductions
    assert [s["reductions"].iloc[n_days - 1] for s in singles] == [0, 1, 2]
    # decisions must not sit on a knife edge between the solves
    is_visit = singles[0]["visit"].to_numpy()[:n_days] == 1
    visit_anc = s_anc[:, :n_days][:, is_visit]
    assert np.min(np.abs(visit_anc - 1.0)) > 1e-3

    vm = jax.jit(jax.vmap(lambda p: solve_days(model, p, planned, None, rule)))(batched)
    np.testing.assert_array_equal(np.asarray(vm.doses), s_dose)
    np.testing.assert_allclose(np.asarray(vm.day_obs["anc"]), s_anc, rtol=1e-10)
    np.testing.assert_array_equal(np.asarray(vm.rule_records["held"]), s_held)

    one = eqx.filter_jit(solve_days)(model, batched, jnp.broadcast_to(planned, (n, n_days)), None, rule)
    assert np.asarray(one.ok).all()
    np.testing.assert_array_equal(np.asarray(one.doses), s_dose)
    # a shared step is another discretisation: each solve is within rtol 1e-6 per step of the
    # exact solution, and the two differ by up to a few 1e-6 over 112 days
    np.testing.assert_allclose(np.asarray(one.day_obs["anc"]), s_anc, rtol=1e-5, atol=1e-9)
    for k in ("visit", "held", "dose_cap_mg", "reductions", "stopped"):
        np.testing.assert_array_equal(np.asarray(one.rule_records[k]), np.asarray(vm.rule_records[k]), err_msg=k)


# ------------------------------------------------------------------ (4) rules that never trigger
def test_zero_thresholds_give_planned_doses(regimen, params):
    never = label_like(hold_below={"anc": 0.0, "platelets": 0.0}, resume_at={"anc": 0.0, "platelets": 0.0})
    potent = params.replace(ec50_n=20.0)
    df = simulate(regimen, potent, rules=never)
    n_days = regimen.n_days
    assert df["anc"].min() < 0.5  # the labs are bad, yet nothing happens
    np.testing.assert_array_equal(df["dose_mg"].to_numpy()[:n_days], np.asarray(regimen.doses))
    assert df["held"].sum() == 0 and df["stopped"].sum() == 0 and df["reductions"].max() == 0
    assert (df["dose_cap_mg"].iloc[:n_days] == 25.0).all()


# ------------------------------------------------------------------ rule logic without the ODE
@eqx.filter_jit
def _run_rules(rule, planned, labs):
    """Scan rule.step over days; planned and each lab of shape (*batch, days)."""
    batch = planned.shape[:-1]
    mv = lambda a: jnp.moveaxis(a, -1, 0)  # noqa: E731

    def body(state, xs):
        day, p, obs = xs
        state, dose, rec = rule.step(state, day, p, obs)
        return state, (dose, rec)

    days = jnp.arange(planned.shape[-1])
    xs = (days, mv(planned), {k: mv(v) for k, v in labs.items()})
    _, (dose, rec) = jax.lax.scan(body, rule.init(batch), xs)
    back = lambda a: jnp.moveaxis(a, 0, -1)  # noqa: E731
    return back(dose), {k: back(v) for k, v in rec.items()}


def _labs(seed, n_days, n=None):
    rng = np.random.default_rng(seed)
    shape = (n_days,) if n is None else (n, n_days)
    anc = np.exp(rng.normal(np.log(1.4), 0.6, shape))
    plt = np.exp(rng.normal(np.log(90.0), 0.5, shape))
    return {"anc": anc, "platelets": plt}


RULE_VARIANTS = {
    # the label rule's thresholds with the default visits (weekly in cycles 1-2, then every 14 days)
    "label": dict(hold_below=G3),
    # escalation control, at most one reduction, nothing below 5 mg, resume with hysteresis
    "strict": dict(
        hold_below=G3,
        escalation_blocked_below=G3,
        max_reductions=1,
        min_dose_mg=5.0,
        resume_at={"anc": 1.5, "platelets": 60.0},
        visits=LABEL_VISITS,
    ),
    # the trial's pattern: hold at grade 4, resume at grade 3, escalation blocked by grade 3
    "grade4": dict(
        hold_below={"anc": 0.5, "platelets": 25.0},
        resume_at=G3,
        escalation_blocked_below=G3,
        visits=LabVisits.schedule([(0, None, 7)]),
    ),
    # one observable only
    "anc only": dict(hold_below={"anc": 1.2}, resume_at={"anc": 1.5}, escalation_blocked_below={"anc": 0.8}),
}


@pytest.mark.parametrize("variant", sorted(RULE_VARIANTS))
def test_rule_logic_matches_replay_on_synthetic_labs(variant):
    rule = DoseModificationRules(dose_levels=LEVELS, **RULE_VARIANTS[variant])
    n_days = 5 * 28
    # escalating plan with off-level (12 mg -> 10, 100 mg -> 25) and below-level (1 mg) doses
    # and off weeks
    day = np.arange(n_days)
    planned = np.minimum(10.0 + 5.0 * (day // 28), 25.0) * (day % 28 < 21)
    planned[3] = 12.0
    planned[5] = 1.0
    planned[60] = 100.0
    labs = _labs(1, n_days, n=12)
    p_b = jnp.broadcast_to(jnp.asarray(planned), labs["anc"].shape)
    jlabs = {k: jnp.asarray(v) for k, v in labs.items()}
    dose, rec = _run_rules(rule, p_b, jlabs)
    visits = rule.lab_visits.days(n_days)
    seen = {"stopped": 0, "reductions": 0}
    for i in range(labs["anc"].shape[0]):
        exp = replay(rule, planned, {k: v[i] for k, v in labs.items()}, visits)
        np.testing.assert_array_equal(np.asarray(dose[i]), exp["dose"], err_msg=f"{variant} patient {i}")
        for k, key in (
            ("held", "held"),
            ("dose_cap_mg", "cap"),
            ("reductions", "reductions"),
            ("stopped", "stopped"),
            ("visit", "visit"),
        ):
            np.testing.assert_array_equal(np.asarray(rec[k][i]), exp[key], err_msg=f"{variant} {k} patient {i}")
        seen["stopped"] += exp["stopped"][-1]
        seen["reductions"] += exp["reductions"][-1] > 0
    assert seen["stopped"] > 0 and seen["reductions"] > 0  # the scenarios exercise the rule
    if variant == "label":
        # batch (n,) == vmap over single patients (batch shape ())
        vd, vrec = jax.vmap(lambda p, lab: _run_rules(rule, p, lab))(p_b, jlabs)
        np.testing.assert_array_equal(np.asarray(vd), np.asarray(dose))
        np.testing.assert_array_equal(np.asarray(vrec["held"]), np.asarray(rec["held"]))


def test_hand_checked_scenario():
    """Visits every day; levels 5/10/15; planned 15 mg daily."""
    rule = DoseModificationRules(
        hold_below=G3,
        dose_levels=(5.0, 10.0, 15.0),
        visits=LabVisits.schedule([(0, None, 1)]),
        min_dose_mg=5.0,
    )
    ok, low = 2.0, 0.5
    anc = np.array([ok, ok, low, low, ok, ok, low, ok, ok, ok, low, ok])
    plt = np.full(anc.shape, 100.0)
    planned = np.array([15.0] * 9 + [0.0] + [15.0] * 2)
    labs = {"anc": jnp.asarray(anc), "platelets": jnp.asarray(plt)}
    dose, rec = _run_rules(rule, jnp.asarray(planned), labs)
    #               0   1   2  3  4   5   6  7  8  9  10 11
    expected = [15, 15, 0, 0, 10, 10, 0, 5, 5, 0, 0, 0]
    np.testing.assert_array_equal(np.asarray(dose), expected)
    np.testing.assert_array_equal(np.asarray(rec["held"]), [0, 0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(np.asarray(rec["reductions"]), [0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2])
    # a hold at the lowest level (5 mg) would need a reduction below min_dose_mg: stop on day 10
    np.testing.assert_array_equal(np.asarray(rec["stopped"]), [0] * 10 + [1, 1])
    np.testing.assert_array_equal(np.asarray(rec["dose_cap_mg"]), [15, 15, 10, 10, 10, 10, 5, 5, 5, 5, 0, 0])


def test_escalation_deferred_after_grade3():
    """Weekly visits; planned 5 -> 10 -> 15 mg per 7-day 'cycle'; grade 3 platelets (40, not a
    hold at a platelet hold threshold of 30) in cycle 1 defers the escalation to 10 mg by one cycle."""
    hold = {"anc": 1.0, "platelets": 30.0}
    rule = DoseModificationRules(
        hold_below=hold,
        dose_levels=LEVELS,
        visits=LabVisits.schedule([(0, None, 7)]),
        cycle_days=7,
        escalation_blocked_below=G3,
    )
    planned = np.repeat([5.0, 10.0, 15.0, 15.0], 7)
    anc = np.full(28, 2.0)
    plt = np.full(28, 100.0)
    plt[0] = 40.0  # grade 3 at the visit of cycle 1, day 0
    labs = {"anc": jnp.asarray(anc), "platelets": jnp.asarray(plt)}
    dose, rec = _run_rules(rule, jnp.asarray(planned), labs)
    np.testing.assert_array_equal(np.asarray(dose), np.repeat([5.0, 5.0, 10.0, 15.0], 7))
    assert int(np.asarray(rec["held"]).sum()) == 0
    # without the escalation condition the plan is followed
    plain = DoseModificationRules(hold_below=hold, dose_levels=rule.dose_levels, visits=rule.visits, cycle_days=7)
    dose2, _ = _run_rules(plain, jnp.asarray(planned), labs)
    np.testing.assert_array_equal(np.asarray(dose2), planned)


def test_trial_rule_reads_tolerated_at_the_grade_it_is_given():
    """Weekly visits, 7-day courses planned 5 -> 10 -> 15 mg; ANC 1.2 x10^9/L (grade 2, not 3) at
    the day-0 visit of course 1: the grade-3 reading escalates as planned, the grade-2 reading
    defers the escalation by one course (then catches up one level per course)."""
    visits = LabVisits.schedule([(0, None, 7)])
    planned = np.repeat([5.0, 10.0, 15.0, 15.0], 7)
    anc = np.full(28, 3.0)
    anc[0] = 1.2  # grade 2 at the first visit
    labs = {"anc": jnp.asarray(anc), "platelets": jnp.full(28, 200.0), "alc": jnp.full(28, 30.0), "nodes": jnp.ones(28)}
    levels = (5.0, 10.0, 15.0)
    g3 = trial_rule(levels, visits, 7, escalate_if_responding=True)
    g2 = trial_rule(levels, visits, 7, escalate_if_responding=True, escalation_block_grade=2)
    assert {k: float(v) for k, v in g2.escalation_blocked_below.items()} == {"anc": 1.5, "platelets": 75.0}
    np.testing.assert_array_equal(np.asarray(_run_rules(g3, jnp.asarray(planned), labs)[0]), planned)
    np.testing.assert_array_equal(
        np.asarray(_run_rules(g2, jnp.asarray(planned), labs)[0]), np.repeat([5.0, 5.0, 10.0, 15.0], 7)
    )
    with pytest.raises(ValueError, match="escalation_block_grade must be a CTCAE grade 1-4, got 5"):
        trial_rule(levels, visits, escalation_block_grade=5)


# ------------------------------------------------------------------ relative to baseline: progression, response
WEEKLY = LabVisits.schedule([(0, None, 7)])
FINE = {"anc": 2.0, "platelets": 100.0}  # labs that never trigger a hold or block escalation


def _marker_labs(marker):
    marker = np.asarray(marker, dtype=float)
    return {"marker": jnp.asarray(marker), **{k: jnp.full(marker.shape, v) for k, v in FINE.items()}}


def test_stop_at_progression_on_a_known_marker_path():
    """Weekly visits, baseline 10 at day 0: a spike on a non-visit day is not read, 14.9 (x1.49)
    at day 7 is not progression, exactly 15.0 (x1.5) at day 14 is: every dose from day 14 is 0."""
    rule = DoseModificationRules(
        hold_below=G3, dose_levels=LEVELS, visits=WEEKLY, cycle_days=7, stop_above={"marker": 1.5}
    )
    assert rule.observables_read == ("anc", "platelets", "marker")
    n_days = 35
    planned = np.repeat([5.0, 10.0, 15.0, 20.0, 25.0], 7)
    marker = np.full(n_days, 10.0)
    marker[3] = 40.0  # not a visit
    marker[7] = 14.9
    marker[14:] = 15.0
    marker[15:] = 5.0  # falls again: the stop is for good
    dose, rec = _run_rules(rule, jnp.asarray(planned), _marker_labs(marker))
    expected = np.where(np.arange(n_days) < 14, planned, 0.0)
    np.testing.assert_array_equal(np.asarray(dose), expected)
    np.testing.assert_array_equal(np.asarray(rec["stopped"]), np.arange(n_days) >= 14)
    np.testing.assert_array_equal(np.asarray(rec["progressed"]), np.arange(n_days) >= 14)
    np.testing.assert_array_equal(np.asarray(rec["dose_cap_mg"])[14:], 0.0)
    assert int(np.asarray(rec["held"]).sum()) == 0 and int(np.asarray(rec["reductions"]).max()) == 0
    # per patient: the same path with a larger baseline never progresses; a per-patient ratio
    # of 1.4 stops at day 7 already (ratios are data, broadcasting against the batch)
    batch = np.stack([marker, marker, np.where(np.arange(n_days) == 0, 20.0, marker)])
    labs = _marker_labs(batch)
    ratios = eqx.tree_at(lambda r: r.stop_above, rule, {"marker": jnp.asarray([1.5, 1.4, 1.5])})
    d3, r3 = _run_rules(ratios, jnp.broadcast_to(jnp.asarray(planned), batch.shape), labs)
    day = np.arange(n_days)
    np.testing.assert_array_equal(np.asarray(d3[0]), expected)
    np.testing.assert_array_equal(np.asarray(d3[1]), np.where(day < 7, planned, 0.0))
    np.testing.assert_array_equal(np.asarray(d3[2]), planned)
    np.testing.assert_array_equal(np.asarray(r3["progressed"])[:, -1], [1, 1, 0])


def test_escalation_frozen_once_the_marker_has_fallen():
    """Planned 5 -> 10 -> 15 -> 20 -> 25 mg per 7-day cycle, weekly visits, baseline 10: while the
    marker stays above 0.5 x baseline the plan is followed; from the visit where it is <= 5.0
    (day 14: exactly half) the dose stays at the level given before (10 mg), even after the
    marker rises again, and it can still be reduced for toxicity."""
    kw = dict(hold_below=G3, dose_levels=LEVELS, visits=WEEKLY, cycle_days=7, escalation_blocked_below=G3)
    rule = DoseModificationRules(escalate_only_below={"marker": 0.5}, **kw)
    n_days = 35
    day = np.arange(n_days)
    planned = np.repeat([5.0, 10.0, 15.0, 20.0, 25.0], 7)
    falling = np.full(n_days, 10.0)
    falling[7] = 5.1  # not yet: escalation on day 7 goes ahead
    falling[14:] = 5.0  # response at day 14
    falling[21:] = 9.0  # back up: still no escalation
    flat = np.full(n_days, 6.0)  # baseline 6, never <= 3
    flat[0] = 6.0
    batch = np.stack([falling, flat])
    labs = _marker_labs(batch)
    dose, rec = _run_rules(rule, jnp.broadcast_to(jnp.asarray(planned), batch.shape), labs)
    np.testing.assert_array_equal(np.asarray(dose[0]), np.minimum(planned, 10.0))
    np.testing.assert_array_equal(np.asarray(rec["responded"][0]), day >= 14)
    np.testing.assert_array_equal(np.asarray(dose[1]), planned)  # not responding: escalates as planned
    assert int(np.asarray(rec["responded"][1]).max()) == 0
    # the same without the escalation gate on toxicity: the ceiling comes from the response alone
    plain = DoseModificationRules(
        hold_below=G3, dose_levels=LEVELS, visits=WEEKLY, cycle_days=7, escalate_only_below={"marker": 0.5}
    )
    d2, _ = _run_rules(plain, jnp.broadcast_to(jnp.asarray(planned), batch.shape), labs)
    np.testing.assert_array_equal(np.asarray(d2), np.asarray(dose))
    # a responder is still reduced for toxicity: ANC < 1.0 at day 21 holds, ANC back at day 28
    # resumes one level below 10 mg
    anc = np.full(n_days, 2.0)
    anc[21:28] = 0.8
    tox_labs = {**_marker_labs(falling), "anc": jnp.asarray(anc)}
    d3, r3 = _run_rules(rule, jnp.asarray(planned), tox_labs)
    np.testing.assert_array_equal(np.asarray(d3), np.select([day < 14, day < 21, day < 28], [planned, 10.0, 0.0], 5.0))
    assert int(np.asarray(r3["reductions"])[-1]) == 1


def test_response_and_progression_through_the_solve_of_a_toy_model():
    """End to end through the batched ODE solve: a toy model whose marker follows
    ``10 exp((grow - decay) t)``, t in days, whatever the dose.  With grow 0.03/day the marker is
    x1.23 at day 7 and x1.52 at day 14 (progression: doses stop on day 14); with decay 0.06/day
    it is x0.66 at day 7 and x0.43 at day 14 (response: the dose stays at 10 mg); flat, the plan
    is followed.  Rules without the new fields give every planned dose here."""
    from lenapk._core import AbstractModel, ObservableSpec, OneCompartment, ParameterSpec, PKConstants

    class Toy(AbstractModel):
        state_names: ClassVar = ("marker",)
        parameter_specs: ClassVar = (
            ParameterSpec("grow", 0.0, "1/day", "marker growth rate", "test", positive=False),
            ParameterSpec("decay", 0.0, "1/day", "marker decay rate", "test", positive=False),
        )
        observable_specs: ClassVar = (
            ObservableSpec("marker", "units", "a marker on a known path"),
            ObservableSpec("anc", "units", "constant 2"),
            ObservableSpec("platelets", "units", "constant 100"),
        )
        pk: ClassVar = OneCompartment()
        populations: ClassVar = {"toy": {}}
        time_unit: ClassVar = "day"

        def pk_constants(self, p):
            one = jnp.ones_like(p["grow"])
            return PKConstants(ka=one, k=0.1 * one, v=10.0 * one)

        def initial_state(self, c):
            return jnp.stack([10.0 * jnp.ones_like(c["grow"])])

        def rhs(self, t, y, conc, c):
            return jnp.stack([(c["grow"] - c["decay"]) * y[0]])

        def observables(self, y, conc, c):
            return {"marker": y[0], "anc": 2.0 + 0.0 * y[0], "platelets": 100.0 + 0.0 * y[0]}

    toy = Toy()
    params = lenapk.ParameterSet({"grow": jnp.asarray([0.03, 0.0, 0.0]), "decay": jnp.asarray([0.0, 0.06, 0.0])})
    planned = np.repeat([5.0, 10.0, 15.0, 20.0, 25.0], 7)
    day = np.arange(planned.size)
    kw = dict(hold_below=G3, dose_levels=LEVELS, visits=WEEKLY, cycle_days=7, escalation_blocked_below=G3)
    rule = DoseModificationRules(stop_above={"marker": 1.5}, escalate_only_below={"marker": 0.5}, **kw)
    traj = eqx.filter_jit(solve_days)(toy, params, jnp.broadcast_to(jnp.asarray(planned), (3, day.size)), None, rule)
    assert np.asarray(traj.ok).all()
    marker = np.asarray(traj.day_obs["marker"])[:, : day.size]
    np.testing.assert_allclose(marker[:, 14] / marker[:, 0], [np.exp(0.42), np.exp(-0.84), 1.0], rtol=1e-4)
    expected = np.stack([np.where(day < 14, planned, 0.0), np.minimum(planned, 10.0), planned])
    np.testing.assert_array_equal(np.asarray(traj.doses), expected)
    np.testing.assert_array_equal(np.asarray(traj.rule_records["progressed"])[:, -1], [1, 0, 0])
    np.testing.assert_array_equal(np.asarray(traj.rule_records["responded"])[:, -1], [0, 1, 0])
    default = eqx.filter_jit(solve_days)(
        toy, params, jnp.broadcast_to(jnp.asarray(planned), (3, day.size)), None, DoseModificationRules(**kw)
    )
    np.testing.assert_array_equal(np.asarray(default.doses), np.broadcast_to(planned, (3, day.size)))
    assert set(default.rule_records) == {"visit", "held", "dose_cap_mg", "reductions", "stopped"}


@pytest.mark.parametrize("variant", sorted(RULE_VARIANTS))
def test_relative_rules_match_replay_and_change_nothing_when_idle(variant):
    """Random labs and a random marker: the rule with stop_above / escalate_only_below follows the
    Python replay; with ratios it can never meet it gives the doses and records of the rule
    without them, bit for bit (and the rule without them is unchanged: see the replay tests)."""
    n_days = 5 * 28
    day = np.arange(n_days)
    planned = np.minimum(10.0 + 5.0 * (day // 28), 25.0) * (day % 28 < 21)
    planned[3] = 12.0
    planned[5] = 1.0
    labs = _labs(1, n_days, n=16)
    rng = np.random.default_rng(7)
    labs["marker"] = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.12, (16, n_days)), axis=1))
    p_b = jnp.broadcast_to(jnp.asarray(planned), labs["anc"].shape)
    jlabs = {k: jnp.asarray(v) for k, v in labs.items()}
    base = DoseModificationRules(dose_levels=LEVELS, **RULE_VARIANTS[variant])
    rule = DoseModificationRules(
        dose_levels=LEVELS, stop_above={"marker": 1.5}, escalate_only_below={"marker": 0.7}, **RULE_VARIANTS[variant]
    )
    dose, rec = _run_rules(rule, p_b, jlabs)
    visits = rule.lab_visits.days(n_days)
    seen = {"progressed": 0, "responded": 0}
    for i in range(16):
        exp = replay(rule, planned, {k: v[i] for k, v in labs.items()}, visits)
        np.testing.assert_array_equal(np.asarray(dose[i]), exp["dose"], err_msg=f"{variant} patient {i}")
        for k in ("held", "reductions", "stopped", "progressed", "responded"):
            np.testing.assert_array_equal(np.asarray(rec[k][i]), exp[k], err_msg=f"{variant} {k} patient {i}")
        seen["progressed"] += exp["progressed"][-1]
        seen["responded"] += exp["responded"][-1]
    assert seen["progressed"] > 0 and seen["responded"] > 0
    idle = eqx.tree_at(
        lambda r: (r.stop_above, r.escalate_only_below),
        rule,
        ({"marker": jnp.asarray(1e12)}, {"marker": jnp.asarray(1e-12)}),
    )
    d_idle, r_idle = _run_rules(idle, p_b, jlabs)
    d_base, r_base = _run_rules(base, p_b, jlabs)
    np.testing.assert_array_equal(np.asarray(d_idle), np.asarray(d_base))
    for k in r_base:
        np.testing.assert_array_equal(np.asarray(r_idle[k]), np.asarray(r_base[k]), err_msg=k)
    assert set(r_base) == {"visit", "held", "dose_cap_mg", "reductions", "stopped"}


# ------------------------------------------------------------------ observables as data
def test_rule_on_any_observable_given_as_data():
    """Nothing in the rule names a model: a made-up marker (hold/resume) and a second one
    (escalation), fed as a plain dict, follow the replay; observables_read lists both."""
    rule = DoseModificationRules(
        hold_below={"marker": 5.0},
        resume_at={"marker": 8.0},
        escalation_blocked_below={"other": 2.0},
        dose_levels=(50.0, 100.0, 200.0),
        min_dose_mg=50.0,
        cycle_days=7,
        visits=LabVisits.schedule([(0, None, 2)]),
    )
    assert rule.observables_read == ("marker", "other")
    assert label_rule().observables_read == ("anc", "platelets")
    n_days = 8 * 7
    day = np.arange(n_days)
    planned = np.minimum(50.0 * 2.0 ** (day // 7), 200.0)
    rng = np.random.default_rng(3)
    labs = {
        "marker": np.exp(rng.normal(np.log(9.0), 0.4, (6, n_days))),
        "other": np.exp(rng.normal(np.log(3.0), 0.4, (6, n_days))),
    }
    p_b = jnp.broadcast_to(jnp.asarray(planned), labs["marker"].shape)
    dose, rec = _run_rules(rule, p_b, {k: jnp.asarray(v) for k, v in labs.items()})
    visits = np.arange(0, n_days, 2)
    held_any = 0
    for i in range(6):
        exp = replay(rule, planned, {k: v[i] for k, v in labs.items()}, visits)
        np.testing.assert_array_equal(np.asarray(dose[i]), exp["dose"], err_msg=f"patient {i}")
        np.testing.assert_array_equal(np.asarray(rec["held"][i]), exp["held"], err_msg=f"patient {i}")
        np.testing.assert_array_equal(np.asarray(rec["dose_cap_mg"][i]), exp["cap"], err_msg=f"patient {i}")
        held_any += exp["held"].sum() > 0
    assert held_any > 0 and not np.array_equal(np.asarray(dose[0]), planned)
    # thresholds are data (leaves): with the marker hold at 0 nothing is held, and only the
    # escalation gate on "other" changes doses
    relaxed = eqx.tree_at(
        lambda r: (r.hold_below, r.resume_at), rule, ({"marker": jnp.asarray(0.0)}, {"marker": jnp.asarray(0.0)})
    )
    d2, r2 = _run_rules(relaxed, p_b, {k: jnp.asarray(v) for k, v in labs.items()})
    assert int(np.asarray(r2["held"]).sum()) == 0
    for i in range(6):
        exp = replay(relaxed, planned, {k: v[i] for k, v in labs.items()}, visits)
        np.testing.assert_array_equal(np.asarray(d2[i]), exp["dose"], err_msg=f"relaxed, patient {i}")
    assert (np.asarray(d2) < planned).any()  # the escalation gate acted


def test_rules_reading_observables_the_model_lacks_are_refused(regimen):
    rule = DoseModificationRules(hold_below={"anc": 1.0, "tumour_marker": 5.0}, dose_levels=LEVELS)
    message = r"reads the observable\(s\) \['tumour_marker'\].*LenalidomideCLL.*'anc'"
    with pytest.raises(ValueError, match=message):
        simulate(regimen, rules=rule)
    only_escalation = DoseModificationRules(
        hold_below=G3, dose_levels=LEVELS, escalation_blocked_below={"neutrophils": 1.0}
    )
    with pytest.raises(ValueError, match=r"\['neutrophils'\]"):
        simulate(regimen, rules=only_escalation)


# ------------------------------------------------------------------ lab visit schedules
def test_lab_visits_schedules():
    std = LabVisits.standard()  # weekly in cycles 1-2, then every 14 days
    np.testing.assert_array_equal(std.days(120), [0, 7, 14, 21, 28, 35, 42, 49, 56, 70, 84, 98, 112])
    assert bool(std.is_visit(140)) and bool(std.is_visit(126)) and not bool(std.is_visit(141))
    assert not bool(std.is_visit(-7))
    monthly = LabVisits.standard(every_days=28)  # as drug labels ask: day 1 of each later cycle
    np.testing.assert_array_equal(monthly.days(120), [0, 7, 14, 21, 28, 35, 42, 49, 56, 84, 112])
    np.testing.assert_array_equal(
        LabVisits.standard(cycle_days=21, weekly_cycles=1, every_days=21).days(70), [0, 7, 14, 21, 42, 63]
    )
    np.testing.assert_array_equal(std.with_last_day(60), [0, 7, 14, 21, 28, 35, 42, 49, 56, 60])
    iv = LabVisits.schedule([(0, 14, 7), (14, 30, 2)])
    np.testing.assert_array_equal(iv.days(60), [0, 7, 14, 16, 18, 20, 22, 24, 26, 28])
    ex = LabVisits.on_days([3, 10, 10, 0])
    np.testing.assert_array_equal(ex.days(30), [0, 3, 10])
    # traced day, batch of days
    np.testing.assert_array_equal(
        np.asarray(jax.jit(lambda d: std.is_visit(d))(jnp.arange(60))), np.isin(np.arange(60), std.days(60))
    )


# ------------------------------------------------------------------ (3) nonsense is refused
@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(hold_below={"anc": -1.0}), "hold_below['anc']"),
        (dict(hold_below={"anc": math.nan}), "hold_below['anc']"),
        (dict(hold_below={"anc": 1.0, "platelets": -5.0}), "hold_below['platelets']"),
        (dict(hold_below={"anc": True}), "hold_below['anc']"),
        (dict(hold_below={}), "hold_below"),
        (dict(hold_below=1.0), "hold_below"),
        (dict(resume_at={"anc": 1.0, "platelets": math.inf}), "resume_at['platelets']"),
        (dict(resume_at={"anc": "high", "platelets": 50.0}), "resume_at['anc']"),
        (dict(resume_at={"anc": 0.5, "platelets": 50.0}), "resume_at['anc']"),
        (dict(resume_at={"anc": 1.0}), "resume_at"),
        (dict(escalation_blocked_below={"anc": -0.1}), "escalation_blocked_below['anc']"),
        (dict(escalation_blocked_below="yes"), "escalation_blocked_below"),
        (dict(dose_levels=()), "dose_levels"),
        (dict(dose_levels=(5.0, 2.5, 10.0)), "dose_levels"),
        (dict(dose_levels=(0.0, 5.0)), "dose_levels[0]"),
        (dict(dose_levels=(2.5, -5.0)), "dose_levels[1]"),
        (dict(dose_levels=(2.5, math.nan)), "dose_levels[1]"),
        (dict(dose_levels=(2.5, "x")), "dose_levels"),
        (dict(dose_levels=5.0), "dose_levels"),
        (dict(min_dose_mg=30.0), "min_dose_mg"),
        (dict(min_dose_mg=-1.0), "min_dose_mg"),
        (dict(max_reductions=-1), "max_reductions"),
        (dict(max_reductions=1.5), "max_reductions"),
        (dict(cycle_days=0), "cycle_days"),
        (dict(visits=[0, 7, 14]), "visits"),
        (dict(stop_above={"alc": 1.0}), "stop_above['alc']"),
        (dict(stop_above={"alc": 0.5}), "stop_above['alc']"),
        (dict(stop_above={"alc": math.inf}), "stop_above['alc']"),
        (dict(stop_above={"alc": "x"}), "stop_above['alc']"),
        (dict(stop_above={"alc": True}), "stop_above['alc']"),
        (dict(stop_above={}), "stop_above"),
        (dict(stop_above=1.5), "stop_above"),
        (dict(escalate_only_below={"alc": 0.0}), "escalate_only_below['alc']"),
        (dict(escalate_only_below={"alc": 1.0}), "escalate_only_below['alc']"),
        (dict(escalate_only_below={"alc": -0.5}), "escalate_only_below['alc']"),
        (dict(escalate_only_below={"alc": math.nan}), "escalate_only_below['alc']"),
        (dict(escalate_only_below={"alc": [0.5, 1.2]}), "escalate_only_below['alc']"),
        (dict(escalate_only_below=[0.5]), "escalate_only_below"),
    ],
)
def test_nonsense_rules_refused(kwargs, field):
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        DoseModificationRules(**{"hold_below": G3, "dose_levels": LEVELS, **kwargs})


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: LabVisits.schedule([]), "intervals"),
        (lambda: LabVisits.schedule([(0, 56, 0)]), "every_days"),
        (lambda: LabVisits.schedule([(0, 56, -7)]), "every_days"),
        (lambda: LabVisits.schedule([(0, 56, 2.5)]), "every_days"),
        (lambda: LabVisits.schedule([(10, 5, 1)]), "to_day"),
        (lambda: LabVisits.schedule([(-7, 14, 7)]), "from_day"),
        (lambda: LabVisits.schedule([(0, None, 7), (56, None, 28)]), "to_day"),
        (lambda: LabVisits.schedule([(0, 56, 7), (28, 84, 28)]), "from_day"),
        (lambda: LabVisits.schedule([(0, 56)]), "intervals"),
        (lambda: LabVisits.on_days([]), "days"),
        (lambda: LabVisits.on_days([0, -7]), "days"),
        (lambda: LabVisits.on_days([0, 3.5]), "days"),
        (lambda: LabVisits.standard(cycle_days=0), "cycle_days"),
        (lambda: LabVisits.standard(every_days=0), "every_days"),
    ],
)
def test_nonsense_visits_refused(make, field):
    with pytest.raises(ValueError, match=f"visits.*{field}"):
        make()


def test_error_message_names_value_and_expectation():
    with pytest.raises(ValueError) as e:
        DoseModificationRules(hold_below={"anc": -1.0}, dose_levels=LEVELS)
    msg = str(e.value)
    assert "rules.hold_below['anc']" in msg and "-1.0" in msg and ">= 0" in msg
    with pytest.raises(ValueError) as e:
        DoseModificationRules(hold_below=G3, dose_levels=LEVELS, resume_at={"anc": 0.5, "platelets": 50.0})
    msg = str(e.value)
    assert "resume_at['anc']" in msg and "0.5" in msg and "hold_below['anc']" in msg and "1.0" in msg
    with pytest.raises(ValueError) as e:
        DoseModificationRules(hold_below=G3, dose_levels=LEVELS, stop_above={"alc": 0.8})
    msg = str(e.value)
    assert "rules.stop_above['alc']" in msg and "0.8" in msg and "> 1" in msg
    with pytest.raises(ValueError) as e:
        DoseModificationRules(hold_below=G3, dose_levels=LEVELS, escalate_only_below={"alc": 1.5})
    msg = str(e.value)
    assert "rules.escalate_only_below['alc']" in msg and "1.5" in msg and "(0, 1)" in msg
    with pytest.raises(ValueError) as e:
        LabVisits.schedule([(0, 56, 0)])
    msg = str(e.value)
    assert "every_days" in msg and "got 0" in msg and ">= 1" in msg


def test_label_and_trial_rules_are_the_documented_ones():
    r = label_rule()
    assert r.dose_levels == LEVELS and r.min_dose_mg == 2.5 and r.cycle_days == 28
    assert {k: float(v) for k, v in r.hold_below.items()} == G3
    assert {k: float(v) for k, v in r.resume_at.items()} == G3
    assert r.escalation_blocked_below is None and r.max_reductions is None
    # labs weekly in cycles 1-2, then on day 1 of each cycle
    np.testing.assert_array_equal(r.visits.days(150), [0, 7, 14, 21, 28, 35, 42, 49, 56, 84, 112, 140])
    assert {k: float(v) for k, v in lenapk.label_rule().hold_below.items()} == G3  # the top-level name
    assert DoseModificationRules(hold_below=G3, dose_levels=[5, 10]).dose_levels == (5.0, 10.0)
    # the trial rule: hold at grade 4, resume and escalation gated at grade 3
    t = trial_rule((5.0, 10.0, 15.0), LabVisits.schedule([(0, None, 7)]))
    assert {k: float(v) for k, v in t.hold_below.items()} == {"anc": 0.5, "platelets": 25.0}
    assert {k: float(v) for k, v in t.resume_at.items()} == G3
    assert {k: float(v) for k, v in t.escalation_blocked_below.items()} == G3
    assert t.min_dose_mg == 5.0
    # ... stopping at progression (ALC >= 1.5 x baseline) and escalating only before a response
    # (ALC not yet <= 0.5 x baseline), by default; both can be switched off
    assert {k: float(v) for k, v in t.stop_above.items()} == {"alc": 1.5, "nodes": 1.5}  # PD at either site
    assert {k: float(v) for k, v in t.escalate_only_below.items()} == {"alc": 0.5}
    assert t.observables_read == ("anc", "platelets", "alc", "nodes")
    t_old = trial_rule(
        (5.0, 10.0, 15.0), LabVisits.schedule([(0, None, 7)]), stop_at_progression=False, escalate_if_responding=True
    )
    assert t_old.stop_above is None and t_old.escalate_only_below is None
    assert t_old.observables_read == ("anc", "platelets")
    # a rule's default visits follow its own cycle length; its lowest level is its floor
    seven = DoseModificationRules(hold_below=G3, dose_levels=(1.0, 2.0), cycle_days=7)
    np.testing.assert_array_equal(seven.lab_visits.days(30), [0, 7, 14, 28])
    assert seven.min_dose_mg is None and seven._lowest_allowed == 0
    # the rule's state is a NamedTuple of batch-shaped arrays: nothing held, cap at the top level
    s = r.init((3,))
    assert s.held.shape == (3,) and not np.asarray(s.held).any() and not np.asarray(s.stopped).any()
    assert np.asarray(s.cap).tolist() == [len(LEVELS) - 1] * 3
    assert np.asarray(s.reductions).tolist() == [0] * 3
