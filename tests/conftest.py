"""Shared fixtures.  lenapk turns on float64 at import; this makes it explicit for the tests."""

import jax
import pytest

jax.config.update("jax_enable_x64", True)

import lenapk  # noqa: E402


@pytest.fixture(scope="session")
def model():
    return lenapk.LenalidomideCLL()


@pytest.fixture(scope="session")
def typical(model):
    return model.default_params()


@pytest.fixture(scope="session")
def regimens():
    return lenapk.load_regimens()
