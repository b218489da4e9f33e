"""NONMEM event tables in and out (several patients per table), bad rows refused with row and
field, and dose events at any time through the solver against independent scipy solves."""

import numpy as np
import pandas as pd
import pytest
import reference_cll
from scipy.integrate import solve_ivp

import lenapk
from lenapk import EventTableError, Regimen, SolverSettings, read_event_table, write_event_table
from lenapk._core import plan_for, solve_jit
from lenapk._core._plan import _event_plan
from lenapk.models.turnover import TwoCompartmentTurnover

TIGHT = SolverSettings(rtol=1e-10, atol=1e-12, max_steps=4096)
WRITTEN = ["ID", "TIME", "AMT", "EVID", "CMT", "RATE", "ADDL", "II", "MDV"]


# ---------------------------------------------------------------------------- tables in and out
def _kinds(scale):
    """One regimen of each kind, amounts times ``scale``; and the single record each compresses to
    (TIME, AMT, CMT, RATE, ADDL, II)."""
    return {
        "daily": (Regimen.cycles(10 * scale, n_cycles=1, days_on=21), (0.0, 10 * scale, 1, 0.0, 20, 24.0)),
        "q12h_0800": (Regimen.every(5 * scale, 12, n_days=14, start_h=8), (8.0, 5 * scale, 1, 0.0, 27, 12.0)),
        "q48h": (Regimen.every(15 * scale, 48, n_days=14), (0.0, 15 * scale, 1, 0.0, 6, 48.0)),
        "infusion_rate": (
            Regimen.from_events([0, 24, 48], [200 * scale] * 3, compartment="central", rate_mg_h=150.0, n_days=3),
            (0.0, 200 * scale, 2, 150.0, 2, 24.0),
        ),
        "infusion_dur": (
            Regimen.from_events([6, 30], [100 * scale] * 2, compartment="central", duration_h=0.5, n_days=2),
            (6.0, 100 * scale, 2, 200 * scale, 1, 24.0),
        ),
    }


def _assert_same_events(got: Regimen, want: Regimen):
    assert got.compartment == want.compartment and got.n_days == want.n_days
    np.testing.assert_array_equal(got.time_h, want.time_h)
    np.testing.assert_allclose(np.asarray(got.amount_mg), np.asarray(want.amount_mg), rtol=1e-15)
    np.testing.assert_allclose(got.duration_h, want.duration_h, rtol=1e-14)
    np.testing.assert_allclose(np.asarray(got.doses), np.asarray(want.doses), rtol=1e-15)


@pytest.mark.parametrize("kind", ["daily", "q12h_0800", "q48h", "infusion_rate", "infusion_dur"])
def test_round_trip_three_patients(kind):
    """Three IDs (not in numeric order) of one kind, different amounts: one ADDL/II record each,
    read back to the same events."""
    ids = [101, 7, 3]
    regs = {pid: _kinds(scale)[kind][0] for pid, scale in zip(ids, (1, 2, 0.5))}
    table = write_event_table(regs)
    assert list(table.columns) == WRITTEN and list(table["ID"]) == ids
    for (_, row), scale in zip(table.iterrows(), (1, 2, 0.5)):
        time, amt, cmt, rate, addl, ii = _kinds(scale)[kind][1]
        got = (row.TIME, row.AMT, row.CMT, row.ADDL, row.II, row.EVID, row.MDV)
        assert got == (time, amt, cmt, addl, ii, 1, 1)
        assert row.RATE == pytest.approx(rate, rel=1e-14)
    n_days = regs[ids[0]].n_days
    back = read_event_table(table, n_days=n_days)
    assert list(back) == ids
    for pid in ids:
        _assert_same_events(back[pid], regs[pid])
        assert back[pid].name == str(pid)
    # uncompressed: one record per event, the same regimens
    flat = write_event_table(regs, compress=False)
    assert len(flat) == sum(r.n_events for r in regs.values()) and set(flat["ADDL"]) == {0}
    for pid, reg in read_event_table(flat, n_days=n_days).items():
        _assert_same_events(reg, regs[pid])


