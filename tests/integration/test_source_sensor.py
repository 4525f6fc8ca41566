"""The source-change sensor requests runs for exactly the partitions whose source rows changed."""

from __future__ import annotations

import dagster as dg
import pytest

from recsys_assets.defs.ingestion.resources import EventSourceResource
from recsys_assets.defs.ingestion.sensors import source_change_sensor
from tests.integration.support import ingest_partition
from tests.integration.test_ingestion_assets import EVENTS_CSV, FEBRUARY, JANUARY

pytestmark = pytest.mark.integration


def _tick(instance, source, cursor=None):
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"source": EventSourceResource(config_path=str(source))},
    )
    return source_change_sensor(context)


def _requested(result) -> list[str]:
    return sorted(request.partition_key for request in result.run_requests)


def test_only_changed_partitions_are_requested(write_source, tmp_path):
    source = write_source(EVENTS_CSV)
    with dg.instance_for_test() as instance:
        first = _tick(instance, source)
        assert JANUARY in _requested(first) and FEBRUARY in _requested(first)
        assert len(_requested(first)) == 13  # every partition of the default range is new

        for key in (JANUARY, FEBRUARY):
            assert ingest_partition(source, tmp_path / "w.duckdb", key, instance).success
        settled = _tick(instance, source)
        assert JANUARY not in _requested(settled) and FEBRUARY not in _requested(settled)

        unchanged = _tick(instance, source, cursor=settled.cursor)
        assert isinstance(unchanged, dg.SkipReason)

        (tmp_path / "events.csv").write_text(EVENTS_CSV + "12583,22725,2011-02-20 10:00:00,1,2,9\n")
        changed = _tick(instance, source, cursor=settled.cursor)
        assert FEBRUARY in _requested(changed) and JANUARY not in _requested(changed)
        assert changed.cursor != settled.cursor


def test_unreadable_source_requests_nothing(write_source, tmp_path):
    source = write_source(EVENTS_CSV)
    (tmp_path / "events.csv").write_text("customer,sku,ts,qty,price,order\n1,x,never,1,1,1\n")
    with dg.instance_for_test() as instance:
        result = _tick(instance, source)
    assert isinstance(result, dg.SkipReason)
    assert "events.csv" in result.skip_message and "'ts'" in result.skip_message


def test_changed_source_settings_request_the_ingested_partitions_again(write_source, tmp_path):
    source = write_source(EVENTS_CSV)
    with dg.instance_for_test() as instance:
        assert ingest_partition(source, tmp_path / "w.duckdb", JANUARY, instance).success
        settled = _tick(instance, source)
        assert JANUARY not in _requested(settled)
        # Same file, new rule setting: January must be validated again under it.
        source.write_text(source.read_text() + 'cancellation_prefix: "C"\n')
        changed = _tick(instance, source, cursor=settled.cursor)
        assert JANUARY in _requested(changed)
