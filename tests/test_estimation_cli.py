"""Built-in population models (by name, from TOML, from a Python file), their expression
evaluator, and ``lenapk estimate`` end to end on the theophylline data against nlmixr2's
published FOCE-I fit (tests/data/nonmem/SOURCES.md; /work/shared/reference-data/README.md)."""

import json
import math
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from lenapk.cli import app
from lenapk.estimation import PopulationModel, read_nonmem
from lenapk.estimation._builtin import builtin_model, load_model, parse_expression

THEO = Path(__file__).parent / "data" / "nonmem" / "nlmixr2data_theo_sd.csv"
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


# ------------------------------------------------------------------ the expression evaluator
def test_expressions_evaluate_as_numpy_does_and_trace_under_jit_and_grad():
    text = "exp(tcl + eta_cl) * (WT / 70) ** 0.75 - sqrt(tv) / log(2.5) + -tka * 3"
    e = parse_expression("CL", text)
    assert e.names == ("tcl", "eta_cl", "WT", "tv", "tka")
    rng = np.random.default_rng(1)
    for _ in range(5):
        v = dict(zip(e.names, rng.uniform(0.1, 2.0, 5)))
        v["WT"] *= 50
        expected = (
            np.exp(v["tcl"] + v["eta_cl"]) * (v["WT"] / 70) ** 0.75 - np.sqrt(v["tv"]) / np.log(2.5) - v["tka"] * 3
        )
        assert float(e(v)) == pytest.approx(expected, rel=1e-12)
    # d/dtcl of exp(tcl + eta) * (WT/70)^0.75 is the term itself
    v = {"tcl": 0.3, "eta_cl": -0.1, "WT": 80.0, "tv": 2.0, "tka": 0.5}
    grad = jax.jit(jax.grad(lambda t: e({**v, "tcl": t})))(0.3)
    assert float(grad) == pytest.approx(np.exp(0.2) * (80 / 70) ** 0.75, rel=1e-12)


@pytest.mark.parametrize(
    "text, piece",
    [
        ("__import__('os')", "__import__"),
        ("tcl.real", "tcl.real"),
        ("().__class__", "__class__"),
        ("tcl if tv else 1", "IfExp"),
        ("tcl < 1", "Compare"),
        ("tcl % 2", "tcl % 2"),
        ("'x'", "not a number"),
        ("exp(tcl, 2)", "exp(tcl, 2)"),
        ("tcl +", "not a valid expression"),
    ],
)
def test_expressions_refuse_everything_else_naming_the_piece(text, piece):
    with pytest.raises(ValueError) as err:
        parse_expression("CL", text)
    msg = str(err.value)
    assert "'CL'" in msg and repr(text) in msg and piece in msg


def test_unknown_names_and_bad_keys_are_named():
    with pytest.raises(ValueError, match=r"'CL'.*\['WT'\]"):
        builtin_model("one_cmt_oral", {"parameters": {"CL": "exp(tcl + eta_cl) * WT"}})
    with pytest.raises(ValueError, match=r"'CL'.*\['tcl2'\]"):
        builtin_model("one_cmt_oral", {"parameters": {"CL": "exp(tcl2 + eta_cl)"}})
    with pytest.raises(ValueError, match=r"\['thetas'\].*allowed: model, theta"):
        builtin_model("one_cmt_oral", {"thetas": {"tcl": 1.0}})
    with pytest.raises(ValueError, match=r"\[sigma\].*\['prop_sd'\].*allowed: add_sd"):
        builtin_model("one_cmt_oral", {"model": {"error": "additive"}, "sigma": {"prop_sd": 0.1}})
    with pytest.raises(ValueError, match=r"\[theta\] tcl.*\['lo'\].*init, lower, upper, fixed"):
        builtin_model("one_cmt_oral", {"theta": {"tcl": {"init": 1.0, "lo": 0}}})
    with pytest.raises(ValueError, match=r"\['tz'\] declared but used by no parameter"):
        builtin_model("one_cmt_oral", {"theta": {"tz": 1.0}})
    with pytest.raises(ValueError, match="one_cmt_iv, one_cmt_oral, two_cmt_iv, two_cmt_oral"):
        load_model("three_cmt")