def test_mixed_table_round_trip():
    """Different kinds per ID in one table, an escalating regimen among them (several records)."""
    esc = Regimen.cycles(10, n_cycles=2, days_on=21, escalation_mg=5, escalate_every_days=28, max_mg=25)
    regs = {1: esc.with_days(14), 2: _kinds(1)["q12h_0800"][0], 3: _kinds(1)["q48h"][0]}
    table = write_event_table(regs)
    assert list(table["ID"]) == [1, 2, 3]  # every regimen compresses to one record over 14 days
    back = read_event_table(table, n_days=14)
    for pid, reg in regs.items():
        _assert_same_events(back[pid], reg)
    full = esc.to_event_table(patient_id="A")
    assert list(full["ID"]) == ["A", "A"] and list(full["TIME"]) == [0.0, 672.0]
    assert list(full["AMT"]) == [10.0, 15.0] and list(full["ADDL"]) == [20, 20]
    _assert_same_events(Regimen.from_event_table(full, n_days=56), esc)


def test_from_event_table_one_patient_only():
    table = write_event_table({1: Regimen.every(5, 24, n_days=2), 2: Regimen.every(5, 24, n_days=2)})
    with pytest.raises(ValueError, match="one patient per regimen"):
        Regimen.from_event_table(table)


def test_rate_and_dur_give_the_same_infusion():
    base = {"ID": [1, 1], "TIME": [0.0, 24.0], "AMT": [100.0, 100.0], "EVID": [1, 1], "CMT": [2, 2]}
    by_rate = Regimen.from_event_table(pd.DataFrame({**base, "RATE": [50.0, 400.0]}))
    by_dur = Regimen.from_event_table(pd.DataFrame({**base, "DUR": [2.0, 0.25]}))
    assert by_rate.duration_h == (2.0, 0.25) and by_dur.duration_h == (2.0, 0.25)
    assert by_rate.compartment == ("central", "central")


def test_addl_expanded_and_observations_ignored():
    """ADDL/II records expand (and may pass later records); observation rows (EVID 0, DV) are
    ignored; lower-case column names are accepted; a table without EVID takes AMT > 0 as doses."""
    df = pd.DataFrame(
        {
            "id": [1, 1, 1, 1, 2, 2, 2],
            "time": [0.0, 12.0, 36.0, 48.0, 0.0, 10.0, 36.0],
            "amt": [5.0, 0.0, 2.0, 10.0, 5.0, 0.0, 2.0],
            "evid": [1, 0, 1, 1, 1, 0, 1],
            "cmt": [1, 2, 1, 1, 1, 2, 2],
            "addl": [1, 0, 0, 2, 3, 0, 0],
            "ii": [24.0, 0.0, 0.0, 48.0, 24.0, 0.0, 0.0],
            "dv": [np.nan, 3.2, np.nan, np.nan, np.nan, 1.0, np.nan],
            "mdv": [1, 0, 1, 1, 1, 0, 1],
        }
    )
    regs = read_event_table(df)
    one, two = regs[1], regs[2]
    assert one.time_h == (0.0, 24.0, 36.0, 48.0, 96.0, 144.0)
    np.testing.assert_array_equal(np.asarray(one.amount_mg), [5, 5, 2, 10, 10, 10])
    np.testing.assert_array_equal(np.asarray(one.doses), [5, 7, 10, 0, 10, 0, 10])
    assert two.time_h == (0.0, 24.0, 36.0, 48.0, 72.0)  # the ADDL doses pass the 36 h record
    assert two.compartment == ("depot", "depot", "central", "depot", "depot")
    no_evid = read_event_table(df.drop(columns=["evid"]))
    for pid in (1, 2):
        _assert_same_events(no_evid[pid], regs[pid])


def test_observation_rows_may_leave_amt_missing():
    """NONMEM files write '.' (or nothing) in AMT on observation rows: those rows are still
    observations (ignored), while a dose row without AMT is refused."""
    df = pd.DataFrame(
        {
            "ID": [1, 1, 1, 1],
            "TIME": [0.0, 2.0, 24.0, 30.0],
            "AMT": [10.0, ".", 5.0, None],
            "EVID": [1, 0, 1, 0],
            "DV": [".", 3.2, ".", 4.1],
        }
    )
    reg = read_event_table(df)[1]
    assert reg.time_h == (0.0, 24.0)
    np.testing.assert_array_equal(np.asarray(reg.amount_mg), [10.0, 5.0])
    no_evid = read_event_table(df.drop(columns=["EVID"]))[1]  # "." and missing AMT: observations
    assert no_evid.time_h == (0.0, 24.0)
    with pytest.raises(EventTableError, match="AMT must be a finite number on a dose record") as err:
        read_event_table(df.assign(EVID=[1, 1, 1, 0]))
    assert (err.value.row, err.value.field) == (1, "AMT")


