"""Materialise the ingestion assets into a real DuckDB file, partition by partition."""

from __future__ import annotations

import io
import re
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from tests.integration.support import ingest_partition

pytestmark = pytest.mark.integration

EVENTS_CSV = """customer,sku,ts,qty,price,order
17850,85123A,2011-01-03 08:26:00,6,2.55,536365
17850,71053,2011-01-03 08:26:00,6,3.39,536365
17850,71053,2011-01-03 08:26:00,6,3.39,536365
,22633,2011-01-04 10:00:00,2,1.85,536366
13047,84406B,2011-01-05 09:00:00,-8,2.75,C536367
13047,POST,2011-01-05 09:00:00,1,18.00,536368
12583,22728,2011-02-01 09:30:00,24,3.75,536370
12583,22727,2011-02-02 09:30:00,24,3.75,536370
12583,22726,2011-02-03 09:30:00,12,0.00,536371
"""
JANUARY, FEBRUARY = "2011-01-01", "2011-02-01"


def _count(warehouse: Path, table: str) -> int:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(f"select count(*) from events.{table}").fetchone()[0]


def _metadata(result, asset: str) -> dict:
    [event] = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == asset
    ]
    return {k: v.value for k, v in event.materialization.metadata.items()}


@pytest.fixture
def instance():
    with dg.instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture
def source(write_source) -> Path:
    return write_source(
        EVENTS_CSV, extra='cancellation_prefix: "C"\nproduct_item_pattern: "^\\\\d"\n'
    )


def test_partitions_land_with_accounting_versions_and_lineage(source, tmp_path, instance):
    warehouse = tmp_path / "w.duckdb"
    january = ingest_partition(source, warehouse, JANUARY, instance)
    assert january.success
    raw = _metadata(january, "raw_events")
    valid = _metadata(january, "validated_events")
    quarantined = _metadata(january, "quarantined_events")
    assert (raw["dagster/row_count"], valid["dagster/row_count"]) == (6, 2)
    assert quarantined["dagster/row_count"] == 4
    assert quarantined["rows_by_first_reason"] == {
        "missing_user": 1,
        "missing_item": 0,
        "unknown_event_type": 0,
        "cancellation": 1,
        "non_positive_quantity": 0,
        "non_positive_price": 0,
        "non_product_item": 1,
        "duplicate": 1,
    }
    assert raw["source_sha256"] and len(raw["data_version"]) == 64
    assert valid["rules_version"] and valid["upstream_data_version"] == raw["data_version"]
    record = instance.get_latest_data_version_record(
        dg.AssetKey("validated_events"), partition_key=JANUARY
    )
    assert record.asset_materialization.tags["dagster/data_version"] == valid["data_version"]
    checks = {(r.asset_key.to_user_string(), r.check_name): r.passed
              for r in january.get_asset_check_evaluations()}  # fmt: skip
    assert checks[("validated_events", "row_accounting")]
    assert checks[("validated_events", "contract")]
    assert checks[("quarantined_events", "contract")]
    assert not checks[("quarantined_events", "quarantine_share")]  # 4 of 6 rows: warns

    february = ingest_partition(source, warehouse, FEBRUARY, instance)
    assert february.success
    assert _count(warehouse, "raw_events") == 9
    assert _count(warehouse, "validated_events") == 4
    assert _count(warehouse, "quarantined_events") == 5


def test_rerunning_a_partition_replaces_it_and_keeps_its_version(source, tmp_path, instance):
    warehouse = tmp_path / "w.duckdb"
    first = ingest_partition(source, warehouse, JANUARY, instance)
    ingest_partition(source, warehouse, FEBRUARY, instance)
    again = ingest_partition(source, warehouse, JANUARY, instance)
    assert again.success
    assert _count(warehouse, "raw_events") == 9  # replaced, not appended
    assert (
        _metadata(again, "validated_events")["data_version"]
        == _metadata(first, "validated_events")["data_version"]
    )


def test_cancellations_stay_queryable(source, tmp_path, instance):
    warehouse = tmp_path / "w.duckdb"
    ingest_partition(source, warehouse, JANUARY, instance)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        returns = con.execute(
            "select user_id, item_id, quantity from events.quarantined_events "
            "where reasons like '%cancellation%'"
        ).fetchall()
    assert returns == [("13047", "84406B", -8.0)]


