"""Ingestion domain: source -> raw_events -> validated_events + quarantined_events."""

import dagster as dg

from recsys_assets.defs.ingestion.assets import (
    SETTINGS,
    raw_events,
    validate_events,
)
from recsys_assets.defs.ingestion.resources import EventSourceResource

ingestion_job = dg.define_asset_job(
    "ingestion_job",
    selection=dg.AssetSelection.groups("ingestion"),
    description="Read, validate and quarantine the events of one time partition.",
)

defs = dg.Definitions(
    assets=[raw_events, validate_events],
    jobs=[ingestion_job],
    resources={"source": EventSourceResource(config_path=str(SETTINGS.data_config))},
)
