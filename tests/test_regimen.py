"""Regimen: dose events, their constructors, daily totals and derived regimens.
(NONMEM event tables: tests/test_events.py.)"""

import jax
import numpy as np
import pytest

import lenapk
from lenapk import Regimen


def test_cycles_days_on_off_and_escalation():
    r = Regimen.cycles(10, n_cycles=3, cycle_days=28, days_on=21, escalation_mg=5, escalate_every_days=28, max_mg=20)
    d = np.asarray(r.doses)
    assert d.shape == (84,) and r.n_days == 84 and r.n_cycles == 3.0
    assert np.all(d[:21] == 10) and np.all(d[21:28] == 0)
    assert np.all(d[28:49] == 15) and np.all(d[49:56] == 0)
    assert np.all(d[56:77] == 20) and np.all(d[77:] == 0)
    # zero-dose days have no event; every event a bolus at a day start into the depot
    assert r.n_events == 63 and r.is_daily
    assert set(r.compartment) == {"depot"} and set(r.duration_h) == {0.0}
    np.testing.assert_array_equal(r.time_h, 24.0 * np.flatnonzero(d))
    np.testing.assert_array_equal(r.event_day, np.flatnonzero(d))


def test_escalation_capped_at_max():
    r = Regimen.cycles(2.5, n_cycles=24, escalation_mg=2.5, escalate_every_days=28, max_mg=5)
    d = np.asarray(r.doses)
    assert d[0] == 2.5 and d[27] == 2.5 and d[28] == 5 and d.max() == 5 and d[-1] == 5


def test_bundled_regimens(regimens):
    assert set(regimens) == {
        "early_2p5_then_5_cont",
        "rr_10_to_25_cont",
        "len_5_to_25_cont_dex_18c",
        "pulse_20mg_d1_21_of_42",
        "pulse_10mg_d1_21_of_42",
        "maint_2p5_to_10_d1_20_of_28_6c",
    }
    rr = np.asarray(regimens["rr_10_to_25_cont"].doses)
    assert rr.size == 24 * 28
    assert list(rr[[0, 27, 28, 56, 84, 112, 671]]) == [10, 10, 15, 20, 25, 25, 25]
    early = regimens["early_2p5_then_5_cont"]
    assert early.name == "early_2p5_then_5_cont" and early.n_days == 24 * 28
    assert list(np.asarray(early.doses)[[0, 27, 28, 671]]) == [2.5, 2.5, 5.0, 5.0]


def test_every_q12h_from_0800():
    r = Regimen.every(5, 12, n_days=3, start_h=8)
    assert r.time_h == (8.0, 20.0, 32.0, 44.0, 56.0, 68.0)
    np.testing.assert_array_equal(np.asarray(r.doses), [10.0, 10.0, 10.0])
    np.testing.assert_array_equal(r.event_day, [0, 0, 1, 1, 2, 2])
    assert not r.is_daily  # two doses a day, not at day starts: the event path


def test_every_q48h_and_horizon():
    r = Regimen.every(15, 48, n_days=7)
    assert r.time_h == (0.0, 48.0, 96.0, 144.0)
    np.testing.assert_array_equal(np.asarray(r.doses), [15, 0, 15, 0, 15, 0, 15])
    assert r.is_daily  # at most one bolus a day, at its start


def test_from_events_infusions_and_daily_totals():
    r = Regimen.from_events(
        [0.0, 6.0, 30.0, 50.0],
        [5.0, 5.0, 10.0, 200.0],
        compartment=["depot", "depot", "central", "central"],
        duration_h=[0, 0, 0, 2.0],
    )
    assert r.n_days == 3  # covers the last dose's day
    np.testing.assert_array_equal(np.asarray(r.doses), [10.0, 10.0, 200.0])
    assert r.duration_h == (0.0, 0.0, 0.0, 2.0) and not r.is_daily
    by_rate = Regimen.from_events([0.0, 24.0], [200.0, 300.0], compartment="central", rate_mg_h=150.0)
    np.testing.assert_allclose(by_rate.duration_h, [200.0 / 150.0, 2.0], rtol=1e-15)
    # an infusion running past the end of its day extends the horizon to cover its end
    late = Regimen.from_events([22.0], [100.0], compartment="central", duration_h=4.0)
    assert late.n_days == 2 and list(np.asarray(late.doses)) == [100.0, 0.0]


def test_events_past_the_horizon_are_dropped():
    r = Regimen.from_events([0.0, 24.0, 48.0, 72.0], [1.0, 2.0, 3.0, 4.0], n_days=2)
    assert r.n_events == 2 and list(np.asarray(r.doses)) == [1.0, 2.0]


