"""Reading sources: column mapping, typing, defaults, and a clear error for each bad input."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import asdict

import numpy as np
import openpyxl
import pandas as pd
import pytest

from recsys_assets.config.settings import PROJECT_ROOT
from recsys_assets.core import constants as c
from recsys_assets.ingestion.sources import (
    SourceError,
    config_sha256,
    load_events,
    load_source_spec,
    source_fingerprint,
    window,
)

GOOD_CSV = """customer,sku,ts,qty,price,order
17850.0,85123A,2011-01-03 08:26:00,6,2.55,536365
17850.0,71053,2011-01-03 08:26:00,6,3.39,536365
13047,84406B,2011-02-01 09:00:00,8,2.75,C536366
"""


def test_maps_columns_types_and_ids(write_source):
    spec = load_source_spec(write_source(GOOD_CSV))
    events = load_events(spec)
    assert list(events.columns) == list(c.CANONICAL_COLUMNS)
    assert events[c.USER_ID].tolist() == ["17850", "17850", "13047"]  # float ids lose ".0"
    assert events[c.ITEM_ID].tolist() == ["85123A", "71053", "84406B"]
    assert events[c.QUANTITY].tolist() == [6.0, 6.0, 8.0]
    assert events[c.UNIT_PRICE].tolist() == pytest.approx([2.55, 3.39, 2.75])
    assert events[c.EVENT_TS].iloc[0] == pd.Timestamp("2011-01-03 08:26:00")
    assert events[c.EVENT_ID].tolist() == ["shop:0", "shop:1", "shop:2"]
    assert events[c.SOURCE_ROW].tolist() == [0, 1, 2]


def test_missing_optional_columns_get_documented_defaults(write_source):
    config = write_source(
        "u,i,t\na,x,2011-01-01T10:00:00\n",
        columns={"user_id": "u", "item_id": "i", "event_ts": "t"},
    )
    spec = load_source_spec(config)
    events = load_events(spec)
    assert spec.present_fields == c.REQUIRED_FIELDS
    row = events.iloc[0]
    assert row[c.QUANTITY] == c.DEFAULT_QUANTITY
    assert row[c.EVENT_TYPE] == c.DEFAULT_EVENT_TYPE
    assert np.isnan(row[c.UNIT_PRICE])
    assert pd.isna(row[c.ORDER_ID]) and pd.isna(row[c.DEVICE])


def test_missing_tokens_become_nulls(write_source):
    config = write_source(
        "customer,sku,ts,desc\n1,x,2011-01-01,nan\n2,y,2011-01-01,MUG\n",
        columns={"user_id": "customer", "item_id": "sku", "event_ts": "ts", "description": "desc"},
        extra='missing_tokens: ["nan"]\n',
    )
    events = load_events(load_source_spec(config))
    assert events[c.DESCRIPTION].isna().tolist() == [True, False]


def test_parquet_source_with_native_types(tmp_path):
    frame = pd.DataFrame(
        {
            "CustomerID": [17850.0, np.nan],
            "StockCode": ["85123A", "POST"],
            "InvoiceDate": pd.to_datetime(["2011-01-01 10:00", "2011-01-02 11:00"]),
        }
    )
    frame.to_parquet(tmp_path / "events.parquet")
    (tmp_path / "src.yaml").write_text(
        "name: p\npath: events.parquet\n"
        "columns: {user_id: CustomerID, item_id: StockCode, event_ts: InvoiceDate}\n"
    )
    events = load_events(load_source_spec(tmp_path / "src.yaml"))
    assert events[c.USER_ID].tolist()[0] == "17850"
    assert pd.isna(events[c.USER_ID].iloc[1])  # a missing customer is kept, to be quarantined


def test_window_is_half_open(write_source):
    events = load_events(load_source_spec(write_source(GOOD_CSV)))
    january = window(events, pd.Timestamp("2011-01-01"), pd.Timestamp("2011-02-01"))
    february = window(events, pd.Timestamp("2011-02-01"), pd.Timestamp("2011-03-01"))
    assert len(january) == 2 and len(february) == 1
    assert february.index.tolist() == [0]


def test_fingerprint_changes_with_content(write_source):
    config = write_source(GOOD_CSV)
    spec = load_source_spec(config)
    before = source_fingerprint(spec)["sha256"]
    spec.path.write_text(GOOD_CSV + "1,x,2011-03-01,1,1.0,9\n")
    assert source_fingerprint(spec)["sha256"] != before


# --- Bad input: each case names the file, the column and the problem ----------------------


def test_missing_file(write_source):
    spec = load_source_spec(write_source(GOOD_CSV))
    spec.path.unlink()
    with pytest.raises(SourceError, match=r"events\.csv.*(not found|cannot read)"):
        load_events(spec)


def test_empty_file(write_source):
    spec = load_source_spec(write_source(""))
    with pytest.raises(SourceError, match=r"events\.csv: source file is empty \(0 bytes\)"):
        load_events(spec)


def test_header_without_rows(write_source):
    spec = load_source_spec(write_source("customer,sku,ts,qty,price,order\n"))
    with pytest.raises(SourceError, match="header but no rows"):
        load_events(spec)


def test_unreadable_parquet(tmp_path):
    (tmp_path / "broken.parquet").write_bytes(b"this is not parquet at all")
    (tmp_path / "src.yaml").write_text(
        "name: b\npath: broken.parquet\ncolumns: {user_id: u, item_id: i, event_ts: t}\n"
    )
    with pytest.raises(SourceError, match=r"broken\.parquet: cannot read parquet file"):
        load_events(load_source_spec(tmp_path / "src.yaml"))


def test_missing_required_column(write_source):
    spec = load_source_spec(write_source("customer,ts,qty,price,order\n1,2011-01-01,1,1,1\n"))
    with pytest.raises(SourceError, match=r"'sku' \(mapped to item_id\) not found"):
        load_events(spec)


def test_non_numeric_quantity(write_source):
    csv = GOOD_CSV + "1,x,2011-01-05 10:00:00,six,1.0,7\n"
    with pytest.raises(SourceError, match=r"column 'qty' \(quantity\) must hold numbers.*'six'"):
        load_events(load_source_spec(write_source(csv)))


def test_unparseable_timestamp(write_source):
    csv = GOOD_CSV + "1,x,yesterday,1,1.0,7\n"
    with pytest.raises(SourceError, match=r"column 'ts' \(event timestamp\).*'yesterday'.*row 3"):
        load_events(load_source_spec(write_source(csv)))


def test_missing_timestamp(write_source):
    csv = GOOD_CSV + "1,x,,1,1.0,7\n"
    with pytest.raises(SourceError, match=r"column 'ts'.*1 value\(s\) are missing"):
        load_events(load_source_spec(write_source(csv)))


def test_explicit_timestamp_format(write_source):
    config = write_source(
        "customer,sku,ts\n1,x,03/01/2011 08:26\n",
        columns={"user_id": "customer", "item_id": "sku", "event_ts": "ts"},
        extra='timestamp_format: "%d/%m/%Y %H:%M"\n',
    )
    events = load_events(load_source_spec(config))
    assert events[c.EVENT_TS].iloc[0] == pd.Timestamp("2011-01-03 08:26")


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("name: x\npath: e.csv\ncolumns: {user_id: u, item_id: i}\n", r"required field\(s\)"),
        ("name: x\npath: e.csv\ncolums: {}\n", r"unknown setting\(s\) \['colums'\]"),
        ("name: x\npath: e.json\ncolumns: {user_id: u, item_id: i, event_ts: t}\n", "format"),
        ("name: x\npath: e.xls\ncolumns: {user_id: u, item_id: i, event_ts: t}\n",
         r"old binary Excel workbook \(\.xls\).*save it as \.xlsx"),
        ("name: x\npath: e.csv\ncolumns: {user: u, item_id: i, event_ts: t}\n", "unknown field"),
        ("name: [unclosed\n", "not valid YAML"),
        ("- just\n- a list\n", "must be a mapping"),
        ("name: x\nkind: stream\n", "kind must be"),
        ("name: x\npath: e.csv\ncolumns: {user_id: u, item_id: i, event_ts: t}\n"
         "partitions: {granularity: hourly}\n", "granularity"),
    ],
)  # fmt: skip
def test_bad_source_config(tmp_path, yaml_text, message):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml_text)
    with pytest.raises(SourceError, match=message) as error:
        load_source_spec(config)
    assert "bad.yaml" in str(error.value)


# --- Files without a header: column names from the config ----------------------------------

HEADERLESS = "header: false\nnames: [customer, sku, ts, qty, price, order]\n"


def test_headerless_csv_reads_every_row_with_the_configured_names(write_source):
    rows = GOOD_CSV.split("\n", 1)[1]  # the same rows, without their header line
    events = load_events(load_source_spec(write_source(rows, extra=HEADERLESS)))
    assert events[c.USER_ID].tolist() == ["17850", "17850", "13047"]  # the first row is data
    assert events[c.ORDER_ID].tolist() == ["536365", "536365", "C536366"]
    assert events[c.QUANTITY].tolist() == [6.0, 6.0, 8.0]


def test_headerless_csv_with_a_column_count_other_than_names_fails(write_source):
    config = write_source("17850,85123A,2011-01-03 08:26:00,6,2.55\n", extra=HEADERLESS)
    with pytest.raises(SourceError, match=r"events\.csv: the file has 5 column\(s\) but 'names'"):
        load_events(load_source_spec(config))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("header: false\n", r"'header: false' needs 'names'"),
        ("header: no-thanks\n", r"'header' must be true or false"),
        ("names: [customer, sku, ts]\n", r"'names' is only for a file without a header"),
        ("header: false\nnames: [customer, sku, ts, qty, price]\n",
         r"column\(s\) 'order' \(mapped to order_id\) not in 'names'"),
        ("header: false\nnames: [customer, sku, ts, qty, price, order, sku]\n",
         r"'names' lists \['sku'\] more than once"),
    ],
)  # fmt: skip
def test_bad_header_settings(write_source, extra, message):
    with pytest.raises(SourceError, match=r"shop\.yaml: " + message):
        load_source_spec(write_source(GOOD_CSV, extra=extra))


def test_settings_left_unset_keep_the_config_hash_of_existing_sources():
    """The sensor compares config hashes with the stored ones: options a config does not use
    must not change its hash (or every partition would be re-ingested)."""
    first_fields = ("name", "kind", "path", "format", "columns", "timestamp_format",
                    "cancellation_prefix", "product_item_pattern", "missing_tokens",
                    "partitions", "synthetic")  # fmt: skip
    for config in ("example_shop.yaml", "online_retail.yaml"):
        spec = load_source_spec(PROJECT_ROOT / "data" / "sources" / config)
        settings = {k: v for k, v in asdict(spec).items() if k in first_fields}
        before = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
        assert config_sha256(spec) == before.hexdigest()


# --- Unix timestamps and date-only columns -------------------------------------------------

TS_ONLY = {"user_id": "customer", "item_id": "sku", "event_ts": "ts"}


@pytest.mark.parametrize(
    ("unit", "values"),
    [("s", ["1293840000", "1293872400.5"]), ("ms", ["1293840000000", "1293872400500"])],
)
def test_unix_timestamps_in_seconds_or_milliseconds(write_source, unit, values):
    csv = "customer,sku,ts\n" + "".join(f"1,x,{v}\n" for v in values)
    config = write_source(csv, columns=TS_ONLY, extra=f"timestamp_unit: {unit}\n")
    events = load_events(load_source_spec(config))
    # 1293840000 s is 2011-01-01 00:00 UTC; 32400.5 s later is 09:00:00.5
    assert events[c.EVENT_TS].tolist() == [
        pd.Timestamp("2011-01-01 00:00:00"),
        pd.Timestamp("2011-01-01 09:00:00.500"),
    ]


def test_unix_timestamps_that_are_not_numbers_fail(write_source):
    csv = "customer,sku,ts\n1,x,1293840000\n2,y,2011-01-01\n"
    config = write_source(csv, columns=TS_ONLY, extra="timestamp_unit: s\n")
    with pytest.raises(
        SourceError,
        match=r"events\.csv: column 'ts' \(event timestamp\): 1 value\(s\) are missing or not "
        r"Unix timestamps in seconds, e\.g\. \['2011-01-01'\] \(first at row 1\).*'timestamp_unit'",
    ):
        load_events(load_source_spec(config))


def test_milliseconds_read_as_seconds_fail_with_a_hint(write_source):
    config = write_source(
        "customer,sku,ts\n1,x,1293840000000\n", columns=TS_ONLY, extra="timestamp_unit: s\n"
    )
    with pytest.raises(SourceError, match=r"column 'ts'.*out of range.*is the unit 'ms'"):
        load_events(load_source_spec(config))


def test_date_only_column_with_an_explicit_format(write_source):
    config = write_source(
        "customer,sku,ts\n1,x,03-01-2011\n2,y,28-02-2011\n",
        columns=TS_ONLY,
        extra='timestamp_format: "%d-%m-%Y"\n',
    )
    events = load_events(load_source_spec(config))
    assert events[c.EVENT_TS].tolist() == [pd.Timestamp("2011-01-03"), pd.Timestamp("2011-02-28")]


def test_date_only_format_refuses_other_dates(write_source):
    config = write_source(
        "customer,sku,ts\n1,x,03-01-2011\n2,y,2011-02-28\n",
        columns=TS_ONLY,
        extra='timestamp_format: "%d-%m-%Y"\n',
    )
    with pytest.raises(
        SourceError, match=r"column 'ts'.*not timestamps in format %d-%m-%Y.*'2011-02-28'.*row 1"
    ):
        load_events(load_source_spec(config))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("timestamp_unit: us\n", r"timestamp_unit must be one of \['s', 'ms'\]"),
        ('timestamp_unit: s\ntimestamp_format: "%Y"\n', r"set 'timestamp_format'.*not both"),
    ],
)
def test_bad_timestamp_unit_settings(write_source, extra, message):
    with pytest.raises(SourceError, match=r"shop\.yaml: " + message):
        load_source_spec(write_source(GOOD_CSV, extra=extra))


# --- Event-type values mapped onto view / add_to_cart / purchase ---------------------------

EVENTS_WITH_TYPES = {"user_id": "visitor", "item_id": "item", "event_ts": "ts", "event_type": "ev"}
RETAIL_ROCKET = "event_types: {transaction: purchase, addtocart: add_to_cart, view: view}\n"


def test_event_type_values_are_mapped(write_source):
    csv = (
        "visitor,item,ts,ev\n1,a,2015-06-01,view\n1,a,2015-06-01, addtocart\n"
        "1,a,2015-06-02,transaction\n2,b,2015-06-02,\n"
    )
    config = write_source(csv, columns=EVENTS_WITH_TYPES, extra=RETAIL_ROCKET)
    events = load_events(load_source_spec(config))
    assert events[c.EVENT_TYPE].tolist()[:3] == ["view", "add_to_cart", "purchase"]
    assert pd.isna(events[c.EVENT_TYPE].iloc[3])  # empty stays null: quarantined as unknown


def test_unmapped_event_type_values_fail_with_values_and_row_counts(write_source):
    csv = (
        "visitor,item,ts,ev\n1,a,2015-06-01,view\n1,a,2015-06-01,refund\n"
        "1,a,2015-06-02,wishlist\n2,b,2015-06-02,refund\n"
    )
    config = write_source(csv, columns=EVENTS_WITH_TYPES, extra=RETAIL_ROCKET)
    with pytest.raises(
        SourceError,
        match=r"events\.csv: column 'ev' \(event_type\): 3 row\(s\) hold value\(s\) that "
        r"'event_types' does not map: 'refund' \(2 rows\), 'wishlist' \(1 rows\)",
    ):
        load_events(load_source_spec(config))


@pytest.mark.parametrize(
    ("columns", "extra", "message"),
    [
        (EVENTS_WITH_TYPES, "event_types: {transaction: order}\n",
         r"'event_types' maps \{'transaction': 'order'\}; each value must map to one of"),
        (EVENTS_WITH_TYPES, "event_types: [view]\n", r"'event_types' must map"),
        (TS_ONLY, RETAIL_ROCKET, r"'event_types' needs 'columns.event_type'"),
    ],
)  # fmt: skip
def test_bad_event_type_settings(write_source, columns, extra, message):
    config = write_source("visitor,item,ts,ev\n", columns=columns, extra=extra)
    with pytest.raises(SourceError, match=r"shop\.yaml: " + message):
        load_source_spec(config)


# --- Explicit ratings ---------------------------------------------------------------------

RATINGS = {"user_id": "user", "item_id": "movie", "event_ts": "ts"}
RATED = "rating_column: stars\npositive_rating: 4\n"


def test_high_ratings_are_purchases_and_low_ratings_views(write_source):
    csv = (
        "user,movie,ts,stars\n1,a,2011-01-01,5\n1,b,2011-01-01,4\n1,c,2011-01-01,3.5\n"
        "2,a,2011-01-02,\n"
    )
    spec = load_source_spec(write_source(csv, columns=RATINGS, extra=RATED))
    events = load_events(spec)
    assert len(events) == 4  # low ratings are kept, as views
    assert events[c.EVENT_TYPE].tolist()[:3] == ["purchase", "purchase", "view"]
    assert pd.isna(events[c.EVENT_TYPE].iloc[3])  # no rating: null, quarantined as unknown type
    assert c.EVENT_TYPE in spec.present_fields


def test_ratings_that_are_not_numbers_fail(write_source):
    csv = "user,movie,ts,stars\n1,a,2011-01-01,5\n1,b,2011-01-01,great\n"
    config = write_source(csv, columns=RATINGS, extra=RATED)
    with pytest.raises(
        SourceError,
        match=r"events\.csv: column 'stars' \(rating\) must hold numbers.*'great'.*row 1",
    ):
        load_events(load_source_spec(config))


def test_missing_rating_column_fails(write_source):
    config = write_source("user,movie,ts\n1,a,2011-01-01\n", columns=RATINGS, extra=RATED)
    with pytest.raises(SourceError, match=r"events\.csv: column\(s\) 'stars' \(mapped to rating\)"):
        load_events(load_source_spec(config))


@pytest.mark.parametrize(
    ("columns", "extra", "message"),
    [
        (RATINGS, "rating_column: stars\n",
         r"explicit ratings need both 'rating_column' and 'positive_rating'"),
        (RATINGS, "rating_column: stars\npositive_rating: high\n",
         r"'positive_rating' must be a number"),
        ({**RATINGS, "event_type": "ev"}, RATED,
         r"with 'rating_column' the event type comes from the rating"),
    ],
)  # fmt: skip
def test_bad_rating_settings(write_source, columns, extra, message):
    config = write_source("user,movie,ts,stars\n", columns=columns, extra=extra)
    with pytest.raises(SourceError, match=r"shop\.yaml: " + message):
        load_source_spec(config)


# --- Several files by glob, gzip-compressed CSV --------------------------------------------

HEAD = "customer,sku,ts\n"


def _exports(folder, files: dict[str, str]):
    """Write files into ``folder``: names ending in .gz are gzip-compressed."""
    import gzip

    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        data = gzip.compress(text.encode(), mtime=0) if name.endswith(".gz") else text.encode()
        (folder / name).write_bytes(data)


def _pattern_source(tmp_path, pattern="exports/*.csv*", extra="format: csv\n"):
    config = tmp_path / "shop.yaml"
    config.write_text(
        f"name: shop\npath: {pattern}\ncolumns: {{user_id: customer, item_id: sku, event_ts: ts}}\n"
        + extra
    )
    return config


def test_gzip_csv_is_read_and_its_format_inferred(tmp_path):
    _exports(tmp_path / "exports", {"2011.csv.gz": HEAD + "1,x,2011-01-01\n2,y,2011-01-02\n"})
    spec = load_source_spec(_pattern_source(tmp_path, "exports/2011.csv.gz", extra=""))
    assert spec.format == "csv"
    assert load_events(spec)[c.USER_ID].tolist() == ["1", "2"]


def test_glob_reads_every_matched_file_in_name_order(tmp_path):
    _exports(
        tmp_path / "exports",
        {
            "b.csv.gz": HEAD + "3,z,2011-02-01\n",
            "a.csv": HEAD + "1,x,2011-01-01\n2,y,2011-01-02\n",
            "notes.txt": "not an export",
        },
    )
    events = load_events(load_source_spec(_pattern_source(tmp_path)))
    assert events[c.USER_ID].tolist() == ["1", "2", "3"]  # a.csv, then b.csv.gz
    assert events[c.EVENT_ID].tolist() == ["shop:0", "shop:1", "shop:2"]  # numbered on
    assert events[c.SOURCE_ROW].tolist() == [0, 1, 2]


def test_glob_fingerprint_covers_every_file_in_a_stable_order(tmp_path):
    files = {"a.csv": HEAD + "1,x,2011-01-01\n", "b.csv": HEAD + "2,y,2011-02-01\n"}
    _exports(tmp_path / "one" / "exports", files)
    _exports(tmp_path / "two" / "exports", dict(reversed(files.items())))  # written b first
    one = load_source_spec(_pattern_source(tmp_path / "one"))
    two = load_source_spec(_pattern_source(tmp_path / "two"))
    first = source_fingerprint(one)
    assert first["files"] == ["a.csv", "b.csv"]
    assert first["bytes"] == sum(len(text) for text in files.values())
    assert source_fingerprint(two)["sha256"] == first["sha256"]  # order of writing is irrelevant

    (tmp_path / "one" / "exports" / "b.csv").write_text(HEAD + "2,y,2011-02-02\n")
    changed = source_fingerprint(one)["sha256"]
    assert changed != first["sha256"]  # a change in the second file counts
    _exports(tmp_path / "one" / "exports", {"c.csv": HEAD + "3,z,2011-03-01\n"})
    assert source_fingerprint(one)["sha256"] not in (first["sha256"], changed)  # a new file too


def test_glob_without_matches_fails(tmp_path):
    (tmp_path / "exports").mkdir()
    spec = load_source_spec(_pattern_source(tmp_path))
    with pytest.raises(SourceError, match=r"exports/\*\.csv\*: no file matches this pattern"):
        load_events(spec)


def test_a_bad_file_among_matches_is_named_with_its_own_row(tmp_path):
    _exports(
        tmp_path / "exports",
        {"a.csv": HEAD + "1,x,2011-01-01\n", "b.csv": HEAD + "2,y,2011-02-01\n3,z,soon\n"},
    )
    with pytest.raises(
        SourceError, match=r"exports/b\.csv: column 'ts' \(event timestamp\).*'soon'.*row 1\)"
    ):
        load_events(load_source_spec(_pattern_source(tmp_path)))


def test_corrupt_gzip_fails(tmp_path):
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "a.csv.gz").write_bytes(b"\x1f\x8b\x08 truncated")
    with pytest.raises(SourceError, match=r"a\.csv\.gz: cannot read csv file"):
        load_events(load_source_spec(_pattern_source(tmp_path)))


def test_gzip_is_for_csv_only(tmp_path):
    with pytest.raises(SourceError, match=r"shop\.yaml: gzip-compressed files must be csv"):
        load_source_spec(_pattern_source(tmp_path, "exports/events.parquet.gz", extra=""))


# --- Excel workbooks ------------------------------------------------------------------------

SHEET_HEAD = ["customer", "sku", "ts", "qty", "price", "order"]
# GOOD_CSV's rows as a workbook stores them: numbers, datetimes and text, a float customer id
GOOD_ROWS = [
    [17850.0, "85123A", dt.datetime(2011, 1, 3, 8, 26), 6, 2.55, 536365],
    [17850.0, 71053, dt.datetime(2011, 1, 3, 8, 26), 6, 3.39, 536365],
    [13047, "84406B", dt.datetime(2011, 2, 1, 9), 8, 2.75, "C536366"],
]
YEARS = ("Year 2009-2010", "Year 2010-2011")


def _workbook(path, sheets: dict[str, list[list]]) -> None:
    """Save an .xlsx whose sheets hold the given rows (the first row of each is its header)."""
    book = openpyxl.Workbook()
    book.remove(book.active)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    book.save(path)


def _excel_source(tmp_path, extra="", path="orders.xlsx", columns=None):
    columns = columns or {
        "user_id": "customer",
        "item_id": "sku",
        "event_ts": "ts",
        "quantity": "qty",
        "unit_price": "price",
        "order_id": "order",
    }
    config = tmp_path / "shop.yaml"
    mapping = ", ".join(f"{field}: {column}" for field, column in columns.items())
    config.write_text(f"name: shop\npath: {path}\ncolumns: {{{mapping}}}\n{extra}")
    return config


def _two_years(tmp_path, path="orders.xlsx", **more: list[list]) -> None:
    _workbook(
        tmp_path / path,
        {
            YEARS[0]: [SHEET_HEAD, [1, "a", dt.datetime(2010, 1, 5), 1, 1.0, 100]],
            YEARS[1]: [SHEET_HEAD, [2, "b", dt.datetime(2011, 1, 5), 2, 2.0, 200],
                       [3, "c", dt.datetime(2011, 2, 5), 3, 3.0, 201]],
            **more,
        },
    )  # fmt: skip


def test_excel_sheet_reads_as_the_same_events_as_the_csv(tmp_path, write_source):
    _workbook(tmp_path / "orders.xlsx", {"Sheet1": [SHEET_HEAD, *GOOD_ROWS]})
    spec = load_source_spec(_excel_source(tmp_path))
    assert (spec.format, spec.sheets) == ("excel", None)  # inferred from .xlsx; its only sheet
    events = load_events(spec)
    assert events[c.USER_ID].tolist() == ["17850", "17850", "13047"]  # not "17850.0"
    assert events[c.ITEM_ID].tolist() == ["85123A", "71053", "84406B"]  # a number cell: "71053"
    assert events[c.ORDER_ID].tolist() == ["536365", "536365", "C536366"]
    assert events[c.QUANTITY].tolist() == [6.0, 6.0, 8.0]
    assert events[c.UNIT_PRICE].tolist() == pytest.approx([2.55, 3.39, 2.75])
    assert events[c.EVENT_TS].tolist() == [
        pd.Timestamp("2011-01-03 08:26"),
        pd.Timestamp("2011-01-03 08:26"),
        pd.Timestamp("2011-02-01 09:00"),
    ]
    from_csv = load_events(load_source_spec(write_source(GOOD_CSV)))
    pd.testing.assert_frame_equal(events, from_csv)


EMPTY_TEXT = "to-be-emptied"


def _empty_the_text(path, text: str) -> None:
    """Make the cells holding ``text`` hold empty text, as a formula such as =IF(...; "") leaves
    in a saved workbook (openpyxl writes no cell for "")."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        parts = {name: archive.read(name) for name in archive.namelist()}
    marker = f"<t>{text}</t>".encode()
    sheet = "xl/worksheets/sheet1.xml"  # openpyxl writes text inline, in the sheet
    assert marker in parts[sheet]
    parts[sheet] = parts[sheet].replace(marker, b"<t></t>")
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in parts.items():
            archive.writestr(name, data)


