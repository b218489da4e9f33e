"""The lenalidomide-CLL model of ``lenapk.LenalidomideCLL`` written for two peer tools.

Same equations as :mod:`lenapk.models.cll` with the PK as ODE states instead of lenapk's closed form
(time in days, PK rate constants in 1/h, hence the factors of 24)::

    dA_d/dt = -24 ka A_d,   dA_c/dt = 24 (ka A_d - k A_c),   C = 1000 A_c / V   [ng/mL]

followed by the 19 PD states in lenapk's order (clone, activation, neutrophil chain, platelet
chain, IgG, IgM, IgA, antibody-secreting capacity, flare sensitivity, cumulative flare hazard,
log node burden).  A dose (mg) is a bolus added to A_d at the start of each day.

* :class:`ScipyLSODA`: ``scipy.integrate.solve_ivp(method="LSODA")``, one call per day from a
  Python dose loop, right-hand side in plain Python floats (the fastest pure-Python form for a
  21-state system; numpy calls on 21-element arrays cost more than the arithmetic).
* :class:`RoadRunnerPeer`: libroadrunner (LLVM-compiled SBML, SUNDIALS CVODE).  The SBML is
  written by hand below (no antimony/libsbml needed).  Three dosing strategies are available:
  ``"event"`` (default; one self-rescheduling SBML event ``time >= t_next`` that adds the day's
  dose, looked up from a piecewise function of ``t_next``, and advances ``t_next`` by one day),
  ``"events"`` (one SBML event per dosing day) and ``"loop"`` (``simulate`` one day at a time
  from Python and add the dose to the depot between calls).  ``run.py`` times them and uses
  the fastest.

Both peers take per-patient parameters as a plain ``dict`` of floats (the output of
:func:`constants`), so the same numbers go into lenapk and into the peers.
"""

from __future__ import annotations

import math

import numpy as np

import lenapk

PD_STATES = lenapk.LenalidomideCLL.state_names
IG = ("igg", "igm", "iga")


def constants(params: "lenapk.ParameterSet", model=None) -> dict[str, float]:
    """Per-patient constants (lenapk's ``derive``) plus PK (ka [1/h], k [1/h], V [L]) and the
    initial PD state, as plain floats, for one patient (scalar parameter set)."""
    model = lenapk.LenalidomideCLL() if model is None else model
    c = {k: float(v) for k, v in model.derive(params).items()}
    c["log_supp0"] = math.log(c["supp0"])  # log H = ln(1 + e_help (A - 1)) + log_supp0 - ln(k_supp + X)
    pk = model.pk_constants(params)
    c["pk_ka"], c["pk_k"], c["pk_v"] = float(pk.ka), float(pk.k), float(pk.v)
    c["y0"] = [float(x) for x in np.asarray(model.initial_state(model.derive(params)))]
    return c


