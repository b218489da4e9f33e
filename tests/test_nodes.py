"""Lymph-node burden and the blood-and-node response (iwCLL 2008 without spleen and marrow)."""

import dataclasses

import numpy as np
import pytest
import reference_cll

import lenapk
from lenapk import Regimen, SolverSettings
from lenapk.endpoints import ResponseCriteria
from lenapk.models.cll._endpoints import RESPONSE

CRITERIA = ResponseCriteria("alc", normal_below=4.0, cr_above=(("anc", 1.5),), also=("nodes",), also_cr_ratio=0.1)


def _values():
    """Five patients, days 0..2 (day 0 the baseline); ALC x10^9/L, nodes relative, ANC."""
    alc = np.array(
        [
            [100.0, 60.0, 40.0],  # blood halved, nodes not: SD
            [100.0, 60.0, 40.0],  # both halved: PR
            [100.0, 90.0, 80.0],  # nodes up by 60%: PD
            [100.0, 20.0, 3.0],  # blood normal, nodes gone: CR
            [100.0, 20.0, 3.0],  # blood normal, nodes only a 70% fall: PR, not CR
        ]
    )
    nodes = np.array(
        [
            [1.0, 0.8, 0.6],
            [1.0, 0.6, 0.4],
            [1.0, 1.2, 1.6],
            [1.0, 0.3, 0.05],
            [1.0, 0.45, 0.3],
        ]
    )
    return {"alc": alc, "nodes": nodes, "anc": np.full_like(alc, 3.0)}


def test_best_response_needs_blood_and_nodes():
    label, first = CRITERIA.best(_values(), np.array([1, 2]))
    assert list(label) == ["SD", "PR", "PD", "CR", "PR"]
    np.testing.assert_array_equal(first, [np.nan, 2.0, np.nan, 1.0, 1.0])
    blood_only = dataclasses.replace(CRITERIA, also=())
    label_blood, _ = blood_only.best(_values(), np.array([1, 2]))
    assert list(label_blood) == ["PR", "PR", "SD", "CR", "CR"]


