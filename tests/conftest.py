"""Shared fixtures: every test runs in the test environment with scratch storage."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Before any recsys_assets import: definitions read the environment when they load.
os.environ.setdefault("RECSYS_ENV", "test")
# Logs that in-process runs append to stay out of the repository's data/ folder.
_SCRATCH = Path(tempfile.gettempdir()) / f"recsys-tests-{os.getpid()}"
os.environ.setdefault("RECSYS_LOOP_LOG", str(_SCRATCH / "loop" / "events.jsonl"))
os.environ.setdefault("RECSYS_SERVED_LOG", str(_SCRATCH / "served.jsonl"))
os.environ.setdefault("RECSYS_RELEASE_LEDGER", str(_SCRATCH / "releases" / "ledger.jsonl"))
os.environ.setdefault("RECSYS_CANARY_STATE", str(_SCRATCH / "canary" / "canary.json"))
_CANARY_STATES = itertools.count()

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# No secret value in any log line of the run (tests/secret_scan.py).
pytest_plugins = ["tests.secret_scan"]


@pytest.fixture(autouse=True)
def _own_canary_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """A canary state file of each test's own (not created): one test's rollback or widening
    must not become the next test's canary."""
    path = _SCRATCH / "canary" / f"{next(_CANARY_STATES)}.json"
    monkeypatch.setenv("RECSYS_CANARY_STATE", str(path))


def copy_feature_repo(target: Path) -> Path:
    """A scratch copy of feature_repo/ (declarations only), so tests never touch dev data."""
    shutil.copytree(
        PROJECT_ROOT / "feature_repo",
        target,
        ignore=shutil.ignore_patterns("data", "__pycache__"),
    )
    return target


@pytest.fixture
def write_source(tmp_path: Path):
    """Write an events CSV and a source config mapping it; returns the config path."""

    def write(
        csv_text: str,
        *,
        columns: dict[str, str] | None = None,
        extra: str = "",
        name: str = "shop",
        filename: str = "events.csv",
    ) -> Path:
        (tmp_path / filename).write_text(csv_text)
        mapping = columns or {
            "user_id": "customer",
            "item_id": "sku",
            "event_ts": "ts",
            "quantity": "qty",
            "unit_price": "price",
            "order_id": "order",
        }
        lines = [f"name: {name}", f"path: {filename}", "columns:"]
        lines += [f"  {field}: {column}" for field, column in mapping.items()]
        config = tmp_path / f"{name}.yaml"
        config.write_text("\n".join(lines) + "\n" + extra)
        return config

    return write
