"""The training/serving consistency report on an in-memory store: what it compares through
Feast's SDK and through the service's feature reader, and that comparing nothing never passes."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from recsys_assets.core import constants as c
from recsys_assets.features.store import ConsistencyReport, consistency_report, entity_keys

AT = pd.Timestamp("2011-03-01", tz="UTC")


def _tables() -> dict[str, pd.DataFrame]:
    stamp = {c.FEATURE_TS: AT, c.CREATED_TS: AT}
    return {
        "customer_profile": pd.DataFrame(
            {c.USER_ID: ["u1", "u2", "u3"], c.ORDERS_TOTAL: [1, 4, 2], **stamp}
            | {c.HOME_COUNTRY: ["France", "Spain", None]}
        ),
        "item_popularity": pd.DataFrame(
            {c.ITEM_ID: ["a", "b"], c.SALES_7D: [3.0, np.nan], **stamp}
        ),
        "customer_item": pd.DataFrame(
            {c.USER_ID: ["u1", "u1", "u2"], c.ITEM_ID: ["a", "b", "a"]}
            | {c.TIMES_BOUGHT: [1, 2, 5], **stamp}
        ),
    }


class _Result:
    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame

    def to_df(self, include_event_timestamps: bool = False) -> pd.DataFrame:
        if not include_event_timestamps:
            return self.frame
        stamps = {f"{name}__ts": int(AT.timestamp()) for name in self.frame.columns}
        return self.frame.assign(**stamps)  # as Feast: each feature's event time, in seconds


class FakeStore:
    """Feast's two reads over the tables: every row is stamped at AT, so the point-in-time
    value and the online value are the row itself."""

    def __init__(self, tables: dict[str, pd.DataFrame]) -> None:
        self.tables = tables

    def get_feature_view(self, name):
        return SimpleNamespace(name=name, ttl=timedelta(days=3650))

    def _rows(self, features: list[str], entities: pd.DataFrame) -> pd.DataFrame:
        view = features[0].split(":")[0]
        names = [ref.split(":")[1] for ref in features]
        table = self.tables[view]
        keys = entity_keys(table)
        return entities.merge(table[[*keys, *names]], on=keys, how="left")

    def get_historical_features(self, entity_df, features):
        return _Result(self._rows(features, entity_df))

    def get_online_features(self, features, entity_rows):
        keys = entity_keys(self.tables[features[0].split(":")[0]])
        return _Result(self._rows(features, pd.DataFrame(entity_rows, columns=keys)))


class FakeReader:
    """The service's reader over the same tables (its columns of every view per request), with
    ``broken`` features read as missing: what a reader bug would serve."""

    def __init__(self, tables: dict[str, pd.DataFrame], broken: tuple[str, ...] = ()) -> None:
        self.tables = tables
        self.broken = broken
        self.calls: list[tuple[str, list[str], object]] = []

    def read(self, customer_id, items, as_of, bought=None):
        self.calls.append((customer_id, list(items), bought))
        out = {}
        for table in self.tables.values():
            keys = entity_keys(table)
            rows = pd.DataFrame({c.USER_ID: customer_id, c.ITEM_ID: list(items)})
            joined = rows.merge(table, on=keys, how="left")
            for name in table.columns:
                if name not in (*keys, c.FEATURE_TS, c.CREATED_TS):
                    values = joined[name].to_numpy()
                    out[name] = np.full(len(items), np.nan) if name in self.broken else values
        return out


def test_online_equal_to_offline_on_both_read_paths_passes():
    tables = _tables()
    reader = FakeReader(tables)
    report = consistency_report(FakeStore(tables), tables, AT, reader=reader)
    assert report.values == 3 * 2 + 2 * 1 + 3 * 1 == 11
    assert report.served_values == report.values and report.served_mismatches == 0
    assert report.mismatches == 0 and report.passed and report.examples == ""
    # one read per customer; item rows under a customer no one is; every pair looked up
    customers = [customer for customer, _, _ in reader.calls]
    assert customers.count("") == 1 and {"u1", "u2", "u3"} <= set(customers)
    assert all(bought is None for _, _, bought in reader.calls)
    assert sorted(next(items for cust, items, _ in reader.calls if cust == "")) == ["a", "b"]


def test_a_feature_the_service_reads_wrong_fails_the_check():
    tables = _tables()
    reader = FakeReader(tables, broken=(c.ORDERS_TOTAL,))
    report = consistency_report(FakeStore(tables), tables, AT, reader=reader)
    assert report.mismatches == 0  # Feast's SDK reads it right
    assert report.served_mismatches == 3 and not report.passed
    assert f"| customer_profile | u1 | {c.ORDERS_TOTAL} | 1 | nan | service reader |" in (
        report.examples
    )


def test_without_a_reader_only_the_sdk_path_is_compared():
    tables = _tables()
    report = consistency_report(FakeStore(tables), tables, AT)
    assert report.values == 11 and report.served_values is None and report.passed


def test_nothing_compared_never_passes():
    empty = {view: table.iloc[:0] for view, table in _tables().items()}
    report = consistency_report(FakeStore(empty), empty, AT, reader=FakeReader(empty))
    assert report.values == 0 and report.mismatches == 0 and not report.passed


class ReadsNothing:
    def read(self, customer_id, items, as_of, bought=None):
        return {}


def test_a_reader_that_returns_none_of_the_features_fails():
    tables = _tables()
    report = consistency_report(FakeStore(tables), tables, AT, reader=ReadsNothing())
    assert report.values == 11 and report.mismatches == 0
    assert report.served_values == 0 and not report.passed


@pytest.mark.parametrize(
    ("report", "passed"),
    [
        (ConsistencyReport(compared=3, values=9, mismatches=0, examples=""), True),
        (ConsistencyReport(compared=0, values=0, mismatches=0, examples=""), False),
        (ConsistencyReport(compared=3, values=9, mismatches=1, examples="|"), False),
        (ConsistencyReport(3, 9, 0, "", served_values=9, served_mismatches=0), True),
        (ConsistencyReport(3, 9, 0, "", served_values=0, served_mismatches=0), False),
        (ConsistencyReport(3, 9, 0, "", served_values=9, served_mismatches=2), False),
    ],
)
def test_passed_needs_values_compared_on_every_path_and_no_mismatch(report, passed):
    assert report.passed is passed


def test_a_row_expires_once_older_than_the_ttl_as_in_feasts_point_in_time_join():
    from recsys_assets.features.store import expired

    ttl = timedelta(days=3650)
    edge = (AT - pd.Timedelta(ttl)).timestamp()  # stamped exactly at `at - ttl`: still given
    stamps = np.array([edge - 1, edge, AT.timestamp(), np.nan])
    assert expired(stamps, AT, ttl).tolist() == [True, False, False, False]
    assert expired(stamps, AT.tz_localize(None), ttl).tolist() == [True, False, False, False]
    assert not expired(stamps, AT, None).any() and not expired(stamps, AT, timedelta(0)).any()
