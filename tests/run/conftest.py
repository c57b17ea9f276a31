"""Fixtures of the gate's tests: end-to-end runs shared by the tests that read them (issue 33)."""

from __future__ import annotations

import pytest
from run_support import XdistCheck, XdistUpdate, check_under_xdist, update_under_xdist


@pytest.fixture(scope="session")
def xdist_check(tmp_path_factory: pytest.TempPathFactory, _heavy_modules: None) -> XdistCheck:
    """The project of ``run_support.check_under_xdist``, checked once per session."""
    return check_under_xdist(tmp_path_factory.mktemp("xdist-check"))


@pytest.fixture(scope="session")
def xdist_update(tmp_path_factory: pytest.TempPathFactory) -> XdistUpdate:
    """The project of ``run_support.update_under_xdist``, updated once per session."""
    return update_under_xdist(tmp_path_factory.mktemp("xdist-update"))
