"""Features: validated events -> feature tables -> Feast registry -> online store.

The tables are parquet files inside the Feast repository (its offline store reads them with
DuckDB); `feast apply` registers the declarations in feature_repo/; materialisation copies the
latest values into the online store, and a blocking check compares online with offline.
"""

import hashlib
import time
from datetime import timedelta

import dagster as dg
import pandas as pd

from recsys_assets.core import constants as c
from recsys_assets.core.versioning import data_version
from recsys_assets.defs.features.resources import FeatureStoreResource
from recsys_assets.defs.metadata import table_metadata
from recsys_assets.features import tables as f
from recsys_assets.features.store import (
    STORED_VIEWS,
    FeatureRepoError,
    consistency_report,
    entity_keys,
    materialize,
    to_feast_table,
    write_table,
)
from recsys_assets.features.ttl import TTL_FILE, ttl_days
from recsys_assets.ingestion.validation import restore_event_dtypes
from recsys_assets.serving.model import FeastOnlineReader

TAGS = {"domain": "features", "pii": "customer_id"}
# Refresh as soon as new validated events land (and after each refresh, the next step), with
# the Dagster daemon running (`make dev`): no one has to start the features job by hand.
# Unlike eager(), it does not wait for every upstream partition to exist: a source may have
# empty months, and features over the data that exists beat no features.
# A dep whose blocking check failed (a partition broke its contract) holds the refresh back.
_A = dg.AutomationCondition
REFRESH = (
    _A.any_deps_updated()
    & ~_A.any_deps_in_progress()
    & ~_A.in_progress()
    & ~_A.any_deps_match(_A.any_checks_match(_A.check_failed(), blocking_only=True))
).with_label("refresh when upstream changes and its blocking checks pass")
FEATURE_CODE_VERSION = "1"

TABLES = {
    "customer_profile": "Customer RFM profile to date, one row per customer and day they bought.",
    "item_popularity": "Daily item snapshot: popularity 7/30/90 days, trend, price, "
    "repurchase and return rates, age.",
    "customer_item": "A customer's purchases of one item to date, one row per day bought.",
    "session_context": "Device and country of each customer event (request context history).",
}


def _table_spec(name: str, description: str) -> dg.AssetSpec:
    return dg.AssetSpec(
        key=f"{name}_features",
        description=f"{description} Parquet table read by Feast's offline store.",
        group_name="features",
        owners=[c.OWNER_DATA],
        tags=TAGS,
        kinds={"parquet", "feast"},
        code_version=FEATURE_CODE_VERSION,
        deps=["validated_events", "quarantined_events"],
        automation_condition=REFRESH,
    )


@dg.multi_asset(
    specs=[_table_spec(n, d) for n, d in TABLES.items()],
    ins={"validated_events": dg.AssetIn(), "quarantined_events": dg.AssetIn()},
)
def feature_tables(
    feature_store: FeatureStoreResource,
    validated_events: pd.DataFrame,
    quarantined_events: pd.DataFrame,
):
    """Compute every feature table from all validated events in one pass over the warehouse."""
    events = restore_event_dtypes(validated_events)
    returns = f.returns_from_quarantine(restore_event_dtypes(quarantined_events))
    tables = {
        "customer_profile": f.customer_features(events, returns),
        "item_popularity": f.item_features(events, returns),
        "customer_item": f.customer_item_features(events),
        "session_context": f.session_context_features(events),
    }
    for name, frame in tables.items():
        table = to_feast_table(frame)
        path = feature_store.repo.table_path(name)
        write_table(table, path)
        yield dg.MaterializeResult(
            asset_key=f"{name}_features",
            data_version=dg.DataVersion(data_version(table)),
            metadata={
                **table_metadata(table),
                "path": dg.MetadataValue.path(str(path)),
                "entities": int(table[c.USER_ID if c.USER_ID in table else c.ITEM_ID].nunique()),
                "first_timestamp": str(table[c.FEATURE_TS].min()),
                "last_timestamp": str(table[c.FEATURE_TS].max()),
            },
        )