BAD_INPUTS = {
    "unparseable timestamp": (
        EVENTS_CSV + "1,22000,not-a-date,1,1.0,9\n",
        r"events\.csv: column 'ts' \(event timestamp\).*'not-a-date'",
    ),
    "wrong type": (
        EVENTS_CSV + "1,22000,2011-01-09 10:00:00,lots,1.0,9\n",
        r"events\.csv: column 'qty' \(quantity\) must hold numbers",
    ),
    "missing column": (
        "customer,sku,ts,qty,order\n1,22000,2011-01-09 10:00:00,1,9\n",
        r"events\.csv: column\(s\) 'price' \(mapped to unit_price\) not found",
    ),
    "empty file": ("", r"events\.csv: source file is empty"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_clearly_and_keeps_stored_partitions(case, source, tmp_path, instance):
    warehouse = tmp_path / "w.duckdb"
    assert ingest_partition(source, warehouse, JANUARY, instance).success
    assert ingest_partition(source, warehouse, FEBRUARY, instance).success
    before = {t: _count(warehouse, t) for t in ("raw_events", "validated_events")}

    content, message = BAD_INPUTS[case]
    (tmp_path / "events.csv").write_text(content)
    result = ingest_partition(source, warehouse, JANUARY, instance)

    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    error = failure.event_specific_data.error
    text = error.message + "".join(cause.message for cause in [error.cause] if cause is not None)
    assert re.search(message, text), text
    assert {t: _count(warehouse, t) for t in before} == before


def _orders_workbook(path: Path, sheets: tuple[str, str] = ("2011-01", "2011-02")) -> None:
    """EVENTS_CSV as an .xlsx: January's rows in one sheet, February's in the other."""
    frame = pd.read_csv(io.StringIO(EVENTS_CSV), parse_dates=["ts"])
    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        for sheet, rows in zip(sheets, (frame.ts < FEBRUARY, frame.ts >= FEBRUARY), strict=True):
            frame[rows].to_excel(writer, sheet_name=sheet, index=False)


BAD_WORKBOOKS = {
    "corrupt workbook": (
        lambda path: path.write_text(EVENTS_CSV),
        r"events\.xlsx: cannot read excel file: not an \.xlsx workbook",
    ),
    "sheet renamed": (
        lambda path: _orders_workbook(path, ("Jan", "2011-02")),
        r"events\.xlsx: sheet\(s\) \['2011-01'\] not found; the workbook has sheets "
        r"\['Jan', '2011-02'\]",
    ),
}


@pytest.mark.parametrize("case", list(BAD_WORKBOOKS))
def test_bad_workbook_fails_clearly_and_keeps_stored_partitions(
    case, write_source, tmp_path, instance
):
    source = write_source(
        "",
        filename="events.xlsx",
        extra='sheets: ["2011-01", "2011-02"]\n'
        'cancellation_prefix: "C"\nproduct_item_pattern: "^\\\\d"\n',
    )
    _orders_workbook(tmp_path / "events.xlsx")
    warehouse = tmp_path / "w.duckdb"
    assert ingest_partition(source, warehouse, JANUARY, instance).success
    assert ingest_partition(source, warehouse, FEBRUARY, instance).success
    before = {t: _count(warehouse, t) for t in ("raw_events", "validated_events")}
    assert before == {"raw_events": 9, "validated_events": 4}  # as from the CSV

    write, message = BAD_WORKBOOKS[case]
    write(tmp_path / "events.xlsx")
    result = ingest_partition(source, warehouse, JANUARY, instance)

    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    error = failure.event_specific_data.error
    text = error.message + "".join(cause.message for cause in [error.cause] if cause is not None)
    assert re.search(message, text), text
    assert {t: _count(warehouse, t) for t in before} == before


TYPED_EVENTS_CSV = """visitor,item,ts,ev
1,a,2011-01-01 10:00:00,view
1,a,2011-01-01 10:01:00,addtocart
1,a,2011-01-01 10:02:00,transaction
2,b,2011-02-01 09:00:00,view
"""
TYPED_COLUMNS = {"user_id": "visitor", "item_id": "item", "event_ts": "ts", "event_type": "ev"}
EVENT_TYPES = "event_types: {transaction: purchase, addtocart: add_to_cart, view: view}\n"


def test_unmapped_event_type_fails_the_run_and_keeps_stored_partitions(
    write_source, tmp_path, instance
):
    source = write_source(TYPED_EVENTS_CSV, columns=TYPED_COLUMNS, extra=EVENT_TYPES)
    warehouse = tmp_path / "w.duckdb"
    assert ingest_partition(source, warehouse, "2011-01-01", instance).success
    assert ingest_partition(source, warehouse, FEBRUARY, instance).success
    with duckdb.connect(str(warehouse), read_only=True) as con:
        stored = con.execute(
            "select event_type from events.validated_events order by event_ts"
        ).fetchall()
    assert stored == [("view",), ("add_to_cart",), ("purchase",), ("view",)]

    (tmp_path / "events.csv").write_text(TYPED_EVENTS_CSV + "3,c,2011-01-03 08:00:00,refund\n")
    result = ingest_partition(source, warehouse, "2011-01-01", instance)

    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    error = failure.event_specific_data.error
    text = error.message + "".join(cause.message for cause in [error.cause] if cause is not None)
    assert re.search(r"events\.csv: column 'ev' \(event_type\).*'refund' \(1 rows\)", text), text
    with duckdb.connect(str(warehouse), read_only=True) as con:
        after = con.execute(
            "select event_type from events.validated_events order by event_ts"
        ).fetchall()
    assert after == stored
    assert _count(warehouse, "raw_events") == 4
