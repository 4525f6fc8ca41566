"""Ingestion domain: source -> raw_events -> validated_events + quarantined_events."""

import dagster as dg

from recsys_assets.defs.ingestion.assets import SETTINGS, raw_events, validate_events
from recsys_assets.defs.ingestion.jobs import ingestion_job
from recsys_assets.defs.ingestion.resources import EventSourceResource
from recsys_assets.defs.ingestion.sensors import source_change_sensor

defs = dg.Definitions(
    assets=[raw_events, validate_events],
    jobs=[ingestion_job],
    sensors=[source_change_sensor],
    resources={"source": EventSourceResource(config_path=str(SETTINGS.data_config))},
)
