"""Ingestion: raw_events -> validated_events + quarantined_events, one time partition at a time.

Each asset is a few lines over ``recsys_assets.ingestion``; what a run did is in its metadata: rows,
column schema, the data version (a content hash) and the lineage needed to rebuild the input
(source fingerprint + partition + rules version), never a copy of the data.
"""

import warnings
from collections.abc import Iterator

import dagster as dg
import pandas as pd

from recsys_assets.config import get_settings
from recsys_assets.core import constants as c
from recsys_assets.core.versioning import data_version
from recsys_assets.defs.ingestion.partitions import build_event_partitions, naive_bounds
from recsys_assets.defs.ingestion.resources import EventSourceResource
from recsys_assets.defs.metadata import table_metadata
from recsys_assets.ingestion.sources import (
    SourceError,
    load_events,
    load_source_spec,
    source_fingerprint,
    window,
)
from recsys_assets.ingestion.validation import (
    RULES_VERSION,
    QuarantinedEventSchema,
    RawEventSchema,
    ValidatedEventSchema,
    applicable_rules,
    contract_violations,
    restore_event_dtypes,
    split_valid_and_quarantined,
)

# Per-partition data versions are the lineage this project is built on; Dagster marks the
# parameter beta, which it has been since 1.5 without change.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*data_version.*")

# Dagster needs the partitions when the assets are defined, so the source config is read at
# import, in the environment the definitions load in (as recsys_assets.definitions does).
event_partitions = build_event_partitions(load_source_spec(get_settings().data_config))

RAW_CODE_VERSION = "1"
TABLE_METADATA = {"partition_expr": c.EVENT_TS}  # the DuckDB IO manager replaces one window
TAGS = {"domain": "ingestion", "pii": "customer_id"}