def _table(**cols):
    """Two patients; ID 2's records are rows 3-5 (index 10-15, not the row numbers)."""
    base = {
        "ID": [1, 1, 1, 2, 2, 2],
        "TIME": [0.0, 12.0, 24.0, 0.0, 12.0, 24.0],
        "AMT": [10.0, 0.0, 10.0, 10.0, 0.0, 10.0],
        "EVID": [1, 0, 1, 1, 0, 1],
        "CMT": [1, 1, 1, 1, 1, 1],
    }
    base.update(cols)
    return pd.DataFrame(base, index=[10, 11, 12, 13, 14, 15])


NAN = float("nan")
BAD_TABLES = [
    ("negative AMT", _table(AMT=[10.0, 0.0, 10.0, 10.0, 0.0, -1.0]), 5, "AMT", "must be >= 0 mg, got -1"),
    (
        "NaN AMT",
        _table(AMT=[10.0, 0.0, 10.0, NAN, 0.0, 10.0]),
        3,
        "AMT",
        "must be a finite number on a dose record, got nan",
    ),
    ("text AMT", _table(AMT=[10.0, 0.0, "ten", 10.0, 0.0, 10.0]), 2, "AMT", "must be a finite number, got 'ten'"),
    ("negative TIME", _table(TIME=[0.0, 12.0, 24.0, -24.0, 12.0, 24.0]), 3, "TIME", "must be >= 0 h, got -24"),
    ("NaN TIME", _table(TIME=[0.0, 12.0, 24.0, 0.0, NAN, 24.0]), 4, "TIME", "must be a finite number, got nan"),
    (
        "unsorted TIME",
        _table(TIME=[0.0, 12.0, 24.0, 0.0, 30.0, 24.0]),
        5,
        "TIME",
        "must be sorted within ID 2 .*got 24 after 30",
    ),
    (
        "CMT 4",
        _table(CMT=[1, 1, 1, 1, 1, 4]),
        5,
        "CMT",
        r"must be a compartment number among 1 \(depot\), 2 \(central\), 3 \(peripheral\), got 4",
    ),
    ("CMT 0", _table(CMT=[0, 1, 1, 1, 1, 1]), 0, "CMT", "must be a compartment number.*got 0"),
    ("CMT 1.5", _table(CMT=[1, 1, 1.5, 1, 1, 1]), 2, "CMT", "must be a compartment number.*got 1.5"),
    (
        "RATE without AMT",
        _table(AMT=[10.0, 0.0, 10.0, 0.0, 0.0, 10.0], RATE=[0, 0, 0, 5.0, 0, 0]),
        3,
        "AMT",
        r"must be > 0 mg for an infusion \(RATE/DUR\), got 0",
    ),
    ("negative RATE", _table(RATE=[0, 0, -1.0, 0, 0, 0]), 2, "RATE", "must be >= 0 mg/h"),
    ("RATE and DUR", _table(RATE=[0, 0, 5.0, 0, 0, 0], DUR=[0, 0, 2.0, 0, 0, 0]), 2, "RATE", "and DUR both given"),
    ("ADDL without II", _table(ADDL=[0, 0, 0, 3, 0, 0]), 3, "ADDL", "of 3 needs II > 0 h, got II=0"),
    ("fractional ADDL", _table(ADDL=[1.5, 0, 0, 0, 0, 0], II=[24.0, 0, 0, 0, 0, 0]), 0, "ADDL", "whole number"),
    ("SS=1", _table(SS=[0, 0, 0, 0, 0, 1]), 5, "SS", "must be 0: steady-state doses are not supported"),
    ("non-contiguous IDs", _table(ID=[1, 1, 2, 2, 1, 1]), 4, "ID", "1 appears again after other IDs"),
    ("EVID 4", _table(EVID=[1, 0, 1, 4, 0, 1]), 3, "EVID", r"must be 0 \(observation\) or 1 \(dose\), got 4"),
    ("no dose for an ID", _table(EVID=[1, 0, 1, 0, 0, 0]), 3, "EVID", "ID 2 has no dose record"),
]


@pytest.mark.parametrize("table, row, field, message", [c[1:] for c in BAD_TABLES], ids=[c[0] for c in BAD_TABLES])
def test_bad_rows_refused_with_row_and_field(table, row, field, message):
    with pytest.raises(EventTableError, match=message) as err:
        read_event_table(table)
    assert (err.value.row, err.value.field) == (row, field)
    assert str(err.value).startswith(f"event table row {row}: {field} ")
    assert isinstance(err.value, ValueError)


