r"""Population models by name (:data:`PK_STRUCTURES`), configured from TOML, or from a Python file.

:func:`builtin_model` makes a model of a closed-form structure.  By default every structural
parameter ``P`` is log-normal: ``P = exp(t<p> + eta_<p>)`` with the theta ``t<p>`` (lower case:
``tcl``, ``tv``, ``tka``, ``tq``, ``tvp``) on the log scale.  The default initial values
(``tcl = log 1``, ``tv = log 10``, ``tka = log 1``, ``tq = log 1``, ``tvp = log 20``; OMEGA 0.1
on the diagonal; proportional error ``prop_sd = 0.2``) are neutral starting points, not
estimates of any drug: give your own in the configuration.

The configuration (a dict, as :mod:`tomllib` reads a file)::

    covariates = ["WT"]                          # or in [model]; upper case, as read_nonmem names them
    [model]
    error = "additive"                           # a ResidualError kind (default "proportional")
    [theta]
    tcl = 1.0                                    # or {init = 1.0, lower = 0, upper = 10, fixed = false}
    [omega]
    eta_ka = 0.6                                 # diagonal variances
    fixed = false                                # OMEGA fixed as a whole
    [omega.block]                                # or [[omega.block]] for several blocks
    etas = ["eta_cl", "eta_v"]
    values = [0.1, 0.01, 0.1]                    # lower triangle, row by row
    [sigma]
    add_sd = 0.5                                 # or a table as for [theta]
    [parameters]
    CL = "exp(tcl + eta_cl) * (WT / 70) ** 0.75" # replaces the default for CL; also F, ALAG, new names

The default thetas and etas (``t<p>``, ``eta_<p>``) exist whenever an expression uses them; any
other name must be declared in ``[theta]`` or ``[omega]``, and a declared name no expression uses
is an error (it could not be estimated).  Evaluation order: the structural parameters left at
their default, then ``[parameters]`` in the file's order; an expression may use thetas, etas,
covariates and the parameters before it.  Expressions are checked by :func:`parse_expression`.
An ``[estimate]`` table (options of ``lenapk estimate``) is ignored here.

:func:`load_model` takes a built-in name (with a TOML file) or a Python file defining ``model``.
"""

from __future__ import annotations

import ast
import importlib.util
import math
import operator
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from ._closed_form import PK_STRUCTURES
from ._error import ResidualError
from ._model import PopulationModel, Theta

DEFAULT_THETA = {p: math.log(v) for p, v in {"CL": 1.0, "V": 10.0, "KA": 1.0, "Q": 1.0, "VP": 20.0}.items()}
DEFAULT_OMEGA = 0.1
DEFAULT_ERROR = "proportional"
DEFAULT_SIGMA = {"add_sd": 1.0, "prop_sd": 0.2, "pow_sd": 0.2, "pow_exponent": 1.0}
FUNCTIONS = {"exp": jnp.exp, "log": jnp.log, "sqrt": jnp.sqrt}
OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
OPERATORS[ast.Pow] = operator.pow
CONFIG_KEYS = ("model", "theta", "omega", "sigma", "parameters", "covariates", "estimate")
MODEL_KEYS = ("error", "covariates", "name")
THETA_KEYS = ("init", "lower", "upper", "fixed")
ALLOWED = "numbers, names, + - * / **, unary - and the functions exp, log, sqrt"