# ----------------------------------------------------------------------------- scipy
class ScipyLSODA:
    """One patient at a time with ``solve_ivp(method="LSODA")``, one solve per day."""

    def __init__(self, rtol: float = 1e-6, atol: float = 1e-8):
        self.rtol, self.atol = rtol, atol

    @staticmethod
    def make_rhs(c):
        ka24, k24, v = 24.0 * c["pk_ka"], 24.0 * c["pk_k"], c["pk_v"]
        k_act, emax, ec50a = c["k_act"], c["emax_act"], c["ec50_act"]
        g, kill, xmax = c["growth_eff"], c["kill_eff"], c["clone_max"]
        ktr_n, gam_n, lb_n, ec50_n, hill_n = c["ktr_n"], c["gamma_n"], c["log_anc0"], c["ec50_n"], c["hill_n"]
        ktr_p, gam_p, lb_p, ec50_p, kcirc_p = c["ktr_p"], c["gamma_p"], c["log_plt0"], c["ec50_p"], c["kcirc_p"]
        e_help, ls0, ksupp = c["e_help"], c["log_supp0"], c["k_supp"]
        ks_g, ks_m, ks_a = c["ksyn0_igg"], c["ksyn0_igm"], c["ksyn0_iga"]
        kd_g, kd_m, kd_a = c["kdeg_igg"], c["kdeg_igm"], c["kdeg_iga"]
        b_g, b_m, b_a = c["beta_igg"], c["beta_igm"], c["beta_iga"]
        s_g, s_m, s_a = c["sat_igg"], c["sat_igm"], c["sat_iga"]
        k_rec, f_node, h_node, kill_ref = c["k_rec"], c["f_node"], c["h_node"], c["node_kill_ref"]
        kill_typ = c["kill"]
        ec50_f, k_resens, k_tol, k_flare, k_bf = (
            c["ec50_flare"],
            c["k_resens"],
            c["k_tol"],
            c["k_flare_eff"],
            c["k_burden_flare"],
        )
        ec50_nh = ec50_n**hill_n
        exp, log, log1p = math.exp, math.log, math.log1p

        def synthesis(ks, beta, sat, cap):
            rise = exp(beta * cap)
            return ks * rise / (1.0 + sat * (rise - 1.0))

        def rhs(t, y):
            ad, ac, x, a, np_, n1, n2, n3, anc, pp, p1, p2, p3, plt, igg, igm, iga, cap, naive, _, _ = y
            conc = 1000.0 * ac / v
            ch = conc**hill_n if conc > 0.0 else 0.0
            e_n = ch / (ec50_nh + ch)
            e_p = conc / (ec50_p + conc)
            e_f = conc / (ec50_f + conc)
            fb_n = exp(gam_n * (lb_n - log(anc)))
            fb_p = exp(gam_p * (lb_p - log(plt)))
            lh = log1p(e_help * (a - 1.0)) + ls0 - log(ksupp + x)
            growth, kill_a = g * (1.0 - x / xmax), kill * (a - 1.0)
            return [
                -ka24 * ad,
                ka24 * ad - k24 * ac,
                (growth - kill_a) * x,
                k_act * (1.0 + emax * conc / (ec50a + conc) - a),
                ktr_n * np_ * ((1.0 - e_n) * fb_n - 1.0),
                ktr_n * (np_ - n1),
                ktr_n * (n1 - n2),
                ktr_n * (n2 - n3),
                ktr_n * (n3 - anc),
                ktr_p * pp * ((1.0 - e_p) * fb_p - 1.0),
                ktr_p * (pp - p1),
                ktr_p * (p1 - p2),
                ktr_p * (p2 - p3),
                kcirc_p * (p3 - plt),
                synthesis(ks_g, b_g, s_g, cap) - kd_g * igg,
                synthesis(ks_m, b_m, s_m, cap) - kd_m * igm,
                synthesis(ks_a, b_a, s_a, cap) - kd_a * iga,
                k_rec * (lh - cap),
                k_resens * (1.0 - naive) - k_tol * e_f * naive,
                k_flare * e_f * naive * x / (x + k_bf),
                growth - f_node * kill_a * (kill_typ * max(a - 1.0, 1e-12) / kill_ref) ** (h_node - 1.0),
            ]

        return rhs

    def simulate(self, c: dict, doses) -> np.ndarray:
        """States at the start of each day (pre-dose) and at the end: shape ``(days + 1, 21)``
        (depot, central, then lenapk's 19 PD states)."""
        from scipy.integrate import solve_ivp

        rhs = self.make_rhs(c)
        doses = np.asarray(doses, dtype=float)
        y = np.array([0.0, 0.0, *c["y0"]])
        out = np.empty((doses.size + 1, y.size))
        for d, dose in enumerate(doses):
            out[d] = y
            y = y.copy()
            y[0] += dose
            sol = solve_ivp(rhs, (float(d), float(d + 1)), y, method="LSODA", rtol=self.rtol, atol=self.atol)
            if not sol.success:
                raise RuntimeError(f"LSODA failed on day {d}: {sol.message}")
            y = sol.y[:, -1]
        out[-1] = y
        return out