def test_unknown_column_and_missing_column_refused():
    with pytest.raises(EventTableError, match=r"unknown column\(s\) \['FOO'\]") as err:
        read_event_table(_table(FOO=[1, 2, 3, 4, 5, 6]))
    assert err.value.row is None and err.value.field is None
    with pytest.raises(EventTableError, match="column is required") as err:
        read_event_table(_table().drop(columns=["AMT"]))
    assert err.value.field == "AMT"
    with pytest.raises(EventTableError, match="must be a pandas DataFrame"):
        read_event_table([[1, 0.0, 10.0]])


# ---------------------------------------------------------------------------- through the solver
def test_q12h_table_matches_scipy_cll(typical):
    """Acceptance: 5 mg every 12 h at 08:00 and 20:00 (one record, ADDL 27, II 12, plus observation
    rows) with the CLL model, at sub-day output times, against the scipy reference with PK as
    ODE states: 1e-6 relative on every observable compared."""
    df = pd.DataFrame(
        {
            "ID": [1, 1, 1],
            "TIME": [0.0, 8.0, 30.0],
            "AMT": [0.0, 5.0, 0.0],
            "EVID": [0, 1, 0],
            "CMT": [1, 1, 1],
            "ADDL": [0, 27, 0],
            "II": [0.0, 12.0, 0.0],
            "DV": [3.0, np.nan, 2.0],
        }
    )
    reg = Regimen.from_event_table(df)
    assert reg.n_days == 14 and reg.n_events == 28 and reg.time_h[-1] == 8.0 + 27 * 12.0
    p = typical.replace(relapsed=1.0, anc0=3.0)
    near_doses = [8 / 24, 8 / 24 + 1e-3, 20 / 24, 13 + 20 / 24, 14.0]
    times = np.unique(np.concatenate([np.arange(0.0, 14.0, 0.37), near_doses]))
    out = lenapk.simulate(reg, p, times=times, settings=TIGHT)
    pf = p.as_floats()
    ys = reference_cll.solve_events(pf, reg.time_h, np.asarray(reg.amount_mg), times)
    ref = {
        "conc_ng_ml": 1000.0 * ys[:, 1] / pf["v"],
        "alc": ys[:, 2] + pf["normal_lymph"],
        "anc": ys[:, 8],
        "platelets": ys[:, 13],
        "igg": ys[:, 14],
    }
    for name, want in ref.items():
        np.testing.assert_allclose(out[name].to_numpy(), want, rtol=1e-6, atol=1e-12, err_msg=name)
    assert out["conc_ng_ml"].iloc[np.flatnonzero(times == 8 / 24)[0]] == 0.0  # pre-dose at the first dose
    # the day's total (two 5 mg doses) on every day, nothing at the end of the horizon
    np.testing.assert_array_equal(out["dose_mg"].to_numpy(), np.where(times < 14, 10.0, 0.0))


def _turnover_reference(p, events, t_out):
    """The model of lenapk/models/turnover.py written out from its docstring (PK as ODE states,
    hours): events (time_h, mg, 0 depot / 1 central, infusion duration h); an output at a bolus
    time is pre-dose.  Returns (concentration ng/mL, biomarker)."""
    w = p["wt"] / 70.0
    cl, q, v1, v2 = p["cl"] * w**0.75, p["q"] * w**0.75, p["v1"] * w, p["v2"] * w
    k10, k12, k21 = cl / v1, q / v1, q / v2
    kin = p["kout"] * p["r0"]

    def rhs(t, y, rate):
        depot, central, peripheral, r = y
        c = 1000.0 * central / v1
        inhibition = p["imax"] * c / (p["ic50"] + c)
        return [
            -p["ka"] * depot,
            p["ka"] * depot - (k10 + k12) * central + k21 * peripheral + rate,
            k12 * central - k21 * peripheral,
            kin * (1.0 - inhibition) - p["kout"] * r,
        ]

    bounds = sorted({0.0, *[e[0] for e in events], *[e[0] + e[3] for e in events if e[3] > 0], t_out[-1]})
    y, a = np.array([0.0, 0.0, 0.0, p["r0"]]), 0.0
    out = [y.copy() for _ in t_out[t_out <= 0]]
    for b in bounds:
        if b > a:
            rate = sum(e[1] / e[3] for e in events if e[3] > 0 and e[0] <= a < e[0] + e[3])
            ts = t_out[(t_out > a) & (t_out <= b)]
            sol = solve_ivp(
                rhs,
                (a, b),
                y,
                method="DOP853",
                rtol=1e-11,
                atol=1e-12,
                args=(rate,),
                t_eval=np.unique(np.append(ts, b)),
            )
            assert sol.success, sol.message
            out += list(sol.y[:, : ts.size].T)
            y, a = sol.y[:, -1], b
        for e in events:
            if e[0] == b and e[3] == 0:
                y = y.copy()
                y[e[2]] += e[1]
    out = np.array(out)
    return 1000.0 * out[:, 1] / v1, out[:, 3]