# ------------------------------------------------------------------ expressions
class Expression:
    """A checked parameter expression: ``names`` it reads; call it with name -> value."""

    def __init__(self, parameter: str, text: str):
        self.parameter, self.text = parameter, text
        try:
            self.tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as exc:
            raise self.error(f"is not a valid expression ({exc.msg})") from None
        for node in ast.walk(self.tree):
            self._check(node)
        called = {id(c.func) for c in ast.walk(self.tree) if isinstance(c, ast.Call)}
        read = [n for n in ast.walk(self.tree) if isinstance(n, ast.Name) and id(n) not in called]
        read.sort(key=lambda n: (n.lineno, n.col_offset))  # in the order written
        self.names = tuple(dict.fromkeys(n.id for n in read))

    def error(self, message: str) -> ValueError:
        return ValueError(f"parameter {self.parameter!r}: expression {self.text!r} {message}")

    def _check(self, node) -> None:
        piece = ast.unparse(node)
        number = isinstance(getattr(node, "value", None), (int, float)) and not isinstance(node.value, bool)
        if isinstance(node, ast.Constant) and not number:
            raise self.error(f"has {piece}, which is not a number; allowed: {ALLOWED}")
        if isinstance(node, ast.BinOp) and type(node.op) not in OPERATORS:
            raise self.error(f"has the operator in {piece!r}, which is not allowed; allowed: {ALLOWED}")
        if isinstance(node, ast.UnaryOp) and not isinstance(node.op, (ast.USub, ast.UAdd)):
            raise self.error(f"has the operator in {piece!r}, which is not allowed; allowed: {ALLOWED}")
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else None
            if name not in FUNCTIONS or node.keywords or len(node.args) != 1:
                raise self.error(f"has the call {piece!r}; only exp(x), log(x) and sqrt(x) may be called")
        allowed = (ast.Expression, ast.Constant, ast.BinOp, ast.UnaryOp, ast.Call, ast.Name, ast.Load)
        if not isinstance(node, allowed + tuple(OPERATORS) + (ast.USub, ast.UAdd)):
            raise self.error(f"has {piece!r} ({type(node).__name__}), which is not allowed; allowed: {ALLOWED}")

    def check_names(self, known: Mapping[str, str]) -> None:
        """Every name read is a key of ``known`` (name -> what it is), else a ValueError."""
        unknown = [n for n in self.names if n not in known]
        if unknown:
            listed = ", ".join(f"{n} ({kind})" for n, kind in known.items()) or "none"
            raise self.error(
                f"uses the unknown name(s) {unknown}: declare thetas in [theta], etas in [omega] and covariates "
                f"in covariates = [...]; known here: {listed}"
            )

    def __call__(self, values: Mapping):
        return self._eval(self.tree.body, values)

    def _eval(self, node, values):
        if isinstance(node, ast.Constant):
            return float(node.value)
        if isinstance(node, ast.Name):
            return values[node.id]
        if isinstance(node, ast.UnaryOp):
            x = self._eval(node.operand, values)
            return -x if isinstance(node.op, ast.USub) else x
        if isinstance(node, ast.BinOp):
            return OPERATORS[type(node.op)](self._eval(node.left, values), self._eval(node.right, values))
        return FUNCTIONS[node.func.id](self._eval(node.args[0], values))


def parse_expression(parameter: str, text: str) -> Expression:
    """``text`` parsed and checked (only :data:`ALLOWED` pieces); errors name ``parameter``,
    the expression and the offending piece.  Evaluates with :mod:`jax.numpy` (jit and grad)."""
    if not isinstance(text, str):
        raise ValueError(f"parameter {parameter!r}: the expression must be a string, got {text!r}")
    return Expression(parameter, text)


# ------------------------------------------------------------------ configuration pieces
def _table(config: Mapping, key: str) -> dict:
    value = config.get(key, {})
    if not isinstance(value, Mapping):
        raise ValueError(f"[{key}] must be a table, got {value!r}")
    return dict(value)


def _unknown(where: str, given, allowed) -> None:
    extra = [k for k in given if k not in allowed]
    if extra:
        raise ValueError(f"{where}: unknown key(s) {extra}; allowed: {', '.join(allowed)}")


def _theta(name: str, value, where: str) -> Theta:
    """A :class:`Theta` from a number or a table with :data:`THETA_KEYS`."""
    if isinstance(value, Mapping):
        _unknown(f"[{where}] {name}", value, THETA_KEYS)
        if "init" not in value:
            raise ValueError(f"[{where}] {name}: the table needs init, got {dict(value)}")
        kw = {k: value[k] for k in THETA_KEYS if k in value}
        for k in ("init", "lower", "upper"):
            if k in kw and (isinstance(kw[k], bool) or not isinstance(kw[k], (int, float))):
                raise ValueError(f"[{where}] {name}: {k} must be a number, got {kw[k]!r}")
        if not isinstance(kw.get("fixed", False), bool):
            raise ValueError(f"[{where}] {name}: fixed must be true or false, got {kw['fixed']!r}")
        return Theta(name, **{k: float(v) if k != "fixed" else v for k, v in kw.items()})
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"[{where}] {name} must be a number or a table with {', '.join(THETA_KEYS)}, got {value!r}")
    return Theta(name, float(value))


