"""lenapk.parse_regimen: compact regimen strings against daily doses and dose times written out by
hand, and malformed strings against the position of the offending character."""

import numpy as np
import pytest

from lenapk import RegimenSpecError, parse_regimen


def daily(spec, **kw):
    reg = parse_regimen(spec, **kw)
    return reg, np.asarray(reg.doses, dtype=float), np.asarray(reg.time_h, dtype=float)


def test_days_on_of_a_cycle():
    reg, doses, times = daily("10mg d1-21/28 x12")
    day = np.arange(336)
    np.testing.assert_array_equal(doses, np.where(day % 28 < 21, 10.0, 0.0))
    np.testing.assert_array_equal(times, 24.0 * day[day % 28 < 21])
    assert (reg.n_days, reg.cycle_days, reg.n_events, reg.name) == (336, 28, 252, "10mg d1-21/28 x12")
    assert doses.sum() == 12 * 21 * 10.0


def test_a_cycle_length_from_the_day_pattern():
    reg, doses, _ = daily("25mg d1-14/21 x2")
    assert (reg.n_days, reg.cycle_days) == (42, 21)
    np.testing.assert_array_equal(doses, ([25.0] * 14 + [0.0] * 7) * 2)


def test_two_parts_continuous():
    reg, doses, times = daily("2.5mg c1; 5mg c2-24 continuous")
    assert (reg.n_days, reg.n_events) == (672, 672)
    np.testing.assert_array_equal(doses, [2.5] * 28 + [5.0] * (23 * 28))
    np.testing.assert_array_equal(times, 24.0 * np.arange(672))


def test_every_48_hours():
    reg, doses, times = daily("15mg q48h x6")
    assert reg.n_days == 6 * 28
    np.testing.assert_array_equal(times, 48.0 * np.arange(84))
    np.testing.assert_array_equal(doses, [15.0, 0.0] * 84)


def test_twice_daily_from_8_am():
    reg, doses, times = daily("5mg q12h @08:00 x1")
    np.testing.assert_array_equal(times, 8.0 + 12.0 * np.arange(56))  # 08:00 and 20:00 of days 0..27
    np.testing.assert_array_equal(np.asarray(reg.amount_mg), [5.0] * 56)
    np.testing.assert_array_equal(doses, [10.0] * 28)


def test_escalation():
    reg, doses, _ = daily("10mg c1; 15mg c2; 20mg c3; 25mg c4+ x24")
    assert reg.n_days == 672
    np.testing.assert_array_equal(doses, [10.0] * 28 + [15.0] * 28 + [20.0] * 28 + [25.0] * (21 * 28))


def test_how_many_cycles_without_a_count():
    assert parse_regimen("10mg", default_cycles=3).n_days == 84
    assert parse_regimen("10mg c1; 15mg c2", default_cycles=24).n_days == 56  # closes at cycle 2
    # an open last part runs to the caller's default (it used to stop at the last cycle named)
    _, doses, _ = daily("2.5mg c1; 5mg", default_cycles=24)
    np.testing.assert_array_equal(doses, [2.5] * 28 + [5.0] * (23 * 28))
    _, doses, _ = daily("10mg c1; 25mg c3+", default_cycles=4)
    np.testing.assert_array_equal(doses, [10.0] * 28 + [0.0] * 28 + [25.0] * 56)
    assert parse_regimen("10mg c1; 25mg c4+", default_cycles=2).n_days == 4 * 28  # at least the cycles named


@pytest.mark.parametrize(
    "spec, position, words",
    [
        ("", 0, "is empty"),
        ("10 d1-21/28", 0, "each part starts with a dose"),
        ("abcmg x1", 0, "the dose (mg) must be a number"),
        ("-5mg x1", 0, "the dose (mg) must be > 0"),
        ("10mg d1-30/28 x2", 5, "days 1-30 must lie within the 28-day cycle"),
        ("10mg d0-21/28", 6, "a day must be a whole number >= 1"),
        ("10mg x0", 6, "the number of cycles must be a whole number >= 1"),
        ("10mg q0h x1", 6, "the dosing interval (h) must be > 0"),
        ("10mg @25:00 x1", 6, "25:00 is not a clock time"),
        ("10mg c3-1", 8, "cycles 3-1 run backwards"),
        ("10mg weekly x2", 5, "unknown word 'weekly'"),
        ("10mg c1;; 5mg c2", 8, "empty part"),
        ("5mg c2; 10mg c1", 8, "cycle 1 comes before the end of the previous part"),
        ("10mg c1-3 x2", 10, "x2 is fewer cycles than the parts name (3)"),
        ("10mg d1-21/28; 5mg d1-14/21", 19, "every part must use one cycle length, got 28 and 21 days"),
        # repeated words and misplaced counts used to be taken silently (the last one won)
        ("10mg c1 c2", 8, "'c2': the part already gives its cycles ('c1')"),
        ("10mg d1-21/28 continuous x2", 14, "already gives its pattern ('d1-21/28')"),
        ("10mg d1-21/28 q12h x2", 14, "already gives its pattern"),
        ("10mg @08:00 @20:00 x1", 12, "already gives its start"),
        ("10mg d1-21/28 x12 x3", 18, "already gives its count ('x12')"),
        ("10mg x3; 5mg x6", 5, "a count (xN) may only end the last part"),
    ],
)
def test_a_malformed_string_points_at_the_offending_character(spec, position, words):
    with pytest.raises(RegimenSpecError) as info:
        parse_regimen(spec, default_cycles=3)
    err = info.value
    assert err.position == position and words in str(err)
    lines = str(err).splitlines()
    assert lines[-2] == "  " + spec and lines[-1] == " " * (2 + position) + "^"
    assert f"(at character {position + 1})" in lines[0]
    assert isinstance(err, ValueError)
