"""Dose-modification rules inside the simulation (lenapk.rules).

Kept fast: one short regimen (4 cycles), one compiled single-patient solve (thresholds are
dynamic JAX leaves, so every rule variant below with the same dose levels reuses it), one
vmapped and one batched solve.  Rule logic is also checked without the ODE on synthetic lab
sequences (a cheap ``lax.scan`` over ``rules.step``).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lenapk
from lenapk import LenalidomideCLL, Regimen, simulate
from lenapk.rules import DoseModificationRules, LabVisits, label_rule
from lenapk.solve import solve_days

LEVELS = (2.5, 5.0, 10.0, 15.0, 20.0, 25.0)
N_CYCLES = 4


# ------------------------------------------------------------------ plain-Python replay of the rule
def replay(rule: DoseModificationRules, planned, anc, plt, visit_days):
    """The rule, day by day, in plain Python: expected dose, held, cap, reductions, stopped.

    ``anc``/``plt`` are the pre-dose labs of each day (only visit days are read)."""
    levels = list(rule.dose_levels)
    n = len(levels)
    f = lambda x: float(np.asarray(x))  # noqa: E731
    ah, ar = f(rule.anc_hold_below), f(rule.anc_resume_at)
    ph, pr = f(rule.platelet_hold_below), f(rule.platelet_resume_at)
    g3a, g3p = f(rule.grade3_anc_below), f(rule.grade3_platelets_below)
    lowest_allowed = min(i for i, x in enumerate(levels) if x >= rule.min_dose_mg - 1e-9)
    visit_days = set(int(d) for d in visit_days)

    held = stopped = tox = False
    cap = esc = n - 1
    last_given = None  # level index of the last dose given since the last reduction
    prev_allowed = None
    reductions = 0
    out = {k: [] for k in ("dose", "held", "cap", "reductions", "stopped", "visit")}
    for d, p in enumerate(planned):
        p = float(p)
        visit = d in visit_days
        g3 = visit and (anc[d] < g3a or plt[d] < g3p)
        if rule.escalate_only_if_no_grade3 and d > 0 and d % rule.cycle_days == 0:
            if tox or g3:
                if prev_allowed is not None and prev_allowed >= 0:
                    esc = min(esc, prev_allowed)
            else:
                esc = min(esc + 1, n - 1)
            tox = False
        else:
            tox = tox or g3
        if visit and not stopped:
            if not held and (anc[d] < ah or plt[d] < ph):
                held = True
                if last_given is not None and min(cap, last_given - 1) < cap:
                    target = min(cap, last_given - 1)
                    too_many = rule.max_reductions is not None and reductions + 1 > rule.max_reductions
                    if target < lowest_allowed or too_many:
                        stopped, held = True, False
                    else:
                        cap, reductions, last_given = target, reductions + 1, None
            elif held and anc[d] >= ar and plt[d] >= pr:
                held = False
        on = [i for i, x in enumerate(levels) if x <= p + 1e-9]
        pidx = on[-1] if on else -1
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
    return {k: np.asarray(v) for k, v in out.items()}


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def model():
    return LenalidomideCLL()


@pytest.fixture(scope="module")
def params(model):
    return model.default_params()


@pytest.fixture(scope="module")
def regimen():
    # days 1-21 of 28, 10 mg escalating +5 mg per cycle up to 20 mg: off days and escalations
    return Regimen.cycles(
        10.0, n_cycles=N_CYCLES, days_on=21, escalation_mg=5.0, escalate_every_days=28, max_mg=20.0
    )


def _check_against_replay(rule, regimen, df):
    n_days = regimen.n_days
    planned = np.asarray(regimen.doses)
    anc = df["anc"].to_numpy()[:n_days]
    plt = df["platelets"].to_numpy()[:n_days]
    visit_days = df["day"].to_numpy()[:n_days][df["visit"].to_numpy()[:n_days] == 1]
    np.testing.assert_array_equal(visit_days, rule.visits.days(n_days))
    exp = replay(rule, planned, anc, plt, visit_days)
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
        (100.0, {"anc_resume_at": 3.0}),  # hysteresis: the hold spans more than one visit
        (250.0, {"platelet_hold_below": 100.0, "platelet_resume_at": 110.0}),  # platelet rule
    ],
)
def test_course_matches_replay(regimen, params, ec50_n, changes):
    rule = DoseModificationRules(**changes)  # the defaults are the label rule's
    # a fixed platelet potency (not the calibrated default), so the platelet rule is exercised
    df = simulate(regimen, params.replace(ec50_n=ec50_n, ec50_p=350.0), rules=rule)
    exp = _check_against_replay(rule, regimen, df)
    assert exp["reductions"][-1] >= 1
    if changes.get("anc_resume_at") == 3.0:
        held_visits = df[(df["visit"] == 1) & (df["held"] == 1)]
        assert len(held_visits) >= 2, "the hold should last over at least two visits"


# ------------------------------------------------------------------ (2) vmap == loop == one ODE
def test_vmap_and_batch_equal_single_patients(model, params, regimen):
    rule = label_rule()
    ec50 = np.array([250.0, 150.0, 40.0])
    n = ec50.size
    batched = lenapk.ParameterSet(
        {k: jnp.broadcast_to(v, (n,)) for k, v in params.replace(ec50_n=ec50).values.items()}
    )
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
    np.testing.assert_allclose(np.asarray(one.day_obs["anc"]), s_anc, rtol=1e-6, atol=1e-9)
    for k in ("visit", "held", "dose_cap_mg", "reductions", "stopped"):
        np.testing.assert_array_equal(
            np.asarray(one.rule_records[k]), np.asarray(vm.rule_records[k]), err_msg=k
        )


# ------------------------------------------------------------------ (4) rules that never trigger
def test_zero_thresholds_give_planned_doses(regimen, params):
    never = DoseModificationRules(
        anc_hold_below=0.0, anc_resume_at=0.0, platelet_hold_below=0.0, platelet_resume_at=0.0
    )
    potent = params.replace(ec50_n=20.0)
    df = simulate(regimen, potent, rules=never)
    n_days = regimen.n_days
    assert df["anc"].min() < 0.5  # the labs are bad, yet nothing happens
    np.testing.assert_array_equal(df["dose_mg"].to_numpy()[:n_days], np.asarray(regimen.doses))
    assert df["held"].sum() == 0 and df["stopped"].sum() == 0 and df["reductions"].max() == 0
    assert (df["dose_cap_mg"].iloc[:n_days] == 25.0).all()


# ------------------------------------------------------------------ rule logic without the ODE
@eqx.filter_jit
def _run_rules(rule, planned, anc, plt):
    """Scan rule.step over days; planned/anc/plt of shape (*batch, days)."""
    batch = planned.shape[:-1]
    mv = lambda a: jnp.moveaxis(a, -1, 0)  # noqa: E731

    def body(state, xs):
        day, p, a, q = xs
        state, dose, rec = rule.step(state, day, p, {"anc": a, "platelets": q})
        return state, (dose, rec)

    days = jnp.arange(planned.shape[-1])
    _, (dose, rec) = jax.lax.scan(body, rule.init(batch), (days, mv(planned), mv(anc), mv(plt)))
    back = lambda a: jnp.moveaxis(a, 0, -1)  # noqa: E731
    return back(dose), {k: back(v) for k, v in rec.items()}


def _labs(seed, n_days, n=None):
    rng = np.random.default_rng(seed)
    shape = (n_days,) if n is None else (n, n_days)
    anc = np.exp(rng.normal(np.log(1.4), 0.6, shape))
    plt = np.exp(rng.normal(np.log(90.0), 0.5, shape))
    return anc, plt


RULE_VARIANTS = {
    "label": dict(),
    # escalation control, at most one reduction, nothing below 5 mg, resume with hysteresis
    "strict": dict(
        escalate_only_if_no_grade3=True, max_reductions=1, min_dose_mg=5.0,
        anc_resume_at=1.5, platelet_resume_at=60.0,
    ),
}


@pytest.mark.parametrize("variant", sorted(RULE_VARIANTS))
def test_rule_logic_matches_replay_on_synthetic_labs(variant):
    rule = DoseModificationRules(**RULE_VARIANTS[variant])
    n_days = 5 * 28
    # escalating plan with off-level (12 mg -> 10, 100 mg -> 25) and below-level (1 mg) doses
    # and off weeks
    day = np.arange(n_days)
    planned = np.minimum(10.0 + 5.0 * (day // 28), 25.0) * (day % 28 < 21)
    planned[3] = 12.0
    planned[5] = 1.0
    planned[60] = 100.0
    anc, plt = _labs(1, n_days, n=12)
    p_b = jnp.broadcast_to(jnp.asarray(planned), anc.shape)
    dose, rec = _run_rules(rule, p_b, jnp.asarray(anc), jnp.asarray(plt))
    visits = rule.visits.days(n_days)
    seen = {"stopped": 0, "reductions": 0}
    for i in range(anc.shape[0]):
        exp = replay(rule, planned, anc[i], plt[i], visits)
        np.testing.assert_array_equal(np.asarray(dose[i]), exp["dose"], err_msg=f"{variant} patient {i}")
        for k, key in (("held", "held"), ("dose_cap_mg", "cap"), ("reductions", "reductions"),
                       ("stopped", "stopped"), ("visit", "visit")):
            np.testing.assert_array_equal(np.asarray(rec[k][i]), exp[key], err_msg=f"{variant} {k} patient {i}")
        seen["stopped"] += exp["stopped"][-1]
        seen["reductions"] += exp["reductions"][-1] > 0
    assert seen["stopped"] > 0 and seen["reductions"] > 0  # the scenarios exercise the rule
    if variant == "label":
        # batch (n,) == vmap over single patients (batch shape ())
        vd, vrec = jax.vmap(lambda p, a, q: _run_rules(rule, p, a, q))(p_b, jnp.asarray(anc), jnp.asarray(plt))
        np.testing.assert_array_equal(np.asarray(vd), np.asarray(dose))
        np.testing.assert_array_equal(np.asarray(vrec["held"]), np.asarray(rec["held"]))


def test_hand_checked_scenario():
    """Visits every day; levels 5/10/15; planned 15 mg daily."""
    rule = DoseModificationRules(
        dose_levels=(5.0, 10.0, 15.0), visits=LabVisits.schedule([(0, None, 1)]), min_dose_mg=5.0
    )
    ok, low = 2.0, 0.5
    anc = np.array([ok, ok, low, low, ok, ok, low, ok, ok, ok, low, ok])
    plt = np.full(anc.shape, 100.0)
    planned = np.array([15.0] * 9 + [0.0] + [15.0] * 2)
    dose, rec = _run_rules(rule, jnp.asarray(planned), jnp.asarray(anc), jnp.asarray(plt))
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
    hold at platelet_hold_below=30) in cycle 1 defers the escalation to 10 mg by one cycle."""
    rule = DoseModificationRules(
        visits=LabVisits.schedule([(0, None, 7)]),
        cycle_days=7,
        escalate_only_if_no_grade3=True,
        platelet_hold_below=30.0,
        platelet_resume_at=30.0,
    )
    planned = np.repeat([5.0, 10.0, 15.0, 15.0], 7)
    anc = np.full(28, 2.0)
    plt = np.full(28, 100.0)
    plt[0] = 40.0  # grade 3 at the visit of cycle 1, day 0
    dose, rec = _run_rules(rule, jnp.asarray(planned), jnp.asarray(anc), jnp.asarray(plt))
    np.testing.assert_array_equal(np.asarray(dose), np.repeat([5.0, 5.0, 10.0, 15.0], 7))
    assert int(np.asarray(rec["held"]).sum()) == 0
    # without the escalation condition the plan is followed
    plain = DoseModificationRules(
        visits=rule.visits, cycle_days=7, platelet_hold_below=30.0, platelet_resume_at=30.0
    )
    dose2, _ = _run_rules(plain, jnp.asarray(planned), jnp.asarray(anc), jnp.asarray(plt))
    np.testing.assert_array_equal(np.asarray(dose2), planned)