def _variance(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"[omega] {name} must be a positive variance, got {value!r}")
    return float(value)


def _blocks(omega: dict) -> list[tuple[tuple[str, ...], np.ndarray]]:
    """The ``[omega.block]`` table(s) as (etas, full covariance)."""
    given = omega.pop("block", [])
    out = []
    for block in [given] if isinstance(given, Mapping) else given:
        if not isinstance(block, Mapping):
            raise ValueError(f"[omega.block] must be a table with etas and values, got {block!r}")
        _unknown("[omega.block]", block, ("etas", "values"))
        etas, values = block.get("etas"), block.get("values")
        if not isinstance(etas, list) or not etas or not all(isinstance(e, str) for e in etas):
            raise ValueError(f"[omega.block] etas must be a list of eta names, got {etas!r}")
        n = len(etas)
        if not isinstance(values, list) or len(values) != n * (n + 1) // 2:
            raise ValueError(
                f"[omega.block] values must list the {n * (n + 1) // 2} lower-triangle elements of the {n}x{n} "
                f"block of {etas} row by row, got {values!r}"
            )
        matrix = np.zeros((n, n))
        matrix[np.tril_indices(n)] = values
        out.append((tuple(etas), matrix + np.tril(matrix, -1).T))
    return out


def _covariates(config: Mapping, model: dict) -> tuple[str, ...]:
    names = config.get("covariates", model.get("covariates", []))
    if not isinstance(names, list) or not all(isinstance(c, str) and c.isidentifier() for c in names):
        raise ValueError(f"covariates must be a list of column names, got {names!r}")
    return tuple(c.upper() for c in names)


# ------------------------------------------------------------------ the model
def _expressions(structure, parameters: dict) -> list[Expression]:
    """Evaluation order: defaults of the structural parameters not given, then [parameters]."""
    defaults = [
        parse_expression(p, f"exp(t{p.lower()} + eta_{p.lower()})")
        for p in structure.parameter_names
        if p not in parameters
    ]
    bad = [p for p in parameters if not p.isidentifier()]
    if bad:
        raise ValueError(f"[parameters]: {bad} are not valid parameter names (letters, digits, _)")
    return defaults + [parse_expression(p, text) for p, text in parameters.items()]


def _used(expressions, declared: dict, defaults: dict, kind: str) -> list[str]:
    """The names of ``kind`` the model has: declared ones (each must be used) and the defaults used."""
    read = {n for e in expressions for n in e.names}
    unused = [n for n in declared if n not in read]
    if unused:
        raise ValueError(f"{kind}(s) {unused} declared but used by no parameter expression; remove or use them")
    used_defaults = [n for e in expressions for n in e.names if n in defaults and n not in declared]
    return list(declared) + list(dict.fromkeys(used_defaults))


def _check_names(expressions, known: dict) -> None:
    for i, e in enumerate(expressions):
        earlier = {x.parameter: "parameter" for x in expressions[:i]}
        e.check_names({**known, **earlier})
    clash = sorted({e.parameter for e in expressions} & set(known))
    if clash:
        raise ValueError(f"[parameters] {clash}: a parameter must not share its name with a theta, eta or covariate")