def test_excel_text_cells_stay_text_and_blank_rows_are_skipped(tmp_path):
    rows = [
        SHEET_HEAD,
        [None, "00123", "2011-01-03 08:26:00", 1, EMPTY_TEXT, "NA"],  # text id keeps its zeros
        [None, None, None, None, None, None],  # a blank row, as a blank CSV line: skipped
        [None, "x", dt.datetime(2011, 1, 4), 2, 1.5, " 9 "],
    ]
    _workbook(tmp_path / "orders.xlsx", {"Sheet1": rows})
    _empty_the_text(tmp_path / "orders.xlsx", EMPTY_TEXT)
    events = load_events(load_source_spec(_excel_source(tmp_path)))
    assert events[c.ITEM_ID].tolist() == ["00123", "x"]
    assert events[c.USER_ID].isna().tolist() == [True, True]
    assert events[c.ORDER_ID].tolist() == ["NA", "9"]  # "NA" is text, as in a CSV; trimmed
    assert np.isnan(events[c.UNIT_PRICE].iloc[0])  # empty text in a number column: missing
    # a text cell parsed as ISO 8601, a date cell taken as it is, in the same column
    assert events[c.EVENT_TS].tolist() == [
        pd.Timestamp("2011-01-03 08:26"),
        pd.Timestamp("2011-01-04"),
    ]
    assert events[c.SOURCE_ROW].tolist() == [0, 1]


