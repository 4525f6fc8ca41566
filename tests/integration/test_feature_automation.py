"""Feature refresh is automatic: newly validated events make the features assets due."""

from __future__ import annotations

import dagster as dg
import pytest

from recsys_assets.definitions import defs
from tests.integration.support import ingest_partition
from tests.integration.test_ingestion_assets import EVENTS_CSV, JANUARY

pytestmark = pytest.mark.integration
FEATURE_ASSETS = dg.AssetSelection.groups("features")


def test_new_events_make_feature_tables_due(write_source, tmp_path):
    source = write_source(EVENTS_CSV)
    with dg.instance_for_test() as instance:
        quiet = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, asset_selection=FEATURE_ASSETS
        )
        assert quiet.total_requested == 0  # nothing ingested yet: nothing to compute
        assert ingest_partition(source, tmp_path / "w.duckdb", JANUARY, instance).success
        due = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, asset_selection=FEATURE_ASSETS, cursor=quiet.cursor
        )
    requested = {r.key.to_user_string() for r in due.results if r.true_subset.size}
    # The whole chain is requested in one tick, so one run refreshes tables, registry and store.
    assert requested == {
        "customer_profile_features",
        "item_popularity_features",
        "customer_item_features",
        "session_context_features",
        "feature_registry",
        "online_features",
    }