def test_with_days_and_first_cycles():
    r = Regimen.cycles(10, n_cycles=3, days_on=21, escalation_mg=5, escalate_every_days=28, max_mg=25)
    short = r.with_days(30)
    assert short.n_days == 30 and short.n_events == 23
    np.testing.assert_array_equal(np.asarray(short.doses), np.asarray(r.doses)[:30])
    longer = r.with_days(90)
    np.testing.assert_array_equal(np.asarray(longer.doses), np.append(np.asarray(r.doses), np.zeros(6)))
    one = r.first_cycles(1)
    assert one.n_days == 28 and np.all(np.asarray(one.doses)[:21] == 10)
    assert r.first_cycles(5).n_days == r.n_days  # not longer: unchanged
    assert r.renamed("x").name == "x" and r.renamed("x").time_h == r.time_h


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(start_mg=-5), "start_mg"),
        (dict(start_mg=float("nan")), "start_mg"),
        (dict(start_mg=10, cycle_days=0), "cycle_days"),
        (dict(start_mg=10, days_on=30), "days_on"),
        (dict(start_mg=10, escalation_mg=5), "escalate_every_days"),
        (dict(start_mg=10, max_mg=5), "max_mg"),
        (dict(start_mg=10, n_cycles=1.5), "n_cycles"),
    ],
)
def test_cycles_refuses_bad_input(kwargs, match):
    start = kwargs.pop("start_mg")
    with pytest.raises(ValueError, match=match):
        Regimen.cycles(start, **kwargs)


def test_daily_doses_refuse_negative_and_nan():
    with pytest.raises(ValueError, match=r"doses\[1\].*-1"):
        Regimen.from_daily_doses([5, -1, 5])
    with pytest.raises(ValueError, match=r"doses\[2\]"):
        Regimen.from_daily_doses([5, 5, float("nan")])
    with pytest.raises(ValueError, match="non-empty"):
        Regimen.from_daily_doses([])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(time_h=[5.0, 1.0], amount_mg=[1.0, 1.0]), r"events\[1\]\.time_h must be >= the previous"),
        (dict(time_h=[0.0, 1.0], amount_mg=[1.0, -1.0]), r"events\[1\]\.amount_mg must be a number >= 0"),
        (dict(time_h=[-1.0], amount_mg=[1.0]), r"events\[0\]\.time_h"),
        (dict(time_h=[0.0], amount_mg=[1.0], compartment=""), r"events\[0\]\.compartment must be a compartment name"),
        (dict(time_h=[0.0, 24.0], amount_mg=[1.0]), "one length"),
        (dict(time_h=[0.0], amount_mg=[1.0], duration_h=1.0, rate_mg_h=2.0), "not both"),
        (dict(time_h=[0.0], amount_mg=[0.0], rate_mg_h=2.0), r"events\[0\]: an infusion rate needs"),
        (dict(time_h=[0.0], amount_mg=[1.0], duration_h=-1.0), r"events\[0\]\.duration_h"),
    ],
)
def test_from_events_refuses_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Regimen.from_events(**kwargs)


def test_compartment_names_are_checked_against_the_model():
    """Any compartment name makes a regimen (a model with ODE dosing names its own); simulating it
    with a model that has no such compartment is refused, naming the model's compartments."""
    gut = Regimen.from_events([0.0], [1.0], compartment="gut", n_days=1)
    assert gut.compartment == ("gut",)
    with pytest.raises(ValueError, match=r"doses compartment 'gut'; the model's dose compartments are \['depot'"):
        lenapk.simulate(gut)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: Regimen.every(0, 12, n_days=3), "amount_mg"),
        (lambda: Regimen.every(5, 0, n_days=3), "interval_h"),
        (lambda: Regimen.every(5, 12, n_days=0), "n_days"),
        (lambda: Regimen.every(5, 12, n_days=2, start_h=-1), "start_h"),
        (lambda: Regimen.cycles(10, n_cycles=1).with_days(0), "n_days"),
    ],
)
def test_every_and_with_days_refuse_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_regimen_is_a_pytree_through_jit_and_grad():
    r = Regimen.cycles(10, n_cycles=1)
    total = jax.jit(lambda reg: reg.doses.sum())(r)
    assert float(total) == 280.0
    g = jax.grad(lambda reg: (reg.doses**2).sum())(r)
    np.testing.assert_allclose(np.asarray(g.amount_mg), 20.0)
    # two doses on one day: d/da_i of (daily total)^2 is 2 x the day's total, for both events
    two = Regimen.every(5, 12, n_days=2, start_h=8)
    g2 = jax.grad(lambda reg: (reg.doses**2).sum())(two)
    np.testing.assert_allclose(np.asarray(g2.amount_mg), [20.0, 20.0, 20.0, 20.0])

    # amounts are the only leaf: a batch of regimens with shared event times under vmap
    def build(a):
        return Regimen(
            amount_mg=a,
            time_h=(0.0, 24.0, 48.0),
            compartment=("depot",) * 3,
            duration_h=(0.0,) * 3,
            n_days=3,
        )

    totals = jax.vmap(lambda a: build(a).doses)(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    np.testing.assert_array_equal(np.asarray(totals), [[1, 2, 3], [4, 5, 6]])