@pytest.mark.parametrize(
    ("sheets", "users"),
    [
        (f"[{YEARS[1]}, {YEARS[0]}]", ["2", "3", "1"]),  # the listed order, not the workbook's
        (f"{YEARS[1]}", ["2", "3"]),  # one name
        ("all", ["1", "2", "3", "4"]),  # every sheet, in workbook order
    ],
)
def test_excel_sheets_are_read_and_concatenated_in_order(tmp_path, sheets, users):
    _two_years(tmp_path, Extra=[SHEET_HEAD, [4, "d", dt.datetime(2011, 3, 1), 1, 1.0, 300]])
    events = load_events(load_source_spec(_excel_source(tmp_path, f"sheets: {sheets}\n")))
    assert events[c.USER_ID].tolist() == users
    assert events[c.SOURCE_ROW].tolist() == list(range(len(users)))  # numbered on
    assert events[c.EVENT_ID].tolist() == [f"shop:{i}" for i in range(len(users))]


def test_excel_workbook_of_several_sheets_needs_a_sheet_selection(tmp_path):
    _two_years(tmp_path)
    with pytest.raises(
        SourceError,
        match=r"orders\.xlsx: the workbook has 2 sheets \['Year 2009-2010', 'Year 2010-2011'\]; "
        r"set 'sheets'",
    ):
        load_events(load_source_spec(_excel_source(tmp_path)))