@pytest.fixture(scope="module")
def turnover():
    model = TwoCompartmentTurnover()
    return model, model.default_params().replace(wt=85.0, r0=120.0)


def test_iv_infusion_two_compartment_turnover_matches_scipy(turnover):
    """Acceptance: 200 mg over 1 h IV at 0 and 24 h into the two-compartment model (hours),
    concentration and biomarker to 1e-6 relative, including times inside the infusions."""
    model, p = turnover
    reg = Regimen.from_events([0, 24], [200, 200], compartment="central", duration_h=1.0, n_days=3)
    times = np.array([0.0, 0.1, 0.5, 0.999, 1.0, 1.5, 6.0, 23.9, 24.0, 24.3, 24.75, 25.0, 25.2, 30.0, 48.0, 60.0, 72.0])
    out = lenapk.simulate(reg, p, times=times, model=model, settings=TIGHT)
    assert list(out.columns) == ["hour", "dose_mg", "conc_ng_ml", "biomarker"]
    conc, biomarker = _turnover_reference(p.as_floats(), [(0.0, 200.0, 1, 1.0), (24.0, 200.0, 1, 1.0)], times)
    np.testing.assert_allclose(out["conc_ng_ml"].to_numpy(), conc, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(out["biomarker"].to_numpy(), biomarker, rtol=1e-6)
    # the concentration rises during each infusion and falls after it
    c = out["conc_ng_ml"].to_numpy()
    assert c[0] == 0.0 and c[1] < c[2] < c[3] and c[4] > c[5] and c[9] < c[10] < c[11]
    np.testing.assert_array_equal(out["dose_mg"].to_numpy(), [200.0] * 14 + [0.0] * 3)


def test_oral_q12h_two_compartment_turnover_matches_scipy(turnover):
    model, p = turnover
    reg = Regimen.every(100.0, 12.0, n_days=3, start_h=8.0)
    times = np.unique(np.append(np.arange(0.0, 72.0, 1.3), [8.0, 8.25, 20.0, 72.0]))
    out = lenapk.simulate(reg, p, times=times, model=model, settings=TIGHT)
    conc, biomarker = _turnover_reference(p.as_floats(), [(t, 100.0, 0, 0.0) for t in reg.time_h], times)
    np.testing.assert_allclose(out["conc_ng_ml"].to_numpy(), conc, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(out["biomarker"].to_numpy(), biomarker, rtol=1e-6)
    assert biomarker.min() < 0.8 * p.as_floats()["r0"]  # the drug suppresses the biomarker here


@pytest.mark.parametrize("with_rule", [False, True])
def test_daily_fast_path_equals_event_path(model, typical, with_rule):
    """Acceptance: a daily regimen through the daily plan (one segment per day) and through the
    general event path with the same segments gives the same days (rtol 1e-12), with and without
    the label rule (which must hold doses here, so that the decisions are exercised)."""
    reg = Regimen.cycles(25, n_cycles=2, days_on=21)
    p = typical.replace(relapsed=1.0, anc0=1.6, plt0=80.0)
    daily = plan_for(model, reg)
    events = _event_plan(reg, model.pk.compartments, model.time_unit_h)
    assert daily.one_segment_per_day and not events.one_segment_per_day
    assert daily.n_segments == events.n_segments == reg.n_days
    rules = lenapk.label_rule() if with_rule else None
    a, b = solve_jit(model, p, daily, rules), solve_jit(model, p, events, rules)
    for name in model.observable_names:
        np.testing.assert_allclose(
            np.asarray(a.day_obs[name]), np.asarray(b.day_obs[name]), rtol=1e-12, atol=0, err_msg=name
        )
    np.testing.assert_array_equal(np.asarray(a.doses), np.asarray(b.doses))
    for name in a.rule_records:
        np.testing.assert_array_equal(np.asarray(a.rule_records[name]), np.asarray(b.rule_records[name]))
    given = np.asarray(a.doses)
    if with_rule:
        assert given.sum() < 0.8 * float(reg.doses.sum()) and np.asarray(a.rule_records["held"]).any()
    else:
        np.testing.assert_array_equal(given, np.asarray(reg.doses))
