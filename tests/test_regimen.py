import numpy as np
import pandas as pd
import pytest

import lenapk
from lenapk import Regimen


def test_cycles_days_on_off_and_escalation():
    r = Regimen.cycles(10, n_cycles=3, cycle_days=28, days_on=21, escalation_mg=5, escalate_every_days=28, max_mg=20)
    d = np.asarray(r.doses)
    assert d.shape == (84,)
    assert np.all(d[:21] == 10) and np.all(d[21:28] == 0)
    assert np.all(d[28:49] == 15) and np.all(d[56:77] == 20) and np.all(d[77:] == 0)


def test_escalation_capped_at_max():
    r = Regimen.cycles(2.5, n_cycles=24, escalation_mg=2.5, escalate_every_days=28, max_mg=5)
    d = np.asarray(r.doses)
    assert d[0] == 2.5 and d[27] == 2.5 and d[28] == 5 and d.max() == 5


def test_bundled_regimens(regimens):
    assert set(regimens) == {"early_2p5_then_5_cont", "rr_10_to_25_cont"}
    rr = np.asarray(regimens["rr_10_to_25_cont"].doses)
    assert rr.size == 24 * 28
    assert list(rr[[0, 28, 56, 84, 112]]) == [10, 15, 20, 25, 25]


def test_event_table_round_trip():
    r = Regimen.cycles(10, n_cycles=2, days_on=21, escalation_mg=5, escalate_every_days=28, max_mg=25)
    table = r.to_event_table()
    assert list(table.columns) == ["ID", "TIME", "AMT", "EVID", "CMT", "ADDL", "II"]
    assert table["TIME"].iloc[1] == 28 * 24  # hours
    back = Regimen.from_event_table(table, n_days=r.n_days)
    np.testing.assert_array_equal(np.asarray(back.doses), np.asarray(r.doses))


def test_event_table_addl_expanded_and_observations_ignored():
    df = pd.DataFrame(
        {"ID": [1, 1, 1], "TIME": [0.0, 12.0, 48.0], "AMT": [5.0, 0.0, 10.0], "EVID": [1, 0, 1],
         "CMT": [1, 1, 1], "ADDL": [1, 0, 2], "II": [24.0, 0, 48.0]}
    )
    r = Regimen.from_event_table(df)
    np.testing.assert_array_equal(np.asarray(r.doses), [5, 5, 10, 0, 10, 0, 10])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(start_mg=-5), "start_mg"),
        (dict(start_mg=float("nan")), "start_mg"),
        (dict(start_mg=10, cycle_days=0), "cycle_days"),
        (dict(start_mg=10, days_on=30), "days_on"),
        (dict(start_mg=10, escalation_mg=5), "escalate_every_days"),
        (dict(start_mg=10, max_mg=5), "max_mg"),
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


def _table(**cols):
    base = {"ID": [1, 1], "TIME": [0.0, 24.0], "AMT": [10.0, 10.0], "EVID": [1, 1], "CMT": [1, 1]}
    base.update(cols)
    return pd.DataFrame(base)


@pytest.mark.parametrize(
    "table, match",
    [
        (_table(TIME=[24.0, 0.0]), "sorted"),
        (_table(TIME=[-24.0, 0.0]), "TIME must be >= 0"),
        (_table(AMT=[10.0, -1.0]), "AMT must be >= 0"),
        (_table(AMT=[10.0, float("nan")]), "AMT must be a finite number"),
        (_table(ADDL=[3, 0]), "ADDL=3 needs II"),
        (_table(FOO=[1, 2]), r"unknown column\(s\) \['FOO'\]"),
        (_table(TIME=[0.0, 30.0]), "not at a whole day"),
        (_table(TIME=[24.0, 24.0]), "second dose on day 1"),
        (_table(EVID=[1, 4]), "EVID must be 0"),
        (_table(CMT=[1, 2]), "CMT must be 1"),
    ],
)
def test_event_table_refuses_malformed_rows(table, match):
    with pytest.raises(ValueError, match=match):
        Regimen.from_event_table(table)


def test_regimen_is_a_pytree_through_jit_and_grad():
    import jax

    r = Regimen.cycles(10, n_cycles=1)
    total = jax.jit(lambda reg: reg.doses.sum())(r)
    assert float(total) == 280.0
    g = jax.grad(lambda reg: (reg.doses**2).sum())(r)
    assert np.allclose(np.asarray(g.doses), 20.0)