def test_excel_missing_sheet_names_the_file_the_sheet_and_the_sheets_there(tmp_path):
    _two_years(tmp_path)
    config = _excel_source(tmp_path, f"sheets: [{YEARS[0]}, Year 2011]\n")
    with pytest.raises(
        SourceError,
        match=r"orders\.xlsx: sheet\(s\) \['Year 2011'\] not found; the workbook has sheets "
        r"\['Year 2009-2010', 'Year 2010-2011'\]",
    ):
        load_events(load_source_spec(config))


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([["customer", "ts", "qty", "price", "order"], [2, dt.datetime(2011, 1, 5), 2, 2.0, 2]],
         r"orders\.xlsx, sheet 'Year 2010-2011': column\(s\) 'sku' \(mapped to item_id\) not "
         r"found; the sheet has columns \['customer', 'ts', 'qty', 'price', 'order'\]"),
        ([SHEET_HEAD], r"orders\.xlsx, sheet 'Year 2010-2011': the sheet has a header but no rows"),
        ([], r"orders\.xlsx, sheet 'Year 2010-2011': the sheet is empty"),
        ([SHEET_HEAD, [2, "b", dt.datetime(2011, 1, 5), 2, 2.0, 200], [3, "c", "soon", 1, 1, 1]],
         r"orders\.xlsx, sheet 'Year 2010-2011': column 'ts' \(event timestamp\).*'soon'.*"
         r"row 1\)"),  # the row within that sheet
        ([SHEET_HEAD, [2, "b", dt.datetime(2011, 1, 5), "two", 2.0, 200]],
         r"orders\.xlsx, sheet 'Year 2010-2011': column 'qty' \(quantity\) must hold numbers.*"
         r"'two'"),
    ],
)  # fmt: skip
def test_excel_every_sheet_read_is_checked_and_named(tmp_path, rows, message):
    _two_years(tmp_path, **{YEARS[1]: rows})
    with pytest.raises(SourceError, match=message):
        load_events(load_source_spec(_excel_source(tmp_path, "sheets: all\n")))


