"""The synthetic shop as a source: generated, ingested and versioned like any file."""

from __future__ import annotations

import dagster as dg
import duckdb
import pytest

from recsys_assets.defs.lineage import partition_lineage
from tests.integration.support import ingest_partition

pytestmark = pytest.mark.integration

CONFIG = """name: synthetic_small
kind: synthetic
synthetic:
  n_users: 60
  n_items: 40
  start: 2011-01-01
  days: 20
  seed: 3
"""
JANUARY = "2011-01-01"  # inside the default partitions the test environment loads


def _run(config, warehouse, instance):
    return ingest_partition(config, warehouse, JANUARY, instance)


def test_synthetic_source_ingests_reproducibly_with_lineage(tmp_path):
    config = tmp_path / "synthetic.yaml"
    config.write_text(CONFIG)
    warehouse = tmp_path / "w.duckdb"
    with dg.instance_for_test() as instance:
        assert _run(config, warehouse, instance).success
        [first] = partition_lineage(instance, [JANUARY])
        assert _run(config, warehouse, instance).success
        [second] = partition_lineage(instance, [JANUARY])
        [missing] = partition_lineage(instance, ["2011-02-01"])

    assert first["raw_events.rows"] > 100
    assert first["validated_events.rows"] == first["raw_events.rows"]  # a clean generator
    assert first["quarantined_events.rows"] == 0
    assert first["validated_events.rules_version"]
    assert len(first["raw_events.source_sha256"]) == 64
    # Same knobs, same events: the data version is stable across runs.
    assert second["raw_events.data_version"] == first["raw_events.data_version"]
    assert second["raw_events.run_id"] != first["raw_events.run_id"]
    assert missing["raw_events.rows"] is None and missing["raw_events.run_id"] is None

    with duckdb.connect(str(warehouse), read_only=True) as con:
        # An empty partition still creates its table, so readers never meet a missing table.
        assert con.execute("select count(*) from events.quarantined_events").fetchone() == (0,)
        kinds = {
            row[0]
            for row in con.execute(
                "select distinct event_type from events.validated_events"
            ).fetchall()
        }
    assert kinds == {"view", "add_to_cart", "purchase"}