# ------------------------------------------------------------------ lab visit schedules
def test_lab_visits_schedules():
    std = LabVisits.standard()
    np.testing.assert_array_equal(std.days(120), [0, 7, 14, 21, 28, 35, 42, 49, 56, 84, 112])
    assert bool(std.is_visit(140)) and not bool(std.is_visit(141)) and not bool(std.is_visit(-7))
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
        (dict(anc_hold_below=-1.0), "anc_hold_below"),
        (dict(anc_hold_below=math.nan), "anc_hold_below"),
        (dict(platelet_hold_below=-5.0), "platelet_hold_below"),
        (dict(platelet_resume_at=math.inf), "platelet_resume_at"),
        (dict(anc_resume_at="high"), "anc_resume_at"),
        (dict(anc_hold_below=1.0, anc_resume_at=0.5), "anc_resume_at"),
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
        (dict(grade3_anc_below=-0.1), "grade3_anc_below"),
        (dict(escalate_only_if_no_grade3="yes"), "escalate_only_if_no_grade3"),
        (dict(visits=[0, 7, 14]), "visits"),
    ],
)
def test_nonsense_rules_refused(kwargs, field):
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        DoseModificationRules(**kwargs)


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
    ],
)
def test_nonsense_visits_refused(make, field):
    with pytest.raises(ValueError, match=f"visits.*{field}"):
        make()


def test_error_message_names_value_and_expectation():
    with pytest.raises(ValueError) as e:
        DoseModificationRules(anc_hold_below=-1.0)
    msg = str(e.value)
    assert "rules.anc_hold_below" in msg and "-1.0" in msg and ">= 0" in msg
    with pytest.raises(ValueError) as e:
        LabVisits.schedule([(0, 56, 0)])
    msg = str(e.value)
    assert "every_days" in msg and "got 0" in msg and ">= 1" in msg


def test_public_names():
    assert lenapk.rules.DoseModificationRules is DoseModificationRules
    r = label_rule()
    assert r.dose_levels == LEVELS and r.min_dose_mg == 2.5
    assert DoseModificationRules(dose_levels=[5, 10]).dose_levels == (5.0, 10.0)
    assert float(r.anc_hold_below) == 1.0 and float(r.platelet_hold_below) == 50.0
