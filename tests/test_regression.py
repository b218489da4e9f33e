"""The engine redesign kept the lenalidomide-CLL model's behaviour: outputs at the same parameters
agree with those written by the code before it (tests/data/README.md) to 1e-10 relative."""

import numpy as np
import pandas as pd
import pytest

import lenapk
from lenapk.calibration import Objective
from lenapk.models.cll import label_rule, load_observations

DATA = __import__("pathlib").Path(__file__).parent / "data"
RTOL = 1e-10


@pytest.fixture(scope="module")
def ref():
    return np.load(DATA / "regression_cll.npz")


def _close(got, want, name):
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    assert got.shape == want.shape, name
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want), err_msg=name)
    ok = np.isfinite(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=RTOL, atol=1e-300, err_msg=name)


def _regimen_6_cycles(regimens):
    return lenapk.Regimen.from_daily_doses(np.asarray(regimens["rr_10_to_25_cont"].doses)[:168], name="rr6")


@pytest.fixture(scope="module")
def relapsed(typical):
    return typical.replace(relapsed=1.0, anc0=2.2, plt0=110.0, alc0=60.0, crcl=55.0, ffm=48.0)


@pytest.mark.parametrize("rules, key", [(None, "sim_plain"), (label_rule(), "sim_label")])
def test_simulate_as_before(ref, regimens, relapsed, rules, key):
    df = lenapk.simulate(_regimen_6_cycles(regimens), relapsed, rules=rules)
    columns = sorted(k.split("/", 1)[1] for k in ref.files if k.startswith(key + "/"))
    assert sorted(df.columns) == columns
    for c in columns:
        _close(df[c], ref[f"{key}/{c}"], f"{key}/{c}")


def test_sub_day_outputs_as_before(ref, regimens, typical):
    early = lenapk.Regimen.from_daily_doses(np.asarray(regimens["early_2p5_then_5_cont"].doses)[:56], name="e2")
    df = lenapk.simulate(early, typical, times=[0.0, 0.1, 0.25, 1.0, 3.5, 10.04, 27.9, 40.0, 56.0])
    for c in df.columns:
        _close(df[c], ref[f"sim_times/{c}"], f"sim_times/{c}")


def test_cohort_as_before():
    reg = lenapk.Regimen.cycles(10, n_cycles=2, escalation_mg=5, escalate_every_days=28, max_mg=15, name="t2")
    got = lenapk.cohort(reg, n=12, seed=3, setting="relapsed", rules=label_rule(), block_size=8, progress=False)
    want = pd.read_parquet(DATA / "regression_cohort.parquet")
    assert list(got.columns) == list(want.columns)
    for c in want.columns:
        if c == "best_response":
            assert list(got[c].astype(str)) == list(want[c].astype(str))
        else:
            _close(got[c].to_numpy(dtype=float), want[c].to_numpy(dtype=float), c)


def test_fit_objective_as_before(ref):
    obj = Objective(load_observations(), n_patients=8, seed=0)
    assert obj.free == tuple(ref["objective/free"])
    obj, _ = obj.freeze_doses(obj.x0)
    value, grad = obj.value_and_grad(obj.x0)
    _close([value], ref["objective/value"], "objective")
    _close(grad, ref["objective/grad"], "gradient")
    table, _ = obj.table_at(obj.x0)
    for c in ("predicted", "predicted_smooth"):
        _close(table[c], ref[f"objective/{c}"], c)


def test_compare_as_before():
    a = lenapk.Regimen.cycles(10, n_cycles=2, escalation_mg=5, escalate_every_days=28, max_mg=15, name="t2")
    b = lenapk.Regimen.cycles(5, n_cycles=2, days_on=21, name="b")
    got = lenapk.compare({"a": a, "b": b}, n=8, seed=1, rules=label_rule(), setting="relapsed")
    want = pd.read_parquet(DATA / "regression_compare.parquet")
    assert list(got["regimen"]) == list(want["regimen"])
    for c in want.columns:
        if c not in ("regimen", "rules"):
            _close(got[c], want[c], c)
