"""An independent NumPy/SciPy statement of the lenalidomide-CLL equations, for reference solves.

PK is integrated here as ODE states (depot, central), not in closed form, so the comparison
checks the closed form, the equations and the solver at once."""

import math

import numpy as np
from scipy.integrate import solve_ivp

LN2 = math.log(2.0)


def rhs(t_day, y, p):
    depot, central = y[0], y[1]
    ffm = p["ffm"] / 55.0
    cl = p["cl"] * ffm**0.75 * (1.0 - p["f_renal"] + p["f_renal"] * p["crcl"] / 90.0)
    v = p["v"] * ffm
    k, ka = cl / v, p["ka"]
    conc = 1000.0 * central / v
    d_depot = -ka * depot * 24.0
    d_central = (ka * depot - k * central) * 24.0
    x, act = y[2], y[3]
    x0 = max(p["alc0"] - p["normal_lymph"], 1e-3)
    d_act = p["k_act"] * (1 + p["emax_act"] * conc / (p["ec50_act"] + conc) - act)
    growth = p["growth"] * p["f_relapsed"] ** p["relapsed"]
    kill = p["kill"] * p["f_del17p"] ** p["del17p"] * p["f_ighv"] ** p["ighv_unmutated"]
    d_x = (growth * (1 - x / p["clone_max"]) - kill * (act - 1)) * x
    kill_typical = p["kill"] * max(act - 1, 1e-12)
    node_kill = p["f_node"] * kill * (act - 1) * (kill_typical / p["node_kill_ref"]) ** (p["h_node"] - 1)
    d_log_nodes = growth * (1 - x / p["clone_max"]) - node_kill
    out = [d_depot, d_central, d_x, d_act]
    e_n = conc ** p["hill_n"] / (p["ec50_n"] ** p["hill_n"] + conc ** p["hill_n"])
    e_p = conc / (p["ec50_p"] + conc)
    lineages = (
        (4, e_n, "mtt_n", "gamma_n", "anc0", 4.0 / p["mtt_n"]),
        (9, e_p, "mtt_p", "gamma_p", "plt0", 1.0 / p["t_life_p"]),
    )
    for off, e, mtt, gamma, base, kcirc in lineages:
        ktr = 4.0 / p[mtt]
        prol, t1, t2, t3, circ = y[off : off + 5]
        out += [
            ktr * prol * (1 - e) * (p[base] / circ) ** p[gamma] - ktr * prol,
            ktr * (prol - t1),
            ktr * (t1 - t2),
            ktr * (t2 - t3),
            kcirc * (t3 - circ),
        ]
    help_ = (1 + p["e_help"] * (act - 1)) * (p["k_supp"] + x0) / (p["k_supp"] + x)
    capacity = y[17]  # log of antibody-secreting capacity, a first-order lag of log(help)
    for i, ig in enumerate(("igg", "igm", "iga")):
        kdeg = LN2 / p[f"t_half_{ig}"]
        base, ceiling = p[f"{ig}0"], (p[f"uln_{ig}"] ** 4 + p[f"{ig}0"] ** 4) ** 0.25
        rise = math.exp(p[f"beta_{ig}"] * capacity)
        steady = base * rise / (1 + base / ceiling * (rise - 1))
        out.append(kdeg * (steady - y[14 + i]))
    out.append((math.log(help_) - capacity) / p["t_rec"])
    naive, e_f = y[18], conc / (p["ec50_flare"] + conc)
    out.append(p["k_resens"] * (1 - naive) - p["k_tol"] * e_f * naive)
    out.append(p["k_flare"] * p["f_bulky_flare"] ** p["bulky"] * e_f * naive * x / (x + p["k_burden_flare"]))
    out.append(d_log_nodes)
    return np.array(out)


def initial(p):
    x0 = max(p["alc0"] - p["normal_lymph"], 1e-3)
    ig0 = [p["igg0"], p["igm0"], p["iga0"]]
    return np.array([0.0, 0.0, x0, 1.0] + [p["anc0"]] * 5 + [p["plt0"]] * 5 + ig0 + [0.0, 1.0, 0.0, 0.0])


def solve_daily(p, doses, *, method="Radau", rtol=1e-10, atol=1e-12):
    """Pre-dose states at days 0..len(doses) (dose of day d added to the depot at t = d)."""
    y = initial(p)
    out = [y.copy()]
    for d, dose in enumerate(doses):
        y = y.copy()
        y[0] += dose
        sol = solve_ivp(rhs, (d, d + 1), y, method=method, rtol=rtol, atol=atol, args=(p,))
        assert sol.success, sol.message
        y = sol.y[:, -1]
        out.append(y.copy())
    return np.array(out)


def solve_events(p, time_h, amount_mg, t_out_day, *, compartment=None, method="DOP853", rtol=1e-11, atol=1e-13):
    """States at the output times ``t_out_day`` (days, sorted) for bolus doses ``amount_mg`` at
    any times ``time_h`` (hours, sorted) into ``compartment`` (0 depot, 1 central; default depot).
    A dose at an output time is given after that output (pre-dose, as ``lenapk.simulate``)."""
    time_d = np.asarray(time_h, dtype=float) / 24.0
    amount = np.asarray(amount_mg, dtype=float)
    cmt = np.zeros(time_d.size, dtype=int) if compartment is None else np.asarray(compartment, dtype=int)
    t_out = np.asarray(t_out_day, dtype=float)
    y, a = initial(p), 0.0
    out = [y.copy() for _ in t_out[t_out <= 0.0]]
    for b in np.unique(np.append(time_d, t_out[-1])):
        if b > a:
            ts = t_out[(t_out > a) & (t_out <= b)]
            sol = solve_ivp(
                rhs, (a, b), y, method=method, rtol=rtol, atol=atol, args=(p,), t_eval=np.unique(np.append(ts, b))
            )
            assert sol.success, sol.message
            out += list(sol.y[:, : ts.size].T)
            y, a = sol.y[:, -1], b
        for j in np.flatnonzero(time_d == b):
            y = y.copy()
            y[cmt[j]] += amount[j]
    return np.array(out)