# ------------------------------------------------------------------ built-in models and TOML
def test_default_models_are_log_normal_with_the_documented_starting_values():
    m = builtin_model("two_cmt_oral")
    inits = {t.name: t.init for t in m.thetas}
    assert inits == pytest.approx(
        {"tcl": 0.0, "tv": math.log(10), "tq": 0.0, "tvp": math.log(20), "tka": 0.0}, abs=1e-15
    )
    assert m.etas == ("eta_cl", "eta_v", "eta_q", "eta_vp", "eta_ka")
    np.testing.assert_array_equal(m.omega, 0.1 * np.eye(5))
    assert m.error.kind == "proportional" and [(s.name, s.init) for s in m.sigma] == [("prop_sd", 0.2)]
    eta = jnp.array([0.1, -0.2, 0.3, 0.0, 0.05])
    p = m.individual_parameters(m.initial(), eta, {})
    expected = {"CL": 1.0, "V": 10.0, "Q": 1.0, "VP": 20.0, "KA": 1.0}
    for k, (name, value) in enumerate(expected.items()):
        assert float(p[name]) == pytest.approx(value * np.exp(float(eta[k])), rel=1e-12)
    # a default theta read by a second expression is still one theta
    m = builtin_model("one_cmt_oral", {"parameters": {"ALAG": "0.1 * exp(tka)"}})
    assert [t.name for t in m.thetas] == ["tcl", "tv", "tka"] and m.etas == ("eta_cl", "eta_v", "eta_ka")


TOML = """
covariates = ["WT"]
[model]
error = "combined2"
[theta]
tka = 0.45
tcl = {init = 1.0, lower = -5, upper = 5}
tv = {init = 3.45, fixed = true}
tf = -0.5
[omega]
eta_ka = 0.6
[omega.block]
etas = ["eta_cl", "eta_v"]
values = [0.3, 0.02, 0.1]
[sigma]
add_sd = 0.7
prop_sd = {init = 0.1, lower = 0.01, upper = 1}
[parameters]
CL = "exp(tcl + eta_cl) * (WT / 70) ** 0.75"
F = "1 / (1 + exp(-tf))"
ALAG = "0.1 * exp(tka) / KA"
"""


def test_a_toml_model_has_the_files_values(tmp_path):
    path = tmp_path / "model.toml"
    path.write_text(TOML)
    m = load_model("one_cmt_oral", path)
    assert [(t.name, t.init, t.lower, t.upper, t.fixed) for t in m.thetas] == [
        ("tka", 0.45, -np.inf, np.inf, False),
        ("tcl", 1.0, -5.0, 5.0, False),
        ("tv", 3.45, -np.inf, np.inf, True),
        ("tf", -0.5, -np.inf, np.inf, False),
    ]
    assert m.etas == ("eta_ka", "eta_cl", "eta_v") and m.omega_blocks == (("eta_cl", "eta_v"),)
    np.testing.assert_array_equal(m.omega, [[0.6, 0, 0], [0, 0.3, 0.02], [0, 0.02, 0.1]])
    assert m.error.kind == "combined2" and m.covariates == ("WT",)
    assert [(s.name, s.init, s.lower, s.upper) for s in m.sigma] == [
        ("add_sd", 0.7, -np.inf, np.inf),
        ("prop_sd", 0.1, 0.01, 1.0),
    ]
    p = m.individual_parameters(m.initial(), jnp.array([0.2, -0.1, 0.05]), {"WT": jnp.asarray(56.0)})
    assert float(p["CL"]) == pytest.approx(np.exp(0.9) * 0.8**0.75, rel=1e-12)
    assert float(p["V"]) == pytest.approx(np.exp(3.5), rel=1e-12)
    assert float(p["KA"]) == pytest.approx(np.exp(0.65), rel=1e-12)
    assert float(p["F"]) == pytest.approx(1 / (1 + np.exp(0.5)), rel=1e-12)
    assert float(p["ALAG"]) == pytest.approx(0.1 * np.exp(-0.2), rel=1e-12)  # tka again: one theta, not two


def test_the_built_in_oral_model_predicts_the_bateman_function():
    """Subject 1 of theo_sd at the model's initial values against the closed form written out."""
    data = read_nonmem(THEO)
    path_free = {"model": {"error": "additive"}, "theta": {"tka": 0.45, "tcl": 1.0, "tv": 3.45}}
    m = builtin_model("one_cmt_oral", path_free)
    s = data.subjects.subject(0)
    p = m.individual_parameters(m.initial(), jnp.zeros(3), {})
    f = np.asarray(m.predict(p, s))[np.asarray(s.obs_mask)]
    ka, cl, v = np.exp(0.45), np.exp(1.0), np.exp(3.45)
    t, dose = np.asarray(s.obs_time)[np.asarray(s.obs_mask)], float(s.dose_amt[0])
    expected = dose * ka / (v * (ka - cl / v)) * (np.exp(-cl / v * t) - np.exp(-ka * t))
    np.testing.assert_allclose(f, expected, rtol=1e-10)


