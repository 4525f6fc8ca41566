"""New data lands by itself: a sensor re-ingests the partitions whose source rows changed."""

import dagster as dg

from recsys_assets.core.versioning import data_version
from recsys_assets.defs.ingestion.assets import event_partitions
from recsys_assets.defs.ingestion.jobs import ingestion_job
from recsys_assets.defs.ingestion.partitions import naive_bounds
from recsys_assets.defs.ingestion.resources import EventSourceResource
from recsys_assets.ingestion.sources import SourceError, load_events, source_fingerprint, window

RAW_EVENTS = dg.AssetKey("raw_events")


def stale_partitions(
    instance: dg.DagsterInstance,
    source: EventSourceResource,
    partitions_def: dg.TimeWindowPartitionsDefinition,
) -> dict[str, str]:
    """Partition key -> the source's data version, for partitions whose stored raw_events
    version differs, that were ingested under other source settings, or never ingested.
    Cost: one read of the source, one hash per partition, so it suits the monthly or daily
    partitions of a few years of events."""
    events = load_events(source.spec)
    settings = source_fingerprint(source.spec)["config_sha256"]
    stale = {}
    for key in partitions_def.get_partition_keys():
        start, end = naive_bounds(partitions_def.time_window_for_partition_key(key))
        version = data_version(window(events, start, end))
        record = instance.get_latest_data_version_record(RAW_EVENTS, partition_key=key)
        materialization = record.asset_materialization if record else None
        stored = materialization.tags.get("dagster/data_version") if materialization else None
        stored_settings = materialization.metadata.get("source_config_sha256") if record else None
        if stored != version or getattr(stored_settings, "value", None) != settings:
            stale[key] = version
    return stale


@dg.sensor(
    job=ingestion_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "When the source's fingerprint changes, compares each partition's source rows with "
        "the stored raw_events data version and requests runs for the partitions that "
        "differ: new months land, corrected months are redone, the rest are left alone."
    ),
)
def source_change_sensor(context: dg.SensorEvaluationContext, source: EventSourceResource):
    try:
        fingerprint = ":".join(
            source_fingerprint(source.spec)[k] for k in ("sha256", "config_sha256")
        )
    except SourceError as exc:
        return dg.SkipReason(f"source unreadable: {exc}")
    if context.cursor == fingerprint:
        return dg.SkipReason("source unchanged since the last check")
    try:
        stale = stale_partitions(context.instance, source, event_partitions)
    except SourceError as exc:
        return dg.SkipReason(f"source unreadable, nothing requested: {exc}")
    context.log.info(f"source {fingerprint[:12]}: {len(stale)} partition(s) to ingest")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(partition_key=key, run_key=f"{key}:{version[:16]}")
            for key, version in stale.items()
        ],
        cursor=fingerprint,
    )
