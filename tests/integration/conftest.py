"""Fixtures the integration modules share."""

from __future__ import annotations

import pytest

from tests.integration.support import run_cli


@pytest.fixture(scope="session")
def example_shop_demo(tmp_path_factory):
    """The README's demo on the bring-your-own-data example, run once: (workdir, result)."""
    workdir = tmp_path_factory.mktemp("example_shop_demo")
    result = run_cli(workdir, "demo", "--data-config", "data/sources/example_shop.yaml")
    return workdir, result