def test_load_model_from_a_python_file(tmp_path):
    body = """
        import numpy as np
        from lenapk.estimation import PopulationModel, Theta, ResidualError, PK_STRUCTURES

        def model():
            return PopulationModel(
                thetas=[Theta("lcl", 0.5), Theta("lv", 2.0)], etas=["e1"], omega=np.diag([0.2]),
                individual=lambda th, e, c: {"CL": np.exp(th["lcl"] + e["e1"]), "V": np.exp(th["lv"])},
                predict=PK_STRUCTURES["one_cmt_iv"].predict, error=ResidualError("additive"),
                sigma=[Theta("add_sd", 0.3)], name="mine")
        """
    (tmp_path / "mine.py").write_text(textwrap.dedent(body))
    m = load_model(str(tmp_path / "mine.py"))
    assert isinstance(m, PopulationModel) and m.name == "mine" and [t.init for t in m.thetas] == [0.5, 2.0]
    (tmp_path / "inst.py").write_text(textwrap.dedent(body) + "\nmodel = model()\n")
    assert load_model(str(tmp_path / "inst.py")).name == "mine"
    (tmp_path / "none.py").write_text("x = 1\n")
    with pytest.raises(ValueError, match="must define `model`"):
        load_model(str(tmp_path / "none.py"))
    with pytest.raises(FileNotFoundError, match="missing.py"):
        load_model(str(tmp_path / "missing.py"))
    cfg = tmp_path / "c.toml"
    cfg.write_text("[theta]\ntcl = 1.0\n")
    with pytest.raises(ValueError, match="built-in models only"):
        load_model(str(tmp_path / "mine.py"), cfg)


# ------------------------------------------------------------------ the command line
THEO_TOML = """
[model]
error = "additive"
[theta]
tka = 0.45
tcl = 1.0
tv = 3.45
[omega]
eta_ka = 0.6
eta_cl = 0.3
eta_v = 0.1
[sigma]
add_sd = 0.7
[estimate]
vpc_replicates = 100
"""


@pytest.fixture(scope="module")
def theo_fit(tmp_path_factory):
    """One FOCE-I fit of theo_sd through the command line (~1 min), shared by the tests below."""
    folder = tmp_path_factory.mktemp("theo")
    cfg = folder / "theo.toml"
    cfg.write_text(THEO_TOML)
    res = run(
        "estimate",
        "--data",
        THEO,
        "--model",
        "one_cmt_oral",
        "--config",
        cfg,
        "--method",
        "focei",
        "--hessian",
        "fd",  # the AD Hessian compiles for ~30 s; test_estimation.py checks it on a small model
        "--out",
        folder / "out",
    )
    assert res.exit_code == 0, res.output
    return folder / "out", res.output


def test_the_cli_fit_matches_nlmixr2(theo_fit):
    out, _ = theo_fit
    fit = json.loads((out / "fit.json").read_text())
    assert fit["ofv"] == pytest.approx(116.8044, abs=0.01)  # nlmixr2 FOCE-I OBJF
    assert fit["minus2ll"] == pytest.approx(fit["ofv"] + 132 * np.log(2 * np.pi), abs=1e-9)
    assert fit["method"] == "focei" and fit["converged"] is True
    assert fit["n_subjects"] == 12 and fit["n_observations"] == 132
    assert fit["objective_note"] == "-2LL without the n*log(2*pi) constant"
    assert fit["covariance_ok"] is True and fit["condition_number"] > 1
    assert fit["aic"] == pytest.approx(fit["minus2ll"] + 2 * 7) and fit["bic"] > fit["aic"]
    assert set(fit["shrinkage"]) == {
        "eta_shrinkage(eta_ka)",
        "eta_shrinkage(eta_cl)",
        "eta_shrinkage(eta_v)",
        "epsilon_shrinkage",
    }
    est = pd.read_csv(out / "estimates.csv").set_index("parameter")
    assert list(est.columns) == ["estimate", "se", "rse_percent", "kind", "fixed"]
    for name, published in {"tka": 0.464, "tcl": 1.01, "tv": 3.46}.items():
        assert est.loc[name, "estimate"] == pytest.approx(published, abs=0.01), name
    assert est.loc["add_sd", "estimate"] == pytest.approx(0.693, abs=0.005)
    # nlmixr2's BSV CV% 70.6 / 26.8 / 13.9 (sqrt(exp(omega) - 1))
    cv = {e: 100 * np.sqrt(np.expm1(est.loc[f"omega({e},{e})", "estimate"])) for e in ("eta_ka", "eta_cl", "eta_v")}
    assert cv == pytest.approx({"eta_ka": 70.6, "eta_cl": 26.8, "eta_v": 13.9}, abs=1.0)
    assert (est["se"] > 0).all() and np.allclose(est["rse_percent"], 100 * est["se"] / est["estimate"].abs())