# ----------------------------------------------------------------------------- roadrunner
_STATE_IDS = (
    "Ad",
    "Ac",
    "X",
    "A",
    "NP",
    "NT1",
    "NT2",
    "NT3",
    "ANC",
    "PP",
    "PT1",
    "PT2",
    "PT3",
    "PLT",
    "IGG",
    "IGM",
    "IGA",
    "CAP",
    "FN",
    "FH",
    "LN",
)
_CONST_IDS = (
    "pk_ka",
    "pk_k",
    "pk_v",
    "k_act",
    "emax_act",
    "ec50_act",
    "growth_eff",
    "clone_max",
    "kill_eff",
    "ktr_n",
    "gamma_n",
    "log_anc0",
    "ec50_n",
    "hill_n",
    "ktr_p",
    "gamma_p",
    "log_plt0",
    "ec50_p",
    "kcirc_p",
    "e_help",
    "log_supp0",
    "k_supp",
    "ksyn0_igg",
    "ksyn0_igm",
    "ksyn0_iga",
    "kdeg_igg",
    "kdeg_igm",
    "kdeg_iga",
    "beta_igg",
    "beta_igm",
    "beta_iga",
    "sat_igg",
    "sat_igm",
    "sat_iga",
    "k_rec",
    "ec50_flare",
    "k_resens",
    "k_tol",
    "k_flare_eff",
    "k_burden_flare",
    "f_node",
    "h_node",
    "node_kill_ref",
    "kill",
)

_RATES = {
    "Ad": "-24 * pk_ka * Ad",
    "Ac": "24 * (pk_ka * Ad - pk_k * Ac)",
    "X": "(growth_eff * (1 - X / clone_max) - kill_eff * (A - 1)) * X",
    "A": "k_act * (1 + emax_act * C / (ec50_act + C) - A)",
    "NP": "ktr_n * NP * ((1 - EN) * exp(gamma_n * (log_anc0 - ln(ANC))) - 1)",
    "NT1": "ktr_n * (NP - NT1)",
    "NT2": "ktr_n * (NT1 - NT2)",
    "NT3": "ktr_n * (NT2 - NT3)",
    "ANC": "ktr_n * (NT3 - ANC)",
    "PP": "ktr_p * PP * ((1 - C / (ec50_p + C)) * exp(gamma_p * (log_plt0 - ln(PLT))) - 1)",
    "PT1": "ktr_p * (PP - PT1)",
    "PT2": "ktr_p * (PT1 - PT2)",
    "PT3": "ktr_p * (PT2 - PT3)",
    "PLT": "kcirc_p * (PT3 - PLT)",
    "IGG": "ksyn0_igg * exp(beta_igg * CAP) / (1 + sat_igg * (exp(beta_igg * CAP) - 1)) - kdeg_igg * IGG",
    "IGM": "ksyn0_igm * exp(beta_igm * CAP) / (1 + sat_igm * (exp(beta_igm * CAP) - 1)) - kdeg_igm * IGM",
    "IGA": "ksyn0_iga * exp(beta_iga * CAP) / (1 + sat_iga * (exp(beta_iga * CAP) - 1)) - kdeg_iga * IGA",
    "CAP": "k_rec * (LH - CAP)",
    "FN": "k_resens * (1 - FN) - k_tol * C / (ec50_flare + C) * FN",
    "FH": "k_flare_eff * C / (ec50_flare + C) * FN * X / (X + k_burden_flare)",
    "LN": "growth_eff * (1 - X / clone_max) - f_node * kill_eff * (A - 1) * KS",
}
_ASSIGN = {
    "C": "1000 * Ac / pk_v",
    # C^h / (EC50^h + C^h) (C >= 0; 0^h = 0 for h > 0)
    "EN": "C ^ hill_n / (ec50_n ^ hill_n + C ^ hill_n)",
    # log1p is not in SBML's MathML; ln(1 + x) is exact enough at |x| <= 0.05 (x = e_help (A - 1))
    "LH": "ln(1 + e_help * (A - 1)) + log_supp0 - ln(k_supp + X)",
    # the node kill's steepness (k_typ / k_ref)^(h_node - 1), A - 1 floored at 1e-12
    "KS": "(kill * max(A - 1, 1e-12) / node_kill_ref) ^ (h_node - 1)",
}


def _dose_runs(doses):
    """Runs of equal doses as (start_day, end_day, dose) with end exclusive."""
    doses = np.asarray(doses, dtype=float)
    runs, start = [], 0
    for d in range(1, doses.size + 1):
        if d == doses.size or doses[d] != doses[start]:
            runs.append((start, d, float(doses[start])))
            start = d
    return runs