def repo_code_version(repo_path) -> str:
    """A hash of the repository's declarations and configs, and of the TTLs the last apply
    derived from the data (data/view_ttls.json): the registry changes when any of them does."""
    digest = hashlib.sha256()
    ttls = repo_path / "data" / TTL_FILE
    for path in sorted(repo_path.rglob("*")):
        relative = path.relative_to(repo_path)
        declared = path.suffix in (".py", ".yaml") and "data" not in relative.parts
        if declared or path == ttls:
            digest.update(relative.as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@dg.asset(
    group_name="features",
    owners=[c.OWNER_DATA],
    tags={"domain": "features"},
    kinds={"feast"},
    code_version=FEATURE_CODE_VERSION,
    deps=[f"{name}_features" for name in TABLES],
    automation_condition=REFRESH,
)
def feature_registry(feature_store: FeatureStoreResource) -> dg.MaterializeResult:
    """The Feast registry: entities, feature views and versioned feature services declared in
    feature_repo/, applied with `feast apply`, each view with the TTL derived from the feature
    tables (or set in ``features.ttl_days``). A broken repository fails here with Feast's
    message and the previous registry stays in use."""
    repo = feature_store.repo
    try:
        output = repo.apply(ttl_days=feature_store.ttl_days)
    except FeatureRepoError as exc:
        raise dg.Failure(description=str(exc)) from exc
    store = feature_store.store()
    views = sorted(v.name for v in store.list_feature_views())
    services = sorted(s.name for s in store.list_feature_services())
    return dg.MaterializeResult(
        data_version=dg.DataVersion(repo_code_version(repo.path)),
        metadata={
            "repo": dg.MetadataValue.path(str(repo.path)),
            "config_file": repo.config_file,
            "feature_views": views,
            "ttl_days": ttl_days({v.name: v.ttl for v in store.list_feature_views()}),
            "ttl_overrides": dict(feature_store.ttl_days),
            "on_demand_feature_views": sorted(v.name for v in store.list_on_demand_feature_views()),
            "feature_services": services,
            "apply_output": dg.MetadataValue.md(f"```\n{output.strip()[-2000:]}\n```"),
        },
    )


@dg.asset(
    group_name="features",
    owners=[c.OWNER_DATA],
    tags=TAGS,
    kinds={"feast"},
    code_version=FEATURE_CODE_VERSION,
    deps=[feature_registry],
    automation_condition=REFRESH,
    check_specs=[
        dg.AssetCheckSpec(
            "training_serving_consistency",
            asset="online_features",
            blocking=True,
            description="For sampled entities, online values, read through Feast's SDK and "
            "through the service's feature reader, equal the offline (point-in-time) values at "
            "the end of the materialised range, both under the views' TTL (a row older than "
            "the TTL is missing on both sides); fails when nothing was compared.",
        )
    ],
)
def online_features(context: dg.AssetExecutionContext, feature_store: FeatureStoreResource):
    """Latest feature values in the online store for serving, materialised over the explicit
    range of the feature tables, then checked against the offline store."""
    store = feature_store.store()
    tables = {name: pd.read_parquet(feature_store.repo.table_path(name)) for name in STORED_VIEWS}
    start = min(t[c.FEATURE_TS].min() for t in tables.values()).to_pydatetime()
    end = max(t[c.FEATURE_TS].max() for t in tables.values()).to_pydatetime()
    started = time.perf_counter()
    # Both ends widened by a second: the last snapshot is stamped exactly at `end`.
    materialize(store, start - timedelta(seconds=1), end + timedelta(seconds=1), STORED_VIEWS)
    seconds = time.perf_counter() - started
    # the online side also as the service reads it: its reader, over the tables' catalogue
    catalogue = tables["item_popularity"][c.ITEM_ID].astype(str).unique().tolist()
    report = consistency_report(store, tables, end, reader=FeastOnlineReader(store, catalogue))
    context.log.info(f"materialised {STORED_VIEWS} in {seconds:.1f} s")
    yield dg.MaterializeResult(
        metadata={
            "materialized_views": list(STORED_VIEWS),
            "range_start": str(start),
            "range_end": str(end),
            "materialize_seconds": round(seconds, 2),
            "online_entities": {
                name: int(t[entity_keys(t)].drop_duplicates().shape[0])
                for name, t in tables.items()
            },
        }
    )
    yield dg.AssetCheckResult(
        check_name="training_serving_consistency",
        passed=report.passed,
        metadata={
            "entities_compared": report.compared,
            "values_compared": report.values,
            "mismatches": report.mismatches,
            "served_values_compared": report.served_values,
            "served_mismatches": report.served_mismatches,
            "examples": dg.MetadataValue.md(report.examples or "none"),
        },
    )
