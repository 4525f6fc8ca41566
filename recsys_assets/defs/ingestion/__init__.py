"""Ingestion domain: source -> raw_events -> validated_events + quarantined_events."""

import dagster as dg

from recsys_assets.config import Settings
from recsys_assets.defs.ingestion.assets import raw_events, validate_events
from recsys_assets.defs.ingestion.jobs import ingestion_job
from recsys_assets.defs.ingestion.resources import EventSourceResource
from recsys_assets.defs.ingestion.sensors import source_change_sensor

defs = dg.Definitions(
    assets=[raw_events, validate_events],
    jobs=[ingestion_job],
    sensors=[source_change_sensor],
)


def resources_for(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """The domain's resources in the environment of ``settings`` (read once, when
    :mod:`recsys_assets.definitions` loads): the event source config."""
    return {"source": EventSourceResource(config_path=str(settings.data_config))}
