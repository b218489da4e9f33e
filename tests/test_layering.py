"""Layering: the generic layers of lenapk name nothing of the lenalidomide-CLL model.

The application layer (the flagship model under ``lenapk/models/cll/``, ``lenapk/models/__init__.py``
that exposes it, the package's ``__init__.py`` that makes it the default, the command line and the
docs entry point) may name it; every other module under ``src/lenapk`` is generic: its code,
comments and docstrings must not contain the model's observables, covariates, drug or disease as
whole words or identifier parts (so that a grep finds them only in the application layer, docs and
tests), and it must not import the model package ``lenapk.models`` or the application modules
(the package's ``__version__`` is allowed).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "lenapk"
APPLICATION = {
    "lenapk/__init__.py",
    "lenapk/docs.py",
    "lenapk/models/__init__.py",
}
APPLICATION_DIRS = ("lenapk/models/cll/", "lenapk/cli/")
# The lenalidomide-CLL model's observables, covariates, drug, setting and disease.
CLL_WORDS = (
    "alc",
    "anc",
    "platelets",
    "igg",
    "igm",
    "iga",
    "cd3",
    "crcl",
    "ffm",
    "del17p",
    "relapsed",
    "lenalidomide",
    "LenalidomideCLL",
    "cll",
)
# Whole words, and also as parts of identifiers (``anc_grade``, ``igg0``, ``models.cll``): a name
# counts unless a letter touches it, in any case.
WORD = re.compile(r"(?<![A-Za-z])(" + "|".join(CLL_WORDS) + r")(?![A-Za-z])", re.IGNORECASE)
APPLICATION_MODULES = ("lenapk", "lenapk.cli", "lenapk.docs")


def _rel(path: Path) -> str:
    return path.relative_to(SRC).as_posix()


def generic_modules() -> list[Path]:
    return sorted(
        p for p in PKG.rglob("*.py") if _rel(p) not in APPLICATION and not _rel(p).startswith(APPLICATION_DIRS)
    )


def word_hits(text: str) -> list[tuple[int, str, str]]:
    """(line number, word, line) of every CLL word in ``text``, code, comments and docstrings."""
    return [(i, m.group(0), line.strip()) for i, line in enumerate(text.splitlines(), 1) for m in WORD.finditer(line)]


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute name) of everything the file imports, relative imports resolved: the module
    of ``import a.b`` / ``from a.b import c`` and each ``a.b.c`` (``c`` may be a submodule).  The
    package's version alone (``from lenapk import __version__``: metadata) counts as
    ``lenapk.__version__`` only."""
    rel = path.relative_to(SRC).with_suffix("")
    package = list(rel.parts[:-1])  # the package the module is in (for __init__: the package itself)
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = [f"{module}.{a.name}" for a in node.names]  # `from lenapk import models`
            out += [(node.lineno, m) for m in ([] if names == ["lenapk.__version__"] else [module]) + names]
    return out


def forbidden(name: str) -> bool:
    """An import of the model package or of an application module."""
    return name == "lenapk.models" or name.startswith(("lenapk.models.", "lenapk.cli.")) or name in APPLICATION_MODULES


def test_the_scan_sees_the_whole_package():
    """The test scans what it should: the generic subpackages are there, the application layer
    is not, and the pattern finds the words where they are expected (it can fail)."""
    mods = {_rel(p) for p in generic_modules()}
    for expected in (
        "_core/_solve.py",
        "rules/_modification.py",
        "cohorts/_run.py",
        "calibration/_fit.py",
        "schedules/_compare.py",
        "endpoints/_table.py",
        "report/_figures.py",
        "population/_draws.py",
        "models/turnover.py",
    ):
        expected = f"lenapk/{expected}"
        assert expected in mods, expected
    assert not any(m.startswith(("lenapk/models/cll/", "lenapk/cli/")) for m in mods)
    assert len(mods) > 50
    # the words are found in any case, as words or identifier parts, never inside other words
    assert [w for _, w, _ in word_hits("ANC < 1.0 # Lenalidomide in CLL\nbalance, igg0, x.anc_grade")] == [
        "ANC",
        "Lenalidomide",
        "CLL",
        "igg",
        "anc",
    ]
    assert {w.lower() for _, w, _ in word_hits((PKG / "models" / "cll" / "_endpoints.py").read_text())} >= {
        "anc",
        "platelets",
        "alc",
        "igg",
        "cll",
        "lenalidomide",
    }
    assert "lenapk.models.cll" in {m for _, m in imported_modules(PKG / "models" / "__init__.py")}
    assert "lenapk._core" in {m for _, m in imported_modules(PKG / "schedules" / "_compare.py")}
    assert forbidden("lenapk.models.turnover") and forbidden("lenapk.cli") and forbidden("lenapk.cli._run")
    assert not forbidden("lenapk.rules")


@pytest.mark.parametrize("path", generic_modules(), ids=_rel)
def test_generic_module_names_nothing_of_the_cll_model(path):
    hits = word_hits(path.read_text())
    assert not hits, "\n".join(f"{_rel(path)}:{i}: {w!r} in: {line}" for i, w, line in hits)


@pytest.mark.parametrize("path", generic_modules(), ids=_rel)
def test_generic_module_imports_no_model_or_application_module(path):
    bad = [(i, m) for i, m in imported_modules(path) if forbidden(m)]
    assert not bad, "\n".join(f"{_rel(path)}:{i}: imports {m}" for i, m in bad)
