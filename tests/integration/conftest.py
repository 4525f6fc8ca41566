"""Fixtures the integration modules share."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.support import run_cli


@pytest.fixture(scope="session")
def example_shop_demo(tmp_path_factory):
    """The README's demo on the bring-your-own-data example, run once: (workdir, result)."""
    workdir = tmp_path_factory.mktemp("example_shop_demo")
    result = run_cli(workdir, "demo", "--data-config", "data/sources/example_shop.yaml")
    return workdir, result


@pytest.fixture
def scratch_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """The service's feedback and served logs, the loop log and the reports folder on scratch
    paths (through their environment variables), for monitoring assets materialised in process."""
    paths = {
        "feedback": tmp_path / "feedback" / "feedback.jsonl",
        "served": tmp_path / "feedback" / "served.jsonl",
        "loop": tmp_path / "loop" / "events.jsonl",
        "reports": tmp_path / "reports",
    }
    for variable, key in (("RECSYS_FEEDBACK_LOG", "feedback"), ("RECSYS_SERVED_LOG", "served"),
                          ("RECSYS_LOOP_LOG", "loop"), ("RECSYS_REPORTS", "reports")):  # fmt: skip
        monkeypatch.setenv(variable, str(paths[key]))
    return paths