def builtin_model(name: str, config: Mapping | None = None) -> PopulationModel:
    """The model ``name`` of :data:`PK_STRUCTURES` configured by ``config`` (module docstring)."""
    if name not in PK_STRUCTURES:
        raise ValueError(f"unknown built-in model {name!r}; known: {', '.join(PK_STRUCTURES)}")
    config = dict(config or {})
    _unknown("model configuration", config, CONFIG_KEYS)
    structure = PK_STRUCTURES[name]
    model, thetas, omega = _table(config, "model"), _table(config, "theta"), _table(config, "omega")
    sigma, parameters = _table(config, "sigma"), _table(config, "parameters")
    _unknown("[model]", model, MODEL_KEYS)
    error = ResidualError(model.get("error", DEFAULT_ERROR))
    _unknown("[sigma]", sigma, error.parameter_names)
    covariates = _covariates(config, model)
    omega_fixed = omega.pop("fixed", False)
    if not isinstance(omega_fixed, bool):
        raise ValueError(f"[omega] fixed must be true or false, got {omega_fixed!r}")
    blocks = _blocks(omega)
    diagonal = {e: _variance(e, v) for e, v in omega.items()}
    block_etas = [e for etas, _ in blocks for e in etas]
    twice = sorted({e for e in block_etas if block_etas.count(e) > 1 or e in diagonal})
    if twice:
        raise ValueError(f"[omega]: eta(s) {twice} given more than once (diagonal and block, or two blocks)")

    expressions = _expressions(structure, parameters)
    default_thetas = {f"t{p.lower()}": DEFAULT_THETA[p] for p in structure.parameter_names}
    default_etas = {f"eta_{p.lower()}": DEFAULT_OMEGA for p in structure.parameter_names}
    theta_names = _used(expressions, dict.fromkeys(thetas), default_thetas, "theta")
    eta_names = _used(expressions, dict.fromkeys(list(diagonal) + block_etas), default_etas, "eta")
    known = {**dict.fromkeys(theta_names, "theta"), **dict.fromkeys(eta_names, "eta")}
    both = sorted(set(covariates) & set(known))
    if both:
        raise ValueError(f"covariate(s) {both} share their name with a theta or eta")
    _check_names(expressions, {**known, **dict.fromkeys(covariates, "covariate")})

    index = {e: i for i, e in enumerate(eta_names)}
    matrix = np.diag([diagonal.get(e, DEFAULT_OMEGA) for e in eta_names])
    for etas, block in blocks:
        matrix[np.ix_([index[e] for e in etas], [index[e] for e in etas])] = block

    def individual(theta, eta, covs):
        values = {**theta, **eta, **{c: covs[c] for c in covariates}}
        out = {}
        for e in expressions:
            out[e.parameter] = values[e.parameter] = e(values)
        return out

    default_sd = {**DEFAULT_SIGMA, "add_sd": 0.2} if error.log_scale else DEFAULT_SIGMA
    return PopulationModel(
        thetas=[_theta(t, thetas[t], "theta") if t in thetas else Theta(t, default_thetas[t]) for t in theta_names],
        etas=eta_names,
        omega=matrix,
        omega_blocks=[etas for etas, _ in blocks],
        omega_fixed=omega_fixed,
        individual=individual,
        predict=structure.predict,
        error=error,
        sigma=[_theta(s, sigma.get(s, default_sd[s]), "sigma") for s in error.parameter_names],
        covariates=covariates,
        name=str(model.get("name", name)),
    )


# ------------------------------------------------------------------ loading
def _read_toml(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"model configuration {path} not found")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"model configuration {path} is not valid TOML: {exc}") from None


def _from_python(path: Path) -> PopulationModel:
    spec = importlib.util.spec_from_file_location(f"_lenapk_user_model_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"model file {path} cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look the module up
    spec.loader.exec_module(module)
    found = getattr(module, "model", None)
    model = found() if callable(found) and not isinstance(found, PopulationModel) else found
    if not isinstance(model, PopulationModel):
        raise ValueError(
            f"model file {path} must define `model` (a PopulationModel) or a function `model()` returning one, "
            f"got {type(model).__name__}"
        )
    return model


def load_model(spec: str, config_path=None) -> PopulationModel:
    """A built-in model by name (configured by the TOML file ``config_path``) or the model of a
    Python file (``model``, or ``model()``); errors name the file, the key or the known names."""
    config = _read_toml(Path(config_path)) if config_path is not None else {}
    if spec in PK_STRUCTURES:
        try:
            return builtin_model(spec, config)
        except ValueError as exc:
            raise ValueError(f"{config_path or 'model ' + spec}: {exc}") from None
    path = Path(spec)
    if path.suffix != ".py" and not path.exists():
        raise ValueError(
            f"unknown model {spec!r}: give a built-in model ({', '.join(PK_STRUCTURES)}) "
            "or the path of a Python file that defines `model`"
        )
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} not found")
    extra = [k for k in config if k != "estimate"]
    if extra:
        raise ValueError(f"{config_path}: tables {extra} configure built-in models only; {path} is a Python model")
    return _from_python(path)