def _not_a_workbook_zip(path) -> None:
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hello.txt", "a zip, but no workbook inside")


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda p: p.write_text("customer,sku,ts\n1,x,2011-01-01\n"),
         r"orders\.xlsx: cannot read excel file: not an \.xlsx workbook \(File is not a zip "
         r"file\)"),
        (_not_a_workbook_zip, r"orders\.xlsx: cannot read excel file: "),
        (lambda p: p.write_bytes(b""), r"orders\.xlsx: source file is empty \(0 bytes\)"),
    ],
)  # fmt: skip
def test_unreadable_workbook_fails_naming_the_file(tmp_path, write, message):
    write(tmp_path / "orders.xlsx")
    with pytest.raises(SourceError, match=message):
        load_events(load_source_spec(_excel_source(tmp_path)))


def test_excel_with_event_types_and_unix_timestamps(tmp_path):
    rows = [
        ["visitor", "item", "ts", "ev"],
        [1, "a", 1293840000000, "view"],
        [1.0, "a", 1293872400500, "addtocart "],
        [2, 7, 1293872400500.0, "transaction"],
    ]
    _workbook(tmp_path / "orders.xlsx", {"Sheet1": rows})
    config = _excel_source(
        tmp_path, "timestamp_unit: ms\n" + RETAIL_ROCKET, columns=EVENTS_WITH_TYPES
    )
    events = load_events(load_source_spec(config))
    assert events[c.EVENT_TYPE].tolist() == ["view", "add_to_cart", "purchase"]
    assert events[c.USER_ID].tolist() == ["1", "1", "2"]
    assert events[c.ITEM_ID].tolist() == ["a", "a", "7"]
    assert events[c.EVENT_TS].tolist() == [
        pd.Timestamp("2011-01-01 00:00:00"),
        pd.Timestamp("2011-01-01 09:00:00.500"),
        pd.Timestamp("2011-01-01 09:00:00.500"),
    ]


