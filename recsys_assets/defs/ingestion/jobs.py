"""Jobs of the ingestion domain."""

import dagster as dg

ingestion_job = dg.define_asset_job(
    "ingestion_job",
    selection=dg.AssetSelection.groups("ingestion"),
    description="Read, validate and quarantine the events of one time partition.",
)