def _mathml(infix: str) -> str:
    """Tiny infix -> MathML converter for the expressions above (+ - * / ^ exp ln max, names,
    numbers, parentheses)."""
    import re

    tokens = re.findall(r"\d+\.\d*(?:e[-+]?\d+)?|\d+(?:e[-+]?\d+)?|[A-Za-z_]\w*|[-+*/()^,]", infix)
    pos = 0

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def take():
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def expr():
        node = term()
        while peek() in ("+", "-"):
            op = take()
            node = f"<apply><{'plus' if op == '+' else 'minus'}/>{node}{term()}</apply>"
        return node

    def term():
        node = unary()
        while peek() in ("*", "/"):
            op = take()
            node = f"<apply><{'times' if op == '*' else 'divide'}/>{node}{unary()}</apply>"
        return node

    def unary():
        if peek() == "-":
            take()
            return f"<apply><minus/>{unary()}</apply>"
        return power()

    def power():
        node = atom()
        if peek() == "^":
            take()
            node = f"<apply><power/>{node}{unary()}</apply>"
        return node

    def atom():
        tok = take()
        if tok == "(":
            node = expr()
            assert take() == ")"
            return node
        if tok in ("exp", "ln"):
            assert take() == "("
            arg = expr()
            assert take() == ")"
            return f"<apply><{tok}/>{arg}</apply>"
        if tok == "max":
            assert take() == "("
            first = expr()
            assert take() == ","
            second = expr()
            assert take() == ")"
            return f"<apply><max/>{first}{second}</apply>"
        if re.fullmatch(r"[\d.]+(?:e[-+]?\d+)?", tok):
            return f"<cn>{tok}</cn>"
        if tok == "time":
            return '<csymbol encoding="text" definitionURL="http://www.sbml.org/sbml/symbols/time">time</csymbol>'
        return f"<ci>{tok}</ci>"

    out = expr()
    assert pos == len(tokens), infix
    return out


def _math(infix: str) -> str:
    return f'<math xmlns="http://www.w3.org/1998/Math/MathML">{_mathml(infix)}</math>'


def sbml_model(c: dict, doses, dosing: str = "event") -> str:
    """SBML L3V1 text of the model for one patient; constants ``c`` from :func:`constants`."""
    doses = np.asarray(doses, dtype=float)
    y0 = [0.0, 0.0, *c["y0"]]
    p = []
    for name in _CONST_IDS:
        p.append(f'<parameter id="{name}" value="{c[name]!r}" constant="true"/>')
    for name, v in zip(_STATE_IDS, y0, strict=True):
        p.append(f'<parameter id="{name}" value="{v!r}" constant="false"/>')
    for name in _ASSIGN:
        p.append(f'<parameter id="{name}" constant="false"/>')
    rules = [f'<assignmentRule variable="{k}">{_math(e)}</assignmentRule>' for k, e in _ASSIGN.items()]
    rules += [f'<rateRule variable="{k}">{_math(e)}</rateRule>' for k, e in _RATES.items()]
    events = []

    def event(eid, trigger_mathml, assigns, initial_value="true"):
        a = "".join(
            f'<eventAssignment variable="{var}"><math xmlns="http://www.w3.org/1998/Math/MathML">'
            f"{m}</math></eventAssignment>"
            for var, m in assigns
        )
        return (
            f'<event id="{eid}" useValuesFromTriggerTime="true">'
            f'<trigger initialValue="{initial_value}" persistent="true">'
            f'<math xmlns="http://www.w3.org/1998/Math/MathML">{trigger_mathml}</math></trigger>'
            f"<listOfEventAssignments>{a}</listOfEventAssignments></event>"
        )

    t_sym = '<csymbol encoding="text" definitionURL="http://www.sbml.org/sbml/symbols/time">time</csymbol>'
    if dosing == "event":
        # one event, re-armed every day: time >= t_next  ->  Ad += dose(t_next); t_next += 1.
        # The trigger is false at t = 0 (initialValue false would fire at 0, which we do not
        # rely on): day 0's dose is in Ad's initial value.
        p.append('<parameter id="t_next" value="1" constant="false"/>')
        # dose(t_next): one piecewise branch per run of equal doses, 0 after the last day
        pieces = "".join(
            f"<piece><cn>{val!r}</cn><apply><lt/><ci>t_next</ci><cn>{end - 0.5!r}</cn></apply></piece>"
            for _, end, val in _dose_runs(doses)
        )
        dose_m = f"<piecewise>{pieces}<otherwise><cn>0.0</cn></otherwise></piecewise>"
        add = f"<apply><plus/><ci>Ad</ci>{dose_m}</apply>"
        nxt = "<apply><plus/><ci>t_next</ci><cn>1</cn></apply>"
        trig = f"<apply><geq/>{t_sym}<ci>t_next</ci></apply>"
        events.append(event("dose", trig, [("Ad", add), ("t_next", nxt)]))
        y0[0] = doses[0]
        p[len(_CONST_IDS)] = f'<parameter id="Ad" value="{float(doses[0])!r}" constant="false"/>'
    elif dosing == "events":
        for d in range(1, doses.size):
            if doses[d] > 0:
                trig = f"<apply><geq/>{t_sym}<cn>{float(d)!r}</cn></apply>"
                add = f"<apply><plus/><ci>Ad</ci><cn>{float(doses[d])!r}</cn></apply>"
                events.append(event(f"dose{d}", trig, [("Ad", add)]))
        p[len(_CONST_IDS)] = f'<parameter id="Ad" value="{float(doses[0])!r}" constant="false"/>'
    elif dosing != "loop":
        raise ValueError(f"dosing must be 'event', 'events' or 'loop', got {dosing!r}")
    ev = f"<listOfEvents>{''.join(events)}</listOfEvents>" if events else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<sbml xmlns="http://www.sbml.org/sbml/level3/version1/core" level="3" version="1">'
        '<model id="lenalidomide_cll">'
        '<listOfCompartments><compartment id="body" size="1" constant="true" spatialDimensions="3"/></listOfCompartments>'
        f"<listOfParameters>{''.join(p)}</listOfParameters>"
        f"<listOfRules>{''.join(rules)}</listOfRules>{ev}"
        "</model></sbml>"
    )