def test_excel_with_ratings_and_a_text_date_format(tmp_path):
    rows = [
        ["user", "movie", "ts", "stars"],
        [1, "a", "03/01/2011", 5],
        [1, "b", "04/01/2011", 3.5],
        [2, "a", dt.datetime(2011, 1, 5), None],  # a date cell next to text dates
    ]
    _workbook(tmp_path / "orders.xlsx", {"Sheet1": rows})
    extra = RATED + 'timestamp_format: "%d/%m/%Y"\n'
    events = load_events(load_source_spec(_excel_source(tmp_path, extra, columns=RATINGS)))
    assert events[c.EVENT_TYPE].tolist()[:2] == ["purchase", "view"]
    assert pd.isna(events[c.EVENT_TYPE].iloc[2])
    assert events[c.EVENT_TS].tolist() == [
        pd.Timestamp("2011-01-03"),
        pd.Timestamp("2011-01-04"),
        pd.Timestamp("2011-01-05"),
    ]


def test_headerless_sheet_with_names(tmp_path):
    _workbook(tmp_path / "orders.xlsx", {"Sheet1": GOOD_ROWS})
    events = load_events(load_source_spec(_excel_source(tmp_path, HEADERLESS)))
    assert events[c.USER_ID].tolist() == ["17850", "17850", "13047"]  # the first row is data

    _workbook(tmp_path / "orders.xlsx", {"Sheet1": [row[:5] for row in GOOD_ROWS]})
    with pytest.raises(
        SourceError, match=r"orders\.xlsx, sheet 'Sheet1': the sheet has 5 column\(s\) but 'names'"
    ):
        load_events(load_source_spec(_excel_source(tmp_path, HEADERLESS)))