def test_response_at_a_day_and_ever_pr():
    v = _values()
    at = CRITERIA.at_day(v, 2)
    np.testing.assert_array_equal(at["PR"], [0, 1, 0, 0, 1])
    np.testing.assert_array_equal(at["CR"], [0, 0, 0, 1, 0])
    np.testing.assert_array_equal(at["PD"], [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(at["SD"], [1, 0, 0, 0, 0])
    ever = CRITERIA.ever_pr(v, [1, 2])
    np.testing.assert_array_equal(np.asarray(ever), [0, 1, 0, 1, 1])


def test_smooth_margins_have_the_hard_signs():
    """Log margins at a small temperature: positive exactly where the hard event holds, and
    ``marker_halved`` stays the blood count alone."""
    m = CRITERIA.best_margins(_values(), [1, 2], 1e-4)
    np.testing.assert_array_equal(np.asarray(m["overall"]) > 0, [False, True, False, True, True])
    np.testing.assert_array_equal(np.asarray(m["cr"]) > 0, [False, False, False, True, False])
    np.testing.assert_array_equal(np.asarray(m["pd"]) > 0, [False, False, True, False, False])
    np.testing.assert_array_equal(np.asarray(m["marker_halved"]) > 0, [True, True, False, True, True])
    # overall margin = min over markers of log(0.5) - log(ratio), at the best visit (patient 1: nodes 0.4)
    np.testing.assert_allclose(float(m["overall"][1]), np.log(0.5 / 0.4), atol=1e-3)


def test_smooth_status_tends_to_the_hard_one():
    v = _values()
    at = {k: a[:, 2] for k, a in v.items()}
    base = {k: v[k][:, 0] for k in CRITERIA.markers}
    hard = CRITERIA.status(at, base)
    smooth = CRITERIA.status(at, base, temperature=1e-3)
    for h, s in zip(hard, smooth, strict=True):
        np.testing.assert_allclose(np.asarray(s), np.asarray(h), atol=1e-6)


@pytest.fixture(scope="module")
def rr_short(regimens):
    return regimens["rr_10_to_25_cont"].first_cycles(6)


def test_node_burden_is_the_blood_clone_when_kill_is_the_same(rr_short, typical):
    """f_node = 1: dL/dt equals the clone's per-capita rate, so N = X / X0 on every day."""
    p = typical.replace(f_node=1.0, h_node=1.0, relapsed=1.0)
    df = lenapk.simulate(rr_short, p)
    normal = float(p["normal_lymph"])
    clone_ratio = (df["alc"] - normal) / (float(p["alc0"]) - normal)
    np.testing.assert_allclose(df["nodes"], clone_ratio, rtol=1e-6)
    assert clone_ratio.iloc[-1] < 0.9  # the drug acts: the check is not made at baseline


def test_node_burden_without_drug_is_the_logistic_clone(typical):
    """No drug: log N = integral of g (1 - X / K), and X is logistic, so N(t) = X(t) / X0 in closed
    form: e^{gt} / (1 + X0 (e^{gt} - 1) / K) (f_node plays no part)."""
    p = typical.replace(f_node=0.3, growth=0.004)
    df = lenapk.simulate(Regimen.from_daily_doses(np.zeros(200)), p)
    g, cap = float(p["growth"]), float(p["clone_max"])
    x0 = float(p["alc0"]) - float(p["normal_lymph"])
    rise = np.exp(g * df["day"].to_numpy())
    np.testing.assert_allclose(df["nodes"], rise / (1.0 + x0 * (rise - 1.0) / cap), rtol=1e-7)


@pytest.mark.parametrize("h_node", [1.0, 3.0])
def test_steep_node_kill_matches_scipy(rr_short, typical, h_node):
    """The node kill f_node k (k_typ / k_ref)^(h_node - 1) over the escalation from 10 to 25 mg,
    against the independent SciPy statement (DOP853 at rtol 1e-11, PK as ODE states)."""
    p = typical.replace(relapsed=1.0, f_node=0.4, h_node=h_node, node_kill_ref=0.01)
    df = lenapk.simulate(rr_short, p, settings=SolverSettings(rtol=1e-9, atol=1e-11, max_steps=4096))
    ys = reference_cll.solve_daily(p.as_floats(), np.asarray(rr_short.doses), method="DOP853", rtol=1e-11, atol=1e-13)
    nodes = np.exp(ys[:, 20])
    np.testing.assert_allclose(df["nodes"], nodes, rtol=1e-6)
    assert nodes[-1] < 0.8  # the nodes shrink: the kill term is exercised


def test_node_kill_steepness_scales_with_the_blood_kill(rr_short, typical):
    """Doubling k_ref at h_node = 3 divides the node kill by 4 at every instant, which is the same
    as dividing f_node by 4 (an exact identity of the model's equations, checked on the solve)."""
    p = typical.replace(relapsed=1.0, f_node=0.4, h_node=3.0, node_kill_ref=0.01)
    a = lenapk.simulate(rr_short, p.replace(node_kill_ref=0.02))["nodes"].to_numpy()
    b = lenapk.simulate(rr_short, p.replace(f_node=0.1))["nodes"].to_numpy()
    np.testing.assert_allclose(a, b, rtol=1e-8)
    assert a[-1] > lenapk.simulate(rr_short, p)["nodes"].to_numpy()[-1]  # a weaker node kill


def test_fast_node_kill_gives_the_blood_response(rr_short, typical):
    """With nodes killed much faster than blood, node burden falls below half before the ALC does
    and never progresses, so the blood-and-node best response is the blood-only one; with a slow
    node kill, fewer patients respond."""
    p = typical.replace(relapsed=1.0)
    n = 40
    rng = np.random.default_rng(3)
    kills = float(p["kill"]) * np.exp(rng.normal(0.0, 0.7, n))
    visits = np.arange(0, rr_short.n_days + 1, 28)
    labels = {}
    for f_node in (100.0, 0.2):
        values = {k: [] for k in RESPONSE.observables_read}
        for kill in kills:
            df = lenapk.simulate(rr_short, p.replace(kill=float(kill), f_node=f_node))
            for k in values:
                values[k].append(df[k].to_numpy())
        values = {k: np.array(a) for k, a in values.items()}
        labels[f_node], _ = RESPONSE.best(values, visits)
        if f_node == 100.0:
            blood, _ = dataclasses.replace(RESPONSE, also=()).best(values, visits)
    np.testing.assert_array_equal(labels[100.0], blood)
    responders = {f: np.isin(lab, ("CR", "PR")).sum() for f, lab in labels.items()}
    assert 5 <= responders[100.0] < n
    assert responders[0.2] < responders[100.0]


def test_complete_remission_is_a_partial_remission_with_more():
    """Baseline ALC 6 falling to 3.5 with the nodes gone meets the CR thresholds but not the PR
    ratio (0.58 > 0.5): stable disease, in the hard labels and in the smooth margins alike."""
    v = {"alc": np.array([[6.0, 3.5]]), "nodes": np.array([[1.0, 0.05]]), "anc": np.full((1, 2), 3.0)}
    label, _ = CRITERIA.best(v, np.array([1]))
    assert list(label) == ["SD"]
    at = CRITERIA.at_day(v, 1)
    assert (float(at["CR"][0]), float(at["SD"][0])) == (0.0, 1.0)
    m = CRITERIA.best_margins(v, [1], 1e-4)
    assert float(m["cr"][0]) < 0 and float(m["sd"][0]) > 0