def test_the_cli_writes_tables_and_the_run_log(theo_fit):
    out, output = theo_fit
    tables = pd.read_csv(out / "tables.csv")
    assert len(tables) == 132 and {"ID", "TIME", "DV", "PRED", "IPRED", "CWRES", "IWRES"} <= set(tables.columns)
    np.testing.assert_allclose(tables["IRES"], tables["DV"] - tables["IPRED"], atol=1e-9)
    etas = pd.read_csv(out / "etas.csv")
    assert list(etas.columns) == ["ID", "eta_ka", "eta_cl", "eta_v"] and len(etas) == 12
    vpc = pd.read_csv(out / "vpc.csv")
    assert vpc["n_obs"].sum() == 132 and (vpc["sim_p50_lo"] <= vpc["sim_p50_hi"]).all()
    log = json.loads((out / "run.json").read_text())
    assert log["status"] == "finished" and log["options"]["vpc_replicates"] == 100
    assert log["option_sources"]["vpc_replicates"] == "config" and log["option_sources"]["method"] == "command line"
    assert "OFV 116.80" in output


def test_the_cli_report_shows_the_estimates_and_figures(theo_fit):
    out, _ = theo_fit
    html = (out / "report.html").read_text()
    est = pd.read_csv(out / "estimates.csv").set_index("parameter")
    assert "FOCE-I" in html and "-2LL without the n*log(2*pi) constant" in html
    for name in ("tka", "tcl", "tv", "add_sd", "omega(eta_ka,eta_ka)"):
        assert f"<td>{name}</td>" in html, name
    assert f"{est.loc['tcl', 'estimate']:.4g}" in html
    cv_ka = 100 * np.sqrt(np.expm1(est.loc["omega(eta_ka,eta_ka)", "estimate"]))
    assert f"CV {cv_ka:.1f}%" in html
    assert html.count("<img") + html.count("<svg") >= 5
    assert "Correlation of the estimates" in html and "eta_shrinkage(eta_cl)" in html


def test_the_cli_refuses_bad_options_naming_them(tmp_path):
    cases = [
        (["--method", "saem"], "--method"),
        (["--vpc-replicates", "5"], "--vpc-replicates"),
        (["--covariates", "W T"], "--covariates"),
        (["--model", "three_cmt"], "one_cmt_oral"),
    ]
    for extra, named in cases:
        args = ["estimate", "--data", THEO, "--model", "one_cmt_oral", "--out", tmp_path / "x", *extra]
        res = run(*args)
        assert res.exit_code == 2 and named in res.output, (extra, res.output)
    res = run("estimate", "--data", tmp_path / "none.csv", "--model", "one_cmt_oral", "--out", tmp_path / "x")
    assert res.exit_code == 2 and "--data" in res.output
    res = run("estimate", "--model", "one_cmt_oral", "--out", tmp_path / "x")
    assert res.exit_code == 2 and "--data is required" in res.output
    for toml, named in [("[thetaa]\ntcl = 1.0\n", "['thetaa']"), ("[estimate]\nmethods = 'fo'\n", "['methods']")]:
        (tmp_path / "m.toml").write_text(toml)
        res = run(
            "estimate",
            "--data",
            THEO,
            "--model",
            "one_cmt_oral",
            "--config",
            tmp_path / "m.toml",
            "--out",
            tmp_path / "x",
        )
        assert res.exit_code == 2 and named in res.output and "m.toml" in res.output, res.output
    assert not (tmp_path / "x").exists()