class RoadRunnerPeer:
    """libroadrunner, CVODE at rtol/atol; one RoadRunner instance (compiled once) reused for
    every patient with the same regimen by setting its parameters and initial state."""

    def __init__(
        self,
        doses,
        dosing: str = "event",
        rtol: float = 1e-6,
        atol: float = 1e-8,
        stiff: bool = False,
        c: dict | None = None,
    ):
        import roadrunner

        self.doses = np.asarray(doses, dtype=float)
        self.dosing = dosing
        c = constants(lenapk.LenalidomideCLL().default_params()) if c is None else c
        self.rr = roadrunner.RoadRunner(sbml_model(c, self.doses, dosing))
        integ = self.rr.getIntegrator()
        integ.setValue("relative_tolerance", rtol)
        integ.setValue("absolute_tolerance", atol)
        integ.setValue("stiff", stiff)
        integ.setValue("maximum_num_steps", 100000)
        self.selections = ["time", *_STATE_IDS]
        self.rr.timeCourseSelections = self.selections

    def _set_patient(self, c: dict):
        """Back to t = 0, then this patient's constants and initial state (current values; the
        compiled model is reused, no re-parsing)."""
        rr = self.rr
        rr.reset()
        for name in _CONST_IDS:
            rr.setValue(name, c[name])
        y0 = [0.0, 0.0, *c["y0"]]
        if self.dosing != "loop":
            y0[0] = self.doses[0]  # day 0's dose; events give days >= 1
        for name, v in zip(_STATE_IDS, y0, strict=True):
            rr.setValue(name, v)
        if self.dosing == "event":
            rr.setValue("t_next", 1.0)

    def simulate(self, c: dict) -> np.ndarray:
        """States at the start of each day and at the end, shape ``(days + 1, 21)``; the rows of
        the event strategies at whole days d >= 1 are taken just before that day's event fires
        (i.e. pre-dose; roadrunner reports the output time before event assignments there)."""
        self._set_patient(c)
        rr = self.rr
        n = self.doses.size
        if self.dosing == "loop":
            out = np.empty((n + 1, len(_STATE_IDS)))
            y = np.array([rr.getValue(s) for s in _STATE_IDS])
            for d in range(n):
                out[d] = y
                rr.setValue("Ad", rr.getValue("Ad") + self.doses[d])
                res = rr.simulate(float(d), float(d + 1), 2)
                y = np.asarray(res)[-1, 1:]
            out[-1] = y
            return out
        res = np.asarray(rr.simulate(0.0, float(n), n + 1))
        return res[:, 1:]