@dg.asset(
    partitions_def=event_partitions,
    io_manager_key="warehouse",
    group_name="ingestion",
    owners=[c.OWNER_DATA],
    tags=TAGS,
    code_version=RAW_CODE_VERSION,
    metadata=TABLE_METADATA,
    kinds={"duckdb", "pandas"},
    check_specs=[
        dg.AssetCheckSpec(
            "all_rows_partitioned",
            asset="raw_events",
            description="no source row falls outside the partitions' time range (such rows "
            "would never be ingested); widen partitions.start / end in the source config",
        )
    ],
)
def raw_events(
    context: dg.AssetExecutionContext, source: EventSourceResource
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Events of one time partition, read from the configured source and mapped onto the
    canonical event table (column names in ``recsys_assets.core.constants``), before any rule.

    A source that cannot be read (missing, empty, missing columns, wrong types, bad timestamps)
    fails the run with a message naming the file, column and problem; nothing is written, so
    earlier partitions stay as they were.
    """
    spec = source.spec
    start, end = naive_bounds(context.partition_time_window)
    try:
        all_events = load_events(spec)
    except SourceError as exc:
        raise dg.Failure(description=str(exc)) from exc
    events = window(all_events, start, end)
    violations = contract_violations(RawEventSchema, events)
    if not violations.empty:
        raise dg.Failure(
            description=f"raw_events of {context.partition_key} break the raw contract",
            metadata={"failure_cases": dg.MetadataValue.md(violations.head(20).to_markdown())},
        )
    version = data_version(events)
    fingerprint = source_fingerprint(spec)
    yield dg.Output(
        events,
        data_version=dg.DataVersion(version),
        metadata={
            **table_metadata(events),
            "data_version": version,
            "source_name": spec.name,
            "source_path": spec.describe(),
            "source_sha256": fingerprint["sha256"],
            "source_config_sha256": fingerprint["config_sha256"],
            "source_fields": list(spec.present_fields),
            "window_start": str(start),
            "window_end": str(end),
        },
    )
    first, _ = naive_bounds(event_partitions.get_first_partition_window())
    _, last = naive_bounds(event_partitions.get_last_partition_window())
    outside = int((~all_events[c.EVENT_TS].between(first, last, inclusive="left")).sum())
    yield dg.AssetCheckResult(
        check_name="all_rows_partitioned",
        passed=outside == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"rows_outside": outside, "range_start": str(first), "range_end": str(last)},
    )


@dg.multi_asset(
    partitions_def=event_partitions,
    group_name="ingestion",
    outs={
        "validated_events": dg.AssetOut(
            io_manager_key="warehouse",
            owners=[c.OWNER_DATA],
            tags=TAGS,
            metadata=TABLE_METADATA,
            kinds={"duckdb", "pandas"},
            code_version=f"rules-{RULES_VERSION}",
            description=(
                "Events that pass every data-quality rule (docs/data-quality.md); the input of "
                "features, training and evaluation."
            ),
        ),
        "quarantined_events": dg.AssetOut(
            io_manager_key="warehouse",
            owners=[c.OWNER_DATA],
            tags=TAGS,
            metadata=TABLE_METADATA,
            kinds={"duckdb", "pandas"},
            code_version=f"rules-{RULES_VERSION}",
            description=(
                "Events that break at least one data-quality rule, with the first reason "
                "(`reason`) and all reasons (`reasons`). Cancellations (returns) live here too."
            ),
        ),
    },
    check_specs=[
        dg.AssetCheckSpec(
            "row_accounting",
            asset="validated_events",
            blocking=True,
            description="raw rows = validated rows + quarantined rows, for the partition",
        ),
        dg.AssetCheckSpec(
            "contract",
            asset="validated_events",
            blocking=True,
            description="validated_events honours its pandera schema (ValidatedEventSchema)",
        ),
        dg.AssetCheckSpec(
            "contract",
            asset="quarantined_events",
            blocking=True,
            description="every quarantined row carries a known reason code",
        ),
        dg.AssetCheckSpec(
            "quarantine_share",
            asset="quarantined_events",
            description="share of quarantined rows stays under the environment's threshold",
        ),
    ],
)
def validate_events(
    context: dg.AssetExecutionContext, source: EventSourceResource, raw_events: pd.DataFrame
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Split a raw partition into validated and quarantined events by the rules of
    ``recsys_assets.ingestion.validation``, then check that no row was lost or invented."""
    raw_events = restore_event_dtypes(raw_events)
    spec = source.spec
    result = split_valid_and_quarantined(raw_events, spec)
    rules = [rule.code for rule in applicable_rules(spec)]
    lineage = {
        "upstream_data_version": data_version(raw_events),
        "rules_version": RULES_VERSION,
        "rules_applied": rules,
    }
    valid_version = data_version(result.valid)
    yield dg.Output(
        result.valid,
        output_name="validated_events",
        data_version=dg.DataVersion(valid_version),
        metadata={**table_metadata(result.valid), "data_version": valid_version, **lineage},
    )
    quarantined_version = data_version(result.quarantined)
    share = len(result.quarantined) / len(raw_events) if len(raw_events) else 0.0
    yield dg.Output(
        result.quarantined,
        output_name="quarantined_events",
        data_version=dg.DataVersion(quarantined_version),
        metadata={
            **table_metadata(result.quarantined),
            "data_version": quarantined_version,
            "quarantine_share": share,
            "rows_by_first_reason": dg.MetadataValue.json(result.primary_reason_counts),
            "rows_breaking_each_rule": dg.MetadataValue.json(result.reason_counts),
            **lineage,
        },
    )

    accounted = len(result.valid) + len(result.quarantined)
    yield dg.AssetCheckResult(
        asset_key="validated_events",
        check_name="row_accounting",
        passed=accounted == len(raw_events),
        metadata={
            "raw": len(raw_events),
            "validated": len(result.valid),
            "quarantined": len(result.quarantined),
        },
    )
    for asset_key, schema, frame in (
        ("validated_events", ValidatedEventSchema, result.valid),
        ("quarantined_events", QuarantinedEventSchema, result.quarantined),
    ):
        violations = contract_violations(schema, frame)
        yield dg.AssetCheckResult(
            asset_key=asset_key,
            check_name="contract",
            passed=violations.empty,
            metadata={"failure_cases": len(violations)},
            description=None if violations.empty else violations.head(10).to_string(),
        )
    limit = get_settings().max_quarantine_share
    yield dg.AssetCheckResult(
        asset_key="quarantined_events",
        check_name="quarantine_share",
        passed=share <= limit,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"share": share, "limit": limit},
    )