def test_glob_of_workbooks_reads_each_in_name_order(tmp_path):
    _two_years(tmp_path, "exports/b.xlsx")
    _workbook(
        tmp_path / "exports" / "a.xlsx",
        {"Only": [SHEET_HEAD, [9, "z", dt.datetime(2009, 6, 1), 1, 1.0, 1]]},
    )
    config = _excel_source(tmp_path, "sheets: all\n", path="exports/*.xlsx")
    events = load_events(load_source_spec(config))
    assert events[c.USER_ID].tolist() == ["9", "1", "2", "3"]  # a.xlsx, then b.xlsx's sheets
    assert source_fingerprint(load_source_spec(config))["files"] == ["a.xlsx", "b.xlsx"]


def test_fingerprint_covers_the_workbook_and_the_sheet_selection(tmp_path):
    _two_years(tmp_path)
    hashes = {}
    for extra in (f"sheets: {YEARS[0]}\n", f"sheets: [{YEARS[0]}]\n", "sheets: all\n",
                  f"sheets: [{YEARS[0]}, {YEARS[1]}]\n", ""):  # fmt: skip
        hashes[extra] = source_fingerprint(load_source_spec(_excel_source(tmp_path, extra)))
    configs = {extra: f["config_sha256"] for extra, f in hashes.items()}
    assert configs[f"sheets: {YEARS[0]}\n"] == configs[f"sheets: [{YEARS[0]}]\n"]  # same sheets
    assert len(set(configs.values())) == 4  # any other selection is another config
    assert len({f["sha256"] for f in hashes.values()}) == 1  # the same workbook

    spec = load_source_spec(_excel_source(tmp_path, "sheets: all\n"))
    before = source_fingerprint(spec)["sha256"]
    _two_years(tmp_path, Extra=[SHEET_HEAD, [4, "d", dt.datetime(2011, 3, 1), 1, 1.0, 300]])
    assert source_fingerprint(spec)["sha256"] != before  # a changed workbook is a new input


