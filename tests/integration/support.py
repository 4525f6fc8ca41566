"""Helpers the integration tests share: resources on scratch storage, ingesting a partition."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from recsys_assets.defs.features.resources import FeatureStoreResource
from recsys_assets.defs.ingestion.assets import raw_events, validate_events
from recsys_assets.defs.ingestion.resources import EventSourceResource
from recsys_assets.defs.warehouse import WarehouseIOManager

INGESTION_ASSETS = [raw_events, validate_events]


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
