"""Helpers the integration tests share: resources on scratch storage, ingesting a partition."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from recsys_assets.core import constants as c
from recsys_assets.core import processes
from recsys_assets.defs.features.resources import FeatureStoreResource
from recsys_assets.defs.ingestion.assets import raw_events, validate_events
from recsys_assets.defs.ingestion.resources import EventSourceResource
from recsys_assets.defs.warehouse import WarehouseIOManager
from tests.conftest import PROJECT_ROOT, copy_feature_repo

INGESTION_ASSETS = [raw_events, validate_events]
free_port = processes.free_port


def scratch_resources(
    source_config: Path, warehouse: Path, feature_repo: Path | None = None
) -> dict[str, object]:
    """The project's resources pointed at a source config and scratch storage."""
    resources: dict[str, object] = {
        "source": EventSourceResource(config_path=str(source_config)),
        "warehouse": WarehouseIOManager(database=str(warehouse), schema="events"),
    }
    if feature_repo is not None:
        resources["feature_store"] = FeatureStoreResource(repo_path=str(feature_repo))
    return resources


def ingest_partition(
    source_config: Path, warehouse: Path, key: str, instance: dg.DagsterInstance
) -> dg.ExecuteInProcessResult:
    """Run raw_events and validate_events for one partition; failures are returned, not raised."""
    return dg.materialize(
        INGESTION_ASSETS,
        partition_key=key,
        resources=scratch_resources(source_config, warehouse),
        instance=instance,
        raise_on_error=False,
    )


def cli_env(workdir: Path) -> dict[str, str]:
    """The test environment with every store under ``workdir`` (nothing in the repository)."""
    env = {
        **os.environ,
        "RECSYS_ENV": "test",
        "DAGSTER_HOME": str(workdir / "dagster_home"),
        "RECSYS_WAREHOUSE": str(workdir / "warehouse.duckdb"),
        "RECSYS_FEATURE_REPO": str(workdir / "feature_repo"),
        "RECSYS_MODELS": str(workdir / "models"),
        "RECSYS_REPORTS": str(workdir / "reports"),
        "RECSYS_FEEDBACK_LOG": str(workdir / "feedback" / "feedback.jsonl"),
        "RECSYS_SERVED_LOG": str(workdir / "feedback" / "served.jsonl"),
        "RECSYS_LOOP_LOG": str(workdir / "loop" / "events.jsonl"),
        "RECSYS_CANARY_STATE": str(workdir / "loop" / "canary.json"),
        "BENTOML_HOME": str(workdir / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
    }
    env.pop("RECSYS_DATA_CONFIG", None)
    env.pop("RECSYS_MODEL_TAG", None)
    return env


def run_cli(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m recsys_assets <args>`` as a newcomer runs it, on scratch storage."""
    if not (workdir / "feature_repo").exists():
        copy_feature_repo(workdir / "feature_repo")
    return subprocess.run(
        [sys.executable, "-m", "recsys_assets", *args],
        cwd=PROJECT_ROOT,
        env=cli_env(workdir),
        capture_output=True,
        text=True,
        timeout=900,
    )


@contextlib.contextmanager
def served(command: list[str], port: int, env: dict[str, str], log: Path, *, ready: bool = True):
    """The server ready (GET /readyz answered 200; with ``ready=False``, /livez) inside the
    block, stopped with its whole process group after it (:mod:`recsys_assets.core.processes`)."""
    path = c.READINESS_PATH if ready else c.LIVENESS_PATH
    with processes.served(command, port, env=env, log=log, ready_path=path) as server:
        yield server