@pytest.mark.parametrize(
    ("path", "extra", "message"),
    [
        ("orders.csv", "sheets: all\n", r"'sheets' applies to excel workbooks only, not csv"),
        ("orders.xlsx", "sheets: []\n", r"'sheets' must be a sheet name, a list of sheet names"),
        ("orders.xlsx", "sheets: {a: 1}\n", r"'sheets' must be a sheet name"),
        ("orders.xlsx", "sheets: [a, b, a]\n", r"'sheets' lists \['a'\] more than once"),
    ],
)
def test_bad_sheet_settings(tmp_path, path, extra, message):
    with pytest.raises(SourceError, match=r"shop\.yaml: " + message):
        load_source_spec(_excel_source(tmp_path, extra, path=path))


def test_format_excel_set_explicitly(tmp_path):
    _workbook(tmp_path / "orders.dat", {"Sheet1": [SHEET_HEAD, *GOOD_ROWS]})
    spec = load_source_spec(_excel_source(tmp_path, "format: excel\n", path="orders.dat"))
    assert len(load_events(spec)) == 3


# --- The evaluation's split date ---------------------------------------------------------------


def test_split_date_is_read_and_stays_outside_the_config_hash(write_source):
    plain = load_source_spec(write_source(GOOD_CSV))
    dated = load_source_spec(write_source(GOOD_CSV, extra="split_date: 2011-11-01\n"))
    assert plain.split_date is None
    assert dated.split_date == "2011-11-01T00:00:00"
    # it shapes the evaluation, not the events: changing it must not re-ingest anything
    assert config_sha256(dated) == config_sha256(plain)
    uci = load_source_spec(PROJECT_ROOT / "data" / "sources" / "online_retail.yaml")
    assert uci.split_date == "2011-11-01T00:00:00"


def test_a_split_date_that_is_no_date_names_the_setting(write_source):
    with pytest.raises(SourceError, match=r"shop\.yaml: 'split_date' must be an ISO date"):
        load_source_spec(write_source(GOOD_CSV, extra="split_date: next tuesday\n"))
